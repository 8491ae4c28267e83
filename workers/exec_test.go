package workers

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExecTimeoutKillsTheProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	var log bytes.Buffer
	run := newExec(300*time.Millisecond, nil, &log)
	// The shell starts a grandchild that would outlive a plain kill of sh.
	res := run(t.Context(), dir, []string{"sh", "-c", "sleep 30 & echo $! > " + pidFile + "; wait"})
	if !res.TimedOut || res.Err == nil || !strings.Contains(res.Err.Error(), "timed out") {
		t.Fatalf("result %+v, want a timeout", res)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d still alive after the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExecCapturesTailLastLineAndLog(t *testing.T) {
	var log bytes.Buffer
	run := newExec(time.Minute, []string{"CONVOY_HOST=sorrow"}, &log)
	res := run(context.Background(), t.TempDir(), []string{"sh", "-c", `head -c 10000 /dev/zero | tr '\0' x; echo; echo "err" >&2; echo "$CONVOY_HOST"; echo; exit 3`})
	if res.ExitCode != 3 || res.Err == nil {
		t.Fatalf("exit %d err %v", res.ExitCode, res.Err)
	}
	if res.LastLine != "sorrow" {
		t.Fatalf("last line %q", res.LastLine)
	}
	// stdout and stderr come through two pipes, so their relative order in
	// the tail is not fixed; the end of stdout is in it, and all is logged.
	if len(res.Tail) != TailSize || !strings.Contains(res.Tail, "sorrow") {
		t.Fatalf("tail of %d bytes, want %d ending with the last output: %q…", len(res.Tail), TailSize, res.Tail[len(res.Tail)-40:])
	}
	if log.Len() < 10000 || !strings.Contains(log.String(), "err\n") || !strings.Contains(log.String(), "# exit 3") {
		t.Fatalf("the log misses output: %d bytes", log.Len())
	}
}
