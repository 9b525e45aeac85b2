package store

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func testStoreOrderRoundTrip(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	start := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	fakeClock(s, start)

	want := fullOrder("u1", "shop")
	want.Created = time.Time{} // ignored: PutOrder stamps it
	if err := s.PutOrder(ctx, want); err != nil {
		t.Fatalf("PutOrder: %v", err)
	}
	if !want.Created.Equal(start) || !want.Updated.Equal(start) {
		t.Errorf("after insert Created, Updated = %v, %v; want both %v", want.Created, want.Updated, start)
	}

	lookups := map[string]func() (*Order, error){
		"Order":        func() (*Order, error) { return s.Order(ctx, "u1") },
		"OrderByToken": func() (*Order, error) { return s.OrderByToken(ctx, "tok-u1") },
		"ActiveOrder":  func() (*Order, error) { return s.ActiveOrder(ctx, "shop") },
		"ActiveOrders": func() (*Order, error) {
			all, err := s.ActiveOrders(ctx)
			if err != nil || len(all) != 1 {
				return nil, fmt.Errorf("got %d orders, %v; want 1", len(all), err)
			}
			return all[0], nil
		},
	}
	for name, lookup := range lookups {
		got, err := lookup()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", name, got, want)
		}
	}

	// An update keeps Created, moves Updated, and may clear fields
	// (nil slices and maps stay nil, zero times stay zero).
	upd := &Order{UniqueID: "u1", Cert: "shop", Step: StepIssued, Created: t1}
	if err := s.PutOrder(ctx, upd); err != nil {
		t.Fatalf("PutOrder update: %v", err)
	}
	if !upd.Created.Equal(start) || !upd.Updated.Equal(start.Add(time.Second)) {
		t.Errorf("after update Created, Updated = %v, %v; want %v, %v", upd.Created, upd.Updated, start, start.Add(time.Second))
	}
	got, err := s.Order(ctx, "u1")
	if err != nil {
		t.Fatalf("Order: %v", err)
	}
	if !reflect.DeepEqual(got, upd) {
		t.Errorf("after update:\n got %+v\nwant %+v", got, upd)
	}
	// The token went with the update: the old one no longer matches.
	if _, err := s.OrderByToken(ctx, "tok-u1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("OrderByToken(old token) after the token was cleared: %v, want ErrNotFound", err)
	}
}

func testStoreTimesAreUTCAndExact(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	zone := time.FixedZone("UTC+8", 8*3600)
	o := &Order{UniqueID: "u1", Cert: "shop", Step: StepNew,
		NotAfter: time.Date(2026, 5, 6, 7, 8, 9, 1, zone), NextAttempt: time.Date(2026, 1, 1, 0, 0, 0, 0, zone)}
	if err := s.PutOrder(ctx, o); err != nil {
		t.Fatalf("PutOrder: %v", err)
	}
	got, err := s.Order(ctx, "u1")
	if err != nil {
		t.Fatalf("Order: %v", err)
	}
	if !got.NotAfter.Equal(o.NotAfter) || got.NotAfter.Location() != time.UTC {
		t.Errorf("NotAfter = %v, want %v in UTC", got.NotAfter, o.NotAfter)
	}
	if !got.NextAttempt.Equal(o.NextAttempt) {
		t.Errorf("NextAttempt = %v, want %v", got.NextAttempt, o.NextAttempt)
	}
	if !got.NotBefore.IsZero() {
		t.Errorf("NotBefore = %v, want zero", got.NotBefore)
	}
}

func TestStoreTimeTextSortsAsTime(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)
	times := []time.Time{
		base,
		base.Add(time.Nanosecond),
		base.Add(100 * time.Millisecond),
		base.Add(time.Second),
		base.Add(10 * time.Second),
		base.AddDate(1, 0, 0),
	}
	for i := 1; i < len(times); i++ {
		a, b := formatTime(times[i-1]), formatTime(times[i])
		if a >= b {
			t.Errorf("formatTime(%v) = %q does not sort before formatTime(%v) = %q", times[i-1], a, times[i], b)
		}
		back, err := parseTime(b)
		if err != nil || !back.Equal(times[i]) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", b, back, err, times[i])
		}
	}
	if _, err := parseTime("yesterday"); err == nil {
		t.Error(`parseTime("yesterday") succeeded`)
	}
}

