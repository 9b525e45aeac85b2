package reseller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"regexp"
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

func TestReissueSendsSignedJSON(t *testing.T) {
	seed := seedReply(t)
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) { writeJSON(w, 200, seed) })
	c := newAPIClient(t, api.srv.URL+"/api/v1", nil)

	o, err := c.Reissue(context.Background(), ReissueRequest{
		UniqueID:  "azgZqJGX",
		ServiceID: "o91bZ",
		DomainDCV: map[string]Method{
			"*.example.com":    "dns",
			"example2.com":     "http",
			"example3.com":     "https",
			"sub.example4.com": "admin@example4.com",
		},
		CSR:          vectorCSR,
		ContactEmail: "a b~c@x.com",
		Organization: &Organization{Organization: "XX数字证书有限公司", City: "上海市"},
	})
	api.assertNoSecret(t, err)
	if err != nil {
		t.Fatal(err)
	}
	got := api.last()
	if got.Method != http.MethodPost || got.Path != "/api/v1/certificate/reissue" {
		t.Errorf("request line = %s %s", got.Method, got.Path)
	}
	if got.ContentType != "application/json" || got.UserAgent != "dcvd" {
		t.Errorf("Content-Type %q, User-Agent %q", got.ContentType, got.UserAgent)
	}
	wantQuery := url.Values{
		ParamAccessKeyID: {apiKeyID},
		ParamNonce:       {apiNonce},
		ParamTimestamp:   {"2024-05-06T07:08:09Z"},
		ParamSign:        got.Query[ParamSign],
	}
	if !reflect.DeepEqual(got.Query, wantQuery) {
		t.Errorf("query = %v, want %v", got.Query, wantQuery)
	}
	wantBody := map[string]any{
		"unique_id":  "azgZqJGX",
		"service_id": "o91bZ",
		"domain_dcv": map[string]any{
			"*.example.com":    "dns",
			"example2.com":     "http",
			"example3.com":     "https",
			"sub.example4.com": "admin@example4.com",
		},
		"csr":           vectorCSR,
		"contact_email": "a b~c@x.com",
		"renew":         json.Number("0"),
		"organization":  "XX数字证书有限公司",
		"city":          "上海市",
	}
	if !reflect.DeepEqual(got.Body, wantBody) {
		t.Errorf("body = %#v\nwant %#v", got.Body, wantBody)
	}
	if o.ServiceID != "o91bZ" || o.Cost != 4208.01 || len(o.DCV) != 5 {
		t.Errorf("order = %+v", o)
	}
}

// TestSignatureMatchesHandVector ties the client to the hand-computed vector
// of sign_test.go: same path, parameters, key, nonce and clock.
func TestSignatureMatchesHandVector(t *testing.T) {
	var sign string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sign = r.URL.Query().Get(ParamSign)
		writeJSON(w, 200, `{"success":true}`)
	}))
	defer srv.Close()
	c := newAPIClient(t, srv.URL+"/api/v1/", func(cfg *Config) { cfg.AccessKeySecret = vectorSecret })
	p := vectorParams()
	for _, k := range []string{ParamAccessKeyID, ParamNonce, ParamTimestamp} {
		delete(p, k)
	}
	if err := c.Do(context.Background(), "reissue", http.MethodPost, PathReissue, nil, p, nil); err != nil {
		t.Fatal(err)
	}
	if sign != vectorSign {
		t.Errorf("sign = %s, want the hand-computed %s", sign, vectorSign)
	}
}

func TestVerifierRejectsTampering(t *testing.T) {
	// The fake server's verifier must be able to fail, or every signature
	// test above proves nothing.
	var captured *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		captured = r.Clone(context.Background())
		writeJSON(w, 200, `{"success":true}`)
	}))
	defer srv.Close()
	c := newAPIClient(t, srv.URL+"/api/v1", nil)
	if err := c.UpdateDCV(context.Background(), "o91bZ", map[string]Method{"a.example": "dns"}); err != nil {
		t.Fatal(err)
	}
	if _, err := verifySigned(captured, body, apiSecret); err != nil {
		t.Fatalf("untampered request refused: %v", err)
	}
	if _, err := verifySigned(captured, bytes.Replace(body, []byte(`"dns"`), []byte(`"http"`), 1), apiSecret); err == nil {
		t.Error("a changed body passed verification")
	}
	if _, err := verifySigned(captured, body, apiSecret+"x"); err == nil {
		t.Error("a wrong secret passed verification")
	}
	moved := captured.Clone(context.Background())
	moved.URL.Path = "/api/v1/certificate/reissue"
	if _, err := verifySigned(moved, body, apiSecret); err == nil {
		t.Error("a changed path passed verification")
	}
}

