package e2e

// The kill matrix: the worker is killed with SIGKILL at every stage
// boundary and inside every stage (build and switch included), on the
// command driver and on real Nix, and restarted. After each restart the
// upgrade has exactly one terminal fact, the host's checkouts and system
// (and Nix generation) are what the events say, nothing is left in
// flight, and the host serves the next upgrade.
//
// Kills land at precise points in two ways:
//   - a fact: a core NATS subscription on the host's subjects sees each
//     fact as the server receives it, and the test kills the worker from
//     that callback, mostly before the worker has read the fact's ack;
//   - a gate: every hook, check, the build and the switch of the config
//     pass through a gate that, when the test arms it, records its pid and
//     blocks until released; the test kills the worker while it waits.
//     Released after the restarted worker has recovered, a gate lets the
//     dead worker's command go on as an orphan would: whatever it then
//     does to the host is checked too;
//   - after the terminal fact, once the end is recorded: the worker
//     reaches the bus through a proxy that stops forwarding its traffic
//     once the terminal fact is seen, and the test kills the worker when
//     state.json says the upgrade ended (see killPoint.holdAck).

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	toml "github.com/pelletier/go-toml/v2"

	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// killPoint is where TestKillMatrix kills the worker.
type killPoint struct {
	name string
	// fact: kill as soon as this fact of the upgrade reaches the bus.
	fact string
	// gate: else kill while the upgrade's command waits in this gate:
	// hooks, build, validation, switch (before the switch command does
	// anything), switched (after it made the new system current, before
	// it returned; on Nix: the profile is set, nothing activated), health.
	gate string
	// recovery, if set, is a gate of the restarted worker's recovery (its
	// rollback runs the switch): the worker is killed there once more.
	recovery string
	// holdAck: the worker's connection reaches the bus through a proxy
	// that, once the fact is seen, forwards nothing more from the worker,
	// and the test kills it once it has recorded the upgrade as ended
	// (state.json without in_flight): the moment after the terminal fact
	// when nothing else of the request reached the bus.
	holdAck bool
	// rounds is how many upgrades are killed there, one after the other
	// on the same host (default 1): the second on a host that has been
	// through a kill and a recovery already.
	rounds int
}

// Kill points on the command driver, in pipeline order.
var commandKillPoints = []killPoint{
	{name: "after-upgrade.started", fact: "upgrade.started"},
	{name: "inside-hooks", gate: "hooks"},
	{name: "after-hooks.succeeded", fact: "hooks.succeeded"},
	{name: "after-pull.succeeded", fact: "pull.succeeded", rounds: 2},
	{name: "inside-build", gate: "build"},
	{name: "after-build.succeeded", fact: "build.succeeded"},
	{name: "inside-validation", gate: "validation"},
	{name: "after-validation.passed", fact: "validation.passed"},
	{name: "inside-switch-before-activation", gate: "switch", rounds: 2},
	{name: "inside-switch-after-activation", gate: "switched"},
	{name: "after-switch.succeeded", fact: "switch.succeeded", rounds: 2},
	{name: "inside-health", gate: "health"},
	{name: "after-health.passed", fact: "health.passed"},
	{name: "after-upgrade.succeeded", fact: "upgrade.succeeded", rounds: 2},
	{name: "after-upgrade.succeeded-end-recorded", fact: "upgrade.succeeded", holdAck: true},
	{name: "inside-health-then-inside-recovery-rollback", gate: "health", recovery: "switch"},
}

// Kill points on real Nix: the build, the switch before and after the
// profile moves, and after the switch.
var nixKillPoints = []killPoint{
	{name: "inside-build", gate: "build"},
	{name: "inside-switch-before-profile-set", gate: "switch"},
	{name: "inside-switch-after-profile-set", gate: "switched"},
	{name: "after-switch.succeeded", fact: "switch.succeeded"},
}

// kills counts the SIGKILLs the matrix sent.
var kills atomic.Int64

func TestKillMatrix(t *testing.T) {
	t.Parallel()
	start := time.Now()
	kills.Store(0)
	t.Cleanup(func() {
		t.Logf("kill matrix: %d SIGKILLs of the worker in %s", kills.Load(), time.Since(start).Round(time.Millisecond))
	})
	for _, pt := range commandKillPoints {
		t.Run("command/"+pt.name, func(t *testing.T) {
			t.Parallel()
			k := newKillRig(t, false, pt)
			for i := range max(pt.rounds, 1) {
				k.round(pt, i)
			}
			k.checkWholeHistory()
		})
	}
	for _, pt := range nixKillPoints {
		t.Run("nix/"+pt.name, func(t *testing.T) {
			needNix(t)
			t.Parallel()
			k := newKillRig(t, true, pt)
			k.round(pt, 0)
			k.checkWholeHistory()
		})
	}
}

