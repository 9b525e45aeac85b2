package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"maps"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
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

// The batch test's sizes and faults. Six in ten API requests fail, in
// every way the sandbox knows; one in three fails after it took effect
// (5xx, truncated reply, reset or slow reply after processing). At these rates each kind of fault, and a reissue whose reply is
// lost after it was charged, all occur in a run but for odds below 1e-4.
const (
	batchCerts = 24
	// batchAPITimeout is the daemon's [api] timeout: a slow reply
	// (batchFaults.SlowLatency) outlasts it.
	batchAPITimeout = time.Second
	// batchMaxRounds bounds the Reissue calls of one certificate: at six
	// failures in ten, 200 are not needed but for odds below 1e-20.
	batchMaxRounds = 200
)

func batchFaults(seed uint64) sandbox.Faults {
	return sandbox.Faults{
		ErrorRate:     0.2,
		RateLimitRate: 0.1,
		MalformedRate: 0.1,
		ResetRate:     0.14,
		SlowRate:      0.06,
		SlowLatency:   time.Minute,      // the client gives up after batchAPITimeout
		RetryAfter:    30 * time.Second, // above the first backoffs (10 s, 30 s): only heeding it keeps the order from coming back sooner
		Latency:       2 * time.Millisecond,
		Seed:          int64(seed),
	}
}

// batchDomains are the names of certificate i of the batch test, by
// method: dns-validated (an apex and its wildcard), http-validated, or
// both.
func batchDomains(name string, i int) map[string]reseller.Method {
	base := name + ".example.com"
	switch i % 3 {
	case 0:
		return map[string]reseller.Method{base: reseller.MethodDNS, "*." + base: reseller.MethodDNS, "www." + base: reseller.MethodHTTP}
	case 1:
		return map[string]reseller.Method{base: reseller.MethodHTTP, "www." + base: reseller.MethodHTTP}
	}
	return map[string]reseller.Method{base: reseller.MethodDNS, "*." + base: reseller.MethodDNS}
}

