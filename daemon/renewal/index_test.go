package renewal

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

// indexConfig configures the certificates named, each for "NAME.example",
// with expiry alerts days before expiry.
func indexConfig(alertDays []int, names ...string) *config.Config {
	cfg := &config.Config{Daemon: config.DaemonConfig{ExpiryAlertDays: alertDays}}
	for _, n := range names {
		cfg.Certificates = append(cfg.Certificates, config.CertConfig{Name: n,
			Domains: map[string]reseller.Method{n + ".example": reseller.MethodDNS}})
	}
	return cfg
}

func dueNames(looks []Look) []string {
	var names []string
	for _, l := range looks {
		names = append(names, l.CC.Name)
	}
	return names
}

// TestIndexDue: which certificates the index hands to a sweep, at once
// after Build (nothing pending), for every kind of certificate.
func TestIndexDue(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	live := func(name string, issued time.Time, names ...string) *store.Certificate {
		if names == nil {
			names = []string{name + ".example"}
		}
		return &store.Certificate{Name: name, Serial: "5e" + name, Names: names, NotBefore: issued, NotAfter: issued.Add(90 * day),
			CertPEM: "bulk", ChainPEM: "bulk"}
	}
	failed := func(at time.Time, n int) []store.Attempt {
		var h []store.Attempt
		for i := range n {
			h = append(h, store.Attempt{UniqueID: fmt.Sprint(i), Outcome: store.StepFailed, Finished: at.Add(-time.Duration(i) * time.Hour)})
		}
		return h
	}
	cases := []struct {
		name      string
		alertDays []int
		live      *store.Certificate
		history   []store.Attempt
		due       bool
	}{
		{name: "fresh", live: live("fresh", now.Add(-day))},
		{name: "old", live: live("old", now.Add(-70*day)), due: true},
		{name: "none", due: true},
		{name: "renamed", live: live("renamed", now.Add(-day), "other.example"), due: true},
		{name: "backoff", live: live("backoff", now.Add(-70*day)), history: failed(now.Add(-time.Minute), 2)},
		{name: "backoffover", live: live("backoffover", now.Add(-70*day)), history: failed(now.Add(-3*time.Hour), 1), due: true},
		// Not due for renewal (a long failure backoff), but within the
		// expiry alerts: looked at on every sweep.
		{name: "alerting", alertDays: []int{14, 7}, live: live("alerting", now.Add(-80*day)), history: failed(now.Add(-time.Minute), 5), due: true},
		{name: "notalerting", alertDays: []int{7}, live: live("notalerting", now.Add(-80*day)), history: failed(now.Add(-time.Minute), 5)},
		{name: "expired", live: live("expired", now.Add(-91*day)), history: failed(now.Add(-time.Minute), 5), due: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			x := NewIndex()
			var lives []*store.Certificate
			if c.live != nil {
				lives = append(lives, c.live)
			}
			x.Build(indexConfig(c.alertDays, c.name), lives, map[string][]store.Attempt{c.name: c.history})
			got := len(x.Due(now, nil)) == 1
			if got != c.due {
				t.Errorf("due = %v, want %v", got, c.due)
			}
			// The index agrees with Next, but for the expiry alerts.
			cc := &x.cfg.Certificates[0]
			if next := !now.Before(Next(cc, c.live, c.history, now).At); c.alertDays == nil && c.name != "expired" && next != c.due {
				t.Errorf("Next says due = %v", next)
			}
			if l, _, _, _ := x.Inputs(c.name); l != nil && l.CertPEM != "" {
				t.Error("the index keeps the PEMs")
			}
		})
	}
}

