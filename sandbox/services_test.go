package sandbox

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

func TestServiceCodeIsTheClientsDecision(t *testing.T) {
	if CodeServiceExpired != reseller.CodeServiceExpired {
		t.Errorf("sandbox %q, reseller %q: one decision, two spellings", CodeServiceExpired, reseller.CodeServiceExpired)
	}
}

func TestServiceEndFromConfig(t *testing.T) {
	clock := newSBClock()
	start := clock.Now()
	fixed := start.Add(40 * 24 * time.Hour).Truncate(time.Second)
	h := sbStart(t, "", clock, func(c *Config) {
		c.Services = append([]Service{{ID: "fixed", ProductID: "multi", Expires: fixed}}, c.Services...)
	})
	ends := map[string]time.Time{}
	for _, sv := range h.srv.Services() {
		ends[sv.ID] = sv.Expires
	}
	if want := start.Add(DefaultServicePeriod); !ends["svc"].Equal(want) {
		t.Errorf("svc ends %s, want a year after its creation, %s", ends["svc"], want)
	}
	if !ends["fixed"].Equal(fixed) {
		t.Errorf("fixed ends %s, want %s", ends["fixed"], fixed)
	}
	if o := h.detail("fixed"); !o.ServiceExpiresAt.Equal(fixed) {
		t.Errorf("detail shows service_expires_at %s, want %s", o.ServiceExpiresAt, fixed)
	}
	r := h.call(http.MethodGet, reseller.PathDetail, map[string]any{"service_id": "fixed"})
	if !strings.Contains(string(r.raw), `"service_expires_at":"`+fixed.In(beijing).Format(time.RFC3339)+`"`) {
		t.Errorf("detail does not write service_expires_at in RFC 3339, UTC+8: %s", r.raw)
	}

	// Services already in the state keep their end, but for a configured
	// one; a negative period makes new services endless.
	h.stop()
	moved := fixed.Add(24 * time.Hour)
	h2 := sbStart(t, h.dir, clock, func(c *Config) {
		c.ServicePeriod = -1
		c.Services = append([]Service{{ID: "fixed", ProductID: "multi", Expires: moved}, {ID: "endless", ProductID: "multi"}}, c.Services...)
	})
	for _, sv := range h2.srv.Services() {
		ends[sv.ID] = sv.Expires
	}
	if !ends["fixed"].Equal(moved) || !ends["svc"].Equal(start.Add(DefaultServicePeriod)) || !ends["endless"].IsZero() {
		t.Errorf("after a restart: %v", ends)
	}
	if o := h2.detail("endless"); !o.ServiceExpiresAt.IsZero() {
		t.Errorf("an endless service shows service_expires_at %s", o.ServiceExpiresAt)
	}
	r = h2.call(http.MethodGet, reseller.PathDetail, map[string]any{"service_id": "endless"})
	if !strings.Contains(string(r.raw), `"service_expires_at":null`) {
		t.Errorf("an endless service's detail: %s", r.raw)
	}
}

func TestReissueAfterServiceEnd(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "a.example.com")
	end := h.clock.Now().Add(10 * 24 * time.Hour)
	if err := h.srv.SetServiceEnd("svc", end); err != nil {
		t.Fatal(err)
	}
	dcv := map[string]string{"a.example.com": "dns"}
	before := h.reissue("e1", "svc", dcv, csr).mustOrder(t)
	if !before.ServiceExpiresAt.Equal(end.Truncate(time.Second)) {
		t.Errorf("the reissue reply shows service_expires_at %s, want %s", before.ServiceExpiresAt, end)
	}
	ledger, balance := h.srv.Ledger(), h.srv.Balance()

	h.clock.Advance(10 * 24 * time.Hour) // the very second of the end: over
	r := h.reissue("e2", "svc", dcv, csr)
	r.mustRefuse(t, http.StatusBadRequest, CodeServiceExpired)
	mustContain(t, r.env.Message, "service svc ended on "+end.In(beijing).Format(time.DateOnly), "buy a renewal")
	if got := h.srv.Ledger(); len(got) != len(ledger) || h.srv.Balance() != balance {
		t.Errorf("a refused reissue changed the ledger (%d → %d charges) or the balance (%.2f → %.2f)",
			len(ledger), len(got), balance, h.srv.Balance())
	}
	if o := h.detail("svc"); o.Status != reseller.StatusPending || o.ServiceID != "svc" {
		t.Errorf("the refused reissue replaced the order: %+v", o)
	}

	// A reissue accepted before the end is answered again, charging nothing.
	replay := h.reissue("e1", "svc", dcv, csr).mustOrder(t)
	if replay.CAID != before.CAID || h.charges("e1") != 1 {
		t.Errorf("the replay of e1 after the end: %+v, %d charges", replay, h.charges("e1"))
	}

	// A renewal (a new end) makes the service usable again.
	if err := h.srv.SetServiceEnd("svc", h.clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	h.reissue("e3", "svc", dcv, csr).mustSucceed(t)
	if err := h.srv.SetServiceEnd("nope", end); err == nil {
		t.Error("the end of an unknown service was set")
	}
}

