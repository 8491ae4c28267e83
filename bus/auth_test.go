package bus_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
)

type authRig struct {
	srv  *bus.Server
	dir  string
	seed map[string]string // role/name -> seed file
}

func startAuth(t *testing.T) *authRig {
	t.Helper()
	r := &authRig{dir: t.TempDir(), seed: map[string]string{}}
	users := filepath.Join(r.dir, "bus", bus.UsersFile)
	for _, u := range []struct{ role, name string }{
		{bus.RoleHost, "sorrow"}, {bus.RoleHost, "torment"}, {bus.RoleOperator, "alice"}, {bus.RoleAuditor, "audit"},
	} {
		user, seed, err := bus.NewUser(u.role, u.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := bus.AddUser(users, user); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(r.dir, u.name+".nk")
		if err := os.WriteFile(f, seed, 0o600); err != nil {
			t.Fatal(err)
		}
		r.seed[u.name] = f
	}
	srv, err := bus.StartServer(bus.ServerConfig{DataDir: filepath.Join(r.dir, "bus"), Listen: "127.0.0.1:0", Auth: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	r.srv = srv
	admin, err := bus.Connect(t.Context(), bus.ConnectConfig{URL: srv.InternalURL(), Options: srv.ClientOptions()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if err := admin.Provision(t.Context()); err != nil {
		t.Fatal(err)
	}
	return r
}

// as connects with name's credential; violations are collected.
func (r *authRig) as(t *testing.T, name string) (*bus.Conn, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var violations []string
	cfg := bus.ConnectConfig{URL: r.srv.ClientURL(), NKeyFile: r.seed[name], MaxWait: 2 * time.Second,
		Options: []nats.Option{nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		})}}
	if name == "sorrow" || name == "torment" {
		cfg.InboxPrefix = bus.InboxPrefix(name)
	}
	c, err := bus.Connect(t.Context(), cfg)
	if err != nil {
		t.Fatalf("connect as %s: %v", name, err)
	}
	t.Cleanup(c.Close)
	return c, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), violations...) }
}

func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

func appendFact(ctx context.Context, c *bus.Conn, host string, k events.Kind) error {
	e, _ := events.New(k, host, "test", events.Fact{})
	subj, _ := events.HostSubject(host, k)
	_, err := c.Append(ctx, subj, e, nil)
	return err
}

func appendRequest(ctx context.Context, c *bus.Conn, host string) error {
	e, _ := events.New(events.UpgradeRequested, host, "test", events.UpgradeRequest{})
	e.UpgradeID = e.ID
	subj, _ := events.RequestSubject(host, events.UpgradeRequested)
	_, err := c.Append(ctx, subj, e, nil)
	return err
}

func appendRollout(ctx context.Context, c *bus.Conn, id string, k events.Kind) error {
	e, _ := events.New(k, id, "test", events.RolloutAsk{})
	subj, _ := events.RolloutSubject(id, k)
	_, err := c.Append(ctx, subj, e, nil)
	return err
}

