package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Faults are injected into /api/v1 requests (never into the control
// endpoints), to test a client against what real APIs and the networks in
// front of them do. For each request one number is drawn from a random
// sequence seeded with Seed, and compared with ErrorRate, then
// RateLimitRate, MalformedRate, ResetRate and SlowRate in turn: their sum is
// the probability of a fault and must not exceed 1.
type Faults struct {
	// ErrorRate is the probability of an HTTP 500, 502 or 503. Half of them
	// come before the request is processed, half after: then the request
	// took effect (a reissue was placed and charged) but its reply is lost,
	// the case that only a replayed unique_id makes safe.
	ErrorRate float64
	// RateLimitRate is the probability of an HTTP 429 with Retry-After,
	// before processing.
	RateLimitRate float64
	// MalformedRate is the probability of an HTTP 200 whose JSON body is
	// truncated, after processing.
	MalformedRate float64
	// ResetRate is the probability that the connection is closed without a
	// reply; half before processing, half after.
	ResetRate float64
	// SlowRate is the probability that a reply is held back for SlowLatency
	// (on top of Latency) after processing. Longer than the client's
	// timeout, it is a request that took effect but whose reply never
	// arrives in time: the client gives up by itself, where a reset or a
	// 5xx would have told it at once.
	SlowRate float64
	// SlowLatency is the delay of a slow reply (SlowRate); it must be
	// positive when SlowRate is.
	SlowLatency time.Duration
	// RetryAfter is the Retry-After of 429 replies, rounded up to whole
	// seconds (default 1s).
	RetryAfter time.Duration
	// Latency delays every API reply (after processing, before the reply is
	// written). A client that gives up meanwhile gets no reply, but the
	// request has taken effect.
	Latency time.Duration
	// Seed seeds the random sequence, so that a run can be repeated.
	Seed int64
}

func (f Faults) validate() error {
	sum := 0.0
	for _, r := range []struct {
		name string
		v    float64
	}{{"ErrorRate", f.ErrorRate}, {"RateLimitRate", f.RateLimitRate}, {"MalformedRate", f.MalformedRate}, {"ResetRate", f.ResetRate}, {"SlowRate", f.SlowRate}} {
		if math.IsNaN(r.v) || r.v < 0 || r.v > 1 {
			return fmt.Errorf("faults: %s %v is not a probability between 0 and 1", r.name, r.v)
		}
		sum += r.v
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("faults: the rates add up to %v, more than 1", sum)
	}
	if f.RetryAfter < 0 || f.Latency < 0 || f.SlowLatency < 0 {
		return fmt.Errorf("faults: RetryAfter, Latency and SlowLatency must not be negative")
	}
	if f.SlowRate > 0 && f.SlowLatency == 0 {
		return fmt.Errorf("faults: SlowRate %v without a SlowLatency would delay nothing", f.SlowRate)
	}
	return nil
}

type faultKind int

const (
	faultNone faultKind = iota
	faultErrorBefore
	faultErrorAfter
	faultRateLimit
	faultMalformed
	faultResetBefore
	faultResetAfter
	faultSlow
)

var faultNames = map[faultKind]string{
	faultErrorBefore: "server error before processing",
	faultErrorAfter:  "server error after processing",
	faultRateLimit:   "rate limit",
	faultMalformed:   "truncated reply after processing",
	faultResetBefore: "connection reset before processing",
	faultResetAfter:  "connection reset after processing",
	faultSlow:        "slow reply after processing",
}

// fault is what happens to one request.
type fault struct {
	kind       faultKind
	status     int // for server errors
	retryAfter time.Duration
	latency    time.Duration
}

func (f fault) beforeProcessing() bool {
	return f.kind == faultErrorBefore || f.kind == faultRateLimit || f.kind == faultResetBefore
}

// faultInjector draws the faults. It is safe for concurrent use.
type faultInjector struct {
	mu  sync.Mutex
	f   Faults
	rng *rand.Rand
}

func newFaultInjector(f Faults) *faultInjector {
	fi := &faultInjector{}
	fi.set(f)
	return fi
}

func (fi *faultInjector) set(f Faults) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.f = f
	fi.rng = rand.New(rand.NewPCG(uint64(f.Seed), 0x73616e64626f78)) // "sandbox"
}

