package providers

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// simDNS is a simulated clock and set of authoritative nameservers for
// Wait (through withWaitEnv): each (server, record name) becomes visible
// at a time of the simulated clock, a query answers at once, and a pause
// moves the clock without sleeping. It logs every query.
type simDNS struct {
	mu      sync.Mutex
	start   time.Time
	clock   time.Time
	visible map[string]time.Time // "server name" → visible from; absent: never
	asked   map[string][]time.Time
}

func newSimDNS() *simDNS {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &simDNS{start: start, clock: start, visible: map[string]time.Time{}, asked: map[string][]time.Time{}}
}

// publish makes name visible on server after lag from the start.
func (s *simDNS) publish(server, name string, lag time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.visible[server+" "+name] = s.start.Add(lag)
}

func (s *simDNS) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clock
}

// elapsed is the simulated time since the start.
func (s *simDNS) elapsed() time.Duration { return s.now().Sub(s.start) }

func (s *simDNS) env() waitEnv {
	return waitEnv{
		now: s.now,
		sleepUntil: func(ctx context.Context, t time.Time) {
			if ctx.Err() != nil {
				return
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if t.After(s.clock) {
				s.clock = t
			}
		},
		ask: func(ctx context.Context, server string, c check) answer {
			s.mu.Lock()
			defer s.mu.Unlock()
			key := server + " " + c.name
			s.asked[key] = append(s.asked[key], s.clock)
			if at, ok := s.visible[key]; ok && !s.clock.Before(at) {
				return answer{ok: true}
			}
			return answer{status: "answered NXDOMAIN"}
		},
	}
}

// queries returns the times (since the start) server was asked for name.
func (s *simDNS) queries(server, name string) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Duration
	for _, t := range s.asked[server+" "+name] {
		out = append(out, t.Sub(s.start))
	}
	return out
}

func (s *simDNS) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, q := range s.asked {
		n += len(q)
	}
	return n
}

// The section defaults, as a [dns.NAME] section without propagation keys
// configures them, with a timeout long enough for a lag of 20 minutes.
func simPropagation(servers ...string) Propagation {
	return Propagation{
		Nameservers: servers, Interval: DefaultPropagationInterval, MaxInterval: DefaultPropagationMax,
		Timeout: time.Hour,
	}
}

// TestPropagationLongLagNoticedAtOnce: when the last nameserver gets the
// record minutes into the wait (3 and 20 minutes, past the fast phase),
// the Wait notices it at the first poll after, the polls are never more
// than SteadyInterval apart, and the load stays bounded: the lagging
// server is asked at most once per pause (250 ms in the fast phase, 400 ms
// after), the server that had the record at once is asked once.
func TestPropagationLongLagNoticedAtOnce(t *testing.T) {
	const name = "_lag.example.com"
	const early, late = "192.0.2.1:53", "192.0.2.2:53"
	for _, lag := range []time.Duration{10 * time.Second, 3*time.Minute + 123*time.Millisecond, 20*time.Minute + 77*time.Millisecond} {
		t.Run(lag.String(), func(t *testing.T) {
			sim := newSimDNS()
			sim.publish(early, name, 0)
			sim.publish(late, name, lag)
			var reports []Progress
			ctx := WithProgress(withWaitEnv(context.Background(), sim.env()), func(p Progress) { reports = append(reports, p) })
			p := simPropagation(early, late)
			if err := p.Wait(ctx, "example.com.", []Record{{Name: name, Target: "x.sectigo.com"}}); err != nil {
				t.Fatal(err)
			}
			if q := sim.queries(early, name); len(q) != 1 {
				t.Errorf("the server that had the record at once was asked %d times, want once", len(q))
			}
			q := sim.queries(late, name)
			if len(q) < 2 {
				t.Fatalf("the lagging server was asked %d time(s)", len(q))
			}
			// Noticed at the first poll after the lag: only the last query
			// is at or after it, and it is no later than one pause after.
			lastQ := q[len(q)-1]
			if lastQ < lag || q[len(q)-2] >= lag {
				t.Errorf("queries around the lag %s: …, %s, %s", lag, q[len(q)-2], lastQ)
			}
			if d := lastQ - lag; d > DefaultPropagationSteadyInterval {
				t.Errorf("noticed %s after the record was visible, want ≤ %s", d, DefaultPropagationSteadyInterval)
			}
			if got := sim.elapsed(); got != lastQ {
				t.Errorf("Wait returned at %s, want at the query that found the record (%s)", got, lastQ)
			}
			// Every gap between polls is at least the fast interval (no
			// bursts) and at most the steady one (≤ 1 s).
			for i := 1; i < len(q); i++ {
				gap := q[i] - q[i-1]
				lo, hi := DefaultPropagationFastInterval, DefaultPropagationFastInterval
				if q[i-1] >= DefaultPropagationFastPhase {
					lo, hi = DefaultPropagationSteadyInterval, DefaultPropagationSteadyInterval
				}
				if gap < lo || gap > hi || gap > time.Second {
					t.Fatalf("poll %d at %s, %s after the one before; want %s–%s", i, q[i], gap, lo, hi)
				}
			}
			// The count: the fast phase's polls, then one per steady pause.
			fast := int(min(lag, DefaultPropagationFastPhase) / DefaultPropagationFastInterval)
			steady := int(math.Ceil(float64(max(lag-DefaultPropagationFastPhase, 0)) / float64(DefaultPropagationSteadyInterval)))
			if want := fast + steady + 1; len(q) > want {
				t.Errorf("the lagging server was asked %d times in %s, want at most %d", len(q), lag, want)
			}
			// Progress counts the queries sent so far.
			if len(reports) == 0 && lag > DefaultProgressEvery {
				t.Fatal("no progress report")
			}
			for _, r := range reports {
				// The early server once, and the lagging one up to the
				// report's round.
				want := 1 + len(slices.DeleteFunc(slices.Clone(q), func(d time.Duration) bool { return d > r.Elapsed }))
				if r.Queries != want {
					t.Errorf("progress at %s reports %d queries, want %d", r.Elapsed, r.Queries, want)
				}
				if len(r.Lagging) != 1 || !strings.HasPrefix(r.Lagging[0], late+": answered NXDOMAIN") {
					t.Errorf("progress at %s: lagging %q", r.Elapsed, r.Lagging)
				}
			}
			if every := DefaultProgressEvery; len(reports) < int(lag/every)-1 {
				t.Errorf("%d progress reports in %s, want one every %s", len(reports), lag, every)
			}
			t.Logf("lag %s: noticed after %s; %d queries to the lagging server (%.2f/s)", lag, lastQ-lag, len(q), float64(len(q))/lag.Seconds())
		})
	}
}

