package sandbox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"testing"

	"github.com/dcvd/dcvd/internal/testpki"
	"github.com/dcvd/dcvd/reseller"
)

func TestReissueValidation(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "a.example.com")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	privPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))

	tests := []struct {
		name    string
		body    map[string]any
		field   string // the field the 422 must name; "" = accepted
		message string // a substring of that field's error
	}{
		{"wildcard by http", map[string]any{"domain_dcv": map[string]string{"*.example.com": "http"}}, "domain_dcv", "wildcard"},
		{"wildcard by https", map[string]any{"domain_dcv": map[string]string{"*.example.com": "https"}}, "domain_dcv", "wildcard"},
		{"IP by dns", map[string]any{"domain_dcv": map[string]string{"192.0.2.1": "dns"}}, "domain_dcv", "IP address"},
		{"IP by e-mail", map[string]any{"domain_dcv": map[string]string{"192.0.2.1": "admin@example.com"}}, "domain_dcv", "IP address"},
		{"WHOIS-style approver", map[string]any{"domain_dcv": map[string]string{"a.example.com": "info@example.com"}}, "domain_dcv", "admin@"},
		{"approver at another domain", map[string]any{"domain_dcv": map[string]string{"a.example.com": "admin@example.org"}}, "domain_dcv", "must be at a.example.com or example.com"},
		{"approver at the public suffix", map[string]any{"domain_dcv": map[string]string{"a.example.com": "admin@com"}}, "domain_dcv", "must be at"},
		{"approver at a child", map[string]any{"domain_dcv": map[string]string{"example.com": "admin@a.example.com"}}, "domain_dcv", "must be at example.com"},
		{"unknown method", map[string]any{"domain_dcv": map[string]string{"a.example.com": "carrier-pigeon"}}, "domain_dcv", "unknown validation method"},
		{"too many domains", map[string]any{"domain_dcv": map[string]string{
			"a.example.com": "dns", "b.example.com": "dns", "c.example.com": "dns", "d.example.com": "dns"}}, "domain_dcv", "limit of 3"},
		{"underscore in name", map[string]any{"domain_dcv": map[string]string{"a_b.example.com": "dns"}}, "domain_dcv", "character"},
		{"public suffix", map[string]any{"domain_dcv": map[string]string{"co.uk": "dns"}}, "domain_dcv", "public suffix"},
		{"wildcard over a public suffix", map[string]any{"domain_dcv": map[string]string{"*.com": "dns"}}, "domain_dcv", "public suffix"},
		{"wildcard in the middle", map[string]any{"domain_dcv": map[string]string{"a.*.example.com": "dns"}}, "domain_dcv", "leftmost"},
		{"single label", map[string]any{"domain_dcv": map[string]string{"localhost": "http"}}, "domain_dcv", "fully qualified"},
		{"domain_dcv not an object", map[string]any{"domain_dcv": "a.example.com"}, "domain_dcv", "object"},
		{"private key as CSR", map[string]any{"csr": privPEM}, "csr", "PRIVATE KEY"},
		{"garbage CSR", map[string]any{"csr": "hello"}, "csr", "not a CSR"},
		{"notify_url not http", map[string]any{"notify_url": "ftp://example.com/cb"}, "notify_url", "http or https"},
		{"bad contact_email", map[string]any{"contact_email": "nobody"}, "contact_email", "e-mail"},
		{"renew not 0/1", map[string]any{"renew": 2}, "renew", "0 or 1"},
		{"no unique_id", map[string]any{"unique_id": nil}, "unique_id", "required"},
		{"no service_id", map[string]any{"service_id": nil}, "service_id", "required"},
		{"neither domain_dcv nor csr", map[string]any{"domain_dcv": nil, "csr": nil}, "csr", "required"},
		// Accepted shapes, so that the refusals above are not refusing everything.
		{"IP by http", map[string]any{"domain_dcv": map[string]string{"192.0.2.1": "http"}}, "", ""},
		{"wildcard by e-mail at the base", map[string]any{"domain_dcv": map[string]string{"*.example.com": "admin@example.com"}}, "", ""},
		{"approver at a parent", map[string]any{"domain_dcv": map[string]string{"x.b.example.com": "hostmaster@b.example.com"}}, "", ""},
		{"upper case is normalised", map[string]any{"domain_dcv": map[string]string{"A.Example.COM": "DNS"}}, "", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := map[string]any{
				"unique_id":  "v" + string(rune('a'+i)),
				"service_id": "svc",
				"domain_dcv": map[string]string{"a.example.com": "dns"},
				"csr":        csr,
			}
			for k, v := range tt.body {
				if v == nil {
					delete(body, k)
				} else {
					body[k] = v
				}
			}
			before := h.srv.Balance()
			r := h.call(http.MethodPost, reseller.PathReissue, body)
			if tt.field == "" {
				r.mustSucceed(t)
				return
			}
			if r.status != http.StatusUnprocessableEntity || r.env.Success {
				t.Fatalf("want HTTP 422, got %d: %s", r.status, r.raw)
			}
			msgs := r.env.Errors[tt.field]
			if len(msgs) == 0 {
				t.Fatalf("no error for field %s: %s", tt.field, r.raw)
			}
			mustContain(t, strings.Join(msgs, "; "), tt.message)
			if r.env.Message == "" {
				t.Error("no message")
			}
			if h.srv.Balance() != before {
				t.Errorf("a refused reissue changed the balance from %v to %v", before, h.srv.Balance())
			}
		})
	}
}