func TestDetailSignsQuery(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		writeJSON(w, 200, `{"success":"1","data":{"service_id":"o91bZ","status":"issued","cert_pem":"PEM"}}`)
	})
	c := newAPIClient(t, api.srv.URL+"/api/v1/", func(cfg *Config) { cfg.UserAgent = "dcvd-test/1" })
	o, err := c.Detail(context.Background(), "o91bZ")
	api.assertNoSecret(t, err)
	if err != nil {
		t.Fatal(err)
	}
	got := api.last()
	if got.Method != http.MethodGet || got.Path != "/api/v1/certificate/detail" {
		t.Errorf("request line = %s %s", got.Method, got.Path)
	}
	if got.Body != nil || got.ContentType != "" || got.UserAgent != "dcvd-test/1" {
		t.Errorf("body %v, Content-Type %q, User-Agent %q", got.Body, got.ContentType, got.UserAgent)
	}
	if got.Query.Get("service_id") != "o91bZ" || len(got.Query) != 5 {
		t.Errorf("query = %v", got.Query)
	}
	if o.Status != StatusIssued || o.CertPEM != "PEM" {
		t.Errorf("order = %+v", o)
	}
}

func TestOtherCalls(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, seen seenRequest) {
		switch seen.Path {
		case "/api/v1/certificate/update-dcv":
			writeJSON(w, 200, `{"success":true,"message":"OK"}`)
		case "/api/v1/certificate/validate-dcv":
			writeJSON(w, 200, `{"success":true,"data":{"service_id":"o91bZ","dcv":{"a.example":{"type":"dns","status":"valid"}}}}`)
		case "/api/v1/certificate/create":
			writeJSON(w, 200, `{"success":true,"data":{"service_id":"new1","status":"pending","cost":"10"}}`)
		case "/api/v1/product/list":
			writeJSON(w, 200, `{"success":true,"data":{"list":[{"product_id":"p1"},{"product_id":"p2"}]}}`)
		default:
			http.NotFound(w, r)
		}
	})
	c := newAPIClient(t, api.srv.URL+"/api/v1", nil)
	ctx := context.Background()

	err := c.UpdateDCV(ctx, "o91bZ", map[string]Method{"a.example": "dns", "b.example": "admin@b.example"})
	api.assertNoSecret(t, err)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"service_id": "o91bZ", "domain_dcv": map[string]any{"a.example": "dns", "b.example": "admin@b.example"}}
	if got := api.last(); got.Method != http.MethodPost || !reflect.DeepEqual(got.Body, want) {
		t.Errorf("update-dcv sent %s %v", got.Method, got.Body)
	}

	o, err := c.ValidateDCV(ctx, "o91bZ")
	api.assertNoSecret(t, err)
	if err != nil {
		t.Fatal(err)
	}
	if got := api.last(); !reflect.DeepEqual(got.Body, map[string]any{"service_id": "o91bZ"}) {
		t.Errorf("validate-dcv sent %v", got.Body)
	}
	if len(o.DCV) != 1 || o.DCV[0].Status != StatusValid {
		t.Errorf("validate-dcv order = %+v", o)
	}

	o, err = c.Create(ctx, CreateRequest{UniqueID: "u1", ProductID: "p1", Period: 12, DomainDCV: map[string]Method{"a.example": "http"}})
	api.assertNoSecret(t, err)
	if err != nil {
		t.Fatal(err)
	}
	want = map[string]any{"unique_id": "u1", "product_id": "p1", "period": json.Number("12"), "domain_dcv": map[string]any{"a.example": "http"}}
	if got := api.last(); !reflect.DeepEqual(got.Body, want) {
		t.Errorf("create sent %#v", got.Body)
	}
	if o.ServiceID != "new1" || o.Cost != 10 {
		t.Errorf("create order = %+v", o)
	}

	ps, err := c.Products(ctx)
	api.assertNoSecret(t, err)
	if err != nil {
		t.Fatal(err)
	}
	if got := api.last(); got.Method != http.MethodGet || got.Body != nil || len(got.Query) != 4 {
		t.Errorf("product list sent %s %v %v", got.Method, got.Query, got.Body)
	}
	if len(ps) != 2 || ps[0].ID != "p1" || ps[1].ID != "p2" {
		t.Errorf("products = %+v", ps)
	}
}