// TestPropagationQueriesOnlyLaggingPairs: with three servers and three
// records appearing at different times over 25 minutes, no server is asked
// for a record after it answered it, and the Wait ends at the first poll
// after the last one appears.
func TestPropagationQueriesOnlyLaggingPairs(t *testing.T) {
	servers := []string{"192.0.2.1:53", "192.0.2.2:53", "192.0.2.3:53"}
	names := []string{"_a.example.com", "_b.example.com", "_c.example.com"}
	sim := newSimDNS()
	var lastVisible time.Duration
	for i, s := range servers {
		for j, n := range names {
			lag := time.Duration(i*j*i)*2*time.Minute + time.Duration(i+j)*333*time.Millisecond
			sim.publish(s, n, lag)
			lastVisible = max(lastVisible, lag)
		}
	}
	var records []Record
	for _, n := range names {
		records = append(records, Record{Name: n, Target: "x.sectigo.com"})
	}
	p := simPropagation(servers...)
	if err := p.Wait(withWaitEnv(context.Background(), sim.env()), "example.com.", records); err != nil {
		t.Fatal(err)
	}
	if d := sim.elapsed() - lastVisible; d < 0 || d > DefaultPropagationSteadyInterval {
		t.Errorf("Wait ended %s after the last record was visible (at %s)", d, lastVisible)
	}
	for _, s := range servers {
		for _, n := range names {
			q := sim.queries(s, n)
			sim.mu.Lock()
			at := sim.visible[s+" "+n].Sub(sim.start)
			sim.mu.Unlock()
			after := slices.IndexFunc(q, func(d time.Duration) bool { return d >= at })
			if after != len(q)-1 {
				t.Errorf("%s %s, visible at %s: asked at %v, want a last query at or after it, and none later", s, n, at, q)
			}
		}
	}
	t.Logf("%d queries in %s for %d pairs", sim.total(), sim.elapsed(), len(servers)*len(names))
}

