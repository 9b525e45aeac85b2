package renewal

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

func schedCert(renewBefore time.Duration, names ...string) *config.CertConfig {
	cc := &config.CertConfig{Name: "shop", RenewBefore: renewBefore, Domains: map[string]reseller.Method{}}
	for _, n := range names {
		cc.Domains[n] = reseller.MethodDNS
	}
	return cc
}

func schedLive(serial string, notBefore time.Time, lifetime time.Duration, names ...string) *store.Certificate {
	return &store.Certificate{Name: "shop", Serial: serial, Names: names, NotBefore: notBefore, NotAfter: notBefore.Add(lifetime)}
}

// TestNextRenewal: when a certificate is due, and why.
func TestNext(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	names := []string{"example.com", "www.example.com"}
	issued := now.Add(-10 * day)
	live := schedLive("0a1b2c", issued, 90*day, names...)
	failedAt := now.Add(-10 * time.Minute)
	failures := func(n int) []store.Attempt {
		var h []store.Attempt
		for i := range n {
			h = append(h, store.Attempt{Cert: "shop", Outcome: store.StepFailed, Finished: failedAt.Add(-time.Duration(i) * time.Hour)})
		}
		return h
	}
	// due is a live certificate whose renewal point has passed.
	due := schedLive("0d0e", now.Add(-80*day), 90*day, names...)

	tests := []struct {
		name    string
		cc      *config.CertConfig
		live    *store.Certificate
		history []store.Attempt
		// The renewal must be in [min, max]; reason must contain reason.
		min, max time.Time
		reason   string
	}{
		{name: "no live certificate", cc: schedCert(0, names...), min: now, max: now, reason: "no live certificate"},
		{name: "live certificate without dates", cc: schedCert(0, names...), live: &store.Certificate{Name: "shop", Names: names},
			min: now, max: now},
		{name: "renew_before honoured", cc: schedCert(30*day, names...), live: live,
			min: live.NotAfter.Add(-30*day - 12*time.Hour), max: live.NotAfter.Add(-30 * day), reason: "30d before expiry"},
		{name: "renew_before short: jitter a tenth of it", cc: schedCert(10*time.Hour, names...), live: live,
			min: live.NotAfter.Add(-10*time.Hour - time.Hour), max: live.NotAfter.Add(-10 * time.Hour)},
		{name: "default: a third of the lifetime", cc: schedCert(0, names...), live: live,
			min: live.NotAfter.Add(-30*day - 12*time.Hour), max: live.NotAfter.Add(-30 * day), reason: "30d before expiry"},
		{name: "default for a short lifetime", cc: schedCert(0, names...), live: schedLive("01", issued, 3*time.Hour, names...),
			min: issued.Add(2*time.Hour - 6*time.Minute), max: issued.Add(2 * time.Hour)},
		{name: "overdue after downtime: due in the past, caught up at once", cc: schedCert(0, names...), live: due,
			min: due.NotAfter.Add(-30*day - 12*time.Hour), max: due.NotAfter.Add(-30 * day)},
		{name: "a configured name not covered", cc: schedCert(0, append(names, "new.example.com")...), live: live,
			min: now, max: now, reason: "new.example.com not covered"},
		{name: "a name dropped from the config is no reason to renew", cc: schedCert(0, "example.com"), live: live,
			min: live.NotAfter.Add(-30*day - 12*time.Hour), max: live.NotAfter.Add(-30 * day)},
		{name: "one failure: an hour", cc: schedCert(0, names...), live: due, history: failures(1),
			min: failedAt.Add(time.Hour), max: failedAt.Add(time.Hour), reason: "1 failed attempt"},
		{name: "two failures: two hours", cc: schedCert(0, names...), live: due, history: failures(2),
			min: failedAt.Add(2 * time.Hour), max: failedAt.Add(2 * time.Hour)},
		{name: "three failures: four hours", cc: schedCert(0, names...), live: due, history: failures(3),
			min: failedAt.Add(4 * time.Hour), max: failedAt.Add(4 * time.Hour)},
		{name: "five failures: sixteen hours", cc: schedCert(0, names...), live: due, history: failures(5),
			min: failedAt.Add(16 * time.Hour), max: failedAt.Add(16 * time.Hour)},
		{name: "six failures: capped at a day", cc: schedCert(0, names...), live: due, history: failures(6),
			min: failedAt.Add(24 * time.Hour), max: failedAt.Add(24 * time.Hour)},
		{name: "twenty failures: still a day", cc: schedCert(0, names...), live: due, history: failures(20),
			min: failedAt.Add(24 * time.Hour), max: failedAt.Add(24 * time.Hour)},
		{name: "failures with no live certificate", cc: schedCert(0, names...), history: failures(2),
			min: failedAt.Add(2 * time.Hour), max: failedAt.Add(2 * time.Hour)},
		{name: "failures when a name is missing", cc: schedCert(0, append(names, "new.example.com")...), live: live, history: failures(3),
			min: failedAt.Add(4 * time.Hour), max: failedAt.Add(4 * time.Hour)},
		{name: "a success after failures resets the backoff", cc: schedCert(0, names...), live: due,
			history: append([]store.Attempt{{Cert: "shop", Outcome: store.StepDone, Finished: failedAt}}, failures(5)...),
			min:     due.NotAfter.Add(-30*day - 12*time.Hour), max: due.NotAfter.Add(-30 * day)},
		{name: "failures do not bring a renewal forward", cc: schedCert(0, names...), live: live, history: failures(1),
			min: live.NotAfter.Add(-30*day - 12*time.Hour), max: live.NotAfter.Add(-30 * day)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Next(tt.cc, tt.live, tt.history, now)
			if r.At.Before(tt.min) || r.At.After(tt.max) {
				t.Errorf("renewal at %s, want within [%s, %s] (reason %q)", r.At, tt.min, tt.max, r.Reason)
			}
			if r.Reason == "" || !strings.Contains(r.Reason, tt.reason) {
				t.Errorf("reason %q, want it to contain %q", r.Reason, tt.reason)
			}
		})
	}
}

