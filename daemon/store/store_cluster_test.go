package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/pgtest"
)

// openClusterStores opens n stores on one new database (schema), each with a
// pool of its own, as n dcvd processes of a cluster would; they are closed
// when the test ends. The DSN is returned too.
func openClusterStores(t *testing.T, n int) ([]*PostgresStore, string) {
	t.Helper()
	dsn := pgtest.NewSchema(t)
	stores := make([]*PostgresStore, n)
	for i := range stores {
		s, err := OpenPostgres(t.Context(), dsn)
		if err != nil {
			t.Fatalf("OpenPostgres: %v", err)
		}
		t.Cleanup(func() { _ = s.Close() })
		stores[i] = s
	}
	return stores, dsn
}

func openClusterStore(t *testing.T) *PostgresStore {
	t.Helper()
	stores, _ := openClusterStores(t, 1)
	return stores[0]
}

// expire ends cert's lease one second ago on the database's clock, as the
// passing of its duration would, without the wait.
func expire(t *testing.T, s *PostgresStore, cert string) {
	t.Helper()
	tag, err := s.pool.Exec(t.Context(), `UPDATE leases SET expires = clock_timestamp() - interval '1 second' WHERE cert = $1`, cert)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("expire the lease of %q: %v, %d rows", cert, err, tag.RowsAffected())
	}
}

func mustAcquire(t *testing.T, s *PostgresStore, cert, holder string, ttl time.Duration) Lease {
	t.Helper()
	l, err := s.AcquireLease(t.Context(), cert, holder, ttl)
	if err != nil {
		t.Fatalf("AcquireLease(%s, %s): %v", cert, holder, err)
	}
	if l.Cert != cert || l.Holder != holder || l.Expires.IsZero() || l.Expires.Location() != time.UTC {
		t.Fatalf("AcquireLease(%s, %s) = %+v", cert, holder, l)
	}
	return l
}

func TestClusterLeaseAcquire(t *testing.T) {
	s := openClusterStore(t)
	ctx := t.Context()
	if leases, err := s.Leases(ctx); err != nil || leases == nil || len(leases) != 0 {
		t.Errorf("Leases on an empty store = %v, %v; want an empty slice", leases, err)
	}

	// Free: the first token is 1.
	a1 := mustAcquire(t, s, "shop", "node-a", time.Minute)
	if a1.Token != 1 {
		t.Errorf("first token = %d, want 1", a1.Token)
	}
	// Own: the same holder (a restarted process) gets it again, with a
	// new token that fences out its previous incarnation.
	a2 := mustAcquire(t, s, "shop", "node-a", time.Minute)
	if a2.Token != 2 {
		t.Errorf("token of a re-acquisition by the holder = %d, want 2", a2.Token)
	}
	// Another's, current: refused, naming the holder; the current lease
	// is returned and nothing changes.
	got, err := s.AcquireLease(ctx, "shop", "node-b", time.Minute)
	if !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("AcquireLease of a lease held by another = %+v, %v; want ErrLeaseHeld", got, err)
	}
	if !strings.Contains(err.Error(), "node-a") || !strings.Contains(err.Error(), "token 2") {
		t.Errorf("error %q does not name the holder and its token", err)
	}
	if got.Holder != "node-a" || got.Token != 2 || !got.Expires.Equal(a2.Expires) {
		t.Errorf("lease returned with ErrLeaseHeld = %+v, want %+v", got, a2)
	}
	// Expired: anyone may take it, and the token goes on.
	expire(t, s, "shop")
	b := mustAcquire(t, s, "shop", "node-b", time.Minute)
	if b.Token != 3 {
		t.Errorf("token after takeover = %d, want 3", b.Token)
	}
	// The leases of different certificates are independent.
	if l := mustAcquire(t, s, "api", "node-a", time.Minute); l.Token != 1 {
		t.Errorf("first token of another certificate = %d, want 1", l.Token)
	}

	leases, err := s.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 2 || leases[0].Cert != "api" || leases[1] != b {
		t.Errorf("Leases = %+v, want api's then %+v", leases, b)
	}

	bad := []struct {
		name, cert, holder string
		ttl                time.Duration
	}{
		{"no cert", "", "node-a", time.Minute},
		{"no holder", "shop", "", time.Minute},
		{"zero ttl", "new", "node-a", 0},
		{"negative ttl", "new", "node-a", -time.Minute},
		{"ttl under a microsecond", "new", "node-a", 500 * time.Nanosecond},
	}
	for _, tt := range bad {
		if l, err := s.AcquireLease(ctx, tt.cert, tt.holder, tt.ttl); err == nil || errors.Is(err, ErrLeaseHeld) {
			t.Errorf("AcquireLease %s = %+v, %v; want an error", tt.name, l, err)
		}
	}
	if leases, _ := s.Leases(ctx); len(leases) != 2 {
		t.Errorf("refused acquisitions left %d leases, want 2", len(leases))
	}
}

