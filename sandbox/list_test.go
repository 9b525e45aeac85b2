package sandbox

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

// listPage calls certificate/list with query and decodes the page with the
// client's tolerant decoder.
func (h *sbHarness) listPage(t *testing.T, query map[string]any) reseller.ServicePage {
	t.Helper()
	r := h.call(http.MethodGet, reseller.PathList, query)
	r.mustSucceed(t)
	var p reseller.ServicePage
	if err := json.Unmarshal(r.env.Data, &p); err != nil {
		t.Fatalf("decode the page: %v\n%s", err, r.raw)
	}
	return p
}

func listedIDs(p reseller.ServicePage) []string {
	out := []string{}
	for _, s := range p.Items {
		out = append(out, s.ServiceID)
	}
	return out
}

func TestListPages(t *testing.T) {
	var many []Service
	for i := range 120 {
		many = append(many, Service{ID: fmt.Sprintf("m%03d", i), ProductID: "multi"})
	}
	h := sbStart(t, "", nil, func(c *Config) { c.Services = append(append([]Service{}, c.Services...), many...) })
	// 123 services: svc, nowild, org (in that order of creation), then m000…m119.
	first := h.listPage(t, nil)
	if first.CurrentPage != 1 || first.PerPage != 15 || first.Total != 123 || first.LastPage != 9 || len(first.Items) != 15 {
		t.Errorf("default page: %+v", first)
	}
	if got := listedIDs(first)[:4]; !reflect.DeepEqual(got, []string{"svc", "nowild", "org", "m000"}) {
		t.Errorf("the list starts %v, want the order of creation", got)
	}
	if first.Items[0].ID != "1" || first.Items[3].ID != "4" {
		t.Errorf("ids %q %q, want 1 and 4", first.Items[0].ID, first.Items[3].ID)
	}

	big := h.listPage(t, map[string]any{"page_size": "500", "page": "2"})
	if big.PerPage != 100 || big.LastPage != 2 || big.CurrentPage != 2 || len(big.Items) != 23 || big.Items[0].ServiceID != "m097" {
		t.Errorf("page 2 of 100 (asked 500): per_page %d, last %d, %d items from %s", big.PerPage, big.LastPage, len(big.Items), big.Items[0].ServiceID)
	}
	beyond := h.call(http.MethodGet, reseller.PathList, map[string]any{"page": "10"})
	beyond.mustSucceed(t)
	if !strings.Contains(string(beyond.env.Data), `"data":[]`) || !strings.Contains(string(beyond.env.Data), `"from":null`) {
		t.Errorf("a page beyond the last: %s", beyond.env.Data)
	}

	// Every page once, in order: the whole list.
	var all []string
	for page := 1; page <= first.LastPage; page++ {
		all = append(all, listedIDs(h.listPage(t, map[string]any{"page": fmt.Sprint(page)}))...)
	}
	if len(all) != 123 || all[122] != "m119" {
		t.Errorf("paged through %d services, ending %v", len(all), all[len(all)-1])
	}

	for _, bad := range []map[string]any{
		{"page": "0"}, {"page": "x"}, {"page_size": "0"}, {"page_size": "-3"}, {"page_size": "1.5"}, {"status": "lost"},
	} {
		r := h.call(http.MethodGet, reseller.PathList, bad)
		var field string
		for k := range bad {
			field = k
		}
		if r.status != http.StatusUnprocessableEntity || len(r.env.Errors[field]) == 0 {
			t.Errorf("%v: HTTP %d %s, want 422 on %s", bad, r.status, r.raw, field)
		}
	}
}

func TestListItems(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.Validity = 90 * 24 * time.Hour })
	created := h.clock.Now()
	end := created.Add(200 * 24 * time.Hour)
	if err := h.srv.SetServiceEnd("svc", end); err != nil {
		t.Fatal(err)
	}
	_, csr := sbCSR(t, "a.example.com")
	h.reissue("i1", "svc", map[string]string{"a.example.com": "admin@example.com", "b.example.com": "dns"}, csr).mustSucceed(t)

	p := h.listPage(t, map[string]any{"keyword": "svc"})
	if len(p.Items) != 1 {
		t.Fatalf("keyword svc: %+v", p)
	}
	it := p.Items[0]
	if it.ServiceID != "svc" || it.Status != reseller.StatusPending || it.ProductName != "Multi" || it.Period != "1 Year" ||
		!it.CreatedAt.Equal(created) || !it.ServiceExpiresAt.Equal(end) || !it.CertExpiresAt.IsZero() {
		t.Errorf("item %+v", it)
	}
	if want := map[string]string{"a.example.com": "admin@example.com", "b.example.com": "dns"}; !reflect.DeepEqual(it.DomainDCV, want) {
		t.Errorf("domain_dcv %v, want %v", it.DomainDCV, want)
	}
	raw := string(h.call(http.MethodGet, reseller.PathList, map[string]any{"keyword": "svc"}).raw)
	mustContain(t, raw, `"service_expires_at":"`+end.In(beijing).Format(time.RFC3339)+`"`, `"cert_expires_at":null`, `"id":1,`)
	raw = string(h.call(http.MethodGet, reseller.PathList, map[string]any{"keyword": "nowild"}).raw)
	mustContain(t, raw, `"domain_dcv":{}`)

	// Keywords match a part of a domain or of the service_id, in any case.
	for kw, want := range map[string][]string{
		"B.EXAMPLE": {"svc"}, "WILD": {"nowild"}, "r": {"org"}, "v": {"svc"}, "nothing": {},
	} {
		if got := listedIDs(h.listPage(t, map[string]any{"keyword": kw})); !reflect.DeepEqual(got, want) {
			t.Errorf("keyword %q: %v, want %v", kw, got, want)
		}
	}
}

func TestListStatusFilters(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.Validity = 40 * 24 * time.Hour })
	_, csr := sbCSR(t, "a.example.com")
	issue := func(uid, service string) {
		t.Helper()
		h.reissue(uid, service, map[string]string{"a.example.com": "admin@example.com"}, csr).mustSucceed(t)
		if err := h.srv.ApproveEmail(service, "a.example.com"); err != nil {
			t.Fatal(err)
		}
	}
	issue("f1", "svc")
	h.reissue("f2", "nowild", map[string]string{"a.example.com": "dns"}, csr).mustSucceed(t) // stays pending
	check := func(when string, want map[string][]string) {
		t.Helper()
		for status, ids := range want {
			if got := listedIDs(h.listPage(t, map[string]any{"status": status})); !reflect.DeepEqual(got, ids) {
				t.Errorf("%s, status %s: %v, want %v", when, status, got, ids)
			}
		}
	}
	check("at issue", map[string][]string{
		"issuing": {"nowild"}, "issued": {"svc"}, "expiring": {}, "expired": {}, "ISSUED": {"svc"},
	})
	h.clock.Advance(11 * 24 * time.Hour) // 29 days left
	check("29 days before expiry", map[string][]string{"issued": {"svc"}, "expiring": {"svc"}, "expired": {}})
	h.clock.Advance(30 * 24 * time.Hour)
	check("after expiry", map[string][]string{"issued": {}, "expiring": {}, "expired": {"svc"}})
}
