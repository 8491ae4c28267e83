package alerts_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/projections/alerts"
)

// flaky is an HTTP endpoint that answers 500 to the first two tries of
// each alert id, then 200, and keeps every request it accepted.
type flaky struct {
	srv *httptest.Server
	id  func(*http.Request) string // the alert id a request carries

	mu       sync.Mutex
	tries    map[string]int
	accepted map[string][]request
}

type request struct {
	method, path string
	header       http.Header
	body         []byte
}

func newFlaky(t *testing.T, id func(*http.Request) string) *flaky {
	f := &flaky{id: id, tries: map[string]int{}, accepted: map[string][]request{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		id := f.id(r)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.tries[id]++
		if f.tries[id] <= 2 {
			http.Error(w, "try again", http.StatusInternalServerError)
			return
		}
		f.accepted[id] = append(f.accepted[id], request{r.Method, r.URL.EscapedPath(), r.Header.Clone(), body})
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *flaky) got(id string) []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.accepted[id]...)
}

func idempotencyKey(r *http.Request) string { return r.Header.Get("Idempotency-Key") }

// matrixTxn is the path's last segment: the transaction id.
func matrixTxn(r *http.Request) string {
	p := r.URL.EscapedPath()
	return p[strings.LastIndex(p, "/")+1:]
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func appendFact(t *testing.T, c *bus.Conn, host string, k events.Kind, f events.Fact) events.Event {
	t.Helper()
	e, err := events.New(k, host, "convoy/worker/"+host, f)
	if err != nil {
		t.Fatal(err)
	}
	e.UpgradeID = events.NewID()
	subj, err := events.HostSubject(host, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(t.Context(), subj, e, nil); err != nil {
		t.Fatal(err)
	}
	return e
}

func parse(t *testing.T, toml string) alerts.Config {
	t.Helper()
	cfg, err := alerts.Parse([]byte(toml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, toml)
	}
	return cfg
}

// start runs an Alerter until the test ends.
func start(t *testing.T, c *bus.Conn, cfg alerts.Config, o alerts.Options) *alerts.Alerter {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	a, err := alerts.New(ctx, c, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), o)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("alerter: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// Webhook, ntfy and Matrix endpoints fail each alert's first two tries:
// each gets each alert exactly once, with the right method, path, headers
// and body; the webhook's signature verifies; a second alerter on the
// same consumer sends none of them again.
func TestAlertSinksRetryAndDeliverOnce(t *testing.T) {
	_, c := bustest.Start(t)
	hook := newFlaky(t, idempotencyKey)
	nt := newFlaky(t, idempotencyKey)
	mx := newFlaky(t, matrixTxn)
	secret := "s3cret"
	cfg := parse(t, `
[alerts]
dashboard_url = "https://convoy.example.org/"

[[alerts.sink]]
type = "webhook"
url = "`+hook.srv.URL+`/hook"
secret_file = "`+writeFile(t, "secret", secret+"\n")+`"

[[alerts.sink]]
type = "ntfy"
url = "`+nt.srv.URL+`/convoy"
token_file = "`+writeFile(t, "ntfy", "tk_ntfy")+`"

[[alerts.sink]]
type = "matrix"
homeserver = "`+mx.srv.URL+`"
room = "!ops:example.org"
token_file = "`+writeFile(t, "matrix", "syt_matrix")+`"
`)
	first := start(t, c, cfg, alerts.Options{})
	failed := appendFact(t, c, "sorrow", events.UpgradeFailed, events.Fact{Stage: "build", Reason: "build failed: exit 1"})
	rb := appendFact(t, c, "sorrow", events.RollbackFailed, events.Fact{Reason: "git reset failed"})
	appendFact(t, c, "sorrow", events.UpgradeSucceeded, events.Fact{}) // no rule: no alert
	for _, id := range []string{failed.ID, rb.ID} {
		bustest.Eventually(t, 20*time.Second, "every sink to accept "+id, func() bool {
			return len(hook.got(id)) > 0 && len(nt.got(id)) > 0 && len(mx.got(id)) > 0
		})
	}
	st := first.Stats()
	for _, s := range []string{"webhook", "ntfy", "matrix"} {
		if st[s].Sent != 2 || st[s].Failed != 0 {
			t.Errorf("stats of %s: %+v, want 2 sent", s, st[s])
		}
	}

	// The webhook: the CloudEvent, signed, with the id as idempotency key.
	w := hook.got(failed.ID)[0]
	if w.method != http.MethodPost || w.path != "/hook" || w.header.Get("Content-Type") != "application/cloudevents+json" {
		t.Errorf("webhook request: %s %s %s", w.method, w.path, w.header.Get("Content-Type"))
	}
	if got, want := w.header.Get(alerts.SignatureHeader), alerts.Sign([]byte(secret), w.body); got != want || !strings.HasPrefix(got, "sha256=") {
		t.Errorf("signature %q, want %q", got, want)
	}
	if alerts.Sign([]byte("wrong"), w.body) == w.header.Get(alerts.SignatureHeader) {
		t.Error("the signature verifies under another secret")
	}
	e, err := events.Decode(w.body)
	if err != nil {
		t.Fatal(err)
	}
	if e.ID != failed.ID || e.Type != "convoy.upgrade.failed" || e.Subject != "sorrow" || e.UpgradeID != failed.UpgradeID {
		t.Errorf("webhook event: %+v", e)
	}
	if string(e.Extensions["severity"]) != `"warning"` {
		t.Errorf("severity extension %s", e.Extensions["severity"])
	}
	var rbEvent events.Event
	if rbEvent, err = events.Decode(hook.got(rb.ID)[0].body); err != nil || string(rbEvent.Extensions["severity"]) != `"critical"` {
		t.Errorf("rollback.failed: %v, severity %s", err, rbEvent.Extensions["severity"])
	}

	// ntfy: title, priority by severity, tags, click link, token.
	n := nt.got(rb.ID)[0]
	for k, want := range map[string]string{
		"Title": "convoy: sorrow rollback.failed", "Priority": "5", "Click": "https://convoy.example.org/hosts/sorrow",
		"Authorization": "Bearer tk_ntfy",
	} {
		if got := n.header.Get(k); got != want {
			t.Errorf("ntfy %s: %q, want %q", k, got, want)
		}
	}
	if tags := n.header.Get("Tags"); !strings.Contains(tags, "rotating_light") || !strings.Contains(tags, "sorrow") {
		t.Errorf("ntfy tags %q", tags)
	}
	if n.path != "/convoy" || !strings.Contains(string(n.body), "git reset failed") {
		t.Errorf("ntfy %s: %q", n.path, n.body)
	}
	if p := nt.got(failed.ID)[0].header.Get("Priority"); p != "4" {
		t.Errorf("ntfy priority of a warning: %q", p)
	}

	// Matrix: PUT to the room's send endpoint, the id as transaction id.
	m := mx.got(failed.ID)[0]
	if want := "/_matrix/client/v3/rooms/%21ops:example.org/send/m.room.message/" + failed.ID; m.method != http.MethodPut || m.path != want {
		t.Errorf("matrix %s %s, want PUT %s", m.method, m.path, want)
	}
	var msg map[string]string
	if err := json.Unmarshal(m.body, &msg); err != nil || msg["msgtype"] != "m.text" || !strings.Contains(msg["body"], "sorrow: upgrade.failed at build") {
		t.Errorf("matrix body %s: %v", m.body, err)
	}
	if m.header.Get("Authorization") != "Bearer syt_matrix" {
		t.Errorf("matrix auth %q", m.header.Get("Authorization"))
	}

	// A second alerter on the same consumer goes on after them: a later
	// fact arrives, the earlier ones never again.
	second := start(t, c, cfg, alerts.Options{})
	later := appendFact(t, c, "sorrow", events.BootFailed, events.Fact{Failures: 1})
	bustest.Eventually(t, 20*time.Second, "the later alert", func() bool {
		return len(hook.got(later.ID)) > 0 && len(nt.got(later.ID)) > 0 && len(mx.got(later.ID)) > 0
	})
	for _, id := range []string{failed.ID, rb.ID, later.ID} {
		for name, f := range map[string]*flaky{"webhook": hook, "ntfy": nt, "matrix": mx} {
			if n := len(f.got(id)); n != 1 {
				t.Errorf("%s accepted %s %d times", name, id, n)
			}
		}
	}
	_ = second
}

// A sink that hangs does not keep the others from their alert, and is
// counted as failed once its retries are over.
func TestAlertDeadSinkDoesNotBlockOthers(t *testing.T) {
	_, c := bustest.Start(t)
	release := make(chan struct{})
	dead := alerts.SinkFunc(func(ctx context.Context, a alerts.Alert) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return errors.New("connection refused")
	})
	got := make(chan alerts.Alert, 10)
	live := alerts.SinkFunc(func(ctx context.Context, a alerts.Alert) error { got <- a; return nil })
	cfg := parse(t, `
[alerts]
[[alerts.sink]]
type = "command"
name = "dead"
command = ["true"]
timeout = "10m"
retry_for = "1s"
[[alerts.sink]]
type = "command"
name = "live"
command = ["true"]
`)
	a := start(t, c, cfg, alerts.Options{Sinks: map[string]alerts.Sink{"dead": dead, "live": live}})
	e := appendFact(t, c, "sorrow", events.GoldenRestored, events.Fact{Result: "/nix/store/abc-nixos-system"})
	select {
	case al := <-got:
		if al.ID != e.ID || al.Severity != alerts.SeverityCritical || !strings.Contains(al.Summary, "now running /nix/store/abc-nixos-system") {
			t.Fatalf("live sink got %+v", al)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the live sink got nothing while the dead one hung")
	}
	if s := a.Stats()["dead"]; s.Sent != 0 {
		t.Fatalf("dead sink stats while it hangs: %+v", s)
	}
	close(release) // the attempt ends with its error; retries run out
	bustest.Eventually(t, 20*time.Second, "the dead sink's failure counted", func() bool { return a.Stats()["dead"].Failed == 1 })
}

// The command sink runs its argv with the alert in CONVOY_* variables.
func TestAlertCommandSink(t *testing.T) {
	t.Setenv("CONVOY_NKEY", "/etc/convoy/alerts.nk") // the alerter's own: not passed on
	out := filepath.Join(t.TempDir(), "env")
	s, err := alerts.NewSink(alerts.SinkConfig{Type: alerts.SinkCommand, Name: "mail", Command: []string{"sh", "-c", `env | grep ^CONVOY_ > "$1"; cat > "$1.json"`, "sh", out}}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := events.New(events.UpgradeFailed, "sorrow", "test", events.Fact{Reason: "boom"})
	e.UpgradeID = "01M80AN4WQM0428SFHFF6PEHH6"
	a := alerts.Alert{ID: e.ID, Kind: events.UpgradeFailed, Severity: "warning", Host: "sorrow", UpgradeID: e.UpgradeID, Reason: "boom", Summary: "sorrow: upgrade.failed: boom", Event: e}
	if err := s.Send(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	for _, want := range []string{"CONVOY_ALERT_ID=" + e.ID, "CONVOY_HOST=sorrow", "CONVOY_EVENT_TYPE=convoy.upgrade.failed", "CONVOY_SEVERITY=warning", "CONVOY_UPGRADE_ID=" + e.UpgradeID, "CONVOY_REASON=boom", "CONVOY_SUMMARY=sorrow: upgrade.failed: boom"} {
		if !strings.Contains(string(b), want+"\n") {
			t.Errorf("environment lacks %s:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), "CONVOY_NKEY") {
		t.Errorf("the alerter's CONVOY_NKEY reached the command:\n%s", b)
	}
	if j, _ := os.ReadFile(out + ".json"); !strings.Contains(string(j), e.ID) {
		t.Errorf("stdin: %s", j)
	}
	fail, _ := alerts.NewSink(alerts.SinkConfig{Type: alerts.SinkCommand, Name: "f", Command: []string{"false"}}, "", nil)
	if err := fail.Send(t.Context(), a); err == nil {
		t.Error("a failing command counts as sent")
	}
}

// N upgrade failures in a row raise host.failing once, with an id derived
// from the Nth; a stopped worker raises worker.offline once per episode.
func TestAlertDerivedFailingAndOffline(t *testing.T) {
	_, c := bustest.Start(t)
	p, err := projections.NewProjector(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(t.Context())
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = p.Run(pctx) }()
	t.Cleanup(func() { stop(); <-pdone })

	var mu sync.Mutex
	sent := map[string][]alerts.Alert{} // by kind
	sink := alerts.SinkFunc(func(ctx context.Context, a alerts.Alert) error {
		mu.Lock()
		defer mu.Unlock()
		sent[string(a.Kind)] = append(sent[string(a.Kind)], a)
		return nil
	})
	of := func(k events.Kind) []alerts.Alert {
		mu.Lock()
		defer mu.Unlock()
		return append([]alerts.Alert(nil), sent[string(k)]...)
	}
	cfg := parse(t, `
[alerts]
offline_after = "200ms"
check_every = "50ms"
consecutive_failures = 2
[[alerts.rule]]
kinds = ["host.failing", "worker.offline"]
severity = "critical"
[[alerts.sink]]
type = "command"
command = ["true"]
`)
	start(t, c, cfg, alerts.Options{Sinks: map[string]alerts.Sink{"command": sink}})
	appendFact(t, c, "sorrow", events.UpgradeFailed, events.Fact{})
	appendFact(t, c, "sorrow", events.UpgradeSucceeded, events.Fact{}) // ends the streak
	appendFact(t, c, "sorrow", events.UpgradeFailed, events.Fact{})
	second := appendFact(t, c, "sorrow", events.UpgradeFailed, events.Fact{Reason: "switch failed"})
	appendFact(t, c, "sorrow", events.UpgradeFailed, events.Fact{}) // the third: no new alert
	appendFact(t, c, "torment", events.WorkerStarted, events.Fact{})
	bustest.Eventually(t, 20*time.Second, "host.failing", func() bool { return len(of(alerts.HostFailing)) > 0 })
	// Each worker episode: started, stopped, silent.
	appendFact(t, c, "torment", events.WorkerStopped, events.Fact{})
	bustest.Eventually(t, 20*time.Second, "worker.offline", func() bool { return len(of(alerts.WorkerOffline)) == 1 })
	appendFact(t, c, "torment", events.WorkerStarted, events.Fact{})
	appendFact(t, c, "torment", events.WorkerStopped, events.Fact{})
	bustest.Eventually(t, 20*time.Second, "a second offline episode", func() bool { return len(of(alerts.WorkerOffline)) == 2 })
	// A failure after them shows the earlier facts were all handled.
	appendFact(t, c, "torment", events.UpgradeFailed, events.Fact{})
	last := appendFact(t, c, "torment", events.UpgradeFailed, events.Fact{})
	bustest.Eventually(t, 20*time.Second, "torment's host.failing", func() bool { return len(of(alerts.HostFailing)) == 2 })

	fl := of(alerts.HostFailing)
	if fl[0].Host != "sorrow" || fl[0].Severity != "critical" || !strings.Contains(fl[0].Summary, "2 upgrades in a row failed; the last: switch failed") {
		t.Errorf("host.failing: %+v", fl[0])
	}
	var data alerts.FailingData
	if err := fl[0].Event.DecodeData(&data); err != nil || data.Last != second.ID || data.Failures != 2 {
		t.Errorf("host.failing data %+v (%v), want the last failure %s", data, err, second.ID)
	}
	if err := events.ValidateID(fl[0].ID); err != nil || fl[0].ID == second.ID {
		t.Errorf("host.failing id %q: %v", fl[0].ID, err)
	}
	if fl[1].Host != "torment" || fl[1].Event.UpgradeID != last.UpgradeID {
		t.Errorf("torment's host.failing: %+v", fl[1])
	}
	off := of(alerts.WorkerOffline)
	if off[0].ID == off[1].ID || off[0].Host != "torment" {
		t.Errorf("offline alerts %q and %q", off[0].ID, off[1].ID)
	}
	// Other hosts go offline after them: their alerts come from later
	// rounds of the check (offline_after is four rounds), and torment was
	// not alerted again in those rounds, though facts of its own came
	// while its worker was stopped.
	appendFact(t, c, "grief", events.WorkerStarted, events.Fact{})
	appendFact(t, c, "grief", events.WorkerStopped, events.Fact{})
	bustest.Eventually(t, 20*time.Second, "grief offline", func() bool { return len(of(alerts.WorkerOffline)) >= 3 })
	// And one more: by its alert, torment has been silent for rounds.
	appendFact(t, c, "woe", events.WorkerStarted, events.Fact{})
	appendFact(t, c, "woe", events.WorkerStopped, events.Fact{})
	bustest.Eventually(t, 20*time.Second, "woe offline", func() bool {
		for _, a := range of(alerts.WorkerOffline) {
			if a.Host == "woe" {
				return true
			}
		}
		return false
	})
	n := 0
	for _, a := range of(alerts.WorkerOffline) {
		if a.Host == "torment" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("torment alerted offline %d times in two episodes", n)
	}
}

// Config errors name the key and line, or every problem at once.
func TestAlertConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, toml string
		want       []string
	}{
		{"unknown key", "[alerts]\nofline_after = \"1m\"\n[[alerts.sink]]\ntype = \"command\"\ncommand = [\"true\"]\n",
			[]string{`line 2: unknown key "alerts.ofline_after"`}},
		{"unknown section", "[alert]\n", []string{`line 1: unknown key "alert"`}},
		{"no sink", "[alerts]\n", []string{"no sink"}},
		{"every problem", `[alerts]
consecutive_failures = -1
dashboard_url = "convoy.example.org"
[[alerts.rule]]
kinds = ["upgrade.exploded"]
hosts = ["Sorrow"]
severity = "loud"
[[alerts.sink]]
type = "matrix"
homeserver = "https://matrix.example.org"
room = "ops"
[[alerts.sink]]
type = "pager"
[[alerts.sink]]
type = "webhook"
url = "ftp://x"
token_file = "/t"
`, []string{"consecutive_failures -1", "dashboard_url", `unknown kind "upgrade.exploded"`, `invalid host name "Sorrow"`, `severity "loud"`,
			`room "ops"`, "token_file is required", `type "pager"`, `url: "ftp://x"`, "token_file does not apply to a webhook sink"}},
		{"duplicate names", "[alerts]\n[[alerts.sink]]\ntype = \"command\"\ncommand = [\"a\"]\n[[alerts.sink]]\ntype = \"command\"\ncommand = [\"b\"]\n",
			[]string{"another sink has this name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := alerts.Parse([]byte(tc.toml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	// Defaults.
	cfg := parse(t, "[alerts]\n[[alerts.sink]]\ntype = \"webhook\"\nurl = \"https://hooks.example.org/convoy\"\n")
	if cfg.OfflineAfter.Duration != 10*time.Minute || cfg.ConsecutiveFailures != 3 || len(cfg.Rules) != len(alerts.DefaultRules()) ||
		cfg.Sinks[0].Name != "webhook" || cfg.Sinks[0].RetryFor.Duration != time.Minute || cfg.Sinks[0].Timeout.Duration != 10*time.Second {
		t.Errorf("defaults: %+v", cfg)
	}
	// A secret file that is not there stops the start.
	_, c := bustest.Start(t)
	cfg.Sinks[0].SecretFile = filepath.Join(t.TempDir(), "missing")
	if _, err := alerts.New(t.Context(), c, cfg, slog.Default(), alerts.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing secret file: %v", err)
	}
}

// An alerter stopped while one sink still tries leaves the fact
// unacknowledged; the next one sends it to that sink, and not again to
// the sink that had accepted it (the record in the alerts bucket).
func TestAlertRestartMidDeliverySendsEachSinkOnce(t *testing.T) {
	_, c := bustest.Start(t)
	var mu sync.Mutex
	got := map[string]int{}
	fast := alerts.SinkFunc(func(ctx context.Context, a alerts.Alert) error {
		mu.Lock()
		defer mu.Unlock()
		got["fast/"+a.ID]++
		return nil
	})
	hang := alerts.SinkFunc(func(ctx context.Context, a alerts.Alert) error {
		mu.Lock()
		got["hang-tries"]++
		mu.Unlock()
		<-ctx.Done()
		return ctx.Err()
	})
	ok := alerts.SinkFunc(func(ctx context.Context, a alerts.Alert) error {
		mu.Lock()
		defer mu.Unlock()
		got["slow/"+a.ID]++
		return nil
	})
	count := func(k string) int { mu.Lock(); defer mu.Unlock(); return got[k] }
	cfg := parse(t, `
[alerts]
[[alerts.sink]]
type = "command"
name = "fast"
command = ["true"]
[[alerts.sink]]
type = "command"
name = "slow"
command = ["true"]
timeout = "10m"
`)
	ctx, cancel := context.WithCancel(t.Context())
	first, err := alerts.New(ctx, c, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), alerts.Options{Sinks: map[string]alerts.Sink{"fast": fast, "slow": hang}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	e := appendFact(t, c, "sorrow", events.UpgradeFailed, events.Fact{})
	bustest.Eventually(t, 20*time.Second, "fast sent, slow trying", func() bool { return count("fast/"+e.ID) == 1 && count("hang-tries") == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	start(t, c, cfg, alerts.Options{Sinks: map[string]alerts.Sink{"fast": fast, "slow": ok}})
	bustest.Eventually(t, 30*time.Second, "the slow sink's alert after the restart", func() bool { return count("slow/"+e.ID) == 1 })
	later := appendFact(t, c, "sorrow", events.UpgradeFailed, events.Fact{})
	bustest.Eventually(t, 20*time.Second, "a later alert", func() bool { return count("fast/"+later.ID) == 1 })
	if n := count("fast/" + e.ID); n != 1 {
		t.Errorf("the fast sink got the alert %d times", n)
	}
}
