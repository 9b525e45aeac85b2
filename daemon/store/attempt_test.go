package store

import (
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"
)

func testStoreAttempts(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	add := func(a Attempt) {
		t.Helper()
		if err := s.AddAttempt(ctx, a); err != nil {
			t.Fatalf("AddAttempt %s: %v", a.UniqueID, err)
		}
	}
	first := fullAttempt("shop", "u1")
	add(first)
	second := fullAttempt("shop", "u2")
	second.Outcome, second.Cost, second.Error = StepDone, 10, ""
	add(second)
	// Attempts without a unique_id never collide.
	third := fullAttempt("shop", "")
	third.Cost = 0.25
	add(third)
	fourth := third
	add(fourth)
	add(fullAttempt("api", "u9"))

	all, err := s.Attempts(ctx, "shop", 0)
	if err != nil {
		t.Fatalf("Attempts: %v", err)
	}
	if want := []Attempt{fourth, third, second, first}; !reflect.DeepEqual(all, want) {
		t.Errorf("Attempts(shop, 0):\n got %+v\nwant %+v", all, want)
	}
	two, err := s.Attempts(ctx, "shop", 2)
	if err != nil || len(two) != 2 || two[1].Cost != third.Cost {
		t.Errorf("Attempts(shop, 2) = %+v, %v; want the newest two", two, err)
	}
	if neg, err := s.Attempts(ctx, "shop", -1); err != nil || len(neg) != 4 {
		t.Errorf("Attempts(shop, -1) = %d entries, %v; want all 4", len(neg), err)
	}

	total, err := s.TotalCost(ctx, "shop")
	if err != nil || total != 9.5+10+0.25+0.25 {
		t.Errorf("TotalCost(shop) = %v, %v; want 20", total, err)
	}

	// Adding u1 again (a crash after AddAttempt, before the order was
	// marked done) replaces it in place and does not count it twice.
	again := first
	again.Cost, again.Error = 11, "reissue: refused again"
	add(again)
	all, err = s.Attempts(ctx, "shop", 0)
	if err != nil || len(all) != 4 || !reflect.DeepEqual(all[3], again) {
		t.Errorf("after adding u1 again: %+v, %v; want 4 entries, u1 replaced in place", all, err)
	}
	total, err = s.TotalCost(ctx, "shop")
	if err != nil || total != 11+10+0.25+0.25 {
		t.Errorf("TotalCost(shop) after adding u1 again = %v, %v; want 21.5", total, err)
	}

	// A unique_id of another certificate is refused and changes nothing.
	if err := s.AddAttempt(ctx, fullAttempt("shop", "u9")); err == nil {
		t.Error("AddAttempt with api's unique_id under shop succeeded")
	}
	if got, err := s.Attempts(ctx, "api", 0); err != nil || len(got) != 1 || got[0].Cert != "api" {
		t.Errorf("api's history after the refusal = %+v, %v", got, err)
	}

	if total, err := s.TotalCost(ctx, "nope"); err != nil || total != 0 {
		t.Errorf("TotalCost(nope) = %v, %v; want 0, nil", total, err)
	}

	bad := []struct {
		name string
		a    Attempt
	}{
		{"no cert", Attempt{UniqueID: "x", Outcome: StepDone}},
		{"outcome not terminal", Attempt{Cert: "shop", UniqueID: "x", Outcome: StepIssued}},
		{"no outcome", Attempt{Cert: "shop", UniqueID: "x"}},
		{"cost NaN", Attempt{Cert: "shop", UniqueID: "x", Outcome: StepDone, Cost: math.NaN()}},
		{"cost infinite", Attempt{Cert: "shop", UniqueID: "x", Outcome: StepDone, Cost: math.Inf(1)}},
	}
	for _, tt := range bad {
		if err := s.AddAttempt(ctx, tt.a); err == nil {
			t.Errorf("AddAttempt %s succeeded, want an error", tt.name)
		}
	}
	if all, _ := s.Attempts(ctx, "shop", 0); len(all) != 4 {
		t.Errorf("refused attempts were stored: %d entries, want 4", len(all))
	}
}

