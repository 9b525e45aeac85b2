package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// awaitDone waits up to 30 seconds for what runs in the background to send
// its result on done: ok is false when nothing came in time.
func awaitDone(done <-chan error) (ok bool, err error) {
	select {
	case err := <-done:
		return true, err
	case <-time.After(30 * time.Second):
		return false, nil
	}
}

// runInBackground runs d.Run until the test ends or stop is called, and
// fails the test if Run fails or does not return.
func runInBackground(t *testing.T, d *Daemon) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if ok, err := awaitDone(done); !ok {
				t.Errorf("Run did not return after its context ended")
			} else if err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-d.Running():
	case err := <-done:
		t.Fatalf("Run ended before it was running: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not get its listeners up")
	}
	return stop
}

// stepWatch is an AfterStep hook that reports the steps each order
// persists, and can hold a driver at one step until released.
type stepWatch struct {
	holdAt  store.Step
	held    chan string       // the unique_id of an order held at holdAt
	release chan struct{}     // closed to let it go on
	ended   chan *store.Order // a copy of each order that ended
	once    sync.Once
}

func newStepWatch(holdAt store.Step) *stepWatch {
	return &stepWatch{holdAt: holdAt, held: make(chan string, 1), release: make(chan struct{}), ended: make(chan *store.Order, 16)}
}

func (w *stepWatch) afterStep(o *store.Order) {
	if o.Step.Terminal() {
		c := *o
		w.ended <- &c
		return
	}
	if o.Step == w.holdAt {
		w.once.Do(func() {
			w.held <- o.UniqueID
			<-w.release
		})
	}
}

func (w *stepWatch) waitHeld(t *testing.T) string {
	t.Helper()
	select {
	case uid := <-w.held:
		return uid
	case <-time.After(30 * time.Second):
		t.Fatalf("no order reached step %s", w.holdAt)
		return ""
	}
}

func (w *stepWatch) waitEnded(t *testing.T) *store.Order {
	t.Helper()
	select {
	case o := <-w.ended:
		return o
	case <-time.After(30 * time.Second):
		t.Fatal("no order ended")
		return nil
	}
}