func TestReissueProductRules(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "example.com")
	r := h.reissue("w1", "nowild", map[string]string{"*.example.com": "dns"}, csr)
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("wildcard on a product without wildcards: HTTP %d %s", r.status, r.raw)
	}
	mustContain(t, strings.Join(r.env.Errors["domain_dcv"], ";"), "does not allow wildcard")

	// OV: the company fields are required, and frozen once issued.
	r = h.reissue("o1", "org", map[string]string{"example.com": "admin@example.com"}, csr)
	if r.status != http.StatusUnprocessableEntity || len(r.env.Errors["organization"]) == 0 || len(r.env.Errors["contact_phone"]) == 0 {
		t.Fatalf("OV without company data: HTTP %d %s", r.status, r.raw)
	}
	org := map[string]any{}
	for _, f := range organizationFields {
		org[f] = "value of " + f
	}
	body := map[string]any{"unique_id": "o2", "service_id": "org", "csr": csr, "domain_dcv": map[string]string{"example.com": "admin@example.com"}}
	for k, v := range org {
		body[k] = v
	}
	h.call(http.MethodPost, reseller.PathReissue, body).mustSucceed(t)
	if err := h.srv.ApproveEmail("org", "example.com"); err != nil {
		t.Fatal(err)
	}
	// Same data (or none) is fine; a change is refused.
	h.reissue("o3", "org", nil, csr).mustSucceed(t)
	body["unique_id"], body["organization"] = "o4", "Another Company"
	r = h.call(http.MethodPost, reseller.PathReissue, body)
	if r.status != http.StatusUnprocessableEntity || len(r.env.Errors["organization"]) == 0 {
		t.Fatalf("changed company data after issuance: HTTP %d %s", r.status, r.raw)
	}

	h.reissue("x1", "no-such-service", map[string]string{"example.com": "dns"}, csr).mustRefuse(t, http.StatusOK, CodeServiceNotFound)
}

func TestReissueReplayChargesOnce(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "a.example.com")
	dcv := map[string]string{"a.example.com": "dns", "b.example.com": "dns"}
	first := h.reissue("r1", "svc", dcv, csr).mustOrder(t)
	// a.example.com is paid for: 1 (reissue) + 10 (b.example.com).
	if first.Cost != 11 || first.Status != reseller.StatusPending || first.ServiceID != "svc" || first.CAID == "" {
		t.Fatalf("first reply %+v", first)
	}
	if got := h.srv.Balance(); got != DefaultBalance-11 {
		t.Errorf("balance %v, want %v", got, DefaultBalance-11)
	}

	// The same unique_id with another body: the same order, no charge.
	_, otherCSR := sbCSR(t, "c.example.com")
	again := h.reissue("r1", "svc", map[string]string{"c.example.com": "http"}, otherCSR).mustOrder(t)
	if again.CAID != first.CAID || len(again.DCV) != 2 || again.Cost != first.Cost {
		t.Errorf("replay gave another order: %+v, first %+v", again, first)
	}
	if dcvEntry(t, again, "b.example.com").DNS.Value != dcvEntry(t, first, "b.example.com").DNS.Value {
		t.Error("replay changed the DCV values")
	}
	if n := h.charges("r1"); n != 1 {
		t.Errorf("%d charges for r1, want 1", n)
	}
	if got := h.srv.Balance(); got != DefaultBalance-11 {
		t.Errorf("balance after replay %v, want %v", got, DefaultBalance-11)
	}

	// b.example.com is paid now: the next reissue costs the reissue price only.
	next := h.reissue("r2", "svc", dcv, "").mustOrder(t)
	if next.Cost != 1 {
		t.Errorf("cost of a reissue of paid names: %v, want 1", next.Cost)
	}
	if next.CAID == first.CAID {
		t.Error("a new unique_id gave the same order")
	}
	ledger := h.srv.Ledger()
	if len(ledger) != 2 || ledger[0].Op != "reissue" || ledger[0].Amount != 11 || ledger[1].Amount != 1 {
		t.Errorf("ledger %+v", ledger)
	}
}