func TestCertificateCappedAtServiceEnd(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.Validity = 90 * 24 * time.Hour })
	end := h.clock.Now().Add(10*24*time.Hour + 1500*time.Millisecond)
	if err := h.srv.SetServiceEnd("svc", end); err != nil {
		t.Fatal(err)
	}
	key, csr := sbCSR(t, "a.example.com")
	h.reissue("c1", "svc", map[string]string{"a.example.com": "admin@example.com"}, csr).mustSucceed(t)
	if err := h.srv.ApproveEmail("svc", "a.example.com"); err != nil {
		t.Fatal(err)
	}
	o := h.detail("svc")
	if o.Status != reseller.StatusIssued {
		t.Fatalf("not issued: %+v", o)
	}
	cert := h.sbVerify(o, key, "a.example.com")
	want := end.Truncate(time.Second)
	if !cert.NotAfter.Equal(want) || !o.NotAfter.Equal(want) {
		t.Errorf("not_after %s (certificate %s), want the service's end %s", o.NotAfter, cert.NotAfter, want)
	}

	// Without an end, the full validity.
	if err := h.srv.SetServiceEnd("svc", time.Time{}); err != nil {
		t.Fatal(err)
	}
	h.reissue("c2", "svc", map[string]string{"a.example.com": "admin@example.com"}, csr).mustSucceed(t)
	if err := h.srv.ApproveEmail("svc", "a.example.com"); err != nil {
		t.Fatal(err)
	}
	if o := h.detail("svc"); o.NotAfter.Sub(h.clock.Now()) < 89*24*time.Hour {
		t.Errorf("without an end, not_after %s is not 90 days away", o.NotAfter)
	}
}

func TestOrderValidatedAfterServiceEnd(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "a.example.com")
	if err := h.srv.SetServiceEnd("svc", h.clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	h.reissue("late", "svc", map[string]string{"a.example.com": "admin@example.com"}, csr).mustSucceed(t)
	h.clock.Advance(2 * time.Hour)
	if err := h.srv.ApproveEmail("svc", "a.example.com"); err != nil {
		t.Fatal(err)
	}
	o := h.detail("svc")
	if o.Status != reseller.StatusExpired || o.CertPEM != "" {
		t.Errorf("an order validated after its service ended: status %s, certificate %t; want expired, none", o.Status, o.CertPEM != "")
	}
}

func TestCreateSetsTheServiceEnd(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "a.example.com")
	for _, tt := range []struct {
		uid    string
		period any
		want   time.Time
		text   string
	}{
		{"p24", "24", h.clock.Now().AddDate(2, 0, 0), "2 Years"},
		{"p6", 6, h.clock.Now().AddDate(0, 6, 0), "6 Months"},
		{"pdefault", nil, h.clock.Now().Add(DefaultServicePeriod), "1 Year"},
	} {
		body := map[string]any{"unique_id": tt.uid, "product_id": "single", "csr": csr, "domain_dcv": map[string]string{"a.example.com": "dns"}}
		if tt.period != nil {
			body["period"] = tt.period
		}
		o := h.call(http.MethodPost, reseller.PathCreate, body).mustOrder(t)
		if !o.ServiceExpiresAt.Equal(tt.want) {
			t.Errorf("period %v: ends %s, want %s", tt.period, o.ServiceExpiresAt, tt.want)
		}
		page := h.listPage(t, map[string]any{"keyword": o.ServiceID})
		if len(page.Items) != 1 || page.Items[0].Period != tt.text {
			t.Errorf("period %v: listed as %+v, want period %q", tt.period, page.Items, tt.text)
		}
	}
}

