package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/events"
)

// The storage guard keeps JetStream from ever writing to a full disk.
//
// nats-server (v2.15, single node) does not recover from a write that
// fails for lack of space: the stream's file store keeps the error, every
// later publish to the stream goes unanswered (clients see a deadline),
// and freeing space changes nothing until JetStream is restarted. So the
// guard, run by convoy server (WatchStorage), reads the free space of the
// data dir every second and turns publishes away *before* JetStream sees
// them, with subject mappings on the server's account:
//
//   - below MinFree ("low"), new requests (convoy.req.> and new rollouts)
//     are mapped under refusedRoot; the facts of running upgrades are
//     still stored;
//   - below Floor ("full"), every convoy.> publish is.
//
// A mapped publish reaches no stream; the guard answers it with a
// JetStream error (code 10047) whose description names the server and the
// data dir, so a client gets ErrStorageFull at once instead of a deadline.
// Nothing refused is stored, so a retry (the workers' outbox) stores it
// once when space returns. If a write fails for lack of space anyway
// (something else filled the disk between two reads), the guard sees
// nats-server's error, goes "full", and once free space is back above
// MinFree restarts JetStream in process, which reopens the stores from
// disk; if that restart fails, WatchStorage returns the error and convoy
// server exits non-zero for its supervisor to restart it.

// StorageSubject is the core NATS subject on which every convoy server
// answers a request with its Storage as JSON. Answering touches no disk,
// so it works when the disk is full.
const StorageSubject = "_CONVOY.storage"

// refusedRoot is where the guard maps the publishes it turns away.
const refusedRoot = "_CONVOY.refused"

// StorageLevel says how much of a server's data dir is left.
type StorageLevel string

// Storage levels.
const (
	// StorageOK: free space at or above MinFree.
	StorageOK StorageLevel = "ok"
	// StorageLow: below MinFree. New requests are refused; facts are
	// stored, so running upgrades can end.
	StorageLow StorageLevel = "low"
	// StorageFull: below Floor, or JetStream failed a write for lack of
	// space. Every append is refused.
	StorageFull StorageLevel = "full"
)

// Storage is a server's view of its data dir, as StorageSubject answers
// and Server.Storage returns.
type Storage struct {
	Server  string       `json:"server"`
	DataDir string       `json:"data_dir"`
	Level   StorageLevel `json:"level"`
	// Free is what statfs says unprivileged writers may still use, and
	// Size the file system's size, in bytes.
	Free uint64 `json:"free_bytes"`
	Size uint64 `json:"size_bytes"`
	// MinFree and Floor are the thresholds of "low" and "full".
	MinFree uint64 `json:"min_free_bytes"`
	Floor   uint64 `json:"floor_bytes"`
	// WriteFailed: JetStream failed a write for lack of space since the
	// last JetStream restart.
	WriteFailed bool `json:"write_failed,omitempty"`
	// Since is when Level last changed; Checked when Free was read.
	Since   time.Time `json:"since"`
	Checked time.Time `json:"checked"`
	// Restarts counts in-process JetStream restarts after a failed write.
	Restarts int `json:"jetstream_restarts"`
	// Err is why the free space could not be read, if it could not.
	Err string `json:"error,omitempty"`
}

// Problem returns the sentence clients get while Level is not ok ("" when
// it is).
func (s Storage) Problem() string {
	switch s.Level {
	case StorageLow:
		return fmt.Sprintf("the bus's storage is full on %s: free space in %s (%s free, below --min-free %s: new requests are refused; facts of running upgrades are still stored)",
			s.Server, s.DataDir, FormatBytes(s.Free), FormatBytes(s.MinFree))
	case StorageFull:
		why := fmt.Sprintf("%s free, below %s", FormatBytes(s.Free), FormatBytes(s.Floor))
		if s.WriteFailed {
			why = fmt.Sprintf("a write failed for lack of space; %s free, resuming at %s", FormatBytes(s.Free), FormatBytes(s.resumeAt()))
		}
		return fmt.Sprintf("the bus's storage is full on %s: free space in %s (%s: every append is refused until then)", s.Server, s.DataDir, why)
	}
	return ""
}

// resumeAt is the free space at which a full store becomes usable again.
func (s Storage) resumeAt() uint64 { return max(s.MinFree, s.Floor+s.Floor, 1<<20) }

// FormatBytes prints n in binary units ("3.1 MiB").
func FormatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// ErrStorageFull is wrapped by errors of appends refused because the
// bus's storage is full or below its reserve; the error's text is the
// server's (Storage.Problem). Nothing refused was stored: retry later.
var ErrStorageFull = errors.New("the bus's storage is full")

// StorageFullError is an append refused for lack of space.
type StorageFullError struct{ Description string }

