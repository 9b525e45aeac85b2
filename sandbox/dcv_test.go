package sandbox

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

func TestDCVIssueAfterPublishing(t *testing.T) {
	h := sbStart(t, "", nil)
	names := []string{"example.com", "*.example.com", "www.example.com"}
	key, csr := sbCSR(t, names...)
	dcv := map[string]string{"example.com": "dns", "*.example.com": "dns", "www.example.com": "http"}
	o := h.reissue("i1", "svc", dcv, csr).mustOrder(t)
	h.publish(o)

	r := h.updateDCV("svc", dcv)
	r.mustSucceed(t)
	d := h.detail("svc")
	if d.Status != reseller.StatusIssued {
		t.Fatalf("after update-dcv with everything published: %+v", d)
	}
	for _, e := range d.DCV {
		if e.Status != "valid" {
			t.Errorf("%s: status %s", e.Domain, e.Status)
		}
	}
	leaf := h.sbVerify(d, key, "example.com", "foo.example.com", "www.example.com")
	if leaf.Subject.CommonName != "example.com" {
		t.Errorf("CN %q, want the CSR's CN first", leaf.Subject.CommonName)
	}
	if len(leaf.DNSNames) != 3 || leaf.DNSNames[0] != "example.com" {
		t.Errorf("SANs %v", leaf.DNSNames)
	}
	if !d.NotBefore.Equal(leaf.NotBefore) || !d.NotAfter.Equal(leaf.NotAfter) {
		t.Errorf("not_before/not_after %v %v, certificate %v %v", d.NotBefore, d.NotAfter, leaf.NotBefore, leaf.NotAfter)
	}
	if leaf.NotAfter.Sub(leaf.NotBefore) > time.Hour {
		t.Errorf("validity %v, configured 1h", leaf.NotAfter.Sub(leaf.NotBefore))
	}
}

func TestDCVHTTPSAndIP(t *testing.T) {
	h := sbStart(t, "", nil)
	key, csr := sbCSR(t, "secure.example.com", "192.0.2.7")
	dcv := map[string]string{"secure.example.com": "https", "192.0.2.7": "http"}
	o := h.reissue("s1", "svc", dcv, csr).mustOrder(t)
	if u := dcvEntry(t, o, "192.0.2.7").HTTP.URL; !strings.HasPrefix(u, "http://192.0.2.7/.well-known/pki-validation/") {
		t.Errorf("IP file URL %q", u)
	}
	h.publish(o)
	d := h.validateDCV("svc")
	if d.Status != reseller.StatusIssued {
		t.Fatalf("not issued: %+v", d)
	}
	leaf := h.sbVerify(d, key, "secure.example.com")
	if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != "192.0.2.7" {
		t.Errorf("IP SANs %v", leaf.IPAddresses)
	}
}

func TestDCVWrongContentStaysPending(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "www.example.com")
	o := h.reissue("f1", "svc", map[string]string{"www.example.com": "http"}, csr).mustOrder(t)
	f := dcvEntry(t, o, "www.example.com").HTTP
	h.web.put("www.example.com", "/.well-known/pki-validation/"+f.Filename, "something else")
	d := h.validateDCV("svc")
	e := dcvEntry(t, d, "www.example.com")
	if d.Status != reseller.StatusPending || e.Status != "pending" {
		t.Fatalf("wrong content validated: %+v", d)
	}
	// The reason is kept for the detail, in a field clients may ignore.
	r := h.call(http.MethodGet, reseller.PathDetail, map[string]any{"service_id": "svc"})
	mustContain(t, string(r.raw), `"message"`, "something else")
}

