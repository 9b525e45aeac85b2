package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/cluster"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/dcvfiles"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/metrics"
	"github.com/dcvd/dcvd/daemon/renewal"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// Options are what the daemon takes from its caller besides the config:
// mostly for the demo and tests, which run everything in one process.
type Options struct {
	// Store, when nil, is the SQLite database in the state directory.
	Store store.Store
	// Log, when nil, logs nowhere.
	Log *zap.Logger
	// DNS replaces or adds DNS providers by [dns.NAME] name (in-process
	// servers of the demo and tests).
	DNS map[string]*providers.DNS
	// Roots, when set, is what issued chains must verify to (instead of
	// api.ca_roots_file).
	Roots *x509.CertPool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// AfterStep, when set, is called after each step of an order is
	// persisted, before the next side effect: the crash tests kill the
	// process there.
	AfterStep func(o *store.Order)
	// Deployer, when nil, is a Deployer running reload commands with
	// /bin/sh.
	Deployer *deploy.Deployer
	// Metrics, when set, is kept up to date (see Metrics).
	Metrics *metrics.Metrics
	// Version is this build's version, which a cluster node reports.
	Version string
	// StopGrace is how long the step at work may go on after the context
	// of Run or Reissue ends; zero means DefaultStopGrace.
	StopGrace time.Duration
	// OnEvent, when set, is told what the admin is to hear of (see Event);
	// the daemon sends no notification itself. It is called on the
	// goroutine at work, possibly on several at once, and must return
	// quickly: queue the event, do not deliver it there.
	OnEvent func(Event)
}

// Daemon drives the configured certificates: it reissues each when due,
// and resumes orders in flight.
type Daemon struct {
	// cfg, api, dns, roots and sem are swapped by Reload under mu: read
	// them through config, apiClient, dnsProvider, rootPool and semaphore.
	cfg   *config.Config
	store store.Store
	// writes is store with the renewal index kept up to date, when this
	// process is the store's only writer (no cluster); nil otherwise.
	// Every write goes through writeStore.
	writes    store.Store
	index     *renewal.Index
	sweepBuf  []renewal.Look // the sweep's, under startMu
	ownStore  bool
	api       *reseller.Client
	dns       map[string]*providers.DNS
	deployer  *deploy.Deployer
	log       *zap.Logger
	roots     *x509.CertPool
	now       func() time.Time
	afterStep func(o *store.Order)
	onEvent   func(Event) // Options.OnEvent; nil drops the events
	metrics   *metrics.Metrics

	responder *httpchallenge.Responder
	// local serves this process's validation files; files publishes an
	// order's: local itself, or the cluster node, which builds on it.
	local *dcvfiles.Local
	files dcvfiles.Publisher

	mu      sync.Mutex
	driving map[string]bool            // certificates whose order a goroutine drives
	wake    map[string]chan wakeReason // unique_id → why its driver was woken early
	sem     chan struct{}

	life lifecycle // reloads and the graceful stop (reload.go)

	expiry expiryAlerts
	// services holds the recorded services and their ends (services.go).
	services serviceBook
	failures failureAlerts
	// callbacks lets callbacks wake an order at most once per interval.
	callbacks callbackGate

	// cluster is set when the store is shared with other dcvd processes
	// ([store] driver = "postgres"); sealer then seals the private keys
	// kept in it.
	cluster *cluster.Node
	sealer  *keySealer
	version string
}

// New prepares a daemon for cfg: it opens the store and the API client.
// It does not start anything; see Run and Reissue.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Daemon, error) {
	d := &Daemon{
		cfg:       cfg,
		store:     opts.Store,
		dns:       map[string]*providers.DNS{},
		deployer:  opts.Deployer,
		log:       opts.Log,
		roots:     opts.Roots,
		now:       opts.Now,
		afterStep: opts.AfterStep,
		onEvent:   opts.OnEvent,
		metrics:   opts.Metrics,
		responder: httpchallenge.NewResponder(),
		driving:   map[string]bool{},
		wake:      map[string]chan wakeReason{},
		life:      newLifecycle(opts),
		version:   opts.Version,
	}
	if d.log == nil {
		d.log = zap.NewNop()
	}
	d.local = dcvfiles.NewLocal(d.responder)
	d.files = d.local
	if d.metrics == nil && cfg.Daemon.MetricsListen != "" {
		d.metrics = metrics.New()
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.deployer == nil {
		d.deployer = &deploy.Deployer{Log: d.log}
	}
	d.sem = make(chan struct{}, concurrency(cfg.Daemon.MaxConcurrent))
	for name, p := range cfg.DNS {
		d.dns[name] = p
	}
	for name, p := range opts.DNS {
		d.dns[name] = p
	}
	if d.roots == nil && cfg.API.CARootsFile != "" {
		pemData, err := os.ReadFile(cfg.API.CARootsFile)
		if err != nil {
			return nil, fmt.Errorf("api.ca_roots_file: %w", err)
		}
		d.roots = x509.NewCertPool()
		if !d.roots.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("api.ca_roots_file: %s holds no certificate", cfg.API.CARootsFile)
		}
	}
	api, err := d.newAPIClient(cfg.API)
	if err != nil {
		return nil, err
	}
	d.api = api
	if cfg.Store.Driver == config.StoreDriverPostgres {
		if err := d.openCluster(ctx, cfg); err != nil {
			return nil, err
		}
	}
	if d.store == nil {
		if err := os.MkdirAll(cfg.Daemon.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("daemon.state_dir: %w", err)
		}
		s, err := store.OpenSQLite(ctx, filepath.Join(cfg.Daemon.StateDir, "dcvd.db"))
		if err != nil {
			return nil, fmt.Errorf("open state: %w", err)
		}
		d.store, d.ownStore = s, true
	}
	if d.cluster == nil {
		d.index = renewal.NewIndex()
		d.writes = indexingStore{Store: d.store, idx: d.index}
	}
	return d, nil
}

