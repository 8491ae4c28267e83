package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// childServer is a `convoy server` that convoy bench runs as a child
// process of its own binary, so that the server's memory is its own to
// read and the bench's hosts are not counted in it.
type childServer struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{} // closed when the process has exited
	err  error         // Wait's, once done is closed

	mu     sync.Mutex
	output []string // its last lines of stderr, for an error
}

// startChildServer starts `convoy server` on dataDir and a free loopback
// port, and returns once it is provisioned and listening. Its log lines
// (warnings and errors) are copied to logTo.
func startChildServer(ctx context.Context, dataDir string, logTo io.Writer) (*childServer, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("convoy server: %w", err)
	}
	for attempt := 1; ; attempt++ {
		s, err := tryChildServer(ctx, self, dataDir, logTo)
		if err == nil || attempt == 3 || !strings.Contains(err.Error(), "in use") {
			return s, err
		}
	}
}

func tryChildServer(ctx context.Context, self, dataDir string, logTo io.Writer) (*childServer, error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, fmt.Errorf("convoy server: %w", err)
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &childServer{url: "nats://" + listen, done: make(chan struct{})}
	s.cmd = exec.Command(self, "server", "--data", dataDir, "--listen", listen, "--log-level", "warn")
	// Should this process die without stopping it, the kernel does.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("convoy server: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		once := sync.Once{}
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "convoy server listening on") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	var copied sync.WaitGroup
	copied.Go(func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			s.mu.Lock()
			s.output = append(s.output, sc.Text())
			if len(s.output) > 20 {
				s.output = s.output[1:]
			}
			s.mu.Unlock()
			fmt.Fprintf(logTo, "convoy server (child): %s\n", sc.Text())
		}
	})
	go func() {
		copied.Wait() // Wait closes the pipes: read them out first
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	select {
	case <-ready:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("convoy server on %s exited (%v): %s", listen, s.err, s.lastOutput())
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	case <-time.After(time.Minute):
		s.stop()
		return nil, fmt.Errorf("convoy server on %s: not listening after a minute: %s", listen, s.lastOutput())
	}
}

func (s *childServer) lastOutput() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.output, "\n")
}

func (s *childServer) pid() int { return s.cmd.Process.Pid }

// stop ends the server as systemd would, SIGTERM and then SIGKILL after
// 15 seconds, and waits until it has exited.
func (s *childServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// rssMiB reads a process's resident memory (VmRSS) from /proc.
func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("VmRSS %q: %w", v, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// raiseOpenFiles makes room for the simulated hosts, which each hold a
// connection and their state dir's lock open. The child server inherits
// the limit. Raising the hard limit needs CAP_SYS_RESOURCE.
func raiseOpenFiles(hosts int) error {
	need := uint64(2*hosts + 512)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= need {
		return nil
	}
	lim.Cur = need
	lim.Max = max(lim.Max, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return usageErr(fmt.Errorf("%d simulated hosts need about %d open files (each holds a connection and a lock), more than this process may open (%v): raise the limit (ulimit -n) or bench fewer --hosts", hosts, need, err))
	}
	return nil
}
