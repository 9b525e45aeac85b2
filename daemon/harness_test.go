package daemon

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/internal/testpki"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

// This file is the world around a Daemon in one process, for the state
// machine's tests: the sandbox CA behind a recording (and optionally
// rewriting) proxy, an in-process authoritative DNS server behind a provider
// whose writes can lag or be lost, a web root served by a recording web
// server, a controllable clock and a fake reload command. Everything
// listens on 127.0.0.1.

const (
	hZone     = "example.com"
	hCert     = "shop"
	hService  = "demo" // the sandbox's default service
	hAPIPath  = "/api/v1"
	hWKPrefix = "/.well-known/pki-validation/"
)

// hDomains are the names of the default test certificate: DNS names
// (apex and wildcard share one validation) and an HTTP name.
func hDomains() map[string]reseller.Method {
	return map[string]reseller.Method{
		"example.com":     reseller.MethodDNS,
		"*.example.com":   reseller.MethodDNS,
		"www.example.com": reseller.MethodHTTP,
	}
}

// hEvents is an ordered log of what happened, from every component.
type hEvents struct {
	mu   sync.Mutex
	list []string
}

func (l *hEvents) add(e string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, e)
}

func (l *hEvents) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.list)
}

// first is the index of the first event starting with prefix, or -1.
func (l *hEvents) first(prefix string) int {
	for i, e := range l.snapshot() {
		if strings.HasPrefix(e, prefix) {
			return i
		}
	}
	return -1
}

// last is the index of the last event starting with prefix, or -1.
func (l *hEvents) last(prefix string) int {
	ev := l.snapshot()
	for i := len(ev) - 1; i >= 0; i-- {
		if strings.HasPrefix(ev[i], prefix) {
			return i
		}
	}
	return -1
}

// countAfter counts the events starting with prefix after the first
// starting with mark (all of them when none does).
func (l *hEvents) countAfter(mark, prefix string) int {
	n := 0
	ev := l.snapshot()
	for _, e := range ev[l.first(mark)+1:] {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

func (l *hEvents) count(prefix string) int {
	n := 0
	for _, e := range l.snapshot() {
		if strings.HasPrefix(e, prefix) {
			n++
		}
	}
	return n
}

// The API events, as the proxy logs them.
const (
	evReissue   = "api " + reseller.PathReissue
	evUpdateDCV = "api " + reseller.PathUpdateDCV
	evValidate  = "api " + reseller.PathValidateDCV
	evDetail    = "api " + reseller.PathDetail
	evList      = "api " + reseller.PathList
)

// hClock is time.Now shifted by an offset the test controls.
type hClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *hClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *hClock) set(offset time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = offset
}

func (c *hClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// DNS provider modes.
const (
	dnsNormal = iota // writes go through
	dnsLag           // writes succeed at once but land after a delay
	dnsLost          // writes succeed but nothing is written
)

// hProvider is the memdns server as a libdns provider, with writes that can
// lag or be lost (a provider that acknowledges before its nameservers know).
type hProvider struct {
	srv    *memdns.Server
	events *hEvents
	wg     sync.WaitGroup

	mu    sync.Mutex
	mode  int
	delay time.Duration
}

func (p *hProvider) setMode(mode int, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode, p.delay = mode, delay
}

func (p *hProvider) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	return p.srv.GetRecords(ctx, zone)
}

func (p *hProvider) SetRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	p.mu.Lock()
	mode, delay := p.mode, p.delay
	p.mu.Unlock()
	switch mode {
	case dnsLost:
		p.events.add("dns lost")
		return recs, nil
	case dnsLag:
		p.events.add("dns acknowledged")
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			time.Sleep(delay)
			if _, err := p.srv.SetRecords(context.Background(), zone, recs); err != nil {
				p.events.add("dns write failed: " + err.Error())
				return
			}
			p.events.add("dns written")
		}()
		return recs, nil
	}
	out, err := p.srv.SetRecords(ctx, zone, recs)
	if err == nil {
		p.events.add("dns written")
	}
	return out, err
}

func (p *hProvider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	out, err := p.srv.DeleteRecords(ctx, zone, recs)
	if err == nil {
		p.events.add("dns deleted")
	}
	return out, err
}

// fakeReload is the Deployer's Run: it records the DCVD_SERIAL of each call
// and fails when fail says so.
type fakeReload struct {
	mu      sync.Mutex
	serials []string
	fail    func(call int, serial string) error
}

func (f *fakeReload) run(ctx context.Context, command string, env []string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err // a real command is killed
	}
	serial := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "DCVD_SERIAL="); ok {
			serial = v
		}
	}
	f.mu.Lock()
	f.serials = append(f.serials, serial)
	call, fail := len(f.serials), f.fail
	f.mu.Unlock()
	if fail != nil {
		if err := fail(call, serial); err != nil {
			return "nginx: [emerg] cannot load certificate\n", err
		}
	}
	return "reloaded\n", nil
}

