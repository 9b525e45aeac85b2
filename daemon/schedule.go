package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/renewal"
	"github.com/dcvd/dcvd/daemon/store"
)

// Renewal says when a certificate is due and why.
type Renewal = renewal.Due

// NextRenewal decides when the certificate cc is due (see renewal.Next).
func NextRenewal(cc *config.CertConfig, live *store.Certificate, history []store.Attempt, now time.Time) Renewal {
	return renewal.Next(cc, live, history, now)
}

func missingNames(cc *config.CertConfig, live *store.Certificate) []string {
	return renewal.MissingNames(cc, live)
}

// stalledScheduleWait is how long Run waits, when the schedule gives no
// next run, before it looks again (a reload ends the wait sooner).
const stalledScheduleWait = time.Hour

// Run resumes the orders in flight, checks every certificate at once, then
// on each tick of daemon.schedule and after each Reload, and serves
// callbacks, until ctx ends. Then no new step starts, and Run returns once
// the steps at work have finished (see Options.StopGrace).
func (d *Daemon) Run(ctx context.Context) error {
	if _, err := config.ParseSchedule(d.config().Daemon.Schedule, d.now()); err != nil {
		return &config.ConfigError{Key: "daemon.schedule", Reason: err.Error()}
	}
	var wg sync.WaitGroup
	defer wg.Wait()

	addrs, err := d.startListener(ctx, &wg)
	if err != nil {
		return err
	}
	if addrs != "" {
		d.log.Info("listening for callbacks and validation requests", zap.String("addr", addrs))
	}
	if ml := d.config().Daemon.MetricsListen; ml != "" {
		addr, err := d.serveHTTP(ctx, &wg, ml, d.metrics.Handler())
		if err != nil {
			return fmt.Errorf("daemon.metrics_listen: %w", err)
		}
		d.log.Info("serving metrics", zap.String("addr", addr))
	}
	d.metrics.SetHealthy(true, "")
	defer d.metrics.SetHealthy(false, "stopping")
	if d.cluster != nil {
		// Alive before the first sweep: a driver started by it waits
		// for this node's validation files too.
		if err := d.cluster.Heartbeat(ctx); err != nil {
			d.log.Warn("cluster heartbeat", zap.Error(err))
		}
		d.cluster.Run(ctx, &wg, clusterHost{d})
		d.log.Info("running as a cluster node", zap.String("node", d.cluster.Name()), zap.Duration("lease", d.cluster.LeaseDuration()))
	}
	if d.cluster == nil {
		d.removeOrphanKeys(ctx)
	}
	d.markRunning()

	var lastHousekeeping, lastServices time.Time
	// The services' recorded ends first: the sweep starts no renewal of
	// an ended service.
	d.loadServices(ctx)
	afterSweep := func() {
		d.refreshServicesIfDue(ctx, &lastServices)
		d.housekeepIfDue(ctx, &lastHousekeeping)
	}
	d.sweep(ctx, &wg)
	afterSweep()
	stalled := "" // the schedule last found to have no next run
	for {
		wait, next := d.untilNextCheck(&stalled)
		select {
		case <-ctx.Done():
			return nil
		case <-d.reloaded():
			d.sweep(ctx, &wg)
			// A reload may bring a new service_id (a renewal bought):
			// it is asked at once.
			lastServices = time.Time{}
			afterSweep()
		case <-time.After(wait):
			if next {
				d.sweep(ctx, &wg)
				afterSweep()
			}
		}
	}
}

