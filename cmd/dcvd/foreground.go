package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

// This file is how "dcvd reissue --wait" and "dcvd retry --wait" follow an
// order in the foreground, in this process or through the running daemon,
// and never hang on what waiting cannot mend: they stop on Ctrl-C or
// SIGTERM at once (the request at work included), at --timeout (a hard
// bound), and after three identical failures of a kind that the daemon's
// backoff only repeats. Whichever way they stop, the order stays in flight,
// resumable with its unique_id, and the message says where it stands and
// how to go on; the exit status is exitTempFail.

// foregroundStopGrace is daemon.Options.StopGrace for the commands that
// drive orders in this process: the step at work stops with the command.
// (Zero would mean daemon.DefaultStopGrace, 30 s, which is for the daemon:
// a step cut off is repeated on resume, and every step is safe to repeat.)
const foregroundStopGrace = time.Nanosecond

// giveUpAfter is how many identical failures in a row, of a kind that
// waiting will not mend, make a foreground command give up on an order.
// Three take about 40 s of the daemon's backoff (10 s, then 30 s).
const giveUpAfter = 3

// closeGrace bounds how long a command that was interrupted or ran out of
// time waits for the daemon to close: the bound the admin gave holds. The
// state is crash-safe; what a close cut short loses is at most a queued
// notification.
const closeGrace = 2 * time.Second

// stateReadWait bounds the look at the state after the command's context
// ended, to say where the order stands.
const stateReadWait = 2 * time.Second

// deterministicErr reports whether the failed try err is one that trying
// again after a wait will repeat: a reply of the CA that cannot be
// understood (not JSON, the wrong shape, over the size limit). The
// daemon's backoff retries it, with the same unique_id, in case the CA
// mends; a command in the foreground does not wait for that.
func deterministicErr(err error) bool {
	var de *reseller.DecodeError
	return errors.As(err, &de)
}

// decodeErrorMark is in the text of every reseller.DecodeError: the
// control socket and the state give an order's last error as text only.
const decodeErrorMark = ": cannot understand the reply (HTTP "

// deterministicText is deterministicErr for an error's text.
func deterministicText(msg string) bool {
	return strings.Contains(msg, decodeErrorMark)
}

// failureKey is what two failures must share to be identical: the error's
// text without the start of the reply body that a DecodeError quotes,
// since a CA's broken replies may each carry their own time stamp or
// request id.
func failureKey(msg string) string {
	key, _, _ := strings.Cut(msg, `; body starts "`)
	return key
}

// repeats counts the failed tries of an order, in a row, that ended in the
// same step with the same deterministic error. Any other failure resets
// it.
type repeats struct {
	step store.Step
	key  string
	n    int
}

// failed records a failed try of step whose error says msg, and returns
// how many identical deterministic failures there have been in a row.
func (r *repeats) failed(step store.Step, msg string, deterministic bool) int {
	if !deterministic {
		*r = repeats{}
		return 0
	}
	key := failureKey(msg)
	if step != r.step || key != r.key {
		*r = repeats{step: step, key: key}
	}
	r.n++
	return r.n
}

// seed counts the failure o records (if it failed last) as the first of a
// run: a command that resumes an order after such a failure gives up on
// the same failure sooner.
func (r *repeats) seed(o *store.Order) {
	if o.Attempts > 0 && !o.Step.Terminal() {
		r.failed(o.Step, o.LastError, deterministicText(o.LastError))
	}
}

// followWatch finds the failed tries in the successive looks at an order
// that the running daemon drives: its failed tries counter grows by one
// with each. It counts them with repeats.
type followWatch struct {
	rep      repeats
	seen     bool
	step     store.Step
	attempts int
}

// observe takes one look at the order; failed is set when a try failed
// since the last look, and n counts the identical deterministic failures
// in a row. The first look counts a failure the order records as the
// first one (see repeats.seed).
func (w *followWatch) observe(o *control.OrderStatus) (failed bool, n int) {
	if !w.seen || o.Step != w.step {
		// A new step starts with no failed try: the order made progress.
		if w.seen {
			w.rep = repeats{}
		}
		w.seen, w.step, w.attempts = true, o.Step, 0
	}
	switch {
	case o.Attempts > w.attempts:
		w.attempts = o.Attempts
		return true, w.rep.failed(o.Step, o.LastError, deterministicText(o.LastError))
	case o.Attempts < w.attempts:
		w.attempts = o.Attempts
	}
	return false, w.rep.n
}

// gaveUpError stops the drive (or the following) of an order after n
// identical failures that waiting will not mend; err is the last one.
type gaveUpError struct {
	n   int
	err error
}

func (e *gaveUpError) Error() string {
	return fmt.Sprintf("gave up after %d identical failures, which waiting will not mend: %v", e.n, e.err)
}

func (e *gaveUpError) Unwrap() error { return e.err }

