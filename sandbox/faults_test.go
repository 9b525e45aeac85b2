package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

func TestFaultsErrorRateOneFailsEveryAPICall(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.Faults = Faults{ErrorRate: 1, Seed: 1} })
	seen := map[int]bool{}
	for i := 0; i < 30; i++ {
		r := h.call(http.MethodGet, reseller.PathProductList, nil)
		switch r.status {
		case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable:
			seen[r.status] = true
		default:
			t.Fatalf("call %d: HTTP %d, want a 5xx: %s", i, r.status, r.raw)
		}
	}
	if len(seen) < 2 {
		t.Errorf("only %v seen in 30 calls", seen)
	}
	// The control endpoints are not faulty.
	resp, err := h.ts.Client().Get(h.ts.URL + "/sandbox/ledger")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("control endpoint: HTTP %d", resp.StatusCode)
	}
}

// TestFaultsAfterProcessing sends the same reissue until a fault lost its
// reply after it took effect, then checks that the retry with the same
// unique_id is answered with that order and charges nothing.
func TestFaultsAfterProcessing(t *testing.T) {
	tests := []struct {
		name   string
		faults Faults
		lostOK func(r sbReply, err error) bool // the reply looks like the fault
		// timeout bounds each send (default 10s): the client's own
		// timeout, which a slow reply outlasts.
		timeout time.Duration
	}{
		{"server errors", Faults{ErrorRate: 1, Seed: 3}, func(r sbReply, err error) bool {
			return err == nil && r.status >= 500
		}, 0},
		{"truncated replies", Faults{MalformedRate: 1, Seed: 3}, func(r sbReply, err error) bool {
			return err == nil && r.status == http.StatusOK && !json.Valid(r.raw)
		}, 0},
		{"connection resets", Faults{ResetRate: 1, Seed: 3}, func(r sbReply, err error) bool {
			return err != nil
		}, 0},
		{"slow replies past the client's timeout", Faults{SlowRate: 1, SlowLatency: time.Hour, Seed: 3}, func(r sbReply, err error) bool {
			return errors.Is(err, context.DeadlineExceeded)
		}, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := sbStart(t, "", nil)
			_, csr := sbCSR(t, "a.example.com")
			body := map[string]any{"unique_id": "f1", "service_id": "svc", "csr": csr,
				"domain_dcv": map[string]string{"a.example.com": "dns", "b.example.com": "dns"}}
			if err := h.srv.SetFaults(tt.faults); err != nil {
				t.Fatal(err)
			}
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 10 * time.Second
			}
			send := func(req sbRequest) (sbReply, error) {
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				return h.send(ctx, req)
			}
			attempts := 0
			for h.charges("f1") == 0 {
				attempts++
				if attempts > 50 {
					t.Fatal("no attempt in 50 took effect")
				}
				req := sbRequest{method: http.MethodPost, path: reseller.PathReissue, body: body}
				h.sign(&req, h.id, h.secret, h.clock.Now())
				r, err := send(req)
				if !tt.lostOK(r, err) {
					t.Fatalf("attempt %d: not the injected fault: err %v, HTTP %d %s", attempts, err, r.status, r.raw)
				}
			}
			// More lost retries change nothing.
			for i := 0; i < 5; i++ {
				req := sbRequest{method: http.MethodPost, path: reseller.PathReissue, body: body}
				h.sign(&req, h.id, h.secret, h.clock.Now())
				send(req)
			}
			if err := h.srv.SetFaults(Faults{}); err != nil {
				t.Fatal(err)
			}
			o := h.call(http.MethodPost, reseller.PathReissue, body).mustOrder(t)
			if o.Cost != 11 || len(o.DCV) != 2 || h.charges("f1") != 1 || h.srv.Balance() != DefaultBalance-11 {
				t.Errorf("retry after the lost reply: %+v, %d charges, balance %v", o, h.charges("f1"), h.srv.Balance())
			}
		})
	}
}

func TestFaultsRateLimit(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.Faults = Faults{RateLimitRate: 1, RetryAfter: 1500 * time.Millisecond} })
	_, csr := sbCSR(t, "a.example.com")
	r := h.reissue("l1", "svc", map[string]string{"a.example.com": "dns"}, csr)
	r.mustRefuse(t, http.StatusTooManyRequests, CodeRateLimited)
	if got := r.header.Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After %q, want 2", got)
	}
	if len(h.srv.Ledger()) != 0 {
		t.Error("a rate-limited request was processed")
	}
}

func TestFaultsLatencyHonoursClientContext(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.Faults = Faults{Latency: time.Hour} })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req := sbRequest{method: http.MethodGet, path: reseller.PathProductList}
	h.sign(&req, h.id, h.secret, h.clock.Now())
	if _, err := h.send(ctx, req); err == nil {
		t.Fatal("a reply came through an hour of latency")
	}
	// h.stop (cleanup) closes the HTTP server, which waits for the handler:
	// a handler that ignored the client's context would hang the test.
}

// TestFaultsSlowReplyArrives: a slow reply that the client waits for
// arrives whole.
func TestFaultsSlowReplyArrives(t *testing.T) {
	h := sbStart(t, "", nil, func(c *Config) { c.Faults = Faults{SlowRate: 1, SlowLatency: 20 * time.Millisecond} })
	r := h.call(http.MethodGet, reseller.PathProductList, nil)
	r.mustSucceed(t)
	if !json.Valid(r.raw) {
		t.Fatalf("slow reply is not whole: %s", r.raw)
	}
}

func TestFaultInjectorDraws(t *testing.T) {
	f := Faults{ErrorRate: 0.4, RateLimitRate: 0.1, MalformedRate: 0.1, ResetRate: 0.2, SlowRate: 0.1, SlowLatency: time.Second, Seed: 42}
	count := func() map[faultKind]int {
		fi := newFaultInjector(f)
		m := map[faultKind]int{}
		for i := 0; i < 4000; i++ {
			m[fi.draw().kind]++
		}
		return m
	}
	m := count()
	near := func(k []faultKind, want float64) {
		t.Helper()
		n := 0
		for _, x := range k {
			n += m[x]
		}
		if got := float64(n) / 4000; math.Abs(got-want) > 0.04 {
			t.Errorf("%v: rate %.3f, want about %.2f", k, got, want)
		}
	}
	near([]faultKind{faultErrorBefore}, 0.2)
	near([]faultKind{faultErrorAfter}, 0.2)
	near([]faultKind{faultRateLimit}, 0.1)
	near([]faultKind{faultMalformed}, 0.1)
	near([]faultKind{faultResetBefore, faultResetAfter}, 0.2)
	near([]faultKind{faultSlow}, 0.1)
	near([]faultKind{faultNone}, 0.1)
	if again := count(); len(again) != len(m) || again[faultNone] != m[faultNone] || again[faultErrorAfter] != m[faultErrorAfter] {
		t.Errorf("the same seed drew %v, then %v", m, again)
	}

	for _, bad := range []Faults{
		{ErrorRate: -0.1}, {ResetRate: 1.5}, {ErrorRate: 0.6, MalformedRate: 0.6}, {ErrorRate: math.NaN()}, {Latency: -time.Second},
		{SlowRate: 0.1}, {SlowRate: 0.5, SlowLatency: time.Second, ErrorRate: 0.6}, {SlowLatency: -time.Second},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
		if _, err := New(Config{StateDir: t.TempDir(), Faults: bad}); err == nil {
			t.Errorf("New accepted faults %+v", bad)
		}
	}
}
