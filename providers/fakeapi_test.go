package providers_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// This file holds what the fake Cloudflare, Route 53 and Alibaba Cloud DNS
// APIs share: a request log, a transport that sends a provider's requests
// for its real API host to the local fake, and the DCV records and
// unrelated zone contents that every fake test uses.

// apiRequest is one request a fake API received, kept for assertions.
type apiRequest struct {
	Method string
	Host   string // the Host header, as the client sent it
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
}

// String is the request line, for failure messages.
func (r apiRequest) String() string {
	if q := r.Query.Encode(); q != "" {
		return r.Method + " " + r.Path + "?" + q
	}
	return r.Method + " " + r.Path
}

// apiLog records the requests of a fake API. Safe for concurrent use.
type apiLog struct {
	mu   sync.Mutex
	reqs []apiRequest
}

// maxFakeBody bounds the body a fake reads: no provider sends more, and a
// runaway one fails the request instead of filling the test's memory.
const maxFakeBody = 1 << 20

// record reads r's body (at most maxFakeBody bytes) and logs the request.
func (l *apiLog) record(r *http.Request) (apiRequest, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFakeBody+1))
	if err != nil {
		return apiRequest{}, err
	}
	if len(body) > maxFakeBody {
		return apiRequest{}, fmt.Errorf("request body over %d bytes", maxFakeBody)
	}
	req := apiRequest{
		Method: r.Method,
		Host:   r.Host,
		Path:   r.URL.Path,
		Query:  r.URL.Query(),
		Header: r.Header.Clone(),
		Body:   body,
	}
	l.mu.Lock()
	l.reqs = append(l.reqs, req)
	l.mu.Unlock()
	return req, nil
}

// take returns the requests logged since the last take and forgets them.
func (l *apiLog) take() []apiRequest { return takeAll(&l.mu, &l.reqs) }

// takeAll returns what *list holds and empties it, under mu.
func takeAll[T any](mu *sync.Mutex, list *[]T) []T {
	mu.Lock()
	defer mu.Unlock()
	out := *list
	*list = nil
	return out
}

// filterRequests returns the requests for which keep is true.
func filterRequests(reqs []apiRequest, keep func(apiRequest) bool) []apiRequest {
	var out []apiRequest
	for _, r := range reqs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// requestLines returns each request's line.
func requestLines(reqs []apiRequest) []string { return describeEach(reqs, apiRequest.String) }

// assertNoSecret fails if secret appears anywhere in a request but the
// header named allowedHeader (where a bearer token must be), so that a
// provider that puts a secret in a URL, a body or a signature header is
// caught.
func assertNoSecret(t *testing.T, reqs []apiRequest, secret, allowedHeader string) {
	t.Helper()
	for _, r := range reqs {
		var b strings.Builder
		b.WriteString(r.Method + " " + r.Host + r.Path + "?" + r.Query.Encode() + "\n")
		for k, vs := range r.Header {
			if http.CanonicalHeaderKey(k) == http.CanonicalHeaderKey(allowedHeader) {
				continue
			}
			fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(vs, ", "))
		}
		b.Write(r.Body)
		if strings.Contains(b.String(), secret) {
			t.Errorf("request %s carries the secret outside %q:\n%s", r, allowedHeader, b.String())
		}
	}
}

// rewriteTransport sends requests for host to the fake server at target,
// keeping the Host header, so that the fake sees what the real API would.
// Requests for any other host fail: a test never reaches the Internet.
type rewriteTransport struct {
	host   string
	target *url.URL
	base   http.RoundTripper
}

// newRewriteTransport returns a transport that sends requests for host to srv.
func newRewriteTransport(t *testing.T, host string, srv *httptest.Server) *rewriteTransport {
	t.Helper()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &rewriteTransport{host: host, target: u, base: srv.Client().Transport}
}

// RoundTrip implements http.RoundTripper.
func (rt *rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != rt.host {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("test transport: request for %s, only %s is faked", req.URL.Host, rt.host)
	}
	out := req.Clone(req.Context())
	out.URL.Scheme = rt.target.Scheme
	out.URL.Host = rt.target.Host
	if out.Host == "" {
		out.Host = rt.host
	}
	return rt.base.RoundTrip(out)
}

