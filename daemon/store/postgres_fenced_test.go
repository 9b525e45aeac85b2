package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/pgtest"
)

// fixtures for the fenced writes, all of certificate "shop".
func fencedFixtures(uid string) (*Order, *Certificate, Attempt) {
	o := &Order{UniqueID: uid, Cert: "shop", Step: StepNew, KeySealed: "v1:" + uid}
	c := fullCertificate("shop")
	c.UniqueID = uid
	return o, c, Attempt{Cert: "shop", UniqueID: uid, Outcome: StepDone, Cost: 1}
}

// writeAll makes the three fenced writes and returns their errors.
func writeAll(ctx context.Context, st Store, o *Order, c *Certificate, a Attempt) map[string]error {
	return map[string]error{
		"PutOrder":       st.PutOrder(ctx, o),
		"PutCertificate": st.PutCertificate(ctx, c),
		"AddAttempt":     st.AddAttempt(ctx, a),
	}
}

func TestClusterFenced(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	a, b := stores[0], stores[1]
	ctx := t.Context()

	la := mustAcquire(t, a, "shop", "node-a", time.Minute)
	fa := a.Fenced(la)
	if _, ok := fa.(ClusterStore); ok {
		t.Error("the fenced view is a ClusterStore: it must only be a Store")
	}
	o, c, att := fencedFixtures("u1")
	for name, err := range writeAll(ctx, fa, o, c, att) {
		if err != nil {
			t.Errorf("fenced %s while the lease is current: %v", name, err)
		}
	}
	// The reads are the store's: the writes are there.
	if got, err := fa.Order(ctx, "u1"); err != nil || got.KeySealed != "v1:u1" {
		t.Errorf("fenced Order = %+v, %v", got, err)
	}
	if got, err := b.Certificate(ctx, "shop"); err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("certificate written fenced, read by another store = %+v, %v", got, err)
	}
	if total, err := fa.TotalCost(ctx, "shop"); err != nil || total != 1 {
		t.Errorf("fenced TotalCost = %v, %v; want 1", total, err)
	}

	// A write for another certificate is refused, whatever the lease.
	other := &Order{UniqueID: "u9", Cert: "api", Step: StepNew}
	if err := fa.PutOrder(ctx, other); err == nil {
		t.Error("fenced PutOrder of another certificate succeeded")
	}
	if err := fa.PutCertificate(ctx, fullCertificate("api")); err == nil {
		t.Error("fenced PutCertificate of another certificate succeeded")
	}
	if err := fa.AddAttempt(ctx, fullAttempt("api", "u9")); err == nil {
		t.Error("fenced AddAttempt of another certificate succeeded")
	}
	if _, err := a.Order(ctx, "u9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the order of another certificate was written: %v", err)
	}
	if _, err := a.Certificate(ctx, "api"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the certificate of another certificate was written: %v", err)
	}
	// The usual refusals still apply, and before the lease is consulted.
	if err := fa.PutOrder(ctx, nil); err == nil {
		t.Error("fenced PutOrder(nil) succeeded")
	}
	if err := fa.PutCertificate(ctx, nil); err == nil {
		t.Error("fenced PutCertificate(nil) succeeded")
	}

	// Closing the view leaves the store open.
	if err := fa.Close(); err != nil {
		t.Errorf("Close of the fenced view: %v", err)
	}
	if _, err := a.Order(ctx, "u1"); err != nil {
		t.Errorf("the store after closing a fenced view: %v", err)
	}
}

