package daemon

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// This file lets a running daemon take a new configuration (SIGHUP) and
// stop without abandoning a step half done (SIGTERM).
//
// The configuration, the DNS providers, the API client, the CA roots and
// the concurrency semaphore are swapped under d.mu by Reload; everything
// else reads them through the accessors below. An order's driver keeps the
// *CertConfig it started with until the order ends: its webroots, deploy
// directory and reload command stay those its side effects were made with,
// so that a reload cannot make it clean up or deploy somewhere else halfway.

// DefaultStopGrace is how long the step in progress may go on once the
// daemon is told to stop, when Options.StopGrace is not set.
const DefaultStopGrace = 30 * time.Second

// lifecycle is what Reload and the graceful stop keep besides the swapped
// fields. It is set once by New.
type lifecycle struct {
	// dnsOverrides are Options.DNS: they replace the config's providers of
	// the same name on every reload too.
	dnsOverrides map[string]*providers.DNS
	// roots are Options.Roots: when set, api.ca_roots_file is ignored on
	// every reload too.
	roots *x509.CertPool
	// stopGrace bounds the step in progress after the stop.
	stopGrace time.Duration

	// reloadMu makes reloads one at a time: each checks the new config
	// against the one it replaces.
	reloadMu sync.Mutex
	// startMu is held while drivers are started (a sweep, a reissue on the
	// control socket) and while Reload swaps the config: a driver working
	// with settings of the config a reload replaces is then always one the
	// reload sees, and keeps the DNS providers for.
	startMu sync.Mutex
	// resweep is poked by a reload so that Run checks every certificate at
	// once (a certificate just added is due now, not at the next tick).
	resweep chan struct{}
	// running is closed by Run once its listeners are up.
	running     chan struct{}
	runningOnce sync.Once
}

func newLifecycle(opts Options) lifecycle {
	grace := opts.StopGrace
	if grace <= 0 {
		grace = DefaultStopGrace
	}
	overrides := make(map[string]*providers.DNS, len(opts.DNS))
	for name, p := range opts.DNS {
		overrides[name] = p
	}
	return lifecycle{
		dnsOverrides: overrides,
		roots:        opts.Roots,
		stopGrace:    grace,
		resweep:      make(chan struct{}, 1),
		running:      make(chan struct{}),
	}
}

// config is the current configuration. The Config it returns is never
// changed: a reload replaces it whole.
func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// apiClient is the current reseller client.
func (d *Daemon) apiClient() *reseller.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.api
}

// dnsProvider is the current [dns.NAME] provider of that name (or the
// Options.DNS override), nil when there is none.
func (d *Daemon) dnsProvider(name string) *providers.DNS {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dns[name]
}

// rootPool is what issued chains must verify to; nil means the system
// roots.
func (d *Daemon) rootPool() *x509.CertPool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.roots
}

// semaphore bounds the steps at work at once (daemon.max_concurrent). A
// driver must release the very channel it acquired: a reload may replace
// it in between.
func (d *Daemon) semaphore() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.sem
}

// Config returns the configuration the daemon runs with now: the one it
// was created with, or the last one Reload took. It must not be changed.
func (d *Daemon) Config() *config.Config { return d.config() }

// newAPIClient makes the reseller client of an [api] section; the API
// calls are observed by the daemon's metrics.
func (d *Daemon) newAPIClient(a config.APIConfig) (*reseller.Client, error) {
	return reseller.New(reseller.Config{
		BaseURL:         a.BaseURL,
		AccessKeyID:     a.AccessKeyID,
		AccessKeySecret: a.AccessKeySecret,
		Timeout:         a.Timeout,
		Observe:         d.metrics.ObserveAPICall,
		// A reload that changes the rate makes a new client (Reload
		// compares the whole [api]), whose limiter starts afresh.
		MaxRequestsPerSecond: a.MaxRequestsPerSecond,
		// What was signed helps with a 401 and is no secret, but it holds
		// the CSR: at log_level = "debug" only, never in an error.
		DebugStringToSign: func(op, stringToSign string) {
			if ce := d.log.Check(zap.DebugLevel, "API request signed"); ce != nil {
				ce.Write(zap.String("op", op), zap.String("string_to_sign", stringToSign))
			}
		},
	})
}

