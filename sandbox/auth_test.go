package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
	"go.uber.org/zap/zapcore"
)

func TestAPIAuthRefusals(t *testing.T) {
	h := sbStart(t, "", nil)
	now := h.clock.Now()
	// signedList is a product/list request signed as it should be, then
	// changed by change.
	signedList := func(change func(r *sbRequest)) func() sbRequest {
		return func() sbRequest {
			r := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
			h.sign(&r, h.id, h.secret, now)
			change(&r)
			return r
		}
	}
	// authInBody is a signed update-dcv request whose authentication
	// parameters named by keys are moved from the query into the JSON body and the
	// rest dropped.
	authInBody := func(keys ...string) func() sbRequest {
		return func() sbRequest {
			r := sbRequest{method: http.MethodPost, path: reseller.PathUpdateDCV,
				body: map[string]any{"service_id": "nowild", "domain_dcv": map[string]string{"a.example.com": "dns"}}}
			h.sign(&r, h.id, h.secret, now)
			for _, k := range keys {
				r.body[k] = r.query.Get(k)
			}
			r.query = url.Values{}
			return r
		}
	}
	tests := []struct {
		name   string
		build  func() sbRequest
		status int
		code   string
	}{
		{"valid", signedList(func(*sbRequest) {}), http.StatusOK, ""},
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
		{"missing nonce", signedList(func(r *sbRequest) { r.query.Del(reseller.ParamNonce) }),
			http.StatusUnauthorized, CodeMissingParameter},
		{"missing sign", signedList(func(r *sbRequest) { r.query.Del(reseller.ParamSign) }),
			http.StatusUnauthorized, CodeMissingParameter},
		{"sign in the body instead of the query", func() sbRequest {
			r := sbRequest{method: http.MethodPost, path: reseller.PathUpdateDCV,
				body: map[string]any{"service_id": "nowild", "domain_dcv": map[string]string{"a.example.com": "dns"}}}
			h.sign(&r, h.id, h.secret, now)
			r.body[reseller.ParamSign] = r.query.Get(reseller.ParamSign)
			r.query.Del(reseller.ParamSign)
			return r
		}, http.StatusOK, CodeOrderNotPending}, // authenticated: refused for the order only
		{"authentication in the JSON body, as the PHP SDK sends it",
			authInBody(reseller.ParamAccessKeyID, reseller.ParamNonce, reseller.ParamTimestamp, reseller.ParamSign),
			http.StatusOK, CodeOrderNotPending}, // authenticated: refused for the order only
		{"authentication in the JSON body without sign",
			authInBody(reseller.ParamAccessKeyID, reseller.ParamNonce, reseller.ParamTimestamp),
			http.StatusUnauthorized, CodeMissingParameter},
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
	// What the server could not sign as the client did: invalid UTF-8 (a
	// JSON body cannot carry it, a query can), a name PHP orders as a
	// number.
	r := send(http.MethodGet, apiPrefix+reseller.PathDetail, "?service_id=a%FF", "")
	r.mustRefuse(t, http.StatusBadRequest, CodeInvalidRequest)
	mustContain(t, r.env.Message, `parameter "service_id": invalid UTF-8`)
	r = send(http.MethodPost, apiPrefix+reseller.PathReissue, "", `{"domain_dcv":{"1.5":"dns"}}`)
	r.mustRefuse(t, http.StatusBadRequest, CodeInvalidRequest)
	mustContain(t, r.env.Message, `parameter "domain_dcv[1.5]"`)
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

// The refusals of missing authentication parameters say where they may be:
// the Go SDK sends them in the query, the PHP SDK in the JSON body.
func TestAPIMissingAuthMessage(t *testing.T) {
	h := sbStart(t, "", nil)
	r, err := h.send(context.Background(), sbRequest{method: http.MethodGet, path: reseller.PathProductList, query: url.Values{}})
	if err != nil {
		t.Fatal(err)
	}
	r.mustRefuse(t, http.StatusUnauthorized, CodeMissingParameter)
	mustContain(t, r.env.Message, "in the query or the JSON body", "accessKeyId, nonce, timestamp, sign")
}

// sbReissuePath is the reissue path as the server sees it, signed over.
const sbReissuePath = apiPrefix + reseller.PathReissue

// untrimmedReissue is a reissue whose CSR ends in a newline (as
// pem.EncodeToMemory writes it), with its authentication parameters, and
// the string to sign written out by hand over the CSR as given or trimmed.
func untrimmedReissue(t *testing.T, h *sbHarness, uid, csr string, trimmed bool) sbRequest {
	t.Helper()
	nonce := make([]byte, 16)
	rand.Read(nonce)
	r := sbRequest{method: http.MethodPost, path: reseller.PathReissue,
		query: url.Values{
			reseller.ParamAccessKeyID: {h.id},
			reseller.ParamNonce:       {hex.EncodeToString(nonce)},
			reseller.ParamTimestamp:   {reseller.FormatTimestamp(h.clock.Now())},
		},
		body: map[string]any{"unique_id": uid, "service_id": "svc", "domain_dcv": map[string]string{"a.example.com": "dns"}, "csr": csr, "renew": 0},
	}
	signedCSR := csr
	if trimmed {
		signedCSR = strings.TrimRight(csr, "\n")
	}
	toSign := sbReissuePath + "?accessKeyId=" + reseller.URLEncode(h.id) +
		"&csr=" + reseller.URLEncode(signedCSR) +
		"&domain_dcv%5Ba.example.com%5D=dns" +
		"&nonce=" + r.query.Get(reseller.ParamNonce) +
		"&renew=0&service_id=svc" +
		"&timestamp=" + reseller.URLEncode(r.query.Get(reseller.ParamTimestamp)) +
		"&unique_id=" + uid
	if !strings.HasSuffix(reseller.URLEncode(csr), "-----%0A") {
		t.Fatalf("the CSR does not end in a newline: the test proves nothing")
	}
	r.query.Set(reseller.ParamSign, reseller.Sign(h.secret, toSign))
	return r
}

// A request signed over an untrimmed value — the CSR's final newline, as
// dcvd signed it before — is refused as the servers of the family refuse
// it, with a message saying so; the same request signed over the trimmed
// input (the Node SDK sends it untrimmed) is accepted, and the endpoint
// works on the trimmed values.
func TestAPISignedOverUntrimmedValues(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "a.example.com")

	r, err := h.send(context.Background(), untrimmedReissue(t, h, "u-untrimmed", csr, false))
	if err != nil {
		t.Fatal(err)
	}
	r.mustRefuse(t, http.StatusUnauthorized, CodeSignatureInvalid)
	mustContain(t, r.env.Message, "the signature was computed over untrimmed values (csr begins or ends with whitespace", "the server signs the trimmed input", "What the server sees")
	for _, leak := range []string{"BEGIN", "accessKeyId=", h.secret} {
		if strings.Contains(r.env.Message, leak) {
			t.Errorf("the refusal shows %q: %s", leak, r.env.Message)
		}
	}
	if n := h.charges("u-untrimmed"); n != 0 {
		t.Fatalf("the refused reissue was charged %d times", n)
	}

	r, err = h.send(context.Background(), untrimmedReissue(t, h, "u-trimmed", csr, true))
	if err != nil {
		t.Fatal(err)
	}
	r.mustSucceed(t)
	if n := h.charges("u-trimmed"); n != 1 {
		t.Fatalf("the reissue signed over the trimmed input was charged %d times, want once", n)
	}
}

// A wrong secret says what to check and shows no string to sign (it holds
// the CSR); the string to sign is logged at debug level only.
func TestAPISignatureMismatchMessage(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "a.example.com")
	req := sbRequest{method: http.MethodPost, path: reseller.PathReissue,
		body: map[string]any{"unique_id": "u1", "service_id": "svc", "domain_dcv": map[string]string{"a.example.com": "dns"}, "csr": csr}}
	h.sign(&req, h.id, "not-the-secret", h.clock.Now())
	r, err := h.send(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	r.mustRefuse(t, http.StatusUnauthorized, CodeSignatureInvalid)
	mustContain(t, r.env.Message, "check access_key_secret / access_key_id")
	for _, leak := range []string{"BEGIN", "accessKeyId=", "untrimmed"} {
		if strings.Contains(r.env.Message, leak) {
			t.Errorf("the refusal shows %q: %s", leak, r.env.Message)
		}
	}
	logged := h.logs.FilterMessage("signature mismatch").All()
	if len(logged) != 1 || logged[0].Level != zapcore.DebugLevel {
		t.Fatalf("want one debug entry with the string to sign, got %v", logged)
	}
	if sts, _ := logged[0].ContextMap()["string_to_sign"].(string); !strings.HasPrefix(sts, sbReissuePath+"?accessKeyId=") || !strings.Contains(sts, "&csr=-----BEGIN") {
		t.Errorf("logged string to sign %q", sts)
	}
}

// The real client against the sandbox, which verifies over the trimmed
// input: a reissue with a CSR ending in a newline and untrimmed values is
// accepted only if the client signs what the server sees, and the
// endpoint works on the trimmed values (the ledger's unique_id).
func TestClientRoundTripSignsTrimmedValues(t *testing.T) {
	h := sbStart(t, "", nil)
	_, csr := sbCSR(t, "a.example.com")
	c, err := reseller.New(reseller.Config{BaseURL: h.ts.URL + apiPrefix, AccessKeyID: h.id, AccessKeySecret: h.secret, Now: h.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.Reissue(context.Background(), reseller.ReissueRequest{
		UniqueID: " u-rt\t", ServiceID: "svc\n", CSR: csr,
		DomainDCV: map[string]reseller.Method{"a.example.com": " dns "},
	})
	if err != nil {
		t.Fatalf("the client's reissue with a newline-terminated CSR was refused: %v", err)
	}
	if o.ServiceID != "svc" {
		t.Errorf("order for service %q", o.ServiceID)
	}
	if n := h.charges("u-rt"); n != 1 {
		t.Errorf("unique_id u-rt (trimmed) charged %d times, want once; ledger %+v", n, h.srv.Ledger())
	}
	// The endpoint saw the trimmed method: the order asks for dns.
	if e := dcvEntry(t, *o, "a.example.com"); e.Type != "dns" {
		t.Errorf("a.example.com validated by %q, want dns", e.Type)
	}
}
