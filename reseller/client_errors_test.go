package reseller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"
)

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
	return wantErrorAs[*APIError](t, err, "*APIError")
}

func wantDecodeError(t *testing.T, err error) *DecodeError {
	t.Helper()
	return wantErrorAs[*DecodeError](t, err, "*DecodeError")
}

func wantTransportError(t *testing.T, err error) *TransportError {
	t.Helper()
	return wantErrorAs[*TransportError](t, err, "*TransportError")
}

// wantErrorAs fails the test unless err is, or wraps, an E (named typeName
// in the failure), and returns it.
func wantErrorAs[E error](t *testing.T, err error, typeName string) E {
	t.Helper()
	var target E
	if !errors.As(err, &target) {
		t.Fatalf("got %T %v, want %s", err, err, typeName)
	}
	return target
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
