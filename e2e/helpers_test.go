package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// Exit codes of the convoy CLI: a stable contract for scripts.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitTimeout     = 3
	exitUnreachable = 4
)

// convoyBin is the binary under test, built once by TestMain.
var convoyBin string

func TestMain(m *testing.M) {
	flag.Parse()
	// The tests mostly wait on child processes, so run more of them at
	// once than there are CPUs, unless -parallel says otherwise.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", strconv.Itoa(max(8, 4*runtime.GOMAXPROCS(0))))
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "convoy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Other users (an unprivileged worker) must be able to run it.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	convoyBin = filepath.Join(dir, "convoy")
	args := []string{"build", "-o", convoyBin}
	if os.Getenv("CONVOY_E2E_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/convoy")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go %s in %s: %v\n%s", strings.Join(args, " "), root, err, out)
		return 1
	}
	return m.Run()
}

// moduleRoot finds the directory of convoy's go.mod: from `go env GOMOD`,
// else by walking up from the test's directory.
func moduleRoot() (string, error) {
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test directory")
		}
		dir = parent
	}
}

// childEnv is the environment of every convoy process: ours, minus
// anything that would point it at another bus.
func childEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CONVOY_") })
}

// eventually polls cond every 25ms until it holds, and fails the test
// with what it waited for when timeout passes first.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a long-running convoy process (server or worker).
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{}
	code   int // valid once done is closed
}

// startProc starts convoy with args. At cleanup it is stopped (SIGTERM,
// then SIGKILL) and, if the test failed, its output is logged.
func startProc(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, name, nil, args...)
}

// startProcEnv is startProc with extra environment (a host's private Nix
// store).
func startProcEnv(t testing.TB, name string, env []string, args ...string) *proc {
	t.Helper()
	return startProcAs(t, name, nil, env, args...)
}

// startProcAs is startProcEnv as another user (cred nil: as ourselves).
func startProcAs(t testing.TB, name string, cred *syscall.Credential, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(convoyBin, args...)
	p.cmd.Env = append(childEnv(), env...)
	if cred != nil {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.code = exitCodeOf(p.cmd.Wait())
		close(p.done)
	}()
	t.Logf("started %s (pid %d): convoy %s", name, p.cmd.Process.Pid, strings.Join(args, " "))
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM, 10*time.Second)
		if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: the race detector found a data race (CONVOY_E2E_RACE)", name)
		}
		if t.Failed() {
			t.Logf("--- %s (pid %d, exit %d) stdout:\n%s--- %s stderr:\n%s", name, p.cmd.Process.Pid, p.code, p.stdout.String(), name, p.stderr.String())
		}
	})
	return p
}