// TestFaultsBatchReissue reissues a batch of certificates, at once,
// through the daemon (package daemon, in this process) against a sandbox
// CA that fails six API requests in ten: HTTP 5xx before and after the
// request took effect, 429 with Retry-After, truncated JSON, connection
// resets before and after, replies slower than the daemon's timeout, and
// a little latency on all. The daemon's clock is moved to each order's
// next attempt, so that its backoffs cost no real time. Then every
// certificate must be deployed (chaining to the sandbox root, for its
// names and the key of its order), reloaded, live in the state with
// nothing in flight and no error; the sandbox must have charged once per
// certificate, for the unique_id of its order, the only one its reissue
// requests carried; no DCV record or file may be left; no retry may come
// before the Retry-After of a 429; nothing may panic; and once the
// daemon and the servers are closed, no goroutine may be left.
func TestFaultsBatchReissue(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	seed := faultSeed(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	// Every close below is also a cleanup, for a test that stops early;
	// the leak check at the end closes them in order itself.
	var closers []func()
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		closers = nil
	}
	t.Cleanup(closeAll)
	onClose := func(f func()) {
		var once sync.Once
		closers = append(closers, func() { once.Do(f) })
	}

	const zone = "example.com"
	dnsSrv, err := memdns.Start("127.0.0.1:0", zone)
	if err != nil {
		t.Fatal(err)
	}
	onClose(func() { dnsSrv.Close() })
	var webErrs, apiErrs serverErrors
	webroot := t.TempDir()
	web := webErrs.start(t, http.FileServer(http.Dir(webroot)))
	onClose(web.Close)
	webAddr := web.Listener.Addr().String()

	names := make([]string, batchCerts)
	product := sandbox.DefaultProducts()[0].ID
	var services []sandbox.Service
	for i := range names {
		names[i] = fmt.Sprintf("f%02d", i)
		services = append(services, sandbox.Service{ID: names[i], ProductID: product})
	}
	faults := batchFaults(seed)
	sb, err := sandbox.New(sandbox.Config{
		StateDir: t.TempDir(), DNSServer: dnsSrv.Addr(), HTTPAddr: webAddr, CheckInterval: -1,
		Products: sandbox.DefaultProducts(), Services: services, Faults: faults,
	})
	if err != nil {
		t.Fatal(err)
	}
	onClose(func() { sb.Close() })
	clock := &faultClock{}
	calls := &apiLog{sb: sb}
	api := apiErrs.start(t, calls.wrap(sb.Handler()))
	onClose(api.Close)

	id, secret := sb.AccessKey()
	deployRoot := t.TempDir()
	cfg := &config.Config{
		API: config.APIConfig{BaseURL: api.URL + "/api/v1", AccessKeyID: id, AccessKeySecret: secret, Timeout: batchAPITimeout},
		Daemon: config.DaemonConfig{
			StateDir: t.TempDir(), Schedule: config.DefaultSchedule, MaxConcurrent: 4, PollInterval: 50 * time.Millisecond,
		},
	}
	for i, name := range names {
		cfg.Certificates = append(cfg.Certificates, config.CertConfig{
			Name: name, ServiceID: name, KeyType: "ecdsa-p256", DNS: "zone",
			Webroots:    []httpchallenge.Webroot{{Dir: webroot}},
			HTTPConnect: webAddr,
			Domains:     batchDomains(name, i),
			Deploy:      deploy.Spec{Dir: filepath.Join(deployRoot, name), Reload: "systemctl reload nginx"},
		})
	}
	var logs lockedBuffer
	logger := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(&logs), zap.InfoLevel))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log:\n%s", logs.String())
		}
	})
	reloads := &fakeReloads{serials: map[string][]string{}}
	d, err := daemon.New(ctx, cfg, daemon.Options{
		Log: logger,
		DNS: map[string]*providers.DNS{"zone": providers.NewWith("zone", dnsSrv, zone, providers.Propagation{
			Nameservers: []string{dnsSrv.Addr()}, Interval: 20 * time.Millisecond, Timeout: 10 * time.Second,
		})},
		Roots:    sb.RootPool(),
		Now:      clock.Now,
		Deployer: &deploy.Deployer{Log: logger, Run: reloads.run},
	})
	if err != nil {
		t.Fatal(err)
	}
	onClose(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close the daemon: %v", err)
		}
	})

	// One driver per certificate, all at once: each calls Reissue as the
	// running daemon's driver would, and moves the clock to the order's
	// next attempt whenever it must wait.
	type outcome struct {
		order  *store.Order
		err    error
		rounds int
		// retryAfters counts the steps failed by a 429; early lists those
		// the daemon retried sooner than the reply's Retry-After.
		retryAfters int
		early       []string
	}
	outcomes := make([]outcome, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			out := &outcomes[i]
			for out.rounds < batchMaxRounds && ctx.Err() == nil {
				out.rounds++
				clock.gate.RLock()
				before := clock.Now()
				o, err := d.Reissue(ctx, name, daemon.ReissueOptions{})
				clock.gate.RUnlock()
				out.order, out.err = o, err
				if o == nil || o.Step.Terminal() {
					return
				}
				if ra := reseller.RetryAfter(err); ra > 0 {
					// The step failed after before: its retry is due
					// less than NextAttempt-before after the 429.
					out.retryAfters++
					if wait := o.NextAttempt.Sub(before); wait < ra {
						out.early = append(out.early, fmt.Sprintf("%s retried within %s of a 429 with Retry-After %s",
							o.Step, wait.Round(time.Millisecond), ra))
					}
				}
				clock.advanceTo(o.NextAttempt)
			}
		})
	}
	wg.Wait()
	ran := time.Since(start)

	// Every order is done, and the daemon says so.
	orders := map[string]*store.Order{}
	rounds, retryAfters := 0, 0
	for i, name := range names {
		out := outcomes[i]
		rounds += out.rounds
		retryAfters += out.retryAfters
		for _, e := range out.early {
			t.Errorf("certificate %s: %s", name, e)
		}
		switch {
		case out.order == nil:
			t.Errorf("certificate %s: no order: %v", name, out.err)
		case out.order.Step != store.StepDone || out.err != nil:
			t.Errorf("certificate %s: order %s ended at step %s after %d Reissue calls: %v (last error %q)",
				name, out.order.UniqueID, out.order.Step, out.rounds, out.err, out.order.LastError)
		default:
			orders[name] = out.order
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	sts, err := d.Status(ctx)
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	ledger := sb.Ledger()
	paid := map[string][]sandbox.Charge{}
	for _, c := range ledger {
		paid[c.ServiceID] = append(paid[c.ServiceID], c)
	}
	for _, st := range sts {
		o := orders[st.Name]
		if st.Serial != o.Serial || st.Order != nil || st.LastError != "" {
			t.Errorf("status of %s: serial %q (order %s issued %s), order in flight %+v, last error %q",
				st.Name, st.Serial, o.UniqueID, o.Serial, st.Order, st.LastError)
		}
		if cs := paid[st.Name]; len(cs) == 1 && st.TotalCost != cs[0].Amount {
			t.Errorf("status of %s: total cost %.2f, the sandbox charged %.2f", st.Name, st.TotalCost, cs[0].Amount)
		}
	}
	active, err := d.Store().ActiveOrders(ctx)
	if err != nil || len(active) != 0 {
		t.Errorf("orders in flight after the batch: %d (%v)", len(active), err)
	}

	// One charge per certificate, for its order; every reissue request
	// for it named that order; nothing revoked.
	if len(ledger) != len(names) {
		t.Errorf("the sandbox charged %d time(s), want once for each of %d certificates", len(ledger), len(names))
	}
	if rs := sb.Revocations(); len(rs) > 0 {
		t.Errorf("the sandbox revoked %+v", rs)
	}
	reqs := calls.snapshot()
	sent := map[string][]string{}
	for _, c := range reqs {
		if c.op == reseller.PathReissue && !slices.Contains(sent[c.serviceID], c.uniqueID) {
			sent[c.serviceID] = append(sent[c.serviceID], c.uniqueID)
		}
	}
	svcs := sandboxServices(ctx, t, api.URL)
	for _, name := range names {
		o := orders[name]
		if cs := paid[name]; len(cs) != 1 || cs[0].UniqueID != o.UniqueID {
			t.Errorf("certificate %s: charges %+v, want one, for order %s", name, cs, o.UniqueID)
		}
		if got := sent[name]; len(got) != 1 || got[0] != o.UniqueID {
			t.Errorf("certificate %s: reissue requests carried unique_ids %v, want only %s", name, got, o.UniqueID)
		}
		if s := svcs[name]; s.OrderUniqueID != o.UniqueID || !sameSerial(s.Serial, o.Serial) {
			t.Errorf("certificate %s: the sandbox's current order is %s with serial %s, the daemon's %s with %s",
				name, s.OrderUniqueID, s.Serial, o.UniqueID, o.Serial)
		}

		// Deployed: complete, chaining to the sandbox root for every
		// name, the order's certificate for the order's key; reloaded.
		dir := filepath.Join(deployRoot, name)
		leaf := checkDeployed(t, dir, sb.RootPool(), o.Names)
		if leaf.SerialNumber.Cmp(parseSerial(t, o.Serial)) != 0 {
			t.Errorf("certificate %s: %s/cert.pem has serial %x, the order %s", name, dir, leaf.SerialNumber, o.Serial)
		}
		keyPEM, err := os.ReadFile(o.KeyFile)
		if err != nil {
			t.Fatalf("certificate %s: the order's key: %v", name, err)
		}
		if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(publicKeyOf(t, o.KeyFile, keyPEM)) {
			t.Errorf("certificate %s: the deployed certificate is not for the order's key %s", name, o.KeyFile)
		}
		if got := reloads.last(name); got != o.Serial {
			t.Errorf("certificate %s: the last reload was for serial %q, want %s", name, got, o.Serial)
		}
	}

	// No DCV left behind.
	if files := filesUnder(webroot); len(files) > 0 {
		t.Errorf("validation files left in the web root: %v", files)
	}
	recs, err := dnsSrv.GetRecords(ctx, zone)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if rr := r.RR(); rr.Type == "CNAME" {
			t.Errorf("DCV record left in the zone: %s CNAME %s", rr.Name, rr.Data)
		}
	}

	// The faults happened, each kind; a reissue's reply was lost after it
	// was charged (the case the unique_id exists for); a 429 reached the
	// daemon with its Retry-After (whose wait was checked above).
	kinds := map[string]int{}
	lostCharged := 0
	for _, c := range reqs {
		f := c.fault()
		kinds[f]++
		if c.op == reseller.PathReissue && c.charged && f != "" {
			lostCharged++
		}
	}
	t.Logf("%d certificates in %s: %d API requests, by fault %v; %d reissue replies lost after the charge; %d steps failed by a 429; %d Reissue calls",
		len(names), ran.Round(time.Millisecond), len(reqs), kinds, lostCharged, retryAfters, rounds)
	for _, k := range []string{"5xx", "429", "malformed", "reset", "no reply in time"} {
		if kinds[k] == 0 {
			t.Errorf("no API request met a %q fault: the faults of %+v were not injected", k, faults)
		}
	}
	if lostCharged == 0 {
		t.Errorf("no reissue reply was lost after its charge: the run did not test the unique_id")
	}
	if retryAfters == 0 {
		t.Errorf("no step failed by a 429 carried its Retry-After to the daemon")
	}

	// Nothing panicked, and once everything is closed no goroutine is
	// left (the HTTP servers go last: they end the daemon's idle
	// keep-alive connections).
	closeAll()
	webErrs.check(t, "the web server")
	apiErrs.check(t, "the sandbox's API server")
	goleak.VerifyNone(t, leaks)
}