func TestDCVNegativeCacheStallsIssuance(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.NegativeCacheTTL = 5 * time.Minute })
	_, csr := sbCSR(t, "example.com")
	dcv := map[string]string{"example.com": "dns"}
	o := h.reissue("n1", "svc", dcv, csr).mustOrder(t)

	// Too early: nothing is published yet.
	h.updateDCV("svc", dcv).mustSucceed(t)
	e := dcvEntry(t, h.detail("svc"), "example.com")
	if e.Status != "pending" {
		t.Fatalf("validated before publishing: %+v", e)
	}

	h.publish(o)
	h.clock.Advance(time.Minute)
	h.updateDCV("svc", dcv).mustSucceed(t)
	d := h.detail("svc")
	if d.Status != reseller.StatusPending {
		t.Fatalf("issued inside the negative-cache TTL: the CA must remember its failed lookup: %+v", d)
	}
	r := h.call(http.MethodGet, reseller.PathDetail, map[string]any{"service_id": "svc"})
	mustContain(t, string(r.raw), "cached")

	h.clock.Advance(5 * time.Minute)
	h.updateDCV("svc", dcv).mustSucceed(t)
	if d := h.detail("svc"); d.Status != reseller.StatusIssued {
		t.Fatalf("not issued after the TTL: %+v", d)
	}
}

func TestDCVEmailApproval(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "shop.example.com")
	dcv := map[string]string{"shop.example.com": "admin@example.com", "example.com": "dns"}
	h.reissue("e1", "svc", dcv, csr).mustSucceed(t)

	d := h.validateDCV("svc")
	if e := dcvEntry(t, d, "shop.example.com"); e.Status != "pending" {
		t.Fatalf("e-mail validated without approval: %+v", e)
	}
	for _, tt := range []struct{ service, domain, want string }{
		{"nope", "shop.example.com", "no service"},
		{"svc", "other.example.com", "not a domain"},
		{"svc", "example.com", "not by e-mail"},
		{"nowild", "shop.example.com", "no pending order"},
		{"svc", "bad_name.example.com", "character"},
	} {
		err := h.srv.ApproveEmail(tt.service, tt.domain)
		if err == nil {
			t.Errorf("ApproveEmail(%s, %s) accepted", tt.service, tt.domain)
			continue
		}
		mustContain(t, err.Error(), tt.want)
	}
	if err := h.srv.ApproveEmail("svc", "shop.example.com"); err != nil {
		t.Fatal(err)
	}
	d = h.detail("svc")
	if e := dcvEntry(t, d, "shop.example.com"); e.Status != "valid" || d.Status != reseller.StatusPending {
		t.Fatalf("after approval, with the dns name still pending: %+v", d)
	}

	// An order validated by e-mail alone is issued by the approval itself.
	h.reissue("e2", "svc", map[string]string{"shop.example.com": "webmaster@shop.example.com"}, "").mustSucceed(t)
	if err := h.srv.ApproveEmail("svc", "SHOP.example.com"); err != nil {
		t.Fatal(err)
	}
	if d := h.detail("svc"); d.Status != reseller.StatusIssued {
		t.Fatalf("not issued after approval: %+v", d)
	}
}

func TestDCVAutoApproveEmail(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.AutoApproveEmail = true })
	key, csr := sbCSR(t, "*.example.com")
	h.reissue("a1", "svc", map[string]string{"*.example.com": "admin@example.com"}, csr).mustSucceed(t)
	// Approval happens at the first check, not when the order is placed.
	if d := h.detail("svc"); d.Status != reseller.StatusPending {
		t.Fatalf("issued before any check: %+v", d)
	}
	d := h.validateDCV("svc")
	if d.Status != reseller.StatusIssued {
		t.Fatalf("auto-approved order not issued: %+v", d)
	}
	h.sbVerify(d, key, "any.example.com")
}

func TestDCVBackgroundRecheck(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.CheckInterval = 10 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.srv.Start(ctx)
	_, csr := sbCSR(t, "www.example.com")
	o := h.reissue("g1", "svc", map[string]string{"www.example.com": "http"}, csr).mustOrder(t)
	h.publish(o)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if d := h.detail("svc"); d.Status == reseller.StatusIssued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background loop did not issue the order")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