func exitCodeOf(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig, waits up to grace for the exit, then kills. It returns
// the exit code (128+signal when a signal ended it).
func (p *proc) stop(sig syscall.Signal, grace time.Duration) int {
	if p.exited() {
		return p.code
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.code
}

// result is what one CLI invocation did.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("convoy %s → exit %d\nstdout:\n%sstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// convoy runs the CLI to completion (at most timeout) and returns its exit
// code and output. A run that does not end in time fails the test.
func convoy(t testing.TB, timeout time.Duration, args ...string) result {
	t.Helper()
	res, ok := convoyWithin(t, timeout, args...)
	if !ok {
		t.Fatalf("did not finish within %s: %s", timeout, res)
	}
	return res
}

// convoyWithin is convoy for runs that may hang: ok is false, and the
// process killed, when it did not end within timeout.
func convoyWithin(t testing.TB, timeout time.Duration, args ...string) (res result, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, convoyBin, args...)
	cmd.Env = childEnv()
	cmd.WaitDelay = time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	res = result{args: args, code: exitCodeOf(err), stdout: out.String(), stderr: errb.String()}
	t.Logf("$ convoy %s → exit %d (%s)", strings.Join(args, " "), res.code, time.Since(start).Round(time.Millisecond))
	return res, ctx.Err() == nil
}

// wantExit fails the test unless res exited with code.
func wantExit(t testing.TB, res result, code int) {
	t.Helper()
	if res.code != code {
		t.Fatalf("want exit %d, got %s", code, res)
	}
	noStackTrace(t, res)
}

// noStackTrace fails the test if the CLI printed a Go panic.
func noStackTrace(t testing.TB, res result) {
	t.Helper()
	if strings.Contains(res.stderr, "goroutine ") || strings.Contains(res.stderr, "panic:") {
		t.Fatalf("a Go stack trace reached the user: %s", res)
	}
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t testing.TB) int { return bustest.FreePort(t) }

// rig is one test's world: a server process with its data dir and port,
// a sandbox fleet whose worker configs point at it, and worker processes.
type rig struct {
	t       *testing.T
	dir     string
	data    string // the server's --data
	listen  string // the server's --listen
	url     string
	server  *proc
	fleet   *sandbox.Fleet
	workers map[string]*proc
	nix     bool // a real-Nix fleet: workers run with their host's Nix env

	serverArgs []string // extra flags of every convoy server the rig starts
}

// newRig starts a server on a free port and builds a sandbox fleet of
// hosts whose configs point at it. No worker runs yet.
func newRig(t *testing.T, hosts []string, o sandbox.Options) *rig {
	t.Helper()
	r := baseRig(t)
	r.startServerAnyPort()
	r.makeFleet(hosts, o)
	return r
}

// newRigNoServer is newRig without the server: r.startServer starts it on
// the port the worker configs name.
func newRigNoServer(t *testing.T, hosts []string, o sandbox.Options) *rig {
	t.Helper()
	r := baseRig(t)
	r.makeFleet(hosts, o)
	return r
}

func baseRig(t *testing.T) *rig {
	r := &rig{t: t, dir: t.TempDir(), workers: map[string]*proc{}}
	r.data = filepath.Join(r.dir, "bus")
	r.setPort(freePort(t))
	return r
}

func (r *rig) makeFleet(hosts []string, o sandbox.Options) {
	r.t.Helper()
	o.NATS = r.url
	r.nix = o.Nix
	f, err := sandbox.New(filepath.Join(r.dir, "fleet"), hosts, o)
	if err != nil {
		r.t.Fatalf("sandbox: %v", err)
	}
	r.fleet = f
}

func (r *rig) setPort(port int) {
	r.listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	r.url = "nats://" + r.listen
}

// startServerAnyPort starts the server, moving to another free port when
// someone else took the chosen one.
func (r *rig) startServerAnyPort() {
	r.t.Helper()
	for attempt := 1; ; attempt++ {
		err := r.tryStartServer()
		if err == nil {
			return
		}
		if attempt == 3 || !strings.Contains(err.Error(), "in use") {
			r.t.Fatal(err)
		}
		r.t.Logf("port collision on %s; retrying on another port", r.listen)
		r.setPort(freePort(r.t))
	}
}

// startServer starts `convoy server` on the rig's data dir and port and
// waits until it serves.
func (r *rig) startServer() {
	r.t.Helper()
	if err := r.tryStartServer(); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) tryStartServer() error {
	r.t.Helper()
	p := startProc(r.t, "server", append([]string{"server", "--data", r.data, "--listen", r.listen}, r.serverArgs...)...)
	eventually(r.t, 30*time.Second, "the server to listen on "+r.listen, func() bool {
		return strings.Contains(p.stdout.String(), "convoy server listening on") || p.exited()
	})
	if p.exited() {
		return fmt.Errorf("server on %s exited with %d: %s", r.listen, p.code, p.stderr.String())
	}
	r.server = p
	// Cleanups run last-registered first: stop the workers while the bus
	// is still there, so that worker.stopped needs no wait for it.
	r.t.Cleanup(func() {
		for _, w := range r.workers {
			w.stop(syscall.SIGTERM, 10*time.Second)
		}
	})
	return nil
}

// stopServer ends the server with sig and returns its exit code.
func (r *rig) stopServer(sig syscall.Signal) int {
	r.t.Helper()
	return r.server.stop(sig, 15*time.Second)
}

// startWorker starts `convoy worker` for host and waits until it serves.
func (r *rig) startWorker(host string) *proc {
	r.t.Helper()
	p := r.spawnWorker(host)
	r.waitWorker(host, p)
	return p
}

// spawnWorker starts the worker process without waiting for it.
func (r *rig) spawnWorker(host string) *proc {
	r.t.Helper()
	h := r.fleet.Hosts[host]
	if h == nil {
		r.t.Fatalf("no host %q in the fleet", host)
	}
	args := []string{"worker", "--config", h.Config}
	if isRoot() {
		args = append(args, "--allow-root")
	}
	var env []string
	if r.nix {
		env = h.NixEnv()
	}
	p := startProcEnv(r.t, "worker "+host, env, args...)
	r.workers[host] = p
	return p
}

func (r *rig) waitWorker(host string, p *proc) {
	r.t.Helper()
	eventually(r.t, 30*time.Second, "worker "+host+" to start", func() bool {
		return strings.Contains(p.stderr.String(), "worker started") || p.exited()
	})
	if p.exited() {
		r.t.Fatalf("worker %s exited with %d:\n%s", host, p.code, p.stderr.String())
	}
}

// stopWorker stops host's worker as systemd would (SIGTERM) and checks
// that it stopped cleanly.
func (r *rig) stopWorker(host string) {
	r.t.Helper()
	if code := r.workers[host].stop(syscall.SIGTERM, 15*time.Second); code != 0 {
		r.t.Fatalf("worker %s exited with %d after SIGTERM:\n%s", host, code, r.workers[host].stderr.String())
	}
}

// convoy runs the CLI against the rig's bus.
func (r *rig) convoy(args ...string) result {
	r.t.Helper()
	return convoy(r.t, 90*time.Second, append([]string{"--nats", r.url}, args...)...)
}

// upgradeSummary is the JSON `convoy upgrade --json` prints.
type upgradeSummary struct {
	Upgrade string `json:"upgrade"`
	Hosts   []struct {
		Host    string `json:"host"`
		Result  string `json:"result"`
		Reason  string `json:"reason"`
		Commit  string `json:"commit"`
		Already bool   `json:"already_done"`
	} `json:"hosts"`
}

func (s upgradeSummary) result(host string) string {
	for _, h := range s.Hosts {
		if h.Host == host {
			return h.Result
		}
	}
	return ""
}

// upgrade runs `convoy upgrade ARGS --json`, checks the exit code and
// returns the summary.
func (r *rig) upgrade(wantCode int, args ...string) upgradeSummary {
	r.t.Helper()
	res := r.convoy(append([]string{"upgrade", "--json"}, args...)...)
	wantExit(r.t, res, wantCode)
	var s upgradeSummary
	if err := json.Unmarshal([]byte(res.stdout), &s); err != nil || s.Upgrade == "" {
		r.t.Fatalf("upgrade --json printed no summary (%v): %s", err, res)
	}
	return s
}

// commit pushes a new configuration.nix to the fleet's remote.
func (r *rig) commit(content, msg string) string {
	r.t.Helper()
	c, err := r.fleet.Commit(content, msg)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

func (r *rig) commitSecrets(content, msg string) string {
	r.t.Helper()
	c, err := r.fleet.CommitSecrets(content, msg)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// head returns host's checked-out config and secrets commits.
func (r *rig) head(host string) (config, secrets string) {
	r.t.Helper()
	c, s, err := r.fleet.Hosts[host].Head()
	if err != nil {
		r.t.Fatal(err)
	}
	return c, s
}

// git runs git in dir.
func (r *rig) git(dir string, args ...string) string {
	r.t.Helper()
	out, err := sandbox.Git(dir, args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// fact is the data of a host fact, as `history --json` prints it.
// fact is the data of a host fact, as events defines it.
type fact = events.Fact

// histLine is one line of `convoy history --json`.
type histLine struct {
	Seq     uint64 `json:"seq"`
	Subject string `json:"subject"`
	Event   *struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Source    string          `json:"source"`
		Subject   string          `json:"subject"`
		UpgradeID string          `json:"upgradeid"`
		Time      time.Time       `json:"time"`
		Data      json.RawMessage `json:"data"`
	} `json:"event"`
	Error string `json:"error"`
}

func (l histLine) kind() string {
	if l.Event == nil {
		return ""
	}
	return strings.TrimPrefix(l.Event.Type, "convoy.")
}

func (l histLine) upgradeID() string {
	if l.Event == nil {
		return ""
	}
	return l.Event.UpgradeID
}

// isFact reports whether the line is a worker's fact (not a request).
func (l histLine) isFact() bool { return strings.HasPrefix(l.Subject, "convoy.host.") }

func (l histLine) fact(t testing.TB) fact {
	t.Helper()
	var f fact
	if l.Event != nil && len(l.Event.Data) > 0 {
		if err := json.Unmarshal(l.Event.Data, &f); err != nil {
			t.Fatalf("seq %d: data: %v", l.Seq, err)
		}
	}
	return f
}

func isTerminal(kind string) bool { return events.Kind(kind).IsTerminal() }

// history runs `convoy history ARGS --json` and parses its lines.
func (r *rig) history(args ...string) []histLine {
	r.t.Helper()
	res := r.convoy(append([]string{"history", "--json"}, args...)...)
	wantExit(r.t, res, exitOK)
	return parseHistory(r.t, res.stdout)
}

func parseHistory(t testing.TB, out string) []histLine {
	t.Helper()
	var lines []histLine
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var l histLine
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("history --json: %v in:\n%s", err, out)
		}
		lines = append(lines, l)
	}
	return lines
}

// facts returns host's facts about upgrade id, from `history HOST`,
// waiting until the terminal one is there.
func (r *rig) facts(host, id string) []histLine {
	r.t.Helper()
	var fs []histLine
	eventually(r.t, 60*time.Second, "the end of upgrade "+id+" on "+host, func() bool {
		fs = fs[:0]
		for _, l := range r.history(host) {
			if l.isFact() && l.upgradeID() == id {
				fs = append(fs, l)
			}
		}
		return len(fs) > 0 && isTerminal(fs[len(fs)-1].kind())
	})
	return fs
}

func kinds(ls []histLine) []string {
	ks := make([]string, len(ls))
	for i, l := range ls {
		ks[i] = l.kind()
	}
	return ks
}

// wantKinds fails unless the facts have exactly the kinds want, in order.
func wantKinds(t testing.TB, got []histLine, want ...string) {
	t.Helper()
	if g := kinds(got); !slices.Equal(g, want) {
		t.Fatalf("facts:\n got %v\nwant %v", g, want)
	}
}

// find returns the fact of kind k among ls.
func find(t testing.TB, ls []histLine, k string) fact {
	t.Helper()
	for _, l := range ls {
		if l.kind() == k {
			return l.fact(t)
		}
	}
	t.Fatalf("no %s among %v", k, kinds(ls))
	return fact{}
}

// hostStatus is one row of `convoy status --json`.
type hostStatus struct {
	Host          string   `json:"host"`
	State         string   `json:"state"`
	Stage         string   `json:"stage"`
	Commit        string   `json:"commit"`
	SecretsCommit string   `json:"secrets_commit"`
	Result        string   `json:"result"`
	LastUpgrade   string   `json:"last_upgrade"`
	LastResult    string   `json:"last_result"`
	LastReason    string   `json:"last_reason"`
	LastFailed    string   `json:"last_failed_stage"`
	Requested     string   `json:"requested"`
	Generation    int      `json:"generation"`
	Golden        string   `json:"golden"`
	GoldenGen     int      `json:"golden_generation"`
	Worker        string   `json:"worker"`
	Tags          []string `json:"tags"`
	Seq           uint64   `json:"seq"`
}

// statusNote is what status prints when its view lags the stream.
const statusNote = "behind the stream"

// status runs `convoy status [HOST] --json`; settled is false while the
// view lags the stream.
func (r *rig) status(hosts ...string) (sts []hostStatus, raw string, settled bool) {
	r.t.Helper()
	res := r.convoy(append([]string{"status", "--json"}, hosts...)...)
	wantExit(r.t, res, exitOK)
	if err := json.Unmarshal([]byte(res.stdout), &sts); err != nil {
		r.t.Fatalf("status --json: %v: %s", err, res)
	}
	return sts, res.stdout, !strings.Contains(res.stderr, statusNote)
}

// waitStatus polls `status HOST --json` until the view has caught up with
// the stream and cond holds, and returns that row.
func (r *rig) waitStatus(host, what string, cond func(hostStatus) bool) hostStatus {
	r.t.Helper()
	var last hostStatus
	eventually(r.t, 30*time.Second, "status of "+host+": "+what, func() bool {
		res := r.convoy("status", "--json", host)
		if res.code != exitOK {
			return false // not projected yet
		}
		var sts []hostStatus
		if err := json.Unmarshal([]byte(res.stdout), &sts); err != nil || len(sts) != 1 {
			r.t.Fatalf("status --json %s: %v: %s", host, err, res)
		}
		last = sts[0]
		return !strings.Contains(res.stderr, statusNote) && cond(last)
	})
	return last
}

// settledStatus waits until the view has caught up and returns the raw
// `status --json` of the whole fleet.
func (r *rig) settledStatus() string {
	r.t.Helper()
	var raw string
	eventually(r.t, 30*time.Second, "the status view to catch up", func() bool {
		var ok bool
		_, raw, ok = r.status()
		return ok
	})
	return raw
}

// sh quotes s for sh -c.
func sh(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

var reUpgradeID = regexp.MustCompile(`upgrade ([0-9A-HJKMNP-TV-Z]{26}) requested`)

// upgradeIDIn returns the id from the human output of `convoy upgrade`.
func upgradeIDIn(t testing.TB, res result) string {
	t.Helper()
	m := reUpgradeID.FindStringSubmatch(res.stdout)
	if m == nil {
		t.Fatalf("no upgrade id in the output: %s", res)
	}
	return m[1]
}

// mustHold fails the test when ok is false: each call guards a bug found
// and fixed once, and says what it was.
func mustHold(t testing.TB, ok bool, bug string, detail ...any) {
	t.Helper()
	if !ok {
		t.Fatalf("regression: %s (%s)", bug, fmt.Sprint(detail...))
	}
}

// Configurations used across the tests.
const (
	configV1     = "{ services.openssh.enable = true; services.tailscale.enable = true; }\n"
	configV2     = "{ services.openssh.enable = true; services.tailscale.enable = true; # v2\n}\n"
	configV3     = "{ services.openssh.enable = true; services.tailscale.enable = true; # v3\n}\n"
	configBroken = "{ services.openssh.enable = true;\n  # Intentional syntax error for rollback testing\n  this is a syntax error that will break the build;\n}\n"
)

func isRoot() bool { return os.Geteuid() == 0 }

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// webGet GETs path from the HTTP listener at web (HOST:PORT) and returns
// the status code and the body.
func webGet(t testing.TB, web, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + web + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
