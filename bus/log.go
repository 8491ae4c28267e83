package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/events"
)

// Expect guards an append: it succeeds only if the last message stored
// under Filter has sequence Seq (0: no message yet). A worker appends with
// the last sequence it saw of convoy.host.<host>.>, so a second worker for
// the same host fails instead of interleaving facts.
type Expect struct {
	Filter string
	Seq    uint64
}

// ConflictError is returned when an Expect guard fails: someone else
// appended under the filter since LastSeen.
type ConflictError struct {
	Filter string
	Want   uint64
	Actual uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("append conflict on %s: expected last sequence %d, stream has %d (another writer?)", e.Filter, e.Want, e.Actual)
}

// Stored is one message read back from the stream.
type Stored struct {
	Seq     uint64
	Subject string
	MsgID   string
	Stored  time.Time
	// Pending is how many matching messages follow this one (reads
	// through a consumer only).
	Pending uint64
	Event   events.Event
	// Err is set, and Event empty, when the message did not decode.
	Err error
}

// Append stores e under subject, with msgID (e.ID when empty) as
// Nats-Msg-Id so a retried append is stored once. When it returns nil the event is durable (fsynced
// by the server) and seq is its stream sequence. With expect set, a failed
// guard returns a *ConflictError unless the last message is this very event
// (a retry whose first ack was lost), which counts as success.
func (c *Conn) Append(ctx context.Context, subject string, e events.Event, expect *Expect) (uint64, error) {
	return c.AppendID(ctx, subject, e, e.ID, expect)
}

// AppendID is Append with an explicit Nats-Msg-Id. Producers use it to
// make a request idempotent per host and upgrade id.
func (c *Conn) AppendID(ctx context.Context, subject string, e events.Event, msgID string, expect *Expect) (uint64, error) {
	msg, err := eventMsg(subject, e)
	if err != nil {
		return 0, err
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(msgID), jetstream.WithExpectStream(StreamName)}
	if expect != nil {
		opts = append(opts, jetstream.WithExpectLastSequenceForSubject(expect.Seq, expect.Filter))
	}
	pctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	ack, err := c.js.PublishMsg(pctx, msg, opts...)
	if err == nil {
		return ack.Sequence, nil
	}
	if expect != nil && IsWrongLastSequence(err) {
		last, lerr := c.Last(ctx, expect.Filter)
		if lerr == nil && last.MsgID == msgID {
			return last.Seq, nil
		}
		if (lerr == nil || errors.Is(lerr, ErrNotFound)) && last.Seq < expect.Seq {
			// The expected message aged out (see Retention): retention
			// removes the oldest first, so nobody wrote after it.
			return c.AppendID(ctx, subject, e, msgID, &Expect{Filter: expect.Filter, Seq: last.Seq})
		}
		return 0, &ConflictError{Filter: expect.Filter, Want: expect.Seq, Actual: last.Seq}
	}
	if full := storageFull(err); full != nil {
		err = full
	}
	return 0, fmt.Errorf("append %s: %w", subject, err)
}

// IsWrongLastSequence reports whether err is JetStream refusing a write
// whose expected last sequence (or KV revision) is stale: someone else
// wrote first.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Last returns the last message stored under filter (wildcards allowed),
// or ErrNotFound.
func (c *Conn) Last(ctx context.Context, filter string) (Stored, error) {
	return c.getMsg(ctx, "last on "+filter, func(ctx context.Context, s jetstream.Stream) (*jetstream.RawStreamMsg, error) {
		return s.GetLastMsgForSubject(ctx, filter)
	})
}

// Get returns the message at seq.
func (c *Conn) Get(ctx context.Context, seq uint64) (Stored, error) {
	return c.getMsg(ctx, fmt.Sprintf("message %d", seq), func(ctx context.Context, s jetstream.Stream) (*jetstream.RawStreamMsg, error) {
		return s.GetMsg(ctx, seq)
	})
}

// getMsg reads one message with get, bounded by APITimeout.
func (c *Conn) getMsg(ctx context.Context, what string, get func(context.Context, jetstream.Stream) (*jetstream.RawStreamMsg, error)) (Stored, error) {
	ctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	s, err := c.stream(ctx)
	if err != nil {
		return Stored{}, err
	}
	m, err := get(ctx, s)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Stored{}, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return Stored{}, fmt.Errorf("%s: %w", what, err)
	}
	return decodeRaw(m.Sequence, m.Subject, m.Header, m.Time, m.Data), nil
}

func decodeRaw(seq uint64, subject string, h nats.Header, t time.Time, data []byte) Stored {
	st := Stored{Seq: seq, Subject: subject, Stored: t}
	if h != nil {
		st.MsgID = h.Get(jetstream.MsgIDHeader)
	}
	st.Event, st.Err = events.Decode(data)
	return st
}

func decodeMsg(m jetstream.Msg) Stored {
	st := Stored{Subject: m.Subject()}
	if md, err := m.Metadata(); err == nil {
		st.Seq = md.Sequence.Stream
		st.Stored = md.Timestamp
		st.Pending = md.NumPending
	}
	st.MsgID = m.Headers().Get(jetstream.MsgIDHeader)
	st.Event, st.Err = events.Decode(m.Data())
	return st
}

