package workers

import (
	"context"
	"errors"
)

// nixosDriver builds and switches nixosConfigurations.<host>. It arrives
// with the "NixOS on real Nix" work; until then it refuses clearly.
type nixosDriver struct{ cfg *Config }

func newNixOSDriver(c *Config) *nixosDriver { return &nixosDriver{cfg: c} }

var errNixOSPending = errors.New("system.driver nixos is not available in this build yet; use driver = \"command\"")

func (d *nixosDriver) Build(context.Context, Exec) (string, CmdResult, error) {
	return "", CmdResult{}, errNixOSPending
}
func (d *nixosDriver) Switch(context.Context, Exec, string) (int, CmdResult, error) {
	return 0, CmdResult{}, errNixOSPending
}
func (d *nixosDriver) Rollback(context.Context, Exec, string) (int, CmdResult, error) {
	return 0, CmdResult{}, errNixOSPending
}
func (d *nixosDriver) Current(context.Context, Exec) (string, error) { return "", errNixOSPending }
