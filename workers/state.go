package workers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/convoy-fleet/convoy/events"
)

// localState is what the worker keeps on the host's disk, under state_dir.
// It is written with write-to-temp, fsync and rename, so a crash leaves the
// old or the new version, never a torn one.
type localState struct {
	// Deployed is the config commit the last successful upgrade deployed.
	Deployed string `json:"deployed,omitempty"`
	// DeployedSecrets is the secrets commit deployed with it.
	DeployedSecrets string `json:"deployed_secrets,omitempty"`
	// Quarantined is a commit whose system failed its boot checks until
	// the host fell back to golden: it is not deployed again.
	Quarantined string `json:"quarantined,omitempty"`
	// Recent holds the ids of the last upgrades that ended, newest last.
	Recent []string `json:"recent,omitempty"`
	// InFlight is set from just before upgrade.started until the terminal
	// fact is stored; after a crash it says how to put the host back.
	InFlight *inFlight `json:"in_flight,omitempty"`
	// Position is the stream sequence of the last request that ended:
	// the worker reads its requests from there on.
	Position uint64 `json:"position,omitempty"`
	// Validated lists the system results that passed a boot check, newest
	// last: the only ones the golden pin may move to.
	Validated []string `json:"validated,omitempty"`
	// BootFailures counts consecutive failed boot checks of BootFailed.
	BootFailures int    `json:"boot_failures,omitempty"`
	BootFailed   string `json:"boot_failed,omitempty"`
	// PendingReboot is a reboot owed to the host, until the boot check
	// after it (see rebootIfDue).
	PendingReboot *pendingReboot `json:"pending_reboot,omitempty"`
}

func (s *localState) validated(result string) bool {
	return result != "" && slices.Contains(s.Validated, result)
}

func (s *localState) markValidated(result string) {
	if s.validated(result) {
		return
	}
	s.Validated = append(s.Validated, result)
	if len(s.Validated) > 32 {
		s.Validated = s.Validated[len(s.Validated)-32:]
	}
}

type inFlight struct {
	UpgradeID  string `json:"upgrade_id"`
	OldCommit  string `json:"old_commit,omitempty"`
	OldSecrets string `json:"old_secrets,omitempty"`
	// RequestSeq is where the upgrade's request is stored.
	RequestSeq uint64 `json:"request_seq,omitempty"`
	// Moved is set just before the checkouts are reset to the target:
	// only then does recovery reset them back.
	Moved bool `json:"moved,omitempty"`
	// Switching is set before the switch starts; Previous is what ran
	// before it.
	Switching bool   `json:"switching,omitempty"`
	Previous  string `json:"previous,omitempty"`
}

const recentMax = 256

func (s *localState) done(id string) bool {
	for _, r := range s.Recent {
		if r == id {
			return true
		}
	}
	return false
}

func (s *localState) finish(id string) {
	s.InFlight = nil
	if s.done(id) {
		return
	}
	s.Recent = append(s.Recent, id)
	if len(s.Recent) > recentMax {
		s.Recent = s.Recent[len(s.Recent)-recentMax:]
	}
}

// ownLikeParent gives path the owner of its directory when running as
// root: boot-check runs as root, and the files it writes in the state dir
// must stay usable by the worker's own (non-root) user.
func ownLikeParent(path string) {
	if os.Geteuid() != 0 {
		return
	}
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		_ = os.Lchown(path, int(st.Uid), int(st.Gid))
	}
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	ownLikeParent(tmp)
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// DamagedStateError is returned by loadState when state.json cannot be
// read as a state (truncated, garbled, of the wrong shape). The worker
// rebuilds the state from the host's facts on the bus; it returns the
// error only when the bus is unreachable too.
type DamagedStateError struct {
	Path string
	Err  error
}

func (e *DamagedStateError) Error() string {
	return fmt.Sprintf("state %s is corrupt (%v); move it aside to start afresh", e.Path, e.Err)
}

func (e *DamagedStateError) Unwrap() error { return e.Err }

// loadState reads the state at path. A missing file is an empty state
// and missing true; a damaged one a *DamagedStateError.
func loadState(path string) (s *localState, missing bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &localState{}, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("state %s: %w", path, err)
	}
	s = &localState{}
	if err := decodeState(b, s); err != nil {
		return nil, false, &DamagedStateError{Path: path, Err: err}
	}
	return s, false, nil
}

// decodeState parses b into s and checks its shape: a JSON object whose
// commits, ids and counts look like what the worker writes.
func decodeState(b []byte, s *localState) error {
	if t := bytes.TrimSpace(b); len(t) == 0 || t[0] != '{' {
		return errors.New("not a JSON object")
	}
	if err := json.Unmarshal(b, s); err != nil {
		return err
	}
	var errs []error
	for _, c := range []struct{ name, v string }{{"deployed", s.Deployed}, {"deployed_secrets", s.DeployedSecrets}, {"quarantined", s.Quarantined}} {
		if c.v != "" && !isCommit(c.v) {
			errs = append(errs, fmt.Errorf("%s %q is not a commit", c.name, c.v))
		}
	}
	for _, id := range s.Recent {
		if err := events.ValidateID(id); err != nil {
			errs = append(errs, fmt.Errorf("recent: %w", err))
			break
		}
	}
	if s.InFlight != nil {
		if err := events.ValidateID(s.InFlight.UpgradeID); err != nil {
			errs = append(errs, fmt.Errorf("in_flight: %w", err))
		}
	}
	if s.BootFailures < 0 {
		errs = append(errs, fmt.Errorf("boot_failures %d is negative", s.BootFailures))
	}
	return errors.Join(errs...)
}

// isCommit reports whether c is a full git object name (SHA-1 or SHA-256).
func isCommit(c string) bool {
	if len(c) != 40 && len(c) != 64 {
		return false
	}
	for _, r := range c {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

func saveState(path string, s *localState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, b); err != nil {
		return fmt.Errorf("save state %s: %w", path, err)
	}
	return nil
}

// lockDir takes an exclusive lock on dir/lock for the life of the process,
// so two workers cannot share one state dir.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	ownLikeParent(f.Name())
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("state dir %s is locked by another convoy worker (%w); run one worker per host", dir, err)
	}
	return f, nil
}
