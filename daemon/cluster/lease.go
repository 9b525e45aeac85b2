package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/store"
)

// Lease is a certificate's lease this process holds and renews.
type Lease struct {
	// ctx ends when the lease is lost or released, or the context it was
	// taken under ends; context.Cause tells which (LostError).
	ctx context.Context
	// fenced is the store through which the holder writes.
	fenced store.Store
	// release gives the lease up (idempotent).
	release func()
}

// Context ends when the lease is lost (its cause a *LostError) or
// released.
func (l *Lease) Context() context.Context { return l.ctx }

// Store is the store the holder writes through: each write is fenced by
// the lease.
func (l *Lease) Store() store.Store { return l.fenced }

// Release gives the lease up; idempotent.
func (l *Lease) Release() { l.release() }

// LostError is the cause of a Lease's context when the lease was lost:
// the driver stops at once, not after the stop grace.
type LostError struct{ err error }

func (e *LostError) Error() string { return "lease lost: " + e.err.Error() }
func (e *LostError) Unwrap() error { return e.err }

// errReleased is the cause of a Lease's context after release.
var errReleased = errors.New("lease released")

// Hold takes the lease of cert and keeps it renewed, until release or
// until it cannot be renewed before it would expire. The error wraps
// ErrLeaseHeld when another node holds it.
func (n *Node) Hold(ctx context.Context, cert string) (*Lease, error) {
	n.mu.Lock()
	_, mine := n.held[cert]
	n.mu.Unlock()
	if mine {
		return nil, fmt.Errorf("certificate %s: this process holds its lease already: %w", cert, store.ErrLeaseHeld)
	}
	// The local deadline counts from before the request: the database's
	// expiry is later than that, never earlier.
	start := time.Now()
	l, err := n.store.AcquireLease(ctx, cert, n.node, n.lease)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	var wg sync.WaitGroup
	h := &Lease{ctx: lctx, fenced: n.store.Fenced(l)}
	var lease = l // the renewals' copy; only the renewing goroutine writes it until wg.Wait
	h.release = sync.OnceFunc(func() {
		close(done)
		wg.Wait()
		cancel(errReleased)
		n.mu.Lock()
		if n.held[cert] == h {
			delete(n.held, cert)
		}
		n.mu.Unlock()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		if err := n.store.ReleaseLease(rctx, lease); err != nil {
			// It expires on its own; another node only waits longer.
			n.log.Warn("releasing the lease", zap.String("cert", cert), zap.Error(err))
		}
	})
	n.mu.Lock()
	n.held[cert] = h
	n.mu.Unlock()
	n.log.Debug("lease taken", zap.String("cert", cert), zap.Int64("token", l.Token))

	wg.Add(1)
	go func() {
		defer wg.Done()
		n.renew(lctx, cancel, done, cert, start, &lease)
	}()
	return h, nil
}

// renew keeps *lease renewed until done or lctx ends; when it is lost, or
// cannot be renewed while it is surely still ours, it ends lctx with a
// *LostError.
func (n *Node) renew(lctx context.Context, cancel context.CancelCauseFunc, done chan struct{}, cert string, start time.Time, lease *store.Lease) {
	deadline := start.Add(n.lease)
	for {
		select {
		case <-done:
			return
		case <-lctx.Done():
			return
		case <-time.After(n.lease / 3):
		}
		t0 := time.Now()
		rctx, rcancel := context.WithTimeout(lctx, n.lease/3)
		nl, err := n.store.RenewLease(rctx, *lease, n.lease)
		rcancel()
		switch {
		case err == nil:
			*lease, deadline = nl, t0.Add(n.lease)
		case errors.Is(err, store.ErrLeaseLost):
			n.log.Error("lease lost; stopping work on the certificate", zap.String("cert", cert), zap.Error(err))
			cancel(&LostError{err})
			return
		case lctx.Err() != nil:
			return
		default:
			// The database may come back in time; stop while the
			// lease is surely still ours, so that no step overlaps
			// another node's.
			n.log.Warn("renewing the lease", zap.String("cert", cert), zap.Error(err))
			if time.Until(deadline) < n.lease/3 {
				n.log.Error("the lease could not be renewed and expires soon; stopping work on the certificate", zap.String("cert", cert))
				cancel(&LostError{fmt.Errorf("not renewed before its expiry: %w", err)})
				return
			}
		}
	}
}

// Held returns the lease this process holds on cert, or nil.
func (n *Node) Held(cert string) *Lease {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.held[cert]
}

// StoreFor is the store through which this process writes cert: the
// fenced view of its lease. Without the lease, writes of that certificate
// are refused: only the lease holder writes an order or a live
// certificate.
func (n *Node) StoreFor(cert string) store.Store {
	if h := n.Held(cert); h != nil {
		return h.fenced
	}
	return unleasedStore{n.store}
}

// unleasedStore refuses the writes of a node that does not hold the lease.
type unleasedStore struct{ store.Store }

func (s unleasedStore) err(cert string) error {
	return fmt.Errorf("certificate %s: this node does not hold its lease: %w", cert, store.ErrLeaseLost)
}
func (s unleasedStore) PutOrder(_ context.Context, o *store.Order) error { return s.err(o.Cert) }
func (s unleasedStore) PutCertificate(_ context.Context, c *store.Certificate) error {
	return s.err(c.Name)
}
func (s unleasedStore) AddAttempt(_ context.Context, a store.Attempt) error { return s.err(a.Cert) }