func TestReissueInsufficientBalance(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.Balance = 5 })
	_, csr := sbCSR(t, "a.example.com")
	dcv := map[string]string{"a.example.com": "dns", "b.example.com": "dns"}
	h.reissue("b1", "svc", dcv, csr).mustRefuse(t, http.StatusOK, CodeInsufficientBalance)
	if len(h.srv.Ledger()) != 0 || h.srv.Balance() != 5 {
		t.Fatalf("a refused reissue left ledger %+v and balance %v", h.srv.Ledger(), h.srv.Balance())
	}
	if d := h.detail("svc"); len(d.DCV) != 0 {
		t.Errorf("a refused reissue left an order: %+v", d)
	}
	if err := h.srv.SetBalance(100); err != nil {
		t.Fatal(err)
	}
	o := h.reissue("b1", "svc", dcv, csr).mustOrder(t)
	if o.Cost != 11 || h.charges("b1") != 1 || h.srv.Balance() != 89 {
		t.Errorf("retry after top-up: cost %v, %d charges, balance %v", o.Cost, h.charges("b1"), h.srv.Balance())
	}
}

func TestReissueDroppingNamesRevokes(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.AutoApproveEmail = true })
	_, csr := sbCSR(t, "a.example.com")
	email := "admin@example.com"

	h.reissue("d1", "svc", map[string]string{"a.example.com": email, "b.example.com": email}, csr).mustSucceed(t)
	first := h.validateDCV("svc")
	if first.Status != reseller.StatusIssued {
		t.Fatalf("not issued: %+v", first)
	}
	serial1 := testpki.ParseCert(t, first.CertPEM).SerialNumber

	// Keeping every name (and adding one) does not revoke.
	h.reissue("d2", "svc", map[string]string{"a.example.com": email, "b.example.com": email, "c.example.com": email}, "").mustSucceed(t)
	if n := len(h.srv.Revocations()); n != 0 {
		t.Fatalf("a reissue keeping every name revoked: %+v", h.srv.Revocations())
	}
	second := h.validateDCV("svc")
	if second.Status != reseller.StatusIssued {
		t.Fatalf("not issued: %+v", second)
	}
	cert2 := testpki.ParseCert(t, second.CertPEM)
	if cert2.SerialNumber.Cmp(serial1) == 0 || len(cert2.DNSNames) != 3 {
		t.Fatalf("second certificate %v %v", cert2.SerialNumber, cert2.DNSNames)
	}

	// Dropping b and c revokes the certificate in force.
	h.reissue("d3", "svc", map[string]string{"a.example.com": email}, "").mustSucceed(t)
	revs := h.srv.Revocations()
	if len(revs) != 1 {
		t.Fatalf("revocations %+v, want one", revs)
	}
	rev := revs[0]
	serial, ok := new(big.Int).SetString(rev.Serial, 16)
	if rev.ServiceID != "svc" || rev.UniqueID != "d3" || !ok || serial.Cmp(cert2.SerialNumber) != 0 {
		t.Errorf("revocation %+v, want serial %x", rev, cert2.SerialNumber)
	}
	mustContain(t, rev.Reason, "b.example.com", "c.example.com")
	d := h.detail("svc")
	if d.Status != reseller.StatusPending || d.CertPEM != "" || len(d.DCV) != 1 {
		t.Errorf("detail after revocation: %+v", d)
	}
	// The order that issued it now says so.
	old := h.reissue("d2", "svc", nil, "").mustOrder(t)
	if old.Status != reseller.StatusRevoked {
		t.Errorf("revoked order status %q", old.Status)
	}
}