// TestClusterLeaseExpiresOnItsOwn lets a short lease run out in real time,
// the only test that waits for the database's clock.
func TestClusterLeaseExpiresOnItsOwn(t *testing.T) {
	s := openClusterStore(t)
	a := mustAcquire(t, s, "shop", "node-a", 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	b := mustAcquire(t, s, "shop", "node-b", time.Minute)
	if b.Token != a.Token+1 {
		t.Errorf("token after expiry = %d, want %d", b.Token, a.Token+1)
	}
}

func TestClusterLeaseRenew(t *testing.T) {
	s := openClusterStore(t)
	ctx := t.Context()

	a := mustAcquire(t, s, "shop", "node-a", time.Minute)
	r, err := s.RenewLease(ctx, a, time.Hour)
	if err != nil {
		t.Fatalf("RenewLease of the current lease: %v", err)
	}
	if r.Cert != a.Cert || r.Holder != a.Holder || r.Token != a.Token || !r.Expires.After(a.Expires) {
		t.Errorf("renewed %+v to %+v, want the same lease lasting longer", a, r)
	}

	tests := []struct {
		name  string
		setup func(t *testing.T) Lease // returns the lease to renew
		want  string
	}{
		{"expired", func(t *testing.T) Lease {
			l := mustAcquire(t, s, "c1", "node-a", time.Minute)
			expire(t, s, "c1")
			return l
		}, "expired at"},
		{"taken", func(t *testing.T) Lease {
			l := mustAcquire(t, s, "c2", "node-a", time.Minute)
			expire(t, s, "c2")
			mustAcquire(t, s, "c2", "node-b", time.Minute)
			return l
		}, "taken by node-b with token 2"},
		{"taken by the same node restarted", func(t *testing.T) Lease {
			l := mustAcquire(t, s, "c3", "node-a", time.Minute)
			mustAcquire(t, s, "c3", "node-a", time.Minute)
			return l
		}, "taken by node-a with token 2"},
		{"released", func(t *testing.T) Lease {
			l := mustAcquire(t, s, "c4", "node-a", time.Minute)
			if err := s.ReleaseLease(ctx, l); err != nil {
				t.Fatal(err)
			}
			return l
		}, "released at"},
		{"never acquired", func(t *testing.T) Lease {
			return Lease{Cert: "c5", Holder: "node-a", Token: 1}
		}, "never acquired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.setup(t)
			before, _ := s.Leases(ctx)
			r, err := s.RenewLease(ctx, l, time.Minute)
			if !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("RenewLease = %+v, %v; want ErrLeaseLost", r, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if after, _ := s.Leases(ctx); !reflect.DeepEqual(after, before) {
				t.Errorf("a refused renewal changed the leases:\n%+v\n%+v", before, after)
			}
		})
	}
	if _, err := s.RenewLease(ctx, r, 0); err == nil || errors.Is(err, ErrLeaseLost) {
		t.Errorf("RenewLease with a zero duration: %v, want an error other than ErrLeaseLost", err)
	}
}

func TestClusterLeaseRelease(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	a, b := stores[0], stores[1]
	ctx := t.Context()

	la := mustAcquire(t, a, "shop", "node-a", time.Hour)
	if err := a.ReleaseLease(ctx, la); err != nil {
		t.Fatalf("ReleaseLease: %v", err)
	}
	// Another node takes it at once, without waiting for the hour.
	lb := mustAcquire(t, b, "shop", "node-b", time.Minute)
	if lb.Token != la.Token+1 {
		t.Errorf("token after release = %d, want %d", lb.Token, la.Token+1)
	}
	// Releasing a lease that is not current any more does nothing: the
	// new holder keeps it.
	if err := a.ReleaseLease(ctx, la); err != nil {
		t.Errorf("ReleaseLease of a lease taken over: %v, want nil", err)
	}
	if err := a.ReleaseLease(ctx, Lease{Cert: "nope", Holder: "node-a", Token: 1}); err != nil {
		t.Errorf("ReleaseLease of a lease never acquired: %v, want nil", err)
	}
	if _, err := b.RenewLease(ctx, lb, time.Minute); err != nil {
		t.Errorf("the new holder's lease after the old one was released again: %v", err)
	}
}

// TestClusterLeaseRace makes many processes acquire the same lease at once,
// for a certificate never leased and for one whose lease expired: exactly one
// may win each time, and the others are told who did.
func TestClusterLeaseRace(t *testing.T) {
	stores, _ := openClusterStores(t, 3)
	ctx := t.Context()
	const n = 12
	race := func(t *testing.T, cert string) Lease {
		t.Helper()
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []Lease
			held    []error
		)
		for i := range n {
			wg.Go(func() {
				l, err := stores[i%len(stores)].AcquireLease(ctx, cert, fmt.Sprintf("node-%d", i), time.Minute)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, l)
				case errors.Is(err, ErrLeaseHeld):
					held = append(held, err)
				default:
					t.Errorf("AcquireLease node-%d: %v", i, err)
				}
			})
		}
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d acquisitions of one lease succeeded (%+v), want 1", len(winners), winners)
		}
		for _, err := range held {
			if !strings.Contains(err.Error(), "held by "+winners[0].Holder+" ") {
				t.Errorf("error %q does not name the winner %s", err, winners[0].Holder)
			}
		}
		return winners[0]
	}
	first := race(t, "shop")
	if first.Token != 1 {
		t.Errorf("token of the first lease = %d, want 1", first.Token)
	}
	expire(t, stores[0], "shop")
	second := race(t, "shop")
	if second.Token != 2 {
		t.Errorf("token after the second race = %d, want 2", second.Token)
	}
}

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
	if _, err := a.putOrderTx(ctx, tx, o, nil, mustOrderData(t, o), time.Now().UTC()); err != nil {
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

func TestClusterHeartbeatAndNodes(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	a, b := stores[0], stores[1]
	ctx := t.Context()
	started := time.Date(2026, 5, 1, 8, 0, 0, 123456000, time.UTC)
	if nodes, err := a.Nodes(ctx, time.Minute); err != nil || nodes == nil || len(nodes) != 0 {
		t.Errorf("Nodes on an empty store = %v, %v; want an empty slice", nodes, err)
	}

	na := Node{Name: "node-a", Instance: "i1", Version: "1.0", Started: started,
		Heartbeat: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), Alive: true} // both ignored
	prev, err := a.Heartbeat(ctx, na)
	if err != nil || prev != nil {
		t.Fatalf("first Heartbeat = %+v, %v; want nil, nil", prev, err)
	}
	nodes, err := a.Nodes(ctx, time.Minute)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("Nodes = %+v, %v; want node-a", nodes, err)
	}
	first := nodes[0]
	if first.Name != "node-a" || first.Instance != "i1" || first.Version != "1.0" || !first.Started.Equal(started) ||
		!first.Alive || first.Heartbeat.Year() == 2000 || first.Heartbeat.Location() != time.UTC {
		t.Errorf("node after its first heartbeat = %+v", first)
	}

	// A second process under the same name: the previous row is
	// returned, so that it can warn.
	nb := Node{Name: "node-a", Instance: "i2", Version: "1.1", Started: started.Add(time.Hour)}
	prev, err = b.Heartbeat(ctx, nb)
	if err != nil {
		t.Fatal(err)
	}
	want := first
	want.Alive = false // Heartbeat knows no within
	if prev == nil || !reflect.DeepEqual(*prev, want) {
		t.Errorf("Heartbeat returned previous %+v, want %+v", prev, want)
	}
	nodes, err = a.Nodes(ctx, time.Minute)
	if err != nil || len(nodes) != 1 || nodes[0].Instance != "i2" || nodes[0].Version != "1.1" ||
		nodes[0].Heartbeat.Before(first.Heartbeat) {
		t.Errorf("Nodes after the second heartbeat = %+v, %v", nodes, err)
	}

	// Alive is on the database's clock: age node-a's heartbeat, and
	// add a node heartbeating now.
	if _, err := a.pool.Exec(ctx, `UPDATE nodes SET heartbeat = clock_timestamp() - interval '10 minutes'`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Heartbeat(ctx, Node{Name: "node-0", Instance: "i3"}); err != nil {
		t.Fatal(err)
	}
	nodes, err = a.Nodes(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, n := range nodes {
		summary = append(summary, fmt.Sprintf("%s:%v", n.Name, n.Alive))
	}
	if got, want := strings.Join(summary, " "), "node-0:true node-a:false"; got != want {
		t.Errorf("Nodes(1m) = %s, want %s", got, want)
	}
	if !nodes[0].Started.IsZero() {
		t.Errorf("a zero Started came back as %v", nodes[0].Started)
	}
	for _, within := range []time.Duration{0, -time.Minute} {
		nodes, err := a.Nodes(ctx, within)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Alive {
				t.Errorf("Nodes(%v): %s alive, want none", within, n.Name)
			}
		}
	}

	for _, bad := range []Node{{Instance: "i"}, {Name: "node-x"}} {
		if _, err := a.Heartbeat(ctx, bad); err == nil {
			t.Errorf("Heartbeat(%+v) succeeded, want an error", bad)
		}
	}
}