func (e *StorageFullError) Error() string        { return e.Description }
func (e *StorageFullError) Is(target error) bool { return target == ErrStorageFull }

// storageFull turns JetStream's refusals for lack of space (the guard's,
// and JetStream's own resource limits) into a *StorageFullError.
func storageFull(err error) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return nil
	}
	switch apiErr.ErrorCode {
	case jetstream.ErrorCode(server.JSStorageResourcesExceededErr), jetstream.ErrorCode(server.JSInsufficientResourcesErr):
	default:
		return nil
	}
	d := apiErr.Description
	if !strings.HasPrefix(d, "the bus's storage is full") {
		d = "the bus's storage is full on the server: free space in its data dir (JetStream: " + d + ")"
	}
	return &StorageFullError{Description: d}
}

// guard is the storage guard's state, owned by Server.
type guard struct {
	dir     string
	minFree uint64
	floor   uint64
	// writeFailed is set by the server's log when a write fails for lack
	// of space; kick wakes WatchStorage.
	writeFailed chan struct{}

	mu     sync.Mutex
	st     Storage
	mapped StorageLevel // the mappings in place
}

func newGuard(name, dir string, minFree uint64) *guard {
	g := &guard{dir: dir, minFree: minFree, floor: minFree / 8, writeFailed: make(chan struct{}, 1)}
	g.st = Storage{Server: name, DataDir: dir, Level: StorageOK, MinFree: minFree, Floor: g.floor, Since: time.Now()}
	g.mapped = StorageOK
	return g
}

// Storage returns the last state the guard saw of the data dir: its level,
// free space and thresholds. Safe for concurrent use; cheap (no I/O), so a
// health check or a metrics scrape may call it at will. Before
// WatchStorage runs it says ok with no free space read.
func (s *Server) Storage() Storage {
	s.guard.mu.Lock()
	defer s.guard.mu.Unlock()
	return s.guard.st
}

// DefaultStorageCheck is how often WatchStorage reads the free space.
const DefaultStorageCheck = time.Second

