package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/cluster"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/metrics"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

// This file drives an order: drive loops over its steps (steps.go),
// waiting out backoffs and the CA, and records each try that failed. Each
// step performs its side effect and persists the next step before
// returning; every side effect is safe to repeat, so that an order that
// was interrupted anywhere resumes by running its recorded step again.

// errWaiting says the order waits for the CA (NextAttempt is set): not a
// failure.
var errWaiting = errors.New("waiting for the CA")

// fatalError ends an order: retrying the same order cannot help.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func fatal(format string, args ...any) error {
	return &fatalError{fmt.Errorf(format, args...)}
}

// orderRun is one order as its driver sees it, built once by acquire.
type orderRun struct {
	d  *Daemon
	cc *config.CertConfig
	o  *store.Order
	// st is the store the driver writes through: in a cluster, the
	// lease's fenced view (storeFor).
	st  store.Store
	log *zap.Logger // names the certificate and the order
	// lease ends when the cluster lease is lost or released; nil outside
	// a cluster.
	lease context.Context
	// poll is the wait before the next look for the certificate; it grows
	// while the CA works.
	poll time.Duration
}

// drive advances the order until it ends or, unless opt.Wait, until it
// must wait. Steps run under work and waits under ctx: once ctx ends no
// step starts, and the one at work may finish within the stop grace.
func (r *orderRun) drive(ctx context.Context, opt ReissueOptions) error {
	d, o := r.d, r.o
	wake, unwake := d.wakeChan(o.UniqueID)
	defer unwake()
	if err := d.files.Serve(ctx, r.cc, o); err != nil {
		r.log.Warn("serving validation files", zap.Error(err))
	}
	r.poll = d.config().Daemon.PollInterval
	if r.poll <= 0 {
		r.poll = 10 * time.Second
	}
	work, endWork := d.workContext(ctx)
	defer endWork()
	if r.lease != nil {
		// A lost lease stops the step at once: another node may be
		// driving the order already.
		stop := context.AfterFunc(r.lease, func() {
			var lost *cluster.LostError
			if errors.As(context.Cause(r.lease), &lost) {
				endWork()
			}
		})
		defer stop()
	}
	for !o.Step.Terminal() {
		hint, due, err := r.waitDue(ctx, wake, opt.Wait)
		if !due {
			return err
		}
		sem := d.semaphore() // a reload may replace it: release this one
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if ctx.Err() != nil {
			// The select picks at random when the slot frees as ctx ends.
			<-sem
			return ctx.Err()
		}
		step := o.Step
		err = r.advance(work)
		<-sem
		switch {
		case err == nil || errors.Is(err, errWaiting):
			d.recovered(o, step)
		case work.Err() != nil:
			return work.Err()
		default:
			if end, err := r.failed(work, step, err, hint, opt); end {
				return err
			}
		}
	}
	if o.Step == store.StepFailed {
		return fmt.Errorf("certificate %s: order %s failed: %s", o.Cert, o.UniqueID, o.LastError)
	}
	return nil
}

// waitDue waits until the order's next attempt is due, or returns due
// false (with ctx's error, or none without opt.Wait) when it will not
// wait. hint: this try was prompted by a callback before its time. It may
// find the certificate early, but its failure is no news: it neither
// counts as an attempt nor moves the backoff.
func (r *orderRun) waitDue(ctx context.Context, wake <-chan wakeReason, wait bool) (hint, due bool, err error) {
	delay := r.o.NextAttempt.Sub(r.d.now())
	if delay <= 0 {
		return false, true, nil
	}
	if !wait {
		return false, false, nil
	}
	select {
	case <-ctx.Done():
		return false, false, ctx.Err()
	case why := <-wake:
		if hint = why == wakeCallback; hint {
			r.log.Info("callback received: checking the order now")
		} else {
			r.log.Info("retry requested: trying the order now")
		}
	case <-time.After(delay):
	}
	return hint, true, nil
}

// failed follows a failed try of step: a fatal error ends the order, any
// other is recorded and retried after a backoff. It reports whether the
// drive ends, and with what error.
func (r *orderRun) failed(work context.Context, step store.Step, err error, hint bool, opt ReissueOptions) (bool, error) {
	d, o, log := r.d, r.o, r.log
	var fe *fatalError
	if errors.As(err, &fe) {
		r.fail(work, err)
		return true, fmt.Errorf("certificate %s: order %s failed: %w", o.Cert, o.UniqueID, err)
	}
	if hint {
		log.Info("the check prompted by the callback failed; the backoff stays as it was",
			zap.String("step", string(o.Step)), zap.Time("next_attempt", o.NextAttempt), zap.Error(err))
		return false, nil
	}
	d.metrics.Failure(o.Cert, failureReason(o.Step, err))
	o.Attempts++
	o.LastError = err.Error()
	o.NextAttempt = d.now().Add(failedTryBackoff(o, step, err))
	log.Warn("step failed; will retry", zap.String("step", string(o.Step)), zap.Int("attempt", o.Attempts),
		zap.Time("next_attempt", o.NextAttempt), zap.Error(err))
	if perr := r.st.PutOrder(work, o); perr != nil {
		return true, errors.Join(err, perr)
	}
	d.alertRetrying(o, step, err)
	if opt.Retrying != nil {
		if rerr := opt.Retrying(o, err); rerr != nil {
			return true, rerr
		}
	}
	if !opt.Wait {
		return true, fmt.Errorf("certificate %s: %s: %w (will retry at %s)", o.Cert, o.Step, err, o.NextAttempt.Format(time.RFC3339))
	}
	return false, nil
}

