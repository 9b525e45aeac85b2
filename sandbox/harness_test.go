package sandbox

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/internal/testpki"
	"github.com/dcvd/dcvd/reseller"
)

// This file is the tests' harness: a sandbox on httptest, an in-process DNS
// server for its zone example.com, web servers for validation files, and a
// client that signs requests with reseller.StringToSign and reseller.Sign
// (not reseller.Client: the sandbox is tested on its own).

// sbClock is a clock that tests move by hand.
type sbClock struct {
	mu sync.Mutex
	t  time.Time
}

func newSBClock() *sbClock { return &sbClock{t: time.Now().Truncate(time.Second)} }

func (c *sbClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *sbClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// sbWeb serves validation files by Host and path.
type sbWeb struct {
	mu    sync.Mutex
	files map[string]string // host + path → content
}

func (w *sbWeb) put(host, path, content string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.files[host+path] = content
}

func (w *sbWeb) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	w.mu.Lock()
	content, ok := w.files[host+r.URL.Path]
	w.mu.Unlock()
	if !ok {
		http.NotFound(rw, r)
		return
	}
	io.WriteString(rw, content)
}

// Test catalogue: "multi" allows 3 names and wildcards; "single" allows 2
// names and no wildcard.
var sbProducts = []Product{
	{ID: "multi", Name: "Multi", Validation: "DV", MaxDomains: 3, Wildcard: true, Price: 50, ReissuePrice: 1, DomainPrice: 10},
	{ID: "single", Name: "Single", Validation: "DV", MaxDomains: 2, Wildcard: false, Price: 20, ReissuePrice: 0, DomainPrice: 5},
	{ID: "ov", Name: "OV", Validation: "OV", MaxDomains: 2, Price: 200},
}

var sbServices = []Service{
	{ID: "svc", ProductID: "multi", Domains: []string{"a.example.com"}},
	{ID: "nowild", ProductID: "single"},
	{ID: "org", ProductID: "ov"},
}

type sbHarness struct {
	t      *testing.T
	dir    string
	clock  *sbClock
	srv    *Server
	ts     *httptest.Server
	dns    *memdns.Server
	web    *sbWeb
	logs   *observer.ObservedLogs
	id     string
	secret string

	mu    sync.Mutex
	signs []string // every sign sent, to check that none is logged
}

// sbStart starts a sandbox on dir (a new temporary directory when "") with
// the test catalogue, no background loop and a 1ms callback backoff; opts
// adjust the configuration.
func sbStart(t *testing.T, dir string, clock *sbClock, opts ...func(*Config)) *sbHarness {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if clock == nil {
		clock = newSBClock()
	}
	dnsSrv, err := memdns.Start("127.0.0.1:0", "example.com")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dnsSrv.Close() })
	web := &sbWeb{files: map[string]string{}}
	webSrv := httptest.NewServer(web)
	t.Cleanup(webSrv.Close)
	webTLS := httptest.NewTLSServer(web)
	t.Cleanup(webTLS.Close)

	core, logs := observer.New(zapcore.DebugLevel)
	cfg := Config{
		StateDir:        dir,
		Products:        sbProducts,
		Services:        sbServices,
		DNSServer:       dnsSrv.Addr(),
		HTTPAddr:        webSrv.Listener.Addr().String(),
		HTTPSAddr:       webTLS.Listener.Addr().String(),
		Validity:        time.Hour,
		CheckInterval:   -1,
		CallbackBackoff: time.Millisecond,
		Now:             clock.Now,
		Logger:          zap.New(core),
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	h := &sbHarness{t: t, dir: dir, clock: clock, srv: srv, ts: ts, dns: dnsSrv, web: web, logs: logs}
	h.id, h.secret = srv.AccessKey()
	t.Cleanup(h.stop)
	return h
}

// stop closes the HTTP server and the sandbox (idempotent).
func (h *sbHarness) stop() {
	h.ts.Close()
	h.srv.Close()
}