func TestBodyCarriesTheSignedNumbers(t *testing.T) {
	// The body carries the text that is signed, which the server reads
	// back to the same value: PHP's (1234567, where fmt.Sprint writes
	// 1.234567e+06), booleans as 1, a list's remaining elements at their
	// indexes (reseller-api.md, "What the server sees").
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) { writeJSON(w, 200, `{"success":true}`) })
	c := newAPIClient(t, api.srv.URL, nil)
	body := map[string]any{"big": 1234567.0, "half": float32(0.5), "n": json.Number("7"), "t": true, "l": []string{"x", "", "y"},
		"m": map[string]string{"k": "v", "empty": ""}, "gone": map[string]any{"x": ""}}
	if err := c.Do(context.Background(), "test", http.MethodPost, "/x", nil, body, nil); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"big": json.Number("1234567"), "half": json.Number("0.5"), "n": json.Number("7"), "t": json.Number("1"),
		"l": map[string]any{"0": "x", "2": "y"}, "m": map[string]any{"k": "v"}}
	if got := api.last(); !reflect.DeepEqual(got.Body, want) {
		t.Errorf("body = %#v\nwant %#v", got.Body, want)
	}
}

func TestSuccessField(t *testing.T) {
	tests := []struct {
		success string
		want    string // "ok", "api" or "decode"
	}{
		{`true`, "ok"}, {`1`, "ok"}, {`"1"`, "ok"}, {`"true"`, "ok"},
		{`false`, "api"}, {`0`, "api"}, {`"0"`, "api"}, {`"false"`, "api"},
		{``, "decode"}, {`null`, "decode"}, {`"yes"`, "decode"}, {`2`, "decode"}, {`{}`, "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.success, func(t *testing.T) {
			body := `{"message":"m"}`
			if tt.success != "" {
				body = `{"success":` + tt.success + `,"message":"m"}`
			}
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) { writeJSON(w, 200, body) })
			c := newAPIClient(t, api.srv.URL, nil)
			err := c.UpdateDCV(context.Background(), "s", map[string]Method{"a.example": "dns"})
			api.assertNoSecret(t, err)
			var ae *APIError
			var de *DecodeError
			switch {
			case tt.want == "ok" && err != nil:
				t.Errorf("success %s: %v", tt.success, err)
			case tt.want == "api" && !errors.As(err, &ae):
				t.Errorf("success %s: got %v, want *APIError", tt.success, err)
			case tt.want == "decode" && !errors.As(err, &de):
				t.Errorf("success %s: got %v, want *DecodeError", tt.success, err)
			}
		})
	}
}

