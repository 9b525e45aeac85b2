package providers

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"

	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/reseller"
)

// countingProvider wraps a provider and counts the calls that write.
type countingProvider struct {
	*memdns.Server
	mu         sync.Mutex
	sets, dels int
	setRecs    [][]libdns.Record
	failWith   error
}

func (c *countingProvider) SetRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	c.mu.Lock()
	c.sets++
	c.setRecs = append(c.setRecs, recs)
	fail := c.failWith
	c.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	return c.Server.SetRecords(ctx, zone, recs)
}

func (c *countingProvider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	c.mu.Lock()
	c.dels++
	c.mu.Unlock()
	return c.Server.DeleteRecords(ctx, zone, recs)
}

func newTestDNS(t *testing.T, zones ...string) (*DNS, *countingProvider) {
	t.Helper()
	srv, err := memdns.Start("127.0.0.1:0", zones...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	p := &countingProvider{Server: srv}
	d := &DNS{
		Name: "test", Kind: "memdns", Provider: p, TTL: time.Minute,
		Propagation: Propagation{Timeout: 5 * time.Second, Interval: 20 * time.Millisecond, Nameservers: []string{srv.Addr()}},
		secrets:     []string{"sekrit-token"},
	}
	d.zones = newZoneFinder("", p, nil, time.Second)
	return d, p
}

func zoneRecords(t *testing.T, p *countingProvider, zone string) []libdns.RR {
	t.Helper()
	recs, err := p.GetRecords(context.Background(), zone)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]libdns.RR, len(recs))
	for i, r := range recs {
		out[i] = r.RR()
	}
	return out
}

