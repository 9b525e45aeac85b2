package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/control"
)

// TestStatusShowsServiceEndAndRefusesEnded: dcvd status shows the end of
// the certificate's service (text and JSON) once a reissue has asked it;
// once it has ended, dcvd reissue exits 1 saying what to do, and the
// reseller charges nothing.
func TestStatusShowsServiceEndAndRefusesEnded(t *testing.T) {
	w := newAllWorld(t, 1)
	cfg := w.config(nil)
	ctx := context.Background()
	end := time.Now().Add(10*24*time.Hour + time.Hour).UTC().Truncate(time.Second)
	if err := w.sb.SetServiceEnd("svc-c0", end); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(ctx, "reissue", "c0", "--wait", "--timeout", "2m", "--config", cfg); r.err != nil {
		t.Fatalf("reissue:\n%s", r)
	}

	r := runCmd(ctx, "status", "--config", cfg)
	day := end.Format("2006-01-02")
	for _, want := range []string{"SERVICE ENDS", day + " (10 days)", "c0: service svc-c0: the live certificate already runs until the service ends"} {
		// The certificate runs to the service's end, 10 days away: within
		// the default alert window, so status exits 1 for monitoring.
		if exitCode(r.err) != exitFailed || !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q\n%s", want, r)
		}
	}
	r = runCmd(ctx, "status", "--json", "--config", cfg)
	var sts []control.CertStatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil || len(sts) != 1 {
		t.Fatalf("status --json: %v\n%s", err, r)
	}
	if sv := sts[0].Service; sv == nil || sv.ServiceID != "svc-c0" || sv.Expires == nil || !sv.Expires.Equal(end) || *sv.DaysLeft != 10 {
		t.Errorf("status --json service = %+v, want svc-c0 ending %s", sv, end)
	}

	if err := w.sb.SetServiceEnd("svc-c0", time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	before := w.charges()["svc-c0"]
	r = runCmd(ctx, "reissue", "c0", "--wait", "--timeout", "2m", "--config", cfg)
	if exitCode(r.err) != exitFailed || !strings.Contains(errString(r.err), "ended on") || !strings.Contains(errString(r.err), "new service_id") {
		t.Errorf("reissue of an ended service: want exit 1 saying it ended and what to do\n%s", r)
	}
	if n := w.charges()["svc-c0"]; n != before {
		t.Errorf("charged %d times, want %d", n, before)
	}
	r = runCmd(ctx, "status", "--config", cfg)
	if !strings.Contains(r.stdout, "(ended)") || !strings.Contains(r.stdout, "buy a renewal") {
		t.Errorf("status after the end:\n%s", r)
	}
}