// resumeHint says how to go on with an order left in flight: through the
// running daemon, or (without one) in the foreground again.
func resumeHint(name string, daemonRuns bool) string {
	if daemonRuns {
		return fmt.Sprintf("the running daemon keeps it in flight and carries it on with its backoff: dcvd retry %s tries it now, dcvd reissue %s --wait follows it again", name, name)
	}
	return fmt.Sprintf("resume with dcvd reissue %s --wait (it sends the same unique_id again: the CA charges once), or let the daemon carry it on (dcvd run; dcvd retry %s then tries it now)", name, name)
}

// backoffMessage says that o waits out a backoff, and what tries it now.
func backoffMessage(name string, o *store.Order) string {
	return fmt.Sprintf("certificate %s: order %s is in backoff at step %s after %s until %s (in %s; last error: %s); run dcvd retry %s to try it now",
		name, o.UniqueID, o.Step, plural(o.Attempts, "failure"), o.NextAttempt.UTC().Format(time.RFC3339),
		time.Until(o.NextAttempt).Round(time.Second), orNone(o.LastError), name)
}

// dueBefore reports whether t comes before ctx's deadline, if it has one.
func dueBefore(ctx context.Context, t time.Time) bool {
	deadline, ok := ctx.Deadline()
	return !ok || t.Before(deadline)
}

// stopReason says why ctx ended, for a command that was given timeout.
func stopReason(ctx context.Context, timeout time.Duration) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("not done after %s (--timeout)", timeout)
	}
	return "interrupted"
}

// inFlightMessage says where o stands and how to go on; lastError adds
// the error of its last failed try, unless the message has said it.
func inFlightMessage(name string, o *store.Order, daemonRuns, lastError bool) string {
	s := fmt.Sprintf("order %s is still in flight at step %s", o.UniqueID, o.Step)
	if o.Attempts > 0 {
		s += " after " + failedTries(o.Attempts)
		if lastError {
			s += fmt.Sprintf(" (last error: %s)", orNone(o.LastError))
		}
	}
	if !o.NextAttempt.IsZero() {
		s += ", next attempt " + o.NextAttempt.UTC().Format(time.RFC3339)
	}
	return s + "; " + resumeHint(name, daemonRuns)
}

// failedTries is "1 failed try", "3 failed tries".
func failedTries(n int) string {
	if n == 1 {
		return "1 failed try"
	}
	return fmt.Sprintf("%d failed tries", n)
}

// driveHere drives the order of name in this process (a new one, or the
// one in flight) until it ends or, without wait, until its first wait,
// and turns how that went into the command's output and result.
func driveHere(ctx context.Context, d *daemon.Daemon, name string, allow, wait bool, timeout time.Duration, stdout, stderr io.Writer) error {
	var rep repeats
	switch o, err := d.Store().ActiveOrder(ctx, name); {
	case err == nil:
		if daemon.InBackoff(o, time.Now()) {
			msg := backoffMessage(name, o)
			if !wait || !dueBefore(ctx, o.NextAttempt) {
				return asResumable(errors.New(msg))
			}
			fmt.Fprintln(stderr, msg+"; waiting for it meanwhile")
		}
		rep.seed(o)
	case errors.Is(err, store.ErrNotFound):
	case ctx.Err() != nil:
		return asResumable(fmt.Errorf("certificate %s: %s before any order was started or resumed: %w", name, stopReason(ctx, timeout), err))
	default:
		return err
	}
	o, err := d.Reissue(ctx, name, daemon.ReissueOptions{AllowDomainRemoval: allow, Wait: wait,
		Retrying: func(o *store.Order, err error) error {
			if n := rep.failed(o.Step, err.Error(), deterministicErr(err)); n >= giveUpAfter {
				return &gaveUpError{n: n, err: err}
			}
			return nil
		}})
	if err != nil {
		return driveFailure(ctx, d, name, o, err, timeout)
	}
	printOrderEnd(stdout, name, o)
	return nil
}

// printOrderEnd says where order o of name stands once the command is
// done with it: deployed, or at a step the daemon carries on from.
func printOrderEnd(stdout io.Writer, name string, o *store.Order) {
	switch o.Step {
	case store.StepDone:
		fmt.Fprintf(stdout, "certificate %s: serial %s deployed, valid until %s (order %s, cost %.2f)\n",
			name, o.Serial, o.NotAfter.UTC().Format(time.RFC3339), o.UniqueID, o.Cost)
	default:
		fmt.Fprintf(stdout, "certificate %s: order %s at step %s; the daemon carries it on\n", name, o.UniqueID, o.Step)
	}
}

