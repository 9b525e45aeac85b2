package store

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"
)

// putOrderAt stores o as written at time at (its Updated, and its Created
// when new).
func putOrderAt(t *testing.T, s testStore, o *Order, at time.Time) {
	t.Helper()
	s.SetClock(func() time.Time { return at })
	if err := s.PutOrder(t.Context(), o); err != nil {
		t.Fatalf("PutOrder %s: %v", o.UniqueID, err)
	}
}

func testStoreGenerations(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	if got, err := s.Generations(ctx, 2); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Generations on an empty store = %#v, %v; want an empty map", got, err)
	}
	day := 24 * time.Hour
	orders := []struct {
		uid, cert string
		step      Step
		age       int // days
	}{
		{"s1", "shop", StepDone, 90}, {"s2", "shop", StepFailed, 70}, {"s3", "shop", StepDone, 60},
		{"s4", "shop", StepDone, 30}, {"s5", "shop", StepFailed, 10}, {"s6", "shop", StepPublished, 5},
		{"a1", "api", StepDone, 50}, {"w1", "web", StepFailed, 20},
	}
	for _, o := range orders {
		full := fullOrder(o.uid, o.cert)
		full.Step = o.step
		putOrderAt(t, s, full, t1.Add(-time.Duration(o.age)*day))
	}
	tests := []struct {
		limit int
		want  map[string][]string
	}{
		{2, map[string][]string{"shop": {"s4", "s3"}, "api": {"a1"}}},
		{1, map[string][]string{"shop": {"s4"}, "api": {"a1"}}},
		{0, map[string][]string{"shop": {"s4", "s3", "s1"}, "api": {"a1"}}},
	}
	for _, tt := range tests {
		got, err := s.Generations(ctx, tt.limit)
		if err != nil {
			t.Fatalf("Generations(%d): %v", tt.limit, err)
		}
		ids := map[string][]string{}
		for cert, os := range got {
			for _, o := range os {
				ids[cert] = append(ids[cert], o.UniqueID)
				// Only what the keys need, without the bulk.
				want := &Order{UniqueID: o.UniqueID, Cert: cert, Step: StepDone, KeyFile: fullOrder(o.UniqueID, cert).KeyFile,
					Created: o.Updated, Updated: o.Updated}
				if !reflect.DeepEqual(o, want) {
					t.Errorf("Generations(%d): %+v, want %+v", tt.limit, o, want)
				}
			}
		}
		if !reflect.DeepEqual(ids, tt.want) {
			t.Errorf("Generations(%d) = %v, want %v", tt.limit, ids, tt.want)
		}
	}
}

