package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

func TestAPIAuthRefusals(t *testing.T) {
	h := sbStart(t, "", nil)
	now := h.clock.Now()
	tests := []struct {
		name   string
		build  func() sbRequest
		status int
		code   string
	}{
		{"valid", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			h.sign(&r, h.id, h.secret, now)
			return r
		}, http.StatusOK, ""},
		{"wrong secret", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			h.sign(&r, h.id, "not-the-secret", now)
			return r
		}, http.StatusUnauthorized, CodeSignatureInvalid},
		{"body altered after signing", func() sbRequest {
			r := sbRequest{method: http.MethodPost, path: reseller.PathReissue}
			r.body = map[string]any{"unique_id": "u1", "service_id": "svc", "domain_dcv": map[string]string{"a.example.com": "dns"}}
			h.sign(&r, h.id, h.secret, now)
			r.body["domain_dcv"] = map[string]string{"a.example.com": "dns", "b.example.com": "dns"}
			return r
		}, http.StatusUnauthorized, CodeSignatureInvalid},
		{"query altered after signing", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathDetail, query: url.Values{"service_id": {"svc"}}}
			h.sign(&r, h.id, h.secret, now)
			r.query.Set("service_id", "nowild")
			return r
		}, http.StatusUnauthorized, CodeSignatureInvalid},
		{"signed for another path", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathDetail, query: url.Values{"service_id": {"svc"}}}
			h.sign(&r, h.id, h.secret, now)
			r.path = reseller.PathProductList
			return r
		}, http.StatusUnauthorized, CodeSignatureInvalid},
		{"unknown key", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			h.sign(&r, "AKSBSOMEONEELSE", h.secret, now)
			return r
		}, http.StatusUnauthorized, CodeUnknownAccessKey},
		{"stale timestamp", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			h.sign(&r, h.id, h.secret, now.Add(-reseller.TimestampSkew-time.Minute))
			return r
		}, http.StatusUnauthorized, CodeTimestampExpired},
		{"future timestamp", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			h.sign(&r, h.id, h.secret, now.Add(reseller.TimestampSkew+time.Minute))
			return r
		}, http.StatusUnauthorized, CodeTimestampExpired},
		{"timestamp in UTC instead of UTC+8", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			// A client that formats UTC with the literal Z is eight hours off.
			h.signAs(&r, h.id, h.secret, now.UTC().Format(reseller.TimestampLayout), "n-utc")
			return r
		}, http.StatusUnauthorized, CodeTimestampExpired},
		{"malformed timestamp", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			h.signAs(&r, h.id, h.secret, now.Format(time.RFC1123), "n-rfc1123")
			return r
		}, http.StatusUnauthorized, CodeTimestampInvalid},
		{"missing nonce", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			h.sign(&r, h.id, h.secret, now)
			r.query.Del(reseller.ParamNonce)
			return r
		}, http.StatusUnauthorized, CodeMissingParameter},
		{"missing sign", func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			h.sign(&r, h.id, h.secret, now)
			r.query.Del(reseller.ParamSign)
			return r
		}, http.StatusUnauthorized, CodeMissingParameter},
		{"sign in the body instead of the query", func() sbRequest {
			r := sbRequest{method: http.MethodPost, path: reseller.PathUpdateDCV,
				body: map[string]any{"service_id": "nowild", "domain_dcv": map[string]string{"a.example.com": "dns"}}}
			h.sign(&r, h.id, h.secret, now)
			r.body[reseller.ParamSign] = r.query.Get(reseller.ParamSign)
			r.query.Del(reseller.ParamSign)
			return r
		}, http.StatusOK, CodeOrderNotPending}, // authenticated: refused for the order only
		{"no authentication at all", func() sbRequest {
			return sbRequest{method: http.MethodGet, path: reseller.PathProductList, query: url.Values{}}
		}, http.StatusUnauthorized, CodeMissingParameter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := h.send(context.Background(), tt.build())
			if err != nil {
				t.Fatal(err)
			}
			if tt.code == "" {
				r.mustSucceed(t)
				return
			}
			r.mustRefuse(t, tt.status, tt.code)
		})
	}
	if n := len(h.srv.Ledger()); n != 0 {
		t.Errorf("refused requests charged: %d ledger entries", n)
	}
}