// The restart test's sizes: each kill comes after a random delay in
// [killMinDelay, killMinDelay+killDelaySpan) from the start of "dcvd run".
// A -race build of dcvd takes about 0.3s to start on a 2-core machine, so
// that about a quarter of the kills land while it starts (opening the
// state, resuming orders), the rest while it works.
const (
	killCerts     = 50
	killRestarts  = 20
	killMinDelay  = 10 * time.Millisecond
	killDelaySpan = 1200 * time.Millisecond
)

// dcvdRun is one "dcvd run" process, killed when the test ends if it is
// still running, its output logged if the test failed.
type dcvdRun struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

// startDcvdRun starts "dcvd run" on cfgPath with RUNTIME_DIRECTORY
// runtimeDir and the extra environment env.
func startDcvdRun(t *testing.T, bin, cfgPath, runtimeDir string, env ...string) *dcvdRun {
	t.Helper()
	r := &dcvdRun{cmd: exec.Command(bin, "run", "--config", cfgPath), out: &lockedBuffer{}, done: make(chan struct{})}
	r.cmd.Env = dcvdEnv(append([]string{"RUNTIME_DIRECTORY=" + runtimeDir}, env...))
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	r.cmd.WaitDelay = 5 * time.Second
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start dcvd run: %v", err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("dcvd run's output:\n%s", r.out.String())
		}
	})
	return r
}

