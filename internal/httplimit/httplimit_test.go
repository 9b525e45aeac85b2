package httplimit_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/httplimit"
	"github.com/dcvd/dcvd/internal/httplimit/httplimittest"
	"github.com/dcvd/dcvd/reseller"
)

// serve serves srv on a bounded loopback listener until the test ends, and
// returns its address and the listener under the bound.
func serve(t *testing.T, srv *http.Server) (string, *countingListener) {
	t.Helper()
	ln := httplimittest.Listen(t)
	cl := &countingListener{Listener: ln}
	httplimittest.Serve(t, srv, httplimit.Listener(cl))
	return ln.Addr().String(), cl
}

// countingListener counts the connections it has accepted and not yet
// closed, below the bound: http.Server's ConnState cannot, since it reports
// a connection closed after its slot is released.
type countingListener struct {
	net.Listener
	mu            sync.Mutex
	open, maxOpen int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.open++
	l.maxOpen = max(l.maxOpen, l.open)
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

// counts returns the connections open now and the most open at once.
func (l *countingListener) counts() (open, maxOpen int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.maxOpen
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return err
}

// request returns a GET request of exactly n bytes, headers included.
func request(n int) string {
	const start = "GET /.well-known/pki-validation/x.txt HTTP/1.1\r\nHost: shop.example.com\r\n"
	// Lines of 1,000 bytes, the last one of at least 20, then the blank line.
	return start + httplimittest.Headers(n-len(start)-2, 1000) + "\r\n"
}

const (
	ok       = "HTTP/1.1 200 OK"
	tooLarge = "HTTP/1.1 431 Request Header Fields Too Large"
)

// TestHeaderBytes checks that the bound is HeaderBytes, net/http's slack
// included: with MaxHeaderBytes = HeaderBytes, 20 KiB would get through.
func TestHeaderBytes(t *testing.T) {
	if got := httplimit.MaxHeaderBytes + 4096; got != httplimit.HeaderBytes {
		t.Fatalf("MaxHeaderBytes+4096 = %d, want HeaderBytes %d", got, httplimit.HeaderBytes)
	}
	addr, _ := serve(t, httplimit.NewServer(httplimittest.OKHandler))
	tests := []struct {
		size int
		want string
	}{
		{200, ok},
		{httplimit.HeaderBytes - 256, ok},
		{httplimit.HeaderBytes + 256, tooLarge},
		{httplimit.HeaderBytes + 4096 - 256, tooLarge}, // within net/http's slack
		{32 << 10, tooLarge},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			req := request(tt.size)
			if len(req) != tt.size {
				t.Fatalf("request of %d bytes, want %d", len(req), tt.size)
			}
			if got := httplimittest.StatusOf(t, addr, req); got != tt.want {
				t.Errorf("%d bytes: got %q, want %q", tt.size, got, tt.want)
			}
		})
	}
}

// TestListenerCap fills the listener with MaxConns connections that never
// end their headers, and checks that the next one is not accepted (no
// reply) until one of them ends, and then is.
func TestListenerCap(t *testing.T) {
	srv := httplimit.NewServer(httplimittest.OKHandler)
	// The held connections must stay until the test lets them go.
	srv.ReadHeaderTimeout = time.Hour
	addr, cl := serve(t, srv)

	held := make([]net.Conn, httplimit.MaxConns)
	for i := range held {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		held[i] = c
	}
	for deadline := time.Now().Add(httplimittest.HangGuard); ; time.Sleep(5 * time.Millisecond) {
		if n, _ := cl.counts(); n == httplimit.MaxConns {
			break
		}
		if time.Now().After(deadline) {
			n, _ := cl.counts()
			t.Fatalf("%d connections accepted, want %d", n, httplimit.MaxConns)
		}
	}

	extra, err := net.Dial("tcp", addr) // the kernel completes it: it waits in the backlog
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	if _, err := io.WriteString(extra, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(extra)
	// No slot frees while the held connections stay: a reply within this
	// wait can only come from a listener that accepted beyond the cap.
	extra.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if line, err := br.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection %d beyond the cap: read %q, %v; want no reply while %d are open",
			httplimit.MaxConns+1, line, err, httplimit.MaxConns)
	}

	held[0].Close()
	extra.SetReadDeadline(time.Now().Add(httplimittest.HangGuard))
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("the waiting connection got no reply once a slot freed: %v", err)
	}
	if got := strings.TrimSpace(line); got != ok {
		t.Errorf("the waiting connection got %q, want %q", got, ok)
	}
	if _, maxOpen := cl.counts(); maxOpen > httplimit.MaxConns {
		t.Errorf("%d connections were open at once, want at most %d", maxOpen, httplimit.MaxConns)
	}
}

// TestStandaloneBounded checks that httpchallenge's standalone responder,
// which builds its own server, has the header bound too.
func TestStandaloneBounded(t *testing.T) {
	const name = "310DCBBF4CCE62F762A2AAA148D556BD.txt"
	f := reseller.FileInstruction{
		Scheme: "http", Host: "shop.example.com", Path: reseller.PKIValidationPath + name, FileName: name,
		Content: "token", URL: "http://shop.example.com" + reseller.PKIValidationPath + name,
	}
	s := httpchallenge.NewStandalone("127.0.0.1:0", nil)
	t.Cleanup(func() { s.Close() })
	if err := s.Add(t.Context(), f); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	get := "GET " + f.Path + " HTTP/1.1\r\nHost: shop.example.com\r\n"
	if got := httplimittest.StatusOf(t, addr, get+"\r\n"); got != ok {
		t.Fatalf("the file: got %q, want %q", got, ok)
	}
	if got := httplimittest.StatusOf(t, addr, get+"X-F: "+strings.Repeat("a", 20<<10)+"\r\n\r\n"); got != tooLarge {
		t.Errorf("20 KiB of headers: got %q, want %q", got, tooLarge)
	}
}
