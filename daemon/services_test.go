package daemon

import (
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/metrics"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/notify"
)

// hRenewalService is the harness sandbox's second service: the renewal an
// admin buys when hService's period ends.
const hRenewalService = "demo-renewal"

func TestServiceAlertThreshold(t *testing.T) {
	days := []int{60, 30, 14, 7}
	tests := []struct {
		left time.Duration
		want int
	}{
		{90 * 24 * time.Hour, store.NoServiceAlert},
		{60*24*time.Hour + time.Minute, store.NoServiceAlert},
		{60 * 24 * time.Hour, 60},
		{31 * 24 * time.Hour, 60},
		{10 * 24 * time.Hour, 14},
		{7 * 24 * time.Hour, 7},
		{time.Hour, 7},
		{0, 0},
		{-time.Hour, 0},
	}
	for _, tt := range tests {
		if got := serviceAlertThreshold(tt.left, days); got != tt.want {
			t.Errorf("serviceAlertThreshold(%s) = %d, want %d", tt.left, got, tt.want)
		}
	}
}

// TestServiceEndingAlertsOncePerThreshold: a service ending in 10 days
// raises the 14-day alert once — however often it is looked at, and after
// a restart — then the 7-day one once; status and metrics show the end,
// and status warns that the next renewal falls after it.
func TestServiceEndingAlertsOncePerThreshold(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	sink, cfg := h.alertingConfig(t)
	cfg.Daemon.ServiceAlertDays = config.DefaultServiceAlertDays
	metrics := metrics.New()
	d := h.daemon(cfg, func(o *Options) { o.Metrics = metrics })
	h.issue(ctx, d)

	// The issue recorded the service's end (a year away); the reseller
	// is asked again a day later, and says 10 days are left.
	end := time.Now().Add(11 * 24 * time.Hour).Truncate(time.Second).UTC()
	if err := h.sb.SetServiceEnd(hService, end); err != nil {
		t.Fatal(err)
	}
	day := 24*time.Hour + time.Minute
	h.clock.set(day)
	d.refreshServices(ctx)
	d.refreshServices(ctx) // fresh: not asked again, nothing announced again
	d.announceServices(ctx)

	sts, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sv := sts[0].Service
	if sv == nil || sv.ServiceID != hService || sv.Expires == nil || !sv.Expires.Equal(end) || sv.DaysLeft == nil || *sv.DaysLeft != 9 || sv.Ended {
		t.Fatalf("status service = %+v, want %s ending %s, 9 whole days left", sv, hService, end)
	}
	// The live certificate (90 days) outlives the service: no reissue
	// can extend it.
	if !strings.Contains(sv.Warning, "no reissue can extend it") || !strings.Contains(sv.Warning, "buy a renewal") {
		t.Errorf("status warning %q does not say that no reissue can extend the certificate", sv.Warning)
	}
	series := fmt.Sprintf(`dcvd_service_expiration_timestamp_seconds{name=%q,service_id=%q} `, hCert, hService)
	m := scrape(t, metrics)
	var v float64
	if _, after, ok := strings.Cut(m, series); !ok {
		t.Errorf("metrics lack %s:\n%s", series, grepLines(m, "dcvd_service_"))
	} else if _, err := fmt.Sscan(after, &v); err != nil || int64(v) != end.Unix() {
		t.Errorf("%s= %v (%v), want %d", series, v, err, end.Unix())
	}
	h.closeDaemon(d)
	if got := sink.kinds(); len(got) != 1 || got[0] != string(notify.SubscriptionEnding) {
		t.Fatalf("alerts %v, want one %s", got, notify.SubscriptionEnding)
	}

	// A restart announces nothing again: the threshold is recorded.
	sink2, ch2 := newSinkChannel(t, "error")
	cfg.Notify = []notify.Configured{ch2}
	d2 := h.daemon(cfg, nil)
	d2.refreshServices(ctx)
	// Four days later, six days left: the 7-day alert, once.
	h.clock.set(day + 4*24*time.Hour)
	d2.refreshServices(ctx)
	d2.announceServices(ctx)
	h.closeDaemon(d2)
	got := sink2.kinds()
	if len(got) != 1 || got[0] != string(notify.SubscriptionEnding) {
		t.Fatalf("alerts after a restart and four days %v, want one more %s", got, notify.SubscriptionEnding)
	}
	if f := sink2.snapshot()[0].Fields; f["threshold_days"] != "7" || f["service_id"] != hService {
		t.Errorf("second alert fields %v, want threshold 7 of %s", f, hService)
	}
}