// draw decides the fault of one request. It always consumes the same
// amount of randomness, so that the sequence depends on the seed alone.
func (fi *faultInjector) draw() fault {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	u := fi.rng.Float64()
	first := fi.rng.IntN(2) == 0
	status := []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable}[fi.rng.IntN(3)]
	retryAfter := fi.f.RetryAfter
	if retryAfter == 0 {
		retryAfter = time.Second
	}
	out := fault{status: status, retryAfter: retryAfter, latency: fi.f.Latency}
	switch {
	case u < fi.f.ErrorRate:
		out.kind = faultErrorAfter
		if first {
			out.kind = faultErrorBefore
		}
	case u < fi.f.ErrorRate+fi.f.RateLimitRate:
		out.kind = faultRateLimit
	case u < fi.f.ErrorRate+fi.f.RateLimitRate+fi.f.MalformedRate:
		out.kind = faultMalformed
	case u < fi.f.ErrorRate+fi.f.RateLimitRate+fi.f.MalformedRate+fi.f.ResetRate:
		out.kind = faultResetAfter
		if first {
			out.kind = faultResetBefore
		}
	case u < fi.f.ErrorRate+fi.f.RateLimitRate+fi.f.MalformedRate+fi.f.ResetRate+fi.f.SlowRate:
		out.kind = faultSlow
		out.latency += fi.f.SlowLatency
	}
	return out
}

// serveAPI serves an API request through the fault injector: a fault before
// processing replaces the request; otherwise the request is processed into a
// buffer, and the buffered reply is written, delayed, or replaced by a fault.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	f := s.faults.draw()
	if f.beforeProcessing() {
		s.log.Info("fault injected", zap.String("path", r.URL.Path), zap.String("fault", faultNames[f.kind]))
		if sleep(r.Context(), f.latency) {
			writeFault(w, f, nil)
		}
		return
	}
	rec := newReplyRecorder()
	s.handleAPI(rec, r)
	if f.kind == faultSlow {
		s.log.Info("fault injected", zap.String("path", r.URL.Path), zap.String("fault", faultNames[f.kind]),
			zap.Duration("latency", f.latency))
	}
	if !sleep(r.Context(), f.latency) {
		s.log.Info("client gone before the reply was written", zap.String("path", r.URL.Path))
		return
	}
	if f.kind == faultNone || f.kind == faultSlow {
		rec.copyTo(w)
		return
	}
	s.log.Info("fault injected", zap.String("path", r.URL.Path), zap.String("fault", faultNames[f.kind]),
		zap.Int("lost_status", rec.status))
	writeFault(w, f, rec)
}

// sleep waits d unless ctx ends first; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// writeFault writes the injected fault; rec is the real reply (nil before
// processing).
func writeFault(w http.ResponseWriter, f fault, rec *replyRecorder) {
	switch f.kind {
	case faultErrorBefore, faultErrorAfter:
		if f.status == http.StatusInternalServerError {
			writeJSON(w, f.status, envelope{Message: "internal server error", ErrorCode: CodeInternalError})
			return
		}
		// Gateways in front of an API answer in HTML, not in its envelope.
		text := http.StatusText(f.status)
		body := fmt.Sprintf("<html><head><title>%d %s</title></head><body><center><h1>%d %s</h1></center></body></html>\n",
			f.status, text, f.status, text)
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.status)
		w.Write([]byte(body))
	case faultRateLimit:
		secs := int(math.Ceil(f.retryAfter.Seconds()))
		if secs < 1 {
			secs = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeJSON(w, http.StatusTooManyRequests, envelope{
			Message: fmt.Sprintf("too many requests; retry after %d second(s)", secs), ErrorCode: CodeRateLimited,
		})
	case faultMalformed:
		body := rec.body.Bytes()
		cut := body[:len(body)/2]
		if len(cut) == 0 {
			cut = []byte(`{"success":`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write(cut)
	case faultResetBefore, faultResetAfter:
		resetConnection(w)
	}
}

// resetConnection closes the client's connection without a reply, with a TCP
// reset where possible.
func resetConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler) // HTTP/2: the server resets the stream
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

// replyRecorder buffers a reply, so that a fault can replace it after the
// request was processed.
type replyRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newReplyRecorder() *replyRecorder {
	return &replyRecorder{header: http.Header{}, status: http.StatusOK}
}

func (r *replyRecorder) Header() http.Header         { return r.header }
func (r *replyRecorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *replyRecorder) WriteHeader(status int)      { r.status = status }

func (r *replyRecorder) copyTo(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.status)
	w.Write(r.body.Bytes())
}
