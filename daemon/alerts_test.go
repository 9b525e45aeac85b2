package daemon

import (
	"context"
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

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/notify"
)

// notifyTo sends the events of a daemon opened with opts to cfg's
// [notify.*] channels, as dcvd's command does (cmd/dcvd/events.go),
// unless opts.OnEvent is set already. The returned func, called once the
// daemon is closed, delivers what is queued (within bounds) and stops.
func notifyTo(cfg *config.Config, opts *Options) func() error {
	if len(cfg.Notify) == 0 || opts.OnEvent != nil {
		return func() error { return nil }
	}
	n := notify.New(cfg.Notify, opts.Log)
	opts.OnEvent = func(e Event) {
		n.Notify(notify.Event{Kind: notify.Kind(e.Kind), Cert: e.Cert, UniqueID: e.UniqueID,
			Title: e.Title, Text: e.Text, Fields: e.Fields, Time: e.Time})
	}
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return n.Close(ctx)
	}
}

// TestEventKindsAreNotifyKinds: each kind of event is the notification
// kind of the same name, which receivers switch on.
func TestEventKindsAreNotifyKinds(t *testing.T) {
	for ek, nk := range map[EventKind]notify.Kind{
		EventReissueFailed:      notify.ReissueFailed,
		EventDeployFailed:       notify.DeployFailed,
		EventReloadFailed:       notify.ReloadFailed,
		EventRecovered:          notify.Recovered,
		EventEmailApproval:      notify.EmailApproval,
		EventRenewed:            notify.Renewed,
		EventExpiringSoon:       notify.ExpiringSoon,
		EventScheduleStalled:    notify.ScheduleStalled,
		EventSubscriptionEnding: notify.SubscriptionEnding,
	} {
		if string(ek) != string(nk) {
			t.Errorf("event kind %q is sent as notification kind %q", ek, nk)
		}
	}
}

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

// alertingConfig is the default configuration with one webhook channel at
// level error; sink records what the channel is sent.
func (h *harness) alertingConfig(t *testing.T) (sink *webhookSink, cfg *config.Config) {
	sink, ch := newSinkChannel(t, "error")
	cfg = h.config(hDomains())
	cfg.Notify = []notify.Configured{ch}
	return sink, cfg
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
