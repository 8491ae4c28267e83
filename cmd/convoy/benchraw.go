package main

// The raw floor of convoy bench: what the same server does for a plain
// client, the line convoy's own figures are read against. It is the one
// place outside package bus that imports nats.go, on purpose: going
// through bus would measure convoy, not the floor.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// The raw publishes go to a stream of their own, deleted afterwards, so
// they add nothing to the CONVOY stream, which keeps everything.
const (
	rawStream  = "CONVOY_BENCH"
	rawSubject = "convoybench.raw"
	// rawAsyncWindow is how many raw async publishes may await their ack.
	rawAsyncWindow = 256
)

// rawClient is a plain nats.go connection to the bus.
type rawClient struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func dialRaw(url, nkeyFile, caFile string) (*rawClient, error) {
	opts := []nats.Option{nats.Name("convoy bench (raw floor)")}
	if nkeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(nkeyFile)
		if err != nil {
			return nil, fmt.Errorf("credential %s: %w", nkeyFile, err)
		}
		opts = append(opts, o)
	}
	if caFile != "" {
		opts = append(opts, nats.RootCAs(caFile))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("raw client: %w: %w", bus.ErrUnreachable, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(rawAsyncWindow))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &rawClient{nc: nc, js: js}, nil
}

func (r *rawClient) close() { r.nc.Close() }

// rawPayload is as large as a typical fact: a pull.succeeded.
func rawPayload() ([]byte, error) {
	const c = "5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe"
	e, err := events.New(events.PullSucceeded, "h00001", "convoy/worker/h00001", events.Fact{Commit: c, OldCommit: c, NewCommit: c, DurationMS: 12})
	if err != nil {
		return nil, err
	}
	e.UpgradeID = e.ID
	return events.Encode(e)
}

// publishRates measures, on a stream configured as CONVOY is (storage,
// replicas), how many messages one publisher stores per second waiting
// for each ack (sync), then pipelining them (async), each for d.
func (r *rawClient) publishRates(ctx context.Context, d time.Duration) (syncRate, asyncRate float64, err error) {
	info, err := r.js.Stream(ctx, bus.StreamName)
	if err != nil {
		return 0, 0, fmt.Errorf("raw floor: stream %s: %w", bus.StreamName, err)
	}
	cfg := bus.StreamConfig(info.CachedInfo().Config.Replicas)
	cfg.Name, cfg.Subjects, cfg.Description = rawStream, []string{rawSubject}, "convoy bench: the raw floor (deleted after the bench)"
	if _, err := r.js.CreateStream(ctx, cfg); err != nil {
		return 0, 0, fmt.Errorf("raw floor: create stream %s: %w", rawStream, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if derr := r.js.DeleteStream(dctx, rawStream); derr != nil && err == nil {
			err = fmt.Errorf("raw floor: delete stream %s: %w", rawStream, derr)
		}
	}()
	payload, err := rawPayload()
	if err != nil {
		return 0, 0, err
	}
	if syncRate, err = r.publishSync(ctx, payload, d); err != nil {
		return 0, 0, err
	}
	asyncRate, err = r.publishAsync(ctx, payload, d)
	return syncRate, asyncRate, err
}

func (r *rawClient) publishSync(ctx context.Context, payload []byte, d time.Duration) (float64, error) {
	n, start := 0, time.Now()
	for time.Since(start) < d {
		if _, err := r.js.Publish(ctx, rawSubject, payload); err != nil {
			return 0, fmt.Errorf("raw sync publish: %w", err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// publishAsync publishes for d with up to rawAsyncWindow awaiting their
// ack, then waits for the last acks; the rate counts acknowledged ones.
func (r *rawClient) publishAsync(ctx context.Context, payload []byte, d time.Duration) (float64, error) {
	var acks []jetstream.PubAckFuture
	start := time.Now()
	for time.Since(start) < d {
		f, err := r.js.PublishAsync(rawSubject, payload)
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			continue // the window is full: try again
		}
		if err != nil {
			return 0, fmt.Errorf("raw async publish: %w", err)
		}
		acks = append(acks, f)
	}
	select {
	case <-r.js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	elapsed := time.Since(start)
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, fmt.Errorf("raw async publish: %w", err)
		}
	}
	return float64(len(acks)) / elapsed.Seconds(), nil
}

// replayRate reads the messages under filters of the CONVOY stream, from
// the first to the last stored now, through one ordered consumer, as
// bus.Replay does but decoding nothing. It returns how many it read and
// how long that took.
func (r *rawClient) replayRate(ctx context.Context, filters []string) (int, time.Duration, error) {
	start := time.Now()
	cons, err := r.js.OrderedConsumer(ctx, bus.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return 0, 0, fmt.Errorf("raw replay: %w", err)
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = r.js.DeleteConsumer(dctx, bus.StreamName, info.Name)
		}
	}()
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("raw replay: %w", err)
	}
	if info.NumPending == 0 {
		return 0, time.Since(start), nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(500))
	if err != nil {
		return 0, 0, fmt.Errorf("raw replay: %w", err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	n := 0
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return n, 0, ctx.Err()
			}
			return n, 0, fmt.Errorf("raw replay: %w", err)
		}
		n++
		md, err := m.Metadata()
		if err != nil || md.NumPending == 0 {
			return n, time.Since(start), nil
		}
	}
}
