package metrics

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/dcvd/dcvd/daemon/store"
)

// metricsSnapshot gathers every dcvd_ series of m as "name{l="v",…}" →
// value; a histogram contributes its _count and _sum (buckets are checked
// in TestMetricsHistogramBuckets).
func metricsSnapshot(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "dcvd_") {
			continue
		}
		for _, s := range mf.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			ls := "{" + strings.Join(labels, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_GAUGE:
				out[mf.GetName()+ls] = s.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				out[mf.GetName()+ls] = s.GetCounter().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[mf.GetName()+"_count"+ls] = float64(s.GetHistogram().GetSampleCount())
				out[mf.GetName()+"_sum"+ls] = s.GetHistogram().GetSampleSum()
			default:
				t.Fatalf("%s: unexpected type %v", mf.GetName(), mf.GetType())
			}
		}
	}
	return out
}

// metricsDiff returns the series whose value changed or that appeared
// (changed) and those that disappeared (gone, sorted).
func metricsDiff(before, after map[string]float64) (changed map[string]float64, gone []string) {
	changed = make(map[string]float64)
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			changed[k] = v
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			gone = append(gone, k)
		}
	}
	slices.Sort(gone)
	return changed, gone
}

func TestMetricsMethodsChangeExactlyExpectedSeries(t *testing.T) {
	notAfter := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	renewAt := time.Date(2027, 1, 30, 12, 0, 0, 0, time.UTC)
	na, ra := float64(notAfter.Unix()), float64(renewAt.Unix())

	// newCert is what SetCertificate creates for a certificate not yet seen.
	newCert := func(name string, ready bool) map[string]float64 {
		yes, no := 0.0, 1.0
		if ready {
			yes, no = 1, 0
		}
		q := strconv.Quote(name)
		return map[string]float64{
			`dcvd_certificate_expiration_timestamp_seconds{name=` + q + `}`:   na,
			`dcvd_certificate_renewal_timestamp_seconds{name=` + q + `}`:      ra,
			`dcvd_certificate_ready_status{condition="True",name=` + q + `}`:  yes,
			`dcvd_certificate_ready_status{condition="False",name=` + q + `}`: no,
			`dcvd_reissues_total{name=` + q + `}`:                             0,
			`dcvd_charges_total{name=` + q + `}`:                              0,
			`dcvd_charge_cost_total{name=` + q + `}`:                          0,
			`dcvd_failures_total{name=` + q + `,reason="api"}`:                0,
			`dcvd_failures_total{name=` + q + `,reason="dcv"}`:                0,
			`dcvd_failures_total{name=` + q + `,reason="verify"}`:             0,
			`dcvd_failures_total{name=` + q + `,reason="deploy"}`:             0,
			`dcvd_failures_total{name=` + q + `,reason="reload"}`:             0,
			`dcvd_failures_total{name=` + q + `,reason="preflight"}`:          0,
			`dcvd_failures_total{name=` + q + `,reason="other"}`:              0,
		}
	}
	// steps is the step gauge of name with current step cur ("" for none).
	steps := func(name, cur string) map[string]float64 {
		w := make(map[string]float64)
		for _, s := range orderSteps() {
			v := 0.0
			if string(s) == cur {
				v = 1
			}
			w[fmt.Sprintf("dcvd_order_step{name=%q,step=%q}", name, s)] = v
		}
		return w
	}
	// setStep is an action that sets the step of name to s.
	setStep := func(name, s string) func(m *Metrics) {
		return func(m *Metrics) { m.SetStep(name, s) }
	}
	// moved is the step gauge of name after moving from one step to another.
	moved := func(name, from, to string) map[string]float64 {
		return map[string]float64{
			fmt.Sprintf("dcvd_order_step{name=%q,step=%q}", name, from): 0,
			fmt.Sprintf("dcvd_order_step{name=%q,step=%q}", name, to):   1,
		}
	}
	names := func(m map[string]float64) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	merge := func(ms ...map[string]float64) map[string]float64 {
		out := make(map[string]float64)
		for _, m := range ms {
			for k, v := range m {
				out[k] = v
			}
		}
		return out
	}

	tests := []struct {
		name   string
		setup  func(m *Metrics)
		action func(m *Metrics)
		want   map[string]float64 // series added or changed, with their new value
		gone   []string           // series removed
	}{
		{
			name:   "SetCertificate new ready",
			action: func(m *Metrics) { m.SetCertificate("www", notAfter, renewAt, true) },
			want:   newCert("www", true),
		},
		{
			name:   "SetCertificate new not ready",
			action: func(m *Metrics) { m.SetCertificate("www", notAfter, renewAt, false) },
			want:   newCert("www", false),
		},
		{
			name:   "SetCertificate ready to not ready changes only the condition",
			setup:  func(m *Metrics) { m.SetCertificate("www", notAfter, renewAt, true) },
			action: func(m *Metrics) { m.SetCertificate("www", notAfter, renewAt, false) },
			want: map[string]float64{
				`dcvd_certificate_ready_status{condition="True",name="www"}`:  0,
				`dcvd_certificate_ready_status{condition="False",name="www"}`: 1,
			},
		},
		{
			name:   "SetCertificate renewed moves both timestamps",
			setup:  func(m *Metrics) { m.SetCertificate("www", notAfter, renewAt, true) },
			action: func(m *Metrics) { m.SetCertificate("www", notAfter.AddDate(1, 0, 0), renewAt.AddDate(1, 0, 0), true) },
			want: map[string]float64{
				`dcvd_certificate_expiration_timestamp_seconds{name="www"}`: float64(notAfter.AddDate(1, 0, 0).Unix()),
				`dcvd_certificate_renewal_timestamp_seconds{name="www"}`:    float64(renewAt.AddDate(1, 0, 0).Unix()),
			},
		},
		{
			name:   "SetCertificate zero times remove the timestamps instead of exporting year 1",
			setup:  func(m *Metrics) { m.SetCertificate("www", notAfter, renewAt, true) },
			action: func(m *Metrics) { m.SetCertificate("www", time.Time{}, time.Time{}, false) },
			want: map[string]float64{
				`dcvd_certificate_ready_status{condition="True",name="www"}`:  0,
				`dcvd_certificate_ready_status{condition="False",name="www"}`: 1,
			},
			gone: []string{
				`dcvd_certificate_expiration_timestamp_seconds{name="www"}`,
				`dcvd_certificate_renewal_timestamp_seconds{name="www"}`,
			},
		},
		{
			name:   "SetStep first step",
			action: setStep("www", "publishing"),
			want:   steps("www", "publishing"),
		},
		{
			name:   "SetStep next step changes two series",
			setup:  setStep("www", "publishing"),
			action: setStep("www", "visible"),
			want:   moved("www", "publishing", "visible"),
		},
		{
			name:   "SetStep same step changes nothing",
			setup:  setStep("www", "visible"),
			action: setStep("www", "visible"),
			want:   map[string]float64{},
		},
		{
			name:   "SetStep empty means no order",
			setup:  setStep("www", "visible"),
			action: setStep("www", ""),
			want:   map[string]float64{`dcvd_order_step{name="www",step="visible"}`: 0},
		},
		{
			name:   "SetStep unknown step gets its own series",
			setup:  setStep("www", "visible"),
			action: setStep("www", "future"),
			want:   moved("www", "visible", "future"),
		},
		{
			name:   "SetStep leaving an unknown step deletes it",
			setup:  setStep("www", "future"),
			action: setStep("www", "done"),
			want:   map[string]float64{`dcvd_order_step{name="www",step="done"}`: 1},
			gone:   []string{`dcvd_order_step{name="www",step="future"}`},
		},
		{
			name:   "SetStep does not touch another certificate",
			setup:  func(m *Metrics) { m.SetStep("a", "issued"); m.SetStep("b", "issued") },
			action: setStep("a", "deployed"),
			want:   moved("a", "issued", "deployed"),
		},
		{
			name:   "ReissueStarted",
			action: func(m *Metrics) { m.ReissueStarted("www") },
			want:   map[string]float64{`dcvd_reissues_total{name="www"}`: 1},
		},
		{
			name:   "ReissueStarted again",
			setup:  func(m *Metrics) { m.ReissueStarted("www") },
			action: func(m *Metrics) { m.ReissueStarted("www") },
			want:   map[string]float64{`dcvd_reissues_total{name="www"}`: 2},
		},
		{
			name:   "Failure known reason",
			setup:  func(m *Metrics) { m.SetCertificate("www", notAfter, renewAt, true) },
			action: func(m *Metrics) { m.Failure("www", FailureDCV) },
			want:   map[string]float64{`dcvd_failures_total{name="www",reason="dcv"}`: 1},
		},
		{
			name:   "Failure free text counts as other",
			action: func(m *Metrics) { m.Failure("www", "dial tcp 10.0.0.1:443: connection refused") },
			want:   map[string]float64{`dcvd_failures_total{name="www",reason="other"}`: 1},
		},
		{
			name:   "Failure empty reason counts as other",
			action: func(m *Metrics) { m.Failure("www", "") },
			want:   map[string]float64{`dcvd_failures_total{name="www",reason="other"}`: 1},
		},
		{
			name:   "Failure reason is case sensitive",
			action: func(m *Metrics) { m.Failure("www", "API") },
			want:   map[string]float64{`dcvd_failures_total{name="www",reason="other"}`: 1},
		},
		{
			name:   "Charge",
			action: func(m *Metrics) { m.Charge("www", 12.5) },
			want: map[string]float64{
				`dcvd_charges_total{name="www"}`:     1,
				`dcvd_charge_cost_total{name="www"}`: 12.5,
			},
		},
		{
			name:   "Charge adds up",
			setup:  func(m *Metrics) { m.Charge("www", 12.5) },
			action: func(m *Metrics) { m.Charge("www", 0.25) },
			want: map[string]float64{
				`dcvd_charges_total{name="www"}`:     2,
				`dcvd_charge_cost_total{name="www"}`: 12.75,
			},
		},
		{
			name:   "Charge negative cost counts the charge only",
			action: func(m *Metrics) { m.Charge("www", -3) },
			want: map[string]float64{
				`dcvd_charges_total{name="www"}`:     1,
				`dcvd_charge_cost_total{name="www"}`: 0,
			},
		},
		{
			name:   "Charge NaN cost counts the charge only",
			action: func(m *Metrics) { m.Charge("www", math.NaN()) },
			want: map[string]float64{
				`dcvd_charges_total{name="www"}`:     1,
				`dcvd_charge_cost_total{name="www"}`: 0,
			},
		},
		{
			name:   "Charge infinite cost counts the charge only",
			action: func(m *Metrics) { m.Charge("www", math.Inf(1)) },
			want: map[string]float64{
				`dcvd_charges_total{name="www"}`:     1,
				`dcvd_charge_cost_total{name="www"}`: 0,
			},
		},
		{
			name:   "ObserveAPICall ok",
			action: func(m *Metrics) { m.ObserveAPICall("reissue", 300*time.Millisecond, nil) },
			want: map[string]float64{
				`dcvd_api_request_duration_seconds_count{op="reissue",result="ok"}`: 1,
				`dcvd_api_request_duration_seconds_sum{op="reissue",result="ok"}`:   0.3,
			},
		},
		{
			name:   "ObserveAPICall error",
			setup:  func(m *Metrics) { m.ObserveAPICall("detail", time.Second, nil) },
			action: func(m *Metrics) { m.ObserveAPICall("detail", 2*time.Second, errors.New("boom")) },
			want: map[string]float64{
				`dcvd_api_request_duration_seconds_count{op="detail",result="error"}`: 1,
				`dcvd_api_request_duration_seconds_sum{op="detail",result="error"}`:   2,
			},
		},
		{
			name:   "ObservePropagation",
			action: func(m *Metrics) { m.ObservePropagation("cloudflare", 42*time.Second) },
			want: map[string]float64{
				`dcvd_dns_propagation_duration_seconds_count{provider="cloudflare"}`: 1,
				`dcvd_dns_propagation_duration_seconds_sum{provider="cloudflare"}`:   42,
			},
		},
		{
			name: "RemoveCertificate removes every series of that certificate only",
			setup: func(m *Metrics) {
				for _, n := range []string{"a", "b"} {
					m.SetCertificate(n, notAfter, renewAt, true)
					m.SetStep(n, "visible")
					m.ReissueStarted(n)
					m.Failure(n, FailureAPI)
					m.Charge(n, 1)
				}
				m.SetStep("a", "future")
				m.ObserveAPICall("reissue", time.Second, nil)
				m.ObservePropagation("cloudflare", time.Second)
			},
			action: func(m *Metrics) { m.RemoveCertificate("a") },
			want:   map[string]float64{},
			gone: names(merge(newCert("a", true), steps("a", ""), map[string]float64{
				`dcvd_order_step{name="a",step="future"}`: 1,
			})),
		},
		{
			name:   "RemoveCertificate unknown name changes nothing",
			setup:  func(m *Metrics) { m.SetCertificate("a", notAfter, renewAt, true); m.SetStep("a", "new") },
			action: func(m *Metrics) { m.RemoveCertificate("b") },
			want:   map[string]float64{},
		},
		{
			name:   "RemoveCertificate then SetStep starts afresh",
			setup:  func(m *Metrics) { m.SetStep("a", "future"); m.RemoveCertificate("a") },
			action: setStep("a", "new"),
			want:   steps("a", "new"),
		},
		{
			name:   "SetHealthy changes no series",
			action: func(m *Metrics) { m.SetHealthy(false, "state directory not writable") },
			want:   map[string]float64{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New()
			if tt.setup != nil {
				tt.setup(m)
			}
			before := metricsSnapshot(t, m)
			tt.action(m)
			changed, gone := metricsDiff(before, metricsSnapshot(t, m))
			for k, v := range tt.want {
				got, ok := changed[k]
				switch {
				case !ok:
					t.Errorf("%s: not changed, want %v", k, v)
				case got != v:
					t.Errorf("%s = %v, want %v", k, got, v)
				}
			}
			for k, v := range changed {
				if _, ok := tt.want[k]; !ok {
					t.Errorf("%s = %v: changed unexpectedly", k, v)
				}
			}
			want := slices.Clone(tt.gone)
			slices.Sort(want)
			if !slices.Equal(gone, want) {
				t.Errorf("removed series:\n got %q\nwant %q", gone, want)
			}
		})
	}
}

