package daemon

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/notify"
)

// webhookSink receives dcvd's webhook notifications and checks their
// signature.
type webhookSink struct {
	t      *testing.T
	secret string
	mu     sync.Mutex
	events []notify.WebhookPayload
}

func (s *webhookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	ts, err := strconv.ParseInt(r.Header.Get(notify.HeaderTimestamp), 10, 64)
	if err != nil {
		s.t.Errorf("no timestamp header: %v", err)
	}
	if got, want := r.Header.Get(notify.HeaderSignature), notify.WebhookSignature(s.secret, ts, body); got != want {
		s.t.Errorf("signature %q, want %q", got, want)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var p notify.WebhookPayload
	if err := json.Unmarshal(body, &p); err != nil {
		s.t.Errorf("payload: %v", err)
	}
	s.mu.Lock()
	s.events = append(s.events, p)
	s.mu.Unlock()
}

func (s *webhookSink) kinds() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, e := range s.events {
		out = append(out, string(e.Kind))
	}
	return out
}

func newSinkChannel(t *testing.T, level string) (*webhookSink, notify.Configured) {
	sink := &webhookSink{t: t, secret: "hook-secret-123"}
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)
	c, _, errs := notify.Parse("hook", map[string]any{"type": "webhook", "url": srv.URL, "level": level, "secret": sink.secret},
		os.LookupEnv, os.ReadFile)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return sink, c
}

// TestRenewalAndExpiryAlerts: a renewal is announced to a channel at level
// "renewal" but not to one at level "error"; each expiry threshold is
// announced once, to both.
func TestRenewalAndExpiryAlerts(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	renewals, renewalCh := newSinkChannel(t, "renewal")
	errorsOnly, errorCh := newSinkChannel(t, "error")
	cfg := h.config(hDomains())
	cfg.Notify = []notify.Configured{renewalCh, errorCh}
	cfg.Daemon.ExpiryAlertDays = []int{14, 7}
	d := h.daemon(cfg, nil)
	o := h.issue(ctx, d)

	cc, _ := d.certConfig(hCert)
	live, err := d.Store().Certificate(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	// Ten days before expiry: the 14-day threshold, once.
	h.clock.set(time.Until(o.NotAfter) - 10*24*time.Hour)
	d.checkExpiry(cc, live)
	d.checkExpiry(cc, live)
	// Five days: the 7-day threshold.
	h.clock.set(time.Until(o.NotAfter) - 5*24*time.Hour)
	d.checkExpiry(cc, live)
	h.closeDaemon(d) // delivers what is queued

	if got := strings.Join(renewals.kinds(), ","); got != "renewed,expiring_soon,expiring_soon" {
		t.Errorf("renewal-level channel got %q, want the renewal and the two expiry alerts", got)
	}
	if got := strings.Join(errorsOnly.kinds(), ","); got != "expiring_soon,expiring_soon" {
		t.Errorf("error-level channel got %q, want the two expiry alerts", got)
	}
}