// untilNextCheck is the wait until the next renewal check of
// daemon.schedule, read each time since a reload may have changed it. It
// never returns a wait that ends at once without a check due: a schedule
// with no next run (which Reload and LoadConfig refuse, so it can only
// come from a clock jump or a bug) is logged and alerted once, then waited
// out an hour at a time, never spun on. stalled remembers the schedule
// last told of.
func (d *Daemon) untilNextCheck(stalled *string) (time.Duration, bool) {
	expr := d.config().Daemon.Schedule
	now := d.now()
	var next time.Time
	sched, err := cron.ParseStandard(expr)
	if err == nil {
		next = sched.Next(now)
	}
	if err != nil || next.IsZero() || !next.After(now) {
		if *stalled != expr {
			*stalled = expr
			why := fmt.Sprintf("daemon.schedule %q gives no next run", expr)
			if err != nil {
				why = fmt.Sprintf("daemon.schedule %q: %v", expr, err)
			}
			d.log.Error("no renewal check is scheduled; fix daemon.schedule and reload (systemctl reload dcvd)",
				zap.String("schedule", expr), zap.Error(err))
			d.emit(Event{Kind: EventScheduleStalled, Title: "dcvd: the renewal schedule never fires",
				Text: why + ": no certificate is checked for renewal until the schedule is mended and dcvd reloaded; orders in flight go on."})
		}
		return stalledScheduleWait, false
	}
	*stalled = ""
	d.log.Info("next renewal check", zap.Time("at", next))
	return next.Sub(now), true
}

// sweep starts a driver for every order in flight and every certificate
// that is due. Certificates already being driven are left alone.
func (d *Daemon) sweep(ctx context.Context, wg *sync.WaitGroup) {
	if d.sweepOnce(ctx, wg) {
		// A sweep that read every certificate at once (sweepState) made
		// most of what a daemon at rest ever allocates, then garbage
		// until the next check, hours away. Handing it back to the
		// system now, at the cost of one collection, keeps an idle
		// daemon's memory to what it uses (bench/idle.sh: 9 MB of
		// anonymous memory instead of 13 at 1,000 certificates). A sweep
		// from the index allocates next to nothing: no need then.
		debug.FreeOSMemory()
	}
}

// sweepOnce is sweep without giving memory back, under startMu; it
// reports whether it read every certificate.
//
// With the renewal index (a process alone on its store), it looks only at
// the certificates the index finds due (see sweepIndexed); the first
// sweep, which builds the index, and every sweep in a cluster, where other
// nodes write too, read the state of every certificate (sweepAll).
func (d *Daemon) sweepOnce(ctx context.Context, wg *sync.WaitGroup) (all bool) {
	d.life.startMu.Lock() // see lifecycle.startMu
	defer d.life.startMu.Unlock()
	active, err := d.store.ActiveOrders(ctx)
	if err != nil {
		d.log.Error("reading the orders in flight", zap.Error(err))
		return false
	}
	cfg := d.config()
	var inFlight map[string]bool
	if len(active) > 0 {
		inFlight = make(map[string]bool, len(active))
	}
	for _, o := range active {
		inFlight[o.Cert] = true
		d.resume(ctx, wg, o)
	}
	if d.index != nil && d.index.Built() {
		d.sweepIndexed(ctx, wg, cfg, inFlight)
		return false
	}
	d.sweepAll(ctx, wg, cfg, inFlight)
	return true
}

// sweepAll decides for every configured certificate from one read of the
// state of all (readSweepState), and builds the index from that read.
func (d *Daemon) sweepAll(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, inFlight map[string]bool) {
	state := d.readBuildingIndex(ctx, cfg)
	for i := range cfg.Certificates {
		cc := &cfg.Certificates[i]
		if inFlight[cc.Name] || d.isDriving(cc.Name) {
			continue
		}
		// In a cluster this first look is without the lease (most
		// certificates are not due, and taking a lease is a write); the
		// decision is made again under the lease.
		r, live, err := d.sweepRenewal(ctx, state, cc, d.cluster == nil)
		d.sweepDecided(ctx, wg, cc, r, live, err)
	}
}