// TestClusterFencedRefused checks that a fenced view whose lease is not
// current any more writes nothing, however it was lost.
func TestClusterFencedRefused(t *testing.T) {
	tests := []struct {
		name string
		// lose makes la, node-a's lease on shop, not current.
		lose func(t *testing.T, a, b *PostgresStore, la Lease)
		want string
	}{
		{"taken over after expiry", func(t *testing.T, a, b *PostgresStore, la Lease) {
			expire(t, a, "shop")
			mustAcquire(t, b, "shop", "node-b", time.Minute)
		}, "taken by node-b"},
		{"expired", func(t *testing.T, a, b *PostgresStore, la Lease) {
			expire(t, a, "shop")
		}, "expired at"},
		{"released", func(t *testing.T, a, b *PostgresStore, la Lease) {
			if err := a.ReleaseLease(t.Context(), la); err != nil {
				t.Fatal(err)
			}
		}, "released at"},
		{"re-acquired by a restart of the same node", func(t *testing.T, a, b *PostgresStore, la Lease) {
			mustAcquire(t, b, "shop", "node-a", time.Minute)
		}, "taken by node-a with token 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stores, _ := openClusterStores(t, 2)
			a, b := stores[0], stores[1]
			ctx := t.Context()
			la := mustAcquire(t, a, "shop", "node-a", time.Minute)
			fa := a.Fenced(la)
			o, c, att := fencedFixtures("u1")
			for name, err := range writeAll(ctx, fa, o, c, att) {
				if err != nil {
					t.Fatalf("fenced %s while current: %v", name, err)
				}
			}
			tt.lose(t, a, b, la)

			// Every write, to rows that exist and to new ones, is
			// refused and changes nothing.
			o2 := *o
			o2.Step, o2.LastError = StepSubmitted, "late write"
			c2 := *c
			c2.Serial = "ff"
			att2 := att
			att2.Cost = 99
			oNew, _, attNew := fencedFixtures("u2")
			oNew.Step = StepFailed
			attNew.Cost = 7
			writes := writeAll(ctx, fa, &o2, &c2, att2)
			writes["PutOrder new"] = fa.PutOrder(ctx, oNew)
			writes["AddAttempt new"] = fa.AddAttempt(ctx, attNew)
			for name, err := range writes {
				if !errors.Is(err, ErrLeaseLost) {
					t.Errorf("fenced %s after the lease was lost: %v, want ErrLeaseLost", name, err)
					continue
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Errorf("fenced %s: error %q does not say %q", name, err, tt.want)
				}
			}
			if got, err := b.Order(ctx, "u1"); err != nil || got.Step != StepNew || got.LastError != "" {
				t.Errorf("order after refused writes = %+v, %v; want it unchanged", got, err)
			}
			if _, err := b.Order(ctx, "u2"); !errors.Is(err, ErrNotFound) {
				t.Errorf("a refused new order was written: %v", err)
			}
			if got, err := b.Certificate(ctx, "shop"); err != nil || got.Serial != c.Serial {
				t.Errorf("certificate after a refused write = %+v, %v; want serial %s", got, err, c.Serial)
			}
			if total, err := b.TotalCost(ctx, "shop"); err != nil || total != 1 {
				t.Errorf("TotalCost after refused attempts = %v, %v; want 1", total, err)
			}
		})
	}
}

// TestClusterFencedWriteHoldsOffTakeover runs a fenced write's transaction
// by hand and holds it open while its lease expires: an acquisition by
// another node waits for it (the lease row is locked), and the write, checked
// while the lease was current, commits before the takeover, never after.
func TestClusterFencedWriteHoldsOffTakeover(t *testing.T) {
	stores, dsn := openClusterStores(t, 1)
	a := stores[0]
	ctx := t.Context()
	app := fmt.Sprintf("dcvd_takeover_%d", time.Now().UnixNano())
	b, err := OpenPostgres(ctx, pgtest.WithParam(t, dsn, "application_name", app))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	la := mustAcquire(t, a, "shop", "node-a", 200*time.Millisecond)
	fa := a.Fenced(la).(*fencedStore)
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fa.fence(ctx, tx); err != nil {
		t.Fatalf("fence while current: %v", err)
	}
	// The lease runs out while the write is under way (the row cannot be
	// expired by hand: that would wait for the lock too), and another
	// node tries to take it.
	time.Sleep(300 * time.Millisecond)
	type result struct {
		l   Lease
		err error
	}
	acquired := make(chan result, 1)
	go func() {
		l, err := b.AcquireLease(ctx, "shop", "node-b", time.Minute)
		acquired <- result{l, err}
	}()
	// Wait until the acquisition is blocked on the lease row.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		select {
		case r := <-acquired:
			t.Fatalf("the acquisition did not wait for the fenced write: %+v, %v", r.l, r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the acquisition never waited for the lease row")
		}
		time.Sleep(10 * time.Millisecond)
	}
	o, _, _ := fencedFixtures("u1")
	if _, err := putOrderTx(ctx, pgxExecer{tx}, a.d, o, mustOrderData(t, o), time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Now the takeover goes through, after the write.
	r := <-acquired
	if r.err != nil || r.l.Token != la.Token+1 {
		t.Fatalf("acquisition after the fenced write = %+v, %v; want token %d", r.l, r.err, la.Token+1)
	}
	if got, err := b.Order(ctx, "u1"); err != nil || got.Step != StepNew {
		t.Errorf("the fenced write = %+v, %v; want it committed", got, err)
	}
	// And the next write of the old holder is refused.
	o.Step = StepSubmitted
	if err := fa.PutOrder(ctx, o); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("fenced PutOrder after the takeover: %v, want ErrLeaseLost", err)
	}
}

func mustOrderData(t *testing.T, o *Order) string {
	t.Helper()
	data, err := checkedOrderData(o)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