// retryBackoff is the wait before retry n of a failed step: quick at
// first (a provider's hiccup), then spread over days, never a hot loop.
func retryBackoff(n int) time.Duration {
	steps := []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute,
		time.Hour, 4 * time.Hour, 12 * time.Hour}
	if n-1 < len(steps) {
		return steps[max(n-1, 0)]
	}
	return 24 * time.Hour
}

// reloadBackoffStart is where the backoff of a failed reload starts in
// retryBackoff's steps: at a minute, not 10 s. A reload that failed
// fails again until someone mends the web server's configuration, and
// each try reloads the web server twice (the new files, then the restored
// ones).
const reloadBackoffStart = 3

// failedTryBackoff is how long o waits after try o.Attempts failed in
// step with err: retryBackoff, later for a failed reload, and never sooner
// than a CA that said when to come back (429, 503) asked.
func failedTryBackoff(o *store.Order, step store.Step, err error) time.Duration {
	n := o.Attempts
	if step == store.StepDeployed {
		n += reloadBackoffStart - 1
	}
	wait := retryBackoff(n)
	if ra := reseller.RetryAfter(err); ra > wait {
		wait = ra
	}
	return wait
}

// next records that the order reached step; a step reached resets the
// retries, except inside the deploy phase: installing the files (issued →
// deployed) is no progress while the reload that follows keeps failing
// and rolls them back, so the tries count on, and the backoff grows,
// until the reload succeeds.
func (r *orderRun) next(ctx context.Context, step store.Step) error {
	o := r.o
	o.Step = step
	if step != store.StepDeployed {
		o.Attempts, o.LastError = 0, ""
	}
	if step != store.StepRechecked {
		o.NextAttempt = time.Time{}
	}
	if err := r.st.PutOrder(ctx, o); err != nil {
		return err
	}
	r.d.stepped(ctx, o)
	return nil
}

// stepped follows a persisted step: log, metrics, the other nodes of a
// cluster, and the crash tests' hook.
func (d *Daemon) stepped(ctx context.Context, o *store.Order) {
	d.orderLog(o).Info("step", zap.String("step", string(o.Step)))
	if o.Step.Terminal() {
		d.metrics.SetStep(o.Cert, "")
	} else {
		d.metrics.SetStep(o.Cert, string(o.Step))
	}
	d.cluster.Announce(ctx, store.ClusterEvent{Kind: store.EventOrder, Cert: o.Cert, UniqueID: o.UniqueID})
	if d.afterStep != nil {
		d.afterStep(o)
	}
}

// fail ends the order: its DCV is cleaned up and the attempt recorded.
func (r *orderRun) fail(ctx context.Context, cause error) {
	d, o, log := r.d, r.o, r.log
	log.Error("order failed", zap.String("step", string(o.Step)), zap.Error(cause))
	d.metrics.Failure(o.Cert, failureReason(o.Step, cause))
	if see := (*ServiceEndedError)(nil); !errors.As(cause, &see) {
		// An ended service is announced once by announceServices,
		// not once per order it stops.
		d.alertOrderFailed(o, cause)
	}
	if err := d.cleanup(ctx, r.cc, o); err != nil {
		log.Warn("cleaning up after the failure", zap.Error(err))
	}
	if err := r.st.AddAttempt(ctx, store.Attempt{Cert: o.Cert, UniqueID: o.UniqueID, Started: o.Created, Finished: d.now(),
		Outcome: store.StepFailed, Cost: o.Cost, Error: cause.Error()}); err != nil {
		log.Error("recording the failure", zap.Error(err))
	}
	o.LastError = cause.Error()
	o.Step = store.StepFailed
	if err := r.st.PutOrder(ctx, o); err != nil {
		log.Error("recording the failure", zap.Error(err))
	}
	d.stepped(ctx, o)
}

// failureReason sorts a failure for dcvd_failures_total by the step it
// happened in.
func failureReason(step store.Step, err error) string {
	var pe *PreflightError
	if errors.As(err, &pe) {
		return metrics.FailurePreflight
	}
	switch step {
	case store.StepNew, store.StepVisible:
		return metrics.FailureAPI
	case store.StepSubmitted, store.StepPublishing, store.StepPublished:
		return metrics.FailureDCV
	case store.StepRechecked:
		var fe *fatalError
		if errors.As(err, &fe) {
			return metrics.FailureVerify
		}
		return metrics.FailureAPI
	case store.StepIssued:
		return metrics.FailureDeploy
	case store.StepDeployed:
		return metrics.FailureReload
	}
	return metrics.FailureOther
}
