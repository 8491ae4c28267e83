package workers

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

func TestAdmit(t *testing.T) {
	req := func(k events.Kind, host string, data any) bus.Stored {
		e, err := events.New(k, host, "test", data)
		if err != nil {
			t.Fatal(err)
		}
		e.UpgradeID = events.NewID()
		return bus.Stored{Seq: 7, Subject: "convoy.req." + host + ".upgrade", Event: e}
	}
	upgrade := req(events.UpgradeRequested, "sorrow", events.UpgradeRequest{Rev: "main"})
	badID := upgrade
	badID.Event.UpgradeID = "../../etc"
	badData := upgrade
	badData.Event.Data = []byte(`{"rev": 42}`)
	unknown := upgrade
	unknown.Event.Type = events.TypePrefix + "reboot.requested"
	for _, tc := range []struct {
		name        string
		st          bus.Stored
		done, newer bool
		want        verdict
		reason      string
	}{
		{"an upgrade", upgrade, false, false, proceed, ""},
		{"a pin", req(events.PinRequested, "sorrow", events.PinRequest{}), false, false, proceed, ""},
		{"malformed", bus.Stored{Seq: 7, Subject: "convoy.req.sorrow.upgrade", Err: errors.New("not JSON")}, false, false, reject, "malformed request at stream sequence 7"},
		{"an id that is not a ULID", badID, false, false, reject, `upgrade id "../../etc", which is not a ULID`},
		{"already ended", upgrade, true, false, ignore, "already handled"},
		{"already ended, though a newer one waits", upgrade, true, true, ignore, "already handled"},
		{"for another host", req(events.UpgradeRequested, "torment", events.UpgradeRequest{}), false, false, reject, `request is for host "torment"`},
		{"data that does not decode", badData, false, false, reject, "rev"},
		{"superseded", upgrade, false, true, skip, events.ReasonSuperseded},
		{"an unknown request type", unknown, false, false, reject, "unknown request type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, r := admit("sorrow", tc.st, tc.done, tc.newer)
			if d.verdict != tc.want || !strings.Contains(d.reason, tc.reason) {
				t.Fatalf("admit: %+v, want verdict %d with %q", d, tc.want, tc.reason)
			}
			if tc.name == "an upgrade" && r.Rev != "main" {
				t.Fatalf("decoded request %+v", r)
			}
		})
	}
}

func TestJudge(t *testing.T) {
	const a, b, c = "aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb", "cccccccccccccccccccc"
	base := target{commit: b, secrets: "s2", head: a, deployed: a, deployedSecrets: "s1"}
	with := func(f func(*target)) target { t := base; f(&t); return t }
	for _, tc := range []struct {
		name   string
		t      target
		want   verdict
		reason string
	}{
		{"a newer commit", base, proceed, ""},
		{"the first upgrade", with(func(t *target) { t.deployed, t.deployedSecrets = "", "" }), proceed, ""},
		{"an unknown revision", with(func(t *target) { t.err = fmt.Errorf("%w %q", ErrBadRev, "nope") }), reject, "unknown revision"},
		{"a commit off the branch", with(func(t *target) { t.err = fmt.Errorf("%w main", ErrNotOnBranch) }), reject, "not a commit on the tracked branch"},
		{"an unsigned commit", with(func(t *target) { t.err = fmt.Errorf("%w: no signature", ErrUnsigned) }), reject, "signature not verified"},
		{"the quarantined commit", with(func(t *target) { t.quarantined = b }), reject, "failed its boot checks"},
		{"already deployed", with(func(t *target) { t.commit, t.secrets = a, "s1" }), skip, events.ReasonAlreadyCurrent},
		{"deployed, but new secrets", with(func(t *target) { t.commit = a }), proceed, ""},
		{"deployed, but the checkout moved", with(func(t *target) { t.commit, t.secrets, t.head = a, "s1", c }), proceed, ""},
		{"a downgrade the config forbids", with(func(t *target) { t.older, t.requestAllowsDowngrade = true, true }), reject, "set upgrade.allow_downgrade"},
		{"a downgrade not requested", with(func(t *target) { t.older, t.configAllowsDowngrade = true, true }), reject, "request it with --allow-downgrade"},
		{"a downgrade both allow", with(func(t *target) { t.older, t.configAllowsDowngrade, t.requestAllowsDowngrade = true, true, true }), proceed, ""},
		{"a rollout's rollback the config allows", with(func(t *target) {
			t.older, t.rolloutRollback, t.configAllowsRolloutRollback = true, "01JF3Q0ZC1S9V8XK3T2M4N5P6R", true
		}), proceed, ""},
		{"a rollout's rollback the config forbids", with(func(t *target) { t.older, t.rolloutRollback = true, "01JF3Q0ZC1S9V8XK3T2M4N5P6R" }), reject, "set upgrade.allow_rollout_rollback"},
		{"a rollout's rollback: allow_downgrade alone does not do", with(func(t *target) {
			t.older, t.rolloutRollback, t.configAllowsDowngrade = true, "01JF3Q0ZC1S9V8XK3T2M4N5P6R", true
		}), reject, "upgrade.allow_rollout_rollback"},
		{"a plain downgrade: allow_rollout_rollback does not do", with(func(t *target) { t.older, t.configAllowsRolloutRollback = true, true }), reject, "set upgrade.allow_downgrade"},
		{"a rollout's rollback that is no downgrade", with(func(t *target) { t.rolloutRollback = "01JF3Q0ZC1S9V8XK3T2M4N5P6R" }), proceed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := judge(tc.t)
			if d.verdict != tc.want || !strings.Contains(d.reason, tc.reason) {
				t.Fatalf("judge: %+v, want verdict %d with %q", d, tc.want, tc.reason)
			}
			if tc.want == skip && d.kind() != events.UpgradeSkipped || tc.want == reject && d.kind() != events.UpgradeRejected {
				t.Fatalf("kind %s for verdict %d", d.kind(), d.verdict)
			}
		})
	}
}

func TestIsRevRejection(t *testing.T) {
	for _, err := range []error{ErrBadRev, ErrNotOnBranch, ErrUnsigned} {
		if !isRevRejection(fmt.Errorf("x: %w", err)) {
			t.Errorf("%v is not a rejection", err)
		}
	}
	if isRevRejection(errors.New("git fetch: connection refused")) || isRevRejection(nil) {
		t.Error("a host failure counted as the request's fault")
	}
}