func TestAPINonceReused(t *testing.T) {
	h := sbStart(t, "", nil)
	r := sbRequest{method: http.MethodGet, path: reseller.PathDetail, query: url.Values{"service_id": {"svc"}}}
	h.sign(&r, h.id, h.secret, h.clock.Now())
	first, err := h.send(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	first.mustSucceed(t)
	again, err := h.send(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	again.mustRefuse(t, http.StatusUnauthorized, CodeNonceReused)

	// A nonce is forgotten once no timestamp could make its request valid
	// again; the same nonce is then accepted with a fresh timestamp.
	h.clock.Advance(2*reseller.TimestampSkew + time.Second)
	r2 := sbRequest{method: http.MethodGet, path: reseller.PathDetail, query: url.Values{"service_id": {"svc"}}}
	h.signAs(&r2, h.id, h.secret, reseller.FormatTimestamp(h.clock.Now()), r.query.Get(reseller.ParamNonce))
	later, err := h.send(context.Background(), r2)
	if err != nil {
		t.Fatal(err)
	}
	later.mustSucceed(t)
}

func TestAPIRequestShape(t *testing.T) {
	h := sbStart(t, "", nil)
	send := func(method, path, query, body string) sbReply {
		t.Helper()
		req, err := http.NewRequest(method, h.ts.URL+path+query, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r sbReply
		r.status = resp.StatusCode
		json.NewDecoder(resp.Body).Decode(&r.env)
		return r
	}
	send(http.MethodGet, apiPrefix+"/certificate/nothing", "", "").mustRefuse(t, http.StatusNotFound, CodeNotFound)
	send(http.MethodGet, apiPrefix+reseller.PathReissue, "", "").mustRefuse(t, http.StatusMethodNotAllowed, CodeMethodNotAllowed)
	send(http.MethodPost, apiPrefix+reseller.PathReissue, "", "[1,2]").mustRefuse(t, http.StatusBadRequest, CodeInvalidRequest)
	send(http.MethodPost, apiPrefix+reseller.PathReissue, "", `{"a":1} {"b":2}`).mustRefuse(t, http.StatusBadRequest, CodeInvalidRequest)
	send(http.MethodPost, apiPrefix+reseller.PathReissue, "", `{"csr":"`+strings.Repeat("A", maxRequestBody)+`"}`).
		mustRefuse(t, http.StatusRequestEntityTooLarge, CodeInvalidRequest)
	send(http.MethodGet, apiPrefix+reseller.PathDetail, "?service_id=a&service_id=b", "").mustRefuse(t, http.StatusBadRequest, CodeInvalidRequest)
}

func TestAPIProductList(t *testing.T) {
	h := sbStart(t, "", nil)
	r := h.call(http.MethodGet, reseller.PathProductList, nil)
	r.mustSucceed(t)
	var products []reseller.Product
	if err := json.Unmarshal(r.env.Data, &products); err != nil {
		t.Fatal(err)
	}
	if len(products) != len(sbProducts) {
		t.Fatalf("got %d products, want %d", len(products), len(sbProducts))
	}
	got := fmt.Sprintf("%+v", products[0])
	if products[0].ID != "multi" || products[0].MaxDomains != 3 || !products[0].Wildcard || products[0].Price != 50 {
		t.Errorf("first product %s", got)
	}
}

func TestAPINeverLogsSecrets(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "a.example.com")
	h.reissue("u1", "svc", map[string]string{"a.example.com": "dns"}, csr).mustSucceed(t)
	h.reissue("u1", "svc", map[string]string{"a.example.com": "dns"}, csr).mustSucceed(t)
	r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
	h.sign(&r, h.id, "wrong", h.clock.Now())
	if _, err := h.send(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	h.updateDCV("svc", map[string]string{"a.example.com": "dns"}).mustSucceed(t)

	if h.logs.Len() == 0 {
		t.Fatal("nothing was logged; the check below would prove nothing")
	}
	h.mu.Lock()
	signs := append([]string(nil), h.signs...)
	h.mu.Unlock()
	for _, e := range h.logs.All() {
		text := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(text, h.secret) {
			t.Errorf("the secret is logged: %s", text)
		}
		for _, s := range signs {
			if strings.Contains(text, s) {
				t.Errorf("a signature is logged: %s", text)
			}
		}
	}
}