// readBuildingIndex is readSweepState, from which it builds the index, if
// there is one (the writes made while the state was read mark their
// certificates stale: read again at their next look).
func (d *Daemon) readBuildingIndex(ctx context.Context, cfg *config.Config) *sweepState {
	if d.index == nil {
		return d.readSweepState(ctx)
	}
	d.index.BeginBuild()
	state := d.readSweepState(ctx)
	if state != nil {
		d.index.Build(cfg, state.summaries, state.history)
	}
	return state
}

// sweepIndexed decides for the certificates the index finds due: their
// renewal point or their expiry alerts reached, changed since the last
// sweep (a write, a reload), or without a live certificate (the deploy
// directory's may be adopted). The others are not due, and nothing about
// them changed since the last sweep published it. It reads and allocates
// in proportion to those only.
func (d *Daemon) sweepIndexed(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, inFlight map[string]bool) {
	d.index.Configure(cfg)
	d.sweepBuf = d.index.Due(d.now(), d.sweepBuf[:0])
	for i := range d.sweepBuf {
		l := d.sweepBuf[i]
		d.sweepBuf[i] = renewal.Look{} // keep nothing of it past the sweep
		if inFlight[l.CC.Name] || d.isDriving(l.CC.Name) {
			continue
		}
		r, live, err := d.indexedRenewal(ctx, l)
		d.sweepDecided(ctx, wg, l.CC, r, live, err)
	}
}

// indexedRenewal is sweepRenewal from the index's inputs of l: they settle
// it when l has a live certificate that is not due; otherwise, or when
// they are stale, the certificate is read again (and the index refreshed
// from that read) before anything acts.
func (d *Daemon) indexedRenewal(ctx context.Context, l renewal.Look) (Renewal, *store.Certificate, error) {
	if !l.Stale && l.Live != nil {
		r := NextRenewal(l.CC, l.Live, l.History, d.now())
		if d.now().Before(r.At) {
			d.index.Settle(l)
			return r, l.Live, nil
		}
	}
	r, live, history, err := d.renewalRead(ctx, l.CC, true)
	if err != nil {
		d.index.MarkStale(l.CC.Name)
		return r, live, err
	}
	d.index.Refresh(l, live, history)
	return r, live, nil
}

// sweepDecided acts on the decision r (or err) the sweep made for cc.
func (d *Daemon) sweepDecided(ctx context.Context, wg *sync.WaitGroup, cc *config.CertConfig, r Renewal, live *store.Certificate, err error) {
	if err != nil {
		d.log.Error("deciding the renewal", zap.String("cert", cc.Name), zap.Error(err))
		return
	}
	d.publishCertMetrics(cc, live, r)
	d.checkExpiry(cc, live)
	if d.now().Before(r.At) {
		d.log.Debug("not due", zap.String("cert", cc.Name), zap.Time("renew_at", r.At))
		return
	}
	if why := d.renewalHeldByService(cc, live); why != "" {
		// Alerted once by announceServices and shown by status; a
		// reissue would be refused, or could not extend it.
		d.log.Debug("due, but not renewed: "+why, zap.String("cert", cc.Name), zap.String("service_id", cc.ServiceID))
		return
	}
	d.startRenewal(ctx, wg, cc)
}

// resume starts a driver for the order o in flight, unless one drives it
// (in this process, or in another node of a cluster: its lease is held).
// The caller holds startMu.
func (d *Daemon) resume(ctx context.Context, wg *sync.WaitGroup, o *store.Order) {
	cc, err := d.certConfig(o.Cert)
	if err != nil {
		d.orderLog(o).Warn("order in flight for a certificate no longer configured; leaving it", zap.String("step", string(o.Step)))
		return
	}
	// Read again under the lease: the node that held it may have moved
	// the order on, or ended it.
	h, err := d.acquire(ctx, cc, nil)
	switch {
	case isClaimed(err):
		return // a driver is at work on it already
	case isLeaseRefused(err):
		d.logLeaseRefused(cc.Name, err)
		return
	case errors.Is(err, store.ErrNotFound):
		return
	case err != nil:
		d.orderLog(o).Error("reading the order in flight", zap.Error(err))
		return
	}
	if d.cluster != nil {
		h.log.Info("driving the order on this node", zap.String("step", string(h.o.Step)), zap.String("node", d.cluster.Name()))
	}
	d.goDrive(wg, h)
}

