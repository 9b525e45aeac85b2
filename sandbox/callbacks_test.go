package sandbox

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

// sbReceiver is a notify_url that fails its first failures requests, then
// accepts and passes each accepted body on.
type sbReceiver struct {
	mu       sync.Mutex
	failures int
	attempts int
	ctype    string
	got      chan reseller.Order
}

func (rc *sbReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.attempts++
	fail := rc.attempts <= rc.failures
	rc.ctype = r.Header.Get("Content-Type")
	rc.mu.Unlock()
	if fail || r.Method != http.MethodPost {
		http.Error(w, "not now", http.StatusInternalServerError)
		return
	}
	var o reseller.Order
	if err := json.Unmarshal(body, &o); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.got <- o
}

func (rc *sbReceiver) wait(t *testing.T) reseller.Order {
	t.Helper()
	select {
	case o := <-rc.got:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no callback delivered")
		return reseller.Order{}
	}
}

func TestCallbacksRetriedUntilAccepted(t *testing.T) {
	h := sbStart(t, "", nil)
	rc := &sbReceiver{failures: 2, got: make(chan reseller.Order, 4)}
	cb := httptest.NewServer(rc)
	defer cb.Close()

	_, csr := sbCSR(t, "a.example.com")
	body := map[string]any{"unique_id": "cb1", "service_id": "svc", "csr": csr, "notify_url": cb.URL + "/hook?order=1",
		"domain_dcv": map[string]string{"a.example.com": "admin@example.com", "b.example.com": "admin@example.com"}}
	h.call(http.MethodPost, reseller.PathReissue, body).mustSucceed(t)
	if err := h.srv.ApproveEmail("svc", "a.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := h.srv.ApproveEmail("svc", "b.example.com"); err != nil {
		t.Fatal(err)
	}
	o := rc.wait(t)
	rc.mu.Lock()
	attempts, ctype := rc.attempts, rc.ctype
	rc.mu.Unlock()
	if attempts != 3 {
		t.Errorf("%d attempts, want 3 (two failures, then accepted)", attempts)
	}
	if ctype != "application/json" {
		t.Errorf("Content-Type %q", ctype)
	}
	if o.Status != reseller.StatusIssued || o.ServiceID != "svc" || o.CertPEM == "" || len(o.DCV) != 2 {
		t.Errorf("callback body %+v", o)
	}

	// Dropping a name revokes, and that is a status change too.
	h.reissue("cb2", "svc", map[string]string{"a.example.com": "admin@example.com"}, "").mustSucceed(t)
	if o := rc.wait(t); o.Status != reseller.StatusRevoked {
		t.Errorf("second callback status %q, want revoked", o.Status)
	}
}

func TestCallbacksAbandonedOnClose(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.CallbackBackoff = time.Hour })
	rc := &sbReceiver{failures: 1 << 30, got: make(chan reseller.Order, 1)}
	cb := httptest.NewServer(rc)
	defer cb.Close()
	_, csr := sbCSR(t, "a.example.com")
	h.call(http.MethodPost, reseller.PathReissue, map[string]any{"unique_id": "cb1", "service_id": "svc", "csr": csr,
		"notify_url": cb.URL, "domain_dcv": map[string]string{"a.example.com": "admin@example.com"}}).mustSucceed(t)
	if err := h.srv.ApproveEmail("svc", "a.example.com"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rc.mu.Lock()
		n := rc.attempts
		rc.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no callback attempt")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The retry waits an hour; Close must not.
	done := make(chan struct{})
	go func() { h.srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for the callback's retry")
	}
}
