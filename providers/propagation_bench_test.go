package providers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkPropagationSteadyRealDNS measures, on the real clock with two
// memdns servers on loopback, the delay from a record being visible on the
// lagging server to Wait returning, when it appears after the fast phase:
// the phase is cut to 500 ms so that a lag of 1 s plus up to 400 ms falls
// in the steady polling (every DefaultPropagationSteadyInterval) that
// follows it in a long wait. It adds the real queries' cost to what
// BenchmarkPropagationDetectionDelay computes on a simulated clock.
//
//	go test -run '^$' -bench BenchmarkPropagationSteadyRealDNS -benchtime 40x ./providers/
func BenchmarkPropagationSteadyRealDNS(b *testing.B) {
	a, s, port := startAuthPair(b)
	p := Propagation{
		Resolvers: []string{a.addr}, Port: port, Timeout: time.Minute,
		Interval: DefaultPropagationInterval, MaxInterval: DefaultPropagationMax, FastPhase: 500 * time.Millisecond,
	}
	const target = "x.sectigo.com"
	var delays []time.Duration
	i := 0
	for b.Loop() {
		i++
		name := fmt.Sprintf("_steady%d.example.com", i)
		publishCNAME(b, a, name, target)
		lag := time.Second + rand.N(DefaultPropagationSteadyInterval)
		var visible time.Time
		var wg sync.WaitGroup
		wg.Add(1)
		timer := time.AfterFunc(lag, func() {
			defer wg.Done()
			// Before the write, as the Wait may see it at once: the delay
			// includes the in-memory write, a few microseconds.
			visible = time.Now()
			publishCNAME(b, s, name, target)
		})
		err := p.Wait(context.Background(), "example.com.", []Record{{Name: name, Target: target}})
		done := time.Now()
		if !timer.Stop() {
			wg.Wait()
		}
		if err != nil {
			b.Fatal(err)
		}
		if visible.IsZero() || done.Before(visible) {
			b.Fatalf("Wait returned before the record was published")
		}
		delays = append(delays, done.Sub(visible))
	}
	slices.Sort(delays)
	pct := func(f float64) float64 {
		return float64(delays[min(len(delays)-1, int(f*float64(len(delays))))]) / 1e6
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(delays[len(delays)-1])/1e6, "max-ms")
}
