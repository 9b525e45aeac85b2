package reseller

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A reply with thousands of messages for one field must not make an error
// of megabytes: a hostile server could flood the logs through it.
func TestAPIErrorBoundsMessagesPerField(t *testing.T) {
	msgs := make([]string, 5000)
	for i := range msgs {
		msgs[i] = strings.Repeat("x", 100)
	}
	e := &APIError{Op: "reissue", StatusCode: 422, FieldErrors: map[string][]string{"csr": msgs}}
	got := e.Error()
	if len(got) > 2000 {
		t.Fatalf("error of %d bytes for one field's messages", len(got))
	}
	if !strings.Contains(got, "and 4990 more") {
		t.Fatalf("error %q does not say how many messages were left out", got[:200])
	}
	if len(e.FieldErrors["csr"]) != 5000 {
		t.Fatal("Error changed the messages it was given")
	}
}

// CloseIdleConnections ends the keep-alive connections a finished call
// left open: a daemon that stops or replaces its client leaves none.
func TestCloseIdleConnections(t *testing.T) {
	closed := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"success":true,"data":[]}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			select {
			case closed <- struct{}{}:
			default:
			}
		}
	}
	srv.Start()
	defer srv.Close()
	c, err := New(Config{BaseURL: srv.URL + "/api/v1", AccessKeyID: "id", AccessKeySecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Products(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
		t.Fatal("the connection closed before CloseIdleConnections: the test shows nothing")
	default:
	}
	c.CloseIdleConnections()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the idle connection is still open after CloseIdleConnections")
	}
}

// A refused signature or key says where to look, and only then: a clock or
// a replayed nonce is not the key pair's fault.
func TestCredentialsHint(t *testing.T) {
	tests := []struct {
		name string
		err  *APIError
		hint bool
	}{
		{"401 signature", &APIError{Op: "detail", StatusCode: 401, Code: "SIGNATURE_INVALID", Message: "the signature does not match"}, true},
		{"401 unknown key", &APIError{Op: "detail", StatusCode: 401, Code: "UNKNOWN_ACCESS_KEY"}, true},
		{"401 without a code", &APIError{Op: "detail", StatusCode: 401, Message: "Unauthorized"}, true},
		{"200 with a sign code", &APIError{Op: "reissue", StatusCode: 200, Code: "INVALID_SIGN", Message: "sign error"}, true},
		{"200 with accessKeyId code", &APIError{Op: "reissue", StatusCode: 200, Code: "AccessKeyId-Not-Found"}, true},
		{"200 with a message in Chinese", &APIError{Op: "reissue", StatusCode: 200, Message: "签名错误"}, true},
		{"401 signed over untrimmed values", &APIError{Op: "reissue", StatusCode: 401, Code: "SIGNATURE_INVALID", Message: "the signature was computed over untrimmed values (csr …)"}, false},
		{"401 timestamp", &APIError{Op: "detail", StatusCode: 401, Code: "TIMESTAMP_EXPIRED", Message: "timestamp is 1h from the server's clock"}, false},
		{"401 nonce", &APIError{Op: "detail", StatusCode: 401, Code: "NONCE_REUSED"}, false},
		{"401 timestamp without a code", &APIError{Op: "detail", StatusCode: 401, Message: "Timestamp expired"}, false},
		{"403 privilege", &APIError{Op: "reissue", StatusCode: 403, Code: "DO_NOT_HAVE_RIVILEGE"}, false},
		{"422 assigned", &APIError{Op: "reissue", StatusCode: 422, Code: "ASSIGNED", Message: "invalid"}, false},
		{"200 balance", &APIError{Op: "reissue", StatusCode: 200, Code: "INSUFFICIENT_BALANCE"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.CredentialsRefused(); got != tt.hint {
				t.Errorf("CredentialsRefused = %t, want %t", got, tt.hint)
			}
			if got := strings.Contains(tt.err.Error(), "check access_key_secret / access_key_id"); got != tt.hint {
				t.Errorf("hint in %q: %t, want %t", tt.err.Error(), got, tt.hint)
			}
		})
	}
	e := &APIError{Op: "reissue", StatusCode: 401, Code: "SIGNATURE_INVALID", Message: "no match", RetryAfter: 0}
	if got, want := e.Error(), "reseller reissue: refused (HTTP 401, SIGNATURE_INVALID): no match; check access_key_secret / access_key_id"; got != want {
		t.Errorf("Error() = %q\nwant %q", got, want)
	}
	// A server whose message already gives the hint does not get it twice.
	e.Message = "the signature does not match: check access_key_secret / access_key_id (see the server's log)"
	if got := e.Error(); strings.Count(got, "check access_key_secret") != 1 {
		t.Errorf("Error() = %q, want the hint once", got)
	}
}

// Through the client: a 401 says what to check, and neither the secret,
// the signature nor the string to sign (which holds the CSR) is in the
// error.
func TestWrongSecretErrorSaysWhatToCheck(t *testing.T) {
	var sign string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sign = r.URL.Query().Get(ParamSign)
		writeJSON(w, http.StatusUnauthorized, `{"success":false,"message":"signature mismatch, got `+sign+`","error_code":"SIGNATURE_INVALID"}`)
	}))
	defer srv.Close()
	var toSign string
	c := newAPIClient(t, srv.URL+"/api/v1", func(cfg *Config) { cfg.DebugStringToSign = func(_, s string) { toSign = s } })
	_, err := c.Reissue(t.Context(), ReissueRequest{UniqueID: "u", ServiceID: "s", CSR: vectorCSR + "\n", DomainDCV: map[string]Method{"a.example": "dns"}})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !strings.Contains(msg, "check access_key_secret / access_key_id") {
		t.Errorf("error %q does not say what to check", msg)
	}
	for _, leak := range []string{apiSecret, sign, toSign, "MIIB", "accessKeyId="} {
		if leak != "" && strings.Contains(msg, leak) {
			t.Errorf("error %q shows %q", msg, leak)
		}
	}
	if toSign == "" || !strings.Contains(toSign, "MIIB") {
		t.Errorf("DebugStringToSign got %q", toSign)
	}
}