// TestDaemonReloadKeepsOrdersInFlight: a reload while an order is half
// done (its records and file published) does not drop it: it ends done,
// charged once, deployed, with its DCV cleaned up, whatever the new config
// says of its certificate, its DNS section or the API.
func TestDaemonReloadKeepsOrdersInFlight(t *testing.T) {
	tests := []struct {
		name string
		// dnsInConfig puts the DNS provider in the config's [dns.zone]
		// rather than in Options.DNS (which every reload keeps).
		dnsInConfig bool
		next        func(h *harness, cfg *config.Config) *config.Config
		wantCerts   []string
	}{
		{name: "same config", next: func(h *harness, cfg *config.Config) *config.Config {
			c := *cfg
			return &c
		}, wantCerts: []string{hCert}},
		{name: "certificate removed", next: func(h *harness, cfg *config.Config) *config.Config {
			c := *cfg
			c.Certificates = nil
			return &c
		}},
		{name: "certificate changed", next: func(h *harness, cfg *config.Config) *config.Config {
			c := *cfg
			c.Certificates = []config.CertConfig{cfg.Certificates[0]}
			c.Certificates[0].Deploy.Dir = filepath.Join(h.t.TempDir(), "elsewhere")
			return &c
		}, wantCerts: []string{hCert}},
		{name: "certificate and its dns section removed", dnsInConfig: true, next: func(h *harness, cfg *config.Config) *config.Config {
			c := *cfg
			c.Certificates, c.DNS = nil, map[string]*providers.DNS{}
			return &c
		}},
		{name: "api changed", next: func(h *harness, cfg *config.Config) *config.Config {
			c := *cfg
			c.API.Timeout = 20 * time.Second
			return &c
		}, wantCerts: []string{hCert}},
		{name: "max_concurrent changed", next: func(h *harness, cfg *config.Config) *config.Config {
			c := *cfg
			c.Daemon.MaxConcurrent = 1
			return &c
		}, wantCerts: []string{hCert}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config(hDomains())
			w := newStepWatch(store.StepPublished)
			var zone *providers.DNS
			d := h.daemon(cfg, func(o *Options) {
				o.AfterStep = w.afterStep
				zone = o.DNS["zone"]
				if tt.dnsInConfig {
					cfg.DNS = map[string]*providers.DNS{"zone": zone}
					o.DNS = nil
				}
			})
			runInBackground(t, d)
			uid := w.waitHeld(t)

			next := tt.next(h, cfg)
			oldAPI := d.apiClient()
			if err := d.Reload(next); err != nil {
				t.Fatalf("Reload: %v", err)
			}
			if d.Config() != next {
				t.Fatal("after Reload the daemon does not run with the new config")
			}
			if apiChanged := d.apiClient() != oldAPI; apiChanged != (next.API != cfg.API) {
				t.Errorf("API client replaced: %t; [api] changed: %t", apiChanged, next.API != cfg.API)
			}
			if got := cap(d.semaphore()); got != concurrency(next.Daemon.MaxConcurrent) {
				t.Errorf("semaphore of %d, want %d", got, concurrency(next.Daemon.MaxConcurrent))
			}
			if tt.dnsInConfig && d.dnsProvider("zone") != zone {
				t.Errorf("the DNS provider the order in flight needs was dropped by the reload")
			}
			close(w.release)

			o := w.waitEnded(t)
			if o.UniqueID != uid || o.Step != store.StepDone {
				t.Fatalf("order %s ended at %s (%s), want %s done", o.UniqueID, o.Step, o.LastError, uid)
			}
			if n := h.charges(uid); n != 1 {
				t.Errorf("charged %d times, want once", n)
			}
			h.assertDeployedIs(o)
			h.assertDCVClean()

			sts, err := d.Status(hCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, st := range sts {
				names = append(names, st.Name)
			}
			if strings.Join(names, ",") != strings.Join(tt.wantCerts, ",") {
				t.Errorf("status lists %v, want the new config's %v", names, tt.wantCerts)
			}

			if tt.dnsInConfig {
				// Nothing is at work any more: the next reload lets the
				// dropped section go.
				waitNotDriving(t, d, hCert)
				if err := d.Reload(next); err != nil {
					t.Fatal(err)
				}
				if d.dnsProvider("zone") != nil {
					t.Errorf("a DNS section no order needs is still kept after a later reload")
				}
			}
		})
	}
}

