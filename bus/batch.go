package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/events"
)

// pipelineDepth bounds the publishes of one pipelined call that await
// their ack: enough to keep the server's disk busy, well under the
// client's limit of 4,000 per connection.
const pipelineDepth = 512

// published is one publish's outcome.
type published struct {
	ack *jetstream.PubAck
	err error
}

// publishAll publishes msgs (nil ones are skipped) without waiting for
// each ack, at most pipelineDepth awaiting theirs at a time, and returns
// every outcome in the order of msgs. The server stores messages from one connection in
// the order they were sent. Each ack is waited for up to APITimeout.
func (c *Conn) publishAll(ctx context.Context, msgs []*nats.Msg, opts func(i int) []jetstream.PublishOpt) []published {
	out := make([]published, len(msgs))
	futures := make([]jetstream.PubAckFuture, len(msgs))
	timer := time.NewTimer(APITimeout)
	defer timer.Stop()
	wait := func(i int) {
		if futures[i] == nil {
			return
		}
		timer.Reset(APITimeout)
		select {
		case out[i].ack = <-futures[i].Ok():
		case out[i].err = <-futures[i].Err():
		case <-ctx.Done():
			out[i].err = ctx.Err()
		case <-timer.C:
			out[i].err = fmt.Errorf("no ack within %s", APITimeout)
		}
	}
	next := 0 // the oldest publish not waited for
	for i, m := range msgs {
		for ; i-next >= pipelineDepth; next++ {
			wait(next)
		}
		if m == nil {
			continue
		}
		if err := ctx.Err(); err != nil {
			out[i].err = err
			continue
		}
		futures[i], out[i].err = c.js.PublishMsgAsync(m, opts(i)...)
	}
	for ; next < len(msgs); next++ {
		wait(next)
	}
	return out
}

// Outgoing is one event for AppendAll: Event stored under Subject, with
// MsgID (Event.ID when empty) as its Nats-Msg-Id.
type Outgoing struct {
	Subject string
	Event   events.Event
	MsgID   string
}

// Appended is what became of one Outgoing: its stream sequence (the
// original's, for a duplicate Nats-Msg-Id) or the error.
type Appended struct {
	Seq uint64
	Err error
}

// AppendAll appends many events, pipelined: all are sent before the first
// ack is awaited, then every ack is. It returns one Appended per event, in
// order. An event whose Appended has no error is durable, as with Append;
// one with an error may or may not be stored, and appending it again with
// the same MsgID stores it at most once.
func (c *Conn) AppendAll(ctx context.Context, out []Outgoing) []Appended {
	res := make([]Appended, len(out))
	msgs := make([]*nats.Msg, len(out))
	for i, o := range out {
		msgs[i], res[i].Err = eventMsg(o.Subject, o.Event)
	}
	pubs := c.publishAll(ctx, msgs, func(i int) []jetstream.PublishOpt {
		id := out[i].MsgID
		if id == "" {
			id = out[i].Event.ID
		}
		return []jetstream.PublishOpt{jetstream.WithMsgID(id), jetstream.WithExpectStream(StreamName)}
	})
	for i, p := range pubs {
		switch {
		case msgs[i] == nil: // did not encode
		case storageFull(p.err) != nil:
			res[i].Err = fmt.Errorf("append %s: %w", out[i].Subject, storageFull(p.err))
		case p.err != nil:
			res[i].Err = fmt.Errorf("append %s: %w", out[i].Subject, p.err)
		default:
			res[i].Seq = p.ack.Sequence
		}
	}
	return res
}

// eventMsg is the message that stores e under subject.
func eventMsg(subject string, e events.Event) (*nats.Msg, error) {
	data, err := events.Encode(e)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set("Content-Type", "application/cloudevents+json")
	return msg, nil
}

// write is one compare-and-set of writeAll: value replaces key's if the
// key's last message (a value or a delete marker) is still at rev; rev 0
// means the key has never been written.
type write struct {
	key   string
	value []byte
	rev   uint64
}

// writeAll issues writes pipelined and returns each one's error, in
// order: nil when it is durable, one wrapping ErrConflict when its
// revision was stale.
func (b *Bucket) writeAll(ctx context.Context, ws []write) []error {
	msgs := make([]*nats.Msg, len(ws))
	for i, w := range ws {
		msgs[i] = &nats.Msg{Subject: "$KV." + b.name + "." + w.key, Data: w.value, Header: nats.Header{}}
	}
	pubs := b.conn.publishAll(ctx, msgs, func(i int) []jetstream.PublishOpt {
		return []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(ws[i].rev)}
	})
	errs := make([]error, len(ws))
	for i, p := range pubs {
		switch {
		case IsWrongLastSequence(p.err):
			errs[i] = fmt.Errorf("%s %s: %w", b.name, ws[i].key, ErrConflict)
		case p.err != nil:
			errs[i] = fmt.Errorf("%s %s: %w", b.name, ws[i].key, p.err)
		}
	}
	return errs
}

// ModifyMany reads the JSON value of each of keys (the zero T when a key
// is missing), lets fold change it, and writes back each changed value
// only if nobody wrote the key in between; keys that conflict are read
// and folded again. fold returning false, or a value that encodes to the
// bytes already stored, leaves the key as it is. This is the one
// compare-and-set loop of every KV view and ledger.
//
// keys must be distinct. The reads cost one round trip per maxBatchGet
// keys and the writes are pipelined (see AppendAll), so a thousand keys
// cost about what a few sequential writes do. When ModifyMany returns nil,
// every key's write is durable; on an error, some may be. fold is called
// from the calling goroutine, once per key and round, in the order of
// keys.
func ModifyMany[T any](ctx context.Context, b *Bucket, keys []string, fold func(key string, v *T) (bool, error)) error {
	for range 16 {
		cur, err := b.lastMany(ctx, keys)
		if err != nil {
			return err
		}
		var ws []write
		for _, k := range keys {
			var v T
			e, ok := cur[k]
			if ok && !e.deleted {
				if err := json.Unmarshal(e.Value, &v); err != nil {
					return fmt.Errorf("%s %s: decode: %w", b.name, k, err)
				}
			}
			changed, err := fold(k, &v)
			if err != nil {
				return err
			}
			if !changed {
				continue
			}
			val, err := json.Marshal(&v)
			if err != nil {
				return err
			}
			if ok && !e.deleted && bytes.Equal(val, e.Value) {
				continue
			}
			ws = append(ws, write{key: k, value: val, rev: e.Revision})
		}
		keys = keys[:0:0]
		var errs []error
		for i, err := range b.writeAll(ctx, ws) {
			switch {
			case errors.Is(err, ErrConflict):
				keys = append(keys, ws[i].key)
			case err != nil:
				errs = append(errs, err)
			}
		}
		if len(errs) > 0 || len(keys) == 0 {
			return errors.Join(errs...)
		}
	}
	return fmt.Errorf("%s: %d keys: too many concurrent writers", b.name, len(keys))
}
