// Package metrics is dcvd's Prometheus exposition and health endpoint:
// per-certificate expiry and renewal times, the step of each order in
// flight, reissues, failures by reason, charges, API call and propagation
// latencies, and the subscription ends. The daemon calls its setters as
// things happen; every label set is bounded (failure reasons and steps are
// fixed lists, certificates are the configured ones).
package metrics

import (
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dcvd/dcvd/daemon/store"
)

// The reasons Failure counts under. Anything else is counted as
// FailureOther, so that a caller passing free text (an error message, a
// name the API returned) cannot make the label set grow without bound.
const (
	FailureAPI    = "api"    // the reseller API refused or could not be reached
	FailureDCV    = "dcv"    // publishing or checking the DCV records or files
	FailureVerify = "verify" // the issued certificate did not verify
	FailureDeploy = "deploy" // writing the certificate files
	FailureReload = "reload" // the reload command
	// FailurePreflight: the checks before a paid reissue refused the
	// setup (nothing was sent).
	FailurePreflight = "preflight"
	FailureOther     = "other"
)

// failureReasons are the reasons Failure keeps apart, in the order
// SetCertificate initialises them.
func failureReasons() []string {
	return []string{FailureAPI, FailureDCV, FailureVerify, FailureDeploy, FailureReload, FailurePreflight, FailureOther}
}

// orderSteps are the steps dcvd_order_step always has a series for, so that
// a query on one step (dcvd_order_step{step="publishing"} == 1) does not
// depend on which steps a certificate happened to go through.
func orderSteps() []store.Step {
	return []store.Step{store.StepNew, store.StepSubmitted, store.StepPublishing, store.StepPublished, store.StepVisible,
		store.StepRechecked, store.StepIssued, store.StepDeployed, store.StepReloaded, store.StepDone, store.StepFailed}
}

// Ready conditions of dcvd_certificate_ready_status, as cert-manager names them.
const (
	conditionTrue  = "True"
	conditionFalse = "False"
)

// API call results of dcvd_api_request_duration_seconds.
const (
	resultOK    = "ok"
	resultError = "error"
)

// Metrics is what dcvd exports to Prometheus, in its own registry so that
// two daemons in one process (tests, the demo) do not collide. It is safe
// for concurrent use. Every method is a no-op on a nil *Metrics, so the
// daemon calls them unconditionally and runs without metrics when none are
// configured.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	expiry      *prometheus.GaugeVec
	serviceEnd  *prometheus.GaugeVec
	renewal     *prometheus.GaugeVec
	ready       *prometheus.GaugeVec
	step        *prometheus.GaugeVec
	reissues    *prometheus.CounterVec
	failures    *prometheus.CounterVec
	charges     *prometheus.CounterVec
	chargeCost  *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec
	propagation *prometheus.HistogramVec

	// mu serialises the series of one certificate that must change
	// together: the one-hot step gauge, and removal against a concurrent
	// SetStep re-creating what RemoveCertificate just deleted.
	mu sync.Mutex
	// extraStep is, per certificate, the step outside orderSteps that
	// SetStep last set (a step added after this file was written); it is
	// deleted when the certificate moves on, so at most one such series
	// exists per certificate.
	extraStep map[string]string
	// counted are the certificates whose counters exist (at 0 or more):
	// made once, not on every sweep (13 label lookups per certificate).
	counted map[string]bool

	healthMu  sync.RWMutex
	healthy   bool
	unhealthy string // why, when !healthy
}