func TestErrorReplies(t *testing.T) {
	future := apiNow.Add(30 * time.Second).Format(http.TimeFormat)
	tests := []struct {
		name   string
		status int
		header map[string]string
		body   string
		call   string // "reissue" (default) or "detail"
		check  func(t *testing.T, err error)
	}{
		{
			name: "success false with error_code", status: 200,
			body: `{"success":false,"message":"balance too low","error_code":"INSUFFICIENT_BALANCE"}`,
			check: func(t *testing.T, err error) {
				ae := wantAPIError(t, err)
				if ae.Code != "INSUFFICIENT_BALANCE" || ae.Message != "balance too low" || ae.StatusCode != 200 || Retryable(err) {
					t.Errorf("%#v, retryable %v", ae, Retryable(err))
				}
				wantText(t, err, "reseller reissue: refused (HTTP 200, INSUFFICIENT_BALANCE): balance too low")
			},
		},
		{
			name: "422 with field errors", status: 422,
			body: `{"message":"The given data was invalid.","error_code":"INVALID","errors":{"csr":["must be a CSR"],"domain_dcv.a":"bad method"}}`,
			check: func(t *testing.T, err error) {
				ae := wantAPIError(t, err)
				want := map[string][]string{"csr": {"must be a CSR"}, "domain_dcv.a": {"bad method"}}
				if !reflect.DeepEqual(ae.FieldErrors, want) || Retryable(err) {
					t.Errorf("FieldErrors = %v, retryable %v", ae.FieldErrors, Retryable(err))
				}
				wantText(t, err, "reseller reissue: refused (HTTP 422, INVALID): The given data was invalid.; csr: must be a CSR; domain_dcv.a: bad method")
			},
		},
		{
			name: "500 with an HTML page", status: 500, header: map[string]string{"Content-Type": "text/html"},
			body: "<html><body><h1>500 Internal Server Error</h1></body></html>",
			check: func(t *testing.T, err error) {
				ae := wantAPIError(t, err)
				if ae.Message != "Internal Server Error" || !Retryable(err) || RetryAfter(err) != 0 {
					t.Errorf("%#v, retryable %v", ae, Retryable(err))
				}
				wantText(t, err, "reseller reissue: failed (HTTP 500): Internal Server Error")
			},
		},
		{
			name: "502 with a page over the limit", status: 502, body: strings.Repeat("<p>bad gateway</p>", 200),
			check: func(t *testing.T, err error) {
				if ae := wantAPIError(t, err); ae.Message != "Bad Gateway" || !Retryable(err) {
					t.Errorf("%#v", ae)
				}
			},
		},
		{
			name: "429 with Retry-After seconds", status: 429, header: map[string]string{"Retry-After": "7"},
			body: `{"success":false,"message":"slow down"}`,
			check: func(t *testing.T, err error) {
				if !Retryable(err) || RetryAfter(err) != 7*time.Second {
					t.Errorf("retryable %v, RetryAfter %v", Retryable(err), RetryAfter(err))
				}
			},
		},
		{
			name: "503 with Retry-After date", status: 503, header: map[string]string{"Retry-After": future}, body: "maintenance",
			check: func(t *testing.T, err error) {
				if !Retryable(err) || RetryAfter(err) != 30*time.Second {
					t.Errorf("retryable %v, RetryAfter %v", Retryable(err), RetryAfter(err))
				}
			},
		},
		{
			name: "404 plain text", status: 404, body: "no such page",
			check: func(t *testing.T, err error) {
				if ae := wantAPIError(t, err); ae.Message != "Not Found" || Retryable(err) {
					t.Errorf("%#v, retryable %v", ae, Retryable(err))
				}
			},
		},
		{
			name: "invalid JSON", status: 200, body: "{\"success\": tru\x1b[31m",
			check: func(t *testing.T, err error) {
				de := wantDecodeError(t, err)
				if de.StatusCode != 200 || !strings.Contains(de.Snippet, `\x1b[31m`) || Retryable(err) {
					t.Errorf("%#v", de)
				}
			},
		},
		{
			name: "JSON but not an object", status: 200, body: `[1,2]`,
			check: func(t *testing.T, err error) { wantDecodeError(t, err) },
		},
		{
			name: "reply over the limit", status: 200, body: `{"success":true,"data":{"caid":"` + strings.Repeat("x", 2000) + `"}}`,
			check: func(t *testing.T, err error) {
				de := wantDecodeError(t, err)
				if !strings.Contains(err.Error(), "1024 bytes") || len(de.Snippet) > 200 {
					t.Errorf("error %q, snippet of %d bytes", err, len(de.Snippet))
				}
			},
		},
		{
			name: "no data", status: 200, body: `{"success":true,"message":"OK"}`, call: "detail",
			check: func(t *testing.T, err error) { wantDecodeError(t, err) },
		},
		{
			name: "null data", status: 200, body: `{"success":true,"data":null}`,
			check: func(t *testing.T, err error) { wantDecodeError(t, err) },
		},
		{
			name: "data is an array", status: 200, body: `{"success":true,"data":[]}`, call: "detail",
			check: func(t *testing.T, err error) { wantDecodeError(t, err) },
		},
		{
			name: "dcv is a string", status: 200, body: `{"success":true,"data":{"dcv":"x"}}`,
			check: func(t *testing.T, err error) { wantDecodeError(t, err) },
		},
		{
			name: "product list of a bad shape", status: 200, body: `{"success":true,"data":{"total":3}}`, call: "products",
			check: func(t *testing.T, err error) { wantDecodeError(t, err) },
		},
		{
			name: "server echoes the secret and signature", status: 200, body: "ECHO",
			check: func(t *testing.T, err error) {
				if ae := wantAPIError(t, err); !strings.Contains(ae.Message, "[redacted]") || ae.FieldErrors["sign"] == nil {
					t.Errorf("%#v", ae)
				}
			},
		},
		{
			name: "undecodable reply echoes the signature", status: 200, body: "ECHO-HTML",
			check: func(t *testing.T, err error) {
				if de := wantDecodeError(t, err); !strings.Contains(de.Snippet, "[redacted]") {
					t.Errorf("%#v", de)
				}
			},
		},
		{
			name: "control characters in the message", status: 400,
			body: `{"success":false,"message":"line1\nFAKE LOG LINE\u001b[2J","error_code":"BAD"}`,
			check: func(t *testing.T, err error) {
				if strings.ContainsAny(err.Error(), "\n\x1b") {
					t.Errorf("raw control characters in %q", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, seen seenRequest) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				body := tt.body
				sign := seen.Query.Get(ParamSign)
				switch body {
				case "ECHO":
					b, _ := json.Marshal(map[string]any{
						"success": false,
						"message": "bad sign " + sign + " for secret " + apiSecret + " url " + r.URL.String(),
						"errors":  map[string]any{"sign": []string{"got " + sign}},
					})
					body = string(b)
				case "ECHO-HTML":
					body = "<html>" + r.URL.RawQuery + " " + strings.ReplaceAll(sign, "/", `\/`) + "</html>"
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, body)
			})
			c := newAPIClient(t, api.srv.URL+"/api/v1", func(cfg *Config) { cfg.MaxReplyBytes = 1024 })
			var err error
			switch tt.call {
			case "detail":
				_, err = c.Detail(context.Background(), "o91bZ")
			case "products":
				_, err = c.Products(context.Background())
			default:
				_, err = c.Reissue(context.Background(), ReissueRequest{UniqueID: "u", ServiceID: "s", CSR: "csr"})
			}
			if err == nil {
				t.Fatal("no error")
			}
			api.assertNoSecret(t, err)
			tt.check(t, err)
		})
	}
}

