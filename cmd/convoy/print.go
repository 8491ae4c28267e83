package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

func dur(ms int64) string {
	if ms <= 0 {
		return ""
	}
	d := time.Duration(ms) * time.Millisecond
	if d < time.Second {
		return d.String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// details renders what a reader needs from a fact on one line.
func details(st bus.Stored) string {
	if st.Err != nil {
		return "undecodable: " + st.Err.Error()
	}
	e := st.Event
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	if e.Kind() == events.UpgradeRequested {
		var r events.UpgradeRequest
		_ = e.DecodeData(&r)
		add("rev", r.Rev)
		add("by", r.RequestedBy)
		return strings.Join(parts, " ")
	}
	if e.Kind().Stage() == events.ClassRollout {
		return rolloutDetails(e)
	}
	f, err := e.Fact()
	if err != nil {
		return err.Error()
	}
	if f.OldCommit != "" || f.NewCommit != "" {
		add("commit", short(f.OldCommit)+"→"+short(f.NewCommit))
		if f.SecretsOldCommit != f.SecretsNewCommit {
			add("secrets", short(f.SecretsOldCommit)+"→"+short(f.SecretsNewCommit))
		}
	} else {
		add("commit", short(f.Commit))
	}
	add("rev", f.Rev)
	if f.Result != "" {
		add("result", filepath.Base(f.Result))
	}
	if f.Generation != 0 {
		add("generation", fmt.Sprint(f.Generation))
	}
	add("action", f.Action)
	add("stage", f.Stage)
	if f.ExitCode != nil && *f.ExitCode != 0 {
		add("exit", fmt.Sprint(*f.ExitCode))
	}
	add("version", f.Version)
	s := strings.Join(parts, " ")
	if f.Reason != "" {
		s += "  " + f.Reason
	}
	if k := e.Kind(); k.Outcome() == "failed" && f.Output != "" {
		s += "\n" + indent(lastLines(f.Output, 4), "      │ ")
	}
	return s
}

// rolloutDetails renders a rollout event's data on one line.
func rolloutDetails(e events.Event) string {
	var parts []string
	switch e.Kind() {
	case events.RolloutRequested:
		var p events.RolloutPlan
		_ = e.DecodeData(&p)
		parts = append(parts, "rev="+short(p.Rev))
		for i, w := range p.Waves {
			parts = append(parts, fmt.Sprintf("wave%d=%s:%d", i+1, w.Spec, len(w.Hosts)))
		}
		if p.BakeMS > 0 {
			parts = append(parts, "bake="+p.Bake().String())
		}
		parts = append(parts, fmt.Sprintf("max-failures=%d", p.MaxFailures), "by="+p.RequestedBy)
	default:
		var f events.RolloutFact
		_ = e.DecodeData(&f)
		if f.Wave > 0 {
			parts = append(parts, fmt.Sprintf("wave=%d", f.Wave))
		}
		if e.UpgradeID != "" {
			parts = append(parts, "upgrade="+e.UpgradeID)
		}
		if len(f.Hosts) > 0 {
			parts = append(parts, "hosts="+strings.Join(f.Hosts, ","))
		}
		if len(f.Failed) > 0 {
			parts = append(parts, fmt.Sprintf("failed=%d", len(f.Failed)))
		}
		if f.Reason != "" {
			parts = append(parts, " "+f.Reason)
		}
	}
	return strings.Join(parts, " ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s, p string) string { return p + strings.ReplaceAll(s, "\n", "\n"+p) }

// printFact writes one event as a human-readable line.
func printFact(w io.Writer, st bus.Stored) {
	if st.Err != nil {
		fmt.Fprintf(w, "%6d  %-22s  %s\n", st.Seq, st.Subject, details(st))
		return
	}
	e := st.Event
	kind := string(e.Kind())
	if kind == "" {
		kind = e.Type
	}
	f, _ := e.Fact()
	fmt.Fprintf(w, "%s  %-10s %-20s %7s  %s\n", e.Time.Local().Format("15:04:05.000"), e.Host(), kind, dur(f.DurationMS), details(st))
}

// jsonLine is the --json form of a stored event.
type jsonLine struct {
	Seq     uint64          `json:"seq"`
	Subject string          `json:"subject"`
	Event   json.RawMessage `json:"event,omitempty"`
	Error   string          `json:"error,omitempty"`
}

func printJSON(w io.Writer, st bus.Stored) error {
	l := jsonLine{Seq: st.Seq, Subject: st.Subject}
	if st.Err != nil {
		l.Error = st.Err.Error()
	} else {
		b, err := events.Encode(st.Event)
		if err != nil {
			return err
		}
		l.Event = b
	}
	return json.NewEncoder(w).Encode(l)
}