// openCluster opens the shared store of a cluster node (unless the caller
// gave one) and the key sealer.
func (d *Daemon) openCluster(ctx context.Context, cfg *config.Config) error {
	sealer, err := newKeySealer(cfg.Store.EncryptionKey)
	if err != nil {
		return &config.ConfigError{Key: "store.encryption_key", Reason: err.Error()}
	}
	if d.store == nil {
		s, err := store.OpenPostgres(ctx, cfg.Store.DSN)
		if err != nil {
			return err
		}
		d.store, d.ownStore = s, true
	}
	cs, ok := d.store.(store.ClusterStore)
	if !ok {
		return fmt.Errorf("store.driver = %q: the store given (%T) cannot be shared by a cluster", cfg.Store.Driver, d.store)
	}
	d.sealer = sealer
	d.cluster = cluster.New(cluster.Options{Store: cs, Node: cfg.Store.Node, Lease: cfg.Store.Lease, Version: d.version,
		Log: d.log, Local: d.local, Backoff: retryBackoff})
	d.files = d.cluster
	return nil
}

// Close releases the store (when the daemon opened it) and stops the
// standalone responders.
func (d *Daemon) Close() error {
	var errs []error
	errs = append(errs, d.local.Close())
	if api := d.apiClient(); api != nil {
		api.CloseIdleConnections()
	}
	if d.ownStore {
		errs = append(errs, d.store.Close())
	}
	return errors.Join(errs...)
}

// Responder serves the pending HTTP validation files; mount it where
// /.well-known/pki-validation/ is proxied to dcvd.
func (d *Daemon) Responder() *httpchallenge.Responder { return d.responder }

// Store is the daemon's state, to read: status, the CLI and metrics only
// read it; what writes goes through the daemon.
func (d *Daemon) Store() store.Reader { return d.store }

func (d *Daemon) certConfig(name string) (*config.CertConfig, error) {
	cfg := d.config()
	for i := range cfg.Certificates {
		if cfg.Certificates[i].Name == name {
			return &cfg.Certificates[i], nil
		}
	}
	return nil, fmt.Errorf("no [[certificate]] named %q in the config", name)
}

// orderLog is the logger of one order: every line names the certificate
// and the order.
func (d *Daemon) orderLog(o *store.Order) *zap.Logger {
	return d.log.With(zap.String("cert", o.Cert), zap.String("unique_id", o.UniqueID))
}

// wakeReason says why the driver of an order was woken before its next
// attempt was due.
type wakeReason int

const (
	// wakeCallback: the CA called back. Only a hint: a try it causes that
	// fails neither counts as a failed attempt nor moves the backoff.
	wakeCallback wakeReason = iota + 1
	// wakeRetry: the admin asked for the order to be tried now (dcvd
	// retry); the try counts like any other.
	wakeRetry
)

// wakeOrder wakes the driver of the order uniqueID, if one waits in this
// process, and reports whether one did.
func (d *Daemon) wakeOrder(uniqueID string, why wakeReason) bool {
	d.mu.Lock()
	ch := d.wake[uniqueID]
	d.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- why:
	default:
		// A wake is already pending; a retry outranks a callback, but
		// either makes the driver look now.
	}
	return true
}

func (d *Daemon) wakeChan(uniqueID string) (chan wakeReason, func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch := make(chan wakeReason, 1)
	d.wake[uniqueID] = ch
	return ch, func() {
		d.mu.Lock()
		delete(d.wake, uniqueID)
		d.mu.Unlock()
	}
}

// target is where cc is deployed.
func (d *Daemon) target(cc *config.CertConfig) deploy.Target {
	return d.deployer.Directory(cc.Deploy)
}