func wantAPIError(t *testing.T, err error) *APIError {
	t.Helper()
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("got %T %v, want *APIError", err, err)
	}
	return ae
}

func wantDecodeError(t *testing.T, err error) *DecodeError {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("got %T %v, want *DecodeError", err, err)
	}
	return de
}

func wantTransportError(t *testing.T, err error) *TransportError {
	t.Helper()
	var te *TransportError
	if !errors.As(err, &te) {
		t.Fatalf("got %T %v, want *TransportError", err, err)
	}
	return te
}

func wantText(t *testing.T, err error, want string) {
	t.Helper()
	if err.Error() != want {
		t.Errorf("error text:\n got %s\nwant %s", err, want)
	}
}

func TestConnectionClosedWithoutReply(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	})
	c := newAPIClient(t, api.srv.URL, nil)
	_, err := c.Reissue(context.Background(), ReissueRequest{UniqueID: "u", ServiceID: "s", CSR: "csr"})
	api.assertNoSecret(t, err)
	te := wantTransportError(t, err)
	if te.Op != "reissue" || !Retryable(err) {
		t.Errorf("%#v, retryable %v", te, Retryable(err))
	}
	if strings.Contains(err.Error(), "?") || strings.Contains(err.Error(), ParamNonce) {
		t.Errorf("error shows the query: %s", err)
	}
}

func TestNoServerListening(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.URL
	srv.Close()
	c := newAPIClient(t, addr, nil)
	_, err := c.Detail(context.Background(), "s")
	if te := wantTransportError(t, err); !Retryable(err) || strings.Contains(err.Error(), apiSecret) {
		t.Errorf("%v, retryable %v", te, Retryable(err))
	}
}

// blockingAPI answers nothing until the client goes away.
func blockingAPI(t *testing.T, arrived chan<- struct{}) *fakeAPI {
	done := make(chan struct{})
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		if arrived != nil {
			arrived <- struct{}{}
		}
		select {
		case <-r.Context().Done():
		case <-done:
		}
	})
	t.Cleanup(func() { close(done) }) // runs before the server's Close
	return api
}

func TestTimeoutIsHonoured(t *testing.T) {
	api := blockingAPI(t, nil)
	c := newAPIClient(t, api.srv.URL, func(cfg *Config) { cfg.Timeout = 50 * time.Millisecond })
	_, err := c.Detail(context.Background(), "s")
	api.assertNoSecret(t, err)
	wantTransportError(t, err)
	if !Retryable(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%v: retryable %v, is DeadlineExceeded %v", err, Retryable(err), errors.Is(err, context.DeadlineExceeded))
	}
}

