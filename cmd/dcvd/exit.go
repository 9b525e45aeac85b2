package main

import (
	"context"
	"errors"
	"flag"

	"github.com/dcvd/dcvd/daemon/config"
)

// The exit statuses of every command, so that a script can tell "try
// again later" from "look at it": those of sysexits.h where one fits.
const (
	// exitOK: done.
	exitOK = 0
	// exitFailed: failed for good (an order the CA refused or whose
	// certificate failed verification, the domain-removal guard, a
	// redeploy that failed…): running the command again as it is will not
	// help.
	exitFailed = 1
	// exitUsage: the command line is wrong (unknown command or flag, a
	// missing or unknown NAME).
	exitUsage = 2
	// exitTempFail (EX_TEMPFAIL): not done yet, and resumable: the order is
	// still in flight (it timed out, was interrupted, gave up on repeated
	// failures, is in backoff, or another process drives it). Nothing is
	// lost; the same command again, dcvd retry or the daemon carries it on.
	exitTempFail = 75
	// exitConfig (EX_CONFIG): the configuration file cannot be read or has
	// problems (what dcvd check-config reports).
	exitConfig = 78
)

// exitCodesHelp is the table of exit statuses in the usage text.
const exitCodesHelp = `Exit status:
  0   done
  1   failed for good (running the same command again will not help)
  2   usage: unknown command or flag, missing or unknown NAME
  75  not done yet, resumable: the order is still in flight (timed out,
      interrupted, gave up on repeated failures, in backoff, or driven by
      another process); run the command again, dcvd retry NAME, or let the
      daemon carry it on
  78  configuration error: the file is unreadable or has problems
`

// usageError is a command line that is wrong: exit status 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// configError is a configuration that cannot be used: exit status 78.
type configError struct{ err error }

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// resumableError is work that is not done but not lost: exit status 75.
type resumableError struct{ err error }

func (e *resumableError) Error() string { return e.err.Error() }
func (e *resumableError) Unwrap() error { return e.err }

// asUsage marks err (nil stays nil) as a usage error; flag.ErrHelp stays
// itself, so that -h exits 0.
func asUsage(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{err}
}

func asConfig(err error) error {
	if err == nil {
		return nil
	}
	return &configError{err}
}

func asResumable(err error) error {
	if err == nil {
		return nil
	}
	return &resumableError{err}
}

// exitCode is the exit status for the error a command returned.
func exitCode(err error) int {
	var (
		ue *usageError
		ce *configError
		re *resumableError
		dc *config.ConfigError
	)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ce), errors.As(err, &dc):
		return exitConfig
	case errors.As(err, &re):
		return exitTempFail
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		// Interrupted or out of time, whatever the command: what it was
		// doing can be done again.
		return exitTempFail
	}
	return exitFailed
}
