package providers_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/providers"
)

// This file holds the core that every fake API embeds (fakeServer: the
// httptest server, its request log, the lock over the fake's state and the
// refusals a test asks for), the pieces the fakes' signature checks share,
// and the steps that the providers' own tests repeat.

// fakeServer is the core of a fake API. A fake embeds it, seeds its zones,
// then calls start (or startAsDefaultClient), and begins its ServeHTTP with
// receive.
type fakeServer struct {
	t    *testing.T
	name string // "fake Cloudflare", for failure messages
	host string // the real API's host, that every request must name; "" checks none
	srv  *httptest.Server
	log  apiLog

	mu sync.Mutex // over the embedding fake's state
	// deny, when it returns true for a request, makes the fake refuse it
	// as the API would, quoting the secret it knows, as a careless API
	// might: dcvd must keep the secret out of its errors anyway.
	deny func(r apiRequest) bool
}

// start serves h until the test ends.
func (s *fakeServer) start(t *testing.T, name, host string, h http.Handler) {
	t.Helper()
	s.t, s.name, s.host = t, name, host
	s.srv = httptest.NewServer(h)
	t.Cleanup(s.srv.Close)
}

// startAsDefaultClient is start, and points http.DefaultClient at the fake
// until the test ends, for providers that have a constant URL and use
// http.DefaultClient (process-global: such tests must not run in parallel).
func (s *fakeServer) startAsDefaultClient(t *testing.T, name, host string, h http.Handler) {
	t.Helper()
	s.start(t, name, host, h)
	orig := http.DefaultClient.Transport
	http.DefaultClient.Transport = newRewriteTransport(t, host, s.srv)
	t.Cleanup(func() { http.DefaultClient.Transport = orig })
}

// client is an HTTP client that sends the requests for the API's host to
// the fake, for providers that take one through providers.Options.
func (s *fakeServer) client() *http.Client {
	return &http.Client{Transport: newRewriteTransport(s.t, s.host, s.srv)}
}

// receive logs r and checks its Host. An error (its body could not be
// read) is for the caller to answer as its API would.
func (s *fakeServer) receive(r *http.Request) (apiRequest, error) {
	req, err := s.log.record(r)
	if err != nil {
		return req, err
	}
	if s.host != "" && req.Host != s.host {
		s.t.Errorf("%s: request %s for host %q, want %q", s.name, req, req.Host, s.host)
	}
	return req, nil
}

// refused reports whether the test's deny refuses req.
func (s *fakeServer) refused(req apiRequest) bool { return s.deny != nil && s.deny(req) }

// writeJSON answers status with body as JSON.
func (s *fakeServer) writeJSON(w http.ResponseWriter, status int, contentType string, body any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(body); err != nil {
		s.t.Errorf("%s: encode response: %v", s.name, err)
	}
}

// authFields reads an Authorization header "ALG k=v, k=v" into its fields.
func authFields(r *http.Request, alg string) (map[string]string, error) {
	rest, ok := strings.CutPrefix(r.Header.Get("Authorization"), alg+" ")
	if !ok {
		return nil, fmt.Errorf("Authorization %q is not %s", r.Header.Get("Authorization"), alg)
	}
	fields := map[string]string{}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		fields[k] = v
	}
	return fields, nil
}

// hmacSHA256 is HMAC-SHA256 of data with key.
func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// sha256Hex is the hex SHA-256 of b.
func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// checkSignedBy checks that every request's Authorization starts with
// prefix (the algorithm and the key ID) and contains part, and that secret
// appears nowhere in any request. describe names a request in failures.
func checkSignedBy(t *testing.T, reqs []apiRequest, describe func(apiRequest) string, prefix, part, secret string) {
	t.Helper()
	for _, r := range reqs {
		if a := r.Header.Get("Authorization"); !strings.HasPrefix(a, prefix) || !strings.Contains(a, part) {
			t.Errorf("%s: Authorization %q does not start with %q and hold %q", describe(r), a, prefix, part)
		}
	}
	assertNoSecret(t, reqs, secret, "")
}

// secretSection is a config section: base (the provider and any inline
// key ID), the secret in a file named by fileKey, and extra.
func secretSection(t *testing.T, base map[string]any, fileKey, secret string, extra map[string]any) map[string]any {
	s := maps.Clone(base)
	s[fileKey] = secretFile(t, secret)
	maps.Copy(s, extra)
	return s
}