func TestCallerContextEnds(t *testing.T) {
	t.Run("cancelled before the call", func(t *testing.T) {
		api := blockingAPI(t, nil)
		c := newAPIClient(t, api.srv.URL, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := c.Detail(ctx, "s")
		wantTransportError(t, err)
		if Retryable(err) || !errors.Is(err, context.Canceled) {
			t.Errorf("%v: retryable %v", err, Retryable(err))
		}
	})
	t.Run("cancelled while waiting", func(t *testing.T) {
		arrived := make(chan struct{}, 1)
		api := blockingAPI(t, arrived)
		c := newAPIClient(t, api.srv.URL, nil)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-arrived
			cancel()
		}()
		_, err := c.Reissue(ctx, ReissueRequest{UniqueID: "u", ServiceID: "s", CSR: "csr"})
		api.assertNoSecret(t, err)
		wantTransportError(t, err)
		if Retryable(err) || !errors.Is(err, context.Canceled) {
			t.Errorf("%v: retryable %v", err, Retryable(err))
		}
	})
	t.Run("caller's deadline passed", func(t *testing.T) {
		api := blockingAPI(t, nil)
		c := newAPIClient(t, api.srv.URL, nil)
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		_, err := c.Detail(ctx, "s")
		wantTransportError(t, err)
		if Retryable(err) {
			t.Errorf("%v: retryable although the caller gave up", err)
		}
	})
}

func TestErrorsAsThroughWrapping(t *testing.T) {
	errs := []error{
		&APIError{Op: "reissue", StatusCode: 503, Message: "down", RetryAfter: 3 * time.Second},
		&TransportError{Op: "detail", Err: io.ErrUnexpectedEOF},
		&DecodeError{Op: "detail", StatusCode: 200, Err: io.ErrUnexpectedEOF},
	}
	for _, e := range errs {
		wrapped := fmt.Errorf("renew cert www: %w", fmt.Errorf("attempt 2: %w", e))
		switch e := e.(type) {
		case *APIError:
			if got := wantAPIError(t, wrapped); got != e || !Retryable(wrapped) || RetryAfter(wrapped) != 3*time.Second {
				t.Errorf("APIError lost through wrapping: %v", wrapped)
			}
		case *TransportError:
			if got := wantTransportError(t, wrapped); got != e || !Retryable(wrapped) || !errors.Is(wrapped, io.ErrUnexpectedEOF) {
				t.Errorf("TransportError lost through wrapping: %v", wrapped)
			}
		case *DecodeError:
			if got := wantDecodeError(t, wrapped); got != e || Retryable(wrapped) || !errors.Is(wrapped, io.ErrUnexpectedEOF) {
				t.Errorf("DecodeError lost through wrapping: %v", wrapped)
			}
		}
	}
	if Retryable(errors.New("plain")) || Retryable(nil) || RetryAfter(errors.New("plain")) != 0 {
		t.Error("plain errors must not be retryable")
	}
}

func TestErrorText(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&APIError{Op: "reissue", StatusCode: 422, Code: "INVALID", Message: "message", FieldErrors: map[string][]string{"csr": {"must be a CSR"}}},
			"reseller reissue: refused (HTTP 422, INVALID): message; csr: must be a CSR"},
		{&APIError{Op: "detail", StatusCode: 429, Message: "Too Many Requests", RetryAfter: 7 * time.Second},
			"reseller detail: refused (HTTP 429): Too Many Requests (retry after 7s)"},
		{&APIError{Op: "product list", StatusCode: 502, Message: "Bad Gateway"},
			"reseller product list: failed (HTTP 502): Bad Gateway"},
		{&TransportError{Op: "update-dcv", Err: io.ErrUnexpectedEOF},
			"reseller update-dcv: no reply: unexpected EOF"},
		{&DecodeError{Op: "create", StatusCode: 200, Err: errors.New("the reply is not a JSON object"), Snippet: "<html>"},
			`reseller create: cannot understand the reply (HTTP 200): the reply is not a JSON object; body starts "<html>"`},
	}
	for _, tt := range tests {
		wantText(t, tt.err, tt.want)
	}
}