// TestMetricsStepOneHot walks a certificate through every step and checks
// that exactly the current one is 1, and that another certificate's order
// is left alone.
func TestMetricsStepOneHot(t *testing.T) {
	m := New()
	m.SetStep("other", string(store.StepRechecked))
	seq := append([]string{""}, func() []string {
		var s []string
		for _, st := range orderSteps() {
			s = append(s, string(st))
		}
		return s
	}()...)
	seq = append(seq, "future", "", string(store.StepNew))
	for _, cur := range seq {
		m.SetStep("www", cur)
		ones, series := 0, 0
		for k, v := range metricsSnapshot(t, m) {
			if !strings.HasPrefix(k, `dcvd_order_step{name="www",`) {
				continue
			}
			series++
			switch v {
			case 1:
				ones++
				if want := fmt.Sprintf("step=%q}", cur); !strings.HasSuffix(k, want) {
					t.Errorf("step %q: %s is 1", cur, k)
				}
			case 0:
			default:
				t.Errorf("step %q: %s = %v, want 0 or 1", cur, k, v)
			}
		}
		wantOnes, wantSeries := 1, len(orderSteps())
		switch cur {
		case "":
			wantOnes = 0
		case "future":
			wantSeries++
		}
		if ones != wantOnes || series != wantSeries {
			t.Errorf("step %q: %d series at 1 of %d, want %d of %d", cur, ones, series, wantOnes, wantSeries)
		}
		if got := testutil.ToFloat64(m.fam(famStep).WithLabelValues("other", string(store.StepRechecked))); got != 1 {
			t.Errorf("step %q: other certificate's step = %v, want 1", cur, got)
		}
	}
}

