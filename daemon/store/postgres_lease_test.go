package store

import (
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
