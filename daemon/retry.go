package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file is "dcvd retry NAME": the admin's way to have an order in
// backoff (a step that failed, say, ten times and now waits a day) tried
// now. Neither a reissue, a reload nor a restart does that: each resumes
// the order where it stands, and it stands waiting until NextAttempt.

// NoOrderError says that a certificate has no order in flight to retry.
// It wraps ErrNotFound.
type NoOrderError struct{ Cert string }

func (e *NoOrderError) Error() string {
	return fmt.Sprintf("certificate %s has no order in flight; dcvd reissue %s starts one", e.Cert, e.Cert)
}

func (e *NoOrderError) Unwrap() error { return store.ErrNotFound }

// busyError says that the certificate is claimed in this process by
// something that is not a driver waiting on its order (a redeploy, or a
// driver just ending): there is nothing to wake and nothing may be
// written under its feet.
type busyError struct{ cert string }

func (e *busyError) Error() string {
	return fmt.Sprintf("certificate %s is busy (a redeploy, or its order is just ending): try again in a moment", e.cert)
}

// InBackoff reports whether o waits out the backoff of failed tries at
// now: its last try failed and the next one is not due yet. Nothing tries
// it before NextAttempt unless someone asks (Retry).
func InBackoff(o *store.Order, now time.Time) bool {
	return o != nil && !o.Step.Terminal() && o.Attempts > 0 && o.NextAttempt.After(now)
}

// Retry has the order in flight of the certificate name tried now. Its
// failed tries (Attempts) and last error stay as they are: the try that
// follows counts like any other, and a failure moves the backoff on.
//
//   - A driver of this process at work on the order is woken: it alone
//     writes the order (a write from here could undo a step it has just
//     recorded).
//   - Otherwise NextAttempt is recorded as now (under the certificate's
//     lease in a cluster, taken and given back as Reissue does), so that
//     whoever drives the order next tries it at once; the other nodes of a
//     cluster are told, and one of them takes it up now.
//   - In a cluster where another node holds the lease, that node drives the
//     order and nothing is changed (RetryElsewhere).
//
// A certificate without an order in flight is a *NoOrderError.
func (d *Daemon) Retry(ctx context.Context, name string) (*control.RetryResult, error) {
	return d.retry(ctx, name, nil)
}

// retry is Retry. takeOver, when set, is given the order once it is
// recorded as due, claimed and leased: it must drive the order and
// release h. The result is then RetryStarted.
func (d *Daemon) retry(ctx context.Context, name string, takeOver func(h *orderHandle)) (*control.RetryResult, error) {
	cc, err := d.certConfig(name)
	if err != nil {
		return nil, err
	}
	o, err := d.activeOrder(ctx, name)
	if err != nil {
		return nil, err
	}
	// Read again under the lease: the node that held it may have moved the
	// order on, or ended it.
	h, err := d.acquire(ctx, cc, nil)
	switch {
	case isClaimed(err):
		if d.wakeOrder(o.UniqueID, wakeRetry) {
			d.orderLog(o).Info("retry asked for: waking the order's driver", zap.String("step", string(o.Step)),
				zap.Int("failed_tries", o.Attempts), zap.Time("was_due", o.NextAttempt))
			return &control.RetryResult{Order: o, How: control.RetryWoken}, nil
		}
		// Claimed here for a moment only (this node's look at the order,
		// about to find the lease held), while another node drives it:
		// that is where the retry goes.
		if holder := d.heldElsewhere(ctx, name); holder != "" {
			return &control.RetryResult{Order: o, How: control.RetryElsewhere, Holder: holder}, nil
		}
		return nil, &busyError{cert: name}
	case isLeaseRefused(err) && errors.Is(err, store.ErrLeaseHeld):
		return &control.RetryResult{Order: o, How: control.RetryElsewhere, Holder: d.leaseHolder(ctx, name)}, nil
	case isLeaseRefused(err):
		return nil, err
	case errors.Is(err, store.ErrNotFound):
		return nil, &NoOrderError{Cert: name}
	case err != nil:
		return nil, fmt.Errorf("certificate %s: read the order in flight: %w", name, err)
	}
	o = h.o
	if now := d.now(); o.NextAttempt.After(now) {
		o.NextAttempt = now
		if err := h.st.PutOrder(h.ctx, o); err != nil {
			h.Release()
			return nil, fmt.Errorf("certificate %s: record the retry of order %s: %w", name, o.UniqueID, err)
		}
	}
	h.log.Info("retry asked for: the next attempt is now", zap.String("step", string(o.Step)),
		zap.Int("failed_tries", o.Attempts), zap.String("last_error", o.LastError))
	if takeOver != nil {
		// The driver changes o from here on: the result is a copy read
		// before it starts.
		view, err := d.store.Order(h.ctx, o.UniqueID)
		if err != nil {
			view = &store.Order{UniqueID: o.UniqueID, Cert: o.Cert, Step: o.Step, Attempts: o.Attempts,
				NextAttempt: o.NextAttempt, LastError: o.LastError, Created: o.Created, Cost: o.Cost}
		}
		takeOver(h)
		return &control.RetryResult{Order: view, How: control.RetryStarted}, nil
	}
	h.Release()
	// The lease is free and the order due: told now, the nodes of a
	// cluster look at once instead of at their next sync, and one of them
	// drives it. A lost notification only delays that to the next sync.
	d.cluster.Announce(ctx, store.ClusterEvent{Kind: store.EventOrder, Cert: name, UniqueID: o.UniqueID})
	return &control.RetryResult{Order: o, How: control.RetryRecorded}, nil
}

// activeOrder is the order in flight of name, or a *NoOrderError.
func (d *Daemon) activeOrder(ctx context.Context, name string) (*store.Order, error) {
	o, err := d.store.ActiveOrder(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &NoOrderError{Cert: name}
	}
	if err != nil {
		return nil, fmt.Errorf("certificate %s: read the order in flight: %w", name, err)
	}
	return o, nil
}

// heldElsewhere names the node other than this one whose lease on cert
// the database records, "" when there is none, it is this node's, or this
// is no cluster.
func (d *Daemon) heldElsewhere(ctx context.Context, cert string) string {
	if d.cluster == nil {
		return ""
	}
	if h := d.cluster.Holder(ctx, cert); h != d.cluster.Name() {
		return h
	}
	return ""
}

// leaseHolder names the node that holds cert's lease, "" when it cannot
// be read (the answer is then only less precise).
func (d *Daemon) leaseHolder(ctx context.Context, cert string) string {
	if d.cluster == nil {
		return ""
	}
	return d.cluster.Holder(ctx, cert)
}
