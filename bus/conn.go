package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/events"
)

// Names of the stored objects. They are a stored identity: renaming one
// orphans its data (and a renamed consumer replays the stream), so they
// are constants and never change.
const (
	// StreamName is the immutable event log.
	StreamName = "CONVOY"
	// StatusBucket is the fleet-status projection, one key per host.
	StatusBucket = "convoy-status"
	// UpgradesBucket is the upgrade index (see package upgradeindex),
	// keyed by UpgradeKey.
	UpgradesBucket = "convoy-upgrades"
	// LeasesBucket says which worker serves each host; keys expire
	// LeaseTTL after their last renewal.
	LeasesBucket = "convoy-leases"
	// AlertsBucket is the alerts subscriber's record: which alert each
	// sink has been sent, and the per-host counts it derives alerts from
	// (see package projections/alerts).
	AlertsBucket = "convoy-alerts"
)

// UpgradeKey is the key of one host's upgrade in UpgradesBucket; "*" as
// the id matches every upgrade of the host, and as the host every host's
// record of the upgrade.
func UpgradeKey(host, id string) string { return host + "." + id }

// AlertsTTL is how long the alerts bucket keeps a record (what a sink
// was sent, a failure streak, an offline episode) after its last write.
const AlertsTTL = 30 * 24 * time.Hour

// LeaseTTL is how long a host's lease outlives its worker's last renewal.
const LeaseTTL = 90 * time.Second

// DuplicateWindow is how long the stream remembers Nats-Msg-Id values: a
// publish retried within it is stored once. Retries of a request id after
// the window are caught by the worker (see workers) and the producer (see
// producers) through UpgradesBucket.
const DuplicateWindow = 10 * time.Minute

// ErrUnreachable is wrapped when no connection to the bus can be made.
var ErrUnreachable = errors.New("bus unreachable")

// ErrNotFound is returned when a lookup matches nothing.
var ErrNotFound = errors.New("not found")

// ConnectConfig says where the bus is and how hard to try.
type ConnectConfig struct {
	// URL of the NATS server(s), comma separated. Default nats://127.0.0.1:4222.
	URL string
	// Name identifies the client in server monitoring.
	Name string
	// MaxWait bounds the first connection's retries; 0 means 10s and a
	// negative value retries until ctx ends.
	MaxWait time.Duration
	// Replicas for the stream and buckets when they are created; 0 means 1.
	// Use 3 on a 3-node cluster.
	Replicas int
	// OnRetry, if set, is called before each retry of the first connection.
	OnRetry func(err error, next time.Duration)
	// OnAsyncError, if set, reports errors the server sends outside any
	// request, such as a permissions violation.
	OnAsyncError func(err error)
	// OnDisconnect and OnReconnect, if set, report connection changes.
	OnDisconnect func(err error)
	OnReconnect  func(url string)
	// NKeyFile is an nkey seed file (from convoy creds); empty connects
	// without credentials.
	NKeyFile string
	// InboxPrefix replaces _INBOX for reply subjects (hosts use their own,
	// see InboxPrefix).
	InboxPrefix string
	// CAFile, if set, is the CA that signed the server's TLS certificate;
	// the connection then requires TLS and verifies the server.
	CAFile string
	// Options are passed to nats.Connect after convoy's own.
	Options []nats.Option
	// Retention, if set, is applied by Provision to the stream, new or
	// existing; nil keeps what the stream has (unlimited for a new one).
	// Only convoy server sets it, from its flags.
	Retention *Retention
	// LeaseTTL is how long a host's lease outlives its worker's last
	// renewal, when Provision creates the leases bucket; 0 means
	// LeaseTTL. Workers renew at a third of the bucket's TTL, and a
	// missing lease means a silent worker once the bucket is that old.
	LeaseTTL time.Duration
}

// Retention bounds the CONVOY stream: events older than MaxAge, or the
// oldest ones beyond MaxBytes, are removed by JetStream (never by a
// client: DenyDelete and DenyPurge stay). Zero means no bound; the zero
// Retention keeps every event forever.
type Retention struct {
	MaxAge   time.Duration
	MaxBytes int64
}

// MinRetainAge is the shortest MaxAge nats-server accepts.
const MinRetainAge = 100 * time.Millisecond

// apply sets cfg's limits. The duplicate window may not outlast MaxAge.
func (r Retention) apply(cfg *jetstream.StreamConfig) {
	cfg.MaxAge, cfg.MaxBytes = r.MaxAge, -1
	if r.MaxBytes > 0 {
		cfg.MaxBytes = r.MaxBytes
	}
	if r.MaxAge > 0 {
		cfg.Duplicates = min(cfg.Duplicates, r.MaxAge)
	}
}

// DefaultURL is the embedded server's default address.
const DefaultURL = "nats://127.0.0.1:4222"

