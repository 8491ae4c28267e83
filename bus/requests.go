package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/events"
)

// A host learns of its requests without a consumer of its own: the
// stream republishes every request, once stored, on the request's live
// subject (liveRequestsRoot + its subject) with its stream sequence and
// the sequence of the previous request on the same subject. A reader
// that has seen that previous one has missed nothing; otherwise, after a
// reconnect, and now and then in case the newest notification itself was
// lost, it reads what it missed from the stream through a short-lived
// consumer of its own, named by the host and filtered to its requests.

// liveRequestsRoot replaces convoy.req in the live subjects: a request
// stored on convoy.req.<host>.<kind> is republished on
// convoy-live.req.<host>.<kind>. It lies outside the stream's subjects
// (republishing into them would loop).
const liveRequestsRoot = "convoy-live.req"

// LiveRequests is the subject filter on which host's requests are
// republished as they are stored. Only the server publishes there.
func LiveRequests(host string) string { return liveRequestsRoot + "." + host + ".>" }

// CatchUpConsumerName is the consumer a host reads missed requests
// through; it exists only while it reads.
func CatchUpConsumerName(host string) string { return "requests-" + host }

// RequestCheck is how often an idle Requests reader asks the stream for
// its host's newest request, in case the notification of it was lost.
const RequestCheck = 5 * time.Minute

// Requests hands out one host's requests in stream order, each once,
// from a position on. It holds no consumer while the host is idle. It is
// not safe for concurrent use; Close it when done.
type Requests struct {
	c    *Conn
	host string
	sub  *nats.Subscription
	live chan *nats.Msg
	next uint64 // the lowest sequence not handed out yet
	// lastOn is, per request subject, the sequence of the last request
	// on it below next; a live request whose predecessor is not that
	// one follows a gap.
	lastOn map[string]uint64
	queue  []Stored // read by a catch-up, not handed out yet
	stale  bool     // requests may have been missed: catch up
	recon  <-chan struct{}
	// checkAt is when Next next asks for the host's newest request, kept
	// across calls so that a caller that bounds each call still gets it.
	checkAt time.Time
}

// Requests starts reading host's requests with stream sequence above
// from (0: all).
func (c *Conn) Requests(ctx context.Context, host string, from uint64) (*Requests, error) {
	r := &Requests{c: c, host: host, next: from + 1, lastOn: map[string]uint64{}, live: make(chan *nats.Msg, 64), checkAt: time.Now().Add(RequestCheck)}
	var err error
	// Subscribe before looking back, so nothing stored in between is
	// missed (it may be seen twice; sequences tell).
	r.recon = c.reconnects()
	if r.sub, err = c.nc.ChanSubscribe(LiveRequests(host), r.live); err != nil {
		return nil, fmt.Errorf("requests of %s: %w", host, err)
	}
	_ = r.sub.SetPendingLimits(-1, -1) // never dropped as a slow consumer
	fctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	if err := c.nc.FlushWithContext(fctx); err != nil {
		r.Close()
		return nil, fmt.Errorf("requests of %s: %w", host, err)
	}
	for _, k := range events.Kinds {
		if !k.IsRequest() {
			continue
		}
		subj, _ := events.RequestSubject(host, k)
		last, err := c.Last(ctx, subj)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			r.Close()
			return nil, fmt.Errorf("requests of %s: %w", host, err)
		case last.Seq <= from:
			r.lastOn[subj] = last.Seq
		default:
			r.stale = true // stored before the subscription: read it
		}
	}
	return r, nil
}

// Close stops reading.
func (r *Requests) Close() { _ = r.sub.Unsubscribe() }

// Next returns the next request, waiting for one until ctx ends. An
// error from reading the stream leaves the reader as it was: call Next
// again to retry.
func (r *Requests) Next(ctx context.Context) (Stored, error) {
	check := time.NewTimer(time.Until(r.checkAt))
	defer check.Stop()
	for {
		if st, ok := r.pop(); ok {
			return st, nil
		}
		if r.stale {
			if err := r.catchUp(ctx); err != nil {
				return Stored{}, err
			}
			continue
		}
		select {
		case m := <-r.live:
			if st, ok := r.accept(m); ok {
				return st, nil
			}
		case <-r.recon:
			r.recon, r.stale = r.c.reconnects(), true
		case <-check.C:
			r.checkAt = time.Now().Add(RequestCheck)
			check.Reset(RequestCheck)
			last, err := r.c.Last(ctx, events.HostRequests(r.host))
			if err == nil && last.Seq >= r.next {
				r.stale = true
			}
		case <-ctx.Done():
			return Stored{}, ctx.Err()
		}
	}
}

// pop hands out the next queued request not handed out before.
func (r *Requests) pop() (Stored, bool) {
	for len(r.queue) > 0 {
		st := r.queue[0]
		r.queue = r.queue[1:]
		if st.Seq >= r.next {
			r.handOut(st)
			return st, true
		}
	}
	return Stored{}, false
}

func (r *Requests) handOut(st Stored) {
	r.next = st.Seq + 1
	r.lastOn[st.Subject] = st.Seq
}

// accept takes a live request: handed out if it follows the last one on
// its subject, dropped if seen, and otherwise the sign of a gap.
func (r *Requests) accept(m *nats.Msg) (Stored, bool) {
	seq, err1 := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	prev, err2 := strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
	subj := m.Header.Get(jetstream.SubjectHeader)
	switch {
	case err1 != nil || err2 != nil || subj == "":
		r.stale = true // not a republished request: read the stream
		return Stored{}, false
	case seq < r.next:
		return Stored{}, false
	}
	if last, ok := r.lastOn[subj]; !ok || last != prev {
		r.stale = true
		return Stored{}, false
	}
	st := Stored{Seq: seq, Subject: subj, MsgID: m.Header.Get(jetstream.MsgIDHeader)}
	st.Stored, _ = time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	st.Event, st.Err = events.Decode(m.Data)
	r.handOut(st)
	return st, true
}

// catchUp reads every request from next to the end of the stream into
// the queue, through the host's catch-up consumer, and deletes it.
func (r *Requests) catchUp(ctx context.Context) error {
	name := CatchUpConsumerName(r.host)
	actx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	// One left by a reader that died: its start cannot be changed.
	if err := r.c.js.DeleteConsumer(actx, StreamName, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("requests of %s: %w", r.host, err)
	}
	cons, err := r.c.js.CreateConsumer(actx, StreamName, jetstream.ConsumerConfig{
		Name:              name,
		Description:       "convoy: " + r.host + " catching up on its requests",
		FilterSubject:     events.HostRequests(r.host),
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.next,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("requests of %s: %w", r.host, err)
	}
	defer r.c.dropConsumer(cons)
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(APITimeout))
		if err != nil {
			return fmt.Errorf("requests of %s: %w", r.host, err)
		}
		n := 0
		for m := range batch.Messages() {
			st := decodeMsg(m)
			r.queue = append(r.queue, st)
			pending = st.Pending
			n++
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("requests of %s: %w", r.host, err)
		}
		if n == 0 {
			break
		}
	}
	r.stale = false
	return nil
}
