package httpchallenge

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dcvd/dcvd/reseller"
)

func TestResponderServe(t *testing.T) {
	r := NewResponder()
	r.Add(instr(testName, testContent))
	ip := instr("ip.txt", "ip token")
	ip.Host = "2001:db8::1"
	r.Add(ip)
	path := reseller.PKIValidationPath + testName

	tests := []struct {
		name       string
		method     string
		host       string
		target     string // request target as sent
		wantStatus int
		wantBody   string
	}{
		{"GET", "GET", testHost, path, 200, testContent},
		{"any port, any case", "GET", "SHOP.Example.COM:8080", path, 200, testContent},
		{"trailing dot", "GET", testHost + ".", path, 200, testContent},
		{"IPv6 host", "GET", "[2001:db8:0::1]:80", reseller.PKIValidationPath + "ip.txt", 200, "ip token"},
		{"HEAD", "HEAD", testHost, path, 200, ""},
		{"other host", "GET", "other.example.com", path, 404, ""},
		{"parent host", "GET", "example.com", path, 404, ""},
		{"file of another host", "GET", testHost, reseller.PKIValidationPath + "ip.txt", 404, ""},
		{"other file", "GET", testHost, reseller.PKIValidationPath + "other.txt", 404, ""},
		{"file at the root", "GET", testHost, "/" + testName, 404, ""},
		{"directory", "GET", testHost, reseller.PKIValidationPath, 404, ""},
		{"traversal", "GET", testHost, "/.well-known/pki-validation/../pki-validation/" + testName, 404, ""},
		{"encoded traversal", "GET", testHost, "/.well-known/pki-validation/%2e%2e%2fpki-validation%2f" + testName, 404, ""},
		{"double slash", "GET", testHost, "//.well-known/pki-validation/" + testName, 404, ""},
		{"trailing slash", "GET", testHost, path + "/", 404, ""},
		{"query is ignored", "GET", testHost, path + "?x=1", 200, testContent},
		{"POST a served file", "POST", testHost, path, 405, ""},
		{"POST elsewhere", "POST", testHost, "/", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "http://placeholder"+tt.target, nil)
			req.Host = tt.host
			w := httptest.NewRecorder()
			r.ServeHTTP(w, req)
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d", w.Code, tt.wantStatus)
			}
			switch tt.wantStatus {
			case 200:
				if got := w.Body.String(); got != tt.wantBody {
					t.Errorf("body %q, want %q", got, tt.wantBody)
				}
				if ct := w.Header().Get("Content-Type"); ct != "text/plain" {
					t.Errorf("Content-Type %q", ct)
				}
				want := len(testContent)
				if tt.wantBody != "" {
					want = len(tt.wantBody)
				}
				if cl := w.Header().Get("Content-Length"); cl != strconv.Itoa(want) {
					t.Errorf("Content-Length %q, want %d", cl, want)
				}
			case 404:
				if strings.Contains(w.Body.String(), testContent) {
					t.Error("404 carries the content")
				}
			case 405:
				if a := w.Header().Get("Allow"); a != "GET, HEAD" {
					t.Errorf("Allow %q", a)
				}
			}
		})
	}
}

func TestResponderAddRemove(t *testing.T) {
	r := NewResponder()
	get := func() int {
		req := httptest.NewRequest("GET", reseller.PKIValidationPath+testName, nil)
		req.Host = testHost
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w.Code
	}
	f := instr(testName, testContent)
	other := instr("B.txt", "b")

	steps := []struct {
		name        string
		do          func()
		wantPending int
		wantGet     int
	}{
		{"empty", func() {}, 0, 404},
		{"add", func() { r.Add(f) }, 1, 200},
		{"add again", func() { r.Add(f) }, 1, 200},
		{"add another", func() { r.Add(other) }, 2, 200},
		{"bad name ignored", func() { r.Add(instr("../x", "x")) }, 2, 200},
		{"bad path ignored", func() {
			g := instr("C.txt", "c")
			g.Path = "/C.txt"
			r.Add(g)
		}, 2, 200},
		{"no host ignored", func() {
			g := instr("D.txt", "d")
			g.Host = ""
			r.Add(g)
		}, 2, 200},
		{"remove with other content keeps it", func() { r.Remove(instr(testName, "stale")) }, 2, 200},
		{"remove", func() { r.Remove(f) }, 1, 404},
		{"remove again", func() { r.Remove(f) }, 1, 404},
		{"remove the other", func() { r.Remove(other) }, 0, 404},
	}
	for _, s := range steps {
		s.do()
		if got := r.Pending(); got != s.wantPending {
			t.Errorf("%s: Pending %d, want %d", s.name, got, s.wantPending)
		}
		if got := get(); got != s.wantGet {
			t.Errorf("%s: GET status %d, want %d", s.name, got, s.wantGet)
		}
	}
}