// testStorePruneAttempts: the attempts older than the retention or beyond
// the count per certificate go, but never the newest KeptAttempts, which
// the renewal decision reads, and never another certificate's; the costs
// of those deleted still count in TotalCost.
func testStorePruneAttempts(t *testing.T, b storeBackend) {
	day := 24 * time.Hour
	now := t1
	tests := []struct {
		name   string
		n      int                 // attempts of shop, one a day, the newest a day old
		failed func(rank int) bool // rank 1 is the newest
		policy HistoryPolicy
		want   int // the newest attempts of shop that stay
	}{
		{name: "young history", n: 5, policy: HistoryPolicy{Before: now.Add(-30 * day), PerCertificate: 100}, want: 5},
		{name: "by age, down to the floor", n: 40, policy: HistoryPolicy{Before: now.Add(-10 * day), PerCertificate: 100}, want: KeptAttempts},
		{name: "by age", n: 40, policy: HistoryPolicy{Before: now.Add(-30*day - time.Hour), PerCertificate: 100}, want: 30},
		{name: "by count", n: 40, policy: HistoryPolicy{PerCertificate: 25}, want: 25},
		{name: "by count, down to the floor", n: 40, policy: HistoryPolicy{PerCertificate: 5}, want: KeptAttempts},
		{name: "by age and count", n: 40, policy: HistoryPolicy{Before: now.Add(-30*day - time.Hour), PerCertificate: 25}, want: 25},
		{name: "no policy", n: 40, policy: HistoryPolicy{}, want: 40},
		{name: "old failures in a row", n: 40, failed: func(int) bool { return true },
			policy: HistoryPolicy{Before: now.Add(-time.Hour), PerCertificate: 1}, want: KeptAttempts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := b.openTestStore(t)
			ctx := t.Context()
			for i := range tt.n {
				rank := tt.n - i
				a := fullAttempt("shop", fmt.Sprintf("s%03d", rank))
				a.Cost = float64(rank)
				a.Finished = now.Add(-time.Duration(rank) * day)
				a.Outcome = StepDone
				if tt.failed != nil && tt.failed(rank) {
					a.Outcome = StepFailed
				}
				if err := s.AddAttempt(ctx, a); err != nil {
					t.Fatal(err)
				}
			}
			// Another certificate's short and old history.
			for i := range 3 {
				a := fullAttempt("api", fmt.Sprintf("a%d", i))
				a.Finished = now.Add(-1000 * day)
				if err := s.AddAttempt(ctx, a); err != nil {
					t.Fatal(err)
				}
			}
			before, err := s.Attempts(ctx, "shop", 0)
			if err != nil {
				t.Fatal(err)
			}
			costs := map[string]float64{}
			for _, cert := range []string{"shop", "api"} {
				if costs[cert], err = s.TotalCost(ctx, cert); err != nil {
					t.Fatal(err)
				}
			}
			// The renewal decision (daemon.NextRenewal) reads the newest
			// KeptAttempts attempts and nothing else of the history.
			decisionInput := before[:min(len(before), KeptAttempts)]

			pruned, err := s.PruneHistory(ctx, tt.policy)
			if err != nil {
				t.Fatalf("PruneHistory: %v", err)
			}
			after, err := s.Attempts(ctx, "shop", 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(after, before[:tt.want]) {
				t.Errorf("shop keeps %d attempts, want the newest %d", len(after), tt.want)
			}
			if pruned.Attempts != tt.n-tt.want || pruned.Orders != 0 {
				t.Errorf("PruneHistory = %+v, want %d attempts and no order", pruned, tt.n-tt.want)
			}
			if api, err := s.Attempts(ctx, "api", 0); err != nil || len(api) != 3 {
				t.Errorf("api's history after the prune: %d attempts, %v; want its 3, under the floor", len(api), err)
			}
			for cert, want := range costs {
				if got, err := s.TotalCost(ctx, cert); err != nil || got != want {
					t.Errorf("TotalCost(%s) after the prune = %v, %v; want %v as before", cert, got, err, want)
				}
			}
			if got := after[:min(len(after), KeptAttempts)]; !reflect.DeepEqual(got, decisionInput) {
				t.Errorf("the renewal decision's input changed with the prune: %d attempts, was %d", len(got), len(decisionInput))
			}
			// Again: nothing more to delete.
			if again, err := s.PruneHistory(ctx, tt.policy); err != nil || again != (Pruned{}) {
				t.Errorf("a second PruneHistory = %+v, %v; want nothing", again, err)
			}
		})
	}
}

