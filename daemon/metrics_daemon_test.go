package daemon

import (
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/dcvd/dcvd/daemon/metrics"
)

// TestMetricsAfterAReissue: after a reissue against the sandbox, /metrics
// shows the certificate's NotAfter as its expiry gauge, the planned renewal,
// the ready state, one reissue and its charge, and API latencies.
func TestMetricsAfterAReissue(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	m := metrics.New()
	d := h.daemon(h.config(hDomains()), func(o *Options) { o.Metrics = m })
	o := h.issue(ctx, d)

	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)

	value := func(series string) float64 {
		t.Helper()
		for _, line := range strings.Split(text, "\n") {
			if rest, ok := strings.CutPrefix(line, series+" "); ok {
				v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return v
			}
		}
		t.Fatalf("no series %s in /metrics:\n%s", series, text)
		return 0
	}
	name := `{name="` + hCert + `"}`
	if got, want := value("dcvd_certificate_expiration_timestamp_seconds"+name), float64(o.NotAfter.Unix()); got != want {
		t.Errorf("expiry gauge %v, want the certificate's NotAfter %v", got, want)
	}
	if got := value("dcvd_certificate_renewal_timestamp_seconds" + name); got <= float64(h.clock.Now().Unix()) || got >= float64(o.NotAfter.Unix()) {
		t.Errorf("renewal gauge %v is not between now and the expiry", got)
	}
	if got := value(`dcvd_certificate_ready_status{condition="True",name="` + hCert + `"}`); got != 1 {
		t.Errorf("ready gauge %v, want 1", got)
	}
	if got := value("dcvd_reissues_total" + name); got != 1 {
		t.Errorf("reissues %v, want 1", got)
	}
	if got := value("dcvd_charge_cost_total" + name); got != o.Cost {
		t.Errorf("charged %v, want the order's cost %v", got, o.Cost)
	}
	if !strings.Contains(text, `dcvd_api_request_duration_seconds_count{op="reissue",result="ok"} 1`) {
		t.Errorf("no reissue latency observed:\n%s", text)
	}
	if !strings.Contains(text, `dcvd_dns_propagation_duration_seconds_count{provider="zone"} 1`) {
		t.Errorf("no propagation time observed")
	}
}
