package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// commandFlags makes the flag set of a subcommand with the common
// --config flag.
func commandFlags(name, usage string, out io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("dcvd "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	cfg := fs.String("config", DefaultConfigPath, "configuration file")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: dcvd %s\n\nFlags:\n", usage)
		printFlags(fs.Output(), fs)
		fmt.Fprint(fs.Output(), "\n"+exitCodesHelp)
	}
	return fs, cfg
}

// parseFlags parses a subcommand's flags; a wrong command line is a usage
// error (the flag set has printed its usage).
func parseFlags(fs *flag.FlagSet, args []string) error {
	return asUsage(fs.Parse(args))
}

// loadDaemonConfig loads the configuration, printing its warnings. A file
// that cannot be read or has problems is a configuration error.
func loadDaemonConfig(path string, stderr io.Writer) (*config.Config, error) {
	cfg, warnings, err := config.LoadConfig(path, config.LoadOptions{})
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		return nil, asConfig(fmt.Errorf("config %s:\n%w", path, err))
	}
	return cfg, nil
}

// checkName refuses a NAME that the configuration has no [[certificate]]
// of: a usage error, which names those it has.
func checkName(cfg *config.Config, cfgPath, name string) error {
	names := make([]string, 0, len(cfg.Certificates))
	for _, cc := range cfg.Certificates {
		if cc.Name == name {
			return nil
		}
		names = append(names, cc.Name)
	}
	has := "none"
	if len(names) > 0 {
		has = strings.Join(names, ", ")
	}
	return asUsage(fmt.Errorf("no [[certificate]] named %q in %s (it has: %s)", name, cfgPath, has))
}

func openDaemon(ctx context.Context, path string, stderr io.Writer) (*daemon.Daemon, *zap.Logger, error) {
	return openDaemonWith(ctx, path, stderr, false)
}

// openDaemonFor is openDaemon for a command on the [[certificate]] name,
// which it refuses (checkName) when the configuration has none of that
// name. done closes the daemon: the caller defers it.
func openDaemonFor(ctx context.Context, cfgPath, name string, stderr io.Writer) (d *daemon.Daemon, done func(), err error) {
	d, _, err = openDaemon(ctx, cfgPath, stderr)
	if err != nil {
		return nil, nil, err
	}
	done = func() { closeDaemon(ctx, d, stderr) }
	if err := checkName(d.Config(), cfgPath, name); err != nil {
		done()
		return nil, nil, err
	}
	return d, done, nil
}

// boundContext is ctx bounded by timeout when bound is set and timeout
// is positive; the caller defers cancel.
func boundContext(ctx context.Context, bound bool, timeout time.Duration) (context.Context, context.CancelFunc) {
	if bound && timeout > 0 {
		return context.WithTimeout(ctx, timeout)
	}
	return ctx, func() {}
}

// openDaemonWith is openDaemon; every command that opens the daemon in its
// own process works in the foreground, so the step at work stops with it
// (foregroundStopGrace). quiet logs only the daemon's warnings and
// errors (unless log_level asks for less), for commands whose own output
// would drown in its steps. Run as root, the command acts as the state
// directory's owner once the configuration and its secrets are read
// (actAsStateOwner), and refuses to create a missing state directory.
func openDaemonWith(ctx context.Context, path string, stderr io.Writer, quiet bool) (*daemon.Daemon, *zap.Logger, error) {
	cfg, err := loadDaemonConfig(path, stderr)
	if err != nil {
		return nil, nil, err
	}
	logCfg := cfg
	if quiet && cfg.Daemon.LogLevel != "error" {
		c := *cfg
		c.Daemon.LogLevel = "warn"
		logCfg = &c
	}
	log, err := newLogger(logCfg, stderr)
	if err != nil {
		return nil, nil, err
	}
	opts := daemon.Options{Log: log, AfterStep: afterStepHook, Version: version, StopGrace: foregroundStopGrace}
	if err := dropRoot(cfg, stateWrites, &opts); err != nil {
		return nil, nil, err
	}
	d, err := newDaemon(ctx, cfg, opts)
	if err != nil {
		return nil, nil, err
	}
	return d, log, nil
}

// dropRoot reads, when this runs as root, what only root may read and the
// daemon would read later (the CA roots; LoadConfig has read the secret
// files), then acts as the state directory's owner (actAsStateOwner).
func dropRoot(cfg *config.Config, use stateUse, opts *daemon.Options) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if opts.Roots == nil {
		roots, err := cfg.API.CARoots()
		if err != nil {
			return &config.ConfigError{Key: "api.ca_roots_file", Reason: err.Error()}
		}
		opts.Roots = roots
	}
	_, err := actAsStateOwner(cfg, use, opts.Log)
	return err
}