func waitNotDriving(t *testing.T, d *Daemon, cert string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for d.isDriving(cert) {
		if time.Now().After(deadline) {
			t.Fatalf("certificate %s is still being driven", cert)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDaemonReloadAddsCertificate: a certificate added by a reload is
// issued by the running daemon at once, not at the next tick of the
// schedule.
func TestDaemonReloadAddsCertificate(t *testing.T) {
	h := newHarness(t)
	full := h.config(hDomains())
	empty := *full
	empty.Certificates = nil
	w := newStepWatch("")
	d := h.daemon(&empty, func(o *Options) { o.AfterStep = w.afterStep })
	runInBackground(t, d)
	if err := d.Reload(full); err != nil {
		t.Fatal(err)
	}
	o := w.waitEnded(t)
	if o.Cert != hCert || o.Step != store.StepDone {
		t.Fatalf("order of %s ended at %s (%s), want %s done", o.Cert, o.Step, o.LastError, hCert)
	}
	h.assertDeployedIs(o)
}

// TestDaemonReloadWhileDriving reloads again and again while the daemon
// drives an order: under -race, any read of the swapped fields that does
// not go through their accessors is reported.
func TestDaemonReloadWhileDriving(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(hDomains())
	w := newStepWatch("")
	d := h.daemon(cfg, func(o *Options) { o.AfterStep = w.afterStep })
	configs := []*config.Config{cfg}
	for i, timeout := range []time.Duration{11 * time.Second, 12 * time.Second} {
		c := *cfg
		c.API.Timeout = timeout
		c.Daemon.MaxConcurrent = i + 1
		c.Daemon.PollInterval = 30 * time.Millisecond
		configs = append(configs, &c)
	}
	stopReloads := make(chan struct{})
	reloaded := make(chan int)
	go func() {
		n := 0
		defer func() { reloaded <- n }()
		for {
			select {
			case <-stopReloads:
				return
			default:
			}
			if err := d.Reload(configs[n%len(configs)]); err != nil {
				t.Errorf("Reload: %v", err)
				return
			}
			n++
			time.Sleep(time.Millisecond)
		}
	}()
	runInBackground(t, d)
	o := w.waitEnded(t)
	close(stopReloads)
	n := <-reloaded
	if o.Step != store.StepDone {
		t.Fatalf("order ended at %s (%s) under reloads", o.Step, o.LastError)
	}
	if n == 0 {
		t.Fatal("no reload happened while the order was driven")
	}
	if c := h.charges(o.UniqueID); c != 1 {
		t.Errorf("charged %d times, want once", c)
	}
	h.assertDeployedIs(o)
}

// TestDaemonReloadRefused: a config a running daemon cannot apply is
// refused whole, naming the key; the daemon keeps running with the old
// one, API client included.
func TestDaemonReloadRefused(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(hDomains())
	// The roots come from the config's file, read again by each reload.
	cfg.API.CARootsFile = filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(cfg.API.CARootsFile, []byte(h.sb.RootPEM()), 0o600); err != nil {
		t.Fatal(err)
	}
	d := h.daemon(cfg, func(o *Options) { o.Roots = nil })
	badRoots := filepath.Join(t.TempDir(), "bad-roots.pem")
	if err := os.WriteFile(badRoots, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		change  func(c *config.Config)
		wantKey []string
	}{
		{name: "state_dir moved", change: func(c *config.Config) { c.Daemon.StateDir = t.TempDir() }, wantKey: []string{"daemon.state_dir"}},
		{name: "callback listener moved", change: func(c *config.Config) { c.Daemon.CallbackListen = "127.0.0.1:0" },
			wantKey: []string{"daemon.callback_listen"}},
		{name: "http listener moved", change: func(c *config.Config) { c.Daemon.HTTPListen = "127.0.0.1:0" }, wantKey: []string{"daemon.http_listen"}},
		{name: "metrics listener moved", change: func(c *config.Config) { c.Daemon.MetricsListen = "127.0.0.1:0" },
			wantKey: []string{"daemon.metrics_listen"}},
		{name: "bad schedule", change: func(c *config.Config) { c.Daemon.Schedule = "every now and then" }, wantKey: []string{"daemon.schedule"}},
		{name: "unreadable roots", change: func(c *config.Config) { c.API.CARootsFile = filepath.Join(t.TempDir(), "missing.pem") },
			wantKey: []string{"api.ca_roots_file"}},
		{name: "roots without a certificate", change: func(c *config.Config) { c.API.CARootsFile = badRoots }, wantKey: []string{"api.ca_roots_file"}},
		{name: "api without a base URL", change: func(c *config.Config) { c.API.BaseURL = "" }, wantKey: []string{"api"}},
		{name: "every problem at once", change: func(c *config.Config) {
			c.Daemon.StateDir = t.TempDir()
			c.Daemon.HTTPListen = "127.0.0.1:0"
			c.API.BaseURL = ""
		}, wantKey: []string{"api", "daemon.http_listen", "daemon.state_dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := *cfg
			tt.change(&next)
			api := d.apiClient()
			err := d.Reload(&next)
			if err == nil {
				t.Fatal("Reload took a config it cannot apply")
			}
			var keys []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ce *config.ConfigError
				if !errors.As(e, &ce) {
					t.Fatalf("problem %q is not a *ConfigError", e)
				}
				keys = append(keys, ce.Key)
			}
			if strings.Join(keys, " ") != strings.Join(tt.wantKey, " ") {
				t.Errorf("problems with %v, want %v: %v", keys, tt.wantKey, err)
			}
			if d.Config() != cfg || d.apiClient() != api {
				t.Errorf("a refused reload changed the daemon's config or API client")
			}
			if strings.Contains(err.Error(), cfg.API.AccessKeySecret) {
				t.Errorf("the error shows the API secret: %v", err)
			}
		})
	}
	if err := d.Reload(nil); err == nil {
		t.Error("Reload(nil) succeeded")
	}
	roots := d.rootPool()
	same := *cfg
	if err := d.Reload(&same); err != nil {
		t.Fatalf("Reload of the same config: %v", err)
	}
	if d.rootPool() == nil || d.rootPool() == roots {
		t.Error("a reload did not read api.ca_roots_file again")
	}
}

// TestDaemonReloadReplacesAPIClient: a changed [api] is used by the next
// call: a wrong secret makes the reissue fail at the CA, and the right one
// again makes it work. An unchanged [api] keeps its client.
func TestDaemonReloadReplacesAPIClient(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(hDomains())
	d := h.daemon(cfg, nil)
	ctx := hCtx(t)

	same := *cfg
	api := d.apiClient()
	if err := d.Reload(&same); err != nil {
		t.Fatal(err)
	}
	if d.apiClient() != api {
		t.Error("a reload with the same [api] replaced the API client")
	}

	wrong := *cfg
	wrong.API.AccessKeySecret = "not-the-secret"
	if err := d.Reload(&wrong); err != nil {
		t.Fatal(err)
	}
	if d.apiClient() == api {
		t.Fatal("a reload with a new secret kept the API client")
	}
	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
	if err == nil {
		t.Fatalf("a reissue signed with the wrong secret went through: order at %s", o.Step)
	}
	var ae *reseller.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("the reissue with the wrong secret failed with %v, want the CA's refusal", err)
	}
	if strings.Contains(err.Error(), "not-the-secret") {
		t.Errorf("the error shows the secret: %v", err)
	}

	if err := d.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if o = h.issue(ctx, d); o.Step != store.StepDone {
		t.Fatalf("after the secret was put right the order ended at %s", o.Step)
	}
}

// TestStopFinishesTheStepAtWork: when Run's context ends while a step is
// at work (here the reload command), that step finishes and is recorded,
// no further step starts, and Run returns; a restart finishes the order.
func TestStopFinishesTheStepAtWork(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(hDomains())
	inReload := make(chan struct{}, 1)
	release := make(chan struct{})
	h.reload.setFail(func(call int, serial string) error {
		inReload <- struct{}{}
		<-release
		return nil
	})
	d := h.daemon(cfg, nil)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	select {
	case <-inReload:
	case err := <-ran:
		t.Fatalf("Run ended before the order reached its reload: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the order never reached its reload")
	}
	// Stopped while the reload command runs; it then succeeds.
	stop()
	close(release)
	if ok, err := awaitDone(ran); !ok {
		t.Fatal("Run did not return after the step at work finished")
	} else if err != nil {
		t.Fatalf("Run: %v", err)
	}

	o, err := d.store.ActiveOrder(hCtx(t), hCert)
	if err != nil {
		t.Fatalf("after the stop: %v, want the order in flight", err)
	}
	if o.Step != store.StepReloaded {
		t.Fatalf("after the stop the order is at %s (%s), want %s: the reload at work finished and was recorded, nothing after it ran",
			o.Step, o.LastError, store.StepReloaded)
	}
	if live, err := d.store.Certificate(hCtx(t), hCert); err != nil || live.Serial != o.Serial {
		t.Fatalf("the live certificate after the stop: %v, %v; want serial %s", live, err, o.Serial)
	}
	h.closeDaemon(d)

	h.reload.setFail(nil)
	d2 := h.daemon(cfg, nil)
	done, err := d2.Reissue(hCtx(t), hCert, ReissueOptions{Wait: true})
	if err != nil {
		t.Fatalf("the restart could not finish the order: %v", err)
	}
	if done.UniqueID != o.UniqueID || done.Step != store.StepDone {
		t.Fatalf("the restart ended order %s at %s, want %s done", done.UniqueID, done.Step, o.UniqueID)
	}
	if n := len(h.reload.calls()); n != 1 {
		t.Errorf("the reload command ran %d times, want once (its step had finished)", n)
	}
	h.assertDCVClean()
}

// TestWorkContextStopGrace: the work context outlives the stop by the
// grace, and no longer.
func TestWorkContextStopGrace(t *testing.T) {
	t.Run("ends after the grace", func(t *testing.T) {
		d := &Daemon{life: newLifecycle(Options{StopGrace: time.Millisecond})}
		ctx, cancel := context.WithCancel(context.Background())
		work, end := d.workContext(ctx)
		defer end()
		cancel()
		select {
		case <-work.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the work context outlived the grace")
		}
	})
	t.Run("outlives the stop", func(t *testing.T) {
		d := &Daemon{life: newLifecycle(Options{StopGrace: time.Hour})}
		ctx, cancel := context.WithCancel(context.Background())
		work, end := d.workContext(ctx)
		cancel()
		if work.Err() != nil {
			t.Fatalf("the work context ended with the stop: %v", work.Err())
		}
		end()
		if work.Err() == nil {
			t.Fatal("end did not end the work context")
		}
	})
	t.Run("ended by end without a stop", func(t *testing.T) {
		d := &Daemon{life: newLifecycle(Options{})}
		if d.life.stopGrace != DefaultStopGrace {
			t.Errorf("default grace %s, want %s", d.life.stopGrace, DefaultStopGrace)
		}
		work, end := d.workContext(context.Background())
		end()
		if work.Err() == nil {
			t.Fatal("end did not end the work context")
		}
	})
}

// TestDiffCertificates: what a reload logs as added, removed and changed.
func TestDaemonReloadDiffCertificates(t *testing.T) {
	a := config.CertConfig{Name: "a", ServiceID: "1"}
	b := config.CertConfig{Name: "b", ServiceID: "2"}
	b2 := config.CertConfig{Name: "b", ServiceID: "3"}
	c := config.CertConfig{Name: "c", ServiceID: "4"}
	added, removed, changed := diffCertificates([]config.CertConfig{a, b}, []config.CertConfig{b2, c})
	if strings.Join(added, ",") != "c" || strings.Join(removed, ",") != "a" || strings.Join(changed, ",") != "b" {
		t.Errorf("added %v, removed %v, changed %v; want [c] [a] [b]", added, removed, changed)
	}
	added, removed, changed = diffCertificates([]config.CertConfig{a, b}, []config.CertConfig{b, a})
	if len(added)+len(removed)+len(changed) != 0 {
		t.Errorf("the same certificates reordered: added %v, removed %v, changed %v", added, removed, changed)
	}
}

// TestConfigMaxRequestsPerSecondReload checks that the rate reaches the
// API client, and that a reload which changes it replaces the client (a
// SIGHUP loads the file and calls Reload), while one that keeps it keeps
// the client and its limiter.
func TestConfigMaxRequestsPerSecondReload(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(hDomains())
	cfg.API.MaxRequestsPerSecond = 0
	d := h.daemon(cfg, nil)
	if s := d.apiClient().String(); strings.Contains(s, "MaxRequestsPerSecond") {
		t.Fatalf("a client without a rate limit shows one: %s", s)
	}

	steps := []struct {
		rate        float64
		wantReplace bool
		wantErr     bool
	}{
		{rate: 50, wantReplace: true},
		{rate: 50},
		{rate: 0.5, wantReplace: true},
		{rate: -1, wantErr: true}, // LoadConfig refuses it; Reload must too
		{rate: 0, wantReplace: true},
	}
	for _, st := range steps {
		before := d.apiClient()
		next := *d.Config()
		next.API.MaxRequestsPerSecond = st.rate
		err := d.Reload(&next)
		if (err != nil) != st.wantErr {
			t.Fatalf("rate %v: Reload = %v", st.rate, err)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "MaxRequestsPerSecond") || d.apiClient() != before {
				t.Errorf("rate %v: refused with %v, client replaced: %t", st.rate, err, d.apiClient() != before)
			}
			continue
		}
		if replaced := d.apiClient() != before; replaced != st.wantReplace {
			t.Errorf("rate %v: client replaced %t, want %t", st.rate, replaced, st.wantReplace)
		}
		s := d.apiClient().String()
		if shows := strings.Contains(s, fmt.Sprintf("MaxRequestsPerSecond: %v}", st.rate)); shows != (st.rate > 0) {
			t.Errorf("rate %v: the client is %s", st.rate, s)
		}
	}
}