// testStorePruneOrders: ended orders older than the retention or beyond
// the count per certificate go; never an order in flight, the live
// certificate's order, or the two newest done orders of a certificate
// (the live and the previous generations, whose keys are needed).
func testStorePruneOrders(t *testing.T, b storeBackend) {
	day := 24 * time.Hour
	now := t1
	orders := []struct {
		uid, cert string
		step      Step
		age       int // days
	}{
		{"s1", "shop", StepDone, 100},
		{"s2", "shop", StepFailed, 90},
		{"s3", "shop", StepDone, 80}, // the live certificate's
		{"s4", "shop", StepDone, 60}, // second newest done
		{"s5", "shop", StepFailed, 50},
		{"s6", "shop", StepDone, 40},      // newest done
		{"s7", "shop", StepPublished, 50}, // in flight
		{"a1", "api", StepFailed, 100},
		{"a2", "api", StepFailed, 1},
	}
	tests := []struct {
		name   string
		policy HistoryPolicy
		want   []string // the orders that stay
	}{
		{"by age", HistoryPolicy{Before: now.Add(-30 * day), PerCertificate: 100}, []string{"a2", "s3", "s4", "s6", "s7"}},
		{"by age, recent", HistoryPolicy{Before: now.Add(-55 * day), PerCertificate: 100}, []string{"a2", "s3", "s4", "s5", "s6", "s7"}},
		{"by count", HistoryPolicy{PerCertificate: 2}, []string{"a1", "a2", "s3", "s4", "s5", "s6", "s7"}},
		{"by count, one", HistoryPolicy{PerCertificate: 1}, []string{"a2", "s3", "s4", "s6", "s7"}},
		{"no policy", HistoryPolicy{}, []string{"a1", "a2", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := b.openTestStore(t)
			ctx := t.Context()
			for _, o := range orders {
				full := fullOrder(o.uid, o.cert)
				full.Step = o.step
				putOrderAt(t, s, full, now.Add(-time.Duration(o.age)*day))
			}
			live := fullCertificate("shop")
			live.UniqueID = "s3"
			if err := s.PutCertificate(ctx, live); err != nil {
				t.Fatal(err)
			}
			pruned, err := s.PruneHistory(ctx, tt.policy)
			if err != nil {
				t.Fatalf("PruneHistory: %v", err)
			}
			var kept []string
			for _, o := range orders {
				_, err := s.Order(ctx, o.uid)
				switch {
				case err == nil:
					kept = append(kept, o.uid)
				case !errors.Is(err, ErrNotFound):
					t.Fatal(err)
				}
			}
			slices.Sort(kept)
			if !reflect.DeepEqual(kept, tt.want) {
				t.Errorf("orders kept %v, want %v", kept, tt.want)
			}
			if pruned.Orders != len(orders)-len(tt.want) || pruned.Attempts != 0 {
				t.Errorf("PruneHistory = %+v, want %d orders", pruned, len(orders)-len(tt.want))
			}
			if a, err := s.ActiveOrder(ctx, "shop"); err != nil || a.UniqueID != "s7" {
				t.Errorf("the order in flight after the prune: %v, %v", a, err)
			}
		})
	}
}

// addFailedHistory records, for each of certs, perCert attempts and their
// failed orders, one every interval up to before t1, the i-th costing
// i+extra. It returns the total cost of each certificate.
func addFailedHistory(t *testing.T, s testStore, certs []string, perCert int, t1 time.Time, interval time.Duration, extra float64) map[string]float64 {
	t.Helper()
	ctx := t.Context()
	total := map[string]float64{}
	for i := range perCert {
		for _, cert := range certs {
			a := fullAttempt(cert, fmt.Sprintf("%s-%02d", cert, i))
			a.Cost = float64(i) + extra
			a.Finished = t1.Add(-time.Duration(perCert-i) * interval)
			if err := s.AddAttempt(ctx, a); err != nil {
				t.Fatal(err)
			}
			total[cert] += a.Cost
			o := fullOrder(fmt.Sprintf("o-%s-%02d", cert, i), cert)
			o.Step = StepFailed
			putOrderAt(t, s, o, a.Finished)
		}
	}
	return total
}

// testStorePruneInBatches: each call deletes at most Limit rows of each
// table, and the calls add up to the whole prune, the costs carried once.
func testStorePruneInBatches(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	day := 24 * time.Hour
	const perCert = 30
	certs := []string{"shop", "api", "web"}
	total := addFailedHistory(t, s, certs, perCert, t1, day, 0.5)
	p := HistoryPolicy{Before: t1, PerCertificate: 100, Limit: 7}
	wantAttempts := len(certs) * (perCert - KeptAttempts)
	wantOrders := len(certs) * perCert
	var sum Pruned
	for calls := 0; ; calls++ {
		if calls > 100 {
			t.Fatal("PruneHistory never ran out of rows to delete")
		}
		n, err := s.PruneHistory(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if n.Attempts > p.Limit || n.Orders > p.Limit {
			t.Fatalf("one call deleted %+v, more than the limit %d", n, p.Limit)
		}
		sum.Attempts += n.Attempts
		sum.Orders += n.Orders
		if n == (Pruned{}) {
			break
		}
	}
	if sum.Attempts != wantAttempts || sum.Orders != wantOrders {
		t.Errorf("the calls deleted %+v, want %d attempts and %d orders", sum, wantAttempts, wantOrders)
	}
	for _, cert := range certs {
		if got, err := s.TotalCost(ctx, cert); err != nil || got != total[cert] {
			t.Errorf("TotalCost(%s) = %v, %v; want %v", cert, got, err, total[cert])
		}
		if h, err := s.Attempts(ctx, cert, 0); err != nil || len(h) != KeptAttempts {
			t.Errorf("%s keeps %d attempts, %v; want %d", cert, len(h), err, KeptAttempts)
		}
	}
}