// killRig is a one-host rig whose worker the test kills.
type killRig struct {
	*rig
	host  string
	h     *sandbox.Host
	knobs string   // the gates' arm, in and release files
	env   []string // the worker's extra environment
	nc    *nats.Conn
	proxy *holdProxy // the workers' way to the bus (holdAck points)

	mu    sync.Mutex
	w     *proc
	trig  *factTrigger
	ended map[string]bool // upgrade ids whose terminal fact went by
	tick  chan struct{}   // a terminal fact went by

	gateN   int // numbers each armed gate
	version int // numbers each configuration committed
	ids     []string
}

type factTrigger struct {
	kind, id string
	hold     bool // hold the proxy instead of killing
	fired    chan struct{}
}

// gateSnippet is the shell snippet of a gate: when $KNOBS/arm-NAME exists it
// consumes it, writes its pid to in-NAME-N (N read from the arm file) and
// waits for release-N (at most 60s).
func gateSnippet(knobs, name string) string {
	return fmt.Sprintf(`k=%s; if [ -f "$k/arm-%[2]s" ]; then n=$(cat "$k/arm-%[2]s"); rm -f "$k/arm-%[2]s"; `+
		`echo $$ > "$k/.in-%[2]s-$n" && mv "$k/.in-%[2]s-$n" "$k/in-%[2]s-$n"; i=0; `+
		`while [ ! -f "$k/release-$n" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; fi`, sh(knobs), name)
}

