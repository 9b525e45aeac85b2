//go:build linux

package daemon

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// This file measures two latencies of issue 8 and counts the DNS writes of
// a reissue:
//
//   - BenchmarkCallbackToDeploy: from the CA's callback reaching dcvd to
//     cert.pem renamed into the deploy directory (goal: p99 ≤ 100 ms);
//   - BenchmarkDNSVisibleToRecheck: from a DCV record being visible on the
//     last authoritative server to the update-dcv call (goal ≤ 500 ms);
//   - TestPublishOneWriteCallPerZone and BenchmarkDNSWriteCallsPerZone: a
//     reissue whose names span K zones makes K provider write calls.
//
// The world is the harness's (sandbox CA, in-process DNS, web root, fake
// reload), with a provider of its own (latProvider). bench/latency.sh runs
// the benchmarks with the right flags.

// latMinSamples is the fewest samples a percentile is reported over without
// a warning (bench/latency.sh asks for more).
const latMinSamples = 200

// latProvider is the in-process DNS as a provider with one or two
// authoritative servers: writes reach a at once and b after lag(), as with
// a provider that acknowledges before all its nameservers have the record.
// It counts the calls it gets, per zone, and records the instant each write
// became visible on every server.
type latProvider struct {
	a, b *memdns.Server // b is nil with one server
	wg   sync.WaitGroup

	mu      sync.Mutex
	lag     func() time.Duration // nil: no lag
	calls   map[string]map[string]int
	visible []time.Time
}

func newLatProvider(a, b *memdns.Server) *latProvider {
	return &latProvider{a: a, b: b, calls: map[string]map[string]int{}}
}

func (p *latProvider) count(method, zone string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.calls[method] == nil {
		p.calls[method] = map[string]int{}
	}
	p.calls[method][strings.ToLower(strings.TrimSuffix(zone, "."))]++
}

// take returns the calls counted (method → zone → calls) and the
// visibility instants since the last take, and resets them.
func (p *latProvider) take() (map[string]map[string]int, []time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	calls, visible := p.calls, p.visible
	p.calls, p.visible = map[string]map[string]int{}, nil
	return calls, visible
}

func (p *latProvider) setLag(lag func() time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lag = lag
}

func (p *latProvider) ListZones(ctx context.Context) ([]libdns.Zone, error) {
	return p.a.ListZones(ctx)
}

// GetRecords is the provider's API view, which knows every write at once.
func (p *latProvider) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	p.count("GetRecords", zone)
	return p.a.GetRecords(ctx, zone)
}

func (p *latProvider) SetRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	p.count("SetRecords", zone)
	return p.write(ctx, zone, recs, (*memdns.Server).SetRecords)
}

func (p *latProvider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	p.count("AppendRecords", zone)
	return p.write(ctx, zone, recs, (*memdns.Server).AppendRecords)
}

func (p *latProvider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	p.count("DeleteRecords", zone)
	out, err := p.a.DeleteRecords(ctx, zone, recs)
	if err == nil && p.b != nil {
		_, err = p.b.DeleteRecords(ctx, zone, recs)
	}
	return out, err
}

type latWrite func(s *memdns.Server, ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error)

func (p *latProvider) write(ctx context.Context, zone string, recs []libdns.Record, op latWrite) ([]libdns.Record, error) {
	out, err := op(p.a, ctx, zone, recs)
	if err != nil || p.b == nil {
		if err == nil {
			p.seen(time.Now())
		}
		return out, err
	}
	p.mu.Lock()
	lag := time.Duration(0)
	if p.lag != nil {
		lag = p.lag()
	}
	p.mu.Unlock()
	if lag <= 0 {
		if _, err := op(p.b, ctx, zone, recs); err != nil {
			return nil, err
		}
		p.seen(time.Now())
		return out, nil
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		time.Sleep(lag)
		// The context of the call has ended by now; the write lands anyway.
		if _, err := op(p.b, context.Background(), zone, recs); err == nil {
			p.seen(time.Now())
		}
	}()
	return out, nil
}

// seen records that a write is now answered by every server: memdns
// answers from the data it has when the write returns.
func (p *latProvider) seen(at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.visible = append(p.visible, at)
}

// latWorld is the world of one benchmark: the harness's (the sandbox CA
// behind an API proxy, whose calls setOnAPI timestamps, one or two memdns
// servers, a web root and its server, a fake reload), with latProvider as
// the DNS provider.
type latWorld struct {
	*harness
	prov *latProvider
}