// TestEndedServiceIsNeverReissued: once the service has ended no reissue
// is sent — the sandbox's ledger is unchanged — and the error says what to
// do; when the reseller is the first to say so (the end moved after dcvd
// last asked), the refused reissue costs nothing and is not repeated.
func TestEndedServiceIsNeverReissued(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	sink, cfg := h.alertingConfig(t)
	d, _ := h.issued(ctx, cfg)
	d.refreshServices(ctx) // a year left, as the sandbox starts it
	ledger := len(h.sb.Ledger())

	// The period ends after dcvd last asked: the reseller refuses.
	if err := h.sb.SetServiceEnd(hService, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	if err == nil || o == nil || o.Step != store.StepFailed || !strings.Contains(err.Error(), "charged nothing") {
		t.Fatalf("reissue of an ended service: %v, %v; want it failed, saying nothing was charged", o, err)
	}
	if n := h.events.count("api /certificate/reissue"); n != 2 {
		t.Fatalf("%d reissue calls, want the first issue's and the refused one", n)
	}

	// Known now: refused before anything is sent, by hand and by the sweep.
	_, err = d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	var see *ServiceEndedError
	if !errors.As(err, &see) || see.ServiceID != hService {
		t.Fatalf("second reissue: %v, want a ServiceEndedError", err)
	}
	for _, say := range []string{"ended on", "nothing was sent", "buy a renewal", "service_id"} {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(say)) {
			t.Errorf("error %q does not say %q", err, say)
		}
	}
	h.clock.set(365 * 24 * time.Hour) // long past the live certificate's renewal
	var wg sync.WaitGroup
	d.sweep(ctx, &wg)
	wg.Wait()
	if n := h.events.count("api /certificate/reissue"); n != 2 {
		t.Errorf("%d reissue calls after the end was known, want none more", n)
	}
	if got := len(h.sb.Ledger()); got != ledger {
		t.Errorf("the ledger went from %d to %d entries", ledger, got)
	}
	sts, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sv := sts[0].Service; sv == nil || !sv.Ended || !strings.Contains(sv.Warning, "ended") {
		t.Errorf("status service = %+v, want ended with a warning", sv)
	}
	h.closeDaemon(d)
	ended := 0
	for _, e := range sink.snapshot() {
		if e.Kind == notify.SubscriptionEnding && strings.Contains(e.Title, "ended") {
			ended++
		}
	}
	if ended != 1 || slices.Contains(sink.kinds(), string(notify.ReissueFailed)) {
		t.Errorf("%d alerts that the service ended, want 1 and no reissue_failed (all: %v)", ended, sink.kinds())
	}
}

// TestEndedServiceUnknownIsAskedFirst: with nothing recorded (a first
// reissue by hand, no daemon ever ran) the service's end is asked before
// the paid call, and an ended service is refused without sending it.
func TestEndedServiceUnknownIsAskedFirst(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	if err := h.sb.SetServiceEnd(hService, time.Now().Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	d := h.daemon(h.config(hDomains()), nil)
	_, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	var see *ServiceEndedError
	if !errors.As(err, &see) {
		t.Fatalf("reissue: %v, want a ServiceEndedError", err)
	}
	if n := h.events.count("api /certificate/reissue"); n != 0 {
		t.Errorf("%d reissue calls for an ended service, want none", n)
	}
	if n := len(h.sb.Ledger()); n != 0 {
		t.Errorf("ledger has %d entries, want none", n)
	}
}

// TestServiceIDSwitchKeepsCertificate: a renewal bought is a new
// service_id for the same certificate; the live certificate, its history
// and costs carry over, the next reissue goes to the new service, and the
// domain-removal guard still applies.
func TestServiceIDSwitchKeepsCertificate(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	cfg := h.config(hDomains())
	d, first := h.issued(ctx, cfg)
	if err := h.sb.SetServiceEnd(hService, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	d.refreshServices(ctx)

	next := h.config(hDomains())
	next.Certificates[0].ServiceID = hRenewalService
	if err := d.Reload(next); err != nil {
		t.Fatal(err)
	}
	sts, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sts[0].Serial != first.Serial || sts[0].Service.ServiceID != hRenewalService || sts[0].Service.Ended {
		t.Fatalf("after the switch: serial %s (want %s), service %+v", sts[0].Serial, first.Serial, sts[0].Service)
	}
	costBefore := sts[0].TotalCost
	h.assertDeployedIs(first)

	// The guard still protects the live certificate.
	fewer := h.config(map[string]string{"example.com": "dns", "*.example.com": "dns"})
	fewer.Certificates[0].ServiceID = hRenewalService
	if err := d.Reload(fewer); err != nil {
		t.Fatal(err)
	}
	var dre *DomainRemovalError
	if _, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true}); !errors.As(err, &dre) {
		t.Fatalf("reissue dropping names under the new service: %v, want the domain-removal guard", err)
	}
	if err := d.Reload(next); err != nil {
		t.Fatal(err)
	}

	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	if err != nil || o.Step != store.StepDone {
		t.Fatalf("reissue under the new service: %v, %v", o, err)
	}
	if o.ServiceID != hRenewalService {
		t.Errorf("order went to service %s, want %s", o.ServiceID, hRenewalService)
	}
	h.assertDeployedIs(o)
	history, err := d.Store().Attempts(ctx, hCert, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(history) != 2 || history[1].UniqueID != first.UniqueID {
		t.Errorf("history %+v, want the first order's attempt kept under the new one", history)
	}
	total, err := d.Store().TotalCost(ctx, hCert)
	if err != nil || total < costBefore {
		t.Errorf("total cost %v (%v), want at least %v carried over", total, err, costBefore)
	}
}

// snapshot returns the notifications received so far.
func (s *webhookSink) snapshot() []notify.WebhookPayload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]notify.WebhookPayload(nil), s.events...)
}