func TestReissueDCVValues(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr1 := sbCSR(t, "example.com")
	dcv := map[string]string{
		"example.com":      "dns",
		"*.example.com":    "dns",
		"shop.example.com": "admin@example.com",
	}
	r := h.reissue("c1", "svc", dcv, csr1)
	o := r.mustOrder(t)

	// The raw reply is a map in the documented shape.
	var raw struct {
		Data struct {
			DCV      map[string]map[string]any `json:"dcv"`
			CertPEM  any                       `json:"cert_pem"`
			NotAfter any                       `json:"not_after"`
		} `json:"data"`
	}
	if err := json.Unmarshal(r.raw, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Data.DCV) != 3 || raw.Data.CertPEM != nil || raw.Data.NotAfter != nil {
		t.Fatalf("reply shape: %s", r.raw)
	}

	apex, wild, shop := dcvEntry(t, o, "example.com"), dcvEntry(t, o, "*.example.com"), dcvEntry(t, o, "shop.example.com")
	if apex.Subdomain != "" || apex.TopLevelDomain != "example.com" || wild.Subdomain != "*" || wild.TopLevelDomain != "example.com" ||
		shop.Subdomain != "shop" || shop.TopLevelDomain != "example.com" {
		t.Errorf("subdomain/topleveldomain: %+v %+v %+v", apex, wild, shop)
	}
	if apex.Type != "dns" || apex.DNS == nil || apex.DNS.Type != "cname" || apex.Status != "pending" {
		t.Fatalf("apex entry %+v", apex)
	}
	if !strings.HasPrefix(apex.DNS.Hostname, "_") || len(apex.DNS.Hostname) != 33 ||
		apex.DNS.Fullname != apex.DNS.Hostname+".example.com" || !strings.HasSuffix(apex.DNS.Value, ".sectigo.com") {
		t.Errorf("dns record %+v", apex.DNS)
	}
	// The wildcard's record is at the base name, the same as the apex's.
	if *wild.DNS != *apex.DNS {
		t.Errorf("wildcard record %+v, apex %+v", wild.DNS, apex.DNS)
	}
	if shop.Type != "email" || shop.Email == nil || shop.Email.Address != "admin@example.com" {
		t.Fatalf("e-mail entry %+v", shop)
	}
	avail := strings.Join(shop.Email.Available, " ")
	mustContain(t, avail, "admin@shop.example.com", "hostmaster@example.com", "webmaster@example.com")
	if strings.Contains(avail, "@com") || len(shop.Email.Available) != 10 {
		t.Errorf("available approvers %v", shop.Email.Available)
	}

	// The same CSR keeps the record's name; the per-order value changes it target.
	o2 := h.reissue("c2", "svc", dcv, "").mustOrder(t)
	a2 := dcvEntry(t, o2, "example.com")
	if a2.DNS.Hostname != apex.DNS.Hostname || a2.DNS.Value == apex.DNS.Value {
		t.Errorf("same CSR, new order: %+v then %+v", apex.DNS, a2.DNS)
	}
	// A new CSR gives new values.
	_, csr2 := sbCSR(t, "example.com")
	o3 := h.reissue("c3", "svc", dcv, csr2).mustOrder(t)
	a3 := dcvEntry(t, o3, "example.com")
	if a3.DNS.Hostname == apex.DNS.Hostname || a3.DNS.Value == a2.DNS.Value {
		t.Errorf("new CSR kept the values: %+v", a3.DNS)
	}

	// http and https files.
	_, csr4 := sbCSR(t, "www.example.com")
	o4 := h.reissue("c4", "svc", map[string]string{"www.example.com": "http", "secure.example.com": "https"}, csr4).mustOrder(t)
	www, sec := dcvEntry(t, o4, "www.example.com"), dcvEntry(t, o4, "secure.example.com")
	if www.Type != "http" || www.HTTP == nil || sec.Type != "https" || sec.HTTP == nil {
		t.Fatalf("file entries %+v %+v", www, sec)
	}
	f := www.HTTP
	if f.Filepath != ".well-known/pki-validation/" || f.Filefullpath != f.Filepath+f.Filename ||
		f.URL != "http://www.example.com/.well-known/pki-validation/"+f.Filename || !strings.HasSuffix(f.Filename, ".txt") {
		t.Errorf("http file %+v", f)
	}
	if lines := strings.Split(f.Filecontent, "\n"); len(lines) != 3 || lines[1] != "sectigo.com" {
		t.Errorf("file content %q", f.Filecontent)
	}
	if !strings.HasPrefix(sec.HTTP.URL, "https://secure.example.com/") {
		t.Errorf("https URL %q", sec.HTTP.URL)
	}
	// The CN comes first in the certificate; in the dcv map order is free.
	if d := h.detail("svc"); d.CAID != o4.CAID || d.Cost != 0 {
		t.Errorf("detail %+v, want the latest order at cost 0", d)
	}
}