// newLatWorld starts the world; with twoServers, the provider's writes
// reach the second server (which the CA asks) after the provider's lag.
func newLatWorld(tb testing.TB, twoServers bool, zones ...string) *latWorld {
	tb.Helper()
	opts := []hOption{hZones(zones...)}
	if twoServers {
		opts = append(opts, hSecondDNS)
	}
	w := &latWorld{harness: newHarness(tb, opts...)}
	w.prov = newLatProvider(w.dns, w.dns2)
	tb.Cleanup(w.prov.wg.Wait) // before the servers close
	return w
}

// config is one certificate, hCert, for domains, with the daemon's
// defaults except a long detail poll interval: only a callback (or the
// first poll, 2s after update-dcv at most) wakes an order.
func (w *latWorld) config(domains map[string]reseller.Method, callbackURL string) *config.Config {
	id, secret := w.sb.AccessKey()
	cc := config.CertConfig{
		Name: hCert, ServiceID: hService, KeyType: config.KeyECDSAP256, DNS: "zone",
		Domains: domains,
		Deploy:  deploy.Spec{Dir: w.deployDir, Reload: "systemctl reload nginx"},
	}
	for _, m := range domains {
		if m == reseller.MethodHTTP {
			cc.Webroots = []httpchallenge.Webroot{{Dir: w.webroot}}
			cc.HTTPConnect = w.webAddr
		}
	}
	return &config.Config{
		API: config.APIConfig{BaseURL: w.apiURL, AccessKeyID: id, AccessKeySecret: secret, Timeout: 10 * time.Second},
		Daemon: config.DaemonConfig{
			StateDir: w.stateDir, Schedule: config.DefaultSchedule, MaxConcurrent: 4,
			PollInterval: 10 * time.Minute, CallbackURL: callbackURL,
		},
		Certificates: []config.CertConfig{cc},
	}
}

// daemon starts a Daemon on the world. zone "" makes the provider find
// each name's zone from its zone list. The propagation check asks every
// memdns server, with prop's other settings (zero: the defaults of a
// [dns.NAME] section).
func (w *latWorld) daemon(cfg *config.Config, zone string, prop providers.Propagation, afterStep func(*store.Order)) *Daemon {
	w.t.Helper()
	// Info level, encoded and discarded: the daemon's logging is part of
	// what is measured, as in production.
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
	prop.Nameservers = []string{w.dns.Addr()}
	if w.dns2 != nil {
		prop.Nameservers = append(prop.Nameservers, w.dns2.Addr())
	}
	d, err := New(context.Background(), cfg, Options{
		Log:       log,
		DNS:       map[string]*providers.DNS{"zone": providers.NewWith("zone", w.prov, zone, prop)},
		Roots:     w.sb.RootPool(),
		Now:       w.clock.Now,
		Deployer:  &deploy.Deployer{Log: log, Run: w.reload.run},
		AfterStep: afterStep,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		if err := d.Close(); err != nil {
			w.t.Errorf("close the daemon: %v", err)
		}
	})
	return d
}

// reissue drives one order of hCert to done.
func (w *latWorld) reissue(d *Daemon) *store.Order {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	if err != nil {
		w.t.Fatalf("reissue: %v", err)
	}
	if o.Step != store.StepDone {
		w.t.Fatalf("order %s ended in step %s: %s", o.UniqueID, o.Step, o.LastError)
	}
	return o
}

// watchRenames reports, on the returned channel, the instant each file
// named name is renamed into dir (inotify IN_MOVED_TO): the moment a
// server reading the path would find the new file.
func watchRenames(tb testing.TB, dir, name string) <-chan time.Time {
	tb.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		tb.Fatalf("inotify: %v", err)
	}
	if _, err := syscall.InotifyAddWatch(fd, dir, syscall.IN_MOVED_TO); err != nil {
		syscall.Close(fd)
		tb.Fatalf("inotify watch %s: %v", dir, err)
	}
	// Non-blocking, so that the runtime's poller waits for it and Close
	// ends the Read.
	f := os.NewFile(uintptr(fd), "inotify")
	ch := make(chan time.Time, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			at := time.Now()
			if err != nil {
				return
			}
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				mask := binary.NativeEndian.Uint32(buf[off+4:])
				nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
				start := off + syscall.SizeofInotifyEvent
				got := strings.TrimRight(string(buf[start:min(start+nameLen, n)]), "\x00")
				if mask&syscall.IN_MOVED_TO != 0 && got == name {
					select {
					case ch <- at:
					default:
					}
				}
				off = start + nameLen
			}
		}
	}()
	tb.Cleanup(func() {
		f.Close()
		<-done
	})
	return ch
}

