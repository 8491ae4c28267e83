package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrConflict is returned by a bucket write whose expected revision is
// stale: someone else wrote the key first.
var ErrConflict = errors.New("written concurrently")

// Bucket is one provisioned KV bucket. It is safe for concurrent use.
type Bucket struct {
	name string
	kv   jetstream.KeyValue
	conn *Conn
	// getMaxBytes, when set, bounds each answer to a batched get (tests).
	getMaxBytes int
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
	return &Bucket{name: name, kv: kv, conn: c}, nil
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

// All returns the entry of every key matching filter (NATS wildcards),
// sorted by key, read in one pass over the bucket: one consumer delivers
// the last value of each key, deleted keys left out. A key written while
// All reads may come back at its old or its new value.
func (b *Bucket) All(ctx context.Context, filter string) ([]Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	w, err := b.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("%s read %s: %w", b.name, filter, err)
	}
	defer func() {
		_ = w.Stop()
		// The watch blocks on a full channel: drain it until Stop
		// closes it, so a burst of writes cannot strand its goroutine.
		go func() {
			for range w.Updates() {
			}
		}()
	}()
	var out []Entry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("%s read %s: watch closed", b.name, filter)
			}
			if e == nil { // every key's value is in
				sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
				return out, nil
			}
			out = append(out, Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()})
		case <-ctx.Done():
			return nil, fmt.Errorf("%s read %s: %w", b.name, filter, ctx.Err())
		}
	}
}

// GetMany returns the entries of those of keys that exist, by key. It
// asks the server for up to maxBatchGet keys per request (a batched direct
// get, nats-server 2.11 or later), so a thousand keys cost one round trip.
func (b *Bucket) GetMany(ctx context.Context, keys []string) (map[string]Entry, error) {
	all, err := b.lastMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Entry, len(all))
	for k, e := range all {
		if !e.deleted {
			out[k] = e.Entry
		}
	}
	return out, nil
}

// AllJSON is All with each value decoded into a T, in key order.
func AllJSON[T any](ctx context.Context, b *Bucket, filter string) ([]T, error) {
	ents, err := b.All(ctx, filter)
	if err != nil {
		return nil, err
	}
	out := make([]T, len(ents))
	for i, e := range ents {
		if err := json.Unmarshal(e.Value, &out[i]); err != nil {
			return nil, fmt.Errorf("%s %s: decode: %w", b.name, e.Key, err)
		}
	}
	return out, nil
}

// GetManyJSON is GetMany with each value decoded into a T.
func GetManyJSON[T any](ctx context.Context, b *Bucket, keys []string) (map[string]T, error) {
	ents, err := b.GetMany(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string]T, len(ents))
	for k, e := range ents {
		var v T
		if err := json.Unmarshal(e.Value, &v); err != nil {
			return nil, fmt.Errorf("%s %s: decode: %w", b.name, k, err)
		}
		out[k] = v
	}
	return out, nil
}

// maxBatchGet is how many keys one batched direct get names: the server
// answers at most 1,024 messages to one request.
const maxBatchGet = 1024

// lastEntry is a key's last message, which may be a delete marker: its
// revision is what a compare-and-set of the key must name.
type lastEntry struct {
	Entry
	deleted bool
}

// lastMany reads the last message of each of keys that has one.
func (b *Bucket) lastMany(ctx context.Context, keys []string) (map[string]lastEntry, error) {
	out := make(map[string]lastEntry, len(keys))
	for chunk := range slices.Chunk(keys, maxBatchGet) {
		if err := b.lastBatch(ctx, chunk, out); err != nil {
			return nil, fmt.Errorf("%s get %d keys: %w", b.name, len(keys), err)
		}
	}
	return out, nil
}

// directGet is a batched direct get request ("multi_last"): the last
// message of each subject, with sequence at least Seq and at most UpToSeq.
type directGet struct {
	MultiLast []string `json:"multi_last"`
	Seq       uint64   `json:"seq,omitempty"`
	UpToSeq   uint64   `json:"up_to_seq,omitempty"`
	// MaxBytes makes the server stop early (tests only; it defaults to
	// the server's max pending bytes, 64 MiB).
	MaxBytes int `json:"max_bytes,omitempty"`
}

