package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/workers"
)

// example is one invocation a command's -h shows: a whole command line and
// what it does.
type example struct{ does, cmd string }

// flags returns a flag set for a command that reports errors instead of
// exiting, and takes --nats like every command. Its -h shows the synopsis,
// the flags and the examples; every command gives at least one.
func (e *env) flags(name, synopsis string, examples ...example) *flag.FlagSet {
	fs := flag.NewFlagSet("convoy "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: convoy %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
		fmt.Fprint(e.stderr, "\nExamples:\n")
		for i, x := range examples {
			if i > 0 {
				fmt.Fprintln(e.stderr)
			}
			fmt.Fprintf(e.stderr, "  # %s\n  %s\n", x.does, x.cmd)
		}
	}
	fs.Func("nats", "NATS URL of the bus (env CONVOY_NATS_URL)", e.setter("nats", &e.nats))
	fs.Func("nkey", "credential (nkey seed file) from convoy creds (env CONVOY_NKEY)", e.setter("nkey", &e.nkey))
	fs.Func("tls-ca", "CA file that signed the server's TLS certificate (env CONVOY_TLS_CA)", e.setter("tls-ca", &e.tlsCA))
	return fs
}

func (e *env) setter(name string, dst *string) func(string) error {
	return func(v string) error {
		*dst, e.given[name] = v, true
		return nil
	}
}

// busFromConfig fills the bus settings a worker config gives, unless the
// command line gave them: flags win over the file, the file over the
// environment.
func (e *env) busFromConfig(nats, nkey, tlsCA string) {
	for _, v := range []struct {
		name     string
		dst      *string
		fromFile string
	}{{"nats", &e.nats, nats}, {"nkey", &e.nkey, nkey}, {"tls-ca", &e.tlsCA, tlsCA}} {
		if !e.given[v.name] && v.fromFile != "" {
			*v.dst = v.fromFile
		}
	}
}

// parse parses flags and positional arguments in any order.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageErr(err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// connect dials the bus, reporting retries on stderr, for up to maxWait.
func (e *env) connect(ctx context.Context, name string, maxWait time.Duration) (*bus.Conn, error) {
	return e.connectAs(ctx, name, maxWait, "")
}

// connectAs is connect with a custom inbox prefix (a host's worker).
func (e *env) connectAs(ctx context.Context, name string, maxWait time.Duration, inbox string) (*bus.Conn, error) {
	url := e.nats
	if url == "" {
		url = bus.DefaultURL
	}
	return bus.Connect(ctx, bus.ConnectConfig{
		URL: url, Name: "convoy " + name, MaxWait: maxWait, NKeyFile: e.nkey, CAFile: e.tlsCA, InboxPrefix: inbox,
		// A refused operation otherwise shows only as a timeout.
		OnAsyncError: func(err error) {
			fmt.Fprintf(e.stderr, "convoy %s: the bus refused: %v (does this credential allow it? see docs/security.md)\n", name, err)
		},
		OnRetry: func(err error, next time.Duration) {
			fmt.Fprintf(e.stderr, "convoy %s: bus not reachable at %s (%v); retrying in %s\n", name, url, err, next.Round(10*time.Millisecond))
		},
	})
}

// openFleet connects to the bus, waiting up to 5s, and opens the fleet's
// status view, for the commands that read it. The caller closes the
// connection.
func (e *env) openFleet(ctx context.Context, name string) (*bus.Conn, *projections.Fleet, error) {
	conn, err := e.connect(ctx, name, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	fleet, err := projections.OpenFleet(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, fleet, nil
}

func (e *env) logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErr(fmt.Errorf("--log-level %q: want debug, info, warn or error", level))
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: l})), nil
}

// table aligns the columns of the rows written to it, two spaces apart,
// when flushed.
func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// row writes one row of a table. The last cell is not padded; an empty one
// would leave the row's other cells padded at its end, so tables print "-"
// for nothing.
func row(t *tabwriter.Writer, cells ...string) { fmt.Fprintln(t, strings.Join(cells, "\t")) }

type versionCmd struct{ env *env }

func (c *versionCmd) Run(_ context.Context, args []string) error {
	fs := c.env.flags("version", "version",
		example{"print the version this binary was built as", "convoy version"})
	if _, err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(c.env.stdout, "convoy", version)
	return nil
}

// hostFlags are the flags of the commands that act as one host: worker and
// boot-check.
type hostFlags struct {
	config    *string
	allowRoot *bool
	logLevel  *string
}

func addHostFlags(fs *flag.FlagSet, allowRootUsage string) hostFlags {
	return hostFlags{
		config:    fs.String("config", "", "the worker's TOML config (required; see docs/config.md)"),
		allowRoot: fs.Bool("allow-root", false, allowRootUsage),
		logLevel:  fs.String("log-level", "info", "debug, info, warn or error"),
	}
}

// load reads and checks the host's config and takes its bus settings
// (which command-line flags override), and returns it with a logger.
func (e *env) loadHost(h hostFlags) (*workers.Config, *slog.Logger, error) {
	if *h.config == "" {
		return nil, nil, usageErr(errors.New("--config FILE is required (see docs/config.md)"))
	}
	log, err := e.logger(*h.logLevel)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := workers.LoadConfig(*h.config)
	if err != nil {
		return nil, nil, usageErr(err)
	}
	if err := workers.Check(cfg); err != nil {
		return nil, nil, usageErr(fmt.Errorf("config %s: %w", *h.config, err))
	}
	e.busFromConfig(cfg.NATS, cfg.NKey, cfg.TLSCA)
	return cfg, log, nil
}

// parseBytes reads a size: a number with an optional unit (B, KB, MB, GB,
// TB in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024).
func parseBytes(v string) (int64, error) {
	units := []struct {
		suffix string
		scale  int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	num, scale := strings.TrimSpace(v), int64(1)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, scale = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.scale
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/scale {
		return 0, fmt.Errorf("%q: want a size such as 256MiB, 50GB or 0", v)
	}
	return n * scale, nil
}