func testStoreNotFound(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	done := fullOrder("u-done", "old")
	done.Step = StepDone
	noToken := &Order{UniqueID: "u-notoken", Cert: "shop", Step: StepNew}
	for _, o := range []*Order{done, noToken} {
		if err := s.PutOrder(ctx, o); err != nil {
			t.Fatalf("PutOrder %s: %v", o.UniqueID, err)
		}
	}

	tests := []struct {
		name string
		call func() (any, error)
	}{
		{"Certificate", func() (any, error) { return s.Certificate(ctx, "nope") }},
		{"Order", func() (any, error) { return s.Order(ctx, "nope") }},
		{"OrderByToken unknown", func() (any, error) { return s.OrderByToken(ctx, "nope") }},
		// u-notoken has no token: "" must not find it.
		{"OrderByToken empty", func() (any, error) { return s.OrderByToken(ctx, "") }},
		{"ActiveOrder no order", func() (any, error) { return s.ActiveOrder(ctx, "nope") }},
		// old's only order is done.
		{"ActiveOrder only terminal", func() (any, error) { return s.ActiveOrder(ctx, "old") }},
	}
	// Even a row holding '' rather than NULL (written by something other
	// than PutOrder) is not found by the empty token.
	if err := s.exec(ctx, `INSERT INTO orders (unique_id, cert, service_id, step, callback_token, data, created, updated)
		VALUES ('raw', 'raw', '', 'done', '', '{}', '', '')`); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("got %v, %v; want ErrNotFound", got, err)
			}
		})
	}

	// A terminal order is still found by its unique_id and token.
	if _, err := s.Order(ctx, "u-done"); err != nil {
		t.Errorf("Order(done order): %v", err)
	}
	if _, err := s.OrderByToken(ctx, "tok-u-done"); err != nil {
		t.Errorf("OrderByToken(done order): %v", err)
	}
}

