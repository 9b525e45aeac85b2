package metrics

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/store"
)

// benchCerts is the number of certificates the benchmarks export.
const benchCerts = 10000

// fill calls every per-certificate setter once for n certificates.
func fill(m *Metrics, names []string) {
	na, ra, se := time.Unix(1800000000, 0), time.Unix(1795000000, 0), time.Unix(1810000000, 0)
	for _, name := range names {
		m.SetCertificate(name, na, ra, true)
		m.SetService(name, "svc-"+name, se)
		m.SetStep(name, string(store.StepPublishing))
		m.ReissueStarted(name)
		m.Failure(name, FailureDCV)
		m.Charge(name, 1.5)
	}
}

func benchNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = "cert-" + strconv.Itoa(i) + ".example.com"
	}
	return names
}

// BenchmarkMetricsRetained reports the heap the metrics keep per
// certificate once every setter has been called for benchCerts of them.
func BenchmarkMetricsRetained(b *testing.B) {
	names := benchNames(benchCerts)
	var perCert float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		m := New()
		fill(m, names)
		runtime.GC()
		runtime.ReadMemStats(&after)
		perCert = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / benchCerts
		runtime.KeepAlive(m)
	}
	b.ReportMetric(perCert, "B/cert")
}

type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkMetricsScrape is one GET /metrics with benchCerts certificates.
func BenchmarkMetricsScrape(b *testing.B) {
	m := New()
	fill(m, benchNames(benchCerts))
	h := m.Handler()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	for b.Loop() {
		h.ServeHTTP(&discard{h: make(http.Header)}, req)
	}
}