// New returns metrics in a new registry that also holds the Go
// runtime and process collectors. It starts unhealthy ("starting") until
// the daemon calls SetHealthy(true, ""), so that /healthz does not report a
// daemon that has not yet loaded its state.
func New() *Metrics {
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		extraStep: make(map[string]string),
		counted:   make(map[string]bool),
		unhealthy: "starting",
	}
	m.expiry = newGaugeVec("dcvd_certificate_expiration_timestamp_seconds",
		"The date after which the deployed certificate expires (NotAfter), as seconds since the Unix epoch.",
		"name")
	m.serviceEnd = newGaugeVec("dcvd_service_expiration_timestamp_seconds",
		"The end of the paid period of the certificate's service (the reseller's order), after which no reissue renews it, as seconds since the Unix epoch. Absent while the reseller has not said.",
		"name", "service_id")
	m.renewal = newGaugeVec("dcvd_certificate_renewal_timestamp_seconds",
		"The time at which dcvd plans to reissue the certificate, as seconds since the Unix epoch.",
		"name")
	m.ready = newGaugeVec("dcvd_certificate_ready_status",
		"Whether the certificate is ready: a valid certificate is deployed and not due for renewal. 1 on the condition that holds, 0 on the other.",
		"name", "condition")
	m.step = newGaugeVec("dcvd_order_step",
		"The step of the certificate's current reissue order: 1 on the current step, 0 on the others; 0 on all when no order is in progress.",
		"name", "step")
	m.reissues = newCounterVec("dcvd_reissues_total",
		"Reissue orders started for the certificate.",
		"name")
	m.failures = newCounterVec("dcvd_failures_total",
		"Failures while renewing the certificate, by reason (api, dcv, verify, deploy, reload, other).",
		"name", "reason")
	m.charges = newCounterVec("dcvd_charges_total",
		"Reissues of the certificate the reseller charged for.",
		"name")
	m.chargeCost = newCounterVec("dcvd_charge_cost_total",
		"Sum of what the reseller charged for reissues of the certificate, in the account's currency.",
		"name")
	m.apiDuration = newHistogramVec("dcvd_api_request_duration_seconds",
		"Duration of reseller API calls, by operation and result (ok or error).",
		[]float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}, "op", "result")
	m.propagation = newHistogramVec("dcvd_dns_propagation_duration_seconds",
		"Time from publishing DCV records until every authoritative nameserver answers them, by DNS provider.",
		[]float64{1, 5, 10, 30, 60, 120, 300, 600, 900}, "provider")

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.expiry, m.serviceEnd, m.renewal, m.ready, m.step,
		m.reissues, m.failures, m.charges, m.chargeCost,
		m.apiDuration, m.propagation,
	)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// A collector that fails (the process collector without /proc)
		// must not hide the certificate metrics, which are the point.
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg,
		// Bounded so that a stuck or hammering scraper cannot pile up
		// goroutines in a daemon meant to run unattended for years.
		MaxRequestsInFlight: 10,
		Timeout:             30 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", m.serveHealth)
	m.handler = mux
	return m
}

// newGaugeVec, newCounterVec and newHistogramVec make the metric vectors
// New registers: one name, help text and label set each.
func newGaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

func newCounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func newHistogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

// Handler serves GET /metrics (the registry in the Prometheus exposition
// formats) and GET /healthz (200 "ok\n" when healthy, else 503 with the
// reason). On a nil *Metrics it answers 404 to everything.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return m.handler
}