// TestJitter: within [0, min(window/10, 12h)), fixed by the name and
// serial, spread across names and serials.
func TestJitter(t *testing.T) {
	for _, window := range []time.Duration{time.Minute, 10 * time.Hour, 30 * 24 * time.Hour, 365 * 24 * time.Hour} {
		span := min(window/10, 12*time.Hour)
		distinct := map[time.Duration]bool{}
		for i := range 200 {
			name, serial := fmt.Sprintf("cert-%d", i), "00ff"
			j := jitter(name, serial, window)
			if j < 0 || j >= span {
				t.Fatalf("jitter(%s, %s, %s) = %s, outside [0, %s)", name, serial, window, j, span)
			}
			if again := jitter(name, serial, window); again != j {
				t.Fatalf("jitter not deterministic: %s then %s", j, again)
			}
			distinct[j] = true
		}
		if len(distinct) < 150 {
			t.Errorf("window %s: only %d distinct jitters for 200 names", window, len(distinct))
		}
	}
	w := 30 * 24 * time.Hour
	if jitter("shop", "01", w) == jitter("shop", "02", w) && jitter("shop", "02", w) == jitter("shop", "03", w) {
		t.Errorf("the jitter does not depend on the serial")
	}
	// The separator keeps name and serial apart.
	if jitter("ab", "c", w) == jitter("a", "bc", w) {
		t.Errorf("jitter(ab, c) == jitter(a, bc)")
	}
	if j := jitter("shop", "01", 0); j != 0 {
		t.Errorf("jitter of an empty window = %s", j)
	}
	if j := jitter("shop", "01", -time.Hour); j != 0 {
		t.Errorf("jitter of a negative window = %s", j)
	}
}

// TestNextRenewalJitterDeterministic: the same certificate is due at the
// same time whenever it is asked, and two certificates issued together are
// not due together.
func TestNextRenewalJitterDeterministic(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	live := schedLive("0a1b2c", now.Add(-time.Hour), 90*24*time.Hour, "example.com")
	a1 := Next(schedCert(0, "example.com"), live, nil, now)
	a2 := Next(schedCert(0, "example.com"), live, nil, now.Add(time.Hour))
	if !a1.At.Equal(a2.At) {
		t.Errorf("renewal moved with the clock: %s then %s", a1.At, a2.At)
	}
	other := schedCert(0, "example.com")
	other.Name = "blog"
	if b := Next(other, live, nil, now); b.At.Equal(a1.At) {
		t.Errorf("two certificates with the same dates are due at the same instant %s", b.At)
	}
}
