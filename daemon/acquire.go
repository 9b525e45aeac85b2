package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/cluster"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// Driving an order takes, in this order: the certificate's claim in this
// process (one driver per certificate), its lease in a cluster (one node
// per certificate), and only then the order in flight or a new one, read
// and made under the lease. acquire does all three, and the handle it
// returns gives them back in the reverse order, once.

// orderHandle is an order its holder may drive: claimed, leased in a
// cluster, bound to its orderRun.
type orderHandle struct {
	*orderRun
	// ctx is the lease's context in a cluster (it ends when the lease is
	// lost or released), else the context acquire was given.
	ctx     context.Context
	release func()
}

// Release gives back the lease, then the claim. Idempotent. Whoever
// drives the order calls it once the drive returns.
func (h *orderHandle) Release() { h.release() }

// claimedError says that a driver of this process is at work on the
// certificate.
type claimedError struct{ cert string }

func (e *claimedError) Error() string {
	return fmt.Sprintf("certificate %s: its order is already being driven", e.cert)
}

// leaseError is acquire's failure to take the lease; it wraps
// store.ErrLeaseHeld when another node holds it.
type leaseError struct{ err error }

func (e *leaseError) Error() string { return e.err.Error() }
func (e *leaseError) Unwrap() error { return e.err }

// isClaimed reports whether err is acquire's *claimedError: a driver of
// this process is at work on the order.
func isClaimed(err error) bool {
	var claimed *claimedError
	return errors.As(err, &claimed)
}

// isLeaseRefused reports whether err is acquire's *leaseError: the lease
// was not taken.
func isLeaseRefused(err error) bool {
	var refused *leaseError
	return errors.As(err, &refused)
}

// acquire claims cc's certificate, takes its lease in a cluster, and finds
// its order in flight; when there is none, mk makes one (under the lease),
// or, with mk nil, the error is store.ErrNotFound. The error is a
// *claimedError, a *leaseError, the store's, or mk's; nothing is held then.
func (d *Daemon) acquire(ctx context.Context, cc *config.CertConfig, mk func(ctx context.Context) (*store.Order, error)) (*orderHandle, error) {
	if !d.claim(cc.Name) {
		return nil, &claimedError{cert: cc.Name}
	}
	h := &orderHandle{orderRun: &orderRun{d: d, cc: cc, st: d.writeStore()}, ctx: ctx}
	var lease *cluster.Lease
	if d.cluster != nil {
		l, err := d.cluster.Hold(ctx, cc.Name)
		if err != nil {
			d.release(cc.Name)
			return nil, &leaseError{fmt.Errorf("certificate %s: %w", cc.Name, err)}
		}
		lease, h.ctx = l, l.Context()
		h.lease, h.st = l.Context(), l.Store()
	}
	h.release = sync.OnceFunc(func() {
		if lease != nil {
			lease.Release()
		}
		d.release(cc.Name)
	})
	o, err := d.store.ActiveOrder(h.ctx, cc.Name)
	if errors.Is(err, store.ErrNotFound) && mk != nil {
		o, err = mk(h.ctx)
	}
	if err != nil {
		h.Release()
		return nil, err
	}
	h.o, h.log = o, d.orderLog(o)
	return h, nil
}

// goDrive drives h's order in a goroutine counted by wg, until it ends or
// h.ctx does, and releases h.
func (d *Daemon) goDrive(wg *sync.WaitGroup, h *orderHandle) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer h.Release()
		if err := h.drive(h.ctx, ReissueOptions{Wait: true}); err != nil && h.ctx.Err() == nil {
			if h.o.Step.Terminal() {
				h.log.Error("order ended in failure", zap.Error(err))
			} else {
				// Its step could not be recorded (the database is away):
				// the order stays in flight and is resumed, here or by
				// another node.
				h.log.Error("driver stopped; the order stays in flight and will be resumed",
					zap.String("step", string(h.o.Step)), zap.Error(err))
			}
		}
	}()
}

func (d *Daemon) claim(cert string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.driving[cert] {
		return false
	}
	d.driving[cert] = true
	return true
}

func (d *Daemon) release(cert string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.driving, cert)
}

func (d *Daemon) isDriving(cert string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.driving[cert]
}
