package reseller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/dcvd/dcvd/reseller"
)

// The fuzz targets of package reseller. Everything the API sends is
// untrusted, so the properties are about what gets through: a reply either
// decodes or fails with a typed error, and a DCV instruction either is
// refused or is safe to publish. `go test` runs the seeds (f.Add and
// testdata/fuzz); `go test -fuzz` explores from them.

// fzSecret is the client's access key secret. The fake server writes it
// (and the request's signature) where a reply holds @SECRET@ (@SIGN@), as a
// hostile or broken server echoing the request would; no error may
// contain either.
const fzSecret = "fuzzSECRETk3y0123456789abcdef"

// fzMaxReply is the client's reply limit in the fuzz target: small, so that
// the limit is reached by fuzzed bodies.
const fzMaxReply = 64 << 10

// fzMaxErrorLen bounds the text of a reply's error: at most a 500-byte
// message, a 100-byte code and 10 fields of 100 bytes with 10 messages of
// 200 bytes each (APIError), or a few clipped values and a 200-byte snippet
// (DecodeError).
const fzMaxErrorLen = 24 << 10

// fzDocRequest is the domain_dcv of the documentation's reissue example.
func fzDocRequest() map[string]reseller.Method {
	return map[string]reseller.Method{
		"*.example.com":    reseller.MethodDNS,
		"example2.com":     reseller.MethodHTTP,
		"example3.com":     reseller.MethodHTTPS,
		"sub.example4.com": "admin@example4.com",
		"*.example5.com":   reseller.MethodDNS,
	}
}

// fzReplySeeds are whole reply bodies: the documentation's reissue
// response (testdata/reissue-response.json) and replies in the shapes the
// API family drifts into. The sandbox's own replies are in
// testdata/fuzz/FuzzReplyDecoding.
func fzReplySeeds(f *testing.F) [][]byte {
	doc, err := os.ReadFile("testdata/reissue-response.json")
	if err != nil {
		f.Fatal(err)
	}
	return [][]byte{
		doc,
		[]byte(`{"success":true,"message":"OK"}`),
		[]byte(`{"success":"1","message":"OK","data":{"cost":"4208.01","service_id":12345,"caid":358174513,"status":" Issued ",` +
			`"issued_cert":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","issuer_cert":"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n",` +
			`"not_before":"2026-01-01 08:00:00","not_after":1798761600,"dcv":[{"domain":"example.com","method":"DNS","status":"VALID",` +
			`"dns":{"type":"CNAME","hostname":"_abc","fullname":"_abc.example.com.","value":"x.y.sectigo.com."}}]}}`),
		[]byte(`{"success":1,"data":{"cost":"","status":null,"cert_pem":"","ca_pem":null,"not_before":"0000-00-00 00:00:00","not_after":"2027-02-25","dcv":""}}`),
		[]byte(`{"success":true,"data":{"dcv":[{"domain_name":"www.example.com","type":"https","https":{"filename":"a.txt","filecontent":"t","filepath":"/.well-known/pki-validation/","url":"https://www.example.com/.well-known/pki-validation/a.txt"}}]}}`),
		[]byte(`{"success":false,"message":"insufficient balance","error_code":"INSUFFICIENT_BALANCE"}`),
		[]byte(`{"message":"The given data was invalid.","errors":{"csr":["must be a CSR"],"domain_dcv.*.example.com":["wildcard needs dns"]}}`),
		[]byte(`{"success":false,"message":"bad sign @SIGN@ for secret @SECRET@","error_code":"@SECRET@","errors":{"@SECRET@":["@SIGN@"]}}`),
		[]byte(`{"success":true,"data":{"status":"@SECRET@","not_after":"@SIGN@","cost":"@SECRET@"}}`),
		[]byte(`{"success":true,"data":[{"product_id":"p1","name":"DV","max_domains":"100","wildcard":"1","price":"9.90"},{"id":2,"wildcard":0,"price":null}]}`),
		[]byte(`{"success":true,"data":{"list":[{"product_id":"p1"}]}}`),
		[]byte(`<html><body>502 Bad Gateway</body></html>`),
		[]byte(`{"success":true,"data":{"dcv":{"example.com":{"type":"dns","dns":{"hostname":"_x","value":"t.example.net"}}},"cost":1e400}}`),
		// Errors of megabytes from one field's messages or one value
		// (found while writing this target; both now bounded).
		[]byte(`{"success":false,"message":"invalid","errors":{"csr":[` + strings.Repeat(`"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",`, 1400) + `"x"]}}`),
		[]byte(`{"success":true,"data":{"not_after":"` + strings.Repeat("2026-01-01", 4000) + `"}}`),
		[]byte(`{"success":true,"data":{"dcv":{"` + strings.Repeat("a", 40000) + `":{"type":{"x":1}}}}}`),
		// Found by reading flexFloat, then kept: ParseFloat takes "NaN" and
		// "Inf", and a NaN cost could not be stored (the order stalled).
		[]byte(`{"success":true,"data":{"cost":"NaN","status":"pending","dcv":{}}}`),
		[]byte(`{"success":true,"data":[{"product_id":"p1","price":"-Inf","max_domains":"+Infinity"}]}`),
	}
}

