package e2e

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
)

// burstLedger records what the publishers of a burst sent and what the
// bus acknowledged, by id: an event id for facts, host/upgrade id for
// upgrade requests.
type burstLedger struct {
	mu        sync.Mutex
	acked     map[string]bool // id → acknowledged
	ackedLate map[string]bool // acknowledged only by a retry after an error
	retries   int
	acks      atomic.Int64
}

func (l *burstLedger) attempt(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.acked[id]; !ok {
		l.acked[id] = false
	}
}

func (l *burstLedger) ack(id string, retried bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acked[id] = true
	if retried {
		l.ackedLate[id] = true
	}
	l.acks.Add(1)
}

func (l *burstLedger) retry() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.retries++
}

// SIGKILL of `convoy server` in the middle of a burst of appends from
// several clients: after a restart on the same data dir and port, every
// append that was acknowledged is in the stream, stored exactly once, and
// publishers retrying an unacknowledged event by its id (as the worker's
// outbox does) store it once too.
func TestServerKill9KeepsAcknowledgedEvents(t *testing.T) {
	t.Parallel()
	start := time.Now()
	r := baseRig(t)
	r.startServerAnyPort()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	l := &burstLedger{acked: map[string]bool{}, ackedLate: map[string]bool{}}
	const publishers = 6
	stop := make(chan struct{})
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	var wg sync.WaitGroup
	for g := range publishers {
		conn, err := bus.Connect(ctx, bus.ConnectConfig{URL: r.url, Name: "burst-" + strconv.Itoa(g)})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		host := fmt.Sprintf("burst-%d", g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stopped(); i++ {
				// One event, appended until acknowledged (or the burst
				// ends): the same id each time.
				var id string
				var send func(context.Context) error
				if g%2 == 0 {
					e, err := events.New(events.WorkerStarted, host, "convoy/test/burst", events.Fact{Version: strconv.Itoa(i)})
					if err != nil {
						t.Error(err)
						return
					}
					subj, _ := events.HostSubject(host, events.WorkerStarted)
					id = "fact/" + e.ID
					send = func(ctx context.Context) error { _, err := conn.Append(ctx, subj, e, nil); return err }
				} else {
					uid := events.NewID()
					id = "req/" + host + "/" + uid
					send = func(ctx context.Context) error {
						_, _, err := producers.Upgrade(ctx, conn, producers.Request{Hosts: []string{host}, ID: uid, By: "burst"})
						return err
					}
				}
				l.attempt(id)
				for try := 0; ; try++ {
					actx, acancel := context.WithTimeout(ctx, 2*time.Second)
					err := send(actx)
					acancel()
					if err == nil {
						l.ack(id, try > 0)
						break
					}
					if stopped() || ctx.Err() != nil {
						return
					}
					l.retry()
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}

	const burst = 150
	eventually(t, 60*time.Second, fmt.Sprintf("%d acknowledged appends", burst), func() bool { return l.acks.Load() >= burst })
	atKill := l.acks.Load()
	if code := r.stopServer(syscall.SIGKILL); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("server exit %d after SIGKILL", code)
	}
	t.Logf("killed the server after %d acknowledged appends", atKill)
	time.Sleep(300 * time.Millisecond) // the publishers meet a dead bus
	r.startServer()
	eventually(t, 60*time.Second, "the burst to go on after the restart", func() bool { return l.acks.Load() >= atKill+burst })
	close(stop)
	wg.Wait()

	// Count every stored event by id.
	conn, err := bus.Connect(ctx, bus.ConnectConfig{URL: r.url, Name: "burst-audit"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stored := map[string]int{}
	err = conn.Replay(ctx, []string{events.AllSubjects}, bus.From{}, func(st bus.Stored) error {
		if st.Err != nil {
			return fmt.Errorf("seq %d on %s does not decode: %w", st.Seq, st.Subject, st.Err)
		}
		switch e := st.Event; e.Kind() {
		case events.WorkerStarted:
			if st.MsgID != e.ID {
				return fmt.Errorf("seq %d: Nats-Msg-Id %q, event id %s", st.Seq, st.MsgID, e.ID)
			}
			stored["fact/"+e.ID]++
		case events.UpgradeRequested:
			stored["req/"+e.Host()+"/"+e.UpgradeID]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	var acked, unacked, lost, twice int
	for id, ok := range l.acked {
		n := stored[id]
		switch {
		case ok && n == 0:
			lost++
			if lost <= 10 {
				t.Errorf("%s was acknowledged but is not in the stream after the restart", id)
			}
		case n > 1:
			twice++
			if twice <= 10 {
				t.Errorf("%s is stored %d times", id, n)
			}
		}
		if ok {
			acked++
		} else {
			unacked++
		}
	}
	for id := range stored {
		if _, ok := l.acked[id]; !ok {
			t.Errorf("%s is in the stream but was never sent", id)
		}
	}
	t.Logf("%d appends acknowledged (%d before the SIGKILL, %d only on a retry by id), %d left unacknowledged at the end, %d retries; %d lost, %d stored twice; %s",
		acked, atKill, len(l.ackedLate), unacked, l.retries, lost, twice, time.Since(start).Round(time.Millisecond))
	if len(l.ackedLate) == 0 {
		t.Logf("note: no append needed a retry; the kill fell between appends")
	}
}