// TestClusterNodeGoesQuiet lets a heartbeat age in real time.
func TestClusterNodeGoesQuiet(t *testing.T) {
	s := openClusterStore(t)
	ctx := t.Context()
	if _, err := s.Heartbeat(ctx, Node{Name: "node-a", Instance: "i1"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	nodes, err := s.Nodes(ctx, 100*time.Millisecond)
	if err != nil || len(nodes) != 1 || nodes[0].Alive {
		t.Errorf("Nodes(100ms) 300ms after the last heartbeat = %+v, %v; want node-a not alive", nodes, err)
	}
	nodes, err = s.Nodes(ctx, time.Hour)
	if err != nil || len(nodes) != 1 || !nodes[0].Alive {
		t.Errorf("Nodes(1h) = %+v, %v; want node-a alive", nodes, err)
	}
}

func TestClusterNodeCerts(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	a, b := stores[0], stores[1]
	ctx := t.Context()

	if got, err := a.NodeCerts(ctx); err != nil || got == nil || len(got) != 0 {
		t.Errorf("NodeCerts on an empty store = %v, %v; want an empty slice", got, err)
	}
	for _, nc := range []NodeCert{
		{Node: "node-b", Cert: "shop", Serial: "0a"},
		{Node: "node-a", Cert: "shop", Serial: "0a"},
		{Node: "node-a", Cert: "api", Serial: "", Error: "reload: exit status 1"},
		{Node: "node-a", Cert: "shop", Serial: "0b", Updated: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}, // replaces
	} {
		st := a
		if nc.Node == "node-b" {
			st = b
		}
		if err := st.PutNodeCert(ctx, nc); err != nil {
			t.Fatalf("PutNodeCert(%+v): %v", nc, err)
		}
	}
	got, err := b.NodeCerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, nc := range got {
		summary = append(summary, fmt.Sprintf("%s/%s=%s[%s]", nc.Cert, nc.Node, nc.Serial, nc.Error))
		if nc.Updated.Year() == 2000 || nc.Updated.IsZero() || nc.Updated.Location() != time.UTC {
			t.Errorf("Updated of %s/%s = %v, want the database's present time in UTC", nc.Cert, nc.Node, nc.Updated)
		}
	}
	want := "api/node-a=[reload: exit status 1] shop/node-a=0b[] shop/node-b=0a[]"
	if strings.Join(summary, " ") != want {
		t.Errorf("NodeCerts = %s, want %s", strings.Join(summary, " "), want)
	}
	for _, bad := range []NodeCert{{Cert: "shop"}, {Node: "node-a"}} {
		if err := a.PutNodeCert(ctx, bad); err == nil {
			t.Errorf("PutNodeCert(%+v) succeeded, want an error", bad)
		}
	}
}

func TestClusterFileAcks(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	a, b := stores[0], stores[1]
	ctx := t.Context()

	if got, err := a.FileAcks(ctx, "u1"); err != nil || got == nil || len(got) != 0 {
		t.Errorf("FileAcks with none = %v, %v; want an empty slice", got, err)
	}
	for _, ack := range []struct {
		st        *PostgresStore
		uid, node string
	}{
		{b, "u1", "node-c"}, {a, "u1", "node-a"}, {b, "u1", "node-b"},
		{a, "u1", "node-a"}, // again: harmless
		{a, "u2", "node-a"},
	} {
		if err := ack.st.AckFiles(ctx, ack.uid, ack.node); err != nil {
			t.Fatalf("AckFiles(%s, %s): %v", ack.uid, ack.node, err)
		}
	}
	if got, err := a.FileAcks(ctx, "u1"); err != nil || !reflect.DeepEqual(got, []string{"node-a", "node-b", "node-c"}) {
		t.Errorf("FileAcks(u1) = %v, %v; want node-a, node-b, node-c", got, err)
	}
	if got, err := b.FileAcks(ctx, "u2"); err != nil || !reflect.DeepEqual(got, []string{"node-a"}) {
		t.Errorf("FileAcks(u2) = %v, %v; want node-a", got, err)
	}
	for _, bad := range [][2]string{{"", "node-a"}, {"u1", ""}} {
		if err := a.AckFiles(ctx, bad[0], bad[1]); err == nil {
			t.Errorf("AckFiles(%q, %q) succeeded, want an error", bad[0], bad[1])
		}
	}
}

// listen runs s.Listen in the background, sending what it delivers to the
// returned channel; stop ends it and returns what Listen returned.
func listen(t *testing.T, s *PostgresStore) (events <-chan ClusterEvent, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan ClusterEvent, 100)
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, func(ev ClusterEvent) { ch <- ev }) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("Listen did not return after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return ch, stop
}

// receive returns the next event, failing after a generous time.
func receive(t *testing.T, events <-chan ClusterEvent) ClusterEvent {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event delivered")
		return ClusterEvent{}
	}
}

