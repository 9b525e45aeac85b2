package e2e_test

import (
	"context"
	"crypto"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

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
	paid := chargesByService(ledger)
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
	checkOneChargeEach(t, sb, ledger, len(names))
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
