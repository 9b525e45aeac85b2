package reseller

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told, and a timer that records
// every wait it is asked for: the waits are then what the token bucket
// computed, with no sleeping and no wall clock involved.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
	// fire says whether a timer fires at once (a sleep that passes) or
	// never (a wait that only the context can end).
	fire bool
	// advance moves the clock by each wait that fires, as a real sleep
	// would.
	advance bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) timer(d time.Duration) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	if c.fire {
		if c.advance {
			c.now = c.now.Add(d)
		}
		ch <- c.now
	}
	return ch, func() {}
}

func (c *fakeClock) recorded() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// TestRateLimiterWaits checks the wait of each of n requests made at the
// same instant at rate r: the first goes at once, the k-th waits (k-1)/r, so
// that n requests span at least (n-1)/r.
func TestRateLimiterWaits(t *testing.T) {
	tests := []struct {
		name string
		rate float64
		n    int
	}{
		{"one request", 5, 1},
		{"ten at 4/s", 4, 10},
		{"slower than one a second", 0.5, 5},
		{"a hundred at 200/s", 200, 100},
		{"fractional rate", 3.7, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeClock{now: time.Unix(1e9, 0), fire: true}
			l := newRateLimiter(tt.rate, clk.Now, clk.timer)
			for i := 0; i < tt.n; i++ {
				if err := l.Wait(context.Background()); err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
			}
			waits := clk.recorded()
			// The first request finds the token there and asks for no
			// timer at all.
			if len(waits) != tt.n-1 {
				t.Fatalf("%d timed waits for %d requests, want %d", len(waits), tt.n, tt.n-1)
			}
			interval := time.Duration(float64(time.Second) / tt.rate)
			var longest time.Duration
			for i, d := range waits {
				want := time.Duration(i+1) * interval
				if diff := d - want; diff < -time.Microsecond || diff > time.Microsecond {
					t.Errorf("request %d waits %s, want %s", i+2, d, want)
				}
				longest = max(longest, d)
			}
			span := time.Duration(float64(tt.n-1) / tt.rate * float64(time.Second))
			if longest < span-time.Microsecond {
				t.Errorf("%d requests at %v/s span %s, want at least %s", tt.n, tt.rate, longest, span)
			}
		})
	}
}

// TestRateLimiterNoBurst checks that an idle limiter saves no more than one
// token: after a long pause, requests are spaced again at once.
func TestRateLimiterNoBurst(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1e9, 0), fire: true, advance: true}
	l := newRateLimiter(10, clk.Now, clk.timer)
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	clk.mu.Lock()
	clk.now = clk.now.Add(time.Hour)
	clk.mu.Unlock()
	for range 4 {
		if err := l.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	// One token saved by the pause, then 100ms apart: the clock moves
	// with every sleep, so each wait is one interval.
	want := []time.Duration{100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond}
	got := clk.recorded()
	if len(got) != len(want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	for i := range want {
		if d := got[i] - want[i]; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("waits %v, want %v", got, want)
			break
		}
	}
}

// TestRateLimiterCancelGivesTheTokenBack checks that a request whose
// context ends while it waits is not counted: the next one waits as if it
// had never been.
func TestRateLimiterCancelGivesTheTokenBack(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1e9, 0)}
	l := newRateLimiter(2, clk.Now, clk.timer)
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Wait(ctx) }()
	// Wait until the second request is asleep on its timer.
	for len(clk.recorded()) == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	clk.mu.Lock()
	clk.fire = true
	clk.mu.Unlock()
	if err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := clk.recorded()
	if len(got) != 2 || got[1] != got[0] || got[0] != 500*time.Millisecond {
		t.Errorf("waits %v, want [500ms 500ms]: the cancelled request's token must go back", got)
	}

	// A context already ended takes no token at all.
	ended, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	if err := l.Wait(ended); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with an ended context = %v", err)
	}
	if n := len(clk.recorded()); n != 2 {
		t.Errorf("an ended context asked for a timer (%d waits)", n)
	}
}

// countingLimiter counts its waits and checks, at each, how many requests
// the server has seen: a wait must come before its request is sent.
type countingLimiter struct {
	mu    sync.Mutex
	waits int
	// sent, when set, is how many requests reached the server.
	sent func() int
	// behind records a wait that came after its request was sent.
	behind bool
	// block makes Wait return only when ctx ends.
	block bool
}

