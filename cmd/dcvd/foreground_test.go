package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

// replyErrors returns what a reseller client makes of two successive
// replies of a server answering with reply: the errors a foreground
// command sees, as the daemon records them.
func replyErrors(t *testing.T, maxReply int64, reply func(call int, w http.ResponseWriter)) (first, second error) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply(int(calls.Add(1)), w)
	}))
	t.Cleanup(srv.Close)
	c, err := reseller.New(reseller.Config{BaseURL: srv.URL + "/api/v1", AccessKeyID: "AK", AccessKeySecret: "secret",
		Timeout: 5 * time.Second, MaxReplyBytes: maxReply})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, first = c.Detail(ctx, "svc")
	_, second = c.Detail(ctx, "svc")
	return first, second
}

// TestDeterministicFailures: the replies that waiting does not mend (not
// JSON, over the size limit) are told apart from those it may (a server
// error, a rate limit), from the error and from its text alike; two such
// replies that differ only in their bodies are the same failure.
func TestDeterministicFailures(t *testing.T) {
	for _, tt := range []struct {
		name          string
		maxReply      int64
		reply         func(call int, w http.ResponseWriter)
		deterministic bool
	}{
		{"truncated JSON", 0, func(call int, w http.ResponseWriter) {
			w.Write([]byte(`{"success": true, "data": {"id": "` + strings.Repeat("x", call) + `", "cre`))
		}, true},
		{"not JSON", 0, func(call int, w http.ResponseWriter) {
			w.Write([]byte(strings.Repeat("<html>", call)))
		}, true},
		{"oversized", 1 << 10, func(call int, w http.ResponseWriter) {
			w.Write([]byte(`{"success": true, "data": {"pad": "` + strings.Repeat("y", 4<<10+call) + `"}}`))
		}, true},
		{"server error", 0, func(call int, w http.ResponseWriter) {
			w.WriteHeader(http.StatusBadGateway)
		}, false},
		{"rate limited", 0, func(call int, w http.ResponseWriter) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"success": false, "message": "slow down"}`))
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			first, second := replyErrors(t, tt.maxReply, tt.reply)
			if first == nil || second == nil {
				t.Fatalf("errors %v, %v; want two failures", first, second)
			}
			if got := deterministicErr(first); got != tt.deterministic {
				t.Errorf("deterministicErr(%v) = %v, want %v", first, got, tt.deterministic)
			}
			if got := deterministicText(first.Error()); got != tt.deterministic {
				t.Errorf("deterministicText(%q) = %v, want %v", first, got, tt.deterministic)
			}
			if tt.deterministic && failureKey(first.Error()) != failureKey(second.Error()) {
				t.Errorf("two replies of the same kind are different failures:\n%s\n%s", first, second)
			}
		})
	}
}

// TestRepeatsGiveUpOnIdenticalFailures: the count grows with identical
// deterministic failures of one step, and starts again when the error or
// the step changes, or a failure that waiting may mend comes between.
func TestRepeatsGiveUpOnIdenticalFailures(t *testing.T) {
	const (
		bad  = `reseller reissue: cannot understand the reply (HTTP 200): the reply is not valid JSON: unexpected end of JSON input; body starts "{\"a"`
		bad2 = `reseller reissue: cannot understand the reply (HTTP 200): the reply is not valid JSON: unexpected end of JSON input; body starts "{\"b"`
		big  = `reseller reissue: cannot understand the reply (HTTP 200): the reply exceeds the limit of 4194304 bytes; body starts "{"`
		gone = `reseller reissue: failed (HTTP 502): Bad Gateway`
	)
	type try struct {
		step store.Step
		msg  string
		want int
	}
	for _, tt := range []struct {
		name  string
		tries []try
	}{
		{"three identical", []try{{store.StepNew, bad, 1}, {store.StepNew, bad2, 2}, {store.StepNew, bad, 3}}},
		{"error changes", []try{{store.StepNew, bad, 1}, {store.StepNew, big, 1}, {store.StepNew, big, 2}, {store.StepNew, bad, 1}}},
		{"transient between", []try{{store.StepNew, bad, 1}, {store.StepNew, gone, 0}, {store.StepNew, bad, 1}, {store.StepNew, bad, 2}}},
		{"transient only", []try{{store.StepNew, gone, 0}, {store.StepNew, gone, 0}, {store.StepNew, gone, 0}, {store.StepNew, gone, 0}}},
		{"step changes", []try{{store.StepNew, bad, 1}, {store.StepNew, bad, 2}, {store.StepRechecked, bad, 1}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var r repeats
			for i, tr := range tt.tries {
				if got := r.failed(tr.step, tr.msg, deterministicText(tr.msg)); got != tr.want {
					t.Fatalf("try %d (%s, %q): count %d, want %d", i+1, tr.step, tr.msg, got, tr.want)
				}
			}
		})
	}
}

// TestFollowWatch: following an order through the daemon's status, a
// failed try is seen as its failed tries counter grows; the failure the
// order records when the follow starts counts as the first.
func TestFollowWatch(t *testing.T) {
	const bad = `reseller reissue: cannot understand the reply (HTTP 200): the reply is not valid JSON: unexpected end of JSON input`
	look := func(step store.Step, attempts int, lastErr string) *control.OrderStatus {
		return &control.OrderStatus{Step: step, Attempts: attempts, LastError: lastErr}
	}
	type want struct {
		failed bool
		n      int
	}
	for _, tt := range []struct {
		name  string
		looks []*control.OrderStatus
		want  []want
	}{
		{"from the start", []*control.OrderStatus{
			look(store.StepNew, 0, ""), look(store.StepNew, 1, bad), look(store.StepNew, 1, bad),
			look(store.StepNew, 2, bad), look(store.StepNew, 3, bad),
		}, []want{{false, 0}, {true, 1}, {false, 1}, {true, 2}, {true, 3}}},
		{"joined after a failure", []*control.OrderStatus{
			look(store.StepNew, 1, bad), look(store.StepNew, 2, bad), look(store.StepNew, 3, bad),
		}, []want{{true, 1}, {true, 2}, {true, 3}}},
		{"progress resets", []*control.OrderStatus{
			look(store.StepNew, 2, bad), look(store.StepSubmitted, 0, ""), look(store.StepRechecked, 1, bad),
		}, []want{{true, 1}, {false, 0}, {true, 1}}},
		{"transient", []*control.OrderStatus{
			look(store.StepNew, 1, bad), look(store.StepNew, 2, "reseller reissue: failed (HTTP 503)"), look(store.StepNew, 3, bad),
		}, []want{{true, 1}, {true, 0}, {true, 1}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var w followWatch
			for i, l := range tt.looks {
				failed, n := w.observe(l)
				if failed != tt.want[i].failed || n != tt.want[i].n {
					t.Fatalf("look %d (%+v): failed %v, count %d; want %v, %d", i+1, l, failed, n, tt.want[i].failed, tt.want[i].n)
				}
			}
		})
	}
}

func TestGaveUpErrorNamesTheFailure(t *testing.T) {
	cause := errors.New("reseller reissue: cannot understand the reply (HTTP 200): x")
	err := &gaveUpError{n: 3, err: cause}
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), "3 identical failures") || !strings.Contains(err.Error(), cause.Error()) {
		t.Errorf("gaveUpError: %v", err)
	}
}
