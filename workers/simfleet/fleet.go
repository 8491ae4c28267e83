package simfleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers"
)

// Options shape a simulated fleet. URL, Hosts and Dir are required.
type Options struct {
	// URL of the bus, which must be provisioned (convoy server does it).
	URL string
	// Hosts is how many hosts to run, named Name(First+1) … Name(First+Hosts).
	Hosts int
	// First is the number before the first host's: several fleets (in
	// several processes) can share a bus without sharing a name.
	First int
	// Dir holds the hosts' state dirs and the checkout they share.
	Dir string
	// SharedConn makes every host use one connection. By default each host
	// has its own, as real hosts do.
	SharedConn bool
	// Concurrency bounds how many hosts are joining (connecting, up to
	// their worker.started) at once; default 64.
	Concurrency int
	// Logger receives the workers' logs; default: discarded.
	Logger *slog.Logger
	// Version is what the workers report in worker.started.
	Version string
	// OnJoin, if set, is called as each host's worker.started is stored,
	// with how many hosts have joined so far. Calls come from one
	// goroutine, in stream order.
	OnJoin func(host string, joined int)
}

// Validate reports every problem at once.
func (o Options) Validate() error {
	var errs []error
	if o.URL == "" {
		errs = append(errs, errors.New("simfleet: no bus URL"))
	}
	if o.Hosts < 1 || o.First < 0 || o.First+o.Hosts > maxHosts {
		errs = append(errs, fmt.Errorf("simfleet: hosts %d to %d: want 1 to %d", o.First+1, o.First+o.Hosts, maxHosts))
	}
	if o.Dir == "" {
		errs = append(errs, errors.New("simfleet: no dir for the hosts' state"))
	}
	if o.Concurrency < 0 {
		errs = append(errs, fmt.Errorf("simfleet: concurrency %d: must not be negative", o.Concurrency))
	}
	return errors.Join(errs...)
}

// maxHosts is the most Name numbers in five digits.
const maxHosts = 99999

// Name is the name of the i-th simulated host (from 1): h00001.
func Name(i int) string { return fmt.Sprintf("h%05d", i) }

// Fleet is a running simulated fleet. Its methods are safe for
// concurrent use.
type Fleet struct {
	o      Options
	mon    *bus.Conn // follows worker.started; the hosts' conn with SharedConn
	hosts  []*host
	byName map[string]*host

	cancel  context.CancelFunc // stops the workers and the follower
	workers sync.WaitGroup     // each host's Run
	follow  sync.WaitGroup

	mu     sync.Mutex
	joined map[string]time.Time
}

// host is one simulated host while the fleet runs.
type host struct {
	name    string
	sys     *system
	conn    *bus.Conn // its own, nil with SharedConn
	joined  chan struct{}
	stopped chan struct{} // closed when Run returned
	err     error         // Run's, once stopped is closed
}

