package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/convoy-fleet/convoy/bus"
)

type credsCmd struct{ env *env }

// Run issues a credential: an nkey pair whose public key goes into the
// server's users file (a running server applies it within seconds) and
// whose seed is written to -o, for the client alone.
func (c *credsCmd) Run(_ context.Context, args []string) error {
	fs := c.env.flags("creds", "creds add-host HOST|add-operator NAME|add-auditor NAME -o FILE [--data DIR]",
		example{"a credential for sorrow's worker, on the bus machine", "convoy creds add-host sorrow -o /root/sorrow.nk --data /var/lib/convoy/bus"},
		example{"a credential for a person who requests upgrades", "convoy creds add-operator alice -o alice.nk --data /var/lib/convoy/bus"},
		example{"a read-only credential for a dashboard", "convoy creds add-auditor grafana -o grafana.nk --data /var/lib/convoy/bus"},
	)
	out := fs.String("o", "", "file to write the credential (nkey seed) to; it must not exist")
	data := fs.String("data", defaultDataDir(), "the server's data dir (its users file is DIR/users.json)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	roles := map[string]string{"add-host": bus.RoleHost, "add-operator": bus.RoleOperator, "add-auditor": bus.RoleAuditor}
	if len(pos) != 2 || roles[pos[0]] == "" {
		return usageErr(errors.New("want: convoy creds add-host HOST -o FILE (or add-operator NAME, add-auditor NAME)"))
	}
	if *out == "" {
		return usageErr(errors.New("-o FILE is required: where to write the credential"))
	}
	u, seed, err := bus.NewUser(roles[pos[0]], pos[1])
	if err != nil {
		return usageErr(err)
	}
	if abs, err := filepath.Abs(*out); err == nil {
		*out = abs
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return usageErr(fmt.Errorf("-o %s: %w (convoy never overwrites a credential)", *out, err))
	}
	if _, err := f.Write(append(seed, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	users := filepath.Join(*data, bus.UsersFile)
	if err := bus.AddUser(users, u); err != nil {
		os.Remove(*out)
		return usageErr(err)
	}
	fmt.Fprintf(c.env.stdout, "%s credential %q: public key %s\nwrote the secret to %s (mode 0600); added the public key to %s\n", u.Role, u.Name, u.NKey, *out, users)
	switch u.Role {
	case bus.RoleHost:
		fmt.Fprintf(c.env.stdout, "give it to %s's worker: nkey = %q in its config\n", u.Host, *out)
	default:
		fmt.Fprintf(c.env.stdout, "use it with --nkey %s (or CONVOY_NKEY), or with the nats CLI: nats --nkey %s\n", *out, *out)
	}
	return nil
}