// mustPublish publishes recs, which must all be set by calls SetRecords
// calls.
func mustPublish(t *testing.T, d *providers.DNS, recs []providers.Record, calls int) {
	t.Helper()
	rep, err := d.Publish(context.Background(), recs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	checkReport(t, rep, recs, nil, calls)
}

// mustRepublish publishes recs again: all must be unchanged, with no
// SetRecords call.
func mustRepublish(t *testing.T, d *providers.DNS, recs []providers.Record) {
	t.Helper()
	rep, err := d.Publish(context.Background(), recs)
	if err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	checkReport(t, rep, nil, recs, 0)
}

// checkLines fails with fail (t.Errorf or t.Fatalf) when got is not want.
func checkLines(t *testing.T, fail func(string, ...any), what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		fail("%s:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// checkAsBefore fails when the zones after an operation (what) are not as
// before.
func checkAsBefore(t *testing.T, what string, before, after []string) {
	t.Helper()
	if !slices.Equal(after, before) {
		t.Errorf("%s:\n%s\nwant as before:\n%s", what, strings.Join(after, "\n"), strings.Join(before, "\n"))
	}
}

// checkSecondCleanup runs Cleanup again after a complete one: it succeeds
// and writes nothing.
func checkSecondCleanup[W any](t *testing.T, d *providers.DNS, recs []providers.Record, v fakeView[W]) {
	t.Helper()
	if err := d.Cleanup(context.Background(), recs); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	if writes := v.takeWrites(); len(writes) != 0 {
		t.Errorf("second Cleanup wrote: %q", v.describe(writes))
	}
}

// lines returns, sorted, the lines that each emits under the fake's lock:
// a fake's snapshot, one line a record.
func (s *fakeServer) lines(each func(emit func(format string, args ...any))) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	each(func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) })
	sort.Strings(out)
	return out
}

// describeEach returns describe of each request.
func describeEach(reqs []apiRequest, describe func(apiRequest) string) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = describe(r)
	}
	return out
}

// actionIn returns whether a request's action (in header) is one of actions.
func actionIn(header string, actions ...string) func(apiRequest) bool {
	return func(r apiRequest) bool { return slices.Contains(actions, r.Header.Get(header)) }
}

// actionLine is an RPC request as tests compare it: the action, then each
// parameter as k=v, keys sorted; err is that of reading the parameters.
func actionLine[V any](action string, params map[string]V, err error, format func(V) string) string {
	if err != nil {
		return action + " (malformed body)"
	}
	var b strings.Builder
	b.WriteString(action)
	for _, k := range slices.Sorted(maps.Keys(params)) {
		b.WriteString(" " + k + "=" + format(params[k]))
	}
	return b.String()
}

// planOneZone plans the DCV records of example.com (apex, wildcard, www,
// shop) with d, whose section names the zone, and checks that planning
// asked the API nothing.
func planOneZone(t *testing.T, d *providers.DNS, provider string, s *fakeServer, describe func([]apiRequest) []string) []providers.Record {
	t.Helper()
	recs := planDCV(t, d, dcvInstructions("example.com", "www", "shop"), wantRecords(provider, time.Minute, "example.com", "www", "shop"))
	if reqs := s.log.take(); len(reqs) != 0 {
		t.Errorf("Plan with an explicit zone asked the API: %q", describe(reqs))
	}
	return recs
}

// planTwoZones plans the DCV records of www.example.com and of orgHosts
// under example.org with d, and checks them.
func planTwoZones(t *testing.T, d *providers.DNS, provider string, orgHosts ...string) []providers.Record {
	t.Helper()
	in := append(dcvInstructions("example.com", "www"), dcvInstructions("example.org", orgHosts...)...)
	want := append(wantRecords(provider, time.Minute, "example.com", "www"), wantRecords(provider, time.Minute, "example.org", orgHosts...)...)
	return planDCV(t, d, in, want)
}

// find returns the first item of list for which match is true, or nil.
func find[T any](list []*T, match func(*T) bool) *T {
	if i := slices.IndexFunc(list, match); i >= 0 {
		return list[i]
	}
	return nil
}
