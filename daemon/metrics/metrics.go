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
	"slices"
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
//
// The per-certificate series are not kept as Prometheus vectors (some 26
// series objects with their label pairs per certificate) but as one small
// certState per certificate, which certCollector turns into constant
// metrics at scrape time: what the daemon holds between scrapes grows by a
// couple of hundred bytes per certificate rather than by kilobytes.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	// collector, registered once, emits every per-certificate family
	// from certs.
	collector   *certCollector
	apiDuration *prometheus.HistogramVec
	propagation *prometheus.HistogramVec

	// mu guards certs: every setter changes the state of one certificate
	// under it, so that the series of a certificate that must change
	// together (the one-hot step gauge, removal against a concurrent
	// SetStep) do so at once for a scrape.
	mu    sync.RWMutex
	certs map[string]*certState

	healthMu  sync.RWMutex
	healthy   bool
	unhealthy string // why, when !healthy
}

// Which series of a certState exist (certState.has). A series is absent
// until the setter that creates it is called, exactly as a vector's series
// would be, so that the exposition is the same.
const (
	hasFailure0 = 1 << iota // hasFailure0<<i: failures of failureReasons()[i]
	_
	_
	_
	_
	_
	_
	hasExpiry
	hasRenewal
	hasReady
	hasService
	hasStep
	hasReissues
	hasCharges
	hasChargeCost

	hasCounters = hasReissues | hasCharges | hasChargeCost | (hasFailure0<<numReasons - 1)
)

// numReasons is len(failureReasons()).
const numReasons = 7

// certState is what is exported of one certificate.
type certState struct {
	has uint16
	// counted: the counters were made at 0 once (see SetCertificate). It
	// outlives RemoveCertificate, as the set of counted names always has.
	counted bool
	ready   bool
	// notAfter, renewAt and serviceEnd are Unix seconds.
	notAfter, renewAt, serviceEnd int64
	serviceID                     string
	// curStep is the step SetStep last set ("" for none); one outside
	// orderSteps gets a series of its own.
	curStep string
	// The counters. chargeCost is kept in an integral and a fractional
	// part, added to as a Prometheus counter adds, so that its sum is the
	// same to the last bit.
	reissues, charges uint64
	failures          [numReasons]uint64
	costInt           uint64
	costFrac          float64
	// created is when the certificate's first counter series was made
	// (Unix nanoseconds), exported as the counters' created timestamp.
	created int64
}

// Families of the per-certificate series, indexes into certCollector.descs.
type famID int

const (
	famExpiry famID = iota
	famServiceEnd
	famRenewal
	famReady
	famStep
	famReissues
	famFailures
	famCharges
	famChargeCost
	numFams
)

// New returns metrics in a new registry that also holds the Go
// runtime and process collectors. It starts unhealthy ("starting") until
// the daemon calls SetHealthy(true, ""), so that /healthz does not report a
// daemon that has not yet loaded its state.
func New() *Metrics {
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		certs:     make(map[string]*certState),
		unhealthy: "starting",
	}
	c := &certCollector{m: m}
	c.descs[famExpiry] = prometheus.NewDesc("dcvd_certificate_expiration_timestamp_seconds",
		"The date after which the deployed certificate expires (NotAfter), as seconds since the Unix epoch.",
		[]string{"name"}, nil)
	c.descs[famServiceEnd] = prometheus.NewDesc("dcvd_service_expiration_timestamp_seconds",
		"The end of the paid period of the certificate's service (the reseller's order), after which no reissue renews it, as seconds since the Unix epoch. Absent while the reseller has not said.",
		[]string{"name", "service_id"}, nil)
	c.descs[famRenewal] = prometheus.NewDesc("dcvd_certificate_renewal_timestamp_seconds",
		"The time at which dcvd plans to reissue the certificate, as seconds since the Unix epoch.",
		[]string{"name"}, nil)
	c.descs[famReady] = prometheus.NewDesc("dcvd_certificate_ready_status",
		"Whether the certificate is ready: a valid certificate is deployed and not due for renewal. 1 on the condition that holds, 0 on the other.",
		[]string{"name", "condition"}, nil)
	c.descs[famStep] = prometheus.NewDesc("dcvd_order_step",
		"The step of the certificate's current reissue order: 1 on the current step, 0 on the others; 0 on all when no order is in progress.",
		[]string{"name", "step"}, nil)
	c.descs[famReissues] = prometheus.NewDesc("dcvd_reissues_total",
		"Reissue orders started for the certificate.",
		[]string{"name"}, nil)
	c.descs[famFailures] = prometheus.NewDesc("dcvd_failures_total",
		"Failures while renewing the certificate, by reason (api, dcv, verify, deploy, reload, other).",
		[]string{"name", "reason"}, nil)
	c.descs[famCharges] = prometheus.NewDesc("dcvd_charges_total",
		"Reissues of the certificate the reseller charged for.",
		[]string{"name"}, nil)
	c.descs[famChargeCost] = prometheus.NewDesc("dcvd_charge_cost_total",
		"Sum of what the reseller charged for reissues of the certificate, in the account's currency.",
		[]string{"name"}, nil)
	m.collector = c
	m.apiDuration = newHistogramVec("dcvd_api_request_duration_seconds",
		"Duration of reseller API calls, by operation and result (ok or error).",
		[]float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}, "op", "result")
	m.propagation = newHistogramVec("dcvd_dns_propagation_duration_seconds",
		"Time from publishing DCV records until every authoritative nameserver answers them, by DNS provider.",
		[]float64{1, 5, 10, 30, 60, 120, 300, 600, 900}, "provider")

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		c,
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