// secretFile writes value and a newline (as editors leave it) to a file in
// a fresh directory and returns its path.
func secretFile(t *testing.T, value string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newDNS configures the section and fails the test on an error or warning.
func newDNS(t *testing.T, name string, section map[string]any, opts providers.Options) *providers.DNS {
	t.Helper()
	d, warnings, err := providers.New(name, section, opts)
	if err != nil {
		t.Fatalf("providers.New: %v", err)
	}
	if len(warnings) > 0 {
		t.Fatalf("providers.New warned %q; the secrets come from files", warnings)
	}
	return d
}

// dcvLabel is the DCV label of the test records, as a CA derives it from a
// CSR: one label for every name of the order.
const dcvLabel = "_c0ffee"

// dcvTarget is the CNAME target the CA gives for name; targets differ per
// name so that a record written with another record's value is caught.
func dcvTarget(name string) string {
	host := strings.TrimPrefix(name, dcvLabel+".")
	return "t-" + strings.ReplaceAll(host, ".", "-") + ".dcv-target.example"
}

// dcvInstructions returns the CNAME instructions of one reissue covering
// zone, *.zone, and each of the hosts under zone, as reseller validates
// them: zone and *.zone need the same record, so it is listed twice.
func dcvInstructions(zone string, hosts ...string) []reseller.CNAMEInstruction {
	zone = strings.TrimSuffix(zone, ".")
	apex := dcvLabel + "." + zone
	out := []reseller.CNAMEInstruction{
		{Name: apex, Target: dcvTarget(apex)}, // zone
		{Name: apex, Target: dcvTarget(apex)}, // *.zone
	}
	for _, h := range hosts {
		name := dcvLabel + "." + h + "." + zone
		out = append(out, reseller.CNAMEInstruction{Name: name, Target: dcvTarget(name)})
	}
	return out
}

// wantRecords is what Plan must make of dcvInstructions: each name once,
// sorted, in its zone, with the section's TTL.
func wantRecords(provider string, ttl time.Duration, zone string, hosts ...string) []providers.Record {
	zone = strings.TrimSuffix(zone, ".")
	var out []providers.Record
	for _, in := range dcvInstructions(zone, hosts...)[1:] {
		out = append(out, providers.Record{Provider: provider, Zone: zone + ".", Name: in.Name, Target: in.Target, TTL: ttl})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// planDCV runs d.Plan and checks its result against want.
func planDCV(t *testing.T, d *providers.DNS, in []reseller.CNAMEInstruction, want []providers.Record) []providers.Record {
	t.Helper()
	recs, err := d.Plan(context.Background(), in)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	sort.Slice(want, func(i, j int) bool { return want[i].Name < want[j].Name })
	if !slices.Equal(recs, want) {
		t.Fatalf("Plan =\n%+v\nwant\n%+v", recs, want)
	}
	return recs
}

// checkReport checks what Publish says it did.
func checkReport(t *testing.T, rep providers.Report, set, unchanged []providers.Record, calls int) {
	t.Helper()
	sorted := func(rs []providers.Record) []providers.Record {
		out := slices.Clone(rs)
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out
	}
	if !slices.Equal(sorted(rep.Set), sorted(set)) || !slices.Equal(sorted(rep.Unchanged), sorted(unchanged)) || rep.Calls != calls {
		t.Errorf("Publish report: set %v, unchanged %v, %d SetRecords call(s);\nwant set %v, unchanged %v, %d call(s)",
			rep.Set, rep.Unchanged, rep.Calls, set, unchanged, calls)
	}
}

// seedRR is a record a fake zone holds before the test: FQDN without the
// trailing dot, the type, TTL in seconds and the value as the API shows it.
type seedRR struct {
	Name, Type string
	TTL        int
	Value      string
}

// fakeUnrelated are records a zone holds that dcvd must never touch: a
// host, a CNAME at another DCV-looking name (an older validation's), a TXT
// at a DCV-looking name, and a TXT at the apex.
func fakeUnrelated(zone string) []seedRR {
	zone = strings.TrimSuffix(zone, ".")
	return []seedRR{
		{Name: "www." + zone, Type: "A", TTL: 300, Value: "192.0.2.10"},
		{Name: "_0ld0ld." + zone, Type: "CNAME", TTL: 300, Value: "old.dcv-target.example"},
		{Name: "_dnsauth." + zone, Type: "TXT", TTL: 300, Value: "unrelated-dcv-token"},
		{Name: zone, Type: "TXT", TTL: 3600, Value: "v=spf1 -all"},
	}
}

// zoneResolver starts an authoritative DNS server for zones on 127.0.0.1,
// for the SOA walk of providers that cannot list their zones.
func zoneResolver(t *testing.T, zones ...string) string {
	t.Helper()
	srv, err := memdns.Start("127.0.0.1:0", zones...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addr()
}

// interleaved reports whether the zones of a sequence of writes alternate,
// that is whether some zone's writes are not one contiguous run.
func interleaved(zones []string) bool {
	done := map[string]bool{}
	for i, z := range zones {
		if i > 0 && zones[i-1] != z {
			done[zones[i-1]] = true
		}
		if done[z] {
			return true
		}
	}
	return false
}

// inZoneOrder returns recs in the order Publish writes them: zone by zone
// (zones sorted), in their order within each zone.
func inZoneOrder(recs []providers.Record) []providers.Record {
	out := slices.Clone(recs)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Zone < out[j].Zone })
	return out
}

// fakeView is how checkRepublishThenCleanup sees a fake API. W is what the
// fake records of one write: an apiRequest from its log, or a line.
type fakeView[W any] struct {
	takeWrites func() []W         // the writes since the last call, then forgets them
	describe   func([]W) []string // the writes, for failure messages
	snapshot   func() []string    // the fake's zones, one line a record
}

// logWrites returns a takeWrites for a fake whose writes are the requests
// of its log for which isWrite is true. It takes the whole log.
func logWrites(l *apiLog, isWrite func(apiRequest) bool) func() []apiRequest {
	return func() []apiRequest { return filterRequests(l.take(), isWrite) }
}

// checkRepublishThenCleanup is the tail of a publish test, run after recs
// were published: a second Publish reports every record unchanged, with no
// SetRecords call, and writes nothing; then Cleanup succeeds with exactly
// one write per record and leaves the zones as they were before publish
// (the snapshot before). checkCleanup, if not nil, further checks
// Cleanup's writes.
func checkRepublishThenCleanup[W any](t *testing.T, ctx context.Context, d *providers.DNS, recs []providers.Record, v fakeView[W], before []string, checkCleanup func(writes []W)) {
	t.Helper()
	rep, err := d.Publish(ctx, recs)
	if err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	checkReport(t, rep, nil, recs, 0)
	if writes := v.takeWrites(); len(writes) != 0 {
		t.Errorf("second Publish wrote: %q", v.describe(writes))
	}

	if err := d.Cleanup(ctx, recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	writes := v.takeWrites()
	if len(writes) != len(recs) {
		t.Errorf("Cleanup made %d writes, want %d: %q", len(writes), len(recs), v.describe(writes))
	}
	if checkCleanup != nil {
		checkCleanup(writes)
	}
	if after := v.snapshot(); !slices.Equal(after, before) {
		t.Errorf("zones after Cleanup:\n%s\nwant as before:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
	}
}

// checkRefusedPublish checks a Publish against an API that refuses it:
// it failed, its error says each of want and does not carry the secret,
// and the zone (snapshot) is as it was before.
func checkRefusedPublish(t *testing.T, err error, secret string, want []string, before, after []string) {
	t.Helper()
	if err == nil {
		t.Fatal("Publish succeeded against an API that refuses it")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error carries the secret: %v", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if !slices.Equal(after, before) {
		t.Errorf("zone changed by a refused Publish:\n%s", strings.Join(after, "\n"))
	}
}