// testStoreRecentAttempts: every certificate's history, each as Attempts
// returns it, whatever the limit, with histories added interleaved.
func testStoreRecentAttempts(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	empty, err := s.RecentAttempts(ctx, 20)
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("RecentAttempts on an empty store = %#v, %v; want an empty map", empty, err)
	}

	// shop, api and web take turns, so that no certificate's rows are
	// contiguous; shop has the longest history, web a single entry.
	n := 0
	add := func(cert, uniqueID string) Attempt {
		t.Helper()
		n++
		a := fullAttempt(cert, uniqueID)
		a.Cost = float64(n)
		a.Finished = a.Finished.Add(time.Duration(n) * time.Minute)
		if n%3 == 0 {
			a.Outcome, a.Error = StepDone, ""
		}
		if err := s.AddAttempt(ctx, a); err != nil {
			t.Fatalf("AddAttempt %s of %s: %v", uniqueID, cert, err)
		}
		return a
	}
	for i := range 6 {
		add("shop", fmt.Sprintf("s%d", i))
		if i < 4 {
			add("api", fmt.Sprintf("a%d", i))
		}
		if i == 2 {
			add("web", "w0")
			add("shop", "") // no unique_id
		}
	}
	// Replacing an attempt keeps its place in the history.
	again := fullAttempt("shop", "s1")
	again.Cost, again.Error = 100, "replaced"
	if err := s.AddAttempt(ctx, again); err != nil {
		t.Fatal(err)
	}

	for _, limit := range []int{-1, 0, 1, 2, 4, 7, 20} {
		got, err := s.RecentAttempts(ctx, limit)
		if err != nil {
			t.Fatalf("RecentAttempts(%d): %v", limit, err)
		}
		if len(got) != 3 {
			t.Errorf("RecentAttempts(%d) has %d certificates, want shop, api and web: %v", limit, len(got), got)
		}
		for _, cert := range []string{"shop", "api", "web"} {
			want, err := s.Attempts(ctx, cert, limit)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got[cert], want) {
				t.Errorf("RecentAttempts(%d)[%s]:\n got %+v\nwant %+v", limit, cert, got[cert], want)
			}
		}
	}
	all, err := s.RecentAttempts(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all["shop"]) != 7 || all["shop"][5].Error != "replaced" {
		t.Errorf("shop's whole history = %+v; want 7 entries, s1 replaced in place", all["shop"])
	}

	// The caller's to modify: nothing is shared, between certificates
	// or with a later call.
	two, err := s.RecentAttempts(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	shop := append(two["shop"], Attempt{Cert: "intruder"}, Attempt{Cert: "intruder"})
	for i := range shop {
		shop[i].Error = "changed by the caller"
	}
	for _, cert := range []string{"api", "web"} {
		if want, _ := s.Attempts(ctx, cert, 2); !reflect.DeepEqual(two[cert], want) {
			t.Errorf("changing shop's slice changed %s's: %+v", cert, two[cert])
		}
	}
	if again, _ := s.RecentAttempts(ctx, 2); again["shop"][0].Error == "changed by the caller" {
		t.Error("a change by the caller shows in a later RecentAttempts")
	}

	// A cluster store's fenced view reads the same.
	if cs, ok := s.(ClusterStore); ok {
		fenced, err := cs.Fenced(Lease{Cert: "shop", Holder: "n1", Token: 1}).RecentAttempts(ctx, 2)
		if want, _ := s.RecentAttempts(ctx, 2); err != nil || !reflect.DeepEqual(fenced, want) {
			t.Errorf("Fenced(...).RecentAttempts(2) = %+v, %v; want %+v", fenced, err, want)
		}
	}
}

// testStoreRecentAttemptsReadOnlyTheLimit: the limit is applied by the
// database, so that the sweep reads KeptAttempts attempts per
// certificate however long the histories: an attempt beyond the limit that
// cannot be read (its time is garbage) is not read.
func testStoreRecentAttemptsReadOnlyTheLimit(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	const n = KeptAttempts + 10
	for i := range n {
		for _, cert := range []string{"shop", "api"} {
			a := fullAttempt(cert, fmt.Sprintf("%s-%02d", cert, i))
			a.Finished = t0.Add(time.Duration(i) * time.Hour)
			if err := s.AddAttempt(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.AddAttempt(ctx, fullAttempt("web", "web-0")); err != nil {
		t.Fatal(err)
	}
	want := map[string][]Attempt{}
	for _, cert := range []string{"shop", "api", "web"} {
		h, err := s.Attempts(ctx, cert, KeptAttempts)
		if err != nil {
			t.Fatal(err)
		}
		want[cert] = h
	}
	if len(want["shop"]) != KeptAttempts || want["shop"][0].UniqueID != fmt.Sprintf("shop-%02d", n-1) {
		t.Fatalf("Attempts(shop, %d) = %d entries, newest %s", KeptAttempts, len(want["shop"]), want["shop"][0].UniqueID)
	}
	// The oldest of each long history can no longer be read.
	if err := s.exec(ctx, `UPDATE attempts SET finished = 'garbage' WHERE unique_id IN ('shop-00', 'api-00')`); err != nil {
		t.Fatal(err)
	}
	got, err := s.RecentAttempts(ctx, KeptAttempts)
	if err != nil {
		t.Fatalf("RecentAttempts(%d) read beyond the limit: %v", KeptAttempts, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RecentAttempts(%d):\n got %+v\nwant %+v", KeptAttempts, got, want)
	}
	if _, err := s.Attempts(ctx, "shop", KeptAttempts); err != nil {
		t.Errorf("Attempts(shop, %d) read beyond the limit: %v", KeptAttempts, err)
	}
	// The whole history does reach the garbage: the test tests something.
	if _, err := s.RecentAttempts(ctx, 0); err == nil {
		t.Error("RecentAttempts(0) read a garbage time without an error")
	}
}
