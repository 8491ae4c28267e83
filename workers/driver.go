package workers

import (
	"context"
	"errors"
	"fmt"
)

// Driver builds and activates a host's system. It is the worker's boundary
// to the system manager, as comin's Executor abstracts how Nix runs on the
// host: the pipeline decides when and records what happened; the driver
// decides how. Every process a driver starts goes through the Exec it is
// given, so timeouts, logging and the environment are the pipeline's.
type Driver interface {
	// Build builds the checked-out configuration and returns its result
	// (a store path for NixOS). It must not change what the host runs.
	Build(ctx context.Context, run Exec) (result string, cmd CmdResult, err error)
	// Switch makes result the running system and returns its generation
	// (0 where the driver has none).
	Switch(ctx context.Context, run Exec, result string) (generation int, cmd CmdResult, err error)
	// Rollback returns the host to previous, the Current() before a
	// Switch, and returns the generation it now runs.
	Rollback(ctx context.Context, run Exec, previous string) (generation int, cmd CmdResult, err error)
	// Current returns what the host runs now ("" if nothing yet).
	Current(ctx context.Context, run Exec) (string, error)
}

// commandDriver runs the argv configured under [system] for each step.
type commandDriver struct {
	dir                   string
	build, swtch, current []string
}

func (d *commandDriver) Build(ctx context.Context, run Exec) (string, CmdResult, error) {
	res := run(ctx, d.dir, d.build)
	if res.Err != nil {
		return "", res, res.Err
	}
	if res.LastLine == "" {
		return "", res, errors.New("build printed no result: its last line of stdout must name what to switch to")
	}
	return res.LastLine, res, nil
}

func (d *commandDriver) Switch(ctx context.Context, run Exec, result string) (int, CmdResult, error) {
	res := run(ctx, d.dir, d.swtch, "CONVOY_RESULT="+result)
	return 0, res, res.Err
}

func (d *commandDriver) Rollback(ctx context.Context, run Exec, previous string) (int, CmdResult, error) {
	if previous == "" {
		return 0, CmdResult{}, errors.New("nothing was deployed before this switch, so there is nothing to return to")
	}
	return d.Switch(ctx, run, previous)
}

func (d *commandDriver) Current(ctx context.Context, run Exec) (string, error) {
	res := run(ctx, d.dir, d.current)
	if res.Err != nil {
		return "", fmt.Errorf("current: %w", res.Err)
	}
	return res.LastLine, nil
}

// NewDriver returns the driver the config selects.
func NewDriver(c *Config) (Driver, error) {
	switch c.System.Driver {
	case DriverCommand:
		return &commandDriver{dir: c.Repo.Path, build: c.System.Build, swtch: c.System.Switch, current: c.System.Current}, nil
	case DriverNixOS:
		return newNixOSDriver(c), nil
	}
	return nil, fmt.Errorf("system.driver %q: want command or nixos", c.System.Driver)
}