// Conn is a connection to the bus. It is safe for concurrent use.
type Conn struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	replicas  int
	leaseTTL  time.Duration
	retention *Retention

	mu     sync.Mutex
	handle jetstream.Stream // cached: looking it up costs a stream info
	// reconnected is closed, and replaced, at each reconnect: readers
	// that rely on core NATS delivery (Requests) check for what they
	// missed.
	reconnected chan struct{}
}

// onReconnect tells Requests readers that live messages may have been
// missed.
func (c *Conn) onReconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.reconnected)
	c.reconnected = make(chan struct{})
}

// reconnects returns a channel closed at the next reconnect.
func (c *Conn) reconnects() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reconnected
}

// stream returns the CONVOY stream's handle, looked up once.
func (c *Conn) stream(ctx context.Context) (jetstream.Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handle != nil {
		return c.handle, nil
	}
	s, err := c.js.Stream(ctx, StreamName)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamName, err)
	}
	c.handle = s
	return s, nil
}

// Connect connects to the bus, retrying with exponential backoff for up to
// cfg.MaxWait. Once connected, the client reconnects on its own forever.
// The error wraps ErrUnreachable when the bus could not be reached.
func Connect(ctx context.Context, cfg ConnectConfig) (*Conn, error) {
	if cfg.URL == "" {
		cfg.URL = DefaultURL
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 10 * time.Second
	}
	conn := &Conn{reconnected: make(chan struct{})}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.Timeout(2 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if cfg.OnDisconnect != nil {
				cfg.OnDisconnect(err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if cfg.OnAsyncError != nil {
				cfg.OnAsyncError(err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			conn.onReconnect()
			if cfg.OnReconnect != nil {
				cfg.OnReconnect(nc.ConnectedUrlRedacted())
			}
		}),
	}
	if cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("credential %s: %w", cfg.NKeyFile, err)
		}
		opts = append(opts, o)
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	opts = append(opts, cfg.Options...)
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 200 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	b.MaxElapsedTime = max(cfg.MaxWait, 0)
	var nc *nats.Conn
	err := backoff.RetryNotify(func() error {
		var err error
		nc, err = nats.Connect(cfg.URL, opts...)
		if err != nil && (errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || strings.Contains(err.Error(), "certificate")) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx), func(err error, next time.Duration) {
		if cfg.OnRetry != nil {
			cfg.OnRetry(err, next)
		}
	})
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) {
			return nil, fmt.Errorf("%w at %s: the server refused the credential: %w (give a credential from `convoy creds`: --nkey FILE, or nkey in the worker config)", ErrUnreachable, cfg.URL, err)
		}
		return nil, fmt.Errorf("%w at %s after %s: %w (is `convoy server` running there? set --nats or CONVOY_NATS_URL)", ErrUnreachable, cfg.URL, cfg.MaxWait, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	conn.nc, conn.js, conn.replicas, conn.retention = nc, js, max(cfg.Replicas, 1), cfg.Retention
	conn.leaseTTL = cmp.Or(cfg.LeaseTTL, LeaseTTL)
	return conn, nil
}

// Close drains nothing and closes the connection.
func (c *Conn) Close() { c.nc.Close() }

// MaxConsumers bounds the consumers of the CONVOY stream at once. Hosts
// hold none while idle (see Requests); readers (the projector, history,
// watch, upgrade --wait, a host catching up on its requests) hold one
// each while they read. nats-server would otherwise apply its default of
// 1,000 per stream.
const MaxConsumers = 20_000

// StreamConfig returns the CONVOY stream's configuration: file storage,
// no deletes, no purges, no rollups, no per-message TTLs, kept forever
// (see Retention for bounds);
// every request is republished on its live subject (see LiveRequests).
func StreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "convoy: immutable upgrade requests and facts",
		Subjects:    []string{events.AllSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    replicas,
		Duplicates:  DuplicateWindow,
		DenyDelete:  true,
		DenyPurge:   true,
		AllowRollup: false,
		AllowDirect: true,
		MaxMsgSize:  events.MaxEventSize + 4096,
		// Hosts learn of their requests here, with the stream sequence.
		RePublish:    &jetstream.RePublish{Source: events.AllRequests, Destination: liveRequestsRoot + ".>"},
		MaxConsumers: MaxConsumers,
	}
}