func (f *fakeReload) setFail(fail func(call int, serial string) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = fail
}

func (f *fakeReload) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.serials)
}

// harness is the world of one test.
type harness struct {
	t     testing.TB
	sb    *sandbox.Server
	sbDir string
	dns   *memdns.Server
	// dns2, with hSecondDNS, is a second authoritative server, the one
	// the CA asks.
	dns2      *memdns.Server
	provider  *hProvider
	webroot   string
	webAddr   string
	apiURL    string
	events    *hEvents
	clock     *hClock
	reload    *fakeReload
	stateDir  string
	deployDir string

	mu sync.Mutex
	// rewrite, when set, replaces the body of API replies.
	rewrite func(path string, body []byte) []byte
	// lose, when it returns true, makes the API act on a request but
	// answer 502, as when a proxy in front of it fails.
	lose func(path string) bool
	// onAPI, when set, is told of each API call as it arrives.
	onAPI func(path string, at time.Time)
	// propTimeout bounds WaitVisible (default 10s).
	propTimeout time.Duration
	closers     map[*Daemon]func()
}

// hSetup is how newHarness builds the world: the zones its DNS servers
// serve, and whether there is a second one.
type hSetup struct {
	zones     []string
	secondDNS bool
}

// hOption changes the world newHarness builds.
type hOption func(*hSetup)

// hZones makes the DNS servers serve zones instead of hZone.
func hZones(zones ...string) hOption { return func(s *hSetup) { s.zones = zones } }

// hSecondDNS adds a second authoritative server (h.dns2), which the CA
// asks, as a provider's lagging nameserver would be.
func hSecondDNS(s *hSetup) { s.secondDNS = true }