// fzRoundTripper is the fake server: it answers every request with the
// fuzzed status, header and body, and records how much of the body the
// client read and whether it closed it.
type fzRoundTripper struct {
	status     int
	retryAfter string
	body       []byte
	endless    bool
	read       int64
	closed     bool
	sign       string
	// sent is the length of the body after the placeholders were
	// replaced.
	sent int
}

func (rt *fzRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	rt.sign = r.URL.Query().Get("sign")
	body := bytes.ReplaceAll(rt.body, []byte("@SECRET@"), []byte(fzSecret))
	body = bytes.ReplaceAll(body, []byte("@SIGN@"), []byte(rt.sign))
	rt.sent = len(body)
	var rd io.Reader = bytes.NewReader(body)
	if rt.endless {
		rd = io.MultiReader(rd, fzEndless{})
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if rt.retryAfter != "" {
		h.Set("Retry-After", rt.retryAfter)
	}
	return &http.Response{
		StatusCode: rt.status, Status: fmt.Sprintf("%d fuzz", rt.status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: &fzBody{rt: rt, r: rd}, ContentLength: -1, Request: r,
	}, nil
}

type fzBody struct {
	rt *fzRoundTripper
	r  io.Reader
}

func (b *fzBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.rt.read += int64(n)
	return n, err
}

func (b *fzBody) Close() error { b.rt.closed = true; return nil }

// fzEndless is a body that never ends: the client must stop reading.
type fzEndless struct{}

func (fzEndless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

// FuzzReplyDecoding sends fuzzed replies (status, Retry-After, body,
// optionally never ending) to every call of the client, which decodes them
// with the envelope and the tolerant wire types. Properties: no panic; the
// client reads at most the reply limit and closes the body; an error is an
// *APIError (a non-2xx status, or success false) or a *DecodeError (a 2xx
// it cannot understand), never carrying the secret or the signature; a
// decoded order has a finite cost, a normalized status, dcv entries sorted
// by domain and no more strings than the body could hold; and whatever
// decodes goes through ValidateInstructions without panicking, anything it
// accepts being safe (fzCheckPlan).
func FuzzReplyDecoding(f *testing.F) {
	for _, b := range fzReplySeeds(f) {
		for op := range uint8(6) {
			f.Add(uint16(200), "", b, op, false)
		}
	}
	f.Add(uint16(429), "120", []byte(`{"success":false,"message":"slow down"}`), uint8(0), false)
	f.Add(uint16(503), "Wed, 21 Oct 2015 07:28:00 GMT", []byte(`<html>busy</html>`), uint8(1), true)
	f.Add(uint16(200), "", []byte(`{"success":true,"data":{"dcv":{}}}`), uint8(0), true)

	f.Fuzz(func(t *testing.T, status uint16, retryAfter string, body []byte, op uint8, endless bool) {
		st := int(status)
		if st < 100 || st > 599 {
			st = 100 + st%500
		}
		rt := &fzRoundTripper{status: st, retryAfter: retryAfter, body: body, endless: endless}
		c, err := reseller.New(reseller.Config{
			BaseURL: "https://api.example.net/api/v1", AccessKeyID: "AKfuzz", AccessKeySecret: fzSecret,
			HTTPClient: &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			}},
			MaxReplyBytes: fzMaxReply,
			Now:           func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
			Nonce:         func() string { return "0123456789abcdef0123456789abcdef" },
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		var o *reseller.Order
		var products []reseller.Product
		switch op % 6 {
		case 0:
			o, err = c.Detail(ctx, "o91bZ")
		case 1:
			o, err = c.Reissue(ctx, reseller.ReissueRequest{UniqueID: "u1", ServiceID: "o91bZ", DomainDCV: fzDocRequest(), CSR: "csr"})
		case 2:
			o, err = c.ValidateDCV(ctx, "o91bZ")
		case 3:
			err = c.UpdateDCV(ctx, "o91bZ", fzDocRequest())
		case 4:
			products, err = c.Products(ctx)
		case 5:
			o, err = c.Create(ctx, reseller.CreateRequest{UniqueID: "u2", ProductID: "p1", DomainDCV: fzDocRequest(), CSR: "csr"})
		}

		if rt.read > fzMaxReply+1 {
			t.Fatalf("the client read %d bytes of the reply, more than the limit %d (+1)", rt.read, fzMaxReply)
		}
		if !rt.closed {
			t.Fatal("the client did not close the reply body")
		}
		if err != nil {
			fzCheckReplyError(t, st, err, rt.sign)
			// Whatever the reply, its error stays small enough for a log
			// line: a hostile server must not flood the logs through it.
			if n := len(err.Error()); n > fzMaxErrorLen {
				t.Fatalf("a %d-byte reply gave a %d-byte error", rt.sent, n)
			}
			return
		}
		if st < 200 || st > 299 {
			t.Fatalf("HTTP %d accepted as a success", st)
		}
		if endless {
			t.Fatal("a never-ending reply was accepted")
		}
		for _, p := range products {
			if math.IsNaN(p.Price) || math.IsInf(p.Price, 0) {
				t.Errorf("product %q: price %v", p.ID, p.Price)
			}
		}
		if o != nil {
			fzCheckOrder(t, o, rt.sent)
		}
	})
}

// fzCheckReplyError checks a failed call's error.
func fzCheckReplyError(t *testing.T, status int, err error, sign string) {
	t.Helper()
	msg := err.Error()
	if strings.Contains(msg, fzSecret) {
		t.Fatalf("the error contains the secret: %s", msg)
	}
	if sign != "" && strings.Contains(msg, sign) {
		t.Fatalf("the error contains the request's signature %s: %s", sign, msg)
	}
	var ae *reseller.APIError
	var de *reseller.DecodeError
	switch {
	case errors.As(err, &ae):
		if ae.StatusCode != status {
			t.Fatalf("APIError for HTTP %d says %d", status, ae.StatusCode)
		}
		if ae.RetryAfter < 0 || ae.RetryAfter > 24*time.Hour {
			t.Fatalf("RetryAfter %s out of [0, 24h]", ae.RetryAfter)
		}
		if ae.RetryAfter != 0 && status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable {
			t.Fatalf("RetryAfter %s on HTTP %d", ae.RetryAfter, status)
		}
		if ae.Message == "" {
			t.Fatal("APIError without a message")
		}
		if len(ae.Message) > 600 || len(ae.Code) > 200 {
			t.Fatalf("APIError message (%d bytes) or code (%d bytes) not bounded", len(ae.Message), len(ae.Code))
		}
		if want := status >= 500 || status == http.StatusTooManyRequests; reseller.Retryable(err) != want {
			t.Fatalf("Retryable = %v for HTTP %d", !want, status)
		}
	case errors.As(err, &de):
		if status < 200 || status > 299 {
			t.Fatalf("HTTP %d gave a DecodeError, want an APIError: %v", status, err)
		}
		if de.StatusCode != status {
			t.Fatalf("DecodeError for HTTP %d says %d", status, de.StatusCode)
		}
		if len(de.Snippet) > 200 {
			t.Fatalf("DecodeError snippet of %d bytes, more than 200", len(de.Snippet))
		}
		if reseller.Retryable(err) {
			t.Fatal("a DecodeError is retryable")
		}
	default:
		t.Fatalf("error %T is neither an *APIError nor a *DecodeError: %v", err, err)
	}
}

// fzCheckOrder checks a decoded order, then validates its instructions
// against the documentation's request and against a request made of the
// reply's own domains and types (so that entries match and the safety
// checks are reached).
func fzCheckOrder(t *testing.T, o *reseller.Order, bodyLen int) {
	t.Helper()
	if math.IsNaN(o.Cost) || math.IsInf(o.Cost, 0) {
		t.Fatalf("cost %v decoded: it cannot be stored or summed", o.Cost)
	}
	if o.Status != strings.ToLower(strings.TrimSpace(o.Status)) {
		t.Fatalf("status %q is not normalized", o.Status)
	}
	if !sort.SliceIsSorted(o.DCV, func(i, j int) bool { return o.DCV[i].Domain < o.DCV[j].Domain }) {
		t.Fatal("dcv entries are not sorted by domain")
	}
	// Decoding may expand text (invalid UTF-8 becomes U+FFFD, three
	// bytes), never multiply it.
	if n := fzStringBytes(o); n > 3*bodyLen+64 {
		t.Fatalf("a %d-byte reply decoded into %d bytes of text", bodyLen, n)
	}
	if len(o.DCV) > bodyLen/2+1 {
		t.Fatalf("a %d-byte reply decoded into %d dcv entries", bodyLen, len(o.DCV))
	}

	for _, requested := range []map[string]reseller.Method{fzDocRequest(), fzRequestFromEntries(o.DCV)} {
		if len(requested) == 0 {
			continue
		}
		plan, err := reseller.ValidateInstructions(requested, o.DCV)
		if err != nil {
			fzCheckDCVErrors(t, err)
			continue
		}
		fzCheckPlan(t, requested, o.DCV, plan)
	}
}

// fzRequestFromEntries builds the domain_dcv that the entries answer:
// each entry's domain with its type (its approver for e-mail).
func fzRequestFromEntries(entries []reseller.DCVEntry) map[string]reseller.Method {
	m := map[string]reseller.Method{}
	for _, e := range entries {
		meth := strings.ToLower(strings.TrimSpace(e.Type))
		if meth == "email" && e.Email != nil {
			meth = e.Email.Address
		}
		m[e.Domain] = meth
	}
	return m
}

func fzStringBytes(o *reseller.Order) int {
	n := len(o.ServiceID) + len(o.CAID) + len(o.Status) + len(o.CertPEM) + len(o.CAPEM)
	for _, e := range o.DCV {
		n += len(e.Domain) + len(e.Type) + len(e.Subdomain) + len(e.TopLevelDomain) + len(e.Status)
		if e.DNS != nil {
			n += len(e.DNS.Type) + len(e.DNS.Hostname) + len(e.DNS.Fullname) + len(e.DNS.Value)
		}
		if e.HTTP != nil {
			n += len(e.HTTP.Filename) + len(e.HTTP.Filecontent) + len(e.HTTP.Filepath) + len(e.HTTP.Filefullpath) + len(e.HTTP.URL)
		}
		if e.Email != nil {
			n += len(e.Email.Address)
			for _, a := range e.Email.Available {
				n += len(a)
			}
		}
	}
	return n
}

// fzCheckDCVErrors checks a refusal of ValidateInstructions or
// ValidateDomainDCV: a join of *DCVError, or a single error.
func fzCheckDCVErrors(t *testing.T, err error) {
	t.Helper()
	if err.Error() == "" {
		t.Fatal("empty error")
	}
	var de *reseller.DCVError
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !errors.As(e, &de) {
				t.Fatalf("joined error %T is not a *DCVError: %v", e, e)
			}
		}
	}
}

// FuzzDCVInstruction validates one fuzzed DCV entry (every field of the
// API's instruction) against a fuzzed domain and method, through
// ValidateDomainDCV, ValidateInstruction, ValidateInstructions (alone, with
// a duplicate, or beside the documentation's entries) and
// CheckDCVFileName. Properties: no panic, and whatever is accepted is safe
// (fzCheckInstruction): a file name is one plain path segment, a file
// path is exactly under .well-known/pki-validation/ of the validated host,
// a CNAME lies inside the registrable domain of the validated name, a URL
// names the validated host, an approver is an allowed mailbox of the name
// or a parent.
func FuzzDCVInstruction(f *testing.F) {
	doc, err := os.ReadFile("testdata/reissue-response.json")
	if err != nil {
		f.Fatal(err)
	}
	var env struct{ Data reseller.Order }
	if err := json.Unmarshal(doc, &env); err != nil {
		f.Fatal(err)
	}
	req := fzDocRequest()
	add := func(domain, method string, e reseller.DCVEntry, flags uint8) {
		var d reseller.DNSRecord
		var h reseller.HTTPFile
		var m reseller.EmailApprover
		if e.DNS != nil {
			d = *e.DNS
		} else {
			flags |= fzNoDNS
		}
		if e.HTTP != nil {
			h = *e.HTTP
		} else {
			flags |= fzNoHTTP
		}
		if e.Email != nil {
			m = *e.Email
		} else {
			flags |= fzNoEmail
		}
		f.Add(domain, method, e.Domain, e.Type, e.Status, d.Type, d.Hostname, d.Fullname, d.Value,
			h.Filename, h.Filecontent, h.Filepath, h.Filefullpath, h.URL, m.Address, flags)
	}
	for _, e := range env.Data.DCV {
		add(e.Domain, req[e.Domain], e, 0)
		add(e.Domain, req[e.Domain], e, fzWithDoc)
	}
	// The sandbox's instructions (sectigo.com targets, an https entry typed
	// https) and the shapes the client must refuse or repair.
	sbDNS := reseller.DCVEntry{Domain: "example.com", Type: "dns", Status: "pending", DNS: &reseller.DNSRecord{
		Type: "cname", Hostname: "_e81a87f2e7ea2a1a842eebb89da8eb5c", Fullname: "_e81a87f2e7ea2a1a842eebb89da8eb5c.example.com",
		Value: "817c1966bb9e7315fa2624d37cd90424.fb08d7812d21e1b9f90511c917bf5c28.w9qni3s9i5.sectigo.com"}}
	add("example.com", "dns", sbDNS, 0)
	sbSub := sbDNS
	sbSub.Domain = "a.b.shop.example.co.uk"
	add("A.b.Shop.Example.co.uk.", "dns", sbSub, fzDuplicate)
	sbFile := reseller.DCVEntry{Domain: "shop.example.com", Type: "https", Status: "pending", HTTP: &reseller.HTTPFile{
		Filename: "e81a87f2e7ea2a1a842eebb89da8eb5c.txt", Filecontent: "817c1966bb9e7315fa2624d37cd90424fb08d7812d21e1b9f90511c917bf5c28\nsectigo.com\nw9qni3s9i5",
		Filepath: ".well-known/pki-validation/", Filefullpath: ".well-known/pki-validation/e81a87f2e7ea2a1a842eebb89da8eb5c.txt",
		URL: "https://shop.example.com/.well-known/pki-validation/e81a87f2e7ea2a1a842eebb89da8eb5c.txt"}}
	add("shop.example.com", "https", sbFile, 0)
	ipFile := sbFile
	ipFile.Domain, ipFile.Type = "2001:db8::1", "http"
	ipFile.HTTP = &reseller.HTTPFile{Filename: "a.txt", Filecontent: "x", Filepath: "/.well-known/pki-validation/",
		URL: "http://[2001:db8::1]:80/.well-known/pki-validation/a.txt"}
	add("[2001:DB8::1]", "http", ipFile, fzUnrequested)
	evil := sbFile
	evil.HTTP = &reseller.HTTPFile{Filename: "../../etc/passwd", Filecontent: "x\x00", Filepath: ".well-known/pki-validation/../",
		Filefullpath: "/.well-known/pki-validation/%2e%2e/x", URL: "https://user@evil.example:8443/.well-known/pki-validation/x?q#f"}
	add("shop.example.com", "https", evil, 0)
	outside := sbDNS
	outside.DNS = &reseller.DNSRecord{Type: "txt", Hostname: "_x", Fullname: "_x.example.net", Value: "192.0.2.1"}
	add("www.example.com", "dns", outside, 0)
	idn := sbDNS
	idn.Domain = "*.bücher.example"
	idn.DNS = &reseller.DNSRecord{Hostname: "_abc", Value: "t.sectigo.com."}
	add("*.BÜCHER.example", "dns", idn, 0)
	mail := reseller.DCVEntry{Domain: "mail.example.com", Type: "email", Email: &reseller.EmailApprover{Address: "Admin@Example.COM"}}
	add("mail.example.com", "admin@example.com", mail, 0)

	f.Fuzz(func(t *testing.T, domain, method, entryDomain, typ, status, dnsType, hostname, fullname, value,
		fileName, fileContent, filePath, fileFullPath, fileURL, approver string, flags uint8) {
		e := reseller.DCVEntry{Domain: entryDomain, Type: typ, Status: status}
		if flags&fzNoDNS == 0 {
			e.DNS = &reseller.DNSRecord{Type: dnsType, Hostname: hostname, Fullname: fullname, Value: value}
		}
		if flags&fzNoHTTP == 0 {
			e.HTTP = &reseller.HTTPFile{Filename: fileName, Filecontent: fileContent, Filepath: filePath, Filefullpath: fileFullPath, URL: fileURL}
		}
		if flags&fzNoEmail == 0 {
			e.Email = &reseller.EmailApprover{Address: approver, Available: []string{approver}}
		}

		if err := reseller.CheckDCVFileName(fileName); err == nil {
			fzCheckFileName(t, fileName)
		}

		requested := map[string]reseller.Method{domain: method}
		if err := reseller.ValidateDomainDCV(requested); err != nil {
			fzCheckDCVErrors(t, err)
		} else {
			n, err := reseller.NormalizeDomain(domain)
			if err != nil {
				t.Fatalf("ValidateDomainDCV accepted %q, which NormalizeDomain refuses: %v", domain, err)
			}
			if again, err := reseller.NormalizeDomain(n); err != nil || again != n {
				t.Fatalf("NormalizeDomain is not idempotent: %q → %q → %q, %v", domain, n, again, err)
			}
		}

		if ins, _, err := reseller.ValidateInstruction(domain, method, e); err == nil {
			fzCheckInstruction(t, domain, method, e, ins)
		} else {
			fzCheckDCVErrors(t, err)
		}

		entries := []reseller.DCVEntry{e}
		if flags&fzDuplicate != 0 {
			entries = append(entries, e)
		}
		if flags&fzUnrequested != 0 {
			entries = append(entries, reseller.DCVEntry{Domain: "unrequested.example.org", Type: "dns"})
		}
		if flags&fzWithDoc != 0 {
			for d, m := range fzDocRequest() {
				if _, dup := requested[d]; !dup {
					requested[d] = m
				}
			}
			entries = append(entries, env.Data.DCV...)
		}
		if plan, err := reseller.ValidateInstructions(requested, entries); err == nil {
			fzCheckPlan(t, requested, entries, plan)
		} else {
			fzCheckDCVErrors(t, err)
		}
	})
}

// Flags of FuzzDCVInstruction.
const (
	fzNoDNS       = 1 << iota // the entry has no dns object
	fzNoHTTP                  // no http object
	fzNoEmail                 // no email object
	fzDuplicate               // the entry comes twice
	fzUnrequested             // an entry for a domain not requested follows
	fzWithDoc                 // the documentation's request and entries are added
)

// fzCheckPlan checks an accepted plan: one instruction per requested
// domain, sorted, each safe against the entry it came from.
func fzCheckPlan(t *testing.T, requested map[string]reseller.Method, entries []reseller.DCVEntry, plan *reseller.Plan) {
	t.Helper()
	if plan == nil {
		t.Fatal("nil plan without an error")
	}
	if len(plan.Instructions) != len(requested) {
		t.Fatalf("%d instructions for %d requested domains", len(plan.Instructions), len(requested))
	}
	if !sort.SliceIsSorted(plan.Instructions, func(i, j int) bool { return plan.Instructions[i].Domain < plan.Instructions[j].Domain }) {
		t.Fatal("instructions are not sorted by domain")
	}
	byDomain := map[string]string{} // normalized → as requested
	for d := range requested {
		n, err := reseller.NormalizeDomain(d)
		if err != nil {
			t.Fatalf("plan for a request with an invalid name %q: %v", d, err)
		}
		byDomain[n] = d
	}
	for _, ins := range plan.Instructions {
		d, ok := byDomain[ins.Domain]
		if !ok {
			t.Fatalf("instruction for %q, which was not requested", ins.Domain)
		}
		var match []reseller.DCVEntry
		for _, e := range entries {
			if n, err := reseller.NormalizeDomain(e.Domain); err == nil && n == ins.Domain {
				match = append(match, e)
			}
		}
		if len(match) != 1 {
			t.Fatalf("instruction for %q accepted from %d entries", ins.Domain, len(match))
		}
		fzCheckInstruction(t, d, requested[d], match[0], ins)
	}
}

// fzCheckInstruction asserts that an accepted instruction is safe to
// publish for the requested domain and method; e is the entry it came
// from.
func fzCheckInstruction(t *testing.T, domain string, method reseller.Method, e reseller.DCVEntry, ins reseller.Instruction) {
	t.Helper()
	n, err := reseller.NormalizeDomain(domain)
	if err != nil {
		t.Fatalf("instruction accepted for %q, which NormalizeDomain refuses: %v", domain, err)
	}
	if ins.Domain != n {
		t.Fatalf("instruction for %q, requested %q (%q)", ins.Domain, domain, n)
	}
	if ins.Method != method {
		t.Fatalf("instruction method %q, requested %q", ins.Method, method)
	}
	if ins.Status != "" && !fzPlainWord(ins.Status) {
		t.Fatalf("status %q is not a plain word", ins.Status)
	}
	set := 0
	for _, p := range []bool{ins.CNAME != nil, ins.File != nil, ins.Email != nil} {
		if p {
			set++
		}
	}
	if set != 1 {
		t.Fatalf("%d of CNAME, File and Email are set, want exactly one: %+v", set, ins)
	}
	base := strings.TrimPrefix(n, "*.")
	switch {
	case method == reseller.MethodDNS:
		if ins.CNAME == nil {
			t.Fatalf("dns method without a CNAME: %+v", ins)
		}
		fzCheckCNAME(t, base, *ins.CNAME)
	case method == reseller.MethodHTTP || method == reseller.MethodHTTPS:
		if ins.File == nil {
			t.Fatalf("%s method without a file: %+v", method, ins)
		}
		fzCheckFile(t, n, method, *ins.File, e.HTTP)
	default:
		if ins.Email == nil {
			t.Fatalf("method %q without an approver: %+v", method, ins)
		}
		fzCheckApprover(t, base, method, ins.Email.Address)
	}
}

// fzCheckCNAME: one "_" label directly under the validated name or a
// parent of it, no higher than its registrable domain; the target a host
// name.
func fzCheckCNAME(t *testing.T, base string, c reseller.CNAMEInstruction) {
	t.Helper()
	reg, err := publicsuffix.EffectiveTLDPlusOne(base)
	if err != nil {
		t.Fatalf("CNAME for %q, which has no registrable domain: %v", base, err)
	}
	first, parent, _ := strings.Cut(c.Name, ".")
	if !fzRecordLabel(first) {
		t.Fatalf("CNAME name %q: first label %q is not \"_\" then [a-z0-9-]", c.Name, first)
	}
	if parent != base && !strings.HasSuffix(base, "."+parent) {
		t.Fatalf("CNAME name %q is not directly under %q or one of its parents", c.Name, base)
	}
	if parent != reg && !strings.HasSuffix(parent, "."+reg) {
		t.Fatalf("CNAME name %q is above the registrable domain %q", c.Name, reg)
	}
	if len(c.Name) > 253 {
		t.Fatalf("CNAME name of %d characters", len(c.Name))
	}
	if !fzHostName(c.Target) {
		t.Fatalf("CNAME target %q is not a lower-case host name", c.Target)
	}
}

// fzCheckFile: a plain file name, served exactly at
// /.well-known/pki-validation/NAME of the validated host itself, with the
// requested scheme; and the API's own URL, when given, names that host.
func fzCheckFile(t *testing.T, host, scheme string, fi reseller.FileInstruction, sent *reseller.HTTPFile) {
	t.Helper()
	if strings.HasPrefix(host, "*.") {
		t.Fatalf("file accepted for the wildcard %q", host)
	}
	if fi.Host != host {
		t.Fatalf("file served by %q, validated name %q", fi.Host, host)
	}
	if fi.Scheme != scheme {
		t.Fatalf("file scheme %q, requested %q", fi.Scheme, scheme)
	}
	fzCheckFileName(t, fi.FileName)
	if want := "/.well-known/pki-validation/" + fi.FileName; fi.Path != want || path.Clean(fi.Path) != fi.Path {
		t.Fatalf("file path %q, want %q", fi.Path, want)
	}
	if fi.Content == "" || len(fi.Content) > reseller.MaxDCVFileContentLen {
		t.Fatalf("file content of %d bytes", len(fi.Content))
	}
	for i := 0; i < len(fi.Content); i++ {
		if c := fi.Content[i]; (c < 0x20 || c > 0x7e) && c != '\t' && c != '\r' && c != '\n' {
			t.Fatalf("file content has byte %#x", c)
		}
	}
	fzCheckURL(t, "instruction URL", fi.URL, host, scheme, fi.Path)
	if sent != nil && sent.URL != "" {
		fzCheckURL(t, "the API's URL", sent.URL, host, scheme, fi.Path)
	}
	if sent != nil && sent.Filename != fi.FileName {
		t.Fatalf("file name %q, the API said %q", fi.FileName, sent.Filename)
	}
}

func fzCheckURL(t *testing.T, what, raw, host, scheme, wantPath string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("%s %q does not parse: %v", what, raw, err)
	}
	if u.Scheme != scheme || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		t.Fatalf("%s %q: want a plain %s URL", what, raw, scheme)
	}
	if p := u.Port(); p != "" && p != map[string]string{"http": "80", "https": "443"}[scheme] {
		t.Fatalf("%s %q: port %q", what, raw, p)
	}
	h, err := reseller.NormalizeDomain(u.Hostname())
	if err != nil || h != host {
		t.Fatalf("%s %q: host %q is not the validated name %q", what, raw, u.Hostname(), host)
	}
	if strings.ContainsAny(u.Host, `/\@?#%`) {
		t.Fatalf("%s %q: odd host %q", what, raw, u.Host)
	}
	if u.Path != wantPath || u.EscapedPath() != wantPath {
		t.Fatalf("%s %q: path %q, want %q", what, raw, u.EscapedPath(), wantPath)
	}
}

