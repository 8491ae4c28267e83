package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/events"
)

// WorkerConsumerName is the durable consumer of a host's requests. It is a
// stored identity: renaming it would redeliver every past request.
func WorkerConsumerName(host string) string { return "worker-" + host }

// ErrConsumerGone is wrapped when a host's request consumer was deleted
// or lost: create it again with Requests.
var ErrConsumerGone = errors.New("request consumer gone")

// Requests hands out a host's requests, one at a time, from its durable
// consumer. Close it when done.
type Requests struct {
	it jetstream.MessagesContext
}

// Requests creates or updates the host's durable pull consumer on
// convoy.req.<host>.> (explicit acks, one message in flight, redelivered
// after ackWait without a progress ack) and starts reading from it.
func (c *Conn) Requests(ctx context.Context, host string, ackWait time.Duration) (*Requests, error) {
	actx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	cons, err := c.js.CreateOrUpdateConsumer(actx, StreamName, jetstream.ConsumerConfig{
		Durable:       WorkerConsumerName(host),
		Description:   "convoy worker for " + host,
		FilterSubject: events.HostRequests(host),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: 1,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", WorkerConsumerName(host), err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", WorkerConsumerName(host), err)
	}
	return &Requests{it: it}, nil
}

// Next blocks until the next request is delivered. It returns
// ErrClosed after Close, and an error wrapping ErrConsumerGone when the
// consumer no longer exists.
func (r *Requests) Next() (*Delivery, error) {
	m, err := r.it.Next()
	switch {
	case errors.Is(err, jetstream.ErrMsgIteratorClosed):
		return nil, ErrClosed
	case errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, fmt.Errorf("%w: %w", ErrConsumerGone, err)
	case err != nil:
		return nil, err
	}
	return &Delivery{Stored: decodeMsg(m), msg: m}, nil
}

// Close stops reading; a blocked Next returns ErrClosed.
func (r *Requests) Close() { r.it.Stop() }

// ErrClosed is returned by Requests.Next after Close.
var ErrClosed = errors.New("closed")

// Delivery is one delivery of a request: the stored message and how to
// settle it. Until it is acked the consumer hands out nothing else, and
// after the ack wait without progress it delivers the request again.
type Delivery struct {
	Stored
	msg jetstream.Msg
}

// AckSubject names this delivery for Conn.Ack, which can settle it from
// a later process (a worker that restarted after the request ended).
func (d *Delivery) AckSubject() string { return d.msg.Reply() }

// Ack settles the delivery and waits for the server to confirm it.
func (d *Delivery) Ack(ctx context.Context) error { return d.msg.DoubleAck(ctx) }

// InProgress resets the ack wait: the request is still being handled.
func (d *Delivery) InProgress() error { return d.msg.InProgress() }

// Retry hands the request back for redelivery after delay.
func (d *Delivery) Retry(delay time.Duration) error {
	if delay <= 0 {
		return d.msg.Nak()
	}
	return d.msg.NakWithDelay(delay)
}

// Drop settles a delivery that can never be handled (no metadata): it is
// not delivered again.
func (d *Delivery) Drop() error { return d.msg.Term() }

// Ack acknowledges the delivery named by ackSubject (Delivery.AckSubject).
// It does not wait for a confirmation: a delivery already settled or
// redelivered is unaffected.
func (c *Conn) Ack(ackSubject string) error {
	if ackSubject == "" {
		return nil
	}
	return c.nc.Publish(ackSubject, []byte("+ACK"))
}
