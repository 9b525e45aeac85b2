package store

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// testStoreServices: services round-trip (times exact, an unknown end
// stays zero), a put replaces by service_id, the list is ordered by it
// byte-wise, and a service without an id is refused.
func testStoreServices(t *testing.T, b storeBackend) {
	s, db := b.openTestStore(t)
	ctx := t.Context()
	if got, err := s.Services(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Services on an empty store = %v, %v; want none", got, err)
	}
	end := time.Date(2027, 11, 30, 16, 0, 0, 123456789, time.UTC)
	checked := time.Date(2026, 12, 7, 8, 9, 10, 11, time.UTC)
	want := []Service{
		{ServiceID: "B-7", Cert: "shop", Status: "issued", Expires: end, Checked: checked, AlertedDays: 30},
		{ServiceID: "a-1", Cert: "blog", Checked: checked, AlertedDays: NoServiceAlert},
	}
	for _, sv := range want {
		if err := s.PutService(ctx, sv); err != nil {
			t.Fatal(err)
		}
	}
	// A later word on the same service replaces the first.
	want[0].AlertedDays, want[0].Status = 14, "expiring"
	if err := s.PutService(ctx, want[0]); err != nil {
		t.Fatal(err)
	}
	got, err := db.mustOpen(t).Services(ctx) // what another process reads
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Services =\n%+v\nwant\n%+v", got, want)
	}
	if err := s.PutService(ctx, Service{Cert: "x"}); err == nil || !strings.Contains(err.Error(), "service_id") {
		t.Errorf("PutService without service_id: %v, want a refusal naming service_id", err)
	}
}

func TestServiceEnded(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		s    *Service
		want bool
	}{
		{nil, false},
		{&Service{}, false},
		{&Service{Expires: now.Add(time.Second)}, false},
		{&Service{Expires: now}, true},
		{&Service{Expires: now.Add(-time.Hour)}, true},
	}
	for _, tt := range tests {
		if got := tt.s.Ended(now); got != tt.want {
			t.Errorf("%+v.Ended = %v, want %v", tt.s, got, tt.want)
		}
	}
}