// Start starts every host's worker, at most Options.Concurrency joining
// at once, and returns once each has published worker.started. The
// workers run until Close, whatever becomes of ctx, which bounds only the
// start. On an error every host already started is stopped.
func Start(ctx context.Context, o Options) (*Fleet, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Concurrency == 0 {
		o.Concurrency = 64
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	// workers.Check needs a git checkout; the hosts' git is simulated,
	// so an empty .git does.
	repo := filepath.Join(o.Dir, "nix-config")
	if err := os.MkdirAll(filepath.Join(repo, ".git"), 0o755); err != nil {
		return nil, fmt.Errorf("simfleet: %w", err)
	}
	mon, err := bus.Connect(ctx, bus.ConnectConfig{URL: o.URL, Name: "convoy simfleet", MaxWait: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("simfleet: %w", err)
	}
	f := &Fleet{o: o, mon: mon, byName: make(map[string]*host, o.Hosts), joined: make(map[string]time.Time, o.Hosts)}
	for i := o.First + 1; i <= o.First+o.Hosts; i++ {
		h := &host{name: Name(i), sys: newSystem(Name(i)), joined: make(chan struct{}), stopped: make(chan struct{})}
		f.hosts = append(f.hosts, h)
		f.byName[h.name] = h
	}
	// Follow from before the first host starts, so no worker.started is
	// missed.
	last, err := mon.LastSeq(ctx)
	if err != nil {
		mon.Close()
		return nil, fmt.Errorf("simfleet: %w", err)
	}
	run, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	f.follow.Go(func() { f.followJoins(run, last+1) })
	if err := f.startAll(ctx, run, repo); err != nil {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer ccancel()
		_ = f.Close(cctx)
		return nil, err
	}
	return f, nil
}

// startAll starts the hosts through a pool of o.Concurrency and waits
// until each has joined.
func (f *Fleet) startAll(ctx, run context.Context, repo string) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	slots := make(chan struct{}, f.o.Concurrency)
	var wg sync.WaitGroup
	for _, h := range f.hosts {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := f.startHost(ctx, run, h, repo); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return nil
}

// startHost connects host h, starts its worker under run and waits until
// it has joined.
func (f *Fleet) startHost(ctx, run context.Context, h *host, repo string) error {
	cfg, err := workers.ParseConfig(config(h.name, filepath.Join(f.o.Dir, "hosts", h.name), repo))
	if err != nil {
		return fmt.Errorf("simfleet: host %s: %w", h.name, err)
	}
	conn := f.mon
	if !f.o.SharedConn {
		c, err := bus.Connect(ctx, bus.ConnectConfig{URL: f.o.URL, Name: "convoy simfleet " + h.name, MaxWait: 10 * time.Second, InboxPrefix: bus.InboxPrefix(h.name)})
		if err != nil {
			return fmt.Errorf("simfleet: host %s: %w", h.name, err)
		}
		h.conn, conn = c, c
	}
	w, err := workers.New(workers.Options{Config: cfg, Conn: conn, Logger: f.o.Logger, Version: f.o.Version, Exec: h.sys.exec})
	if err != nil {
		if h.conn != nil {
			h.conn.Close()
		}
		return fmt.Errorf("simfleet: host %s: %w", h.name, err)
	}
	f.workers.Go(func() {
		h.err = w.Run(run)
		close(h.stopped)
	})
	select {
	case <-h.joined:
		return nil
	case <-h.stopped:
		why := h.err
		if why == nil {
			why = errors.New("its worker returned")
		}
		return fmt.Errorf("simfleet: host %s stopped before it published worker.started: %w", h.name, why)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// config is a simulated host's worker config: the command driver, whose
// argv the host's Exec answers.
func config(name, stateDir, repo string) []byte {
	return fmt.Appendf(nil, "host = %q\nstate_dir = %q\n\n[repo]\npath = %q\n\n[system]\ndriver = %q\nbuild = %s\nswitch = %s\ncurrent = %s\n",
		name, stateDir, repo, workers.DriverCommand, tomlList(buildArgv), tomlList(switchArgv), tomlList(currentArgv))
}

func tomlList(xs []string) string {
	var b []byte
	b = append(b, '[')
	for i, x := range xs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = fmt.Appendf(b, "%q", x)
	}
	return string(append(b, ']'))
}

// followJoins records each host's worker.started from stream sequence
// from on, until ctx ends.
func (f *Fleet) followJoins(ctx context.Context, from uint64) {
	filter := events.SubjectRoot + "." + events.ClassHost + ".*." + string(events.WorkerStarted)
	for ctx.Err() == nil {
		err := f.mon.Follow(ctx, []string{filter}, bus.From{Seq: from}, func(st bus.Stored) error {
			from = st.Seq + 1
			f.joinedAt(st)
			return nil
		})
		if ctx.Err() == nil {
			f.o.Logger.Warn("simfleet: following worker.started; again in a second", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (f *Fleet) joinedAt(st bus.Stored) {
	if st.Err != nil {
		return
	}
	h := f.byName[st.Event.Host()]
	if h == nil {
		return
	}
	f.mu.Lock()
	_, again := f.joined[h.name]
	if !again {
		f.joined[h.name] = st.Stored
	}
	n := len(f.joined)
	f.mu.Unlock()
	if again {
		return
	}
	if f.o.OnJoin != nil {
		f.o.OnJoin(h.name, n)
	}
	close(h.joined) // after OnJoin: Start returns after the last call
}

// Hosts returns the hosts' names, sorted.
func (f *Fleet) Hosts() []string {
	names := make([]string, len(f.hosts))
	for i, h := range f.hosts {
		names[i] = h.name
	}
	sort.Strings(names)
	return names
}

// Joined returns when each host's worker.started was stored.
func (f *Fleet) Joined() map[string]time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]time.Time, len(f.joined))
	for h, t := range f.joined {
		m[h] = t
	}
	return m
}

// Close stops every worker (each appends worker.stopped), waits for them
// and closes the connections. It returns the errors the workers stopped
// with, or ctx's error if they have not all stopped when it ends.
func (f *Fleet) Close(ctx context.Context) error {
	f.cancel()
	done := make(chan struct{})
	go func() {
		f.workers.Wait()
		f.follow.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("simfleet: stopping %d hosts: %w", len(f.hosts), ctx.Err())
	}
	var errs []error
	for _, h := range f.hosts {
		select {
		case <-h.stopped:
			if h.err != nil {
				errs = append(errs, fmt.Errorf("host %s: %w", h.name, h.err))
			}
		default: // never started
		}
		if h.conn != nil {
			h.conn.Close()
		}
	}
	f.mon.Close()
	return errors.Join(errs...)
}
