package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/sandbox"
)

// The fault injection suite (issue 8): certificates reissued through the
// real daemon code while the sandbox CA misbehaves, and "dcvd run" killed
// with SIGKILL at random moments. Both tests draw their choices from a
// seed that they log; DCVD_FAULT_SEED sets it to repeat a run. The seed
// fixes the sandbox's fault sequence and the test's own choices (the kill
// delays); which concurrent request meets which fault is up to the
// scheduler, so a repeated run is close to, not exactly, the first.

// faultSeedEnv names the variable that sets the seed of the fault tests.
const faultSeedEnv = "DCVD_FAULT_SEED"

// faultSeed returns the seed of the running test: faultSeedEnv's value, or
// a fresh one. It is logged, with the command that repeats the run.
func faultSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(faultSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: not a seed (an unsigned integer): %v", faultSeedEnv, s, err)
		}
		seed = v
	}
	t.Logf("seed %d; repeat with: %s=%d go test -race -count=1 -run '^%s$' ./internal/e2e/", seed, faultSeedEnv, seed, t.Name())
	return seed
}

// serverErrors collects what an httptest server logs (a handler's panic
// among others), so that a test can prove there was none.
type serverErrors struct{ buf lockedBuffer }

// start starts h on a new test server logging into e.
func (e *serverErrors) start(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ErrorLog = log.New(&e.buf, "", 0)
	ts.Start()
	return ts
}

// check fails the test if a server logged a panic.
func (e *serverErrors) check(t *testing.T, what string) {
	t.Helper()
	if s := e.buf.String(); strings.Contains(s, "panic") {
		t.Errorf("%s logged a panic:\n%s", what, s)
	}
}

// sameSerial reports whether two hex serials are the same number: the
// sandbox writes 32 digits, leading zeros included, dcvd no leading zero.
func sameSerial(a, b string) bool {
	x, okA := new(big.Int).SetString(a, 16)
	y, okB := new(big.Int).SetString(b, 16)
	return okA && okB && x.Cmp(y) == 0
}

// faultClock is the daemon's clock in the batch test: time.Now shifted
// by an offset that only grows. The drivers move it to the next attempt
// of their order, so that the daemon's retry backoffs (10s, 30s, 1m, …,
// each measured on this clock) take no real time. A driver holds gate
// (shared) while it calls the daemon, and a move waits for every such
// call to return: during a call the clock runs at the speed of time, so
// that a wait the daemon decides can be measured.
type faultClock struct {
	gate   sync.RWMutex
	mu     sync.Mutex
	offset time.Duration
}

func (c *faultClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

// advanceTo moves the clock to at, unless it is there already.
func (c *faultClock) advanceTo(at time.Time) {
	c.gate.Lock()
	defer c.gate.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := time.Until(at); d > c.offset {
		c.offset = d
	}
}

// apiCall is one request that reached the sandbox's API, and what became
// of it.
type apiCall struct {
	op, serviceID, uniqueID string
	status                  int  // 0: no reply written
	reset                   bool // the connection was closed without a reply
	malformed               bool // HTTP 200 whose body is not JSON
	// charged says the request placed the order it names: its unique_id
	// had no charge before it and has one after.
	charged bool
}

// fault names what the caller met, "" for a whole reply.
func (c apiCall) fault() string {
	switch {
	case c.reset:
		return "reset"
	case c.status == 0:
		return "no reply in time"
	case c.status == http.StatusTooManyRequests:
		return "429"
	case c.status >= 500:
		return "5xx"
	case c.malformed:
		return "malformed"
	}
	return ""
}

// apiLog records every API request through the sandbox's handler: the
// service and unique_id it names, the reply, and whether it charged.
type apiLog struct {
	sb *sandbox.Server

	mu    sync.Mutex
	calls []apiCall
}

func (l *apiLog) charged(uid string) bool {
	return slices.ContainsFunc(l.sb.Ledger(), func(c sandbox.Charge) bool { return c.UniqueID == uid })
}

// wrap records the API requests on their way to h.
func (l *apiLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op, ok := strings.CutPrefix(r.URL.Path, "/api/v1")
		if !ok {
			h.ServeHTTP(w, r)
			return
		}
		c := apiCall{op: op, serviceID: r.URL.Query().Get("service_id")}
		if r.Body != nil {
			body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
			r.Body.Close()
			if err != nil {
				return // the client is gone
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			var p map[string]any
			_ = json.Unmarshal(body, &p) // a malformed body is the sandbox's to refuse
			if s, ok := p["service_id"].(string); ok {
				c.serviceID = s
			}
			c.uniqueID, _ = p["unique_id"].(string)
		}
		before := c.uniqueID != "" && l.charged(c.uniqueID)
		rw := &replyWatcher{ResponseWriter: w}
		h.ServeHTTP(rw, r)
		c.status, c.reset = rw.status, rw.hijacked
		c.malformed = rw.status == http.StatusOK && !json.Valid(rw.body.Bytes())
		c.charged = c.uniqueID != "" && !before && l.charged(c.uniqueID)
		l.mu.Lock()
		l.calls = append(l.calls, c)
		l.mu.Unlock()
	})
}

func (l *apiLog) snapshot() []apiCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// replyWatcher passes a reply through and keeps its status and body; it
// lets the sandbox hijack the connection to reset it.
type replyWatcher struct {
	http.ResponseWriter
	status   int
	body     bytes.Buffer
	hijacked bool
}

func (w *replyWatcher) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *replyWatcher) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *replyWatcher) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.hijacked = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// fakeReloads is the Deployer's Run of the batch test: it records each
// certificate's reloaded serials.
type fakeReloads struct {
	mu      sync.Mutex
	serials map[string][]string
}

func (f *fakeReloads) run(ctx context.Context, _ string, env []string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	var cert, serial string
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "DCVD_CERT_NAME="); ok {
			cert = v
		}
		if v, ok := strings.CutPrefix(kv, "DCVD_SERIAL="); ok {
			serial = v
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serials[cert] = append(f.serials[cert], serial)
	return "reloaded\n", nil
}

func (f *fakeReloads) last(cert string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.serials[cert]; len(s) > 0 {
		return s[len(s)-1]
	}
	return ""
}
