package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/convoy-fleet/convoy/events"
)

func TestValidateHost(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"sorrow", true},
		{"torment", true},
		{"a", true},
		{"web-01", true},
		{"0day", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"Sorrow", false},
		{"-sorrow", false},
		{"sorrow-", false},
		{"sor.row", false},
		{"sor_row", false},
		{"sor row", false},
		{"*", false},
		{">", false},
		{"sorrow\n", false},
	} {
		err := events.ValidateHost(tc.name)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateHost(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, events.ErrInvalidHost) {
			t.Errorf("ValidateHost(%q) error does not wrap ErrInvalidHost: %v", tc.name, err)
		}
	}
}

func TestSubjectsRoundTrip(t *testing.T) {
	for _, k := range events.Kinds {
		var subj string
		var err error
		if k.IsRequest() {
			subj, err = events.RequestSubject("sorrow", k)
		} else {
			subj, err = events.HostSubject("sorrow", k)
		}
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		got, err := events.ParseSubject(subj)
		if err != nil {
			t.Fatalf("parse %s: %v", subj, err)
		}
		if got.Host != "sorrow" || got.Kind != k {
			t.Errorf("%s parsed as host %q kind %q", subj, got.Host, got.Kind)
		}
	}
	if s, _ := events.RequestSubject("sorrow", events.UpgradeRequested); s != "convoy.req.sorrow.upgrade" {
		t.Errorf("upgrade request subject %q", s)
	}
	if s, _ := events.HostSubject("torment", events.BuildFailed); s != "convoy.host.torment.build.failed" {
		t.Errorf("build.failed subject %q", s)
	}
	if _, err := events.HostSubject("Bad_Host", events.BuildFailed); !errors.Is(err, events.ErrInvalidHost) {
		t.Errorf("bad host accepted: %v", err)
	}
	if _, err := events.HostSubject("sorrow", events.UpgradeRequested); err == nil {
		t.Error("a request kind got a host-fact subject")
	}
}

func TestParseSubjectRefuses(t *testing.T) {
	for _, s := range []string{"", "convoy", "convoy.req", "nats.req.sorrow.upgrade", "convoy.req.Sorrow.upgrade",
		"convoy.req.sorrow", "convoy.host.sorrow.build", "convoy.host.sorrow.build.failed.extra", "convoy.other.x.y", "convoy.host..build.failed"} {
		if _, err := events.ParseSubject(s); !errors.Is(err, events.ErrBadSubject) {
			t.Errorf("ParseSubject(%q) = %v, want ErrBadSubject", s, err)
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	code := 1
	e, err := events.New(events.BuildFailed, "sorrow", "convoy/worker/sorrow", events.Fact{Commit: "abc", ExitCode: &code, Output: "error: syntax error"})
	if err != nil {
		t.Fatal(err)
	}
	e.UpgradeID = events.NewID()
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != e.ID || got.Kind() != events.BuildFailed || got.Host() != "sorrow" || got.UpgradeID != e.UpgradeID || !got.Time.Equal(e.Time) {
		t.Fatalf("round trip changed the envelope: %+v", got)
	}
	f, err := got.Fact()
	if err != nil || f.Commit != "abc" || f.ExitCode == nil || *f.ExitCode != 1 {
		t.Fatalf("round trip changed the data: %+v %v", f, err)
	}
}

func TestDecodeKeepsUnknownsIntact(t *testing.T) {
	b, err := readFile("future.json")
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.Decode(b)
	if err != nil {
		t.Fatalf("a future event must decode: %v", err)
	}
	if e.Kind().Known() {
		t.Fatalf("kind %q should be unknown", e.Kind())
	}
	if e.Schema != 7 {
		t.Fatalf("schemaversion %d, want 7", e.Schema)
	}
	out, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	var a, z map[string]any
	_ = json.Unmarshal(b, &a)
	_ = json.Unmarshal(out, &z)
	if fmt.Sprint(a) != fmt.Sprint(z) {
		t.Fatalf("re-encoding lost something:\n in  %v\n out %v", a, z)
	}
}

func TestDecodeRefusesWithReason(t *testing.T) {
	for _, tc := range []struct {
		in, why string
	}{
		{`garbage`, "not a JSON object"},
		{`[]`, "not a JSON object"},
		{`{}`, "specversion"},
		{`{"specversion":"1.0","source":"x","type":"convoy.upgrade.requested"}`, "missing id"},
		{`{"specversion":"1.0","id":"1","type":"convoy.upgrade.requested"}`, "missing source"},
		{`{"specversion":"1.0","id":"1","source":"x"}`, "missing type"},
		{`{"specversion":"0.3","id":"1","source":"x","type":"t"}`, "specversion"},
		{`{"specversion":"1.0","id":1,"source":"x","type":"t"}`, `"id" must be a string`},
		{`{"specversion":"1.0","id":"1","source":"x","type":"t","time":"yesterday"}`, "RFC 3339"},
		{`{"specversion":"1.0","id":"1","source":"x","type":"t","schemaversion":"2"}`, "schemaversion"},
		{`{"specversion":"1.0","id":"1","source":"x","type":"t","datacontenttype":"text/xml","data":"<a/>"}`, "datacontenttype"},
		{`{"specversion":"1.0","id":"1","source":"x","type":"t","data":` + `"` + strings.Repeat("x", events.MaxEventSize) + `"}`, "allowed"},
	} {
		_, err := events.Decode([]byte(tc.in))
		if !errors.Is(err, events.ErrMalformed) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Decode(%.60q) = %v, want ErrMalformed saying %q", tc.in, err, tc.why)
		}
	}
}

func TestKindParts(t *testing.T) {
	if k := events.BuildFailed; k.Stage() != "build" || k.Outcome() != "failed" || k.Type() != "convoy.build.failed" {
		t.Fatalf("%s: stage %q outcome %q type %q", k, k.Stage(), k.Outcome(), k.Type())
	}
	terminal := 0
	for _, k := range events.Kinds {
		if k.IsTerminal() {
			terminal++
		}
	}
	if terminal != 5 {
		t.Fatalf("%d terminal kinds, want 5 (succeeded, failed, skipped, rejected, aborted)", terminal)
	}
}

func TestValidateID(t *testing.T) {
	if err := events.ValidateID(events.NewID()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "abc", "01M80AN4WQM0428SFHFF6PEHH5X", "ZZZZZZZZZZZZZZZZZZZZZZZZZZ"} {
		if events.ValidateID(id) == nil {
			t.Errorf("ValidateID(%q) accepted", id)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, name := range []string{"future.json", "request.json", "fact.json"} {
		b, err := readFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"specversion":"1.0","id":"x","source":"s","type":"t","data":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := events.Decode(b)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		out, err := events.Encode(e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		again, err := events.Decode(out)
		if err != nil {
			t.Fatalf("re-encoded event does not decode: %v\n%s", err, out)
		}
		out2, _ := events.Encode(again)
		if !bytes.Equal(out, out2) {
			t.Fatalf("encoding is not stable:\n%s\n%s", out, out2)
		}
	})
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"convoy.req.sorrow.upgrade", "convoy.host.torment.build.failed", "convoy.rollout.r1.wave.started", "convoy.host.x.y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sub, err := events.ParseSubject(s)
		if err != nil {
			return
		}
		if sub.Class != events.ClassRollout && events.ValidateHost(sub.Host) != nil {
			t.Fatalf("%q parsed with invalid host %q", s, sub.Host)
		}
	})
}