// latStats are the percentiles of samples, in milliseconds.
type latStats struct {
	n                 int
	p50, p90, p99, mx float64
}

func latPercentiles(samples []time.Duration) latStats {
	if len(samples) == 0 {
		return latStats{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	// Nearest rank: the smallest sample with at least q of them at or
	// below it.
	at := func(q float64) float64 {
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return float64(s[max(i, 0)]) / float64(time.Millisecond)
	}
	return latStats{n: len(s), p50: at(0.50), p90: at(0.90), p99: at(0.99), mx: float64(s[len(s)-1]) / float64(time.Millisecond)}
}

func (s latStats) String() string {
	return fmt.Sprintf("n=%d p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms", s.n, s.p50, s.p90, s.p99, s.mx)
}

func reportLat(b *testing.B, prefix string, samples []time.Duration) latStats {
	s := latPercentiles(samples)
	b.ReportMetric(s.p50, prefix+"p50-ms")
	b.ReportMetric(s.p99, prefix+"p99-ms")
	b.ReportMetric(s.mx, prefix+"max-ms")
	return s
}

// cbIteration is what one order of BenchmarkCallbackToDeploy went through.
type cbIteration struct {
	token      string
	rechecked  chan struct{} // closed at StepRechecked
	recheckAt  time.Time
	callbackAt time.Time // the held callback handed to dcvd
	detailAt   time.Time // the first detail call after it
	early      int       // detail calls between the re-check and the callback
	issuedAt   time.Time // StepIssued persisted
	deployedAt time.Time // StepDeployed persisted (after the rename)
}

// BenchmarkCallbackToDeploy measures, for each order, the time from the
// CA's callback reaching dcvd's callback handler to cert.pem being renamed
// into the deploy directory (seen with inotify), the reload excluded.
//
// Each order waits at rechecked with its first detail poll half an hour
// ahead (the daemon's clock is moved at StepVisible and back at
// StepRechecked, as in TestForgedCallbackOnlyTriggersSignedDetail), so only
// the callback can wake it. The sandbox issues at update-dcv and posts the
// callback at once; the callback listener holds it until the order is
// parked at rechecked (plus cbSettle), then times it and hands it to
// Daemon.CallbackHandler. Run with -benchtime=300x (bench/latency.sh).
func BenchmarkCallbackToDeploy(b *testing.B) {
	const cbSettle = 20 * time.Millisecond
	w := newLatWorld(b, false, hZone)
	if err := os.MkdirAll(w.deployDir, 0o755); err != nil {
		b.Fatal(err)
	}
	renamed := watchRenames(b, w.deployDir, deploy.CertFile)

	var mu sync.Mutex
	var cur *cbIteration
	current := func() *cbIteration {
		mu.Lock()
		defer mu.Unlock()
		return cur
	}
	var dp atomic.Pointer[Daemon] // set once the daemon exists, before any order
	cbSrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		it := current()
		if it != nil && r.URL.Path == "/callback/"+it.token {
			select {
			case <-it.rechecked:
			case <-time.After(time.Minute):
				http.Error(rw, "the order never reached rechecked", http.StatusServiceUnavailable)
				return
			}
			time.Sleep(cbSettle)
			at := time.Now()
			mu.Lock()
			it.callbackAt = at
			mu.Unlock()
		}
		dp.Load().CallbackHandler().ServeHTTP(rw, r)
	}))
	b.Cleanup(cbSrv.Close)
	w.setOnAPI(func(path string, at time.Time) {
		if path != reseller.PathDetail {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if it := cur; it != nil && !it.recheckAt.IsZero() {
			if it.callbackAt.IsZero() {
				it.early++
			} else if it.detailAt.IsZero() {
				it.detailAt = at
			}
		}
	})

	cfg := w.config(hDomains(), cbSrv.URL)
	d := w.daemon(cfg, hZone, providers.Propagation{Interval: 20 * time.Millisecond}, func(o *store.Order) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		it := cur
		if it == nil {
			return
		}
		switch o.Step {
		case store.StepNew:
			it.token = o.CallbackToken
		case store.StepVisible:
			// The first detail poll is scheduled half an hour ahead.
			w.clock.set(30 * time.Minute)
		case store.StepRechecked:
			w.clock.set(0)
			it.recheckAt = now
			close(it.rechecked)
		case store.StepIssued:
			it.issuedAt = now
		case store.StepDeployed:
			it.deployedAt = now
		}
	})

	dp.Store(d)

	var total, wake, fetch, install, stepped []time.Duration
	for b.Loop() {
		it := &cbIteration{rechecked: make(chan struct{})}
		mu.Lock()
		cur = it
		mu.Unlock()
		w.reissue(d)
		var renameAt time.Time
		select {
		case renameAt = <-renamed:
		case <-time.After(10 * time.Second):
			b.Fatal("no rename of cert.pem seen in the deploy directory")
		}
		if len(renamed) > 0 {
			b.Fatal("cert.pem was renamed more than once in one order")
		}
		mu.Lock()
		cur = nil
		mu.Unlock()
		if it.callbackAt.IsZero() {
			b.Fatal("the order finished without its callback being timed")
		}
		if it.early > 0 {
			b.Fatalf("%d detail call(s) before the callback: the order was not waiting for it", it.early)
		}
		if it.detailAt.IsZero() || it.issuedAt.IsZero() || it.deployedAt.IsZero() {
			b.Fatalf("an instant is missing: %+v", it)
		}
		total = append(total, renameAt.Sub(it.callbackAt))
		wake = append(wake, it.detailAt.Sub(it.callbackAt))
		fetch = append(fetch, it.issuedAt.Sub(it.detailAt))
		install = append(install, renameAt.Sub(it.issuedAt))
		stepped = append(stepped, it.deployedAt.Sub(it.callbackAt))
	}
	if len(total) < latMinSamples {
		b.Logf("only %d samples (want ≥ %d: -benchtime=%dx)", len(total), latMinSamples, latMinSamples+100)
	}
	s := reportLat(b, "", total)
	b.Logf("callback → cert.pem renamed: %s", s)
	b.Logf("  callback → detail request (wake path):          %s", latPercentiles(wake))
	b.Logf("  detail request → issued persisted (fetch, verify, commit): %s", latPercentiles(fetch))
	b.Logf("  issued persisted → cert.pem renamed (Install):  %s", latPercentiles(install))
	b.Logf("  callback → deployed persisted (AfterStep):      %s", latPercentiles(stepped))
	b.ReportMetric(latPercentiles(wake).p99, "wake-p99-ms")
	b.ReportMetric(latPercentiles(fetch).p99, "fetch-p99-ms")
	b.ReportMetric(latPercentiles(install).p99, "install-p99-ms")
}

