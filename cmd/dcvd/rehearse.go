package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file is "dcvd reissue NAME --dry-run" and "dcvd reissue --all
// --dry-run": the rehearsal of daemon.Daemon.Rehearse, rendered as a table
// of timed checks followed by the reissue the real run would send. It runs
// in this process, with or without a running daemon: it writes nothing to
// the state, so it cannot disturb one.

// rehearse rehearses the reissue of names (every configured certificate
// when all is set), max_concurrent at a time, and prints each rehearsal
// in the order of the configuration. The error names the first failed
// step of each certificate that would not get through.
func rehearse(ctx context.Context, cfgPath, name string, all, allow bool, stdout, stderr io.Writer) error {
	cfg, err := loadDaemonConfig(cfgPath, stderr)
	if err != nil {
		return err
	}
	var names []string
	if all {
		for _, cc := range cfg.Certificates {
			names = append(names, cc.Name)
		}
	} else {
		if err := checkName(cfg, cfgPath, name); err != nil {
			return err
		}
		names = []string{name}
	}
	d, closeAll, err := openRehearsal(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer closeAll()

	results := make([]*daemon.Rehearsal, len(names))
	sem := make(chan struct{}, max(cfg.Daemon.MaxConcurrent, 1))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			// The name was checked: Rehearse fails only for an unknown
			// one.
			results[i], _ = d.Rehearse(ctx, n, daemon.RehearseOptions{AllowDomainRemoval: allow})
		}()
	}
	wg.Wait()

	var failed []string
	var firstErr error
	for i, r := range results {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printRehearsal(stdout, r)
		if err := r.Err(); err != nil {
			failed = append(failed, r.Cert)
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	switch {
	case len(failed) == 0:
		return nil
	case ctx.Err() != nil:
		// Interrupted or out of time (--timeout): not a verdict.
		return fmt.Errorf("the rehearsal was cut short: %w", ctx.Err())
	case !all:
		return rehearsalFailed(firstErr.Error())
	}
	return rehearsalFailed(fmt.Sprintf("%d of %d certificates would not get through: %s (first: %v)", len(failed), len(names), strings.Join(failed, ", "), firstErr))
}

// rehearsalFailed is the verdict of a rehearsal that found a step the real
// run would fail at: exit status 1 whatever the step's cause. It keeps only
// the text, on purpose: a pre-flight problem wraps a *daemon.ConfigError,
// which would make the exit status 78, and a script must be able to tell
// "the rehearsal says no" from "the configuration cannot be loaded".
type rehearsalFailed string

func (e rehearsalFailed) Error() string { return string(e) }

// openRehearsal opens a daemon for rehearsals. Its state is read, never
// created: without a state database (no reissue has run yet) a throw-away
// one stands in, removed at close, so that a rehearsal run as root before
// the service ever started leaves no root-owned state behind.
func openRehearsal(ctx context.Context, cfg *config.Config, stderr io.Writer) (*daemon.Daemon, func(), error) {
	quiet := *cfg
	if quiet.Daemon.LogLevel != "error" {
		// The table is the output; the daemon's steps would drown it.
		quiet.Daemon.LogLevel = "warn"
	}
	log, err := newLogger(&quiet, stderr)
	if err != nil {
		return nil, nil, err
	}
	opts := daemon.Options{Log: log, Version: version, StopGrace: foregroundStopGrace}
	var cleanups []func()
	closeAll := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	if cfg.Store.Driver != config.StoreDriverPostgres {
		s, err := store.OpenSQLiteExisting(ctx, filepath.Join(cfg.Daemon.StateDir, "dcvd.db"))
		if errors.Is(err, fs.ErrNotExist) {
			tmp, terr := os.MkdirTemp("", "dcvd-rehearsal-")
			if terr != nil {
				return nil, nil, fmt.Errorf("a throw-away state for the rehearsal: %w", terr)
			}
			cleanups = append(cleanups, func() { os.RemoveAll(tmp) })
			s, err = store.OpenSQLite(ctx, filepath.Join(tmp, "dcvd.db"))
		}
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("open the state for the rehearsal: %w", err)
		}
		cleanups = append(cleanups, func() { s.Close() })
		opts.Store = s
	}
	d, err := newDaemon(ctx, cfg, opts)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	cleanups = append(cleanups, func() { closeDaemon(ctx, d, stderr) })
	return d, closeAll, nil
}

// printRehearsal renders r: every check with its time and result, then
// the reissue the real run would send, then the verdict.
func printRehearsal(w io.Writer, r *daemon.Rehearsal) {
	fmt.Fprintf(w, "rehearsal of certificate %s (nothing is paid, nothing is left behind):\n", r.Cert)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STEP\tTIME\tRESULT")
	for _, s := range r.Steps {
		result := "ok"
		switch {
		case s.Err != nil:
			result = "FAILED: " + oneLine(s.Err.Error())
			if s.Detail != "" {
				result += " (" + s.Detail + ")"
			}
		case s.Skipped:
			result = "skipped"
			if s.Detail != "" {
				result += ": " + s.Detail
			}
		case s.Detail != "":
			result += ": " + s.Detail
		}
		fmt.Fprintf(tw, "  %s\t%.3fs\t%s\n", s.Name, s.Duration.Seconds(), result)
	}
	tw.Flush()

	switch o := r.Plan; {
	case o == nil:
		fmt.Fprintf(w, "certificate %s: would send nothing: the plan is refused (see step plan)\n", r.Cert)
	case o.UniqueID != "":
		fmt.Fprintf(w, "certificate %s: order %s in flight at step %s would be resumed (service %s, key %s), for:\n",
			r.Cert, o.UniqueID, o.Step, o.ServiceID, o.KeyType)
		printNames(w, o)
	default:
		// The plan as "dcvd reissue --all --dry-run" printed it before it
		// rehearsed, then each name's method.
		fmt.Fprintf(w, "certificate %s: would reissue %s (service %s, key %s, a new key), sending:\n",
			r.Cert, strings.Join(o.Names, ", "), o.ServiceID, o.KeyType)
		printNames(w, o)
	}
	if err := r.Err(); err != nil {
		fmt.Fprintf(w, "certificate %s: the real run would fail at step %q: nothing was sent, nothing was paid\n", r.Cert, r.Failed()[0].Name)
		return
	}
	fmt.Fprintf(w, "certificate %s: the real run would get past every step dcvd controls; the rest is the CA's (the charge, its own checks, issuance)\n", r.Cert)
}

// printNames lists the names of o with their validation methods.
func printNames(w io.Writer, o *store.Order) {
	for _, n := range o.Names {
		fmt.Fprintf(w, "  %-40s %s\n", n, o.DomainDCV[n])
	}
}

// oneLine keeps a table row on one line: a pre-flight error may list
// several problems, an API reply may hold newlines.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
