package daemon

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/dcvd/dcvd/internal/httplimit/httplimittest"
)

// TestServeHTTPHeaderLimit sends requests through the daemon's own
// serveHTTP: headers beyond 16 KiB get 431, whether in many lines or one.
func TestServeHTTPHeaderLimit(t *testing.T) {
	d := &Daemon{log: zaptest.NewLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	addr, err := d.serveHTTP(ctx, &wg, "127.0.0.1:0", httplimittest.OKHandler)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	const start = "POST /callback/x HTTP/1.1\r\nHost: dcvd.example.com\r\nContent-Length: 0\r\n"
	tests := []struct {
		name    string
		headers string
		want    string
	}{
		{"a callback's headers", "User-Agent: ca/1.0\r\n", "HTTP/1.1 200 OK"},
		{"12 KiB in lines", httplimittest.Headers(12<<10, 1000), "HTTP/1.1 200 OK"},
		{"20 KiB in lines", httplimittest.Headers(20<<10, 1000), "HTTP/1.1 431 Request Header Fields Too Large"},
		{"one 20 KiB line", httplimittest.Headers(20<<10, 20<<10), "HTTP/1.1 431 Request Header Fields Too Large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := httplimittest.StatusOf(t, addr, start+tt.headers+"\r\n"); got != tt.want {
				t.Errorf("%d bytes of headers: got %q, want %q", len(tt.headers), got, tt.want)
			}
		})
	}
}

// TestBoundedServerTimeouts checks that a connection is closed, without a
// reply, once it has been silent too long: before its headers
// (ReadHeaderTimeout) or between requests (IdleTimeout). The timeout under
// test is shortened on the server newBoundedServer returns, so that the
// test waits a tenth of a second, not seconds; the other is made long, so
// that a slow test machine cannot trip it.
func TestBoundedServerTimeouts(t *testing.T) {
	const short, long = 100 * time.Millisecond, time.Hour
	tests := []struct {
		name             string
		readHeader, idle time.Duration
		send             string // then silence
		replies          int    // read before the close
	}{
		{"sends nothing", short, long, "", 0},
		{"headers never ended", short, long, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n", 0},
		{"idle after a request", long, short, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newBoundedServer(httplimittest.OKHandler)
			srv.ReadHeaderTimeout, srv.IdleTimeout = tt.readHeader, tt.idle
			ln := httplimittest.Listen(t)
			httplimittest.Serve(t, srv, boundedListener(ln))

			start := time.Now()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(httplimittest.HangGuard))
			// A write after the server closed (a test machine slower
			// than the short timeout) fails, or makes the read fail with
			// a reset: either is the close looked for.
			io.WriteString(c, tt.send)
			br := bufio.NewReader(c)
			for range tt.replies {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("read the reply: %v", err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d, want 200", resp.StatusCode)
				}
			}
			rest, err := io.ReadAll(br)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the connection is still open after %s; the timeout is %s", httplimittest.HangGuard, short)
			}
			if err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("read until the close: %v", err)
			}
			if len(rest) > 0 {
				t.Errorf("the server sent %q before closing, want nothing", rest)
			}
			// The server's deadline starts after the dial: it cannot have
			// closed earlier, unless for another reason than the timeout.
			if took := time.Since(start); took < short {
				t.Errorf("closed after %s, before the %s timeout", took, short)
			}
		})
	}
}
