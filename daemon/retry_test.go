package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/internal/pgtest"
	"github.com/dcvd/dcvd/reseller"
)

// farBackoff is how far the tests push an order's next attempt: what a
// dozen failures lead to, and far beyond any test's bound.
const farBackoff = 24 * time.Hour

// orderInBackoff leaves an order of hCert in flight at step new after a
// failed try (the CA took the reissue but its reply was lost), with its
// next attempt pushed farBackoff away, as after many failures, and nobody
// driving it. It returns the order as stored.
func orderInBackoff(t *testing.T, h *harness, d *Daemon) *store.Order {
	t.Helper()
	ctx := hCtx(t)
	h.mu.Lock()
	h.lose = func(path string) bool { return path == reseller.PathReissue }
	h.mu.Unlock()
	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
	h.mu.Lock()
	h.lose = nil
	h.mu.Unlock()
	if err == nil || o == nil || o.Step != store.StepNew || o.Attempts != 1 || o.LastError == "" {
		t.Fatalf("a reissue whose reply was lost: %+v, %v; want an order at step new with one failed try", o, err)
	}
	stored, err := d.store.ActiveOrder(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	stored.NextAttempt = h.clock.Now().Add(farBackoff)
	if err := d.store.PutOrder(ctx, stored); err != nil {
		t.Fatal(err)
	}
	return stored
}

// waitDriverWaiting waits until a driver of d waits on the order uid.
func waitDriverWaiting(t *testing.T, d *Daemon, uid string) {
	t.Helper()
	if !driverWaitsWithin(d, uid, 20*time.Second) {
		t.Fatalf("no driver waits on order %s", uid)
	}
}

// driverWaitsWithin reports whether a driver of d waits on the wake
// channel of the order uid before the time given is up.
func driverWaitsWithin(d *Daemon, uid string, within time.Duration) bool {
	for deadline := time.Now().Add(within); ; time.Sleep(5 * time.Millisecond) {
		d.mu.Lock()
		_, waiting := d.wake[uid]
		d.mu.Unlock()
		if waiting {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestRetryWakesWaitingDriver: a driver waiting out a day of backoff is
// woken by Retry and tries the order at once, to the end, with the same
// unique_id (one charge); the failed tries are not forgotten meanwhile.
func TestRetryWakesWaitingDriver(t *testing.T) {
	h := newHarness(t)
	d := h.daemon(h.config(hDomains()), nil)
	ctx := hCtx(t)
	stuck := orderInBackoff(t, h, d)

	type drove struct {
		o   *store.Order
		err error
	}
	done := make(chan drove, 1)
	go func() {
		o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
		done <- drove{o, err}
	}()
	waitDriverWaiting(t, d, stuck.UniqueID)
	select {
	case r := <-done:
		t.Fatalf("the driver did not wait out the backoff: %+v, %v", r.o, r.err)
	default:
	}

	res, err := d.Retry(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if res.How != control.RetryWoken || res.Order.UniqueID != stuck.UniqueID {
		t.Fatalf("Retry: %+v, want the waiting driver of %s woken", res, stuck.UniqueID)
	}
	if res.Order.Attempts != 1 || res.Order.LastError != stuck.LastError {
		t.Errorf("Retry reports %d failed tries (%q), want the order's 1 (%q)", res.Order.Attempts, res.Order.LastError, stuck.LastError)
	}
	select {
	case r := <-done:
		if r.err != nil || r.o.Step != store.StepDone || r.o.UniqueID != stuck.UniqueID {
			t.Fatalf("the woken driver ended with %+v, %v; want order %s done", r.o, r.err, stuck.UniqueID)
		}
	case <-ctx.Done():
		t.Fatal("the woken driver did not finish the order")
	}
	if n := h.charges(stuck.UniqueID); n != 1 || len(h.sb.Ledger()) != 1 {
		t.Errorf("charged %d times for the order, %d in all; want once", n, len(h.sb.Ledger()))
	}
}

// TestRetryRecordsWhenNobodyDrives: without a driver in the process,
// Retry records the next attempt as due now and keeps the failed tries
// and the last error; a driver started later tries it at once.
func TestRetryRecordsWhenNobodyDrives(t *testing.T) {
	h := newHarness(t)
	d := h.daemon(h.config(hDomains()), nil)
	ctx := hCtx(t)
	stuck := orderInBackoff(t, h, d)

	before := h.clock.Now()
	res, err := d.Retry(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if res.How != control.RetryRecorded {
		t.Fatalf("Retry without a driver: %s, want %s", res.How, control.RetryRecorded)
	}
	stored, err := d.store.ActiveOrder(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if stored.UniqueID != stuck.UniqueID || stored.NextAttempt.Before(before) || stored.NextAttempt.After(h.clock.Now()) {
		t.Errorf("after Retry the order %s is due at %s, want now (%s)", stored.UniqueID, stored.NextAttempt, before)
	}
	if stored.Attempts != stuck.Attempts || stored.LastError != stuck.LastError || stored.Step != stuck.Step {
		t.Errorf("Retry changed the order's record: %d tries, %q at %s; want %d, %q at %s",
			stored.Attempts, stored.LastError, stored.Step, stuck.Attempts, stuck.LastError, stuck.Step)
	}
	if InBackoff(stored, h.clock.Now()) {
		t.Error("the order is still in backoff after Retry")
	}
	// hCtx bounds this far below the day of backoff.
	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	if err != nil || o.Step != store.StepDone || o.UniqueID != stuck.UniqueID {
		t.Fatalf("the retried order ended with %+v, %v; want %s done", o, err, stuck.UniqueID)
	}
}

// TestRetryRefusals: no order in flight (with the advice to reissue), an
// unknown certificate, and a certificate held by something that is not a
// driver waiting on its order.
func TestRetryRefusals(t *testing.T) {
	h := newHarness(t)
	d := h.daemon(h.config(hDomains()), nil)
	ctx := hCtx(t)

	_, err := d.Retry(ctx, hCert)
	var noe *NoOrderError
	if !errors.As(err, &noe) || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Retry without an order: %v, want a *NoOrderError", err)
	}
	if want := "certificate shop has no order in flight; dcvd reissue shop starts one"; err.Error() != want {
		t.Errorf("Retry without an order: %q, want %q", err, want)
	}
	if _, err := d.Retry(ctx, "nope"); err == nil || !strings.Contains(err.Error(), `no [[certificate]] named "nope"`) {
		t.Errorf("Retry of an unknown certificate: %v", err)
	}

	orderInBackoff(t, h, d)
	if !d.claim(hCert) { // as a redeploy does
		t.Fatal("cannot claim the certificate")
	}
	_, err = d.Retry(ctx, hCert)
	d.release(hCert)
	var be *busyError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "try again in a moment") {
		t.Errorf("Retry of a busy certificate: %v, want a busy error", err)
	}
}

// TestStatusShowsBackoff: the status of an order in backoff has its
// failed tries, next attempt and last error, and the command that tries
// it now; an order that only waits for the CA has no such hint.
func TestStatusShowsBackoff(t *testing.T) {
	h := newHarness(t)
	d := h.daemon(h.config(hDomains()), nil)
	ctx := hCtx(t)
	stuck := orderInBackoff(t, h, d)

	sts, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := sts[0].Order
	if o == nil || o.UniqueID != stuck.UniqueID {
		t.Fatalf("status: %+v, want order %s in flight", sts[0], stuck.UniqueID)
	}
	if !o.Backoff || o.Hint != "dcvd retry shop" || o.Attempts != 1 || o.LastError != stuck.LastError ||
		o.NextAttempt == nil || o.NextAttempt.Sub(stuck.NextAttempt).Abs() > time.Second {
		t.Errorf("status of the order in backoff: %+v", o)
	}

	if _, err := d.Retry(ctx, hCert); err != nil {
		t.Fatal(err)
	}
	sts, err = d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if o := sts[0].Order; o == nil || o.Backoff || o.Hint != "" || o.LastError != stuck.LastError {
		t.Errorf("status of the retried order: %+v, want no backoff, its last error kept", o)
	}
}

func TestInBackoff(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		name string
		o    *store.Order
		want bool
	}{
		{"failed, next try tomorrow", &store.Order{Step: store.StepNew, Attempts: 9, NextAttempt: now.Add(24 * time.Hour)}, true},
		{"failed, next try due", &store.Order{Step: store.StepNew, Attempts: 9, NextAttempt: now}, false},
		{"waiting for the CA, no failure", &store.Order{Step: store.StepRechecked, NextAttempt: now.Add(time.Minute)}, false},
		{"failed, nothing scheduled", &store.Order{Step: store.StepPublished, Attempts: 1}, false},
		{"ended", &store.Order{Step: store.StepFailed, Attempts: 3, NextAttempt: now.Add(time.Hour)}, false},
		{"no order", nil, false},
	} {
		if got := InBackoff(tt.o, now); got != tt.want {
			t.Errorf("%s: InBackoff = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRetryContextEnds: a Retry whose context has ended changes nothing.
func TestRetryContextEnds(t *testing.T) {
	h := newHarness(t)
	d := h.daemon(h.config(hDomains()), nil)
	stuck := orderInBackoff(t, h, d)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Retry(ctx, hCert); err == nil {
		t.Fatal("Retry with an ended context succeeded")
	}
	stored, err := d.store.ActiveOrder(hCtx(t), hCert)
	if err != nil {
		t.Fatal(err)
	}
	if stored.NextAttempt.Sub(stuck.NextAttempt).Abs() > time.Second {
		t.Errorf("next attempt %s, want it unchanged (%s)", stored.NextAttempt, stuck.NextAttempt)
	}
}

// TestClusterRetry: in a cluster, a retry is recorded under the
// certificate's lease when no node drives the order; a node that does not
// hold the lease of a driven order says which node does and changes
// nothing; the holder's retry wakes its driver, which ends the order (one
// charge, whichever node).
func TestClusterRetry(t *testing.T) {
	dsn := pgtest.NewSchema(t)
	h := newHarness(t)
	names := []string{"n1", "n2"}
	nodes := map[string]*Daemon{}
	for _, name := range names {
		cfg, _, _ := clusterNodeConfig(t, h, name)
		store, err := store.OpenPostgres(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		nodes[name] = h.daemon(cfg, func(o *Options) { o.Store = store })
	}
	ctx := hCtx(t)
	cs := nodes["n1"].Store().(store.ClusterStore)

	// No node runs: the retry takes the lease, records, gives it back.
	stuck := orderInBackoff(t, h, nodes["n1"])
	res, err := nodes["n2"].Retry(ctx, hCert)
	if err != nil || res.How != control.RetryRecorded {
		t.Fatalf("retry with no node driving: %+v, %v; want it recorded", res, err)
	}
	o, err := cs.ActiveOrder(ctx, hCert)
	if err != nil || InBackoff(o, h.clock.Now()) || o.Attempts != stuck.Attempts {
		t.Fatalf("after the retry the order is %+v, %v; want it due with its failed try", o, err)
	}

	// Back into backoff; both nodes run, and one of them drives it.
	o.NextAttempt = h.clock.Now().Add(farBackoff)
	if err := cs.PutOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		d := nodes[name]
		rctx, cancel := context.WithCancel(context.Background())
		ran := make(chan struct{})
		go func() {
			defer close(ran)
			if err := d.Run(rctx); err != nil {
				t.Errorf("node %s: Run: %v", name, err)
			}
		}()
		t.Cleanup(func() { cancel(); <-ran })
	}
	var holder string
	waitFor(t, "a node driving the order", func() bool {
		for _, name := range names {
			d := nodes[name]
			d.mu.Lock()
			_, waiting := d.wake[o.UniqueID]
			d.mu.Unlock()
			if waiting {
				holder = name
				return true
			}
		}
		return false
	})
	other := names[0]
	if other == holder {
		other = names[1]
	}
	res, err = nodes[other].Retry(ctx, hCert)
	if err != nil || res.How != control.RetryElsewhere || res.Holder != holder || res.Order.UniqueID != o.UniqueID {
		t.Fatalf("retry on %s while %s drives: %+v, %v; want it sent to %s", other, holder, res, err, holder)
	}
	if got, err := cs.ActiveOrder(ctx, hCert); err != nil || !InBackoff(got, h.clock.Now()) {
		t.Fatalf("a retry on the node without the lease changed the order: %+v, %v", got, err)
	}
	res, err = nodes[holder].Retry(ctx, hCert)
	if err != nil || res.How != control.RetryWoken {
		t.Fatalf("retry on the holder %s: %+v, %v; want its driver woken", holder, res, err)
	}
	waitFor(t, "the order done", func() bool {
		live, err := cs.Certificate(ctx, hCert)
		return err == nil && live.UniqueID == o.UniqueID
	})
	if n := h.charges(o.UniqueID); n != 1 || len(h.sb.Ledger()) != 1 {
		t.Errorf("charged %d times for the order, %d in all; want once", n, len(h.sb.Ledger()))
	}
}