// statusFromState is the status read from the state itself, when no
// daemon runs. It never creates the state directory nor the database:
// before anything has run it shows each configured certificate with no
// state, and says so on stderr (stdout may be JSON).
func statusFromState(ctx context.Context, cfgPath string, stderr io.Writer) ([]control.CertStatus, error) {
	cfg, err := loadDaemonConfig(cfgPath, stderr)
	if err != nil {
		return nil, err
	}
	log, err := newLogger(cfg, stderr)
	if err != nil {
		return nil, err
	}
	opts := daemon.Options{Log: log, Version: version, StopGrace: foregroundStopGrace}
	if err := dropRoot(cfg, stateReads, &opts); err != nil {
		return nil, err
	}
	if cfg.Store.Driver != config.StoreDriverPostgres {
		db := filepath.Join(cfg.Daemon.StateDir, "dcvd.db")
		s, err := store.OpenSQLiteExisting(ctx, db)
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "no state yet: %s does not exist, nothing has run yet (the daemon creates it when it starts); each certificate below is configured, with no state\n", db)
			return noState(cfg, time.Now()), nil
		}
		if err != nil {
			return nil, fmt.Errorf("open state: %w", err)
		}
		defer s.Close()
		opts.Store = s
	}
	d, err := daemon.New(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Status(ctx)
}

// noState is the status of cfg's certificates before anything has run:
// each is due now, having no live certificate.
func noState(cfg *config.Config, now time.Time) []control.CertStatus {
	out := make([]control.CertStatus, 0, len(cfg.Certificates))
	for i := range cfg.Certificates {
		cc := &cfg.Certificates[i]
		r := daemon.NextRenewal(cc, nil, nil, now)
		out = append(out, control.CertStatus{Name: cc.Name, Names: cc.Names(), NextRenewal: r.At,
			RenewalReason: "configured, no state: nothing has run yet (" + r.Reason + ")",
			Service:       &control.ServiceStatus{ServiceID: cc.ServiceID}})
	}
	return out
}

// allTimeout is how long "dcvd reissue --all" runs when --timeout is not
// given: the deadline a CA gives after a mass revocation.
const allTimeout = 24 * time.Hour

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func runRedeploy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("redeploy", "redeploy NAME [--config FILE]", stdout)
	name, err := parseWithName(fs, args)
	if err != nil {
		return err
	}
	c, err := dialRunning(*cfgPath)
	if err != nil {
		return err
	}
	if c != nil {
		defer c.Close()
		if err := c.Redeploy(ctx, name); err != nil {
			var ce *control.Error
			if errors.As(err, &ce) && ce.Status == http.StatusConflict {
				return asResumable(err) // an order at work: once it has ended
			}
			return controlFailure(ctx, name, err, 0)
		}
		fmt.Fprintf(stdout, "certificate %s redeployed by the running daemon\n", name)
		return nil
	}
	d, done, err := openDaemonFor(ctx, *cfgPath, name, stderr)
	if err != nil {
		return err
	}
	defer done()
	if err := d.Redeploy(ctx, name); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "certificate %s redeployed\n", name)
	return nil
}

func runCheckConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("check-config", "check-config [--as-service [--unit FILE]] [--config FILE]", stdout)
	asService := fs.Bool("as-service", false, "check as dcvd.service would run it: its user, read-write paths, capabilities, credentials, reload command")
	unitFile := fs.String("unit", "", "with --as-service: the unit file to check against (default: the installed dcvd.service with its drop-ins, else the shipped one)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *unitFile != "" && !*asService {
		return asUsage(errors.New("--unit goes with --as-service"))
	}
	if *asService {
		return runCheckAsService(ctx, *cfgPath, *unitFile, stdout)
	}
	cfg, warnings, err := config.LoadConfig(*cfgPath, config.LoadOptions{})
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if os.Geteuid() == 0 {
		// Root writes everywhere: the writability checks prove nothing
		// for the service's user.
		fmt.Fprintln(stdout, "note: run as root, the checks of what dcvd may write prove nothing for the service's user; run: dcvd check-config --as-service")
	}
	var problems []error
	if err != nil {
		problems = append(problems, err)
	} else {
		problems = append(problems, cfg.Check()...)
	}
	if len(problems) > 0 {
		return asConfig(fmt.Errorf("%s has problems:\n%w", *cfgPath, errors.Join(problems...)))
	}
	store := cfg.Store.Driver
	if cfg.Store.Driver == config.StoreDriverPostgres {
		// The node name matters most when it was defaulted: every node
		// must have its own.
		store += fmt.Sprintf(" as node %s, lease %s", cfg.Store.Node, cfg.Store.Lease)
	}
	fmt.Fprintf(stdout, "%s: OK (%d certificate(s), %d DNS provider(s), store %s)\n", *cfgPath, len(cfg.Certificates), len(cfg.DNS), store)
	return nil
}

// parseWithName parses flags around one positional NAME.
func parseWithName(fs *flag.FlagSet, args []string) (string, error) {
	name, err := parseOptionalName(fs, args)
	if err != nil {
		return "", err
	}
	if name == "" {
		fs.Usage()
		return "", asUsage(errors.New("name the [[certificate]]"))
	}
	return name, nil
}

// parseOptionalName parses flags around at most one positional NAME; ""
// when there is none.
func parseOptionalName(fs *flag.FlagSet, args []string) (string, error) {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return "", err
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	} else if fs.NArg() > 0 {
		fs.Usage()
		return "", asUsage(fmt.Errorf("unexpected arguments %v", fs.Args()))
	}
	return name, nil
}