// TestPropagationSimulatedTimeout: a record that never appears ends the
// Wait at its timeout with the same error as ever, having polled steadily
// up to it.
func TestPropagationSimulatedTimeout(t *testing.T) {
	const name = "_never.example.com"
	const server = "192.0.2.1:53"
	sim := newSimDNS()
	p := simPropagation(server)
	p.Timeout = 5 * time.Minute
	err := p.Wait(withWaitEnv(context.Background(), sim.env()), "example.com.", []Record{{Name: name, Target: "x.sectigo.com"}})
	want := "propagation of 1 record(s) in zone example.com. not complete after 5m0s: " + server + " answered NXDOMAIN for " + name + " (want CNAME x.sectigo.com)"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if got := sim.elapsed(); got != p.Timeout {
		t.Errorf("Wait ended at %s, want at its timeout %s", got, p.Timeout)
	}
	q := sim.queries(server, name)
	if want := int(DefaultPropagationFastPhase/DefaultPropagationFastInterval) + int((p.Timeout-DefaultPropagationFastPhase)/DefaultPropagationSteadyInterval); len(q) != want {
		t.Errorf("%d queries in %s, want %d", len(q), p.Timeout, want)
	}
}

func TestPropagationSteadyDefaults(t *testing.T) {
	tests := []struct {
		name   string
		p      Propagation
		steady time.Duration
	}{
		{"zero", Propagation{}, DefaultPropagationSteadyInterval},
		{"section defaults", Propagation{Interval: DefaultPropagationInterval, MaxInterval: DefaultPropagationMax}, DefaultPropagationSteadyInterval},
		{"set", Propagation{SteadyInterval: time.Second}, time.Second},
		{"below the fast interval", Propagation{SteadyInterval: 100 * time.Millisecond}, DefaultPropagationFastInterval},
		{"gentle interval", Propagation{Interval: 5 * time.Second}, 5 * time.Second},
		{"none", Propagation{SteadyInterval: -1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.steadyInterval(); got != tt.steady {
				t.Errorf("steadyInterval = %s, want %s", got, tt.steady)
			}
		})
	}
}

// benchJitter is the spread of the lags of BenchmarkPropagationDetectionDelay.
const benchJitter = 10 * time.Second

// BenchmarkPropagationDetectionDelay reports, on the simulated clock, the
// delay from a record being visible on the last of two nameservers to
// Wait returning, for provider lags of 10 s, 2, 5 and 20 minutes (each
// plus a jitter spread evenly over benchJitter, so that the samples cover
// every phase of the polling, even between the backoff's pauses of 10 s), with the section defaults ("steady") and
// with the steady cap turned off ("backoff": the schedule before it, 500
// ms growing to 10 s after the fast phase). Queries answer at once: add
// the nameservers' round trip to the figures. It also reports the queries
// sent to the lagging server, and their rate.
//
//	go test -run '^$' -bench BenchmarkPropagationDetectionDelay -benchtime 1000x ./providers/
func BenchmarkPropagationDetectionDelay(b *testing.B) {
	const name = "_lag.example.com"
	const early, late = "192.0.2.1:53", "192.0.2.2:53"
	for _, sched := range []struct {
		name   string
		steady time.Duration
	}{{"steady", 0}, {"steady=1s", time.Second}, {"backoff", -1}} {
		for _, lag := range []time.Duration{10 * time.Second, 2 * time.Minute, 5 * time.Minute, 20 * time.Minute} {
			b.Run(fmt.Sprintf("%s/lag=%s", sched.name, lag), func(b *testing.B) {
				p := simPropagation(early, late)
				p.SteadyInterval = sched.steady
				var delays []time.Duration
				queries := 0
				for b.Loop() {
					// An even spread over [0, 10 s) whatever b.N.
					jitter := time.Duration(math.Mod(float64(len(delays))*0.6180339887, 1) * float64(benchJitter))
					sim := newSimDNS()
					sim.publish(early, name, 0)
					sim.publish(late, name, lag+jitter)
					if err := p.Wait(withWaitEnv(context.Background(), sim.env()), "example.com.", []Record{{Name: name, Target: "x.sectigo.com"}}); err != nil {
						b.Fatal(err)
					}
					delays = append(delays, sim.elapsed()-lag-jitter)
					queries += len(sim.queries(late, name))
				}
				slices.Sort(delays)
				pct := func(f float64) float64 {
					return float64(delays[min(len(delays)-1, int(f*float64(len(delays))))]) / 1e6
				}
				b.ReportMetric(pct(0.5), "p50-ms")
				b.ReportMetric(pct(0.99), "p99-ms")
				b.ReportMetric(float64(delays[len(delays)-1])/1e6, "max-ms")
				q := float64(queries) / float64(len(delays))
				b.ReportMetric(q, "queries")
				b.ReportMetric(q/(lag+benchJitter/2).Seconds(), "queries/s")
			})
		}
	}
}
