package reseller

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	apiKeyID  = "AKID"
	apiSecret = "client-test-SECRET/+=9f8e7d"
	apiNonce  = "0123456789abcdef0123456789abcdef"
)

// apiNow is 2024-05-06T07:08:09 in Beijing.
var apiNow = time.Date(2024, 5, 5, 23, 8, 9, 0, time.UTC)

// seenRequest is what the fake API received, after its signature checked out.
type seenRequest struct {
	Method, Path, ContentType, UserAgent string
	Query                                url.Values
	Body                                 map[string]any // decoded with UseNumber; nil without a body
}

// verifySigned checks a request the way the reseller does: the union of the
// query (less sign) and the JSON body, signed over the URL path.
func verifySigned(r *http.Request, rawBody []byte, secret string) (seenRequest, error) {
	q := r.URL.Query()
	seen := seenRequest{
		Method: r.Method, Path: r.URL.Path, Query: q,
		ContentType: r.Header.Get("Content-Type"), UserAgent: r.Header.Get("User-Agent"),
	}
	sign := q.Get(ParamSign)
	if sign == "" {
		return seen, errors.New("no sign in the query")
	}
	params := map[string]any{}
	for k, vs := range q {
		if len(vs) != 1 {
			return seen, fmt.Errorf("query %q has %d values", k, len(vs))
		}
		if k != ParamSign {
			params[k] = vs[0]
		}
	}
	for _, k := range []string{ParamAccessKeyID, ParamNonce, ParamTimestamp} {
		if q.Get(k) == "" {
			return seen, fmt.Errorf("no %s in the query", k)
		}
	}
	if _, err := ParseTimestamp(q.Get(ParamTimestamp)); err != nil {
		return seen, err
	}
	if len(rawBody) > 0 {
		dec := json.NewDecoder(bytes.NewReader(rawBody))
		dec.UseNumber()
		if err := dec.Decode(&seen.Body); err != nil {
			return seen, fmt.Errorf("body: %w", err)
		}
		for k, v := range seen.Body {
			if _, dup := params[k]; dup {
				return seen, fmt.Errorf("%q both in the query and the body", k)
			}
			params[k] = v
		}
	}
	// The server signs what its middleware leaves (trimmed strings, no
	// empty values): a request that is not sent in that form was signed
	// over something else than what was sent.
	if c, err := Canonical(params); err != nil || !reflect.DeepEqual(c, params) {
		return seen, fmt.Errorf("the parameters are not sent in their canonical form (%v): %#v", err, params)
	}
	if want := Sign(secret, StringToSign(r.URL.Path, params)); !SignatureEqual(sign, want) {
		return seen, fmt.Errorf("bad signature %s, want %s", sign, want)
	}
	return seen, nil
}

// fakeAPI is an httptest server that verifies every request's signature
// before handing it to reply.
type fakeAPI struct {
	t     *testing.T
	srv   *httptest.Server
	reply func(w http.ResponseWriter, r *http.Request, seen seenRequest)

	mu    sync.Mutex
	hits  int
	seen  []seenRequest
	signs []string
}

func newFakeAPI(t *testing.T, reply func(w http.ResponseWriter, r *http.Request, seen seenRequest)) *fakeAPI {
	t.Helper()
	f := &fakeAPI{t: t, reply: reply}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(r.Body)
	f.mu.Lock()
	f.hits++
	f.signs = append(f.signs, r.URL.Query().Get(ParamSign))
	f.mu.Unlock()
	if err != nil {
		f.t.Errorf("reading the request body: %v", err)
		return
	}
	seen, err := verifySigned(r, raw, apiSecret)
	if err != nil {
		f.t.Errorf("%s %s: %v", r.Method, r.URL.Path, err)
		http.Error(w, `{"success":false,"message":"bad signature"}`, http.StatusUnauthorized)
		return
	}
	f.mu.Lock()
	f.seen = append(f.seen, seen)
	f.mu.Unlock()
	f.reply(w, r, seen)
}

func (f *fakeAPI) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

func (f *fakeAPI) last() seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		f.t.Fatal("no verified request reached the server")
	}
	return f.seen[len(f.seen)-1]
}

// assertNoSecret fails when err shows the access key secret or any
// signature the server saw, however it is printed.
func (f *fakeAPI) assertNoSecret(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	f.mu.Lock()
	signs := append([]string(nil), f.signs...)
	f.mu.Unlock()
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		for _, secret := range append(signs, apiSecret, url.QueryEscape(apiSecret)) {
			if secret != "" && strings.Contains(s, secret) {
				t.Errorf("error leaks %q: %s", secret, s)
			}
		}
	}
}

func newAPIClient(t *testing.T, baseURL string, mutate func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		BaseURL:         baseURL,
		AccessKeyID:     apiKeyID,
		AccessKeySecret: apiSecret,
		Now:             func() time.Time { return apiNow },
		Nonce:           func() string { return apiNonce },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newSucceedingAPI is a fake API that answers every request with
// {"success":true}.
func newSucceedingAPI(t *testing.T) *fakeAPI {
	return newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) { writeJSON(w, 200, `{"success":true}`) })
}

// refusedCall is a call that must fail, its error containing want.
type refusedCall struct {
	name string
	call func() error
	want string
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func seedReply(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("testdata/reissue-response.json")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
