package metrics

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/dcvd/dcvd/daemon/store"
)

func TestMetricsExposition(t *testing.T) {
	m := New()
	m.SetCertificate("www", time.Unix(1800000000, 0), time.Unix(1795000000, 0), false)
	m.SetStep("www", string(store.StepVisible))
	const want = `
# HELP dcvd_certificate_ready_status Whether the certificate is ready: a valid certificate is deployed and not due for renewal. 1 on the condition that holds, 0 on the other.
# TYPE dcvd_certificate_ready_status gauge
dcvd_certificate_ready_status{condition="False",name="www"} 1
dcvd_certificate_ready_status{condition="True",name="www"} 0
# HELP dcvd_certificate_expiration_timestamp_seconds The date after which the deployed certificate expires (NotAfter), as seconds since the Unix epoch.
# TYPE dcvd_certificate_expiration_timestamp_seconds gauge
dcvd_certificate_expiration_timestamp_seconds{name="www"} 1.8e+09
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want),
		"dcvd_certificate_ready_status", "dcvd_certificate_expiration_timestamp_seconds"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.fam(famStep), "dcvd_order_step"); n != len(orderSteps()) {
		t.Errorf("dcvd_order_step has %d series, want %d", n, len(orderSteps()))
	}
}

// TestMetricsFamilies checks that every family the design names exists, with
// its type and labels, a Help string, and nothing else under dcvd_.
func TestMetricsFamilies(t *testing.T) {
	m := New()
	m.SetCertificate("www", time.Unix(1800000000, 0), time.Unix(1795000000, 0), true)
	m.SetStep("www", string(store.StepNew))
	m.ReissueStarted("www")
	m.Failure("www", FailureDeploy)
	m.Charge("www", 1)
	m.ObserveAPICall("reissue", time.Second, nil)
	m.ObservePropagation("cloudflare", time.Second)

	want := map[string]struct {
		typ    dto.MetricType
		labels []string
	}{
		"dcvd_certificate_expiration_timestamp_seconds": {dto.MetricType_GAUGE, []string{"name"}},
		"dcvd_certificate_renewal_timestamp_seconds":    {dto.MetricType_GAUGE, []string{"name"}},
		"dcvd_certificate_ready_status":                 {dto.MetricType_GAUGE, []string{"condition", "name"}},
		"dcvd_order_step":                               {dto.MetricType_GAUGE, []string{"name", "step"}},
		"dcvd_reissues_total":                           {dto.MetricType_COUNTER, []string{"name"}},
		"dcvd_failures_total":                           {dto.MetricType_COUNTER, []string{"name", "reason"}},
		"dcvd_charges_total":                            {dto.MetricType_COUNTER, []string{"name"}},
		"dcvd_charge_cost_total":                        {dto.MetricType_COUNTER, []string{"name"}},
		"dcvd_api_request_duration_seconds":             {dto.MetricType_HISTOGRAM, []string{"op", "result"}},
		"dcvd_dns_propagation_duration_seconds":         {dto.MetricType_HISTOGRAM, []string{"provider"}},
	}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	seen := make(map[string]bool)
	goSeen := false
	for _, mf := range mfs {
		name := mf.GetName()
		if name == "go_goroutines" {
			goSeen = true
		}
		if !strings.HasPrefix(name, "dcvd_") {
			continue
		}
		seen[name] = true
		w, ok := want[name]
		if !ok {
			t.Errorf("unexpected family %s", name)
			continue
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no Help", name)
		}
		if mf.GetType() != w.typ {
			t.Errorf("%s is a %v, want %v", name, mf.GetType(), w.typ)
		}
		for _, s := range mf.GetMetric() {
			var got []string
			for _, l := range s.GetLabel() {
				got = append(got, l.GetName())
			}
			if !slices.Equal(got, w.labels) {
				t.Errorf("%s labels %q, want %q", name, got, w.labels)
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("family %s missing", name)
		}
	}
	if !goSeen {
		t.Error("Go collector not registered: go_goroutines missing")
	}
}

func TestMetricsHistogramBuckets(t *testing.T) {
	const api, dns = "dcvd_api_request_duration_seconds", "dcvd_dns_propagation_duration_seconds"
	// wantBounds are the upper bounds of each family's buckets.
	wantBounds := map[string][]float64{
		api: {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		dns: {1, 5, 10, 30, 60, 120, 300, 600, 900},
	}
	tests := []struct {
		name    string
		observe func(m *Metrics)
		family  string
		// counts are the cumulative bucket counts after observe.
		counts []uint64
	}{
		{
			name:    "api call of 3s lands in le=5",
			observe: func(m *Metrics) { m.ObserveAPICall("detail", 3*time.Second, nil) },
			family:  api,
			counts:  []uint64{0, 0, 0, 0, 0, 0, 1, 1, 1},
		},
		{
			name:    "api call of 20ms lands in the first bucket",
			observe: func(m *Metrics) { m.ObserveAPICall("detail", 20*time.Millisecond, errors.New("x")) },
			family:  api,
			counts:  []uint64{1, 1, 1, 1, 1, 1, 1, 1, 1},
		},
		{
			name:    "api call of 45s is only in +Inf",
			observe: func(m *Metrics) { m.ObserveAPICall("detail", 45*time.Second, nil) },
			family:  api,
			counts:  []uint64{0, 0, 0, 0, 0, 0, 0, 0, 0},
		},
		{
			name:    "propagation of 7 minutes lands in le=600",
			observe: func(m *Metrics) { m.ObservePropagation("alidns", 7*time.Minute) },
			family:  dns,
			counts:  []uint64{0, 0, 0, 0, 0, 0, 0, 1, 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			tt.observe(m)
			mfs, err := m.reg.Gather()
			if err != nil {
				t.Fatalf("gather: %v", err)
			}
			var h *dto.Histogram
			for _, mf := range mfs {
				if mf.GetName() == tt.family && len(mf.GetMetric()) == 1 {
					h = mf.GetMetric()[0].GetHistogram()
				}
			}
			if h == nil {
				t.Fatalf("%s: no single series", tt.family)
			}
			var bounds []float64
			var counts []uint64
			for _, b := range h.GetBucket() {
				bounds = append(bounds, b.GetUpperBound())
				counts = append(counts, b.GetCumulativeCount())
			}
			if want := wantBounds[tt.family]; !slices.Equal(bounds, want) {
				t.Errorf("bounds %v, want %v", bounds, want)
			}
			if !slices.Equal(counts, tt.counts) {
				t.Errorf("cumulative counts %v, want %v", counts, tt.counts)
			}
			if h.GetSampleCount() != 1 {
				t.Errorf("sample count %d, want 1", h.GetSampleCount())
			}
		})
	}
}

func TestMetricsHealthz(t *testing.T) {
	tests := []struct {
		name     string
		set      func(m *Metrics)
		method   string
		path     string
		wantCode int
		wantBody string
	}{
		{"starting", func(*Metrics) {}, http.MethodGet, "/healthz", http.StatusServiceUnavailable, "starting\n"},
		{"healthy", func(m *Metrics) { m.SetHealthy(true, "") }, http.MethodGet, "/healthz", http.StatusOK, "ok\n"},
		{"healthy ignores why", func(m *Metrics) { m.SetHealthy(true, "stale") }, http.MethodGet, "/healthz", http.StatusOK, "ok\n"},
		{
			"unhealthy with reason",
			func(m *Metrics) { m.SetHealthy(true, ""); m.SetHealthy(false, "state directory not writable") },
			http.MethodGet, "/healthz", http.StatusServiceUnavailable, "state directory not writable\n",
		},
		{"unhealthy without reason", func(m *Metrics) { m.SetHealthy(false, "") }, http.MethodGet, "/healthz", http.StatusServiceUnavailable, "unhealthy\n"},
		{
			"recovered",
			func(m *Metrics) { m.SetHealthy(false, "api unreachable"); m.SetHealthy(true, "") },
			http.MethodGet, "/healthz", http.StatusOK, "ok\n",
		},
		{"HEAD", func(m *Metrics) { m.SetHealthy(true, "") }, http.MethodHead, "/healthz", http.StatusOK, ""},
		{"POST refused", func(m *Metrics) { m.SetHealthy(true, "") }, http.MethodPost, "/healthz", http.StatusMethodNotAllowed, ""},
		{"POST metrics refused", func(*Metrics) {}, http.MethodPost, "/metrics", http.StatusMethodNotAllowed, ""},
		{"unknown path", func(m *Metrics) { m.SetHealthy(true, "") }, http.MethodGet, "/", http.StatusNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			tt.set(m)
			rec := httptest.NewRecorder()
			m.Handler().ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.wantCode {
				t.Errorf("%s %s: status %d, want %d", tt.method, tt.path, rec.Code, tt.wantCode)
			}
			if tt.wantBody != "" {
				if got := rec.Body.String(); got != tt.wantBody {
					t.Errorf("%s %s: body %q, want %q", tt.method, tt.path, got, tt.wantBody)
				}
			}
			if tt.path == "/healthz" && tt.wantCode != http.StatusMethodNotAllowed {
				ok, why := m.Healthy()
				if ok != (tt.wantCode == http.StatusOK) || (!ok && why+"\n" != tt.wantBody) {
					t.Errorf("Healthy() = %v, %q; served %d %q", ok, why, rec.Code, rec.Body.String())
				}
			}
		})
	}
}

// TestMetricsHandlerServesExpiry scrapes /metrics over HTTP, as Prometheus
// does, and reads the expiry gauge back from the text exposition.
func TestMetricsHandlerServesExpiry(t *testing.T) {
	notAfter := time.Date(2027, 3, 1, 12, 30, 45, 0, time.UTC)
	m := New()
	m.SetCertificate("www.example.com", notAfter, notAfter.AddDate(0, 0, -30), true)
	m.SetCertificate("api", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}, false)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	values := exposedValues(t, string(body))

	const key = `dcvd_certificate_expiration_timestamp_seconds{name="www.example.com"}`
	got, ok := values[key]
	if !ok {
		t.Fatalf("%s not served; body:\n%s", key, body)
	}
	if want := float64(notAfter.Unix()); got != want {
		t.Errorf("%s = %v, want %v (%s)", key, got, want, notAfter)
	}
	if got := time.Unix(int64(got), 0).UTC(); !got.Equal(notAfter) {
		t.Errorf("expiry reads back as %s, want %s", got, notAfter)
	}
	if v := values[`dcvd_certificate_ready_status{condition="True",name="www.example.com"}`]; v != 1 {
		t.Errorf("ready True = %v, want 1", v)
	}
	if _, ok := values[`dcvd_certificate_renewal_timestamp_seconds{name="api"}`]; ok {
		t.Error("renewal timestamp served for a certificate with nothing planned")
	}
	if !strings.Contains(string(body), "# HELP dcvd_certificate_expiration_timestamp_seconds ") {
		t.Error("no HELP line for the expiry gauge")
	}
	if _, ok := values["go_goroutines"]; !ok {
		t.Error("go_goroutines not served")
	}
}

// exposedValues parses the sample lines of a text exposition into
// "name{labels}" → value, labels as served.
func exposedValues(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := make(map[string]float64)
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("malformed exposition line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("exposition line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scan exposition: %v", err)
	}
	return out
}
