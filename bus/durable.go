package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
)

// ConsumeAckWait is how long the server waits for a durable consumer's
// ack before it delivers the message again. While fn runs, Consume tells
// the server every ConsumeAckWait/3 that the message is in progress, so a
// slow fn is not redelivered; a message whose reader died is redelivered
// ConsumeAckWait after the reader's last word.
const ConsumeAckWait = 10 * time.Second

// ConsumeNakDelay is how long a message fn failed on waits before it is
// delivered again.
const ConsumeNakDelay = time.Second

// Durable is a durable consumer of the stream: a reader's stored
// position. It is safe for one Consume at a time.
type Durable struct {
	c    *Conn
	cons jetstream.Consumer
}

// Durable looks up the durable consumer named name, or creates it
// starting at from. The name is a stored identity: renaming it replays
// the stream from from. from applies only when the consumer is created;
// an existing consumer keeps its position, and gets the new filters if
// they changed. Once it returns, messages stored later are kept for the
// consumer whether or not anyone reads.
func (c *Conn) Durable(ctx context.Context, name string, filters []string, from From) (*Durable, error) {
	cons, err := c.durableConsumer(ctx, name, filters, from)
	if err != nil {
		return nil, err
	}
	return &Durable{c: c, cons: cons}, nil
}

// Consume is Durable then Durable.Consume.
func (c *Conn) Consume(ctx context.Context, durable string, filters []string, from From, fn func(Stored) error) error {
	d, err := c.Durable(ctx, durable, filters, from)
	if err != nil {
		return err
	}
	return d.Consume(ctx, fn)
}

// Consume calls fn for every message of the consumer, one at a time, in
// stream order, until ctx ends. A message is acknowledged (and the ack
// confirmed by the server) only after fn returns nil, so a reader that
// dies or whose fn fails gets the message again, and a restarted reader
// with the same name goes on where the last one stopped. Delivery is thus
// at least once: fn must be idempotent.
//
// fn returning an error naks the message (it comes again after
// ConsumeNakDelay); fn returning ErrStop acks it and Consume returns nil.
// Messages that did not decode reach fn with Stored.Err set. Consume
// returns ctx.Err() when ctx ends; a failed read (a lost server) is
// retried with backoff.
func (d *Durable) Consume(ctx context.Context, fn func(Stored) error) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 5*time.Second, 0
	for {
		err := d.c.consume(ctx, d.cons, fn)
		if err == nil || errors.Is(err, ErrStop) {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// A lost server or leader: read again from where the consumer is.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(b.NextBackOff()):
		}
	}
}

// durableConsumer looks the consumer up, or creates it starting at from.
func (c *Conn) durableConsumer(ctx context.Context, durable string, filters []string, from From) (jetstream.Consumer, error) {
	var cons jetstream.Consumer
	err := retryAPI(ctx, func(actx context.Context) error {
		var err error
		cons, err = c.js.Consumer(actx, StreamName, durable)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			o := orderedConfig(filters, from)
			cons, err = c.js.CreateConsumer(actx, StreamName, jetstream.ConsumerConfig{
				Durable:        durable,
				Description:    "convoy durable reader " + durable,
				FilterSubjects: filters,
				DeliverPolicy:  o.DeliverPolicy,
				OptStartSeq:    o.OptStartSeq,
				OptStartTime:   o.OptStartTime,
				AckPolicy:      jetstream.AckExplicitPolicy,
				AckWait:        ConsumeAckWait,
				MaxDeliver:     -1,
				MaxAckPending:  1,
				Replicas:       c.replicas,
			})
			return err
		}
		if err != nil {
			return err
		}
		cfg := cons.CachedInfo().Config
		if !slices.Equal(cfg.FilterSubjects, filters) {
			cfg.FilterSubject, cfg.FilterSubjects = "", filters
			cons, err = c.js.UpdateConsumer(actx, StreamName, cfg)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("durable consumer %s: %w", durable, err)
	}
	return cons, nil
}

// consume reads through cons until ctx ends, fn returns ErrStop or the
// read fails.
func (c *Conn) consume(ctx context.Context, cons jetstream.Consumer, fn func(Stored) error) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		return err
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
			return err
		}
		ferr := inProgress(ctx, m, func() error { return fn(decodeMsg(m)) })
		if ferr != nil && !errors.Is(ferr, ErrStop) {
			_ = m.NakWithDelay(ConsumeNakDelay)
			continue
		}
		actx, cancel := context.WithTimeout(ctx, APITimeout)
		err = m.DoubleAck(actx)
		cancel()
		if err != nil && ctx.Err() == nil {
			// Unconfirmed: the message comes again; fn is idempotent.
			continue
		}
		if ferr != nil {
			return ferr
		}
	}
}

// inProgress runs f, telling the server every ConsumeAckWait/3 that m is
// still being worked on.
func inProgress(ctx context.Context, m jetstream.Msg, f func() error) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(ConsumeAckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	return f()
}