// errNotStarted says that startRenewal decided, under the lease, not to
// start the renewal (and logged why, if that needed saying).
var errNotStarted = errors.New("renewal not started")

// startRenewal starts a new order of cc, which was found due, and a driver
// for it. In a cluster it decides again under the certificate's lease, and
// drives the order another node started since the first look, if any. The
// caller holds startMu.
func (d *Daemon) startRenewal(ctx context.Context, wg *sync.WaitGroup, cc *config.CertConfig) {
	h, err := d.acquire(ctx, cc, func(lctx context.Context) (*store.Order, error) {
		r, _, err := d.renewal(lctx, cc, true)
		if err != nil {
			d.log.Error("deciding the renewal", zap.String("cert", cc.Name), zap.Error(err))
			return nil, errNotStarted
		}
		if d.now().Before(r.At) {
			return nil, errNotStarted // renewed by another node meanwhile
		}
		o, err := d.newOrder(lctx, cc, false)
		if err != nil {
			d.log.Error("cannot start the renewal", zap.String("cert", cc.Name), zap.String("why", r.Reason), zap.Error(err))
			return nil, errNotStarted
		}
		d.orderLog(o).Info("renewal started", zap.String("why", r.Reason))
		return o, nil
	})
	switch {
	case isClaimed(err), errors.Is(err, errNotStarted):
		return
	case isLeaseRefused(err):
		d.logLeaseRefused(cc.Name, err)
		return
	case err != nil:
		d.log.Error("reading the order in flight", zap.String("cert", cc.Name), zap.Error(err))
		return
	}
	d.goDrive(wg, h)
}

// logLeaseRefused logs why a driver was not started: quietly when another
// node holds the lease, which is the normal case in a cluster.
func (d *Daemon) logLeaseRefused(cert string, err error) {
	if errors.Is(err, store.ErrLeaseHeld) {
		d.log.Debug("another node drives the certificate", zap.String("cert", cert), zap.Error(err))
		return
	}
	d.log.Error("taking the certificate's lease", zap.String("cert", cert), zap.Error(err))
}

// renewalHistory is how many of a certificate's last attempts the renewal
// decision reads: all that the store keeps.
const renewalHistory = store.KeptAttempts

// sweepState is the state of every certificate, read in two queries for one
// sweep: a query per certificate would cost the sweep about 0.15 ms each
// with SQLite, 1.5 s at 10,000 certificates (see BenchmarkSweep).
type sweepState struct {
	summaries []*store.Certificate // as read; live holds them by name
	live      map[string]*store.Certificate
	history   map[string][]store.Attempt
	// driving holds the certificates that were being driven just before
	// the state was read. Their drivers may have written since: if they
	// have ended by the time the sweep reaches them, their state is read
	// again. No other driver of this process writes meanwhile: starting
	// one takes startMu, which the sweep holds.
	driving map[string]bool
}

// readSweepState reads the state of every certificate for a sweep; nil
// when that fails, and the sweep then reads each certificate on its own,
// as a row that cannot be read must only hold up its own certificate.
func (d *Daemon) readSweepState(ctx context.Context) *sweepState {
	d.mu.Lock()
	driving := make(map[string]bool, len(d.driving))
	for cert, on := range d.driving {
		driving[cert] = on
	}
	d.mu.Unlock()
	// Without their PEMs: the decision needs names and dates, and a
	// certificate found due is read again whole.
	certs, err := d.store.CertificateSummaries(ctx)
	if err != nil {
		d.log.Warn("reading every live certificate at once; reading them one by one", zap.Error(err))
		return nil
	}
	history, err := d.store.RecentAttempts(ctx, renewalHistory)
	if err != nil {
		d.log.Warn("reading every certificate's history at once; reading them one by one", zap.Error(err))
		return nil
	}
	live := make(map[string]*store.Certificate, len(certs))
	for _, c := range certs {
		live[c.Name] = c
	}
	return &sweepState{summaries: certs, live: live, history: history, driving: driving}
}