// dnsLagJitter spreads the instant a record becomes visible over the
// propagation check's polling phase, so that the samples measure the
// whole distribution rather than one phase.
const dnsLagJitter = 500 * time.Millisecond

// BenchmarkDNSVisibleToRecheck measures the time from a DCV record being
// visible on the last authoritative server to the update-dcv call, for
// provider lags of 0, 1, 3 and 7 seconds (each plus up to dnsLagJitter).
// Two memdns servers are the zone's authoritative servers: the provider
// writes to the first at once and to the second after the lag; the
// propagation check asks both, with the defaults of a [dns.NAME] section.
// The certificate has DNS names only, so no HTTP self-check is on the
// path. Run one lag at a time with -benchtime=Nx (bench/latency.sh).
func BenchmarkDNSVisibleToRecheck(b *testing.B) {
	for _, lag := range []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second} {
		b.Run("lag="+lag.String(), func(b *testing.B) {
			w := newLatWorld(b, true, hZone)
			w.prov.setLag(func() time.Duration {
				if lag == 0 {
					return 0
				}
				return lag + rand.N(dnsLagJitter)
			})
			var mu sync.Mutex
			var updates []time.Time
			w.setOnAPI(func(path string, at time.Time) {
				if path == reseller.PathUpdateDCV {
					mu.Lock()
					updates = append(updates, at)
					mu.Unlock()
				}
			})
			cfg := w.config(map[string]reseller.Method{"example.com": reseller.MethodDNS, "*.example.com": reseller.MethodDNS}, "")
			// The first detail poll comes 50ms after update-dcv: the
			// order ends quickly once the measurement is taken.
			cfg.Daemon.PollInterval = 50 * time.Millisecond
			d := w.daemon(cfg, hZone, providers.Propagation{}, nil)

			var samples []time.Duration
			for b.Loop() {
				mu.Lock()
				updates = nil
				mu.Unlock()
				w.prov.take()
				w.reissue(d)
				calls, visible := w.prov.take()
				mu.Lock()
				up := slices.Clone(updates)
				mu.Unlock()
				if n := calls["SetRecords"][hZone]; n != 1 || len(visible) != 1 {
					b.Fatalf("%d SetRecords call(s) and %d visible write(s), want one of each", n, len(visible))
				}
				if len(up) != 1 {
					b.Fatalf("%d update-dcv calls, want 1", len(up))
				}
				if up[0].Before(visible[0]) {
					b.Fatalf("update-dcv %s before the record was visible everywhere", visible[0].Sub(up[0]))
				}
				samples = append(samples, up[0].Sub(visible[0]))
			}
			s := reportLat(b, "", samples)
			jitter := time.Duration(0)
			if lag > 0 {
				jitter = dnsLagJitter
			}
			b.Logf("lag %s (+ up to %s): visible on all servers → update-dcv: %s", lag, jitter, s)
		})
	}
}

