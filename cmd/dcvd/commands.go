package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/BurntSushi/toml"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/internal/reissueall"
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
		fs.PrintDefaults()
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
func loadDaemonConfig(path string, stderr io.Writer) (*daemon.Config, error) {
	cfg, warnings, err := daemon.LoadConfig(path, daemon.LoadOptions{})
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
func checkName(cfg *daemon.Config, cfgPath, name string) error {
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

// newLogger builds the daemon's logger from [daemon] log_format and
// log_level.
func newLogger(cfg *daemon.Config, w io.Writer) (*zap.Logger, error) {
	level := zapcore.InfoLevel
	if cfg.Daemon.LogLevel != "" {
		if err := level.Set(cfg.Daemon.LogLevel); err != nil {
			return nil, fmt.Errorf("daemon.log_level: %w", err)
		}
	}
	var enc zapcore.Encoder
	if cfg.Daemon.LogFormat == "json" {
		enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	} else {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("2006-01-02 15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level)), nil
}

func openDaemon(ctx context.Context, path string, stderr io.Writer) (*daemon.Daemon, *zap.Logger, error) {
	return openDaemonWith(ctx, path, stderr, false)
}

// openDaemonWith is openDaemon; every command that opens the daemon in its
// own process works in the foreground, so the step at work stops with it
// (foregroundStopGrace). quiet logs only the daemon's warnings and
// errors (unless log_level asks for less), for commands whose own output
// would drown in its steps.
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
	d, err := daemon.New(ctx, cfg, daemon.Options{Log: log, AfterStep: afterStepHook, Version: version,
		StopGrace: foregroundStopGrace})
	if err != nil {
		return nil, nil, err
	}
	return d, log, nil
}

// allTimeout is how long "dcvd reissue --all" runs when --timeout is not
// given: the deadline a CA gives after a mass revocation.
const allTimeout = 24 * time.Hour

func runReissue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("reissue", "reissue NAME|--all [--wait] [--dry-run] [--allow-domain-removal] [--timeout D] [--config FILE]", stdout)
	wait := fs.Bool("wait", false, "drive the reissue until the certificate is deployed, in the foreground; gives up (the order stays in flight, exit status 75) on Ctrl-C, at --timeout, and after three identical failures that waiting cannot mend")
	timeout := fs.Duration("timeout", 30*time.Minute, "with --wait: give up after this long, the request at work included (the order stays in flight for the daemon); with --all: bounds the whole run, 24h unless given")
	dryRun := fs.Bool("dry-run", false, "say what would be reissued, and whether the domain-removal guard refuses, without contacting the CA")
	allow := fs.Bool("allow-domain-removal", false, "confirm a reissue that drops names of the live certificate (the CA revokes it)")
	all := fs.Bool("all", false, "reissue every configured certificate (an order in flight is resumed), daemon.max_concurrent at a time, with progress on stderr: for a CA's mass revocation; exits non-zero if any is not reissued")
	every := fs.Duration("progress", reissueall.DefaultEvery, "with --all: interval of the summary lines on stderr")
	verbose := fs.Bool("verbose", false, "with --all: log the daemon's steps at daemon.log_level (by default only its warnings and errors, so that the progress stays readable)")
	name, err := parseOptionalName(fs, args)
	if err != nil {
		return err
	}
	given := flagGiven(fs, "timeout")
	switch {
	case *all && name != "":
		return asUsage(fmt.Errorf("name one [[certificate]] or give --all, not both (got %q and --all)", name))
	case !*all && name == "":
		fs.Usage()
		return asUsage(errors.New("name the [[certificate]], or give --all for every one"))
	case *all:
		if !given {
			*timeout = allTimeout
		}
		return reissueAll(ctx, allRun{cfgPath: *cfgPath, wait: *wait, dryRun: *dryRun, allow: *allow, timeout: *timeout,
			every: *every, verbose: *verbose}, stdout, stderr)
	}
	// The bound holds for the whole command: finding the daemon, opening
	// the state, and the request at work when it ends.
	if (*wait || given) && *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	if !*dryRun {
		c, err := dialRunning(*cfgPath)
		if err != nil {
			return err
		}
		if c != nil {
			defer c.Close()
			return reissueViaControl(ctx, c, name, *allow, *wait, *timeout, stdout, stderr)
		}
	}
	d, _, err := openDaemon(ctx, *cfgPath, stderr)
	if err != nil {
		return err
	}
	defer func() { closeDaemon(ctx, d, stderr) }()
	if err := checkName(d.Config(), *cfgPath, name); err != nil {
		return err
	}
	if *dryRun {
		o, err := d.Plan(ctx, name, *allow)
		if err != nil {
			return err
		}
		if o.UniqueID != "" {
			fmt.Fprintf(stdout, "certificate %s has an order in flight: %s at step %s\n", name, o.UniqueID, o.Step)
			return nil
		}
		fmt.Fprintf(stdout, "would reissue certificate %s (service %s, key %s):\n", name, o.ServiceID, o.KeyType)
		for _, n := range o.Names {
			fmt.Fprintf(stdout, "  %-40s %s\n", n, o.DomainDCV[n])
		}
		return nil
	}
	return driveHere(ctx, d, name, *allow, *wait, *timeout, stdout, stderr)
}

// flagGiven reports whether the flag name was on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// allRun is what "dcvd reissue --all" was asked.
type allRun struct {
	cfgPath             string
	wait, dryRun, allow bool
	verbose             bool
	timeout, every      time.Duration
}

// reissueAll reissues every configured certificate: through the running
// daemon when there is one (each asked for on its control socket, then
// followed there), else in this process. Either way at most
// daemon.max_concurrent certificates are at work at once, a line on stderr
// tells each one's end, and a summary line every r.every the counts,
// rate and ETA. A certificate that fails (the domain-removal guard, the
// CA) is reported and the others go on; the error at the end says how many
// were not reissued.
func reissueAll(ctx context.Context, r allRun, stdout, stderr io.Writer) error {
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	opt := reissueall.Options{Wait: r.wait, Progress: stderr, Every: r.every}
	var (
		names []string
		fn    reissueall.Func
	)
	c, err := dialRunning(r.cfgPath)
	if err != nil && !r.dryRun {
		return err
	}
	if c != nil && !r.dryRun {
		defer c.Close()
		// The running daemon's configuration says which certificates
		// there are; the file gives the bound, as it gave the daemon's.
		sts, err := c.Status(ctx)
		if err != nil {
			return err
		}
		for _, st := range sts {
			names = append(names, st.Name)
		}
		opt.Concurrency = maxConcurrentOf(r.cfgPath)
		// Following many orders: each is read at most every poll, and
		// all of them at most a few hundred times a second.
		poll := max(controlPoll, time.Duration(opt.Concurrency)*4*time.Millisecond)
		fn = reissueall.ViaControl(c, r.allow, r.wait, poll)
		fmt.Fprintf(stderr, "reissuing %s through the running daemon (control socket %s), %d at a time\n",
			plural(len(names), "certificate"), c.Path(), opt.Concurrency)
	} else {
		d, _, err := openDaemonWith(ctx, r.cfgPath, stderr, !r.verbose)
		if err != nil {
			return err
		}
		defer func() { closeDaemon(ctx, d, stderr) }()
		cfg := d.Config()
		for _, cc := range cfg.Certificates {
			names = append(names, cc.Name)
		}
		if r.dryRun {
			return planAll(ctx, d, names, r.allow, stdout)
		}
		opt.Concurrency = cfg.Daemon.MaxConcurrent
		fn = reissueall.InProcess(d, daemon.ReissueOptions{AllowDomainRemoval: r.allow, Wait: r.wait})
		how := "until each order's first wait (dcvd run carries them on)"
		if r.wait {
			how = "until each is deployed"
		}
		fmt.Fprintf(stderr, "no daemon running: reissuing %s in this process, %d at a time, %s\n",
			plural(len(names), "certificate"), opt.Concurrency, how)
	}
	if len(names) == 0 {
		fmt.Fprintln(stdout, "reissue --all: no [[certificate]] is configured: nothing to reissue")
		return nil
	}
	sum := reissueall.Run(ctx, names, fn, opt)
	fmt.Fprintln(stdout, "reissue --all: "+sum.String())
	if err := sum.Err(); err != nil && ctx.Err() != nil {
		// Out of time or interrupted: what is not done is in flight or
		// not started, and the same command resumes it.
		return asResumable(fmt.Errorf("%w (%s)", err, stopReason(ctx, r.timeout)))
	}
	return sum.Err()
}

// planAll is "dcvd reissue --all --dry-run": what each certificate's
// reissue would do, and which ones the domain-removal guard refuses.
func planAll(ctx context.Context, d *daemon.Daemon, names []string, allow bool, stdout io.Writer) error {
	var refused []string
	for _, name := range names {
		o, err := d.Plan(ctx, name, allow)
		switch {
		case err != nil:
			refused = append(refused, name)
			fmt.Fprintf(stdout, "certificate %s: refused: %v\n", name, err)
		case o.UniqueID != "":
			fmt.Fprintf(stdout, "certificate %s: order %s in flight at step %s would be resumed\n", name, o.UniqueID, o.Step)
		default:
			fmt.Fprintf(stdout, "certificate %s: would reissue %s (service %s, key %s)\n", name, strings.Join(o.Names, ", "), o.ServiceID, o.KeyType)
		}
	}
	if len(refused) > 0 {
		return fmt.Errorf("%d of %d certificates would be refused: %s", len(refused), len(names), strings.Join(refused, ", "))
	}
	return nil
}

// maxConcurrentOf reads daemon.max_concurrent from the configuration file
// without checking the rest (as stateDirOf does), for a command that works
// through the running daemon; the default when the file does not say.
func maxConcurrentOf(cfgPath string) int {
	var f struct {
		Daemon struct {
			MaxConcurrent *int64 `toml:"max_concurrent"`
		} `toml:"daemon"`
	}
	if _, err := toml.DecodeFile(cfgPath, &f); err != nil || f.Daemon.MaxConcurrent == nil ||
		*f.Daemon.MaxConcurrent < 1 || *f.Daemon.MaxConcurrent > 1000 {
		return daemon.DefaultMaxConcurrent
	}
	return int(*f.Daemon.MaxConcurrent)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("status", "status [--json] [--config FILE]", stdout)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sts, err := statusOf(ctx, *cfgPath, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sts)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tNEXT RENEWAL\tSERVICE ENDS\tORDER\tCOST\tLAST ERROR")
	for _, s := range sts {
		expires := "-"
		if s.NotAfter != nil {
			expires = s.NotAfter.UTC().Format("2006-01-02 15:04")
		}
		order := "-"
		if s.Order != nil {
			order = fmt.Sprintf("%s (%s)", s.Order.Step, s.Order.UniqueID)
		}
		lastErr := s.LastError
		if len(lastErr) > 80 {
			lastErr = lastErr[:77] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n", s.Name, expires, s.NextRenewal.UTC().Format("2006-01-02 15:04"),
			serviceEnds(s.Service), order, s.TotalCost, orDash(lastErr))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	printServiceWarnings(stdout, sts)
	printBackoffs(stdout, sts)
	printCluster(stdout, sts)
	return nil
}

// serviceEnds is the SERVICE ENDS column: the end of the paid period and
// the days left, "ended" after it, "?" while the reseller has not said.
func serviceEnds(s *daemon.ServiceStatus) string {
	switch {
	case s == nil || s.Expires == nil:
		return "?"
	case s.Ended:
		return s.Expires.UTC().Format("2006-01-02") + " (ended)"
	}
	return fmt.Sprintf("%s (%s)", s.Expires.UTC().Format("2006-01-02"), plural(*s.DaysLeft, "day"))
}

// printServiceWarnings shows each certificate whose service has ended, or
// ends before its next renewal: only buying a renewal mends it.
func printServiceWarnings(w io.Writer, sts []daemon.CertStatus) {
	for _, s := range sts {
		if s.Service == nil || s.Service.Warning == "" {
			continue
		}
		fmt.Fprintf(w, "\n%s: service %s: %s\n", s.Name, s.Service.ServiceID, s.Service.Warning)
	}
}

// printBackoffs shows each order in backoff, which nothing tries before
// its next attempt (maybe a day away) unless the admin asks.
func printBackoffs(w io.Writer, sts []daemon.CertStatus) {
	for _, s := range sts {
		o := s.Order
		if o == nil || !o.Backoff || o.NextAttempt == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: order %s is in backoff at step %s after %s; next attempt %s (in %s)\n",
			s.Name, o.UniqueID, o.Step, plural(o.Attempts, "failure"), o.NextAttempt.UTC().Format("2006-01-02 15:04:05 MST"),
			time.Until(*o.NextAttempt).Round(time.Second))
		fmt.Fprintf(w, "  last error: %s\n", orNone(o.LastError))
		fmt.Fprintf(w, "  run %s to try it now\n", o.Hint)
	}
}

// printCluster shows, in a cluster, who drives each certificate and what
// each node serves.
func printCluster(w io.Writer, sts []daemon.CertStatus) {
	for _, s := range sts {
		if s.Lease == nil && len(s.Nodes) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s (serial %s)\n", s.Name, orDash(s.Serial))
		switch {
		case s.Lease == nil:
			fmt.Fprintln(w, "  lease: never taken")
		case s.Lease.Current:
			fmt.Fprintf(w, "  lease: held by %s until %s (token %d)\n", s.Lease.Holder, s.Lease.Expires.UTC().Format(time.RFC3339), s.Lease.Token)
		default:
			fmt.Fprintf(w, "  lease: free (last held by %s, token %d)\n", s.Lease.Holder, s.Lease.Token)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NODE\tSERVES\tSTATE\tLAST ERROR")
		for _, n := range s.Nodes {
			state := "alive"
			if !n.Alive {
				state = "not seen"
			}
			mark := orDash(n.Serial)
			if n.Serial != "" && n.Serial != s.Serial {
				mark += " (not the live one)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", n.Node, mark, state, orDash(n.Error))
		}
		tw.Flush()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
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
			var ce *daemon.ControlError
			if errors.As(err, &ce) && ce.Status == http.StatusConflict {
				return asResumable(err) // an order at work: once it has ended
			}
			return controlFailure(ctx, name, err, 0)
		}
		fmt.Fprintf(stdout, "certificate %s redeployed by the running daemon\n", name)
		return nil
	}
	d, _, err := openDaemon(ctx, *cfgPath, stderr)
	if err != nil {
		return err
	}
	defer func() { closeDaemon(ctx, d, stderr) }()
	if err := checkName(d.Config(), *cfgPath, name); err != nil {
		return err
	}
	if err := d.Redeploy(ctx, name); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "certificate %s redeployed\n", name)
	return nil
}

func runCheckConfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("check-config", "check-config [--config FILE]", stdout)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, warnings, err := daemon.LoadConfig(*cfgPath, daemon.LoadOptions{})
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if os.Geteuid() == 0 {
		// Root writes everywhere: the writability checks prove nothing
		// for the service's user.
		fmt.Fprintln(stdout, "note: run as root, the checks of what dcvd may write prove nothing for the service's user; run: runuser -u dcvd -- dcvd check-config")
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
	if cfg.Store.Driver == daemon.StoreDriverPostgres {
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

func runVersion(stdout io.Writer) error {
	fmt.Fprintf(stdout, "dcvd %s\n", version)
	return nil
}
