package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/convoy-fleet/convoy/workers/simfleet"
)

// hostsPerProcess is how many simulated hosts one process runs: each
// holds a connection and a lock file open, and a process may open only so
// many files. convoy bench runs more in child processes of its own.
const hostsPerProcess = 4000

// simHostsNice is the CPU priority of the simulated hosts' processes.
const simHostsNice = 10

// startSimHosts starts n simulated hosts in child processes (`convoy
// bench-hosts`) of at most hostsPerProcess each, at a lower CPU priority
// (nice 10): they stand for machines of their own and must not take the
// server's CPU on a small bench machine. onJoin is called as each process
// reports its hosts joined.
func startSimHosts(ctx context.Context, url, dir string, n, join int, onJoin func(joined int)) (*hostProcs, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p := &hostProcs{}
	for first := 0; first < n; first += hostsPerProcess {
		count := min(hostsPerProcess, n-first)
		for i := first + 1; i <= first+count; i++ {
			p.names = append(p.names, simfleet.Name(i))
		}
		cmd := exec.Command(self, "bench-hosts", "--nats", url, "--first", strconv.Itoa(first), "--count", strconv.Itoa(count),
			"--dir", filepath.Join(dir, strconv.Itoa(first)), "--join-concurrency", strconv.Itoa(join))
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			_ = p.Close(ctx)
			return nil, fmt.Errorf("bench-hosts: %w", err)
		}
		p.cmds = append(p.cmds, cmd)
		p.outs = append(p.outs, out)
		_ = syscall.Setpriority(syscall.PRIO_PROCESS, cmd.Process.Pid, simHostsNice)
	}
	joined := 0
	for i, out := range p.outs {
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || line != "joined\n" {
			_ = p.Close(ctx)
			return nil, fmt.Errorf("bench-hosts process %d of %d did not report its hosts joined (%q, %v)", i+1, len(p.outs), line, err)
		}
		joined += min(hostsPerProcess, n-i*hostsPerProcess)
		onJoin(joined)
	}
	return p, nil
}

// hostProcs are simulated hosts run by child processes.
type hostProcs struct {
	names []string
	cmds  []*exec.Cmd
	outs  []io.ReadCloser
}

// Hosts returns the names of the simulated hosts.
func (p *hostProcs) Hosts() []string { return p.names }

// Close asks every child to stop its hosts and waits for them.
func (p *hostProcs) Close(ctx context.Context) error {
	var errs []error
	for _, c := range p.cmds {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range p.cmds {
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("bench-hosts pid %d: %w", c.Process.Pid, err))
			}
		case <-ctx.Done():
			_ = c.Process.Kill()
			errs = append(errs, fmt.Errorf("bench-hosts pid %d: killed: %w", c.Process.Pid, ctx.Err()))
		}
	}
	return errors.Join(errs...)
}

// benchHostsCmd runs a share of convoy bench's simulated hosts: it prints
// "joined" once every one has published worker.started, and stops them
// at SIGTERM. Only convoy bench runs it.
type benchHostsCmd struct{ env *env }

func (c *benchHostsCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("bench-hosts", "bench-hosts --nats URL --first N --count M --dir DIR (run by convoy bench)",
		example{"hosts h04001 to h08000, as convoy bench starts them", "convoy bench-hosts --nats nats://127.0.0.1:4222 --first 4000 --count 4000 --dir /tmp/hosts/4000"})
	first := fs.Int("first", 0, "the number before the first host's")
	count := fs.Int("count", 0, "how many hosts")
	dir := fs.String("dir", "", "the hosts' state dirs")
	join := fs.Int("join-concurrency", 64, "how many hosts join at once")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *count < 1 || *dir == "" || c.env.nats == "" {
		return usageErr(errors.New("want --nats URL --count N --dir DIR"))
	}
	if err := raiseOpenFiles(*count); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(c.env.stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	sim, err := simfleet.Start(sctx, simfleet.Options{URL: c.env.nats, Hosts: *count, First: *first, Dir: *dir, Concurrency: *join, Logger: log, Version: version})
	if err != nil {
		return err
	}
	fmt.Fprintln(c.env.stdout, "joined")
	<-ctx.Done()
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer ccancel()
	return sim.Close(cctx)
}