// Reload makes cfg (checked by LoadConfig) the daemon's configuration,
// while it runs:
//
//   - the certificates are the new ones from the next check on, which Run
//     makes at once; orders in flight go on, each with the certificate
//     settings it started with, and the order of a certificate the new
//     config no longer has goes on until it ends;
//   - the DNS providers are the new ones (Options.DNS still replacing
//     those of its names), except that one a running order may still need
//     for its records is kept under its name until a later reload;
//   - the API client is replaced when [api] changed, and the CA roots are
//     read again from api.ca_roots_file (unless Options.Roots is set);
//   - daemon.schedule, poll_interval (for drivers started from now on),
//     max_concurrent and callback_url take effect.
//
// A config that moves daemon.state_dir or a listener (callback_listen,
// http_listen, metrics_listen), or changes [store], is refused, since a
// running daemon cannot apply it: restart dcvd for that. On any error nothing is changed; the
// error joins one *ConfigError per problem. log_level and log_format are
// the caller's, who made the logger, and so are the [notify.*] channels
// (see Options.OnEvent). A check of the certificates in progress is let
// finish first.
func (d *Daemon) Reload(cfg *config.Config) error {
	if cfg == nil {
		return errors.New("reload: no configuration")
	}
	d.life.reloadMu.Lock()
	defer d.life.reloadMu.Unlock()
	d.life.startMu.Lock()
	defer d.life.startMu.Unlock()

	d.mu.Lock()
	old, oldAPI, oldDNS, oldRoots, oldSem := d.cfg, d.api, d.dns, d.roots, d.sem
	driving := len(d.driving) > 0
	d.mu.Unlock()

	var errs []error
	refuse := func(key, what, from, to string) {
		errs = append(errs, &config.ConfigError{Key: key, Reason: fmt.Sprintf("changed from %q to %q: a running daemon cannot %s; restart dcvd to apply it", from, to, what)})
	}
	if cfg.Daemon.StateDir != old.Daemon.StateDir {
		refuse("daemon.state_dir", "move its state", old.Daemon.StateDir, cfg.Daemon.StateDir)
	}
	if cfg.Daemon.CallbackListen != old.Daemon.CallbackListen {
		refuse("daemon.callback_listen", "move a listener", old.Daemon.CallbackListen, cfg.Daemon.CallbackListen)
	}
	if cfg.Daemon.HTTPListen != old.Daemon.HTTPListen {
		refuse("daemon.http_listen", "move a listener", old.Daemon.HTTPListen, cfg.Daemon.HTTPListen)
	}
	if cfg.Daemon.MetricsListen != old.Daemon.MetricsListen {
		refuse("daemon.metrics_listen", "move a listener", old.Daemon.MetricsListen, cfg.Daemon.MetricsListen)
	}
	// [store] is read once, by New: the database, the node's name (its
	// leases and heartbeats), the lease its renewals use and the sealing
	// key stay.
	if cfg.Store.Driver != old.Store.Driver {
		refuse("store.driver", "change its store", old.Store.Driver, cfg.Store.Driver)
	}
	if cfg.Store.DSN != old.Store.DSN {
		// Not refuse, which quotes both values: the DSN may hold a password.
		errs = append(errs, &config.ConfigError{Key: "store.dsn", Reason: "changed: a running daemon cannot move to another database; restart dcvd to apply it"})
	}
	if cfg.Store.Node != old.Store.Node {
		refuse("store.node", "rename its node", old.Store.Node, cfg.Store.Node)
	}
	if cfg.Store.Lease != old.Store.Lease {
		refuse("store.lease", "change the lease it renews", old.Store.Lease.String(), cfg.Store.Lease.String())
	}
	if !bytes.Equal(cfg.Store.EncryptionKey, old.Store.EncryptionKey) {
		errs = append(errs, &config.ConfigError{Key: "store.encryption_key", Reason: "changed: a running daemon cannot change the key sealing the private keys; restart dcvd to apply it"})
	}
	if _, err := config.ParseSchedule(cfg.Daemon.Schedule, d.now()); err != nil {
		errs = append(errs, &config.ConfigError{Key: "daemon.schedule", Reason: err.Error()})
	}

	api := oldAPI
	apiChanged := cfg.API != old.API
	if apiChanged {
		c, err := d.newAPIClient(cfg.API)
		if err != nil {
			errs = append(errs, &config.ConfigError{Key: "api", Reason: err.Error()})
		}
		api = c
	}
	// The roots file is read again even under the same name: a private
	// CA's roots are rotated in place.
	roots := oldRoots
	if d.life.roots == nil {
		pool, err := cfg.API.CARoots()
		if err != nil {
			errs = append(errs, &config.ConfigError{Key: "api.ca_roots_file", Reason: err.Error()})
		}
		roots = pool
	}
	if len(errs) > 0 {
		config.SortErrors(errs)
		return errors.Join(errs...)
	}

	dns := make(map[string]*providers.DNS, len(cfg.DNS)+len(d.life.dnsOverrides))
	for name, p := range cfg.DNS {
		dns[name] = p
	}
	for name, p := range d.life.dnsOverrides {
		dns[name] = p
	}
	// A running order publishes and cleans up with the provider named by
	// the settings it started with: a section the new config drops stays
	// while any order is at work.
	var kept []string
	if driving {
		for name, p := range oldDNS {
			if _, ok := dns[name]; !ok {
				dns[name] = p
				kept = append(kept, name)
			}
		}
	}
	sort.Strings(kept)
	sem := oldSem
	if n := concurrency(cfg.Daemon.MaxConcurrent); n != cap(oldSem) {
		// Steps at work release the old one: for a moment more steps than
		// the new limit may run, never a deadlock.
		sem = make(chan struct{}, n)
	}

	d.mu.Lock()
	d.cfg, d.api, d.dns, d.roots, d.sem = cfg, api, dns, roots, sem
	d.mu.Unlock()
	if d.index != nil {
		// Every certificate is looked at by the next sweep: a new config
		// may change any decision.
		d.index.Configure(cfg)
	}
	if apiChanged && oldAPI != nil {
		// Steps in progress finish on the old client; its idle
		// connections are of no further use.
		oldAPI.CloseIdleConnections()
	}

	added, removed, changed := diffCertificates(old.Certificates, cfg.Certificates)
	for _, name := range removed {
		d.metrics.RemoveCertificate(name)
	}
	d.log.Info("configuration reloaded",
		zap.Strings("certificates_added", added), zap.Strings("certificates_removed", removed),
		zap.Strings("certificates_changed", changed), zap.Bool("api_changed", apiChanged),
		zap.Strings("dns_kept_for_orders_in_flight", kept))
	for _, name := range removed {
		if d.isDriving(name) {
			d.log.Info("certificate removed from the config: its order in flight goes on until it ends", zap.String("cert", name))
		}
	}
	select {
	case d.life.resweep <- struct{}{}:
	default: // a check is already due
	}
	return nil
}