func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestCappedCertificateIsNotRenewedAgain: the CA caps a certificate at
// its service's end; a renewal at a third of that shortened lifetime
// would only give a shorter one, again and again as the end nears. The
// sweep starts none, and status says why.
func TestCappedCertificateIsNotRenewedAgain(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	if err := h.sb.SetServiceEnd(hService, time.Now().Add(10*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	d := h.daemon(h.config(hDomains()), nil)
	o := h.issue(ctx, d)
	if left := time.Until(o.NotAfter); left > 10*24*time.Hour {
		t.Fatalf("the sandbox issued a certificate valid %s, past the service's end", left)
	}
	d.refreshServices(ctx)
	h.clock.set(8 * 24 * time.Hour) // past 2/3 of the capped lifetime: due
	sts, err := d.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if h.clock.Now().Before(sts[0].NextRenewal) {
		t.Fatalf("not due at +8 days (next renewal %s): the test proves nothing", sts[0].NextRenewal)
	}
	if w := sts[0].Service.Warning; !strings.Contains(w, "no reissue can extend it") {
		t.Errorf("status warning %q, want it to say no reissue can extend the certificate", w)
	}
	reissues := h.events.count(evReissue)
	var wg sync.WaitGroup
	d.sweep(ctx, &wg)
	wg.Wait()
	if n := h.events.count(evReissue) - reissues; n != 0 {
		t.Errorf("the sweep sent %d reissues of a certificate already capped at its service's end", n)
	}
}

// TestManyServicesAreReadFromTheList: past serviceDetailLimit services the
// certificate list answers for all of them, not a detail call each; a few
// are asked one detail each.
func TestManyServicesAreReadFromTheList(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	for _, n := range []int{serviceDetailLimit + 5, 2} {
		cfg := h.config(hDomains())
		for i := 1; i < n; i++ {
			cc := cfg.Certificates[0]
			cc.Name = fmt.Sprintf("%s%d", hCert, i)
			cfg.Certificates = append(cfg.Certificates, cc)
		}
		d := h.daemon(cfg, nil)
		lists, details := h.events.count(evList), h.events.count(evDetail)
		d.refreshServices(ctx)
		lists, details = h.events.count(evList)-lists, h.events.count(evDetail)-details
		if n > serviceDetailLimit && (lists != 1 || details != 0) {
			t.Errorf("%d services: %d list and %d detail calls, want 1 list call", n, lists, details)
		}
		if n <= serviceDetailLimit && (lists != 0 || details != n) {
			t.Errorf("%d services: %d list and %d detail calls, want %d detail calls", n, lists, details, n)
		}
		sts, err := d.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range sts {
			if st.Service == nil || st.Service.Expires == nil {
				t.Fatalf("%d services: %s has no recorded end: %+v", n, st.Name, st.Service)
			}
		}
		h.closeDaemon(d)
		h.stateDir = t.TempDir() // the next round starts with nothing recorded
	}
}

func TestServiceStatusWarnings(t *testing.T) {
	now := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	cc := &config.CertConfig{Name: "shop", ServiceID: "s1", Domains: map[string]string{"example.com": "dns"}}
	live := &store.Certificate{Name: "shop", Names: []string{"example.com"}, NotBefore: now.Add(-10 * 24 * time.Hour), NotAfter: now.Add(80 * 24 * time.Hour)}
	day := 24 * time.Hour
	tests := []struct {
		name           string
		expires, renew time.Time
		want           string
	}{
		{"far", now.Add(200 * day), now.Add(50 * day), ""},
		// A renewal pushed back by failures.
		{"renewal after the end", now.Add(90 * day), now.Add(95 * day), "the next renewal (2027-03-12) falls after the service ends (2027-03-07)"},
		{"certificate runs to the end", now.Add(80*day + time.Hour), now.Add(50 * day), "the live certificate already runs until the service ends"},
		{"ended", now.Add(-time.Hour), now, "the service ended on 2026-12-06"},
		{"unknown", time.Time{}, now.Add(50 * day), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := map[string]store.Service{"s1": {ServiceID: "s1", Expires: tt.expires, Checked: now}}
			st := serviceStatus(cc, rec, live, Renewal{At: tt.renew}, now)
			if tt.want == "" && st.Warning != "" || !strings.Contains(st.Warning, tt.want) {
				t.Errorf("warning %q, want %q", st.Warning, tt.want)
			}
			if st.Ended != (tt.name == "ended") {
				t.Errorf("ended = %v", st.Ended)
			}
		})
	}
}