// newHistogramVec makes a histogram vector New registers: one name, help
// text, buckets and label set.
func newHistogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

// certCollector is the prometheus.Collector of every per-certificate
// family: it builds their series from Metrics.certs when scraped.
type certCollector struct {
	m     *Metrics
	descs [numFams]*prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	c.collect(ch, func(famID, []string) bool { return true })
}

// collect sends the series that keep says to send. It copies the state
// under the lock and builds the series after, so that a slow scrape does not
// hold up the setters; what it sends is the state at one instant.
func (c *certCollector) collect(ch chan<- prometheus.Metric, keep func(f famID, lvs []string) bool) {
	type named struct {
		name string
		st   certState
	}
	c.m.mu.RLock()
	snap := make([]named, 0, len(c.m.certs))
	for name, st := range c.m.certs {
		if st.has != 0 {
			snap = append(snap, named{name, *st})
		}
	}
	c.m.mu.RUnlock()
	for i := range snap {
		c.emit(ch, snap[i].name, &snap[i].st, keep)
	}
}

// emit sends the series of certificate name in state st that keep keeps.
func (c *certCollector) emit(ch chan<- prometheus.Metric, name string, st *certState, keep func(f famID, lvs []string) bool) {
	var lvs [2]string
	lvs[0] = name
	send := func(f famID, typ prometheus.ValueType, v float64, n int) {
		if !keep(f, lvs[:n]) {
			return
		}
		if typ == prometheus.CounterValue {
			ch <- prometheus.MustNewConstMetricWithCreatedTimestamp(c.descs[f], typ, v, time.Unix(0, st.created), lvs[:n]...)
			return
		}
		ch <- prometheus.MustNewConstMetric(c.descs[f], typ, v, lvs[:n]...)
	}
	gauge, counter := prometheus.GaugeValue, prometheus.CounterValue
	if st.has&hasExpiry != 0 {
		send(famExpiry, gauge, float64(st.notAfter), 1)
	}
	if st.has&hasRenewal != 0 {
		send(famRenewal, gauge, float64(st.renewAt), 1)
	}
	if st.has&hasService != 0 {
		lvs[1] = st.serviceID
		send(famServiceEnd, gauge, float64(st.serviceEnd), 2)
	}
	if st.has&hasReady != 0 {
		yes, no := 0.0, 1.0
		if st.ready {
			yes, no = 1, 0
		}
		lvs[1] = conditionTrue
		send(famReady, gauge, yes, 2)
		lvs[1] = conditionFalse
		send(famReady, gauge, no, 2)
	}
	if st.has&hasStep != 0 {
		known := false
		for _, s := range steps {
			v := 0.0
			if string(s) == st.curStep {
				v, known = 1, true
			}
			lvs[1] = string(s)
			send(famStep, gauge, v, 2)
		}
		if !known && st.curStep != "" {
			lvs[1] = st.curStep
			send(famStep, gauge, 1, 2)
		}
	}
	if st.has&hasReissues != 0 {
		send(famReissues, counter, float64(st.reissues), 1)
	}
	for i, r := range reasons {
		if st.has&(hasFailure0<<i) != 0 {
			lvs[1] = r
			send(famFailures, counter, float64(st.failures[i]), 2)
		}
	}
	if st.has&hasCharges != 0 {
		send(famCharges, counter, float64(st.charges), 1)
	}
	if st.has&hasChargeCost != 0 {
		send(famChargeCost, counter, st.costFrac+float64(st.costInt), 1)
	}
}