// awaitListening notifies ev from s until events delivers it: LISTEN takes
// effect at some point after Listen starts, and what is sent before is lost.
func awaitListening(t *testing.T, s *PostgresStore, events <-chan ClusterEvent, ev ClusterEvent) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := s.Notify(t.Context(), ev); err != nil {
			t.Fatalf("Notify: %v", err)
		}
		select {
		case got := <-events:
			if got != ev {
				t.Fatalf("first event delivered = %+v, want %+v", got, ev)
			}
			// Drain the copies sent while LISTEN was taking effect.
			for {
				select {
				case got := <-events:
					if got != ev {
						t.Fatalf("event delivered = %+v, want %+v", got, ev)
					}
				case <-time.After(100 * time.Millisecond):
					return
				}
			}
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("Listen never delivered an event")
		}
	}
}

func TestClusterNotifyListen(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	sender, receiver := stores[0], stores[1]
	ctx := t.Context()
	events, stop := listen(t, receiver)
	awaitListening(t, sender, events, ClusterEvent{Kind: EventOrder, Cert: "warmup"})

	sent := []ClusterEvent{
		{Kind: EventOrder, Cert: "shop", UniqueID: "u1"},
		{Kind: EventCertificate, Cert: "shop"},
		{Kind: EventCallback, Cert: "api", UniqueID: "u2"},
	}
	// Malformed notifications and unknown kinds, sent around the others
	// on the same channel, are skipped.
	for _, raw := range []string{`not json`, `{"kind":"reboot","cert":"shop"}`, `{"kind":""}`, `[1]`} {
		if _, err := sender.pool.Exec(ctx, `SELECT pg_notify('dcvd', $1)`, raw); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range sent {
		if err := sender.Notify(ctx, ev); err != nil {
			t.Fatalf("Notify(%+v): %v", ev, err)
		}
	}
	// Other channels are not ours.
	if _, err := sender.pool.Exec(ctx, `SELECT pg_notify('other', '{"kind":"order","cert":"x"}')`); err != nil {
		t.Fatal(err)
	}
	// Extra fields of a newer sender are tolerated.
	if _, err := sender.pool.Exec(ctx, `SELECT pg_notify('dcvd', '{"kind":"order","cert":"new","unique_id":"u3","node":"x"}')`); err != nil {
		t.Fatal(err)
	}
	sent = append(sent, ClusterEvent{Kind: EventOrder, Cert: "new", UniqueID: "u3"})
	for i, want := range sent {
		if got := receive(t, events); got != want {
			t.Errorf("event %d = %+v, want %+v", i, got, want)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Listen returned %v when its context ended, want nil", err)
	}

	if err := sender.Notify(ctx, ClusterEvent{Kind: "reboot", Cert: "shop"}); err == nil {
		t.Error("Notify of an unknown kind succeeded")
	}
}

func TestClusterListenEnds(t *testing.T) {
	stores, dsn := openClusterStores(t, 1)
	s := stores[0]

	// A context already ended: nil at once.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Listen(ctx, func(ClusterEvent) {}); err != nil {
		t.Errorf("Listen with an ended context = %v, want nil", err)
	}

	// A lost connection: the error, for the caller to retry.
	app := fmt.Sprintf("dcvd_listen_%d", time.Now().UnixNano())
	l, err := OpenPostgres(t.Context(), pgtest.WithParam(t, dsn, "application_name", app))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	events, stop := listen(t, l)
	awaitListening(t, s, events, ClusterEvent{Kind: EventCertificate, Cert: "shop"})
	tag, err := s.pool.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND query LIKE 'LISTEN%'`, app)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("terminate the listening connection: %v, %d rows", err, tag.RowsAffected())
	}
	// Listen returns on its own; stop only collects what it returned.
	deadline := time.Now().Add(10 * time.Second)
	for len(events) == 0 && time.Now().Before(deadline) {
		var n int
		if err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'`, app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err == nil {
		t.Error("Listen returned nil after its connection was lost, want the error")
	}

	// A closed store: an error.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(t.Context(), func(ClusterEvent) {}); err == nil {
		t.Error("Listen on a closed store returned nil, want an error")
	}
}