func newKillRig(t *testing.T, nix bool, pt killPoint) *killRig {
	t.Helper()
	knobs := t.TempDir()
	o := sandbox.Options{
		Nix:              nix,
		PreUpdateHooks:   []string{gateSnippet(knobs, "hooks")},
		ValidationChecks: []string{gateSnippet(knobs, "validation")},
		HealthChecks:     []string{gateSnippet(knobs, "health")},
	}
	k := &killRig{rig: newRig(t, []string{"sorrow"}, o), host: "sorrow", knobs: knobs, ended: map[string]bool{}, tick: make(chan struct{}, 1)}
	k.h = k.fleet.Hosts[k.host]
	k.wrapCommands()
	if pt.holdAck {
		k.proxy = newHoldProxy(t, k.listen)
		k.setConfigURL(k.proxy.url())
	}
	t.Cleanup(func() {
		// Let every gate still waiting (an orphan of a killed worker) go.
		for i := 1; i <= k.gateN; i++ {
			_ = os.WriteFile(filepath.Join(knobs, "release-"+strconv.Itoa(i)), nil, 0o644)
		}
	})

	nc, err := nats.Connect(k.url, nats.Name("kill-matrix"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	k.nc = nc
	if _, err := nc.Subscribe(events.HostFacts(k.host), k.onFact); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	k.startWorker()
	// A first upgrade, so that the host runs a system a rollback can
	// return to.
	c := k.commit(k.nextConfig(), "baseline")
	sum := k.upgrade(exitOK, k.host, "--wait", "--timeout", "90s")
	k.ids = append(k.ids, sum.Upgrade)
	if head, _ := k.head(k.host); head != c || k.h.Running() == "" {
		t.Fatalf("baseline upgrade: HEAD %s running %q, want %s and a system", head, k.h.Running(), c)
	}
	return k
}

// wrapCommands puts the build and the switch behind gates. The command
// driver's build and switch argv are wrapped in the config; on Nix the
// elevation program wraps every profile change and activation, and a nix
// earlier on the worker's PATH wraps the build.
func (k *killRig) wrapCommands() {
	t := k.t
	b, err := os.ReadFile(k.h.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	switchWrap := gateSnippet(k.knobs, "switch") + "\n\"$@\" || exit $?\n" + gateSnippet(k.knobs, "switched")
	if k.nix {
		const empty = "elevation = []\n"
		if !strings.Contains(cfg, empty) {
			t.Fatalf("no %q in the Nix config:\n%s", empty, cfg)
		}
		cfg = strings.Replace(cfg, empty, "elevation = "+tomlStrings("sh", "-c", switchWrap, "convoy-kill-elevation")+"\n", 1)
		real, err := exec.LookPath("nix")
		if err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(k.knobs, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\n" + gateSnippet(k.knobs, "build") + "\nexec " + sh(real) + " \"$@\"\n"
		if err := os.WriteFile(filepath.Join(bin, "nix"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		k.env = append(k.h.NixEnv(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	} else {
		cfg = k.wrapLine(cfg, "build", "sh", "-c", gateSnippet(k.knobs, "build")+"\nexec \"$@\"", "convoy-kill-build")
		cfg = k.wrapLine(cfg, "switch", "sh", "-c", switchWrap, "convoy-kill-switch")
	}
	if err := os.WriteFile(k.h.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// wrapLine replaces the `key = [argv]` line of the [system] table with
// wrapper followed by the original argv.
func (k *killRig) wrapLine(cfg, key string, wrapper ...string) string {
	t := k.t
	lines := strings.Split(cfg, "\n")
	inSystem := false
	for i, l := range lines {
		if strings.HasPrefix(l, "[") {
			inSystem = l == "[system]"
		}
		if !inSystem || !strings.HasPrefix(l, key+" = ") {
			continue
		}
		var v map[string][]string
		if err := toml.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("config line %q: %v", l, err)
		}
		lines[i] = key + " = " + tomlStrings(append(wrapper, v[key]...)...)
		return strings.Join(lines, "\n")
	}
	t.Fatalf("no %s in the [system] table of:\n%s", key, cfg)
	return ""
}

func tomlStrings(xs ...string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// onFact kills the worker (or holds its connection) when the armed fact
// arrives, and notes terminal facts.
func (k *killRig) onFact(m *nats.Msg) {
	var e struct {
		Type      string `json:"type"`
		UpgradeID string `json:"upgradeid"`
	}
	if json.Unmarshal(m.Data, &e) != nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if isTerminal(strings.TrimPrefix(e.Type, events.TypePrefix)) {
		k.ended[e.UpgradeID] = true
		select {
		case k.tick <- struct{}{}:
		default:
		}
	}
	tr := k.trig
	if tr == nil || tr.id != e.UpgradeID || tr.kind != strings.TrimPrefix(e.Type, events.TypePrefix) {
		return
	}
	k.trig = nil
	if tr.hold {
		k.proxy.holdAll()
		close(tr.fired)
		return
	}
	close(tr.fired) // first: round reads a dead worker with fired closed as this kill
	_ = k.w.cmd.Process.Signal(syscall.SIGKILL)
}

func (k *killRig) armFact(kind, id string, hold bool) chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.trig = &factTrigger{kind: kind, id: id, hold: hold, fired: make(chan struct{})}
	return k.trig.fired
}

// arm arms a gate and returns its number.
func (k *killRig) arm(gate string) int {
	k.gateN++
	if err := os.WriteFile(filepath.Join(k.knobs, "arm-"+gate), []byte(strconv.Itoa(k.gateN)), 0o644); err != nil {
		k.t.Fatal(err)
	}
	return k.gateN
}

// waitGate waits until a command is inside gate number n, and returns
// it. It fails when the worker w exits first.
func (k *killRig) waitGate(gate string, n int, w *proc) cmdProc {
	k.t.Helper()
	in := filepath.Join(k.knobs, fmt.Sprintf("in-%s-%d", gate, n))
	c := cmdProc{gate: n}
	eventually(k.t, 60*time.Second, "a command inside the "+gate+" gate", func() bool {
		if w.exited() {
			k.t.Fatalf("the worker exited with %d before the %s gate:\n%s", w.code, gate, w.stderr.String())
		}
		b, err := os.ReadFile(in)
		if err != nil {
			return false
		}
		c.pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	// It waits in the gate until released: it runs now.
	if c.start = procStart(c.pid); c.start == "" {
		k.t.Fatalf("the command in the %s gate (pid %d) is not running", gate, c.pid)
	}
	return c
}

func (k *killRig) release(n int) {
	if err := os.WriteFile(filepath.Join(k.knobs, "release-"+strconv.Itoa(n)), nil, 0o644); err != nil {
		k.t.Fatal(err)
	}
}

// factsOf waits until the subscription has seen upgrade id's terminal
// fact, and returns the upgrade's facts from `convoy history`.
func (k *killRig) factsOf(id string) []histLine {
	k.t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		k.mu.Lock()
		done := k.ended[id]
		k.mu.Unlock()
		if done {
			break
		}
		select {
		case <-k.tick:
		case <-time.After(time.Second): // the fact may have gone by before the check
		case <-deadline:
			k.t.Fatalf("no terminal fact of upgrade %s within 60s", id)
		}
	}
	return k.facts(k.host, id)
}

// spawn starts the worker without waiting for it.
func (k *killRig) spawn() *proc {
	k.t.Helper()
	args := []string{"worker", "--config", k.h.Config}
	if isRoot() {
		args = append(args, "--allow-root")
	}
	p := startProcEnv(k.t, "worker "+k.host, k.env, args...)
	k.mu.Lock()
	k.w = p
	k.mu.Unlock()
	k.workers[k.host] = p
	return p
}

func (k *killRig) startWorker() *proc {
	k.t.Helper()
	p := k.spawn()
	k.waitWorker(k.host, p)
	return p
}

// kill SIGKILLs w (if the trigger has not already) and checks that the
// signal is what ended it.
func (k *killRig) kill(w *proc, where string) {
	k.t.Helper()
	if code := w.stop(syscall.SIGKILL, 10*time.Second); code != 128+int(syscall.SIGKILL) {
		k.t.Fatalf("%s: the worker ended with exit %d, not by the SIGKILL:\n%s", where, code, w.stderr.String())
	}
	kills.Add(1)
	k.t.Logf("killed the worker (pid %d) %s", w.cmd.Process.Pid, where)
}

// nextConfig returns a configuration that builds a system no earlier
// one did (on Nix too: the attribute changes the derivation).
func (k *killRig) nextConfig() string {
	k.version++
	return fmt.Sprintf("{ services.openssh.enable = true; system.version = %d; }\n", k.version)
}

// hostState is what a host has and runs.
type hostState struct {
	commit, secrets string
	running         string
	generation      int // Nix: the profile's current generation
	activated       string
}

func (k *killRig) state() hostState {
	k.t.Helper()
	c, s := k.head(k.host)
	st := hostState{commit: c, secrets: s, running: k.h.Running()}
	if k.nix {
		st.generation = k.generation()
		if acts := k.h.Activations(); len(acts) > 0 {
			st.activated = acts[len(acts)-1]
		}
	}
	return st
}

// generation is the profile's current generation number, and checks that
// nix-env lists the same one as current.
func (k *killRig) generation() int {
	k.t.Helper()
	link, err := os.Readlink(k.h.Profile())
	if err != nil {
		k.t.Fatalf("profile: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(link, "system-"), "-link"))
	if err != nil {
		k.t.Fatalf("profile link %q: %v", link, err)
	}
	var current []string
	for _, g := range generations(k.t, k.h) {
		if strings.Contains(g, "(current)") {
			current = append(current, strings.Fields(g)[0])
		}
	}
	if len(current) != 1 || current[0] != strconv.Itoa(n) {
		k.t.Fatalf("nix-env lists %q as current, the profile links generation %d", current, n)
	}
	return n
}

// killLocalState is the part of the worker's state.json the test reads.
type killLocalState struct {
	Deployed string   `json:"deployed"`
	Recent   []string `json:"recent"`
	InFlight *struct {
		UpgradeID string `json:"upgrade_id"`
	} `json:"in_flight"`
}

func (k *killRig) localState() killLocalState {
	k.t.Helper()
	var s killLocalState
	b, err := os.ReadFile(filepath.Join(k.h.StateDir, "state.json"))
	if err != nil {
		k.t.Fatalf("state.json: %v", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		k.t.Fatalf("state.json: %v: %s", err, b)
	}
	return s
}

// procStart returns the start time of process pid (field 22 of its
// /proc stat, in clock ticks since boot), or "" when no such process
// runs; a zombie counts as gone.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3, the state
	if len(f) < 20 || f[0] == "Z" {
		return ""
	}
	return f[19]
}

// cmdProc is a process seen running: its pid and start time (so that
// a reused pid is not taken for it).
type cmdProc struct {
	pid   int
	start string
	gate  int
}

func (c cmdProc) alive() bool { return c.start != "" && procStart(c.pid) == c.start }

// round runs one upgrade, kills the worker at pt, restarts it and checks
// what the recovery left.
func (k *killRig) round(pt killPoint, i int) {
	t := k.t
	before := k.state()
	newC := k.commit(k.nextConfig(), fmt.Sprintf("round %d", i))
	newS := k.commitSecrets(fmt.Sprintf("wifi: round %d of %s\n", i, pt.name), "rotate")
	id := events.NewID()
	k.ids = append(k.ids, id)
	where := fmt.Sprintf("at %s (round %d, upgrade %s)", pt.name, i, id)

	var orphans []cmdProc
	w := k.w
	var fired chan struct{}
	gate := 0
	if pt.fact != "" {
		fired = k.armFact(pt.fact, id, pt.holdAck)
	} else {
		gate = k.arm(pt.gate)
	}
	wantExit(t, k.convoy("upgrade", k.host, "--id", id), exitOK)
	if fired != nil {
		select {
		case <-fired:
		case <-w.done:
			select {
			case <-fired: // closed before the kill that ended it
			default:
				t.Fatalf("the worker exited with %d before %s:\n%s", w.code, pt.fact, w.stderr.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("no %s of upgrade %s within 60s", pt.fact, id)
		}
		if pt.holdAck {
			eventually(t, 30*time.Second, "the worker to record upgrade "+id+" as ended", func() bool {
				st := k.localState()
				return st.InFlight == nil && slices.Contains(st.Recent, id)
			})
		}
	} else {
		orphans = append(orphans, k.waitGate(pt.gate, gate, w))
	}
	k.kill(w, where)

	if pt.recovery != "" {
		n := k.arm(pt.recovery)
		w = k.spawn()
		orphans = append(orphans, k.waitGate(pt.recovery, n, w))
		k.kill(w, "inside the recovery's "+pt.recovery+" of upgrade "+id)
	}

	w = k.startWorker()
	facts := k.factsOf(id)
	t.Logf("%s: %v (%s)", where, kinds(facts), facts[len(facts)-1].fact(t).Reason)

	// The dead worker's commands, if they outlived it, go on now, after
	// the recovery; whatever they do must not make a liar of the events.
	for _, o := range orphans {
		if o.alive() {
			t.Logf("the killed worker's command (pid %d, gate %d) outlived it; releasing it", o.pid, o.gate)
		}
		k.release(o.gate)
		eventually(t, 30*time.Second, fmt.Sprintf("the released command (pid %d) to end", o.pid), func() bool { return !o.alive() })
	}

	term := k.checkRecovered(id, facts, before, newC, newS)
	if w.exited() {
		t.Fatalf("the restarted worker exited with %d:\n%s", w.code, w.stderr.String())
	}
	if term == "upgrade.succeeded" {
		k.checkDowngradeRefused(before.commit, newC)
	}
	k.freshUpgrade(where)
}

// checkRecovered checks the invariants after a kill and restart, and
// returns the upgrade's terminal kind.
func (k *killRig) checkRecovered(id string, facts []histLine, before hostState, newC, newS string) string {
	t := k.t
	t.Helper()
	// Exactly one terminal fact, and it is the last fact of the upgrade.
	var mine []histLine
	var terminals []string
	for _, l := range k.history(k.host) {
		if l.isFact() && l.upgradeID() == id {
			mine = append(mine, l)
			if isTerminal(l.kind()) {
				terminals = append(terminals, l.kind())
			}
		}
	}
	if len(terminals) != 1 {
		t.Fatalf("upgrade %s has %d terminal facts %v, want exactly one; facts %v", id, len(terminals), terminals, kinds(mine))
	}
	last := mine[len(mine)-1]
	if !isTerminal(last.kind()) {
		t.Fatalf("upgrade %s has facts after its terminal one: %v", id, kinds(mine))
	}
	term, tf := last.kind(), last.fact(t)
	has := func(kind string) bool {
		for _, l := range mine {
			if l.kind() == kind {
				return true
			}
		}
		return false
	}
	if has("rollback.failed") {
		t.Fatalf("rollback.failed after the kill: %+v", find(t, mine, "rollback.failed"))
	}

	// Nothing in flight.
	eventually(t, 10*time.Second, "state.json without in_flight", func() bool { return k.localState().InFlight == nil })
	outbox := filepath.Join(k.h.StateDir, "outbox")
	// (A kill inside the outbox's write-then-rename may leave a .tmp file
	// behind: an event never published, which the worker ignores.)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(25 * time.Millisecond) {
		pending, _ := filepath.Glob(filepath.Join(outbox, "*.json"))
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var left []string
			for _, p := range pending {
				b, _ := os.ReadFile(p)
				left = append(left, filepath.Base(p)+": "+string(b))
			}
			t.Fatalf("events still in the outbox 10s after the recovery: %q", left)
		}
	}

	// The host is where the events say.
	now := k.state()
	switch term {
	case "upgrade.succeeded":
		sw := find(t, mine, "switch.succeeded")
		if tf.Commit != newC || now.commit != newC || now.secrets != newS {
			t.Fatalf("upgrade.succeeded of %s: HEADs %s %s, want %s %s", tf.Commit, now.commit, now.secrets, newC, newS)
		}
		if now.running != tf.Result || sw.Result != tf.Result || tf.Result == before.running {
			t.Fatalf("upgrade.succeeded with result %q (switch.succeeded %q), the host runs %q (before: %q)", tf.Result, sw.Result, now.running, before.running)
		}
		if k.nix && (now.generation != tf.Generation || now.activated != "switch "+tf.Result) {
			t.Fatalf("upgrade.succeeded generation %d %s; the profile is at generation %d, last activation %q", tf.Generation, tf.Result, now.generation, now.activated)
		}
	case "upgrade.aborted":
		if now.commit != before.commit || now.secrets != before.secrets {
			t.Fatalf("upgrade.aborted, but HEADs %s %s, want the old %s %s; facts %v", now.commit, now.secrets, before.commit, before.secrets, kinds(mine))
		}
		if now.running != before.running {
			t.Fatalf("upgrade.aborted, but the host runs %q, not the previous %q; facts %v", now.running, before.running, kinds(mine))
		}
		if tf.Commit != "" && tf.Commit != before.commit {
			t.Fatalf("upgrade.aborted names commit %s, the host had %s", tf.Commit, before.commit)
		}
		if tf.Result != "" && tf.Result != before.running {
			t.Fatalf("upgrade.aborted names result %s, the host ran %s", tf.Result, before.running)
		}
		if has("pull.succeeded") {
			rb := find(t, mine, "rollback.succeeded")
			if rb.Commit != before.commit || rb.SecretsOldCommit != before.secrets {
				t.Fatalf("rollback.succeeded names %s %s, want %s %s", rb.Commit, rb.SecretsOldCommit, before.commit, before.secrets)
			}
		}
		systemBack := false
		if has("rollback.succeeded") {
			rb := find(t, mine, "rollback.succeeded")
			systemBack = rb.Result != ""
			if systemBack && rb.Result != before.running {
				t.Fatalf("rollback.succeeded says the host runs %s, it ran %s before", rb.Result, before.running)
			}
			if k.nix && systemBack && rb.Generation != now.generation {
				t.Fatalf("rollback.succeeded says generation %d, the profile is at %d", rb.Generation, now.generation)
			}
		}
		if has("switch.succeeded") && !systemBack {
			t.Fatalf("the switch had succeeded, but no rollback.succeeded names the system put back: %v", kinds(mine))
		}
		if k.nix {
			if !systemBack && now.generation != before.generation {
				t.Fatalf("no system rollback in the events, but the profile moved from generation %d to %d", before.generation, now.generation)
			}
			if now.activated != "switch "+before.running {
				t.Fatalf("the last activation is %q, want the previous system %s active again", now.activated, before.running)
			}
		}
	default:
		t.Fatalf("the killed upgrade ended %s, want upgrade.aborted or upgrade.succeeded: %+v", term, tf)
	}

	st := k.waitStatus(k.host, "upgrade "+id+" ended", func(s hostStatus) bool {
		return s.LastUpgrade == id && s.LastResult != ""
	})
	if st.State == "upgrading" || st.LastResult != term || st.Commit != now.commit {
		t.Fatalf("status %+v; want not upgrading, last result %s, on %s", st, term, now.commit)
	}
	return term
}

// checkDowngradeRefused asks for the commit deployed before the one the
// killed upgrade deployed: the worker must know it is a downgrade.
func (k *killRig) checkDowngradeRefused(older, deployed string) {
	t := k.t
	t.Helper()
	res := k.convoy("upgrade", k.host, "--rev", older, "--wait", "--timeout", "20s")
	k.notStalled(res, "the downgrade request")
	if res.code != exitFailed || !strings.Contains(res.stdout, "upgrade.rejected") {
		t.Fatalf("after a kill just past upgrade.succeeded of %s, a request for its ancestor %s was not refused as a downgrade "+
			"(state.json deployed = %q): %s", deployed, older, k.localState().Deployed, res)
	}
}

// notStalled fails when res timed out waiting: the restarted worker did
// not get to the request.
func (k *killRig) notStalled(res result, what string) {
	k.t.Helper()
	if res.code == exitTimeout {
		k.t.Fatalf("%s waited 20s without an answer from the restarted worker (state.json: %+v): %s", what, k.localState(), res)
	}
}

// freshUpgrade checks that the host serves a new upgrade to success.
func (k *killRig) freshUpgrade(after string) {
	t := k.t
	t.Helper()
	c := k.commit(k.nextConfig(), "fresh")
	res := k.convoy("upgrade", k.host, "--json", "--wait", "--timeout", "20s")
	k.notStalled(res, "a new request after a kill "+after)
	wantExit(t, res, exitOK)
	var sum upgradeSummary
	if err := json.Unmarshal([]byte(res.stdout), &sum); err != nil || sum.result(k.host) != "upgrade.succeeded" {
		t.Fatalf("fresh upgrade after a kill %s: %v %s", after, err, res)
	}
	k.ids = append(k.ids, sum.Upgrade)
	succ := find(t, k.factsOf(sum.Upgrade), "upgrade.succeeded")
	now := k.state()
	if now.commit != c || now.running != succ.Result {
		t.Fatalf("fresh upgrade: HEAD %s running %q, want %s running %q", now.commit, now.running, c, succ.Result)
	}
	if k.nix && (now.generation != succ.Generation || now.activated != "switch "+succ.Result) {
		t.Fatalf("fresh upgrade: generation %d activation %q, want %d %s", now.generation, now.activated, succ.Generation, succ.Result)
	}
}

// checkWholeHistory checks, at the end, that every upgrade of the test
// ended exactly once and no event was stored twice.
func (k *killRig) checkWholeHistory() {
	t := k.t
	t.Helper()
	terminals := map[string]int{}
	ids := map[string]int{}
	for _, l := range k.history(k.host) {
		if l.Event == nil {
			t.Fatalf("seq %d does not decode: %s", l.Seq, l.Error)
		}
		ids[l.Event.ID]++
		if l.isFact() && isTerminal(l.kind()) {
			terminals[l.upgradeID()]++
		}
	}
	for id, n := range ids {
		if n != 1 {
			t.Errorf("event %s is stored %d times", id, n)
		}
	}
	for _, id := range k.ids {
		if terminals[id] != 1 {
			t.Errorf("upgrade %s has %d terminal facts, want 1", id, terminals[id])
		}
	}
}

// setConfigURL points the worker config's nats at url.
func (k *killRig) setConfigURL(url string) {
	t := k.t
	b, err := os.ReadFile(k.h.Config)
	if err != nil {
		t.Fatal(err)
	}
	old := "nats = " + strconv.Quote(k.url) + "\n"
	if !strings.Contains(string(b), old) {
		t.Fatalf("no %q in the worker config", old)
	}
	cfg := strings.Replace(string(b), old, "nats = "+strconv.Quote(url)+"\n", 1)
	if err := os.WriteFile(k.h.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
}

// holdProxy forwards TCP connections to the bus. holdAll makes every
// connection open at that moment forward nothing more from its client,
// while the bus's replies still reach the client.
type holdProxy struct {
	t      *testing.T
	l      net.Listener
	target string

	mu    sync.Mutex
	holds []*atomic.Bool
	conns []net.Conn
}

func newHoldProxy(t *testing.T, target string) *holdProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{t: t, l: l, target: target}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			held := &atomic.Bool{}
			p.mu.Lock()
			p.holds = append(p.holds, held)
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			conns.Add(2)
			go func() { // client → bus, until held
				defer conns.Done()
				defer up.Close()
				buf := make([]byte, 32<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 && !held.Load() {
						if _, werr := up.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
			go func() { // bus → client
				defer conns.Done()
				defer c.Close()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return p
}

func (p *holdProxy) url() string { return "nats://" + p.l.Addr().String() }

func (p *holdProxy) holdAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, h := range p.holds {
		h.Store(true)
	}
}
