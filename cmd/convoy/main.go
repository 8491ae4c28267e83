// Command convoy keeps a fleet of NixOS hosts up to date by itself, safely:
// an event-sourced upgrade pipeline over NATS JetStream.
//
// Run `convoy help` for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// Exit codes, a stable contract for scripts.
const (
	exitOK          = 0
	exitFailed      = 1 // an upgrade failed or was rejected
	exitUsage       = 2 // bad usage or input
	exitTimeout     = 3 // timed out waiting
	exitUnreachable = 4 // bus unreachable
)

// command is one subcommand: it owns its flags and runs to completion.
type command interface {
	Run(ctx context.Context, args []string) error
}

// env is what every command gets from main: where to write and which bus.
type env struct {
	stdout, stderr io.Writer
	nats           string // --nats, else CONVOY_NATS_URL, else the default
	nkey           string // --nkey: credential seed file (env CONVOY_NKEY)
	tlsCA          string // --tls-ca: CA of the server's certificate (env CONVOY_TLS_CA)
	// given records the bus flags given on the command line (before or
	// after the command), which win over a worker config's settings.
	given map[string]bool
}

func commands(e *env) map[string]command {
	return map[string]command{
		"server":      &serverCmd{env: e},
		"worker":      &workerCmd{env: e},
		"upgrade":     &upgradeCmd{env: e},
		"status":      &statusCmd{env: e},
		"history":     &historyCmd{env: e},
		"watch":       &watchCmd{env: e},
		"projections": &projectionsCmd{env: e},
		"golden":      &goldenCmd{env: e},
		"boot-check":  &bootCheckCmd{env: e},
		"creds":       &credsCmd{env: e},
		"projector":   &projectorCmd{env: e},
		"controller":  &controllerCmd{env: e},
		"alerts":      &alertsCmd{env: e},
		"schedule":    &scheduleCmd{env: e},
		"git-watch":   &gitWatchCmd{env: e},
		"rollout":     &rolloutCmd{env: e},
		"demo":        &demoCmd{env: e},
		"bench-hosts": &benchHostsCmd{env: e}, // convoy bench's own, not in the usage
		"bench":       &benchCmd{env: e},
		"version":     &versionCmd{env: e},
	}
}

const usage = `convoy keeps a fleet of NixOS hosts up to date by itself, safely.

Usage: convoy [--nats URL] [--nkey FILE] [--tls-ca FILE] COMMAND [ARGS]

Commands:
  server       run the embedded NATS JetStream bus and the projections
  worker       run the upgrade worker of one host (--config FILE)
  upgrade      request upgrades: upgrade HOST...|--all [--rev R] [--id ULID] [--wait]
  status       show fleet status: status [HOST] [--json]
  history      show the audit trail: history [HOST] [--upgrade ID] [--type KIND] [--since T] [--json]
  watch        follow events live: watch [HOST] [--json]
  projections  projections rebuild: recompute fleet status from the stream
  golden       golden show|pin HOST: the pinned fallback generation
  boot-check   run once after boot (--config FILE): validate, pin golden, fall back
  creds        creds add-host HOST|add-operator NAME|add-auditor NAME -o FILE: issue a credential
  projector    provision an external NATS (--nats) and keep the projections there
  controller   provision an external NATS (--nats) and run the rollouts there
  alerts       send alerts (webhook, ntfy, Matrix, command): alerts --config FILE
  schedule     request upgrades on a schedule: --every 1h | --daily 04:00 [HOST...]
  git-watch    upgrade to each new commit of a branch: --remote URL [--listen ADDR] --all|--tag T|HOST...
  rollout      staged rollouts: rollout start --rev R --wave tag=canary --wave 25% --wave all [--bake 10m] | status [ID] | abort ID
  demo         run a whole fleet in a temp dir and show two upgrades
  bench        measure convoy against a fresh server: simulated hosts, one real worker, the raw floor
  version      print the version

Global: --nats URL (env CONVOY_NATS_URL; default nats://127.0.0.1:4222),
  --nkey FILE, a credential from convoy creds (env CONVOY_NKEY),
  --tls-ca FILE, the CA that signed the server's certificate (env CONVOY_TLS_CA).
Exit codes: 0 done, 1 an upgrade failed or was rejected, 2 bad usage or
input, 3 timed out waiting, 4 bus unreachable.
Run convoy COMMAND -h for a command's flags and examples.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches args and turns the error into an exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr, nats: os.Getenv("CONVOY_NATS_URL"),
		nkey: os.Getenv("CONVOY_NKEY"), tlsCA: os.Getenv("CONVOY_TLS_CA"), given: map[string]bool{}}
	global := map[string]*string{"nats": &e.nats, "nkey": &e.nkey, "tls-ca": &e.tlsCA}
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		if args[0] == "-h" || args[0] == "--help" {
			fmt.Fprint(stdout, usage)
			return exitOK
		}
		if args[0] == "--version" || args[0] == "-version" {
			args = []string{"version"} // as the version command
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
		dst, ok := global[name]
		if !ok {
			fmt.Fprintf(stderr, "convoy: unknown global flag %s\n\n%s", args[0], usage)
			return exitUsage
		}
		args = args[1:]
		if !hasVal {
			if len(args) == 0 {
				fmt.Fprintf(stderr, "convoy: --%s needs a value\n", name)
				return exitUsage
			}
			val, args = args[0], args[1:]
		}
		*dst, e.given[name] = val, true
	}
	if len(args) == 0 || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands(e)[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "convoy: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	err := cmd.Run(ctx, args[1:])
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	code := exitCode(err)
	if !errors.Is(err, errSilent) {
		fmt.Fprintf(stderr, "convoy %s: %v\n", args[0], err)
	}
	return code
}