func TestSanitizeReplyText(t *testing.T) {
	tests := []struct {
		in    string
		limit int
		want  string
	}{
		{"plain text", 200, "plain text"},
		{"上海市", 200, "上海市"},
		{"a\nb\r\tc\x00\x1b[2J", 200, `a\nb\r\tc\x00\x1b[2J`},
		{"\xff\xfe ok", 200, `\xff\xfe ok`},
		{`say "hi" \o/`, 200, `say \"hi\" \\o/`},
		{"\u202e reversed", 200, `\u202e reversed`},
		{"abcdefghij", 10, "abcdefghij"},
		{"abcdefghijk", 10, "abcdefg..."},
		{"上海市上海市", 10, "上海..."},
	}
	for _, tt := range tests {
		got := sanitizeReplyText(tt.in, tt.limit)
		if got != tt.want {
			t.Errorf("sanitizeReplyText(%q, %d) = %q, want %q", tt.in, tt.limit, got, tt.want)
		}
		if len(got) > tt.limit {
			t.Errorf("sanitizeReplyText(%q, %d) is %d bytes long", tt.in, tt.limit, len(got))
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-3", 0},
		{"", 0},
		{"soon", 0},
		{apiNow.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{apiNow.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"99999999999999", maxRetryAfter},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, apiNow); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	good := Config{BaseURL: "https://api.example/api/v1", AccessKeyID: "AKID", AccessKeySecret: apiSecret}
	tests := []struct {
		name   string
		mutate func(*Config)
		field  string
	}{
		{"no base URL", func(c *Config) { c.BaseURL = "" }, "BaseURL"},
		{"relative base URL", func(c *Config) { c.BaseURL = "/api/v1" }, "BaseURL"},
		{"ftp base URL", func(c *Config) { c.BaseURL = "ftp://api.example/api/v1" }, "BaseURL"},
		{"no host", func(c *Config) { c.BaseURL = "https:///api/v1" }, "BaseURL"},
		{"unparsable", func(c *Config) { c.BaseURL = "https://api.example:port/" }, "BaseURL"},
		{"with query", func(c *Config) { c.BaseURL = "https://api.example/api/v1?x=1" }, "BaseURL"},
		{"with credentials", func(c *Config) { c.BaseURL = "https://u:" + apiSecret + "@api.example/" }, "BaseURL"},
		{"no key id", func(c *Config) { c.AccessKeyID = " " }, "AccessKeyID"},
		{"no secret", func(c *Config) { c.AccessKeySecret = "" }, "AccessKeySecret"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, "Timeout"},
		{"negative reply limit", func(c *Config) { c.MaxReplyBytes = -1 }, "MaxReplyBytes"},
		{"negative rate", func(c *Config) { c.MaxRequestsPerSecond = -1 }, "MaxRequestsPerSecond"},
		{"NaN rate", func(c *Config) { c.MaxRequestsPerSecond = math.NaN() }, "MaxRequestsPerSecond"},
		{"infinite rate", func(c *Config) { c.MaxRequestsPerSecond = math.Inf(1) }, "MaxRequestsPerSecond"},
		{"rate and limiter", func(c *Config) { c.MaxRequestsPerSecond = 5; c.Limiter = &countingLimiter{} }, "Limiter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mutate(&cfg)
			c, err := New(cfg)
			if err == nil {
				t.Fatalf("New accepted %v", cfg)
			}
			if c != nil {
				t.Error("New returned a client with an error")
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("error %q does not name %s", err, tt.field)
			}
			if strings.Contains(err.Error(), apiSecret) {
				t.Errorf("error leaks the secret: %s", err)
			}
		})
	}
	if _, err := New(good); err != nil {
		t.Fatalf("New refused a good config: %v", err)
	}
}

func TestClientAndConfigDoNotPrintTheSecret(t *testing.T) {
	cfg := Config{BaseURL: "https://api.example/api/v1", AccessKeyID: "AKID", AccessKeySecret: apiSecret}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c)} {
		if strings.Contains(s, apiSecret) {
			t.Errorf("printed: %s", s)
		}
	}
}

