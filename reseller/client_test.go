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
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

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
	api := newSucceedingAPI(t)
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
	api := newSucceedingAPI(t)
	c := newAPIClient(t, api.srv.URL, nil)
	ctx := context.Background()
	dcv := map[string]Method{"a.example": "dns"}
	tests := []refusedCall{
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