func TestResponderConcurrent(t *testing.T) {
	r := NewResponder()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := instr("F"+strconv.Itoa(i)+".txt", "c")
			for range 50 {
				r.Add(f)
				req := httptest.NewRequest("GET", f.Path, nil)
				req.Host = testHost
				r.ServeHTTP(httptest.NewRecorder(), req)
				r.Pending()
				r.Remove(f)
			}
		}()
	}
	wg.Wait()
	if n := r.Pending(); n != 0 {
		t.Errorf("Pending %d after all removed", n)
	}
}

// fetch GETs a file through addr with the Host of f.
func fetch(t *testing.T, addr string, f reseller.FileInstruction) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+f.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = f.Host
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func refuses(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections", addr)
	}
}

func TestStandalone(t *testing.T) {
	ctx := context.Background()
	r := NewResponder()
	s := NewStandalone("127.0.0.1:0", r)
	defer s.Close()
	if a := s.Addr(); a != "" {
		t.Fatalf("listening before any file: %s", a)
	}

	f, g := instr("A.txt", "token a"), instr("B.txt", "token b")
	if err := s.Add(ctx, f); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	if addr == "" {
		t.Fatal("not listening after Add")
	}
	if code, body := fetch(t, addr, f); code != 200 || body != "token a" {
		t.Errorf("GET: %d %q", code, body)
	}
	other := f
	other.Host = "other.example.com"
	if code, _ := fetch(t, addr, other); code != 404 {
		t.Errorf("GET for another host: %d, want 404", code)
	}

	if err := s.Add(ctx, g); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Errorf("second Add moved the listener to %s", s.Addr())
	}
	if err := s.Remove(f); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Fatal("stopped listening with a file pending")
	}
	if code, _ := fetch(t, addr, f); code != 404 {
		t.Errorf("GET of a removed file: %d, want 404", code)
	}
	if code, body := fetch(t, addr, g); code != 200 || body != "token b" {
		t.Errorf("GET of the pending file: %d %q", code, body)
	}

	if err := s.Remove(g); err != nil {
		t.Fatal(err)
	}
	if a := s.Addr(); a != "" {
		t.Errorf("still listening on %s with nothing pending", a)
	}
	refuses(t, addr)
	if err := s.Remove(g); err != nil {
		t.Errorf("Remove again: %v", err)
	}

	// Listens again for the next validation.
	if err := s.Add(ctx, f); err != nil {
		t.Fatal(err)
	}
	addr = s.Addr()
	if code, _ := fetch(t, addr, f); code != 200 {
		t.Errorf("GET after re-listening: %d", code)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if a := s.Addr(); a != "" {
		t.Errorf("Addr %q after Close", a)
	}
	refuses(t, addr)
	if err := s.Add(ctx, g); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Add after Close: %v", err)
	}
	if s.Addr() != "" {
		t.Error("Add after Close listens")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close again: %v", err)
	}
}

func TestStandaloneAddErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	tests := []struct {
		name    string
		addr    string
		f       reseller.FileInstruction
		wantErr string
	}{
		{"port in use", busy.Addr().String(), instr(testName, testContent), "listen on " + busy.Addr().String()},
		{"bad address", "127.0.0.1:notaport", instr(testName, testContent), "listen on 127.0.0.1:notaport"},
		{"bad name", "127.0.0.1:0", instr("../x", "x"), `".."`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewResponder()
			s := NewStandalone(tt.addr, r)
			defer s.Close()
			err := s.Add(context.Background(), tt.f)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if r.Pending() != 0 || s.Addr() != "" {
				t.Errorf("after a failed Add: Pending %d, Addr %q", r.Pending(), s.Addr())
			}
		})
	}
}

func TestStandaloneNilResponder(t *testing.T) {
	s := NewStandalone("127.0.0.1:0", nil)
	defer s.Close()
	f := instr(testName, testContent)
	if err := s.Add(context.Background(), f); err != nil {
		t.Fatal(err)
	}
	if code, body := fetch(t, s.Addr(), f); code != 200 || body != testContent {
		t.Errorf("GET: %d %q", code, body)
	}
}