func (l *countingLimiter) Wait(ctx context.Context) error {
	l.mu.Lock()
	if l.sent != nil && l.sent() != l.waits {
		l.behind = true
	}
	l.waits++
	block := l.block
	l.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (l *countingLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waits
}

// TestClientWaitsBeforeEveryRequest checks that every request sent takes a
// turn first, a retried reissue included, and that a request refused
// locally takes none.
func TestClientWaitsBeforeEveryRequest(t *testing.T) {
	seed := seedReply(t)
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, seen seenRequest) {
		if strings.HasSuffix(r.URL.Path, PathUpdateDCV) {
			writeJSON(w, 200, `{"success":true,"message":"OK"}`)
			return
		}
		writeJSON(w, 200, seed)
	})
	lim := &countingLimiter{sent: api.requests}
	c := newAPIClient(t, api.srv.URL, func(cfg *Config) { cfg.Limiter = lim })
	ctx := context.Background()
	req := ReissueRequest{UniqueID: "u-1", ServiceID: "s-1", DomainDCV: map[string]Method{"example.com": MethodDNS}, CSR: "csr"}
	calls := []func() error{
		func() error { _, err := c.Reissue(ctx, req); return err },
		func() error { _, err := c.Reissue(ctx, req); return err }, // the retry of a lost reply
		func() error { return c.UpdateDCV(ctx, "s-1", map[string]Method{"example.com": MethodDNS}) },
		func() error { _, err := c.Detail(ctx, "s-1"); return err },
		func() error { _, err := c.Detail(ctx, "s-1"); return err },
	}
	for i, call := range calls {
		if err := call(); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if got := lim.count(); got != len(calls) {
		t.Errorf("%d waits for %d requests", got, len(calls))
	}
	if got := api.requests(); got != len(calls) {
		t.Errorf("the server saw %d requests, want %d", got, len(calls))
	}
	if lim.behind {
		t.Error("a request was sent before its turn")
	}

	// Refused locally: nothing is sent, no turn is taken.
	if _, err := c.Detail(ctx, " "); err == nil {
		t.Fatal("Detail with an empty service_id was accepted")
	}
	if err := c.Do(ctx, "bad", http.MethodGet, "no-slash", nil, nil, nil); err == nil {
		t.Fatal("Do with a relative path was accepted")
	}
	if got := lim.count(); got != len(calls) {
		t.Errorf("a request refused locally took a turn (%d waits)", got)
	}
}

// TestClientGivesUpWaitingWithItsContext checks that a caller whose
// context ends while it waits for its turn sends nothing and gets an error
// that says so, not a retryable one.
func TestClientGivesUpWaitingWithItsContext(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		writeJSON(w, 200, `{"success":true,"message":"OK"}`)
	})
	lim := &countingLimiter{block: true}
	c := newAPIClient(t, api.srv.URL, func(cfg *Config) { cfg.Limiter = lim })
	for _, tt := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(10*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 10*time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := tt.ctx()
			defer cancel()
			err := c.UpdateDCV(ctx, "s-1", map[string]Method{"example.com": MethodDNS})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if Retryable(err) {
				t.Errorf("retryable: %v", err)
			}
			if !strings.Contains(err.Error(), "not sent") || !strings.Contains(err.Error(), "update-dcv") {
				t.Errorf("error does not say which call was not sent: %v", err)
			}
			if n := api.requests(); n != 0 {
				t.Errorf("the server saw %d requests", n)
			}
		})
	}
}

// TestMaxRequestsPerSecondMakesALimiter checks the wiring from Config.
func TestMaxRequestsPerSecondMakesALimiter(t *testing.T) {
	base := Config{BaseURL: "https://api.example/api/v1", AccessKeyID: "AKID", AccessKeySecret: apiSecret}
	for _, tt := range []struct {
		rate float64
		want float64 // 0: no limiter
	}{{0, 0}, {0.25, 0.25}, {20, 20}, {1000, 1000}} {
		cfg := base
		cfg.MaxRequestsPerSecond = tt.rate
		c, err := New(cfg)
		if err != nil {
			t.Fatalf("rate %v: %v", tt.rate, err)
		}
		switch l := c.limiter.(type) {
		case nil:
			if tt.want != 0 {
				t.Errorf("rate %v: no limiter", tt.rate)
			}
		case *rateLimiter:
			if l.limit() != tt.want {
				t.Errorf("rate %v: limiter at %v/s", tt.rate, l.limit())
			}
		default:
			t.Errorf("rate %v: limiter %T", tt.rate, l)
		}
	}
	for _, bad := range []float64{0, -1, math.NaN(), math.Inf(1)} {
		if _, err := NewRateLimiter(bad); err == nil {
			t.Errorf("NewRateLimiter(%v) accepted", bad)
		}
	}
	if l, err := NewRateLimiter(3); err != nil || l.(*rateLimiter).limit() != 3 {
		t.Errorf("NewRateLimiter(3) = %v, %v", l, err)
	}
}