// lastBatch reads the last messages of up to maxBatchGet keys into out.
func (b *Bucket) lastBatch(ctx context.Context, keys []string, out map[string]lastEntry) error {
	ctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	nc := b.conn.nc
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	prefix := "$KV." + b.name + "."
	req := directGet{MultiLast: make([]string, len(keys)), MaxBytes: b.getMaxBytes}
	for i, k := range keys {
		req.MultiLast[i] = prefix + k
	}
	api := jetstream.DefaultAPIPrefix + "DIRECT.GET.KV_" + b.name
	for {
		data, err := json.Marshal(req)
		if err != nil {
			return err
		}
		if err := nc.PublishRequest(api, inbox, data); err != nil {
			return err
		}
		if done, err := readBatch(ctx, sub, prefix, &req, out); done || err != nil {
			return err
		}
	}
}

// readBatch reads one answer to a batched direct get. The server sends
// the messages in sequence order and ends with an end-of-batch status;
// when it stopped early (a byte limit), readBatch moves req on to ask for
// the rest, from the next sequence up to the same end, and returns false.
func readBatch(ctx context.Context, sub *nats.Subscription, prefix string, req *directGet, out map[string]lastEntry) (bool, error) {
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return false, err
		}
		switch status, descr := m.Header.Get("Status"), m.Header.Get("Description"); {
		case status == "":
		case status == "404" && descr == "No Results": // none of the keys exists
			return true, nil
		case status == "204":
			pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			req.UpToSeq, _ = strconv.ParseUint(m.Header.Get("Nats-UpTo-Sequence"), 10, 64)
			return pending == 0, nil
		default:
			return false, fmt.Errorf("batched direct get: %s %s (it needs nats-server 2.11 or later)", status, descr)
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return false, fmt.Errorf("batched direct get: sequence %q: %w", m.Header.Get(jetstream.SequenceHeader), err)
		}
		key := strings.TrimPrefix(m.Header.Get(jetstream.SubjectHeader), prefix)
		deleted := m.Header.Get("KV-Operation") != "" || m.Header.Get(jetstream.MarkerReasonHeader) != ""
		out[key] = lastEntry{Entry: Entry{Key: key, Value: m.Data, Revision: seq}, deleted: deleted}
		req.Seq = seq + 1
	}
}

// Watch calls fn with the last value of every key matching filter (NATS
// wildcards), then with each value written to such a key, in the order
// written, until ctx ends (it then returns nil) or fn returns an error
// (ErrStop: Watch returns nil). Deleted keys are left out. fn runs in
// Watch's goroutine; while it runs, later values wait.
func (b *Bucket) Watch(ctx context.Context, filter string, fn func(Entry) error) error {
	w, err := b.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("%s watch %s: %w", b.name, filter, err)
	}
	defer func() {
		_ = w.Stop()
		go func() { // as in All: let a blocked send see Stop
			for range w.Updates() {
			}
		}()
	}()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("%s watch %s: closed", b.name, filter)
			}
			if e == nil { // the initial values are in
				continue
			}
			err := fn(Entry{Key: e.Key(), Value: e.Value(), Revision: e.Revision()})
			if errors.Is(err, ErrStop) {
				return nil
			}
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// Age returns how long ago the bucket's stream was created, by the
// server's clock (for a memory bucket, the leases, how long ago this
// server or its JetStream last started it), and the TTL of its keys (0:
// none).
func (b *Bucket) Age(ctx context.Context) (age, ttl time.Duration, err error) {
	st, err := b.kv.Status(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("%s status: %w", b.name, err)
	}
	s, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || s.StreamInfo() == nil {
		return 0, 0, fmt.Errorf("%s status: no stream info", b.name)
	}
	info := s.StreamInfo()
	now := info.TimeStamp // the server's clock, when it says
	if now.IsZero() {
		now = time.Now()
	}
	return now.Sub(info.Created), st.TTL(), nil
}