func testStoreOneActiveOrderPerCert(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	put := func(uid, cert string, step Step) error {
		return s.PutOrder(ctx, &Order{UniqueID: uid, Cert: cert, Step: step})
	}

	if err := put("a", "shop", StepNew); err != nil {
		t.Fatalf("first order: %v", err)
	}
	// Updating the order in flight is fine.
	if err := put("a", "shop", StepSubmitted); err != nil {
		t.Fatalf("update of the order in flight: %v", err)
	}
	// A second one for the same certificate is refused, and not stored.
	err := put("b", "shop", StepNew)
	if !errors.Is(err, ErrActiveOrder) {
		t.Fatalf("second order in flight: %v, want ErrActiveOrder", err)
	}
	if !strings.Contains(err.Error(), "order a is in flight") {
		t.Errorf("error %q does not name the order in flight", err)
	}
	if _, err := s.Order(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused order was stored: %v", err)
	}
	// Terminal orders never count: a finished one may be stored next to
	// the one in flight, and another certificate is independent.
	if err := put("old", "shop", StepFailed); err != nil {
		t.Errorf("terminal order next to the one in flight: %v", err)
	}
	if err := put("c", "api", StepNew); err != nil {
		t.Errorf("order of another certificate: %v", err)
	}
	// Once a is done, b may start.
	if err := put("a", "shop", StepDone); err != nil {
		t.Fatalf("finish a: %v", err)
	}
	if err := put("b", "shop", StepNew); err != nil {
		t.Fatalf("order after the previous one finished: %v", err)
	}
	got, err := s.ActiveOrder(ctx, "shop")
	if err != nil || got.UniqueID != "b" {
		t.Fatalf("ActiveOrder(shop) = %v, %v; want b", got, err)
	}

	// A finished order is never resumed, even when its certificate has no
	// other order in flight; an order never changes certificate; the
	// refusals change nothing.
	if err := put("b", "shop", StepFailed); err != nil {
		t.Fatalf("fail b: %v", err)
	}
	if err := put("a", "shop", StepSubmitted); err == nil {
		t.Error("a done order was moved back to submitted")
	}
	if err := put("old", "shop", StepNew); err == nil {
		t.Error("a failed order was moved back to new")
	}
	if _, err := s.ActiveOrder(ctx, "shop"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a finished order of shop is in flight again: %v", err)
	}
	if err := put("c", "shop", StepNew); err == nil {
		t.Error("an order was moved to another certificate")
	}
	if o, err := s.Order(ctx, "a"); err != nil || o.Step != StepDone {
		t.Errorf("after refused updates a = %+v, %v; want done", o, err)
	}
	if o, err := s.Order(ctx, "c"); err != nil || o.Cert != "api" {
		t.Errorf("after refused updates c = %+v, %v; want cert api", o, err)
	}
	// Terminal to terminal is fine (a late error recorded on a failed order).
	if err := s.PutOrder(ctx, &Order{UniqueID: "old", Cert: "shop", Step: StepFailed, LastError: "late"}); err != nil {
		t.Errorf("update of a failed order: %v", err)
	}

	// The database enforces the invariant too, whatever writes to it.
	if err := put("d", "shop", StepNew); err != nil {
		t.Fatalf("new order after the others finished: %v", err)
	}
	err = s.exec(ctx, `INSERT INTO orders (unique_id, cert, service_id, step, data, created, updated)
		VALUES ('raw', 'shop', '', 'published', '{}', '', '')`)
	if err == nil {
		t.Error("the database accepted a second order in flight written behind PutOrder's back")
	}
}

func testStorePutOrderRefuses(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	if err := s.PutOrder(ctx, &Order{UniqueID: "u1", Cert: "shop", Step: StepNew, CallbackToken: "secret-token"}); err != nil {
		t.Fatalf("PutOrder: %v", err)
	}
	tests := []struct {
		name string
		o    *Order
		want string
	}{
		{"nil", nil, "nil order"},
		{"no unique_id", &Order{Cert: "shop", Step: StepNew}, "no unique_id"},
		{"no cert", &Order{UniqueID: "u2", Step: StepNew}, "no certificate name"},
		{"no step", &Order{UniqueID: "u2", Cert: "api"}, `unknown step ""`},
		{"unknown step", &Order{UniqueID: "u2", Cert: "api", Step: "pending"}, `unknown step "pending"`},
		{"token of another order", &Order{UniqueID: "u2", Cert: "api", Step: StepNew, CallbackToken: "secret-token"},
			"order u1 has the same callback token"},
		{"cost not a number", &Order{UniqueID: "u2", Cert: "api", Step: StepNew, Cost: math.NaN()}, "unsupported value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.PutOrder(ctx, tt.o)
			if err == nil {
				t.Fatal("PutOrder succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret-token") {
				t.Errorf("error %q reveals the callback token", err)
			}
			if _, err := s.Order(ctx, "u2"); !errors.Is(err, ErrNotFound) {
				t.Errorf("the refused order was stored: %v", err)
			}
		})
	}
	if o, err := s.OrderByToken(ctx, "secret-token"); err != nil || o.UniqueID != "u1" {
		t.Errorf("OrderByToken after refusals = %+v, %v; want u1", o, err)
	}
}

