package httpchallenge

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

// serve starts a test server and returns the Checker that reaches it for
// testHost.
func serve(t *testing.T, h http.HandlerFunc) (*httptest.Server, Checker) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, Checker{Connect: srv.Listener.Addr().String()}
}

func TestCheck(t *testing.T) {
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
		w.Write([]byte(testContent))
	}))
	defer target.Close()
	targetURL := target.URL + reseller.PKIValidationPath + testName

	tests := []struct {
		name    string
		handler http.HandlerFunc
		wantErr []string // substrings; none means success
	}{
		{
			name:    "exact content",
			handler: func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(testContent)) },
		},
		{
			name:    "extra trailing newline",
			handler: func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(testContent + "\r\n")) },
		},
		{
			name:    "trailing newline missing",
			handler: func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(strings.TrimSpace(testContent))) },
		},
		{
			name: "wrong content",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte("<html>welcome</html>"))
			},
			wantErr: []string{"content differs", `served 20 bytes "<html>welcome</html>"`, "want 62 bytes"},
		},
		{
			name: "inner whitespace differs",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte(strings.ReplaceAll(testContent, "\n", "\r\n")))
			},
			wantErr: []string{"content differs"},
		},
		{
			name:    "leading whitespace",
			handler: func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(" " + testContent)) },
			wantErr: []string{"content differs"},
		},
		{
			name:    "empty body",
			handler: func(w http.ResponseWriter, r *http.Request) {},
			wantErr: []string{"content differs", "served 0 bytes"},
		},
		{
			name: "huge body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte(strings.Repeat("x", 100<<10)))
			},
			wantErr: []string{"content differs", "more than 64 KiB"},
		},
		{
			name:    "not found",
			handler: func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
			wantErr: []string{"http://" + testHost + reseller.PKIValidationPath + testName, "HTTP 404"},
		},
		{
			name: "forbidden",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "no", http.StatusForbidden)
			},
			wantErr: []string{"HTTP 403 Forbidden"},
		},
		{
			name: "204 is not the file",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
			},
			wantErr: []string{"HTTP 204"},
		},
		{
			name: "redirect elsewhere",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, targetURL, http.StatusFound)
			},
			wantErr: []string{"HTTP 302 redirect to " + targetURL, "redirects are not followed"},
		},
		{
			name: "permanent redirect to https",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Location", "https://"+testHost+r.URL.Path)
				w.WriteHeader(http.StatusMovedPermanently)
			},
			wantErr: []string{"HTTP 301 redirect to https://" + testHost + reseller.PKIValidationPath + testName, "redirects are not followed"},
		},
		{
			name: "relative redirect is shown resolved",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Location", "/index.html")
				w.WriteHeader(http.StatusTemporaryRedirect)
			},
			wantErr: []string{"HTTP 307 redirect to http://" + testHost + "/index.html"},
		},
		{
			name: "redirect without Location",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusFound)
			},
			wantErr: []string{"HTTP 302 redirect without a Location"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c := serve(t, tt.handler)
			err := c.Check(context.Background(), instr(testName, testContent))
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check passed")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), "via "+srv.Listener.Addr().String()) {
				t.Errorf("error %q does not say where it connected", err)
			}
		})
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("a redirect was followed: the target was fetched %d times", n)
	}
}

func TestCheckSendsValidatedName(t *testing.T) {
	tests := []struct {
		name    string
		newSrv  func(http.Handler) *httptest.Server
		scheme  string
		wantSNI string
	}{
		{"http", httptest.NewServer, "http", ""},
		{"https", httptest.NewTLSServer, "https", testHost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var host, path, sni, method string
			srv := tt.newSrv(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				host, path, method = r.Host, r.URL.Path, r.Method
				if r.TLS != nil {
					sni = r.TLS.ServerName
				}
				w.Write([]byte(testContent))
			}))
			defer srv.Close()
			f := instr(testName, testContent)
			f.Scheme = tt.scheme
			f.URL = tt.scheme + "://" + testHost + f.Path
			c := Checker{Connect: srv.Listener.Addr().String()}
			if err := c.Check(context.Background(), f); err != nil {
				t.Fatal(err)
			}
			if host != testHost {
				t.Errorf("Host header %q, want %q", host, testHost)
			}
			if path != f.Path || method != http.MethodGet {
				t.Errorf("request %s %q, want GET %q", method, path, f.Path)
			}
			if sni != tt.wantSNI {
				t.Errorf("SNI %q, want %q", sni, tt.wantSNI)
			}
		})
	}
}

// The environment's proxy would fetch from elsewhere than the CA does.
func TestCheckIgnoresProxyEnvironment(t *testing.T) {
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("http_proxy", "http://127.0.0.1:1")
	var requestURI string
	_, c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		requestURI = r.RequestURI
		w.Write([]byte(testContent))
	})
	f := instr(testName, testContent)
	if err := c.Check(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	// Connect redirects any dial, the proxy's included: a request meant
	// for a proxy shows in its absolute form.
	if requestURI != f.Path {
		t.Errorf("request target %q, want %q: sent as to a proxy", requestURI, f.Path)
	}
}

func TestCheckTimeout(t *testing.T) {
	release := make(chan struct{})
	_, c := serve(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	c.Timeout = 50 * time.Millisecond
	err := c.Check(context.Background(), instr(testName, testContent))
	if err == nil || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Fatalf("err = %v, want a timeout", err)
	}

	// A caller's cancellation is not reported as the Checker's timeout.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.Timeout = 0
	err = c.Check(ctx, instr(testName, testContent))
	if err == nil || strings.Contains(err.Error(), "no answer within") {
		t.Fatalf("err = %v, want a cancellation", err)
	}
}

func TestCheckErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	bad := func(url string) reseller.FileInstruction {
		f := instr(testName, testContent)
		f.URL = url
		return f
	}
	tests := []struct {
		name    string
		c       Checker
		f       reseller.FileInstruction
		wantErr []string
	}{
		{"connection refused", Checker{Connect: closed}, instr(testName, testContent), []string{"http://" + testHost, "via " + closed, "refused"}},
		{"ftp URL", Checker{Connect: closed}, bad("ftp://" + testHost + "/x"), []string{"not an http or https URL"}},
		{"no host", Checker{Connect: closed}, bad("http:///x"), []string{"not an http or https URL"}},
		{"unparsable URL", Checker{Connect: closed}, bad("http://a b/\x00"), []string{"check"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Check(context.Background(), tt.f)
			if err == nil {
				t.Fatal("Check passed")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
