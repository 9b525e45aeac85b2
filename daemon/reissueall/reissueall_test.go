package reissueall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/store"
)

// syncBuffer is a bytes.Buffer safe for the writers of Run.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls until the output holds want; it fails the test after a
// generous bound rather than hang.
func (s *syncBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the output never showed %q:\n%s", want, s.String())
		}
		time.Sleep(time.Millisecond)
	}
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("c%03d", i)
	}
	return out
}

func doneOrder(name string) *store.Order {
	return &store.Order{UniqueID: "dcvd-" + name, Cert: name, Step: store.StepDone, Serial: "0a" + name,
		NotAfter: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// TestRunReissuesEachOnceWithinTheBound: every name is reissued exactly
// once, never more than Concurrency at once, and the bound is used.
func TestRunReissuesEachOnceWithinTheBound(t *testing.T) {
	for _, tt := range []struct{ n, conc int }{{1, 4}, {10, 1}, {50, 4}, {7, 7}, {3, 10}} {
		t.Run(fmt.Sprintf("%d at %d", tt.n, tt.conc), func(t *testing.T) {
			var mu sync.Mutex
			calls := map[string]int{}
			at, most := 0, 0
			// The first min(n, conc) calls meet before any returns: the
			// bound is reached, not only respected.
			meet := min(tt.n, tt.conc)
			arrived := make(chan struct{})
			fn := func(ctx context.Context, name string) (*store.Order, error) {
				mu.Lock()
				calls[name]++
				at++
				most = max(most, at)
				if at == meet {
					select {
					case <-arrived:
					default:
						close(arrived)
					}
				}
				mu.Unlock()
				select {
				case <-arrived:
				case <-time.After(10 * time.Second):
					return nil, errors.New("the other workers never came")
				}
				mu.Lock()
				at--
				mu.Unlock()
				return doneOrder(name), nil
			}
			var out syncBuffer
			sum := Run(context.Background(), names(tt.n), fn, Options{Concurrency: tt.conc, Wait: true, Progress: &out})
			if !sum.OK() || sum.Err() != nil || sum.Succeeded != tt.n || sum.Total != tt.n {
				t.Fatalf("summary %+v (%v)", sum, sum.Err())
			}
			for _, n := range names(tt.n) {
				if calls[n] != 1 {
					t.Errorf("%s reissued %d times", n, calls[n])
				}
				if !strings.Contains(out.String(), "] "+n+": done in ") {
					t.Errorf("no progress line for %s:\n%s", n, out.String())
				}
			}
			if most > tt.conc || most < meet {
				t.Errorf("%d at once, want %d", most, meet)
			}
		})
	}
}

// TestRunReportsFailuresAndGoesOn: failed certificates are reported, each
// with its error, while the others complete; the run's error says how many.
func TestRunReportsFailuresAndGoesOn(t *testing.T) {
	refused := &daemon.DomainRemovalError{Cert: "c003", Serial: "99", Dropped: []string{"old.example.com"}}
	fn := func(ctx context.Context, name string) (*store.Order, error) {
		switch name {
		case "c003":
			return nil, refused
		case "c005":
			o := doneOrder(name)
			o.Step = store.StepFailed
			o.LastError = "the CA refused"
			return o, fmt.Errorf("certificate %s: order %s failed: the CA refused", name, o.UniqueID)
		case "c007":
			// Followed through a daemon that dropped the certificate.
			o := doneOrder(name)
			o.Step = store.StepRechecked
			return o, nil
		}
		return doneOrder(name), nil
	}
	var out syncBuffer
	sum := Run(context.Background(), names(10), fn, Options{Concurrency: 3, Wait: true, Progress: &out})
	if sum.Succeeded != 7 || len(sum.Failed) != 3 || sum.NotStarted != 0 || sum.OK() {
		t.Fatalf("summary %+v", sum)
	}
	var failed []string
	for _, r := range sum.Failed {
		failed = append(failed, r.Name)
	}
	if strings.Join(slices.Sorted(slices.Values(failed)), ",") != "c003,c005,c007" {
		t.Errorf("failed %v", failed)
	}
	var dre *daemon.DomainRemovalError
	for _, r := range sum.Failed {
		if r.Name == "c003" && !errors.As(r.Err, &dre) {
			t.Errorf("c003's error %v lost the refusal", r.Err)
		}
	}
	for _, want := range []string{
		"c003: FAILED after", "would drop old.example.com", "c005: FAILED after", "the CA refused",
		"c007: FAILED after", "ended at step rechecked", "c009: done in",
		"progress: 10/10 ended (7 ok, 3 failed), 0 in flight, 0 queued; elapsed ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if err := sum.Err(); err == nil || !strings.Contains(err.Error(), "3 of 10 certificates not reissued (3 failed, 0 not started)") {
		t.Errorf("Err = %v", err)
	}
	if s := sum.String(); !strings.Contains(s, "7 of 10 certificates reissued, 3 failed") || !strings.Contains(s, "failed: c") {
		t.Errorf("String = %s", s)
	}
}

// TestRunWithoutWait: an order started and left in flight is a success.
func TestRunWithoutWait(t *testing.T) {
	fn := func(ctx context.Context, name string) (*store.Order, error) {
		return &store.Order{UniqueID: "dcvd-" + name, Cert: name, Step: store.StepRechecked}, nil
	}
	var out syncBuffer
	sum := Run(context.Background(), names(3), fn, Options{Concurrency: 2, Progress: &out})
	if !sum.OK() {
		t.Fatalf("summary %+v", sum)
	}
	if !strings.Contains(out.String(), "c001: order dcvd-c001 at step rechecked after") {
		t.Errorf("output:\n%s", out.String())
	}
	// With Wait, the same answer is a failure.
	sum = Run(context.Background(), names(3), fn, Options{Concurrency: 2, Wait: true})
	if sum.OK() || len(sum.Failed) != 3 {
		t.Errorf("with Wait, orders left at rechecked passed: %+v", sum)
	}
}

// TestRunStopsWithItsContext: the certificates at work end as fn returns
// them, the queued ones are not started.
func TestRunStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	started := 0
	fn := func(ctx context.Context, name string) (*store.Order, error) {
		mu.Lock()
		started++
		if started == 2 {
			cancel()
		}
		mu.Unlock()
		<-ctx.Done()
		return &store.Order{UniqueID: "dcvd-" + name, Cert: name, Step: store.StepPublished, LastError: "slow DNS"}, ctx.Err()
	}
	var out syncBuffer
	sum := Run(ctx, names(20), fn, Options{Concurrency: 2, Wait: true, Progress: &out})
	if sum.Succeeded != 0 || len(sum.Failed) != 2 || sum.NotStarted != 18 {
		t.Fatalf("summary %+v", sum)
	}
	for _, r := range sum.Failed {
		if !errors.Is(r.Err, context.Canceled) {
			t.Errorf("%s: %v", r.Name, r.Err)
		}
	}
	if !strings.Contains(out.String(), "not done when the run ended: order dcvd-c00") ||
		!strings.Contains(out.String(), "at step published (last error: slow DNS); it stays in flight") {
		t.Errorf("output:\n%s", out.String())
	}
	if err := sum.Err(); err == nil || !strings.Contains(err.Error(), "18 not started") {
		t.Errorf("Err = %v", err)
	}
}

// TestRunSummaryLines: a tick writes the counts as they stand.
func TestRunSummaryLines(t *testing.T) {
	tick := make(chan time.Time)
	release := make(chan struct{})
	blocked := make(chan struct{})
	fn := func(ctx context.Context, name string) (*store.Order, error) {
		switch name {
		case "c001":
			return nil, errors.New("boom")
		case "c002":
			close(blocked)
			<-release
		}
		return doneOrder(name), nil
	}
	var out syncBuffer
	done := make(chan Summary)
	go func() {
		done <- Run(context.Background(), names(4), fn, Options{Concurrency: 1, Wait: true, Progress: &out, tick: tick})
	}()
	<-blocked
	out.waitFor(t, "c001: FAILED")
	tick <- time.Now()
	out.waitFor(t, "progress: 2/4 ended (1 ok, 1 failed), 1 in flight, 1 queued; elapsed ")
	close(release)
	if sum := <-done; sum.Succeeded != 3 || len(sum.Failed) != 1 {
		t.Errorf("summary %+v", sum)
	}
}

func TestSummaryLine(t *testing.T) {
	tests := []struct {
		ok, bad, inFlight, queued int
		elapsed                   time.Duration
		want                      string
	}{
		{0, 0, 4, 96, 3 * time.Second, "progress: 0/100 ended (0 ok, 0 failed), 4 in flight, 96 queued; elapsed 3s, 0.0 certificates/s, ETA unknown"},
		{48, 2, 10, 40, 10 * time.Second, "progress: 50/100 ended (48 ok, 2 failed), 10 in flight, 40 queued; elapsed 10s, 5.0 certificates/s, ETA 10s"},
		{1000, 0, 0, 9000, 100 * time.Second, "progress: 1000/10000 ended (1000 ok, 0 failed), 0 in flight, 9000 queued; elapsed 1m40s, 10.0 certificates/s, ETA 15m0s"},
		{3, 0, 1, 0, 0, "progress: 3/4 ended (3 ok, 0 failed), 1 in flight, 0 queued; elapsed 0s, 0.0 certificates/s, ETA unknown"},
		{3, 0, 1, 0, 1234 * time.Millisecond, "progress: 3/4 ended (3 ok, 0 failed), 1 in flight, 0 queued; elapsed 1.2s, 2.4 certificates/s, ETA 400ms"},
		{7, 1, 2, 90, 61*time.Second + 700*time.Millisecond, "progress: 8/100 ended (7 ok, 1 failed), 2 in flight, 90 queued; elapsed 1m2s, 0.1 certificates/s, ETA 11m50s"},
	}
	for _, tt := range tests {
		if got := summaryLine(tt.ok, tt.bad, tt.inFlight, tt.queued, tt.elapsed); got != tt.want {
			t.Errorf("got  %s\nwant %s", got, tt.want)
		}
	}
}

func TestSummaryListsAtMostSomeNames(t *testing.T) {
	var s Summary
	s.Total = 100
	for i := range 30 {
		s.Failed = append(s.Failed, Result{Name: fmt.Sprintf("f%02d", i), Err: errors.New("x")})
	}
	s.Succeeded = 70
	str := s.String()
	if !strings.Contains(str, "f19") || strings.Contains(str, "f20") || !strings.Contains(str, "and 10 more") {
		t.Errorf("String = %s", str)
	}
}