// sbReply is a reply as the client saw it.
type sbReply struct {
	status int
	header http.Header
	raw    []byte
	env    struct {
		Success   bool                `json:"success"`
		Message   string              `json:"message"`
		ErrorCode string              `json:"error_code"`
		Errors    map[string][]string `json:"errors"`
		Data      json.RawMessage     `json:"data"`
	}
}

// sbRequest is a request before it is signed and sent.
type sbRequest struct {
	method string
	path   string // reseller.Path…, without the /api/v1 prefix
	query  url.Values
	body   map[string]any
}

// sign adds accessKeyId, a fresh nonce, the timestamp of at and sign to the
// query, as the API family's SDKs do.
func (h *sbHarness) sign(req *sbRequest, id, secret string, at time.Time) {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	h.signAs(req, id, secret, reseller.FormatTimestamp(at), hex.EncodeToString(nonce))
}

// signAs signs with the given timestamp text and nonce.
func (h *sbHarness) signAs(req *sbRequest, id, secret, timestamp, nonce string) {
	if req.query == nil {
		req.query = url.Values{}
	}
	req.query.Set(reseller.ParamAccessKeyID, id)
	req.query.Set(reseller.ParamNonce, nonce)
	req.query.Set(reseller.ParamTimestamp, timestamp)
	req.query.Del(reseller.ParamSign)
	p := map[string]any{}
	for k := range req.query {
		p[k] = req.query.Get(k)
	}
	for k, v := range req.body {
		p[k] = v
	}
	sig := reseller.Sign(secret, reseller.StringToSign(apiPrefix+req.path, p))
	req.query.Set(reseller.ParamSign, sig)
	h.mu.Lock()
	h.signs = append(h.signs, sig)
	h.mu.Unlock()
}