// sweepRenewal is renewal from the sweep's state when that state settles
// it: the certificate has a live certificate that is not due. Otherwise,
// the state is read again for this certificate alone (renewal), so that
// what acts (a renewal started, a certificate adopted) and what is
// published about it rests on reads made just before, as it would without
// the batched read.
func (d *Daemon) sweepRenewal(ctx context.Context, state *sweepState, cc *config.CertConfig, adopt bool) (Renewal, *store.Certificate, error) {
	if state == nil || state.driving[cc.Name] {
		return d.renewal(ctx, cc, adopt)
	}
	live := state.live[cc.Name]
	if live == nil {
		// Not due only during a failure's backoff; the deploy
		// directory's certificate is adopted all the same.
		return d.renewal(ctx, cc, adopt)
	}
	r := NextRenewal(cc, live, state.history[cc.Name], d.now())
	if !d.now().Before(r.At) {
		return d.renewal(ctx, cc, adopt)
	}
	return r, live, nil
}

// renewal computes NextRenewal from the store, adopting a certificate
// already in the deploy directory when the store has none (a first run on
// a host that has certificates).
// It also returns the live certificate (nil when there is none).
//
// adopt is false for a look without the lease in a cluster: adopting writes
// the shared live certificate, which only the lease holder may do.
func (d *Daemon) renewal(ctx context.Context, cc *config.CertConfig, adopt bool) (Renewal, *store.Certificate, error) {
	r, live, _, err := d.renewalRead(ctx, cc, adopt)
	return r, live, err
}

// renewalRead is renewal, which also returns the history it read.
func (d *Daemon) renewalRead(ctx context.Context, cc *config.CertConfig, adopt bool) (Renewal, *store.Certificate, []store.Attempt, error) {
	live, err := d.store.Certificate(ctx, cc.Name)
	if errors.Is(err, store.ErrNotFound) {
		live, err = nil, nil
		if adopt {
			live = d.adopt(ctx, cc)
		}
	}
	if err != nil {
		return Renewal{}, nil, nil, err
	}
	history, err := d.store.Attempts(ctx, cc.Name, renewalHistory)
	if err != nil {
		return Renewal{}, nil, nil, err
	}
	return NextRenewal(cc, live, history, d.now()), live, history, nil
}

func (d *Daemon) adopt(ctx context.Context, cc *config.CertConfig) *store.Certificate {
	deployed, err := d.target(cc).Live(ctx)
	if err != nil {
		return nil
	}
	certPEM, chainPEM := deployed.CertPEM, deployed.ChainPEM
	leaves, err := certs.ParsePEM(certPEM)
	if err != nil {
		return nil
	}
	leaf := leaves[0]
	live := &store.Certificate{Name: cc.Name, Serial: certs.SerialHex(leaf), Names: certs.LeafNames(leaf), NotBefore: leaf.NotBefore,
		NotAfter: leaf.NotAfter, CertPEM: certPEM, ChainPEM: chainPEM, DeployedAt: d.now()}
	if err := d.storeFor(cc.Name).PutCertificate(ctx, live); err != nil {
		d.log.Warn("adopting the deployed certificate", zap.String("cert", cc.Name), zap.Error(err))
		return nil
	}
	d.log.Info("adopted the certificate found in the deploy directory", zap.String("cert", cc.Name),
		zap.String("serial", live.Serial), zap.Time("not_after", live.NotAfter))
	return live
}