func TestPlanMergesSharedRecordsAndFindsZones(t *testing.T) {
	d, _ := newTestDNS(t, "example.com", "sub.example.com", "other.org")
	ctx := context.Background()
	recs, err := d.Plan(ctx, []reseller.CNAMEInstruction{
		{Name: "_abc.example.com", Target: "a.b.sectigo.com"},  // example.com
		{Name: "_ABC.example.com.", Target: "A.B.sectigo.com"}, // *.example.com: same record
		{Name: "_def.www.sub.example.com", Target: "c.d.sectigo.com"},
		{Name: "_ghi.other.org", Target: "e.f.sectigo.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{
		{Provider: "test", Zone: "example.com.", Name: "_abc.example.com", Target: "a.b.sectigo.com", TTL: time.Minute},
		{Provider: "test", Zone: "sub.example.com.", Name: "_def.www.sub.example.com", Target: "c.d.sectigo.com", TTL: time.Minute},
		{Provider: "test", Zone: "other.org.", Name: "_ghi.other.org", Target: "e.f.sectigo.com", TTL: time.Minute},
	}
	if len(recs) != len(want) {
		t.Fatalf("plan = %+v, want %+v", recs, want)
	}
	for i := range want {
		if recs[i] != want[i] {
			t.Errorf("record %d = %+v, want %+v", i, recs[i], want[i])
		}
	}

	bad := []struct {
		name string
		in   []reseller.CNAMEInstruction
		want string
	}{
		{"not a DCV name", []reseller.CNAMEInstruction{{Name: "www.example.com", Target: "x.y.com"}}, "not a DCV record name"},
		{"zone apex", []reseller.CNAMEInstruction{{Name: "_x.com", Target: "x.y.com"}}, "not a DCV record name"},
		{"conflicting targets", []reseller.CNAMEInstruction{{Name: "_a.example.com", Target: "x.y.com"}, {Name: "_a.example.com", Target: "z.y.com"}}, "both"},
		{"no zone", []reseller.CNAMEInstruction{{Name: "_a.example.net", Target: "x.y.com"}}, "zone of _a.example.net"},
		{"no target", []reseller.CNAMEInstruction{{Name: "_a.example.com", Target: ""}}, "no target"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := d.Plan(ctx, tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestPublishBatchesPerZoneIsIdempotentAndCleansUpExactly(t *testing.T) {
	d, p := newTestDNS(t, "example.com", "other.org")
	ctx := context.Background()
	// Unrelated records, and a CNAME at a DCV name pointing elsewhere that
	// dcvd did not plan: all must survive.
	if _, err := p.Server.AppendRecords(ctx, "example.com.", []libdns.Record{
		libdns.Address{Name: "www", TTL: time.Hour, IP: mustAddr("192.0.2.1")},
		libdns.TXT{Name: "_keep", TTL: time.Hour, Text: "v=keep"},
		libdns.CNAME{Name: "_old", TTL: time.Hour, Target: "old.sectigo.com."},
	}); err != nil {
		t.Fatal(err)
	}
	before := zoneRecords(t, p, "example.com.")

	recs, err := d.Plan(ctx, []reseller.CNAMEInstruction{
		{Name: "_a.example.com", Target: "a.sectigo.com"},
		{Name: "_b.shop.example.com", Target: "b.sectigo.com"},
		{Name: "_c.other.org", Target: "c.sectigo.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := d.Publish(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Calls != 2 || p.sets != 2 || len(rep.Set) != 3 || len(rep.Unchanged) != 0 {
		t.Fatalf("publish: %d calls (%d seen), %d set, %d unchanged; want 2 calls for 2 zones and 3 set", rep.Calls, p.sets, len(rep.Set), len(rep.Unchanged))
	}
	if err := d.WaitVisible(ctx, recs); err != nil {
		t.Fatalf("published records not visible: %v", err)
	}

	// Again: nothing to write.
	rep, err = d.Publish(ctx, recs)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Calls != 0 || p.sets != 2 || len(rep.Unchanged) != 3 {
		t.Fatalf("second publish wrote: %d calls, %d unchanged", rep.Calls, len(rep.Unchanged))
	}

	// After a restart: the persisted plan, a new DNS, cleanup.
	saved, err := json.Marshal(recs)
	if err != nil {
		t.Fatal(err)
	}
	var loaded []Record
	if err := json.Unmarshal(saved, &loaded); err != nil {
		t.Fatal(err)
	}
	d2 := &DNS{Name: "test", Provider: p, TTL: time.Minute}
	d2.zones = newZoneFinder("", p, nil, time.Second)
	if err := d2.Cleanup(ctx, loaded); err != nil {
		t.Fatal(err)
	}
	if p.dels != 2 {
		t.Errorf("cleanup made %d DeleteRecords calls, want one per zone (2)", p.dels)
	}
	if after := zoneRecords(t, p, "example.com."); !sameRRs(before, after) {
		t.Errorf("zone after cleanup:\n%v\nwant as before:\n%v", after, before)
	}
	if left := zoneRecords(t, p, "other.org."); len(left) != 2 { // SOA and NS
		t.Errorf("other.org. after cleanup: %v", left)
	}
	// Cleanup again: nothing left to delete, no error, no call.
	if err := d2.Cleanup(ctx, loaded); err != nil {
		t.Fatal(err)
	}
	if p.dels != 2 {
		t.Errorf("a repeated cleanup deleted again (%d calls)", p.dels)
	}
}

func TestPublishReplacesAStaleTargetButNotOtherTypes(t *testing.T) {
	d, p := newTestDNS(t, "example.com")
	ctx := context.Background()
	p.Server.AppendRecords(ctx, "example.com.", []libdns.Record{
		libdns.CNAME{Name: "_a", Target: "stale.sectigo.com."},
		libdns.TXT{Name: "_t", Text: "mine"},
	})
	recs, _ := d.Plan(ctx, []reseller.CNAMEInstruction{{Name: "_a.example.com", Target: "fresh.sectigo.com"}})
	if _, err := d.Publish(ctx, recs); err != nil {
		t.Fatal(err)
	}
	for _, r := range zoneRecords(t, p, "example.com.") {
		if r.Name == "_a" && r.Data != "fresh.sectigo.com." {
			t.Errorf("stale CNAME kept: %+v", r)
		}
	}

	recs, _ = d.Plan(ctx, []reseller.CNAMEInstruction{{Name: "_t.example.com", Target: "x.sectigo.com"}})
	_, err := d.Publish(ctx, recs)
	if err == nil || !strings.Contains(err.Error(), "already has a TXT record") {
		t.Fatalf("publishing over a TXT: got %v, want a refusal", err)
	}
}

func TestProviderErrorsAreRedacted(t *testing.T) {
	d, p := newTestDNS(t, "example.com")
	p.failWith = errors.New("HTTP 403 for token sekrit-token")
	recs, err := d.Plan(context.Background(), []reseller.CNAMEInstruction{{Name: "_a.example.com", Target: "x.sectigo.com"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Publish(context.Background(), recs)
	if err == nil {
		t.Fatal("a failing provider published")
	}
	if strings.Contains(err.Error(), "sekrit-token") || !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("error not redacted: %v", err)
	}
}

func sameRRs(a, b []libdns.RR) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[libdns.RR]int{}
	for _, r := range a {
		seen[r]++
	}
	for _, r := range b {
		seen[r]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

type panickingProvider struct{ *memdns.Server }

func (panickingProvider) GetRecords(context.Context, string) ([]libdns.Record, error) {
	var info *struct{ PerPage int }
	_ = 10 / info.PerPage // as a provider that trusts a reply's paging info
	return nil, nil
}

func TestAProviderPanicBecomesAnError(t *testing.T) {
	d, p := newTestDNS(t, "example.com")
	d.Provider = panickingProvider{p.Server}
	recs, err := d.Plan(context.Background(), []reseller.CNAMEInstruction{{Name: "_a.example.com", Target: "x.sectigo.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Publish(context.Background(), recs); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("Publish: got %v, want an error saying the provider panicked", err)
	}
	if err := d.Cleanup(context.Background(), recs); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("Cleanup: got %v, want an error saying the provider panicked", err)
	}
}