// send sends a request as it is (signed or not).
func (h *sbHarness) send(ctx context.Context, req sbRequest) (sbReply, error) {
	h.t.Helper()
	var body io.Reader
	if req.body != nil {
		b, err := json.Marshal(req.body)
		if err != nil {
			h.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	u := h.ts.URL + apiPrefix + req.path + "?" + req.query.Encode()
	hr, err := http.NewRequestWithContext(ctx, req.method, u, body)
	if err != nil {
		h.t.Fatal(err)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.ts.Client().Do(hr)
	if err != nil {
		return sbReply{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return sbReply{}, err
	}
	r := sbReply{status: resp.StatusCode, header: resp.Header, raw: raw}
	json.Unmarshal(raw, &r.env) // a faulty reply is not JSON; tests look at raw then
	return r, nil
}

// call signs and sends; it fails the test on a transport error.
func (h *sbHarness) call(method, path string, body map[string]any) sbReply {
	h.t.Helper()
	req := sbRequest{method: method, path: path, body: body}
	if method == http.MethodGet && body != nil {
		req.query = url.Values{}
		for k, v := range body {
			req.query.Set(k, v.(string))
		}
		req.body = nil
	}
	h.sign(&req, h.id, h.secret, h.clock.Now())
	r, err := h.send(context.Background(), req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func (h *sbHarness) reissue(uid, service string, dcv map[string]string, csr string) sbReply {
	h.t.Helper()
	body := map[string]any{"unique_id": uid, "service_id": service, "renew": 0}
	if dcv != nil {
		body["domain_dcv"] = dcv
	}
	if csr != "" {
		body["csr"] = csr
	}
	return h.call(http.MethodPost, reseller.PathReissue, body)
}

func (h *sbHarness) detail(service string) reseller.Order {
	h.t.Helper()
	r := h.call(http.MethodGet, reseller.PathDetail, map[string]any{"service_id": service})
	return r.mustOrder(h.t)
}

func (h *sbHarness) updateDCV(service string, dcv map[string]string) sbReply {
	h.t.Helper()
	return h.call(http.MethodPost, reseller.PathUpdateDCV, map[string]any{"service_id": service, "domain_dcv": dcv})
}

func (h *sbHarness) validateDCV(service string) reseller.Order {
	h.t.Helper()
	r := h.call(http.MethodPost, reseller.PathValidateDCV, map[string]any{"service_id": service})
	return r.mustOrder(h.t)
}

// mustOrder checks that the reply is a success and decodes its order with
// the client's tolerant decoder.
func (r sbReply) mustOrder(t *testing.T) reseller.Order {
	t.Helper()
	r.mustSucceed(t)
	var o reseller.Order
	if err := json.Unmarshal(r.env.Data, &o); err != nil {
		t.Fatalf("decode order: %v\n%s", err, r.raw)
	}
	return o
}

func (r sbReply) mustSucceed(t *testing.T) {
	t.Helper()
	if r.status != http.StatusOK || !r.env.Success {
		t.Fatalf("want success, got HTTP %d: %s", r.status, r.raw)
	}
}

// mustRefuse checks an HTTP status and error code.
func (r sbReply) mustRefuse(t *testing.T, status int, code string) {
	t.Helper()
	if r.status != status || r.env.Success || r.env.ErrorCode != code {
		t.Fatalf("want HTTP %d with error_code %s, got HTTP %d: %s", status, code, r.status, r.raw)
	}
}

// publish puts the order's DNS records and files where the CA looks.
func (h *sbHarness) publish(o reseller.Order) {
	h.t.Helper()
	for _, e := range o.DCV {
		switch {
		case e.DNS != nil:
			rel := libdns.RelativeName(e.DNS.Fullname+".", "example.com.")
			if _, err := h.dns.SetRecords(context.Background(), "example.com.", []libdns.Record{
				libdns.CNAME{Name: rel, TTL: time.Minute, Target: e.DNS.Value + "."},
			}); err != nil {
				h.t.Fatal(err)
			}
		case e.HTTP != nil:
			u, err := url.Parse(e.HTTP.URL)
			if err != nil {
				h.t.Fatal(err)
			}
			h.web.put(u.Hostname(), u.Path, e.HTTP.Filecontent)
		}
	}
}

func (h *sbHarness) charges(uid string) int {
	n := 0
	for _, c := range h.srv.Ledger() {
		if c.UniqueID == uid {
			n++
		}
	}
	return n
}

// sbCSR returns a new P-256 key and a CSR for names (CN = names[0]).
func sbCSR(t *testing.T, names ...string) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key := testpki.Key(t).(*ecdsa.PrivateKey)
	return key, testpki.CSR(t, key, names...)
}

// sbVerify checks that the order's certificate chains to the sandbox root
// through ca_pem and covers names.
func (h *sbHarness) sbVerify(o reseller.Order, key *ecdsa.PrivateKey, names ...string) *x509.Certificate {
	h.t.Helper()
	leaf := testpki.ParseCert(h.t, o.CertPEM)
	inter := x509.NewCertPool()
	if !inter.AppendCertsFromPEM([]byte(o.CAPEM)) {
		h.t.Fatalf("ca_pem holds no certificate: %q", o.CAPEM)
	}
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{
			DNSName: n, Roots: h.srv.RootPool(), Intermediates: inter, CurrentTime: h.clock.Now(),
		}); err != nil {
			h.t.Errorf("certificate for %s: %v", n, err)
		}
	}
	if key != nil && !key.PublicKey.Equal(leaf.PublicKey) {
		h.t.Error("the certificate is not for the CSR's key")
	}
	return leaf
}

func dcvEntry(t *testing.T, o reseller.Order, domain string) reseller.DCVEntry {
	t.Helper()
	for _, e := range o.DCV {
		if e.Domain == domain {
			return e
		}
	}
	t.Fatalf("no dcv entry for %s in %+v", domain, o.DCV)
	return reseller.DCVEntry{}
}

func mustContain(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}
