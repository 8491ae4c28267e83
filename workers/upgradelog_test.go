package workers

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/events"
)

// A log written past logs.max_size keeps its head and its tail, with a
// marker saying how many bytes were dropped, and no more than max_size;
// writing it allocates far less than what went through.
func TestLogCapKeepsHeadMarkerAndTail(t *testing.T) {
	const max = 1 << 20
	path := filepath.Join(t.TempDir(), events.NewID()+".log")
	l, err := openCappedLog(path, max)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB
	fmt.Fprintf(l, "FIRST LINE\n")
	total := 11
	for range 640 { // 20 MiB
		n, err := l.Write(chunk)
		if err != nil || n != len(chunk) {
			t.Fatalf("write: %d, %v", n, err)
		}
		total += n
	}
	fmt.Fprintf(l, "LAST LINE\n")
	total += 10
	runtime.ReadMemStats(&after)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Errorf("writing 20 MiB allocated %d bytes: the log is held in memory", grew)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkCapped(t, b, max, total, "FIRST LINE\n0123", "cdefLAST LINE\n")
	if _, err := os.Stat(tailPath(path)); !os.IsNotExist(err) {
		t.Errorf("the side file is left: %v", err)
	}
}

// checkCapped checks a capped log: within max, starting with head,
// ending with tail, and one marker whose count adds up to total.
func checkCapped(t *testing.T, b []byte, limit, total int, head, tail string) {
	t.Helper()
	if len(b) > limit || len(b) < limit-markerRoom {
		t.Errorf("log is %d bytes, want just under %d", len(b), limit)
	}
	if !bytes.HasPrefix(b, []byte(head)) {
		t.Errorf("log starts %q, want %q", b[:min(len(b), 40)], head)
	}
	if !bytes.HasSuffix(b, []byte(tail)) {
		t.Errorf("log ends %q, want %q", b[max(0, len(b)-40):], tail)
	}
	i := bytes.Index(b, []byte("\n# convoy: "))
	if i < 0 || bytes.Count(b, []byte("# convoy: ")) != 1 {
		t.Fatalf("want one marker line in the log")
	}
	line, _, _ := strings.Cut(string(b[i+1:]), "\n")
	var dropped int
	if _, err := fmt.Sscanf(line, "# convoy: %d bytes of output dropped here", &dropped); err != nil {
		t.Fatalf("marker %q: %v", line, err)
	}
	if kept := len(b) - len(line) - 2; kept+dropped != total {
		t.Errorf("marker says %d dropped; kept %d; together %d, want %d written", dropped, kept, kept+dropped, total)
	}
}

