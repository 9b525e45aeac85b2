package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/internal/reissueall"
)

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
