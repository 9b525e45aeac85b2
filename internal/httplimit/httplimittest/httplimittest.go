// Package httplimittest holds what the tests of bounded HTTP servers share:
// a handler, oversized requests, raw exchanges on a connection, and a
// server run for the length of a test.
package httplimittest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// HangGuard bounds every wait of a test on a server: a passing run never
// comes near it, it only turns a hang into a failure.
const HangGuard = 10 * time.Second

// OKHandler answers every request with 200.
var OKHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "ok\n")
})

// Headers returns header lines of n bytes in all, each of at most line
// bytes, the last one of at least 20 (n is 0 or at least 20, line at least
// 40).
func Headers(n, line int) string {
	var b strings.Builder
	for i := 0; n-b.Len() > 0; i++ {
		l := n - b.Len()
		if l > line {
			l = min(line, l-20)
		}
		name := fmt.Sprintf("X-F%d: ", i)
		b.WriteString(name + strings.Repeat("a", l-len(name)-2) + "\r\n")
	}
	return b.String()
}

// StatusOf sends req on a new connection to addr and returns the status
// line of the reply.
func StatusOf(t testing.TB, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(HangGuard))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatalf("send %d bytes: %v", len(req), err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read the reply to %d bytes of request: %v", len(req), err)
	}
	return strings.TrimSpace(line)
}

// Listen is a new listener on a loopback port, or the test fails.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Serve serves srv on ln until the test ends, then closes srv and fails
// the test if Serve stopped for another reason.
func Serve(t testing.TB, srv *http.Server, ln net.Listener) {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
}
