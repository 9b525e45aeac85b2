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