func TestCreate(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "new.example.com")
	body := map[string]any{"unique_id": "p1", "product_id": "single", "period": 12, "csr": csr,
		"domain_dcv": map[string]string{"new.example.com": "dns"}}
	o := h.call(http.MethodPost, reseller.PathCreate, body).mustOrder(t)
	if o.ServiceID == "" || o.Cost != 20 || o.Status != reseller.StatusPending {
		t.Fatalf("create: %+v", o)
	}
	again := h.call(http.MethodPost, reseller.PathCreate, body).mustOrder(t)
	if again.ServiceID != o.ServiceID || h.charges("p1") != 1 {
		t.Errorf("replayed create: %+v, %d charges", again, h.charges("p1"))
	}
	if d := h.detail(o.ServiceID); d.CAID != o.CAID {
		t.Errorf("detail of the new service %+v", d)
	}
	body["unique_id"], body["product_id"] = "p2", "nope"
	h.call(http.MethodPost, reseller.PathCreate, body).mustRefuse(t, http.StatusOK, CodeProductNotFound)
	delete(body, "csr")
	body["product_id"] = "single"
	if r := h.call(http.MethodPost, reseller.PathCreate, body); r.status != http.StatusUnprocessableEntity || len(r.env.Errors["csr"]) == 0 {
		t.Errorf("create without csr: HTTP %d %s", r.status, r.raw)
	}
}

func TestUpdateDCV(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "www.example.com")
	h.reissue("m1", "svc", map[string]string{"www.example.com": "http"}, csr).mustSucceed(t)

	r := h.updateDCV("svc", map[string]string{"www.example.com": "dns"})
	r.mustSucceed(t)
	if strings.Contains(string(r.raw), `"data"`) {
		t.Errorf("update-dcv reply has data: %s", r.raw)
	}
	e := dcvEntry(t, h.detail("svc"), "www.example.com")
	if e.Type != "dns" || e.DNS == nil || e.Status != "pending" || e.HTTP != nil {
		t.Errorf("after switching to dns: %+v", e)
	}

	r = h.updateDCV("svc", map[string]string{"other.example.com": "dns"})
	if r.status != http.StatusUnprocessableEntity {
		t.Errorf("update-dcv of a name outside the order: HTTP %d %s", r.status, r.raw)
	}
	r = h.updateDCV("svc", map[string]string{"www.example.com": "admin@elsewhere.org"})
	if r.status != http.StatusUnprocessableEntity {
		t.Errorf("update-dcv with a bad approver: HTTP %d %s", r.status, r.raw)
	}
	h.updateDCV("nope", map[string]string{"www.example.com": "dns"}).mustRefuse(t, http.StatusOK, CodeServiceNotFound)
	h.updateDCV("nowild", map[string]string{"www.example.com": "dns"}).mustRefuse(t, http.StatusOK, CodeOrderNotPending)

	// Once issued, the same methods are a no-op and other methods are refused.
	h.updateDCV("svc", map[string]string{"www.example.com": "admin@example.com"}).mustSucceed(t)
	if err := h.srv.ApproveEmail("svc", "www.example.com"); err != nil {
		t.Fatal(err)
	}
	h.updateDCV("svc", map[string]string{"www.example.com": "admin@example.com"}).mustSucceed(t)
	h.updateDCV("svc", map[string]string{"www.example.com": "dns"}).mustRefuse(t, http.StatusOK, CodeOrderNotPending)
}