// TestIndexChanges: a write makes a certificate pending (looked at by the
// next sweep) until the sweep settles or refreshes it; a settle or refresh
// made from what was read before a write is ignored.
func TestIndexChanges(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	fresh := &store.Certificate{Name: "b", Serial: "01", Names: []string{"b.example"}, NotBefore: now, NotAfter: now.Add(90 * day)}
	x := NewIndex()
	x.Put(fresh) // before Build: ignored, the build reads the store
	if _, _, _, ok := x.Inputs("b"); ok {
		t.Fatal("a write before Build was kept")
	}
	x.BeginBuild()
	x.Put(fresh) // during the read: stale
	x.Build(indexConfig(nil, "a", "b", "c"), []*store.Certificate{
		{Name: "a", Serial: "01", Names: []string{"a.example"}, NotBefore: now, NotAfter: now.Add(90 * day)},
		{Name: "c", Serial: "01", Names: []string{"c.example"}, NotBefore: now, NotAfter: now.Add(90 * day)},
	}, nil)
	steps := []struct {
		what string
		do   func(looks []Look)
		want []string
	}{
		{"after the build", nil, []string{"b"}},
		{"b refreshed", func(looks []Look) { x.Refresh(looks[0], fresh, nil) }, nil},
		{"c and a written", func([]Look) {
			x.Put(&store.Certificate{Name: "c", Serial: "02", Names: []string{"c.example"}, NotBefore: now, NotAfter: now.Add(90 * day)})
			x.SetHistory("a", []store.Attempt{{UniqueID: "1", Outcome: store.StepDone, Finished: now}})
		}, []string{"a", "c"}},
		{"c written again after the look", func(looks []Look) {
			x.Settle(looks[0])
			x.Put(&store.Certificate{Name: "c", Serial: "03", Names: []string{"c.example"}, NotBefore: now, NotAfter: now.Add(90 * day)})
			x.Settle(looks[1]) // stale: c changed since
		}, []string{"c"}},
		{"c settled", func(looks []Look) { x.Settle(looks[0]) }, nil},
		{"a failed", func([]Look) {
			x.SetHistory("a", []store.Attempt{{UniqueID: "2", Outcome: store.StepFailed, Finished: now}})
		}, []string{"a"}},
		{"a settled, in its backoff", func(looks []Look) { x.Settle(looks[0]) }, nil},
		{"a marked stale", func([]Look) { x.MarkStale("a") }, []string{"a"}},
		{"config changed", func(looks []Look) {
			x.Refresh(looks[0], nil, nil)
			x.Configure(indexConfig(nil, "c", "b"))
		}, []string{"c", "b"}},
	}
	var looks []Look
	for _, s := range steps {
		if s.do != nil {
			s.do(looks)
		}
		looks = x.Due(now, nil)
		if got := dueNames(looks); !slices.Equal(got, s.want) {
			t.Fatalf("%s: due %q, want %q", s.what, got, s.want)
		}
	}
	if l, _, _, _ := x.Inputs("c"); l == nil || l.Serial != "03" {
		t.Errorf("c: %+v, want serial 03", l)
	}
}

// TestIndexHeap: Due returns exactly the entries whose key has come, in
// the config's order, whatever the order of the keys and of the changes.
func TestIndexHeap(t *testing.T) {
	seed := uint64(20261207)
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	var names []string
	for i := range 200 {
		names = append(names, fmt.Sprintf("c%03d", i))
	}
	cert := func(name string) *store.Certificate {
		issued := now.Add(-time.Duration(rng.IntN(120)) * day)
		return &store.Certificate{Name: name, Serial: fmt.Sprint(rng.Int()), Names: []string{name + ".example"}, NotBefore: issued, NotAfter: issued.Add(90 * day)}
	}
	var lives []*store.Certificate
	for _, n := range names {
		lives = append(lives, cert(n))
	}
	cfg := indexConfig(nil, names...)
	x := NewIndex()
	x.Build(cfg, lives, nil)
	for round := range 50 {
		at := now.Add(time.Duration(rng.IntN(60)) * day)
		var want []string
		for _, n := range names {
			l, h, _, _ := x.Inputs(n)
			if !at.Before(Next(&cfg.Certificates[slices.Index(names, n)], l, h, at).At) {
				want = append(want, n)
			}
		}
		looks := x.Due(at, nil)
		if got := dueNames(looks); !slices.Equal(got, want) {
			t.Fatalf("round %d: due %q, want %q", round, got, want)
		}
		for range 10 {
			x.Put(cert(names[rng.IntN(len(names))]))
		}
		for _, l := range x.Due(time.Time{}, nil) { // the pending ones
			x.Settle(l)
		}
	}
}