func TestClusterMigrations(t *testing.T) {
	db := postgresBackend.newDB(t)
	ctx := t.Context()
	// Two processes starting together on a new database.
	var wg sync.WaitGroup
	stores := make([]testStore, 2)
	errs := make([]error, 2)
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = db.open(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	s := stores[0].(*PostgresStore)
	clusterVersions := func() []int {
		t.Helper()
		var vs []int
		rows, err := s.pool.Query(ctx, `SELECT version FROM cluster_schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			vs = append(vs, v)
		}
		return vs
	}
	var want []int
	for i := range postgresClusterMigrations {
		want = append(want, i+1)
	}
	if got := clusterVersions(); !reflect.DeepEqual(got, want) {
		t.Errorf("cluster versions after two concurrent opens = %v, want %v", got, want)
	}
	// Both work on the one set of tables.
	l := mustAcquire(t, s, "shop", "node-a", time.Minute)
	if _, err := stores[1].(*PostgresStore).RenewLease(ctx, l, time.Minute); err != nil {
		t.Errorf("lease acquired through one store, renewed through the other: %v", err)
	}
	// Migrating again changes nothing.
	if err := s.migrate(ctx); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	if got := clusterVersions(); !reflect.DeepEqual(got, want) {
		t.Errorf("cluster versions after migrating again = %v, want %v", got, want)
	}
	if leases, err := s.Leases(ctx); err != nil || len(leases) != 1 || leases[0].Token != l.Token {
		t.Errorf("leases after migrating again = %+v, %v", leases, err)
	}

	// A cluster schema newer than the code is refused, as the shared one.
	future := len(postgresClusterMigrations) + 1
	if err := s.exec(ctx, fmt.Sprintf(`INSERT INTO cluster_schema_migrations (version, applied) VALUES (%d, '')`, future)); err != nil {
		t.Fatal(err)
	}
	s2, err := db.open(ctx)
	if err == nil {
		s2.Close()
		t.Fatal("open accepted a cluster schema newer than the code")
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("cluster schema version %d is newer", future)) {
		t.Errorf("error %q does not say the cluster schema is newer", err)
	}
}

func TestClusterHonoursContext(t *testing.T) {
	s := openClusterStore(t)
	l := mustAcquire(t, s, "shop", "node-a", time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f := s.Fenced(l)
	calls := map[string]func() error{
		"AcquireLease": func() error { _, err := s.AcquireLease(ctx, "api", "node-a", time.Minute); return err },
		"RenewLease":   func() error { _, err := s.RenewLease(ctx, l, time.Minute); return err },
		"ReleaseLease": func() error { return s.ReleaseLease(ctx, l) },
		"Leases":       func() error { _, err := s.Leases(ctx); return err },
		"Heartbeat":    func() error { _, err := s.Heartbeat(ctx, Node{Name: "n", Instance: "i"}); return err },
		"Nodes":        func() error { _, err := s.Nodes(ctx, time.Minute); return err },
		"PutNodeCert":  func() error { return s.PutNodeCert(ctx, NodeCert{Node: "n", Cert: "shop"}) },
		"NodeCerts":    func() error { _, err := s.NodeCerts(ctx); return err },
		"AckFiles":     func() error { return s.AckFiles(ctx, "u1", "n") },
		"FileAcks":     func() error { _, err := s.FileAcks(ctx, "u1"); return err },
		"Notify":       func() error { return s.Notify(ctx, ClusterEvent{Kind: EventOrder, Cert: "shop"}) },
		"fenced PutOrder": func() error {
			return f.PutOrder(ctx, &Order{UniqueID: "u1", Cert: "shop", Step: StepNew})
		},
		"fenced PutCertificate": func() error { return f.PutCertificate(ctx, fullCertificate("shop")) },
		"fenced AddAttempt":     func() error { return f.AddAttempt(ctx, fullAttempt("shop", "u1")) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
		}
	}
	if r, err := s.RenewLease(t.Context(), l, time.Minute); err != nil || r.Token != l.Token {
		t.Errorf("the lease after cancelled calls = %+v, %v; want it still current", r, err)
	}
}