func newHarness(t testing.TB, opts ...hOption) *harness {
	t.Helper()
	setup := hSetup{zones: []string{hZone}}
	for _, o := range opts {
		o(&setup)
	}
	h := &harness{
		t:           t,
		events:      &hEvents{},
		clock:       &hClock{},
		reload:      &fakeReload{},
		stateDir:    filepath.Join(t.TempDir(), "state"),
		deployDir:   filepath.Join(t.TempDir(), "deploy"),
		webroot:     t.TempDir(),
		sbDir:       t.TempDir(),
		propTimeout: 10 * time.Second,
		closers:     map[*Daemon]func(){},
	}
	startDNS := func() *memdns.Server {
		srv, err := memdns.Start("127.0.0.1:0", setup.zones...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		return srv
	}
	srv := startDNS()
	h.dns = srv
	caDNS := srv
	if setup.secondDNS {
		h.dns2 = startDNS()
		caDNS = h.dns2
	}
	h.provider = &hProvider{srv: srv, events: h.events}
	t.Cleanup(h.provider.wg.Wait) // runs before srv.Close

	web := httptest.NewServer(h.webHandler(http.FileServer(http.Dir(h.webroot))))
	t.Cleanup(web.Close)
	h.webAddr = web.Listener.Addr().String()

	sb, err := sandbox.New(sandbox.Config{
		StateDir: h.sbDir,
		Products: sandbox.DefaultProducts(),
		// The default service, and the renewal an admin buys when its
		// paid period ends.
		Services:         append(sandbox.DefaultServices(), sandbox.Service{ID: hRenewalService, ProductID: sandbox.DefaultServices()[0].ProductID}),
		DNSServer:        caDNS.Addr(),
		HTTPAddr:         h.webAddr,
		CheckInterval:    -1,
		NegativeCacheTTL: 5 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	h.sb = sb
	api := httptest.NewServer(h.apiHandler(sb.Handler()))
	t.Cleanup(api.Close)
	h.apiURL = api.URL + hAPIPath
	return h
}

// apiHandler logs every API call in order and applies rewrite to replies.
func (h *harness) apiHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		h.mu.Lock()
		rewrite, lose, onAPI := h.rewrite, h.lose, h.onAPI
		h.mu.Unlock()
		if path, ok := strings.CutPrefix(r.URL.Path, hAPIPath); ok {
			h.events.add("api " + path)
			if onAPI != nil {
				onAPI(path, at)
			}
		}
		if path := strings.TrimPrefix(r.URL.Path, hAPIPath); lose != nil && lose(path) {
			// The CA acts on the request; its reply is lost on the way.
			next.ServeHTTP(httptest.NewRecorder(), r)
			h.events.add("lost reply " + path)
			http.Error(w, "502 Bad Gateway", http.StatusBadGateway)
			return
		}
		if rewrite == nil {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := rewrite(strings.TrimPrefix(r.URL.Path, hAPIPath), rec.Body.Bytes())
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

func (h *harness) setOnAPI(f func(path string, at time.Time)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.onAPI = f
}

func (h *harness) setRewrite(f func(path string, body []byte) []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rewrite = f
}

// webHandler logs each validation file served (the self-check's fetch and
// the CA's).
func (h *harness) webHandler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &hStatusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		if strings.HasPrefix(r.URL.Path, hWKPrefix) {
			h.events.add("web " + strconv.Itoa(sw.status) + " " + r.URL.Path)
		}
	})
}

type hStatusWriter struct {
	http.ResponseWriter
	status int
}

func (w *hStatusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// config is a configuration of one certificate, hCert, for domains.
func (h *harness) config(domains map[string]reseller.Method) *config.Config {
	id, secret := h.sb.AccessKey()
	return &config.Config{
		API: config.APIConfig{BaseURL: h.apiURL, AccessKeyID: id, AccessKeySecret: secret, Timeout: 10 * time.Second},
		Daemon: config.DaemonConfig{
			StateDir: h.stateDir, Schedule: config.DefaultSchedule, MaxConcurrent: 4,
			PollInterval: 50 * time.Millisecond,
		},
		Certificates: []config.CertConfig{{
			Name: hCert, ServiceID: hService, KeyType: config.KeyECDSAP256, DNS: "zone",
			Webroots:    []httpchallenge.Webroot{{Dir: h.webroot}},
			HTTPConnect: h.webAddr,
			Domains:     domains,
			Deploy:      deploy.Spec{Dir: h.deployDir, Reload: "systemctl reload nginx"},
		}},
	}
}

// daemon starts a Daemon for cfg on the harness's world; mod may change
// the options. It is closed when the test ends (or by closeDaemon).
func (h *harness) daemon(cfg *config.Config, mod func(*Options)) *Daemon {
	h.t.Helper()
	log := zaptest.NewLogger(h.t, zaptest.Level(zap.WarnLevel))
	opts := Options{
		Log: log,
		DNS: map[string]*providers.DNS{"zone": providers.NewWith("zone", h.provider, hZone, providers.Propagation{
			Nameservers: []string{h.dns.Addr()}, Interval: 20 * time.Millisecond, Timeout: h.propTimeout,
		})},
		Roots:    h.sb.RootPool(),
		Now:      h.clock.Now,
		Deployer: &deploy.Deployer{Log: log, Run: h.reload.run},
	}
	if mod != nil {
		mod(&opts)
	}
	closeNotifier := notifyTo(cfg, &opts)
	d, err := New(context.Background(), cfg, opts)
	if err != nil {
		closeNotifier()
		h.t.Fatal(err)
	}
	var once sync.Once
	closeIt := func() {
		once.Do(func() {
			if err := errors.Join(d.Close(), closeNotifier()); err != nil {
				h.t.Errorf("close the daemon: %v", err)
			}
		})
	}
	h.t.Cleanup(closeIt)
	h.mu.Lock()
	h.closers[d] = closeIt
	h.mu.Unlock()
	return d
}

// closeDaemon closes d now (as a process that exits), once.
func (h *harness) closeDaemon(d *Daemon) {
	h.mu.Lock()
	f := h.closers[d]
	h.mu.Unlock()
	if f != nil {
		f()
	}
}

// hCtx is a context that ends with the test or after a generous bound
// (a hung order fails the test instead of hanging it).
func hCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// charges counts the sandbox's ledger entries for uniqueID.
func (h *harness) charges(uniqueID string) int {
	n := 0
	for _, c := range h.sb.Ledger() {
		if c.UniqueID == uniqueID {
			n++
		}
	}
	return n
}

// cnames counts the CNAME records in the zone.
func (h *harness) cnames() int {
	h.t.Helper()
	recs, err := h.dns.GetRecords(context.Background(), hZone)
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.RR().Type == "CNAME" {
			n++
		}
	}
	return n
}

// webFiles lists the validation files left in the web root.
func (h *harness) webFiles() []string {
	files, _ := filepath.Glob(filepath.Join(h.webroot, ".well-known", "pki-validation", "*"))
	return files
}

// assertDCVClean fails unless no DCV record or file is left.
func (h *harness) assertDCVClean() {
	h.t.Helper()
	if n := h.cnames(); n != 0 {
		h.t.Errorf("%d DCV CNAME(s) left in the zone", n)
	}
	if files := h.webFiles(); len(files) != 0 {
		h.t.Errorf("validation files left in the web root: %v", files)
	}
}

var hDeployFiles = []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"}

// deployed reads the deploy directory's files (absent files are absent).
func (h *harness) deployed() map[string][]byte {
	out := map[string][]byte{}
	for _, f := range hDeployFiles {
		if b, err := os.ReadFile(filepath.Join(h.deployDir, f)); err == nil {
			out[f] = b
		} else if !errors.Is(err, os.ErrNotExist) {
			h.t.Fatal(err)
		}
	}
	return out
}

// assertDeployedIs checks that the deploy directory holds exactly o's
// certificate, complete: all four files, the key pair matching, the chain
// verifying to the sandbox's root for every name.
func (h *harness) assertDeployedIs(o *store.Order) {
	h.t.Helper()
	files := h.deployed()
	for _, f := range hDeployFiles {
		if len(files[f]) == 0 {
			h.t.Fatalf("%s missing or empty in the deploy directory", f)
		}
	}
	if string(files["cert.pem"]) != o.CertPEM {
		h.t.Errorf("cert.pem is not the order's certificate")
	}
	if string(files["fullchain.pem"]) != string(files["cert.pem"])+string(files["chain.pem"]) {
		h.t.Errorf("fullchain.pem is not cert.pem + chain.pem")
	}
	keyPEM, err := os.ReadFile(o.KeyFile)
	if err != nil {
		h.t.Fatal(err)
	}
	if string(files["privkey.pem"]) != string(keyPEM) {
		h.t.Errorf("privkey.pem is not the order's key")
	}
	pair, err := tls.X509KeyPair(files["fullchain.pem"], files["privkey.pem"])
	if err != nil {
		h.t.Fatalf("deployed key pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		h.t.Fatal(err)
	}
	if got := certs.SerialHex(leaf); got != o.Serial {
		h.t.Errorf("deployed serial %s, want %s", got, o.Serial)
	}
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			h.t.Fatal(err)
		}
		inter.AddCert(c)
	}
	for _, n := range o.Names {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: h.sb.RootPool(), Intermediates: inter,
			DNSName: strings.Replace(n, "*", "any", 1)}); err != nil {
			h.t.Errorf("deployed certificate for %s: %v", n, err)
		}
	}
}