// fzCheckFileName: [A-Za-z0-9][A-Za-z0-9._-]*, at most 255 bytes, no "..":
// so no '/', '\\', NUL or control character either.
func fzCheckFileName(t *testing.T, s string) {
	t.Helper()
	if s == "" || len(s) > reseller.MaxDCVFileNameLen || strings.Contains(s, "..") || strings.ContainsAny(s, "/\\\x00") {
		t.Fatalf("unsafe file name %q accepted", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			t.Fatalf("unsafe file name %q accepted (byte %#x at %d)", s, c, i)
		}
	}
}

// fzCheckApprover: one of the five mailboxes at the validated name or a
// parent within its registrable domain, and the one requested.
func fzCheckApprover(t *testing.T, base, method, addr string) {
	t.Helper()
	local, dom, ok := strings.Cut(addr, "@")
	if !ok || !slices.Contains(reseller.ApproverLocalParts(), local) {
		t.Fatalf("approver %q is not an allowed mailbox", addr)
	}
	reg, err := publicsuffix.EffectiveTLDPlusOne(base)
	if err != nil {
		t.Fatalf("approver for %q, which has no registrable domain: %v", base, err)
	}
	if dom != base && !strings.HasSuffix(base, "."+dom) || dom != reg && !strings.HasSuffix(dom, "."+reg) {
		t.Fatalf("approver %q is outside %q within %q", addr, base, reg)
	}
	wantLocal, wantDom, _ := strings.Cut(strings.TrimSpace(method), "@")
	if n, err := reseller.NormalizeDomain(wantDom); err != nil || n != dom || !strings.EqualFold(wantLocal, local) {
		t.Fatalf("approver %q, requested %q", addr, method)
	}
}

// fzRecordLabel: "_" then 1 to 62 of [a-z0-9-], written as a pattern so
// that the oracle does not restate the code under test.
var fzRecordLabel = regexp.MustCompile(`^_[a-z0-9-]{1,62}$`).MatchString

// fzHostName: lower-case LDH labels, at least two, at most 253
// characters, a top-level label that is not all digits.
func fzHostName(s string) bool {
	if len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

// fzPlainWord: at most 32 of [a-z0-9_-], as a pattern (see fzRecordLabel).
var fzPlainWord = regexp.MustCompile(`^[a-z0-9_-]{0,32}$`).MatchString