// steps and reasons are orderSteps() and failureReasons(), made once.
var (
	steps   = orderSteps()
	reasons = failureReasons()
)

// cert returns the state of certificate name, made if need be. m.mu must be
// held for writing.
func (m *Metrics) cert(name string) *certState {
	st := m.certs[name]
	if st == nil {
		st = new(certState)
		m.certs[name] = st
	}
	return st
}

// addCounters marks the counter series in has as existing, stamping the
// certificate's counters as created if none existed.
func (st *certState) addCounters(has uint16) {
	if st.has&hasCounters == 0 {
		st.created = time.Now().UnixNano()
	}
	st.has |= has
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
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.cert(name)
	st.notAfter = setTimestamp(&st.has, hasExpiry, notAfter)
	st.renewAt = setTimestamp(&st.has, hasRenewal, renewAt)
	st.ready = ready
	st.has |= hasReady
	if st.counted {
		return
	}
	st.counted = true
	// Counters exist at 0 from the start, so that rate() and increase()
	// see their first increment.
	st.addCounters(hasCounters)
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
	st := m.cert(name)
	st.serviceEnd = setTimestamp(&st.has, hasService, expires)
	st.serviceID = ""
	if !expires.IsZero() {
		st.serviceID = serviceID
	}
	m.forgetIfEmpty(name, st)
}

// setTimestamp marks the series bit of has as existing, returning t in Unix
// seconds, or as absent when t is zero.
func setTimestamp(has *uint16, bit uint16, t time.Time) int64 {
	if t.IsZero() {
		*has &^= bit
		return 0
	}
	*has |= bit
	return t.Unix()
}

// forgetIfEmpty drops the state of certificate name when it has no series
// and nothing else to remember. m.mu must be held for writing.
func (m *Metrics) forgetIfEmpty(name string, st *certState) {
	if st.has == 0 && !st.counted {
		delete(m.certs, name)
	}
}

// SetStep records the step of certificate name's current order: 1 on step,
// 0 on every other step. An empty step means no order is in progress (all
// 0). A step outside orderSteps (one added after this file was written) gets
// a series of its own, deleted when the certificate moves on, so at most one
// such series exists per certificate.
func (m *Metrics) SetStep(name string, step string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.cert(name)
	st.has |= hasStep
	st.curStep = step
}

// ReissueStarted counts a reissue order started for certificate name.
func (m *Metrics) ReissueStarted(name string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.cert(name)
	st.addCounters(hasReissues)
	st.reissues++
}

// Failure counts a failure renewing certificate name. reason is one of the
// Failure* constants; any other value counts as FailureOther.
func (m *Metrics) Failure(name, reason string) {
	if m == nil {
		return
	}
	i := slices.Index(reasons, reason)
	if i < 0 {
		i = slices.Index(reasons, FailureOther)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.cert(name)
	st.addCounters(hasFailure0 << i)
	st.failures[i]++
}

// Charge counts a reissue of certificate name the reseller charged for, and
// adds its cost. The cost comes from the API and is not trusted: a
// negative, NaN or infinite cost (which a Prometheus counter cannot take
// without breaking) still counts the charge but adds nothing to the cost.
func (m *Metrics) Charge(name string, cost float64) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.cert(name)
	st.addCounters(hasCharges | hasChargeCost)
	st.charges++
	if cost >= 0 && !math.IsInf(cost, 0) { // NaN fails cost >= 0
		// As prometheus.Counter.Add: whole amounts apart, exactly.
		if whole := uint64(cost); float64(whole) == cost {
			st.costInt += whole
		} else {
			st.costFrac += cost
		}
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
	st, ok := m.certs[name]
	if !ok {
		return
	}
	*st = certState{counted: st.counted}
	m.forgetIfEmpty(name, st)
}
