package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/notify"
)

// TestParseSchedule: a schedule must fire within the next year.
func TestParseSchedule(t *testing.T) {
	now := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)
	tests := []struct {
		expr    string
		wantErr string
	}{
		{config.DefaultSchedule, ""},
		{"@hourly", ""},
		{"@yearly", ""},
		{"0 0 28 2 *", ""},
		{"0 0 30 2 *", "no run in the next year"},  // 30 February
		{"0 0 31 4 *", "no run in the next year"},  // 31 April
		{"0 0 31 11 *", "no run in the next year"}, // 31 November
		{"0 0 29 2 *", "no run in the next year"},  // next in 2028: checks nothing for 14 months
		{"61 * * * *", "not a 5-field cron expression"},
		{"* * * *", "not a 5-field cron expression"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			sched, err := config.ParseSchedule(tt.expr, now)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr == "":
				if next := sched.Next(now); !next.After(now) {
					t.Fatalf("next run %s is not after now", next)
				}
			case err == nil || !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %v, want one saying %q", err, tt.wantErr)
			}
		})
	}
}

// TestReloadRefusesNeverFiringSchedule: SIGHUP's Reload refuses the
// schedule, naming the key, and keeps the old one.
func TestReloadRefusesNeverFiringSchedule(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(hDomains())
	d := h.daemon(cfg, nil)
	bad := *cfg
	bad.Daemon.Schedule = "0 0 31 4 *"
	err := d.Reload(&bad)
	var ce *config.ConfigError
	if !errors.As(err, &ce) || ce.Key != "daemon.schedule" {
		t.Fatalf("Reload: %v, want a *ConfigError for daemon.schedule", err)
	}
	if got := d.config().Daemon.Schedule; got != config.DefaultSchedule {
		t.Errorf("schedule %q after the refused reload, want the old %q", got, config.DefaultSchedule)
	}
	// Run refuses it too, before it starts anything.
	d2 := h.daemon(&bad, nil)
	if err := d2.Run(hCtx(t)); !errors.As(err, &ce) || ce.Key != "daemon.schedule" {
		t.Fatalf("Run: %v, want a *ConfigError for daemon.schedule", err)
	}
}

// TestStalledScheduleWaitsAndAlertsOnce: a schedule that gives no next run
// (one that slipped past the checks) makes Run's loop wait an hour, not
// spin, and is alerted once.
func TestStalledScheduleWaitsAndAlertsOnce(t *testing.T) {
	h := newHarness(t)
	sink, cfg := h.alertingConfig(t)
	cfg.Daemon.Schedule = "0 0 30 2 *"
	d := h.daemon(cfg, nil)
	stalled := ""
	for range 1000 {
		wait, due := d.untilNextCheck(&stalled)
		if due || wait < time.Minute {
			t.Fatalf("untilNextCheck = %s, %v: a loop on it would spin", wait, due)
		}
	}
	// Mended: the next check is due again.
	d.cfg.Daemon.Schedule = config.DefaultSchedule
	if wait, due := d.untilNextCheck(&stalled); !due || wait <= 0 || wait > 6*time.Hour {
		t.Fatalf("after the fix: %s, %v", wait, due)
	}
	h.closeDaemon(d)
	if got := sink.kinds(); len(got) != 1 || got[0] != string(notify.ScheduleStalled) {
		t.Fatalf("alerts %v, want one %s", got, notify.ScheduleStalled)
	}
}