func testStoreActiveOrdersOldestFirst(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	fakeClock(s, t0)
	// Created in the order c, a, b; d finishes; a is updated last, which
	// must not move it.
	for _, o := range []*Order{
		{UniqueID: "uc", Cert: "c", Step: StepNew},
		{UniqueID: "ua", Cert: "a", Step: StepNew},
		{UniqueID: "ub", Cert: "b", Step: StepNew},
		{UniqueID: "ud", Cert: "d", Step: StepNew},
		{UniqueID: "ud", Cert: "d", Step: StepDone},
		{UniqueID: "ua", Cert: "a", Step: StepVisible},
	} {
		if err := s.PutOrder(ctx, o); err != nil {
			t.Fatalf("PutOrder %s: %v", o.UniqueID, err)
		}
	}
	all, err := s.ActiveOrders(ctx)
	if err != nil {
		t.Fatalf("ActiveOrders: %v", err)
	}
	var ids []string
	for _, o := range all {
		ids = append(ids, o.UniqueID)
	}
	if want := []string{"uc", "ua", "ub"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ActiveOrders = %v, want %v", ids, want)
	}
}

func testStoreConcurrentPutOrder(t *testing.T, b storeBackend) {
	s, db := b.openTestStore(t)
	ctx := t.Context()
	// A second store on the same database stands for a second process
	// ("dcvd reissue" while the daemon runs, or another dcvd of a
	// cluster): the invariants must hold across connections, not only
	// between goroutines sharing one.
	s2, err := db.open(ctx)
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	defer s2.Close()
	stores := []testStore{s, s2}
	const certs, contenders = 8, 8
	var wg sync.WaitGroup

	// Each certificate's order walks its steps from its own goroutine,
	// all certificates at once.
	steps := []Step{StepNew, StepSubmitted, StepPublishing, StepPublished, StepVisible,
		StepRechecked, StepIssued, StepDeployed, StepReloaded, StepDone}
	errs := make(chan error, certs*len(steps)+contenders)
	for i := range certs {
		wg.Go(func() {
			st := stores[i%2]
			o := fullOrder(fmt.Sprintf("walk-%d", i), fmt.Sprintf("cert-%d", i))
			for _, step := range steps {
				o.Step = step
				if err := st.PutOrder(ctx, o); err != nil {
					errs <- err
					return
				}
				if err := st.AddAttempt(ctx, Attempt{Cert: o.Cert, UniqueID: o.UniqueID, Outcome: StepDone, Cost: 1}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	// Meanwhile several goroutines race to start an order for the same
	// certificate: exactly one may win.
	var mu sync.Mutex
	var winners []string
	for i := range contenders {
		wg.Go(func() {
			uid := fmt.Sprintf("race-%d", i)
			err := stores[i%2].PutOrder(ctx, &Order{UniqueID: uid, Cert: "contested", Step: StepNew, CallbackToken: uid})
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, uid)
				mu.Unlock()
			case !errors.Is(err, ErrActiveOrder):
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if len(winners) != 1 {
		t.Fatalf("%d orders in flight were accepted for one certificate (%v), want 1", len(winners), winners)
	}
	active, err := s.ActiveOrders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 || active[0].UniqueID != winners[0] {
		t.Errorf("ActiveOrders = %d orders, want only %s", len(active), winners[0])
	}
	for i := range certs {
		o, err := s.Order(ctx, fmt.Sprintf("walk-%d", i))
		if err != nil || o.Step != StepDone {
			t.Errorf("walk-%d = %+v, %v; want done", i, o, err)
		}
		if total, err := s.TotalCost(ctx, fmt.Sprintf("cert-%d", i)); err != nil || total != 1 {
			t.Errorf("TotalCost(cert-%d) = %v, %v; want 1 (one attempt per unique_id)", i, total, err)
		}
	}
}

// TestStoreKnownSteps keeps knownSteps in step with the Step constants
// declared in types.go: an order in a step missing there could not be
// stored.
func TestStoreKnownSteps(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "types.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[Step]bool{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Step" {
				continue
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("a Step constant is not a string literal: %T", v)
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				declared[Step(s)] = true
			}
		}
	}
	if len(declared) == 0 {
		t.Fatal("found no Step constants in types.go")
	}
	if !reflect.DeepEqual(declared, knownSteps) {
		t.Errorf("Step constants in types.go = %v, knownSteps = %v", declared, knownSteps)
	}
}