// latZoneDomains are the names of a certificate spanning k zones: in each,
// the apex, its wildcard (which shares the apex's record) and one more
// name, so two DCV records per zone.
func latZoneDomains(k int) (map[string]reseller.Method, []string) {
	zones := []string{"example.com", "example.net", "example.org"}[:k]
	domains := map[string]reseller.Method{}
	for _, z := range zones {
		domains[z] = reseller.MethodDNS
		domains["*."+z] = reseller.MethodDNS
		domains["www."+z] = reseller.MethodDNS
	}
	return domains, zones
}

// newLatZoneDaemon is a world and a daemon for a certificate spanning k
// zones (latZoneDomains), polling often so that the order ends soon after
// update-dcv. It returns the zones too.
func newLatZoneDaemon(tb testing.TB, k int) (*latWorld, *Daemon, []string) {
	domains, zones := latZoneDomains(k)
	w := newLatWorld(tb, false, zones...)
	cfg := w.config(domains, "")
	cfg.Daemon.PollInterval = 50 * time.Millisecond // the order ends soon after update-dcv
	d := w.daemon(cfg, "", providers.Propagation{Interval: 20 * time.Millisecond}, nil)
	return w, d, zones
}

// TestPublishOneWriteCallPerZone: a reissue of a certificate whose names
// span K zones, two records in each, makes exactly one write call per
// zone (SetRecords, never per record), and cleans up with one delete call
// per zone.
func TestPublishOneWriteCallPerZone(t *testing.T) {
	for k := 1; k <= 3; k++ {
		t.Run(fmt.Sprintf("zones=%d", k), func(t *testing.T) {
			w, d, zones := newLatZoneDaemon(t, k)
			o := w.reissue(d)
			if len(o.DNSRecords) != 2*k {
				t.Fatalf("%d DNS records planned for %d zones, want %d", len(o.DNSRecords), k, 2*k)
			}
			calls, _ := w.prov.take()
			for _, z := range zones {
				if got := calls["SetRecords"][z]; got != 1 {
					t.Errorf("zone %s: %d SetRecords call(s), want 1", z, got)
				}
				if got := calls["DeleteRecords"][z]; got != 1 {
					t.Errorf("zone %s: %d DeleteRecords call(s) at cleanup, want 1", z, got)
				}
			}
			if got := latSum(calls["SetRecords"]) + latSum(calls["AppendRecords"]); got != k {
				t.Errorf("%d write calls for %d zones: %v", got, k, calls)
			}
		})
	}
}

func latSum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// BenchmarkDNSWriteCallsPerZone reports the provider write calls
// (SetRecords and AppendRecords) per reissue of a certificate spanning 1, 2
// and 3 zones with two DCV records each, and the delete calls of its
// cleanup.
func BenchmarkDNSWriteCallsPerZone(b *testing.B) {
	for k := 1; k <= 3; k++ {
		b.Run(fmt.Sprintf("zones=%d", k), func(b *testing.B) {
			w, d, _ := newLatZoneDaemon(b, k)
			var writes, deletes, records, n int
			for b.Loop() {
				w.prov.take()
				o := w.reissue(d)
				calls, _ := w.prov.take()
				writes += latSum(calls["SetRecords"]) + latSum(calls["AppendRecords"])
				deletes += latSum(calls["DeleteRecords"])
				records += len(o.DNSRecords)
				n++
			}
			b.ReportMetric(float64(k), "zones")
			b.ReportMetric(float64(records)/float64(n), "records/reissue")
			b.ReportMetric(float64(writes)/float64(n), "writes/reissue")
			b.ReportMetric(float64(deletes)/float64(n), "deletes/reissue")
		})
	}
}
