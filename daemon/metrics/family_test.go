package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// fam is one per-certificate family of m on its own, for the tests that
// count or read its series (testutil.CollectAndCount, testutil.ToFloat64).
func (m *Metrics) fam(id famID) *family { return &family{c: m.collector, id: id} }

// family is one per-certificate family on its own, as a collector (for
// testutil.CollectAndCount) with WithLabelValues giving one of its series
// (for testutil.ToFloat64). It only reads: unlike a vector's
// WithLabelValues, it creates nothing.
type family struct {
	c  *certCollector
	id famID
}

// Describe implements prometheus.Collector.
func (f *family) Describe(ch chan<- *prometheus.Desc) { ch <- f.c.descs[f.id] }

// Collect implements prometheus.Collector.
func (f *family) Collect(ch chan<- prometheus.Metric) {
	f.c.collect(ch, func(id famID, _ []string) bool { return id == f.id })
}

// WithLabelValues returns the series of f with these label values, which
// collects nothing while it does not exist.
func (f *family) WithLabelValues(lvs ...string) prometheus.Collector {
	return &series{f: f, lvs: lvs}
}

// series is one series of a family, as a collector.
type series struct {
	f   *family
	lvs []string
}

// Describe implements prometheus.Collector.
func (s *series) Describe(ch chan<- *prometheus.Desc) { s.f.Describe(ch) }

// Collect implements prometheus.Collector.
func (s *series) Collect(ch chan<- prometheus.Metric) {
	s.f.c.collect(ch, func(id famID, lvs []string) bool { return id == s.f.id && slices.Equal(lvs, s.lvs) })
}
