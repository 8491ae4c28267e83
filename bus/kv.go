package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrConflict is returned by a bucket write whose expected revision is
// stale: someone else wrote the key first.
var ErrConflict = errors.New("written concurrently")

// Bucket is one provisioned KV bucket. It is safe for concurrent use.
type Bucket struct {
	name string
	kv   jetstream.KeyValue
}

// Entry is a key's value and the revision it was written at.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// Bucket returns a provisioned bucket.
//
// While a cluster elects a leader the lookup times out; it is retried for
// up to APITimeout before it fails.
func (c *Conn) Bucket(ctx context.Context, name string) (*Bucket, error) {
	var kv jetstream.KeyValue
	err := retryAPI(ctx, func(actx context.Context) error {
		var err error
		kv, err = c.js.KeyValue(actx, name)
		return err
	}, jetstream.ErrBucketNotFound)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w (has `convoy server` provisioned the bus?)", name, err)
	}
	return &Bucket{name: name, kv: kv}, nil
}

// Get returns key's entry, or an error wrapping ErrNotFound.
func (b *Bucket) Get(ctx context.Context, key string) (Entry, error) {
	ent, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry{}, fmt.Errorf("%s %s: %w", b.name, key, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("%s %s: %w", b.name, key, err)
	}
	return Entry{Key: key, Value: ent.Value(), Revision: ent.Revision()}, nil
}

// Put writes key unconditionally and returns the new revision.
func (b *Bucket) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := b.kv.Put(ctx, key, value)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", b.name, key, err)
	}
	return rev, nil
}

// Write writes key only if its revision is still rev (0: only if the key
// does not exist) and returns the new revision. A stale rev returns an
// error wrapping ErrConflict.
func (b *Bucket) Write(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	var err error
	var nrev uint64
	if rev == 0 {
		nrev, err = b.kv.Create(ctx, key, value)
	} else {
		nrev, err = b.kv.Update(ctx, key, value, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || IsWrongLastSequence(err) {
		return 0, fmt.Errorf("%s %s: %w", b.name, key, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", b.name, key, err)
	}
	return nrev, nil
}

// Delete removes key; with rev set, only if its revision is still rev.
func (b *Bucket) Delete(ctx context.Context, key string, rev uint64) error {
	var opts []jetstream.KVDeleteOpt
	if rev != 0 {
		opts = append(opts, jetstream.LastRevision(rev))
	}
	if err := b.kv.Delete(ctx, key, opts...); err != nil {
		return fmt.Errorf("%s %s: delete: %w", b.name, key, err)
	}
	return nil
}

// Keys returns the keys matching filter (NATS wildcards), sorted.
func (b *Bucket) Keys(ctx context.Context, filter string) ([]string, error) {
	lister, err := b.kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("%s keys %s: %w", b.name, filter, err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, nil
}

// GetJSON decodes key's value into v and returns its revision.
func (b *Bucket) GetJSON(ctx context.Context, key string, v any) (uint64, error) {
	ent, err := b.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(ent.Value, v); err != nil {
		return 0, fmt.Errorf("%s %s: decode: %w", b.name, key, err)
	}
	return ent.Revision, nil
}

// Modify reads key's JSON value (the zero T when the key is missing),
// lets fold change it, and writes it back only if nobody wrote the key in
// between; on a conflict it reads and folds again. fold returning false
// leaves the key as it is. This is the one compare-and-set loop of every
// KV view and ledger.
func Modify[T any](ctx context.Context, b *Bucket, key string, fold func(*T) (bool, error)) error {
	for range 16 {
		var v T
		rev, err := b.GetJSON(ctx, key, &v)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if ok, err := fold(&v); err != nil || !ok {
			return err
		}
		val, err := json.Marshal(&v)
		if err != nil {
			return err
		}
		if _, err = b.Write(ctx, key, val, rev); !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%s %s: too many concurrent writers", b.name, key)
}
