package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/reissueall"
	"github.com/dcvd/dcvd/daemon/store"
)

func runReissue(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("reissue", "reissue NAME|--all [--wait] [--dry-run] [--allow-domain-removal] [--timeout D] [--config FILE]", stdout)
	wait := fs.Bool("wait", false, "drive the reissue until the certificate is deployed, in the foreground; gives up (the order stays in flight, exit status 75) on Ctrl-C, at --timeout, and after three identical failures that waiting cannot mend")
	timeout := fs.Duration("timeout", 30*time.Minute, "with --wait: give up after this long, the request at work included (the order stays in flight for the daemon); with --all: bounds the whole run, 24h unless given")
	dryRun := fs.Bool("dry-run", false, "rehearse the reissue, for free and leaving nothing behind: check the API credentials and the order with a signed read, publish and remove a probe DNS record and web root file (fetched as the CA fetches), run the pre-flight checks; print every check timed and the reissue it would send; exit 1 if the real run would fail")
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
	case *all && *dryRun:
		ctx, cancel := boundContext(ctx, given, *timeout)
		defer cancel()
		return rehearse(ctx, *cfgPath, "", true, *allow, stdout, stderr)
	case *all:
		if !given {
			*timeout = allTimeout
		}
		return reissueAll(ctx, allRun{cfgPath: *cfgPath, wait: *wait, allow: *allow, timeout: *timeout,
			every: *every, verbose: *verbose}, stdout, stderr)
	}
	// The bound holds for the whole command: finding the daemon, opening
	// the state, and the request at work when it ends.
	ctx, cancel := boundContext(ctx, *wait || given, *timeout)
	defer cancel()
	if *dryRun {
		// In this process even when a daemon runs: the rehearsal writes
		// nothing to the state, so it cannot disturb it.
		return rehearse(ctx, *cfgPath, name, false, *allow, stdout, stderr)
	}
	c, err := dialRunning(*cfgPath)
	if err != nil {
		return err
	}
	if c != nil {
		defer c.Close()
		return reissueViaControl(ctx, c, name, *allow, *wait, *timeout, stdout, stderr)
	}
	if !*wait {
		if err := refuseUnattended(ctx, *cfgPath, name, stderr); err != nil {
			return err
		}
	}
	d, done, err := openDaemonFor(ctx, *cfgPath, name, stderr)
	if err != nil {
		return err
	}
	defer done()
	return driveHere(ctx, d, name, *allow, *wait, *timeout, stdout, stderr)
}

// reissueViaControl has the running daemon reissue name (or finds its
// order in flight) and, with wait, follows the order until it ends (see
// followViaControl). An order in backoff is said to be so: it is not
// followed when its next attempt comes after the command's deadline.
func reissueViaControl(ctx context.Context, c *control.Client, name string, allow, wait bool, timeout time.Duration, stdout, stderr io.Writer) error {
	o, err := c.Reissue(ctx, name, allow)
	if err != nil {
		return controlFailure(ctx, name, err, timeout)
	}
	if daemon.InBackoff(o, time.Now()) {
		msg := backoffMessage(name, o)
		if !wait || !dueBefore(ctx, o.NextAttempt) {
			return asResumable(errors.New(msg))
		}
		fmt.Fprintln(stderr, msg+"; following it meanwhile")
	}
	if !wait {
		fmt.Fprintf(stdout, "certificate %s: order %s at step %s; the daemon carries it on\n", name, o.UniqueID, o.Step)
		return nil
	}
	return followViaControl(ctx, c, name, o, timeout, stdout, stderr)
}

// errNoDaemon is the refusal of a reissue without --wait when no daemon
// runs: such a command starts the order (the paid call included) and
// returns at its first wait, for a daemon to carry it on; with none
// running, the order would be paid for and left half done, DCV records
// and files published, until someone started one.
func errNoDaemon(what, again string) error {
	return fmt.Errorf("%s: no dcvd daemon is running (nothing answers on its control socket), and without --wait this command only starts the reissue, paying for it, and leaves the order for the daemon to carry on; nothing was sent. "+
		"Run %s --wait to drive it to the end in this process, or start the service (systemctl start dcvd) and run the command again", what, again)
}

// refuseUnattended refuses "dcvd reissue NAME" without --wait when no
// daemon runs (see errNoDaemon), before anything is sent and before the
// state is opened for writing. Two cases are let through, as they send
// nothing unattended: an order in backoff (driveHere only says so and how
// to try it now), and a cluster node ([store] driver = "postgres"), whose
// order the other nodes' daemons carry on from the shared store.
func refuseUnattended(ctx context.Context, cfgPath, name string, stderr io.Writer) error {
	cfg, err := loadDaemonConfig(cfgPath, stderr)
	if err != nil {
		return err
	}
	if err := checkName(cfg, cfgPath, name); err != nil {
		return err
	}
	if cfg.Store.Driver == config.StoreDriverPostgres {
		return nil
	}
	refusal := errNoDaemon("certificate "+name, "dcvd reissue "+name)
	// Read only: a state that does not exist is not created for a
	// command that is refused.
	s, err := store.OpenSQLiteExisting(ctx, filepath.Join(cfg.Daemon.StateDir, "dcvd.db"))
	if errors.Is(err, fs.ErrNotExist) {
		return refusal
	}
	if err != nil {
		return err
	}
	defer s.Close()
	o, err := s.ActiveOrder(ctx, name)
	switch {
	case err == nil && daemon.InBackoff(o, time.Now()):
		return nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return err
	}
	return refusal
}

// flagGiven reports whether the flag name was on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// allRun is what "dcvd reissue --all" was asked.
type allRun struct {
	cfgPath        string
	wait, allow    bool
	verbose        bool
	timeout, every time.Duration
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
	if err != nil {
		return err
	}
	if c != nil {
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
		if !r.wait {
			// Refused before the state is opened: nothing is read or
			// created for a command that will not run. A broken
			// configuration is still reported as such.
			if _, err := loadDaemonConfig(r.cfgPath, stderr); err != nil {
				return err
			}
			return errNoDaemon("reissue --all", "dcvd reissue --all")
		}
		d, _, err := openDaemonWith(ctx, r.cfgPath, stderr, !r.verbose)
		if err != nil {
			return err
		}
		defer func() { closeDaemon(ctx, d, stderr) }()
		cfg := d.Config()
		for _, cc := range cfg.Certificates {
			names = append(names, cc.Name)
		}
		opt.Concurrency = cfg.Daemon.MaxConcurrent
		fn = reissueall.InProcess(d, daemon.ReissueOptions{AllowDomainRemoval: r.allow, Wait: r.wait})
		fmt.Fprintf(stderr, "no daemon running: reissuing %s in this process, %d at a time, until each is deployed\n",
			plural(len(names), "certificate"), opt.Concurrency)
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
		return config.DefaultMaxConcurrent
	}
	return int(*f.Daemon.MaxConcurrent)
}