// concurrency is the semaphore size for daemon.max_concurrent.
func concurrency(maxConcurrent int) int {
	if maxConcurrent <= 0 {
		return config.DefaultMaxConcurrent
	}
	return maxConcurrent
}

// diffCertificates names the certificates only in next (added), only in
// prev (removed), and in both with different settings (changed), each
// sorted.
func diffCertificates(prev, next []config.CertConfig) (added, removed, changed []string) {
	before := map[string]*config.CertConfig{}
	for i := range prev {
		before[prev[i].Name] = &prev[i]
	}
	seen := map[string]bool{}
	for i := range next {
		cc := &next[i]
		seen[cc.Name] = true
		switch p, ok := before[cc.Name]; {
		case !ok:
			added = append(added, cc.Name)
		case !reflect.DeepEqual(p, cc):
			changed = append(changed, cc.Name)
		}
	}
	for name := range before {
		if !seen[name] {
			removed = append(removed, name)
		}
	}
	sort.Strings(added)
	sort.Strings(removed)
	sort.Strings(changed)
	return added, removed, changed
}

// reloaded is poked after each successful Reload.
func (d *Daemon) reloaded() <-chan struct{} { return d.life.resweep }

// markRunning says that Run's listeners are up.
func (d *Daemon) markRunning() {
	d.life.runningOnce.Do(func() { close(d.life.running) })
}

// Running is closed once Run has its listeners (callbacks, validation
// files) up and begins checking the certificates: what a service manager
// should wait for before calling the daemon ready.
func (d *Daemon) Running() <-chan struct{} { return d.life.running }

// workContext is the context of the steps of a driver whose waits end with
// ctx: it ends Options.StopGrace after ctx does, so that a stop lets the
// step at work finish (a reissue answered, a record written, a deploy
// whole) rather than cut it off, and still bounds it. end releases it.
func (d *Daemon) workContext(ctx context.Context) (work context.Context, end func()) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex
	var timer *time.Timer
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		timer = time.AfterFunc(d.life.stopGrace, cancel)
	})
	return work, func() {
		stop()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}