func TestMetricsNilReceiver(t *testing.T) {
	var m *Metrics
	m.SetHealthy(true, "")
	m.SetCertificate("www", time.Now(), time.Now(), true)
	m.SetStep("www", "new")
	m.ReissueStarted("www")
	m.Failure("www", FailureAPI)
	m.Charge("www", 1)
	m.ObserveAPICall("reissue", time.Second, errors.New("x"))
	m.ObservePropagation("cloudflare", time.Second)
	m.RemoveCertificate("www")
	if ok, why := m.Healthy(); ok || why == "" {
		t.Errorf("nil Healthy() = %v, %q; want false with a reason", ok, why)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("nil Handler: status %d, want 404", rec.Code)
	}
}

// TestMetricsRegistriesIndependent guards the "no global state" rule: two
// daemons in one process must not share or collide on series.
func TestMetricsRegistriesIndependent(t *testing.T) {
	a, b := New(), New()
	a.ReissueStarted("www")
	a.SetHealthy(true, "")
	if got := testutil.ToFloat64(a.fam(famReissues).WithLabelValues("www")); got != 1 {
		t.Errorf("a: reissues = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(b.fam(famReissues)); n != 0 {
		t.Errorf("b: %d reissue series, want 0", n)
	}
	if ok, _ := b.Healthy(); ok {
		t.Error("b healthy after SetHealthy on a")
	}
}

// TestMetricsConcurrent is for the race detector: updates, removals and
// scrapes at once, after which each certificate's step gauge is still
// one-hot or all zero.
func TestMetricsConcurrent(t *testing.T) {
	m := New()
	h := m.Handler()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("c%d", g%3)
			for i := range 200 {
				steps := orderSteps()
				m.SetStep(name, string(steps[i%len(steps)]))
				if i%17 == 0 {
					m.SetStep(name, "future")
				}
				m.SetCertificate(name, time.Unix(int64(1800000000+i), 0), time.Unix(int64(1790000000+i), 0), i%2 == 0)
				m.ReissueStarted(name)
				m.Failure(name, FailureReload)
				m.Charge(name, 0.5)
				m.ObserveAPICall("detail", time.Duration(i)*time.Millisecond, nil)
				m.ObservePropagation("p", time.Duration(i)*time.Second)
				m.SetHealthy(i%3 != 0, "flapping")
				if i%50 == 0 {
					m.RemoveCertificate(name)
				}
				if i%40 == 0 {
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
					if rec.Code != http.StatusOK {
						t.Errorf("scrape: status %d", rec.Code)
					}
					h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/healthz", nil))
				}
			}
		}()
	}
	wg.Wait()
	ones := make(map[string]int)
	extra := make(map[string]int)
	for k, v := range metricsSnapshot(t, m) {
		if !strings.HasPrefix(k, "dcvd_order_step{") {
			continue
		}
		name := k[len(`dcvd_order_step{name="`):strings.Index(k, `",step=`)]
		if v == 1 {
			ones[name]++
		}
		if strings.HasSuffix(k, `step="future"}`) {
			extra[name]++
		}
	}
	for name, n := range ones {
		if n > 1 {
			t.Errorf("%s: %d steps at 1", name, n)
		}
	}
	for name, n := range extra {
		if n > 1 {
			t.Errorf("%s: %d unknown-step series", name, n)
		}
	}
}