func TestRefusedLocally(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) { writeJSON(w, 200, `{"success":true}`) })
	c := newAPIClient(t, api.srv.URL, nil)
	ctx := context.Background()
	dcv := map[string]Method{"a.example": "dns"}
	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"reissue without unique_id", func() error {
			_, err := c.Reissue(ctx, ReissueRequest{ServiceID: "s", DomainDCV: dcv})
			return err
		}, "unique_id"},
		{"reissue with a blank unique_id", func() error {
			_, err := c.Reissue(ctx, ReissueRequest{UniqueID: "  ", ServiceID: "s", DomainDCV: dcv})
			return err
		}, "unique_id"},
		{"reissue without service_id", func() error {
			_, err := c.Reissue(ctx, ReissueRequest{UniqueID: "u", DomainDCV: dcv})
			return err
		}, "service_id"},
		{"reissue without domains or CSR", func() error {
			_, err := c.Reissue(ctx, ReissueRequest{UniqueID: "u", ServiceID: "s"})
			return err
		}, "neither domain_dcv nor csr"},
		{"reissue with an empty method", func() error {
			_, err := c.Reissue(ctx, ReissueRequest{UniqueID: "u", ServiceID: "s", DomainDCV: map[string]Method{"a.example": "dns", "b.example": ""}})
			return err
		}, "domain_dcv[b.example]"},
		{"reissue with an empty domain", func() error {
			_, err := c.Reissue(ctx, ReissueRequest{UniqueID: "u", ServiceID: "s", DomainDCV: map[string]Method{"": "dns"}})
			return err
		}, "empty domain"},
		{"create without unique_id", func() error {
			_, err := c.Create(ctx, CreateRequest{ProductID: "p"})
			return err
		}, "unique_id"},
		{"create without product_id", func() error {
			_, err := c.Create(ctx, CreateRequest{UniqueID: "u"})
			return err
		}, "product_id"},
		{"update-dcv without domains", func() error { return c.UpdateDCV(ctx, "s", nil) }, "domain_dcv"},
		{"update-dcv without service_id", func() error { return c.UpdateDCV(ctx, "", dcv) }, "service_id"},
		{"validate-dcv without service_id", func() error {
			_, err := c.ValidateDCV(ctx, "")
			return err
		}, "service_id"},
		{"detail without service_id", func() error {
			_, err := c.Detail(ctx, "")
			return err
		}, "service_id"},
		{"reserved parameter", func() error {
			return c.Do(ctx, "x", http.MethodPost, "/x", nil, map[string]any{ParamSign: "forged"}, nil)
		}, "reserved"},
		{"GET with a body", func() error {
			return c.Do(ctx, "x", http.MethodGet, "/x", nil, map[string]any{"a": "b"}, nil)
		}, "no body"},
		{"repeated query parameter", func() error {
			return c.Do(ctx, "x", http.MethodGet, "/x", url.Values{"a": {"1", "2"}}, nil, nil)
		}, "exactly one value"},
		{"parameter in query and body", func() error {
			return c.Do(ctx, "x", http.MethodPost, "/x", url.Values{"a": {"1"}}, map[string]any{"a": "2"}, nil)
		}, "both"},
		{"unsupported type", func() error {
			return c.Do(ctx, "x", http.MethodPost, "/x", nil, map[string]any{"a": struct{}{}}, nil)
		}, "unsupported type"},
		{"not a finite number", func() error {
			return c.Do(ctx, "x", http.MethodPost, "/x", nil, map[string]any{"a": math.NaN()}, nil)
		}, "finite"},
		{"relative path", func() error {
			return c.Do(ctx, "x", http.MethodPost, "x", nil, nil, nil)
		}, "start with /"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			var ae *APIError
			var te *TransportError
			var de *DecodeError
			if errors.As(err, &ae) || errors.As(err, &te) || errors.As(err, &de) || Retryable(err) {
				t.Errorf("a local refusal looks like a reply: %T %v", err, err)
			}
			api.assertNoSecret(t, err)
		})
	}
	if n := api.requests(); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
}

func TestDefaultNonceAndClockUnderConcurrency(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		writeJSON(w, 200, `{"success":true,"data":{"service_id":"s"}}`)
	})
	c, err := New(Config{BaseURL: api.srv.URL + "/api/v1", AccessKeyID: apiKeyID, AccessKeySecret: apiSecret})
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			if _, err := c.Detail(context.Background(), "s"); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		api.assertNoSecret(t, err)
		t.Error(err)
	}
	hexNonce := regexp.MustCompile(`^[0-9a-f]{32}$`)
	nonces := map[string]bool{}
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.seen) != n {
		t.Fatalf("%d verified requests, want %d", len(api.seen), n)
	}
	for _, s := range api.seen {
		nonce := s.Query.Get(ParamNonce)
		if !hexNonce.MatchString(nonce) || nonces[nonce] {
			t.Errorf("nonce %q is not 32 fresh hex characters", nonce)
		}
		nonces[nonce] = true
		ts, err := ParseTimestamp(s.Query.Get(ParamTimestamp))
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(ts); d > TimestampSkew || d < -TimestampSkew {
			t.Errorf("timestamp %s is %s away from now", s.Query.Get(ParamTimestamp), d)
		}
	}
}