// Provision creates or updates the stream and the KV buckets. It is
// idempotent and safe to call from every process at start.
func (c *Conn) Provision(ctx context.Context) error {
	cfg := StreamConfig(c.replicas)
	switch {
	case c.retention != nil:
		c.retention.apply(&cfg)
	default:
		// Keep the bounds convoy server set.
		if s, err := c.js.Stream(ctx, StreamName); err == nil {
			old := s.CachedInfo().Config
			Retention{MaxAge: old.MaxAge, MaxBytes: old.MaxBytes}.apply(&cfg)
		}
	}
	if _, err := c.js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("provision stream %s: %w", StreamName, err)
	}
	for _, kv := range []jetstream.KeyValueConfig{
		{Bucket: StatusBucket, Description: "convoy fleet status projection", Storage: jetstream.FileStorage, Replicas: c.replicas},
		{Bucket: UpgradesBucket, Description: "convoy upgrade index: where each upgrade starts and how it ended", Storage: jetstream.FileStorage, Replicas: c.replicas},
		// What the alerts sent, and their streaks and episodes, matter
		// for a restart or a redelivery, not for ever.
		{Bucket: AlertsBucket, Description: "convoy alerts: what each sink was sent", Storage: jetstream.FileStorage, Replicas: c.replicas, TTL: AlertsTTL},
		// Leases are renewed every LeaseTTL/3 by every host and mean
		// nothing after a restart of the bus: memory, no fsync.
		{Bucket: LeasesBucket, Description: "convoy worker leases, one per host", Storage: jetstream.MemoryStorage, Replicas: c.replicas, TTL: c.leaseTTL},
	} {
		if err := c.provisionBucket(ctx, kv); err != nil {
			return err
		}
	}
	return c.dropLegacyConsumers(ctx)
}

// provisionBucket creates or updates a bucket; one whose storage type
// changed (which JetStream cannot update) and holds nothing durable, the
// leases, is created afresh.
func (c *Conn) provisionBucket(ctx context.Context, kv jetstream.KeyValueConfig) error {
	_, err := c.js.CreateOrUpdateKeyValue(ctx, kv)
	if err != nil && kv.Bucket == LeasesBucket {
		if derr := c.js.DeleteKeyValue(ctx, kv.Bucket); derr == nil {
			_, err = c.js.CreateKeyValue(ctx, kv)
		}
	}
	if err != nil {
		return fmt.Errorf("provision bucket %s: %w", kv.Bucket, err)
	}
	return nil
}

// dropLegacyConsumers deletes the durable per-host consumers ("worker-"
// and the host) that hosts read their requests through before Requests
// needed none. Best effort: a credential that may not list or delete
// them leaves them.
func (c *Conn) dropLegacyConsumers(ctx context.Context) error {
	s, err := c.stream(ctx)
	if err != nil {
		return err
	}
	names := s.ConsumerNames(ctx)
	var legacy []string
	for n := range names.Name() {
		if strings.HasPrefix(n, "worker-") {
			legacy = append(legacy, n)
		}
	}
	for _, n := range legacy {
		_ = c.js.DeleteConsumer(ctx, StreamName, n)
	}
	return nil
}

// retryAPI calls f, each time bounded by APITimeout/2, until it succeeds,
// fails with one of the permanent errors, or APITimeout has passed: while
// a cluster elects a leader, API calls time out.
func retryAPI(ctx context.Context, f func(context.Context) error, permanent ...error) error {
	b := backoff.NewExponentialBackOff()
	b.MaxElapsedTime = APITimeout
	return backoff.Retry(func() error {
		actx, cancel := context.WithTimeout(ctx, APITimeout/2)
		defer cancel()
		err := f(actx)
		for _, p := range permanent {
			if errors.Is(err, p) {
				return backoff.Permanent(err)
			}
		}
		return err
	}, backoff.WithContext(b, ctx))
}

// StreamLeader returns the server that leads the stream and its replica
// count ("" outside a cluster).
func (c *Conn) StreamLeader(ctx context.Context) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	s, err := c.stream(ctx)
	if err != nil {
		return "", 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", 0, fmt.Errorf("stream %s: %w", StreamName, err)
	}
	leader := ""
	if info.Cluster != nil {
		leader = info.Cluster.Leader
	}
	return leader, info.Config.Replicas, nil
}

// Retained says which part of the stream's history is kept.
type Retained struct {
	// FirstSeq and FirstTime are the oldest event kept (FirstSeq is 1
	// until events age out); LastSeq the newest.
	FirstSeq  uint64
	FirstTime time.Time
	LastSeq   uint64
	Msgs      uint64
	Bytes     uint64
	// Retention is the stream's bounds (zero: kept forever).
	Retention Retention
}

// Retained returns where the stream's kept history starts and ends, and
// its bounds.
func (c *Conn) Retained(ctx context.Context) (Retained, error) {
	ctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	s, err := c.stream(ctx)
	if err != nil {
		return Retained{}, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return Retained{}, fmt.Errorf("stream %s: %w", StreamName, err)
	}
	r := Retained{FirstSeq: info.State.FirstSeq, FirstTime: info.State.FirstTime, LastSeq: info.State.LastSeq, Msgs: info.State.Msgs, Bytes: info.State.Bytes,
		Retention: Retention{MaxAge: info.Config.MaxAge, MaxBytes: max(info.Config.MaxBytes, 0)}}
	return r, nil
}

// LastSeq returns the stream's last sequence (0 when empty).
func (c *Conn) LastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, APITimeout)
	defer cancel()
	s, err := c.stream(ctx)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", StreamName, err)
	}
	return info.State.LastSeq, nil
}
