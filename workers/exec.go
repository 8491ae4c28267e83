package workers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// TailSize bounds the output kept in an event; the full output goes to the
// upgrade's log file under the state dir.
const TailSize = 4 << 10

// CmdResult is what running one command produced.
type CmdResult struct {
	Argv     []string
	ExitCode int // -1 when it did not start or was killed
	Duration time.Duration
	Tail     string // last TailSize bytes of stdout and stderr, interleaved
	LastLine string // last non-empty line of stdout
	TimedOut bool
	Err      error // nil on exit 0
}

// Exec runs argv and reports what happened. It is the worker's one way to
// start processes, so every command gets the same timeout, process-group
// kill, environment and logging.
type Exec func(ctx context.Context, dir string, argv []string, env ...string) CmdResult

// tail is an io.Writer keeping the last n bytes.
type tail struct {
	mu  sync.Mutex
	n   int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.n:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\r\n\t "), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return ""
}

// newExec returns an Exec that runs each command in its own process group
// with the given timeout, kills the whole group when the timeout passes or
// ctx ends, adds baseEnv to the process environment, and copies all output
// to log.
func newExec(timeout time.Duration, baseEnv []string, log io.Writer) Exec {
	var logMu sync.Mutex
	return func(ctx context.Context, dir string, argv []string, env ...string) CmdResult {
		res := CmdResult{Argv: argv, ExitCode: -1}
		if len(argv) == 0 {
			res.Err = errors.New("empty command")
			return res
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Dir = dir
		cmd.Env = append(append(os.Environ(), baseEnv...), env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		out := &tail{n: TailSize}
		stdout := &tail{n: TailSize}
		logw := writerFunc(func(p []byte) (int, error) {
			logMu.Lock()
			defer logMu.Unlock()
			return log.Write(p)
		})
		cmd.Stdout = io.MultiWriter(out, stdout, logw)
		cmd.Stderr = io.MultiWriter(out, logw)
		fmt.Fprintf(logw, "$ %s\n", strings.Join(argv, " "))
		start := time.Now()
		err := cmd.Start()
		if err == nil {
			if f, ok := ctx.Value(startKey{}).(func(int)); ok {
				f(cmd.Process.Pid)
			}
			err = cmd.Wait()
		}
		res.Duration = time.Since(start)
		res.Tail = out.String()
		res.LastLine = lastLine(stdout.String())
		if cmd.ProcessState != nil {
			res.ExitCode = cmd.ProcessState.ExitCode()
		}
		if err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				res.TimedOut = true
				err = fmt.Errorf("timed out after %s; process group killed", timeout)
			}
			res.Err = fmt.Errorf("%s: %w", argv[0], err)
		}
		fmt.Fprintf(logw, "# exit %d after %s\n", res.ExitCode, res.Duration.Round(time.Millisecond))
		return res
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// shell returns the argv that runs a configured shell snippet.
func shell(s string) []string { return []string{"sh", "-c", s} }

// runningFile records the process group of the command a worker is
// running, so that a worker restarted after a crash can stop what its
// predecessor left running (a command has its own process group, so it
// outlives a SIGKILLed worker).
const runningFile = "running"

// tracked wraps run so each command's process group is written to
// stateDir/running while it runs.
func tracked(stateDir string, run Exec) Exec {
	path := filepath.Join(stateDir, runningFile)
	return func(ctx context.Context, dir string, argv []string, env ...string) CmdResult {
		ctx = withStart(ctx, func(pid int) { _ = os.WriteFile(path, []byte(strconv.Itoa(pid)), 0o600) })
		defer os.Remove(path)
		return run(ctx, dir, argv, env...)
	}
}

type startKey struct{}

func withStart(ctx context.Context, f func(pid int)) context.Context {
	return context.WithValue(ctx, startKey{}, f)
}

// killLeftover kills the process group recorded in stateDir/running if
// it still belongs to upgrade id (its environment says so): a process of
// a dead worker that must not go on changing the host.
func killLeftover(stateDir, id string) {
	path := filepath.Join(stateDir, runningFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	defer os.Remove(path)
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pgid <= 1 {
		return
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, stat := range procs {
		dir := filepath.Dir(stat)
		pid, _ := strconv.Atoi(filepath.Base(dir))
		if g, err := syscall.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		env, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err == nil && bytes.Contains(env, []byte("CONVOY_UPGRADE_ID="+id+"\x00")) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			return
		}
	}
}