func count(t *testing.T, c *bus.Conn, filter string) int {
	t.Helper()
	n := 0
	if err := c.Replay(t.Context(), []string{filter}, bus.From{}, func(bus.Stored) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// The authorization matrix: each host credential may write only its own
// facts and read only its own requests and consumer; every other attempt
// is denied and stores nothing.
func TestAuthorizationMatrix(t *testing.T) {
	r := startAuth(t)
	ctx := t.Context()
	op, opViolations := r.as(t, "alice")
	audit, auditViolations := r.as(t, "audit")

	// The operator asks both hosts to upgrade; their workers do their part.
	for _, h := range []string{"sorrow", "torment"} {
		if err := appendRequest(ctx, op, h); err != nil {
			t.Fatalf("operator request for %s: %v", h, err)
		}
	}
	torment, _ := r.as(t, "torment")
	if err := appendFact(ctx, torment, "torment", events.WorkerStarted); err != nil {
		t.Fatalf("torment appending its own fact: %v", err)
	}
	sorrow, sorrowViolations := r.as(t, "sorrow")
	if err := appendFact(ctx, sorrow, "sorrow", events.WorkerStarted); err != nil {
		t.Fatalf("sorrow appending its own fact: %v", err)
	}
	reqs, err := sorrow.Requests(ctx, "sorrow", 0)
	if err != nil {
		t.Fatalf("sorrow reading its requests: %v", err)
	}
	d, err := reqs.Next(short(t)) // through its catch-up consumer
	reqs.Close()
	if err != nil {
		t.Fatalf("sorrow reading its request: %v", err)
	}
	if !strings.HasPrefix(d.Subject, "convoy.req.sorrow.") {
		t.Fatalf("sorrow received %s", d.Subject)
	}
	if _, err := sorrow.Last(ctx, events.HostRequests("sorrow")); err != nil {
		t.Fatalf("sorrow reading its own requests: %v", err)
	}

	before := map[string]int{}
	for _, f := range []string{events.HostFacts("torment"), events.AllRequests, events.AllSubjects} {
		before[f] = count(t, audit, f)
	}
	denied := []struct {
		name string
		try  func(context.Context) error
	}{
		{"publish torment's facts", func(ctx context.Context) error { return appendFact(ctx, sorrow, "torment", events.UpgradeSucceeded) }},
		{"publish a request for itself", func(ctx context.Context) error { return appendRequest(ctx, sorrow, "sorrow") }},
		{"publish a request for torment", func(ctx context.Context) error { return appendRequest(ctx, sorrow, "torment") }},
		{"read torment's requests", func(ctx context.Context) error {
			_, err := sorrow.Last(ctx, events.HostRequests("torment"))
			return err
		}},
		{"read torment's facts", func(ctx context.Context) error { _, err := sorrow.Last(ctx, events.HostFacts("torment")); return err }},
		{"read a message by sequence", func(ctx context.Context) error { _, err := sorrow.Get(ctx, 1); return err }},
		{"create torment's catch-up consumer", func(ctx context.Context) error {
			_, err := sorrow.JetStream().CreateConsumer(ctx, bus.StreamName, catchUpConfig("torment"))
			return err
		}},
		{"create its own catch-up consumer on torment's requests", func(ctx context.Context) error {
			cfg := catchUpConfig("sorrow")
			cfg.FilterSubject = events.HostRequests("torment")
			_, err := sorrow.JetStream().CreateConsumer(ctx, bus.StreamName, cfg)
			return err
		}},
		{"pull from torment's consumer", func(ctx context.Context) error {
			_, err := sorrow.NATS().Request("$JS.API.CONSUMER.MSG.NEXT.CONVOY."+bus.CatchUpConsumerName("torment"), []byte(`{"batch":1,"no_wait":true}`), time.Second)
			return err
		}},
		{"replay the stream", func(ctx context.Context) error {
			return sorrow.Replay(ctx, []string{events.AllSubjects}, bus.From{}, func(bus.Stored) error { return nil })
		}},
		{"delete the stream", func(ctx context.Context) error { return sorrow.JetStream().DeleteStream(ctx, bus.StreamName) }},
		{"purge the stream", func(ctx context.Context) error {
			_, err := sorrow.NATS().Request("$JS.API.STREAM.PURGE."+bus.StreamName, nil, time.Second)
			return err
		}},
		{"update the stream", func(ctx context.Context) error {
			cfg := bus.StreamConfig(1)
			cfg.DenyPurge = false
			_, err := sorrow.JetStream().UpdateStream(ctx, cfg)
			return err
		}},
		{"delete a message", func(ctx context.Context) error {
			_, err := sorrow.NATS().Request("$JS.API.STREAM.MSG.DELETE."+bus.StreamName, []byte(`{"seq":1}`), time.Second)
			return err
		}},
		{"write another host's status", func(ctx context.Context) error {
			_, err := sorrow.NATS().Request("$KV."+bus.StatusBucket+".host.torment", []byte(`{}`), time.Second)
			return err
		}},
		{"take torment's lease", func(ctx context.Context) error {
			_, err := sorrow.NATS().Request("$KV."+bus.LeasesBucket+".torment", []byte(`{}`), time.Second)
			return err
		}},
	}
	var wg sync.WaitGroup
	for _, d := range denied {
		wg.Go(func() {
			err := d.try(short(t))
			if err == nil {
				t.Errorf("sorrow could %s", d.name)
				return
			}
			t.Logf("sorrow cannot %s: %v", d.name, err)
		})
	}
	wg.Wait()
	// Each attempt failed because the server refused it, not by chance.
	bustest.Eventually(t, 5*time.Second, "a permissions violation for every denied attempt", func() bool {
		return strings.Count(strings.Join(sorrowViolations(), "\n"), "Permissions Violation for Publish") >= len(denied)
	})
	// Subscribing outside its inbox is refused by the server.
	sub, err := sorrow.NATS().SubscribeSync("_INBOX.>")
	if err == nil {
		_ = sorrow.NATS().Flush()
		time.Sleep(200 * time.Millisecond)
		sub.Unsubscribe()
	}
	if v := strings.Join(sorrowViolations(), "\n"); !strings.Contains(v, `Subscription to "_INBOX.>"`) {
		t.Errorf("sorrow subscribed to _INBOX.> without a violation; violations: %s", v)
	}
	// So is listening to torment's requests as they are stored.
	if sub, err := sorrow.NATS().SubscribeSync(bus.LiveRequests("torment")); err == nil {
		_ = sorrow.NATS().Flush()
		time.Sleep(200 * time.Millisecond)
		sub.Unsubscribe()
	}
	if v := strings.Join(sorrowViolations(), "\n"); !strings.Contains(v, `Subscription to "`+bus.LiveRequests("torment")+`"`) {
		t.Errorf("sorrow subscribed to torment's live requests without a violation; violations: %s", v)
	}
	for f, n := range before {
		if got := count(t, audit, f); got != n {
			t.Errorf("%s: %d messages after the denied attempts, %d before", f, got, n)
		}
	}

	// Operators publish requests and read everything, but write no facts
	// and cannot destroy the log; auditors only read.
	if err := appendFact(short(t), op, "sorrow", events.UpgradeSucceeded); err == nil {
		t.Error("the operator could publish a host's fact")
	}
	// The operator asks rollouts to start and stop; only the controller
	// (the server) writes what a rollout did.
	rid := events.NewID()
	for _, k := range []events.Kind{events.RolloutRequested, events.RolloutAbortRequested, events.RolloutPauseRequested, events.RolloutResumeRequested} {
		if err := appendRollout(short(t), op, rid, k); err != nil {
			t.Errorf("the operator could not ask %s: %v", k, err)
		}
	}
	for _, k := range []events.Kind{events.RolloutStarted, events.RolloutWaveStarted, events.RolloutHalted, events.RolloutSucceeded, events.RolloutAborted} {
		if err := appendRollout(short(t), op, rid, k); err == nil {
			t.Errorf("the operator could publish the controller's %s", k)
		}
		if err := appendRollout(short(t), audit, rid, k); err == nil {
			t.Errorf("the auditor could publish %s", k)
		}
	}
	if err := op.JetStream().DeleteStream(short(t), bus.StreamName); err == nil {
		t.Error("the operator could delete the stream")
	}
	if _, err := op.Last(ctx, events.HostFacts("torment")); err != nil && !errors.Is(err, bus.ErrNotFound) {
		t.Errorf("the operator cannot read: %v", err)
	}
	if err := appendRequest(short(t), audit, "sorrow"); err == nil {
		t.Error("the auditor could publish a request")
	}
	// Nobody but the host touches its catch-up consumer, and nobody but
	// the server publishes live requests.
	for name, c := range map[string]*bus.Conn{"operator": op, "auditor": audit} {
		if _, err := c.JetStream().CreateConsumer(short(t), bus.StreamName, catchUpConfig("sorrow")); err == nil {
			t.Errorf("the %s could create or change sorrow's consumer", name)
		}
		legacy := `{"stream_name":"CONVOY","config":{"name":"requests-sorrow","filter_subject":"convoy.req.sorrow.nothing","ack_policy":"none"}}`
		if _, err := c.NATS().Request("$JS.API.CONSUMER.CREATE."+bus.StreamName, []byte(legacy), time.Second); err == nil {
			t.Errorf("the %s could change sorrow's consumer through the nameless create", name)
		}
		if _, err := c.NATS().Request("$KV."+bus.UpgradesBucket+".sorrow.01M80AN4WQM0428SFHFF6PEHH6", []byte(`{"terminal":"upgrade.succeeded"}`), time.Second); err == nil {
			t.Errorf("the %s could forge the upgrade index", name)
		}
		if err := c.JetStream().DeleteConsumer(short(t), bus.StreamName, bus.CatchUpConsumerName("sorrow")); err == nil {
			t.Errorf("the %s could delete sorrow's consumer", name)
		}
		if _, err := c.NATS().Request("$JS.API.CONSUMER.MSG.NEXT.CONVOY."+bus.CatchUpConsumerName("sorrow"), []byte(`{"batch":1,"no_wait":true}`), time.Second); err == nil {
			t.Errorf("the %s could pull sorrow's requests", name)
		}
		if err := c.NATS().Publish("convoy-live.req.sorrow.upgrade", []byte(`{}`)); err == nil {
			_ = c.NATS().Flush()
		}
	}
	for name, violations := range map[string]func() []string{"operator": opViolations, "auditor": auditViolations} {
		bustest.Eventually(t, 5*time.Second, "the "+name+"'s live request refused", func() bool {
			return strings.Contains(strings.Join(violations(), "\n"), `Publish to "convoy-live.req.sorrow.upgrade"`)
		})
	}
	// Their own durable consumers may ack.
	own, err := audit.JetStream().CreateOrUpdateConsumer(ctx, bus.StreamName, jetstream.ConsumerConfig{Durable: "alerts", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: events.AllHostFacts})
	if err != nil {
		t.Fatalf("the auditor's own consumer: %v", err)
	}
	batch, err := own.Fetch(1, jetstream.FetchMaxWait(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Errorf("the auditor cannot ack its own consumer: %v", err)
		}
	}
	if n := count(t, audit, events.AllSubjects); n == 0 {
		t.Error("the auditor reads nothing")
	}
}

func TestAuthRefusesUnknownCredentials(t *testing.T) {
	r := startAuth(t)
	if _, err := bus.Connect(t.Context(), bus.ConnectConfig{URL: r.srv.ClientURL(), MaxWait: time.Second}); !errors.Is(err, bus.ErrUnreachable) || !strings.Contains(err.Error(), "refused the credential") {
		t.Fatalf("no credential: %v", err)
	}
	_, seed, _ := bus.NewUser(bus.RoleOperator, "mallory")
	f := filepath.Join(t.TempDir(), "mallory.nk")
	os.WriteFile(f, seed, 0o600)
	if _, err := bus.Connect(t.Context(), bus.ConnectConfig{URL: r.srv.ClientURL(), NKeyFile: f, MaxWait: time.Second}); err == nil {
		t.Fatal("an unlisted key was accepted")
	}
}

// catchUpConfig is the consumer a host reads its missed requests through.
func catchUpConfig(host string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{Name: bus.CatchUpConsumerName(host), FilterSubject: events.HostRequests(host), AckPolicy: jetstream.AckNonePolicy}
}

// An operator credential runs convoy alerts: its durable consumer reads
// and acks the facts, and it writes the alerts bucket, and nothing else
// of the server's.
func TestAuthOperatorRunsAlerts(t *testing.T) {
	r := startAuth(t)
	ctx := t.Context()
	sorrow, _ := r.as(t, "sorrow")
	if err := appendFact(ctx, sorrow, "sorrow", events.UpgradeFailed); err != nil {
		t.Fatal(err)
	}
	op, _ := r.as(t, "alice")
	var got events.Kind
	if err := op.Consume(ctx, "alerts-test", []string{events.AllHostFacts, events.AllRolloutFacts}, bus.From{}, func(st bus.Stored) error {
		got = st.Event.Kind()
		return bus.ErrStop
	}); err != nil {
		t.Fatalf("the operator's durable consumer: %v", err)
	}
	if got != events.UpgradeFailed {
		t.Fatalf("read %q", got)
	}
	alerts, err := op.Bucket(ctx, bus.AlertsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alerts.Put(ctx, "sent.webhook.01M80AN4WQM0428SFHFF6PEHH6", []byte(`{}`)); err != nil {
		t.Fatalf("the operator cannot record a sent alert: %v", err)
	}
	audit, _ := r.as(t, "audit")
	if _, err := audit.NATS().Request("$KV."+bus.AlertsBucket+".sent.webhook.x", []byte(`{}`), time.Second); err == nil {
		t.Error("the auditor could write the alerts bucket")
	}
}