// WatchStorage runs the storage guard until ctx ends: it reads the data
// dir's free space every `every` (and at once when JetStream reports a
// failed write), maps publishes away as the level requires, answers
// StorageSubject and the refused publishes, and calls changed (from this
// goroutine) at each change of level and after each JetStream restart. It returns nil when ctx ends, or
// the error of a JetStream restart that failed: the server must then
// exit so that its supervisor restarts it.
func (s *Server) WatchStorage(ctx context.Context, every time.Duration, changed func(old, cur Storage)) error {
	if every <= 0 {
		every = DefaultStorageCheck
	}
	nc, err := nats.Connect(s.InternalURL(), append(s.ClientOptions(), nats.Name("convoy storage guard"))...)
	if err != nil {
		return fmt.Errorf("storage guard: %w", err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe(StorageSubject, func(m *nats.Msg) {
		b, _ := json.Marshal(s.Storage())
		_ = m.Respond(b)
	}); err != nil {
		return fmt.Errorf("storage guard: %w", err)
	}
	if _, err := nc.Subscribe(refusedRoot+".>", func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		desc := s.Storage().Problem()
		if desc == "" { // a mapping being removed
			desc = "the bus's storage was full on " + s.Name() + ": retry"
		}
		b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": 507, "err_code": server.JSStorageResourcesExceededErr, "description": desc}})
		_ = m.Respond(b)
	}); err != nil {
		return fmt.Errorf("storage guard: %w", err)
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("storage guard: %w", err)
	}
	defer s.mapFor(StorageOK)
	t := time.NewTicker(every)
	defer t.Stop()
	failed := false
	for {
		old := s.Storage()
		cur, err := s.checkStorage(failed)
		if err != nil {
			return err
		}
		failed = cur.WriteFailed
		if (cur.Level != old.Level || cur.Restarts != old.Restarts) && changed != nil {
			changed(old, cur)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.guard.writeFailed:
			failed = true
		}
	}
}

// checkStorage reads the free space, sets the level and the mappings, and
// restarts JetStream once space is back after a failed write.
func (s *Server) checkStorage(failed bool) (Storage, error) {
	g := s.guard
	st := s.Storage()
	st.Checked = time.Now()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(g.dir, &fs); err != nil {
		st.Err = err.Error()
	} else {
		st.Err = ""
		st.Free, st.Size = fs.Bavail*uint64(fs.Bsize), fs.Blocks*uint64(fs.Bsize)
	}
	if !failed && !s.ns.JetStreamEnabled() {
		failed = true // JetStream turned itself off (a cluster node out of space)
	}
	st.WriteFailed = failed
	if failed && st.Err == "" && st.Free >= st.resumeAt() {
		// Space is back: reopen the stores, which a failed write left
		// refusing every write.
		if err := s.restartJetStream(); err != nil {
			return st, fmt.Errorf("storage guard: restart JetStream after a full disk in %s: %w", g.dir, err)
		}
		st.WriteFailed = false
		st.Restarts++
	}
	// A level is left only with a margin (Floor) above its threshold, so
	// a disk hovering at it does not flap.
	level := StorageOK
	margin := func(at uint64) uint64 { return at + g.floor }
	switch {
	case st.WriteFailed:
		level = StorageFull
	case st.Err != "":
		level = st.Level
	case st.Free < g.floor || (st.Level == StorageFull && st.Free < margin(g.floor)):
		level = StorageFull
	case st.Free < g.minFree || (st.Level != StorageOK && st.Free < margin(g.minFree)):
		level = StorageLow
	}
	if level != st.Level {
		st.Level, st.Since = level, st.Checked
	}
	g.mu.Lock()
	g.st = st
	g.mu.Unlock()
	s.mapFor(level)
	return st, nil
}

// refusedAt returns the subjects the guard turns away at level, each with
// where it maps them.
func refusedAt(level StorageLevel) map[string]string {
	to := func(src string) string {
		// A mapping's * must be named in the destination.
		n := 0
		parts := strings.Split(src, ".")
		for i, p := range parts {
			if p == "*" {
				n++
				parts[i] = fmt.Sprintf("{{wildcard(%d)}}", n)
			}
		}
		return refusedRoot + "." + strings.Join(parts, ".")
	}
	var srcs []string
	switch level {
	case StorageFull:
		srcs = []string{events.AllSubjects}
	case StorageLow:
		srcs = []string{events.AllRequests, events.RolloutRequestFilters[0]}
	}
	m := map[string]string{}
	for _, src := range srcs {
		m[src] = to(src)
	}
	return m
}

// mapFor puts in place the mappings of level, removing the others.
func (s *Server) mapFor(level StorageLevel) {
	g := s.guard
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mapped == level {
		return
	}
	acc := s.ns.GlobalAccount()
	for src := range refusedAt(g.mapped) {
		acc.RemoveMapping(src)
	}
	for src, dst := range refusedAt(level) {
		// The sources and destinations are constants known to be valid.
		_ = acc.AddMapping(src, dst)
	}
	g.mapped = level
}

// restartJetStream stops JetStream and starts it again on the same
// stores, as nats-server does at start.
func (s *Server) restartJetStream() error {
	if s.ns.JetStreamEnabled() {
		if err := s.ns.ShutdownJetStream(); err != nil {
			return err
		}
	}
	return s.ns.EnableJetStream(&server.JetStreamConfig{
		StoreDir:   s.opts.StoreDir,
		MaxMemory:  s.opts.JetStreamMaxMemory,
		MaxStore:   s.opts.JetStreamMaxStore,
		SyncAlways: s.opts.SyncAlways,
	})
}

// serverLog receives nats-server's log. It logs nothing itself (the bus
// package does not log); it watches for writes that failed for lack of
// space.
type serverLog struct{ g *guard }

func (l serverLog) watch(format string, v []any) {
	if strings.Contains(fmt.Sprintf(format, v...), "no space left on device") {
		select {
		case l.g.writeFailed <- struct{}{}:
		default:
		}
	}
}

func (l serverLog) Noticef(string, ...any)         {}
func (l serverLog) Debugf(string, ...any)          {}
func (l serverLog) Tracef(string, ...any)          {}
func (l serverLog) Warnf(format string, v ...any)  { l.watch(format, v) }
func (l serverLog) Errorf(format string, v ...any) { l.watch(format, v) }
func (l serverLog) Fatalf(format string, v ...any) { l.watch(format, v) }

// QueryStorage asks the convoy servers of the bus for their Storage: the
// first answer, and those that arrive within storageQueryGrace after it
// (the other nodes of a cluster). It returns none, and no error, when no
// convoy server answers (an external NATS without one).
func QueryStorage(ctx context.Context, c *Conn) ([]Storage, error) {
	inbox := c.nc.NewRespInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	defer sub.Unsubscribe()
	if err := c.nc.PublishRequest(StorageSubject, inbox, nil); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	var out []Storage
	wait := 2 * time.Second
	for {
		m, err := sub.NextMsg(wait)
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) || ctx.Err() != nil {
				return out, nil // no (more) convoy server answers
			}
			return out, fmt.Errorf("storage: %w", err)
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			return out, nil // no responders: no convoy server on this bus
		}
		var st Storage
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return out, fmt.Errorf("storage: %w", err)
		}
		out = append(out, st)
		wait = storageQueryGrace
	}
}

// storageQueryGrace is how long QueryStorage waits for more answers after
// the first.
const storageQueryGrace = 100 * time.Millisecond