func (m *Metrics) serveHealth(w http.ResponseWriter, _ *http.Request) {
	ok, why := m.Healthy()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if ok {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write([]byte(why + "\n"))
}

// SetHealthy sets what /healthz reports. why says what is wrong when ok is
// false; it is served to anyone who can reach the listener, so it must not
// carry secrets. An empty why reads "unhealthy".
func (m *Metrics) SetHealthy(ok bool, why string) {
	if m == nil {
		return
	}
	if !ok && why == "" {
		why = "unhealthy"
	}
	if ok {
		why = ""
	}
	m.healthMu.Lock()
	m.healthy, m.unhealthy = ok, why
	m.healthMu.Unlock()
}

// Healthy reports what /healthz serves: whether the daemon is healthy and,
// if not, why. A nil *Metrics tracks nothing and reports "metrics disabled".
func (m *Metrics) Healthy() (ok bool, why string) {
	if m == nil {
		return false, "metrics disabled"
	}
	m.healthMu.RLock()
	defer m.healthMu.RUnlock()
	return m.healthy, m.unhealthy
}

// SetCertificate records the state of certificate name: the NotAfter of the
// deployed certificate, when it is due for renewal, and whether it is ready.
// A zero notAfter (nothing deployed yet) or renewAt (nothing planned)
// removes that gauge rather than exporting year 1. It also creates the
// certificate's counters at 0, so that rate() and increase() see the first
// failure or reissue instead of a series appearing from nothing.
func (m *Metrics) SetCertificate(name string, notAfter, renewAt time.Time, ready bool) {
	if m == nil {
		return
	}
	setTimestamp(m.expiry, name, notAfter)
	setTimestamp(m.renewal, name, renewAt)
	yes, no := 0.0, 1.0
	if ready {
		yes, no = 1, 0
	}
	m.ready.WithLabelValues(name, conditionTrue).Set(yes)
	m.ready.WithLabelValues(name, conditionFalse).Set(no)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.counted[name] {
		return
	}
	m.counted[name] = true
	// Counters exist at 0 from the start, so that rate() and increase()
	// see their first increment.
	m.reissues.WithLabelValues(name)
	for _, r := range failureReasons() {
		m.failures.WithLabelValues(name, r)
	}
	m.charges.WithLabelValues(name)
	m.chargeCost.WithLabelValues(name)
}

// SetService records the end of certificate name's service serviceID,
// replacing the series of any other service_id it had (a renewal bought
// brings a new one). A zero expires (the reseller did not say) removes it.
func (m *Metrics) SetService(name, serviceID string, expires time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.serviceEnd.DeletePartialMatch(prometheus.Labels{"name": name})
	if !expires.IsZero() {
		m.serviceEnd.WithLabelValues(name, serviceID).Set(float64(expires.Unix()))
	}
}

func setTimestamp(g *prometheus.GaugeVec, name string, t time.Time) {
	if t.IsZero() {
		g.DeleteLabelValues(name)
		return
	}
	g.WithLabelValues(name).Set(float64(t.Unix()))
}

// SetStep records the step of certificate name's current order: 1 on step,
// 0 on every other step. An empty step means no order is in progress (all
// 0).
func (m *Metrics) SetStep(name string, step string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	known := false
	for _, s := range orderSteps() {
		v := 0.0
		if string(s) == step {
			v, known = 1, true
		}
		m.step.WithLabelValues(name, string(s)).Set(v)
	}
	if old, ok := m.extraStep[name]; ok && old != step {
		m.step.DeleteLabelValues(name, old)
		delete(m.extraStep, name)
	}
	if !known && step != "" {
		m.step.WithLabelValues(name, step).Set(1)
		m.extraStep[name] = step
	}
}

// ReissueStarted counts a reissue order started for certificate name.
func (m *Metrics) ReissueStarted(name string) {
	if m == nil {
		return
	}
	m.reissues.WithLabelValues(name).Inc()
}

// Failure counts a failure renewing certificate name. reason is one of the
// Failure* constants; any other value counts as FailureOther.
func (m *Metrics) Failure(name, reason string) {
	if m == nil {
		return
	}
	switch reason {
	case FailureAPI, FailureDCV, FailureVerify, FailureDeploy, FailureReload, FailurePreflight, FailureOther:
	default:
		reason = FailureOther
	}
	m.failures.WithLabelValues(name, reason).Inc()
}

// Charge counts a reissue of certificate name the reseller charged for, and
// adds its cost. The cost comes from the API and is not trusted: a
// negative, NaN or infinite cost (which a Prometheus counter cannot take
// without breaking) still counts the charge but adds nothing to the cost.
func (m *Metrics) Charge(name string, cost float64) {
	if m == nil {
		return
	}
	m.charges.WithLabelValues(name).Inc()
	c := m.chargeCost.WithLabelValues(name)
	if cost >= 0 && !math.IsInf(cost, 0) { // NaN fails cost >= 0
		c.Add(cost)
	}
}

// ObserveAPICall records the duration of one reseller API call of operation
// op (the endpoint's name, from a fixed set: never a value the API
// returned), with result "error" when err is not nil, else "ok".
func (m *Metrics) ObserveAPICall(op string, d time.Duration, err error) {
	if m == nil {
		return
	}
	result := resultOK
	if err != nil {
		result = resultError
	}
	m.apiDuration.WithLabelValues(op, result).Observe(d.Seconds())
}

// ObservePropagation records how long DCV records published through DNS
// provider (its [dns.NAME] name) took to be answered by every authoritative
// nameserver.
func (m *Metrics) ObservePropagation(provider string, d time.Duration) {
	if m == nil {
		return
	}
	m.propagation.WithLabelValues(provider).Observe(d.Seconds())
}

// RemoveCertificate deletes every series of certificate name, for a
// certificate a reload dropped from the config; otherwise its last expiry
// would be exported, and alerted on, forever.
func (m *Metrics) RemoveCertificate(name string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l := prometheus.Labels{"name": name}
	m.expiry.DeletePartialMatch(l)
	m.serviceEnd.DeletePartialMatch(l)
	m.renewal.DeletePartialMatch(l)
	m.ready.DeletePartialMatch(l)
	m.step.DeletePartialMatch(l)
	m.reissues.DeletePartialMatch(l)
	m.failures.DeletePartialMatch(l)
	m.charges.DeletePartialMatch(l)
	m.chargeCost.DeletePartialMatch(l)
	delete(m.extraStep, name)
}