// driveFailure is the result of a drive in this process that ended with
// err; o is the order as the driver left it (nil when none was had).
func driveFailure(ctx context.Context, d *daemon.Daemon, name string, o *store.Order, err error, timeout time.Duration) error {
	if o != nil && o.Step == store.StepFailed {
		return err // the CA refused, or what it issued was refused
	}
	// The state says where the order stands: a step cut off may not have
	// been recorded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateReadWait)
	defer cancel()
	if cur, rerr := d.Store().ActiveOrder(rctx, name); rerr == nil {
		o = cur
	} else if errors.Is(rerr, store.ErrNotFound) && (o == nil || !o.Step.Terminal()) {
		o = nil
	}
	var gu *gaveUpError
	switch {
	case errors.As(err, &gu):
		if o == nil {
			return asResumable(fmt.Errorf("certificate %s: %w", name, err))
		}
		return asResumable(fmt.Errorf("certificate %s: %w\n%s", name, err, inFlightMessage(name, o, false, false)))
	case ctx.Err() != nil:
		why := stopReason(ctx, timeout)
		if o == nil {
			return asResumable(fmt.Errorf("certificate %s: %s before any order was recorded: nothing is in flight", name, why))
		}
		return asResumable(fmt.Errorf("certificate %s: %s: %s", name, why, inFlightMessage(name, o, false, true)))
	case errors.Is(err, store.ErrLeaseHeld):
		// Another node of the cluster drives it.
		return asResumable(err)
	case o != nil && !o.Step.Terminal():
		// A step failed and will be retried (without --wait), or its
		// result could not be recorded: nothing is lost.
		return asResumable(fmt.Errorf("%w\n%s", err, inFlightMessage(name, o, false, false)))
	}
	return err
}

// followViaControl follows the order o that the running daemon drives
// until it ends, printing its steps and failed tries on stderr, and gives
// up (the daemon carries it on) on the context's end or after identical
// failures that waiting will not mend.
func followViaControl(ctx context.Context, c *control.Client, name string, o *store.Order, timeout time.Duration, stdout, stderr io.Writer) error {
	uid := o.UniqueID
	fmt.Fprintf(stderr, "certificate %s: the running daemon drives order %s; following it\n", name, uid)
	var (
		w    followWatch
		last store.Step
	)
	end, err := c.Follow(ctx, name, uid, controlPoll, func(st *control.OrderStatus) error {
		if st.Step != last {
			last = st.Step
			fmt.Fprintf(stderr, "certificate %s: order %s at step %s\n", name, uid, st.Step)
		}
		failed, n := w.observe(st)
		if !failed {
			return nil
		}
		next := "-"
		if st.NextAttempt != nil {
			next = st.NextAttempt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(stderr, "certificate %s: order %s: try %d of step %s failed: %s (next attempt %s)\n",
			name, uid, st.Attempts, st.Step, orNone(st.LastError), next)
		if n >= giveUpAfter {
			return &gaveUpError{n: n, err: errors.New(st.LastError)}
		}
		return nil
	})
	if err != nil {
		var gu *gaveUpError
		switch {
		case errors.As(err, &gu):
			if end == nil {
				return asResumable(fmt.Errorf("certificate %s: %w; %s", name, err, resumeHint(name, true)))
			}
			return asResumable(fmt.Errorf("certificate %s: %w\n%s", name, err, inFlightMessage(name, end, true, false)))
		case ctx.Err() != nil:
			why := stopReason(ctx, timeout)
			if end == nil {
				return asResumable(fmt.Errorf("certificate %s: %s: order %s stays in flight; %s", name, why, uid, resumeHint(name, true)))
			}
			return asResumable(fmt.Errorf("certificate %s: %s: %s", name, why, inFlightMessage(name, end, true, true)))
		case end != nil && !end.Step.Terminal():
			// The daemon stopped answering (it is stopping, say): the
			// order is in the state, resumed when a daemon runs.
			return asResumable(fmt.Errorf("certificate %s: following order %s: %w; it stays in flight at step %s", name, uid, err, end.Step))
		}
		return err
	}
	if end.Step == store.StepFailed {
		return fmt.Errorf("certificate %s: order %s failed: %s", name, end.UniqueID, end.LastError)
	}
	// At another step than done, its certificate left the daemon's
	// configuration meanwhile.
	printOrderEnd(stdout, name, end)
	return nil
}

// controlFailure is the result of a request to the running daemon that
// failed with err.
func controlFailure(ctx context.Context, name string, err error, timeout time.Duration) error {
	var ce *control.Error
	if errors.As(err, &ce) {
		switch ce.Code {
		case control.CodeUnknownCertificate:
			return asUsage(err)
		case control.CodeBusy, control.CodeLeaseHeld, control.CodeStopping:
			return asResumable(err)
		}
		return err
	}
	if ctx.Err() != nil {
		return asResumable(fmt.Errorf("certificate %s: %s before the running daemon answered: %w", name, stopReason(ctx, timeout), err))
	}
	return err
}

// closeDaemon closes d, then its notifications (see newDaemon); once ctx
// has ended (the command was interrupted or ran out of time) it waits at
// most closeGrace for that.
func closeDaemon(ctx context.Context, d *daemon.Daemon, stderr io.Writer) {
	if ctx.Err() == nil {
		d.Close()
		closeNotifications(d)
		return
	}
	done := make(chan struct{})
	go func() {
		d.Close()
		closeNotifications(d)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeGrace):
		fmt.Fprintf(stderr, "dcvd: the state is still closing after %s; exiting (it is safe: every step is recorded before it is acted on)\n", closeGrace)
	}
}