// TestFailureAlertsDeduplicated: the same failure alerts once, reminds
// after 1 h, 6 h and then every 24 h, and its end is told once.
func TestFailureAlertsDeduplicated(t *testing.T) {
	var a failureAlerts
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at       time.Duration
		alert    bool
		reminded int
	}{
		{0, true, 0},
		{10 * time.Second, false, 0},
		{59 * time.Minute, false, 0},
		{61 * time.Minute, true, 1},
		{6 * time.Hour, false, 1},
		{7*time.Hour + 2*time.Minute, true, 2},
		{30 * time.Hour, false, 2},
		{31*time.Hour + 3*time.Minute, true, 3},
		{54 * time.Hour, false, 3},
		{55*time.Hour + 4*time.Minute, true, 4},
	}
	for _, s := range steps {
		alert, open := a.failed("c\x00reload", "reload", t0.Add(s.at))
		if alert != s.alert || open.reminded != s.reminded {
			t.Fatalf("at +%s: alert %v reminded %d, want %v %d", s.at, alert, open.reminded, s.alert, s.reminded)
		}
	}
	// Another certificate, another class: their own first alerts.
	if alert, _ := a.failed("c\x00deploy", "deploy", t0); !alert {
		t.Error("another class of the same certificate was held back")
	}
	f, ok := a.close("c\x00reload")
	if !ok || f.failures != len(steps) || !f.since.Equal(t0) {
		t.Fatalf("close = %+v, %v", f, ok)
	}
	if _, ok := a.close("c\x00reload"); ok {
		t.Error("the end of a failure was told twice")
	}
	if alert, _ := a.failed("c\x00reload", "reload", t0.Add(56*time.Hour)); !alert {
		t.Error("a new failure after the recovery was not alerted")
	}
}

// TestFailingReloadBacksOffAcrossInstalls: a reload that keeps failing
// makes the order wait longer each time — the install before each reload
// does not reset the count — the previous certificate stays deployed, the
// admin hears of it once, and of its end once.
func TestFailingReloadBacksOffAcrossInstalls(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	sink, cfg := h.alertingConfig(t)
	d, first := h.issued(ctx, cfg)

	h.reload.setFail(func(int, string) error { return errors.New("exit status 3") })
	var waits []time.Duration
	var o *store.Order
	for range 5 {
		var err error
		o, err = d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
		for err == nil && !o.Step.Terminal() && o.Step != store.StepIssued {
			// Waiting for the CA: move the clock past the poll.
			h.clock.set(o.NextAttempt.Sub(time.Now()) + time.Millisecond)
			o, err = d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
		}
		if err == nil || o.Step != store.StepIssued {
			t.Fatalf("reissue with a failing reload: step %s, err %v", o.Step, err)
		}
		waits = append(waits, o.NextAttempt.Sub(h.clock.Now()).Round(time.Second))
		if o.Attempts != len(waits) {
			t.Fatalf("attempt %d recorded as %d: the count restarted", len(waits), o.Attempts)
		}
		// The previous certificate is back in place.
		h.assertDeployedIs(first)
		h.clock.set(o.NextAttempt.Sub(time.Now()) + time.Millisecond)
	}
	want := []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 4 * time.Hour}
	if fmt.Sprint(waits) != fmt.Sprint(want) {
		t.Errorf("waits after each failed reload %v, want %v", waits, want)
	}

	// The web server is mended: the order completes, and the end of the
	// failure is told.
	h.reload.setFail(nil)
	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	if err != nil || o.Step != store.StepDone {
		t.Fatalf("after the fix: step %s, %v", o.Step, err)
	}
	h.closeDaemon(d)
	kinds := strings.Join(sink.kinds(), ",")
	// Five failures over 5h21m: the alert, the 1 h reminder, then none
	// until 6 h after it; and the recovery.
	if kinds != "reload_failed,reload_failed,recovered" {
		t.Errorf("alerts %q, want the failure, one reminder and the recovery", kinds)
	}
}