// From says where a read starts. The zero value starts at the beginning.
type From struct {
	// Seq starts at this stream sequence (inclusive).
	Seq uint64
	// Time starts at the first message stored at or after Time.
	Time time.Time
	// New starts after the last message stored now.
	New bool
}

func orderedConfig(filters []string, from From) jetstream.OrderedConsumerConfig {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: filters, InactiveThreshold: 30 * time.Second}
	switch {
	case from.New:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	case from.Seq > 1:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from.Seq
	case !from.Time.IsZero():
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		t := from.Time
		cfg.OptStartTime = &t
	default:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	return cfg
}

// ErrStop, returned by the fn of Replay or Follow, ends the read early;
// the read then returns nil.
var ErrStop = errors.New("stop reading")

// Replay calls fn, in stream order, for every message under filters from
// from up to the last one stored when Replay was called, then returns.
// It reads through one ordered consumer, so it costs one pass over the
// matching messages and no more. fn returning an error stops the replay
// with that error (nil for ErrStop).
func (c *Conn) Replay(ctx context.Context, filters []string, from From, fn func(Stored) error) error {
	return ignoreStop(c.replay(ctx, filters, from, fn))
}

func ignoreStop(err error) error {
	if errors.Is(err, ErrStop) {
		return nil
	}
	return err
}

func (c *Conn) replay(ctx context.Context, filters []string, from From, fn func(Stored) error) error {
	actx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	cons, err := c.js.OrderedConsumer(actx, StreamName, orderedConfig(filters, from))
	if err != nil {
		return fmt.Errorf("replay %v: %w", filters, err)
	}
	defer c.dropConsumer(cons)
	info, err := cons.Info(actx)
	if err != nil {
		return fmt.Errorf("replay %v: %w", filters, err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(500))
	if err != nil {
		return fmt.Errorf("replay %v: %w", filters, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("replay %v: %w", filters, err)
		}
		st := decodeMsg(m)
		if err := fn(st); err != nil {
			return err
		}
		md, err := m.Metadata()
		if err != nil || md.NumPending == 0 {
			return nil
		}
	}
}

// APITimeout bounds each JetStream API call (and publish ack): a request
// to a server that dies on the way is given up and retried, not waited on
// until the caller's deadline.
const APITimeout = 10 * time.Second

// FollowIdle is how long Follow waits without a message before it
// replaces its consumer with a fresh one from where it stopped. An ordered
// consumer whose server went away (a cluster losing its stream leader) can
// otherwise stall; replacing an idle one costs one API call.
const FollowIdle = 20 * time.Second

// Follow calls fn, in stream order, for every message under filters from
// from on, and keeps following new messages until ctx is done or fn
// returns an error. It returns ctx.Err(), or fn's error (nil for ErrStop).
func (c *Conn) Follow(ctx context.Context, filters []string, from From, fn func(Stored) error) error {
	return ignoreStop(c.followAll(ctx, filters, from, fn))
}

func (c *Conn) followAll(ctx context.Context, filters []string, from From, fn func(Stored) error) error {
	if from.New {
		// Pin "now" to a sequence, so a replaced consumer misses nothing.
		seq, err := c.LastSeq(ctx)
		if err != nil {
			return err
		}
		from = From{Seq: seq + 1}
	}
	var last uint64
	for {
		err := c.follow(ctx, filters, from, func(st Stored) error {
			last = st.Seq
			return fn(st)
		})
		if !errors.Is(err, errIdle) {
			return err
		}
		if last > 0 {
			from = From{Seq: last + 1}
		}
	}
}

var errIdle = errors.New("idle")

func (c *Conn) follow(ctx context.Context, filters []string, from From, fn func(Stored) error) error {
	// A server that fails while it creates the consumer (a cluster
	// electing a new leader) is not an error: wait and create it again.
	var it jetstream.MessagesContext
	var cons jetstream.Consumer
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 5*time.Second, 0
	err := backoff.Retry(func() error {
		actx, cancel := context.WithTimeout(ctx, APITimeout)
		defer cancel()
		var err error
		cons, err = c.js.OrderedConsumer(actx, StreamName, orderedConfig(filters, from))
		if err != nil {
			return err
		}
		it, err = cons.Messages(jetstream.PullMaxMessages(500))
		return err
	}, backoff.WithContext(b, ctx))
	if cons != nil {
		defer c.dropConsumer(cons)
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("follow %v: %w", filters, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	idle := time.AfterFunc(FollowIdle, it.Stop)
	defer idle.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return errIdle
			}
			return fmt.Errorf("follow %v: %w", filters, err)
		}
		idle.Reset(FollowIdle)
		if err := fn(decodeMsg(m)); err != nil {
			return err
		}
	}
}

// dropConsumer deletes a finished ordered consumer from the server now,
// rather than leaving it for the inactivity threshold. Best effort.
func (c *Conn) dropConsumer(cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil || info.Name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.js.DeleteConsumer(ctx, StreamName, info.Name)
}