// keyFiles lists the private keys in the state directory.
func (h *harness) keyFiles() []string {
	files, _ := filepath.Glob(filepath.Join(h.stateDir, "keys", "*", "*"))
	return files
}

// sandboxIntermediate loads the sandbox CA's intermediate and its key from
// its state directory, to sign certificates that chain like the real ones.
func (h *harness) sandboxIntermediate() (*x509.Certificate, crypto.Signer) {
	h.t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(h.sbDir, "ca", "intermediate.pem"))
	if err != nil {
		h.t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(h.sbDir, "ca", "intermediate-key.pem"))
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		h.t.Fatal("no PEM in the sandbox's intermediate key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		h.t.Fatal(err)
	}
	return testpki.ParseCert(h.t, string(certPEM)), k.(crypto.Signer)
}

// hCrash is what AfterStep panics with to stop a daemon dead at a step, as
// a SIGKILL would: nothing after the step's persistence runs.
type hCrash struct{ step store.Step }

// untilCrash runs drive and reports whether it was stopped by an hCrash.
func untilCrash(drive func() (*store.Order, error)) (o *store.Order, err error, crashed bool) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(hCrash); !ok {
				panic(r)
			}
			crashed = true
		}
	}()
	o, err = drive()
	return o, err, false
}

// step drives the order of hCert without waiting, as the running daemon's
// ticks would: Reissue(Wait: false) again each time the order only waits
// for the CA, with the clock moved past the wait. It returns at the first
// error or when the order ends.
func (h *harness) step(ctx context.Context, d *Daemon) (*store.Order, error) {
	h.t.Helper()
	for range 50 {
		o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
		if err != nil || o.Step.Terminal() {
			return o, err
		}
		if o.NextAttempt.IsZero() {
			h.t.Fatalf("Reissue returned an order in step %s that waits for nothing", o.Step)
		}
		h.clock.set(o.NextAttempt.Sub(time.Now()) + time.Millisecond)
	}
	h.t.Fatal("the order neither ended nor failed")
	return nil, nil
}

// issued starts a daemon of cfg and drives its first order to done.
func (h *harness) issued(ctx context.Context, cfg *config.Config) (*Daemon, *store.Order) {
	h.t.Helper()
	d := h.daemon(cfg, nil)
	return d, h.issue(ctx, d)
}

// issue drives a first order of cfg to done.
func (h *harness) issue(ctx context.Context, d *Daemon) *store.Order {
	h.t.Helper()
	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	if err != nil {
		h.t.Fatalf("reissue: %v", err)
	}
	if o.Step != store.StepDone {
		h.t.Fatalf("order ended in step %s", o.Step)
	}
	return o
}