// TestCallbacksAreHints: callbacks to an order in backoff neither count
// as attempts nor move the backoff, wake it at most once per interval,
// and do nothing to an order that is not waiting for the CA.
func TestCallbacksAreHints(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	d := h.daemon(h.config(hDomains()), nil)

	// Drive to rechecked, then make every detail request fail.
	var o *store.Order
	var err error
	for o == nil || o.Step != store.StepRechecked {
		if o, err = d.Reissue(ctx, hCert, ReissueOptions{Wait: false}); err != nil {
			t.Fatal(err)
		}
	}
	h.setRewrite(func(path string, body []byte) []byte {
		if strings.HasSuffix(path, "detail") {
			return []byte("<html>502 Bad Gateway</html>")
		}
		return body
	})
	h.clock.set(o.NextAttempt.Sub(time.Now()) + time.Millisecond)
	o, err = d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
	if err == nil || o.Attempts != 1 {
		t.Fatalf("a failed detail: attempts %d, err %v", o.Attempts, err)
	}
	// Parked as in the report: many failures, a day's backoff.
	o.Attempts, o.NextAttempt = 30, h.clock.Now().Add(24*time.Hour)
	if err := d.store.PutOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	before := mustOrder(t, d, o.UniqueID)

	// A driver waits on the backoff, as under dcvd run.
	dctx, cancel := context.WithCancel(ctx)
	driven := make(chan error, 1)
	go func() {
		_, err := d.Reissue(dctx, hCert, ReissueOptions{Wait: true})
		driven <- err
	}()
	waitDriven(t, d, o.UniqueID)
	details := h.events.count(evDetail)
	// 30 callbacks, one every simulated second.
	for i := range 30 {
		if res := callback(t, d, http.MethodPost, "/callback/"+o.CallbackToken, "{}"); res.StatusCode != http.StatusOK {
			t.Fatalf("callback %d: status %d", i, res.StatusCode)
		}
		h.clock.advance(time.Second)
		// Let a woken driver finish its try before the next callback.
		waitIdle(t, d, o.UniqueID)
	}
	cancel()
	<-driven

	after := mustOrder(t, d, o.UniqueID)
	if after.Attempts != before.Attempts || !after.NextAttempt.Equal(before.NextAttempt) || after.Step != before.Step {
		t.Errorf("30 callbacks moved the order: attempts %d→%d, next attempt %s→%s, step %s→%s",
			before.Attempts, after.Attempts, before.NextAttempt, after.NextAttempt, before.Step, after.Step)
	}
	// Thirty seconds of callbacks: at most three wakes, each one detail.
	if n := h.events.count(evDetail) - details; n < 1 || n > 3 {
		t.Errorf("30 callbacks over 30 s made %d detail requests, want 1 to 3", n)
	}

	// An order that is not waiting for the CA: 200, and nothing wakes.
	parked := &store.Order{UniqueID: "dcvd-published", Cert: "other", ServiceID: hService, Step: store.StepPublished,
		Names: []string{"example.com"}, CallbackToken: "0123456789abcdef0123456789abcdef0123456789abcdef"}
	if err := d.store.PutOrder(ctx, parked); err != nil {
		t.Fatal(err)
	}
	wake, unwake := d.wakeChan(parked.UniqueID)
	defer unwake()
	if res := callback(t, d, http.MethodPost, "/callback/"+parked.CallbackToken, "{}"); res.StatusCode != http.StatusOK {
		t.Fatalf("callback of a published order: status %d", res.StatusCode)
	}
	select {
	case <-wake:
		t.Error("a callback woke an order that does not wait for the CA")
	default:
	}
}

// waitDriven waits until a driver waits on the wake channel of uid.
func waitDriven(t *testing.T, d *Daemon, uid string) {
	t.Helper()
	if !driverWaitsWithin(d, uid, 10*time.Second) {
		t.Fatal("no driver for the order")
	}
}

// waitIdle waits until no wake of uid is pending and no step of it is at
// work (its semaphore slot is free).
func waitIdle(t *testing.T, d *Daemon, uid string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		d.mu.Lock()
		ch := d.wake[uid]
		d.mu.Unlock()
		if (ch == nil || len(ch) == 0) && len(d.semaphore()) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the driver did not settle")
		}
	}
}