// statusAll runs "dcvd status --json" and returns its entries by name.
func statusAll(ctx context.Context, t *testing.T, bin, cfgPath string) map[string]certStatus {
	t.Helper()
	r := runDcvd(ctx, bin, nil, "status", "--json", "--config", cfgPath)
	if statusFailed(r) {
		t.Fatalf("dcvd status --json: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	var sts []certStatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
		t.Fatalf("dcvd status --json printed %q: %v", r.stdout, err)
	}
	out := map[string]certStatus{}
	for _, s := range sts {
		out[s.Name] = s
	}
	return out
}

// killedState is what dcvd's state holds after a kill.
type killedState struct {
	live   map[string]*store.Certificate
	active map[string]*store.Order
}

// readKilledState opens dcvd's state (no dcvd may run) as a restart
// would, and reads the live certificates and the orders in flight. A kill
// before dcvd created its database leaves no state to read.
func readKilledState(ctx context.Context, t *testing.T, stateDir string) killedState {
	t.Helper()
	out := killedState{live: map[string]*store.Certificate{}, active: map[string]*store.Order{}}
	db := filepath.Join(stateDir, "dcvd.db")
	if _, err := os.Stat(db); errors.Is(err, fs.ErrNotExist) {
		return out
	}
	st, err := store.OpenSQLite(ctx, db)
	if err != nil {
		t.Fatalf("open dcvd's state after a kill: %v", err)
	}
	defer st.Close()
	certs, err := st.Certificates(ctx)
	if err != nil {
		t.Fatalf("read the live certificates after a kill: %v", err)
	}
	for _, c := range certs {
		out.live[c.Name] = c
	}
	orders, err := st.ActiveOrders(ctx)
	if err != nil {
		t.Fatalf("read the orders in flight after a kill: %v", err)
	}
	for _, o := range orders {
		if prev, ok := out.active[o.Cert]; ok {
			t.Fatalf("certificate %s has two orders in flight: %s at %s and %s at %s", o.Cert, prev.UniqueID, prev.Step, o.UniqueID, o.Step)
		}
		out.active[o.Cert] = o
	}
	return out
}

// TestFaultsSIGKILLRestarts runs "dcvd run" (the real binary, built with
// -race under -race) with 50 certificates validated by http files in a web
// root that a test server serves, and kills it with SIGKILL after a random
// delay, 20 times. After each kill the state must open and hold at most
// one order in flight per certificate, and no certificate may have been
// charged twice or reissued under two unique_ids so far. A last run must
// then finish every certificate, and stop on SIGTERM. Then: every
// certificate deployed (chaining to the sandbox root, for its names, with
// the key of the order that the state records), its reload run last for
// the live serial; "dcvd status --json" showing each live with nothing in
// flight and no error, and the cost the sandbox charged; each order done
// in the state; the sandbox charged once per certificate, for that order,
// and every reissue request for a certificate carried that one unique_id;
// no validation file left in the web root; nothing panicked or raced.
//
// Two leftovers of a kill are tolerated, each checked to be exactly that:
// the temporary file of a validation file killed before its rename (its
// order's cleanup removes it, except a few bytes long and under a minute
// old, which could be another write in progress), and the key file of an
// order killed before it was recorded (removed at a later start once a
// minute old, longer than this test runs).
func TestFaultsSIGKILLRestarts(t *testing.T) {
	bin := dcvdBinary(t, "")
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c)) // "kill"
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()

	dir := shortTempDir(t) // the control socket lives under it
	stateDir, runtimeDir := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	webroot, deployRoot := filepath.Join(dir, "webroot"), filepath.Join(dir, "deploy")
	reloadLog := filepath.Join(dir, "reloads.log")
	for _, d := range []string{runtimeDir, webroot} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(webroot, 0o755); err != nil {
		t.Fatal(err)
	}
	var webErrs, apiErrs serverErrors
	web := webErrs.start(t, http.FileServer(http.Dir(webroot)))
	t.Cleanup(web.Close)
	webAddr := web.Listener.Addr().String()

	names := make([]string, killCerts)
	product := sandbox.DefaultProducts()[0].ID
	var services []sandbox.Service
	for i := range names {
		names[i] = fmt.Sprintf("k%02d", i)
		services = append(services, sandbox.Service{ID: names[i], ProductID: product})
	}
	sb, err := sandbox.New(sandbox.Config{
		StateDir: t.TempDir(), HTTPAddr: webAddr, CheckInterval: -1,
		Products: sandbox.DefaultProducts(), Services: services,
	})
	if err != nil {
		t.Fatal(err)
	}
	reissues := &reissueLog{}
	api := apiErrs.start(t, reissues.wrap(sb.Handler()))
	t.Cleanup(func() {
		api.Close()
		sb.Close()
	})

	id, secret := sb.AccessKey()
	roots := filepath.Join(dir, "sandbox-root.pem")
	if err := os.WriteFile(roots, []byte(sb.RootPEM()), 0o644); err != nil {
		t.Fatal(err)
	}
	domains := func(name string) map[string]string {
		return map[string]string{name + ".example.com": "http", "www." + name + ".example.com": "http"}
	}
	var certs []map[string]any
	for _, name := range names {
		certs = append(certs, map[string]any{
			"name":         name,
			"service_id":   name,
			"webroot":      webroot,
			"http_connect": webAddr,
			"domains":      domains(name),
			"deploy": map[string]any{
				"dir":    filepath.Join(deployRoot, name),
				"reload": `printf '%s %s\n' "$DCVD_CERT_NAME" "$DCVD_SERIAL" >>'` + reloadLog + `'`,
			},
		})
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{
		"api": map[string]any{
			"base_url":               api.URL + "/api/v1",
			"access_key_id":          id,
			"access_key_secret_file": writeSecret(t, dir, "api-secret", secret),
			"ca_roots_file":          roots,
			"timeout":                "10s",
		},
		"daemon":      map[string]any{"state_dir": stateDir, "poll_interval": "50ms", "max_concurrent": 8},
		"certificate": certs,
	}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "dcvd.toml")
	if err := os.WriteFile(cfgPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	var runs []*dcvdRun
	t.Cleanup(func() {
		if t.Failed() {
			for i, r := range runs {
				t.Logf("----- output of run %d -----\n%s", i+1, r.out.String())
			}
		}
	})

	// Twenty kills, each checked.
	inFlight := map[store.Step]int{}
	for i := range killRestarts {
		delay := killMinDelay + time.Duration(rng.Int64N(int64(killDelaySpan)))
		r := startDcvdRun(t, bin, cfgPath, runtimeDir)
		runs = append(runs, r)
		select {
		case <-r.done:
			t.Fatalf("run %d: dcvd run exited by itself (%v) before its kill after %s", i+1, r.err, delay)
		case <-time.After(delay):
		}
		if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("run %d: SIGKILL: %v", i+1, err)
		}
		<-r.done
		if !killedBy(r.err, syscall.SIGKILL) {
			t.Fatalf("run %d: dcvd run ended with %v, want death by SIGKILL", i+1, r.err)
		}
		st := readKilledState(ctx, t, stateDir)
		steps := map[store.Step]int{}
		for _, o := range st.active {
			steps[o.Step]++
			inFlight[o.Step]++
		}
		ledger := sb.Ledger()
		t.Logf("kill %d after %s: %d live, in flight by step %v, %d charges", i+1, delay.Round(time.Millisecond), len(st.live), steps, len(ledger))
		charged := map[string]int{}
		for _, c := range ledger {
			if charged[c.ServiceID]++; charged[c.ServiceID] > 1 {
				t.Fatalf("after kill %d the sandbox charged %s twice: %+v", i+1, c.ServiceID, ledger)
			}
		}
		for svc, uids := range reissues.uniqueIDs() {
			if len(uids) > 1 {
				t.Fatalf("after kill %d certificate %s was reissued with unique_ids %v", i+1, svc, uids)
			}
		}
	}
	if len(inFlight) == 0 {
		t.Fatalf("no kill found an order in flight: the kills tested nothing")
	}
	t.Logf("orders in flight after the kills, by step, summed over the kills: %v", inFlight)
	killed := time.Since(start)

	// The last run finishes everything, and stops on SIGTERM. It is
	// watched through its control socket, which costs it less than a
	// "dcvd status" process would.
	r := startDcvdRun(t, bin, cfgPath, runtimeDir)
	runs = append(runs, r)
	socket, _ := control.SocketPaths(stateDir, runtimeDir)
	waitUntil(ctx, t, "every certificate live after the restarts", func() string {
		select {
		case <-r.done:
			t.Fatalf("the last dcvd run exited (%v) before finishing", r.err)
		default:
		}
		ctl, err := control.Dial(socket)
		if err != nil {
			return err.Error()
		}
		defer ctl.Close()
		sts, err := ctl.Status(ctx)
		if err != nil {
			return err.Error()
		}
		for _, st := range sts {
			if st.Serial == "" || st.Order != nil {
				return fmt.Sprintf("%s: serial %q, order %+v, last error %q", st.Name, st.Serial, st.Order, st.LastError)
			}
		}
		if len(sts) != len(names) {
			return fmt.Sprintf("the daemon has %d certificates, want %d", len(sts), len(names))
		}
		return ""
	})
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("the last dcvd run, stopped with SIGTERM: %v", r.err)
		}
	case <-ctx.Done():
		t.Fatalf("the last dcvd run did not stop after SIGTERM: %v", ctx.Err())
	}
	ran := time.Since(start)

	// The state, read with no dcvd running: each certificate live with
	// nothing in flight and no error; its order done.
	sts := statusAll(ctx, t, bin, cfgPath)
	ledger := sb.Ledger()
	paid := map[string][]sandbox.Charge{}
	for _, c := range ledger {
		paid[c.ServiceID] = append(paid[c.ServiceID], c)
	}
	if len(ledger) != len(names) {
		t.Errorf("the sandbox charged %d time(s), want once for each of %d certificates", len(ledger), len(names))
	}
	if rs := sb.Revocations(); len(rs) > 0 {
		t.Errorf("the sandbox revoked %+v", rs)
	}
	sent := reissues.uniqueIDs()
	svcs := sandboxServices(ctx, t, api.URL)
	lastReload := map[string]string{}
	if b, err := os.ReadFile(reloadLog); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if cert, serial, ok := strings.Cut(line, " "); ok {
				lastReload[cert] = serial
			}
		}
	} else {
		t.Errorf("reload log: %v", err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(stateDir, "dcvd.db"))
	if err != nil {
		t.Fatalf("open dcvd's state: %v", err)
	}
	defer st.Close()
	var contents []string // of the validation files of every order
	var orphanKeys []string
	for _, name := range names {
		s := sts[name]
		if s.Serial == "" || s.Order != nil || s.LastError != "" {
			t.Errorf("status of %s: serial %q, order in flight %+v, last error %q", name, s.Serial, s.Order, s.LastError)
			continue
		}
		live, err := st.Certificate(ctx, name)
		if err != nil {
			t.Fatalf("the live certificate of %s: %v", name, err)
		}
		order, err := st.Order(ctx, live.UniqueID)
		if err != nil {
			t.Fatalf("order %s of %s: %v", live.UniqueID, name, err)
		}
		if order.Step != store.StepDone || live.Serial != s.Serial {
			t.Errorf("state of %s: order %s at %s, live serial %s (status %s)", name, order.UniqueID, order.Step, live.Serial, s.Serial)
		}
		for _, in := range order.Instructions {
			if in.File != nil {
				contents = append(contents, in.File.Content)
			}
		}
		if cs := paid[name]; len(cs) != 1 || cs[0].UniqueID != live.UniqueID {
			t.Errorf("certificate %s: charges %+v, want one, for order %s", name, cs, live.UniqueID)
		} else if s.TotalCost != cs[0].Amount {
			t.Errorf("status of %s: total cost %.2f, the sandbox charged %.2f", name, s.TotalCost, cs[0].Amount)
		}
		if got := sent[name]; len(got) != 1 || got[0] != live.UniqueID {
			t.Errorf("certificate %s: reissue requests carried unique_ids %v, want only %s", name, got, live.UniqueID)
		}
		if sv := svcs[name]; sv.OrderUniqueID != live.UniqueID || !sameSerial(sv.Serial, live.Serial) {
			t.Errorf("certificate %s: the sandbox's current order is %s with serial %s, dcvd's %s with %s",
				name, sv.OrderUniqueID, sv.Serial, live.UniqueID, live.Serial)
		}

		dir := filepath.Join(deployRoot, name)
		leaf := checkDeployed(t, dir, sb.RootPool(), slices.Sorted(maps.Keys(domains(name))))
		if got := readFile(t, filepath.Join(dir, "cert.pem")); got != live.CertPEM {
			t.Errorf("certificate %s: %s/cert.pem is not the live certificate %s", name, dir, live.Serial)
		}
		keyPEM, err := os.ReadFile(live.KeyFile)
		if err != nil {
			t.Fatalf("certificate %s: the live key: %v", name, err)
		}
		if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(publicKeyOf(t, live.KeyFile, keyPEM)) {
			t.Errorf("certificate %s: the deployed certificate is not for the key of order %s (%s)", name, live.UniqueID, live.KeyFile)
		}
		if got := lastReload[name]; got != live.Serial {
			t.Errorf("certificate %s: the last reload was for serial %q, want %s", name, got, live.Serial)
		}

		// The deploy directory holds the four files and the kept
		// generation, no temporary file.
		checkOnlyEntries(t, dir, "cert.pem", "chain.pem", "fullchain.pem", "previous", "privkey.pem")

		// The key directory holds the live key, and at most keys of
		// orders that a kill cut off before they were recorded: unknown
		// to the state and never sent to the sandbox, whole
		// (UNIQUE_ID.key) or still in their temporary file
		// (.UNIQUE_ID.key.tmp-N).
		keyDir := filepath.Join(stateDir, "keys", name)
		if filepath.Dir(live.KeyFile) != keyDir {
			t.Errorf("certificate %s: the live key %s is not in %s", name, live.KeyFile, keyDir)
		}
		for _, f := range filesUnder(keyDir) {
			p := filepath.Join(keyDir, f)
			if p == live.KeyFile {
				continue
			}
			uid, ok := strings.CutSuffix(f, ".key")
			if !ok {
				tmp, _, isTmp := strings.Cut(f, ".key.tmp-")
				uid, ok = strings.CutPrefix(tmp, ".")
				ok = ok && isTmp
			}
			_, err := st.Order(ctx, uid)
			if !ok || !strings.HasPrefix(uid, "dcvd-") || !errors.Is(err, store.ErrNotFound) || slices.Contains(sent[name], uid) {
				t.Errorf("certificate %s: key file %s is neither the live key nor one of an order never recorded (%v)", name, p, err)
				continue
			}
			orphanKeys = append(orphanKeys, p)
		}
	}

	// The web root may keep the two directories that several orders
	// shared, and the temporary file of a validation file whose write a
	// kill interrupted (its content a prefix of an order's file); no
	// validation file, nothing else.
	var tmpFiles []string
	err = filepath.WalkDir(webroot, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == webroot {
			return err
		}
		rel := strings.TrimPrefix(p, webroot+"/")
		if d.IsDir() && (rel == ".well-known" || rel == ".well-known/pki-validation") {
			return nil
		}
		if d.Type().IsRegular() && rel == ".well-known/pki-validation/.dcvd-created" {
			return nil // the marker of the directories dcvd created, kept with them
		}
		base := filepath.Base(rel)
		if d.Type().IsRegular() && filepath.Dir(rel) == ".well-known/pki-validation" && strings.HasPrefix(base, ".dcvd-") && strings.HasSuffix(base, ".tmp") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(contents, func(c string) bool { return strings.HasPrefix(c, string(b)) }) {
				tmpFiles = append(tmpFiles, rel)
				return nil
			}
		}
		t.Errorf("the web root still holds %s", rel)
		return nil
	})
	if err != nil {
		t.Errorf("walk the web root: %v", err)
	}
	if len(tmpFiles)+len(orphanKeys) > 0 {
		t.Logf("left by kills (reported): temporary files in the web root %v; keys of orders never recorded %v", tmpFiles, orphanKeys)
	}

	for i, r := range runs {
		for _, bad := range []string{"panic:", "DATA RACE", "fatal error:"} {
			if strings.Contains(r.out.String(), bad) {
				t.Errorf("run %d printed %q", i+1, bad)
			}
		}
	}
	webErrs.check(t, "the web server")
	apiErrs.check(t, "the sandbox's API server")
	t.Logf("%d certificates: %d kills in %s, then the last run: %s in all", len(names), killRestarts,
		killed.Round(time.Millisecond), ran.Round(time.Millisecond))
}