// A log opened again (recovery appends to the log of the upgrade it
// ends), and one whose worker was killed while its tail was in the side
// file, still ends as head, marker and the newest tail.
func TestLogCapAcrossReopenAndKill(t *testing.T) {
	const max = 64 << 10
	path := filepath.Join(t.TempDir(), events.NewID()+".log")
	write := func(l *cappedLog, prefix string, n int) int {
		total := 0
		for i := range n {
			k, _ := fmt.Fprintf(l, "%s %06d\n", prefix, i)
			total += k
		}
		return total
	}
	l, err := openCappedLog(path, max)
	if err != nil {
		t.Fatal(err)
	}
	total := write(l, "run1", 10000)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// Killed: the side file is never put in order by Close.
	l, err = openCappedLog(path, max)
	if err != nil {
		t.Fatal(err)
	}
	total += write(l, "run2", 10000)
	l.f.Close()
	l.ring.Close()
	// Recovery opens it again and writes a little.
	l, err = openCappedLog(path, max)
	if err != nil {
		t.Fatal(err)
	}
	total += write(l, "run3", 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	// Run 1's marker is dropped with the middle; the markers' counts
	// then add up to what was written.
	if n := bytes.Count(b, []byte("# convoy: ")); n != 1 {
		t.Fatalf("%d markers:\n%s", n, b)
	}
	checkCapped(t, b, max, total, "run1 000000\n", "run2 009999\nrun3 000000\nrun3 000001\nrun3 000002\n")
}

// Under the cap nothing changes: no marker, no side file.
func TestLogCapUnderTheLimitIsUntouched(t *testing.T) {
	path := filepath.Join(t.TempDir(), events.NewID()+".log")
	l, err := openCappedLog(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(l, "short\n")
	l.Close()
	l, _ = openCappedLog(path, 1<<20)
	fmt.Fprint(l, "again\n")
	l.Close()
	if b, _ := os.ReadFile(path); string(b) != "short\nagain\n" {
		t.Fatalf("log %q", b)
	}
}

// 60 upgrade logs leave the newest 50; max_age removes older ones too;
// other logs in the dir stay.
func TestLogRetentionKeepsTheNewest(t *testing.T) {
	dir := t.TempDir()
	var ids []string
	now := time.Now()
	for i := range 60 {
		id := events.NewID()
		ids = append(ids, id)
		p := filepath.Join(dir, id+".log")
		if err := os.WriteFile(p, []byte("log\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// The 5 newest of the first 50 written more than a day ago.
		age := time.Duration(60-i) * time.Minute
		if i >= 10 && i < 15 {
			age = 48 * time.Hour
		}
		os.Chtimes(p, now.Add(-age), now.Add(-age))
		time.Sleep(time.Millisecond) // ULIDs in order
	}
	for _, other := range []string{"boot-check.log", "reboot.log", "notes.txt"} {
		os.WriteFile(filepath.Join(dir, other), nil, 0o600)
	}
	removed, err := pruneLogs(dir, DefaultLogsKeep, 0, now)
	if err != nil || len(removed) != 10 {
		t.Fatalf("removed %d (%v), want 10", len(removed), err)
	}
	left := logsIn(t, dir)
	if len(left) != 50 || left[0] != ids[10]+".log" || left[49] != ids[59]+".log" {
		t.Fatalf("left %d logs, want ids 10..59", len(left))
	}
	if _, err := pruneLogs(dir, DefaultLogsKeep, 24*time.Hour, now); err != nil {
		t.Fatal(err)
	}
	if left := logsIn(t, dir); len(left) != 45 || left[0] != ids[15]+".log" {
		t.Fatalf("after max_age 24h: %d logs starting %s, want 45 from id 15", len(left), left[0])
	}
	for _, other := range []string{"boot-check.log", "reboot.log", "notes.txt"} {
		if _, err := os.Stat(filepath.Join(dir, other)); err != nil {
			t.Errorf("%s: %v", other, err)
		}
	}
}

func logsIn(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range m {
		if n := filepath.Base(p); events.ValidateID(strings.TrimSuffix(n, ".log")) == nil {
			ids = append(ids, n)
		}
	}
	return ids
}

func TestLogConfig(t *testing.T) {
	base := `host = "sorrow"
state_dir = "/var/lib/convoy"
[repo]
path = "/etc/nixos"
[system]
build = ["true"]
switch = ["true"]
current = ["true"]
`
	c, err := ParseConfig([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if c.Logs.Keep != 50 || c.Logs.MaxSize != 10_000_000 || c.Logs.MaxAge.Duration != 0 {
		t.Fatalf("defaults: %+v", c.Logs)
	}
	c, err = ParseConfig([]byte(base + "[logs]\nkeep = 7\nmax_age = \"720h\"\nmax_size = \"2MiB\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Logs.Keep != 7 || c.Logs.MaxSize != 2<<20 || c.Logs.MaxAge.Duration != 720*time.Hour {
		t.Fatalf("parsed: %+v", c.Logs)
	}
	for _, tc := range []struct{ toml, want string }{
		{"keep = -1", "logs.keep -1: must be at least 1"},
		{"max_age = \"-1h\"", "logs.max_age -1h0m0s: must be positive"},
		{"max_size = \"100B\"", "logs.max_size 100 bytes: must be at least 4096"},
		{"max_size = \"10 parsecs\"", "want a whole number with a unit"},
		{"max_size = 4095", "logs.max_size 4095 bytes"},
		{"keeep = 3", `unknown key "logs.keeep"`},
	} {
		_, err := ParseConfig([]byte(base + "[logs]\n" + tc.toml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.toml, err, tc.want)
		}
	}
}