func TestServiceEndControlEndpoint(t *testing.T) {
	h := sbStart(t, "", nil)
	post := func(query, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(h.ts.URL+"/sandbox/service-end"+query, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ends := func(id string) time.Time {
		for _, sv := range h.srv.Services() {
			if sv.ID == id {
				return sv.Expires
			}
		}
		t.Fatalf("no service %s", id)
		return time.Time{}
	}

	status, body := post("", `{"service_id":"svc","ends":"2026-11-30T00:00:00+08:00"}`)
	want := time.Date(2026, 11, 29, 16, 0, 0, 0, time.UTC)
	if status != http.StatusOK || !ends("svc").Equal(want) {
		t.Fatalf("JSON body: HTTP %d %s; ends %s", status, body, ends("svc"))
	}
	var env struct {
		Data struct {
			ID      string    `json:"service_id"`
			Expires time.Time `json:"service_expires_at"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &env); err != nil || env.Data.ID != "svc" || !env.Data.Expires.Equal(want) {
		t.Errorf("reply %s: %v", body, err)
	}

	if status, body := post("?service_id=nowild&ends=2027-01-02", ""); status != http.StatusOK ||
		!ends("nowild").Equal(time.Date(2027, 1, 1, 16, 0, 0, 0, time.UTC)) {
		t.Errorf("query with a date: HTTP %d %s; ends %s", status, body, ends("nowild"))
	}
	if status, body := post("?service_id=svc&ends=none", ""); status != http.StatusOK || !ends("svc").IsZero() {
		t.Errorf("none: HTTP %d %s; ends %s", status, body, ends("svc"))
	}
	for _, bad := range []struct{ query, body string }{
		{"?service_id=svc&ends=soon", ""},
		{"?service_id=nope&ends=2027-01-02", ""},
		{"", `{"service_id":"svc","ends":5}`},
		{"", `not json`},
	} {
		if status, body := post(bad.query, bad.body); status != http.StatusBadRequest || !strings.Contains(body, "service-end") {
			t.Errorf("%q %q: HTTP %d %s", bad.query, bad.body, status, body)
		}
	}
	if resp, err := http.Get(h.ts.URL + "/sandbox/service-end"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET service-end: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

func TestServiceEndPersistsAndOldStateLoads(t *testing.T) {
	dir := t.TempDir()
	clock := newSBClock()
	h := sbStart(t, dir, clock)
	end := clock.Now().Add(48 * time.Hour).Truncate(time.Second)
	if err := h.srv.SetServiceEnd("nowild", end); err != nil {
		t.Fatal(err)
	}
	h.stop()
	h = sbStart(t, dir, clock)
	for _, sv := range h.srv.Services() {
		if sv.ID == "nowild" && !sv.Expires.Equal(end) {
			t.Errorf("after a restart nowild ends %s, want %s", sv.Expires, end)
		}
	}
	h.stop()

	// A state file written before services had an end, a creation time
	// and a number: they load as never ending, numbered by service_id.
	path := filepath.Join(dir, stateFileName)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	for _, sv := range st["services"].(map[string]any) {
		for _, k := range []string{"number", "created", "ends", "period"} {
			delete(sv.(map[string]any), k)
		}
	}
	if raw, err = json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	h = sbStart(t, dir, clock)
	for _, sv := range h.srv.Services() {
		if !sv.Expires.IsZero() {
			t.Errorf("%s from an old state file ends %s, want never", sv.ID, sv.Expires)
		}
	}
	page := h.listPage(t, nil)
	var ids []string
	for _, it := range page.Items {
		ids = append(ids, it.ID+"="+it.ServiceID)
	}
	if got := strings.Join(ids, " "); got != "1=nowild 2=org 3=svc" {
		t.Errorf("old services listed as %s, want numbered by service_id", got)
	}
	_, csr := sbCSR(t, "a.example.com")
	h.reissue("old1", "nowild", map[string]string{"a.example.com": "dns"}, csr).mustSucceed(t)
}
