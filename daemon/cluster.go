package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/reseller"
)

// This file is what a dcvd process does as one node of a cluster: several
// processes, one per web server, sharing a PostgreSQL store ([store] driver
// = "postgres").
//
//   - One node drives each certificate's order, under a lease (see
//     ClusterStore): the lease is taken before anything is decided, kept
//     renewed while the order is driven, and every write of the driver is
//     fenced by it. A node that dies stops renewing; once the lease expires
//     another node takes it and resumes the order from its recorded step,
//     with the same unique_id, so the CA charges once.
//   - Every node writes the validation files of pending orders into its
//     own web roots and responder, and says so (AckFiles); the driver asks
//     the CA to look only once every live node has. A node that starts
//     registers (heartbeats) first and writes the files of the orders in
//     flight next, before anything else: a driver that looks after the
//     registration waits for it, and an order already past that look has
//     its files on the new node as early as can be.
//   - Every node deploys the live certificate (with its sealed key) to its
//     own deploy directory, runs its own reload, and records what it holds
//     (PutNodeCert).
//
// Nodes wake each other through the store's notifications; a periodic sync
// (a third of the lease) makes up for a notification lost.

// cluster is the state of a process that is a node of a cluster; a
// Daemon's cluster is nil otherwise.
type cluster struct {
	store    store.ClusterStore
	node     string
	instance string
	lease    time.Duration
	started  time.Time
	// ackWait bounds how long a driver waits for the live nodes to
	// acknowledge an order's validation files (fileAckWait).
	ackWait time.Duration
	// kick asks the sync loop to run now (buffered: kicks coalesce).
	kick chan struct{}

	// writeMu makes the writes of validation files one at a time: the
	// driver and the sync may write the same order's files at once.
	writeMu sync.Mutex

	mu sync.Mutex
	// held are the leases this process holds, by certificate.
	held map[string]*heldLease
	// files are the validation files this node wrote into its web roots,
	// served the instructions it serves (responder, standalone), and
	// fileCerts the certificate of each order, by unique_id.
	files     map[string][]httpchallenge.Written
	served    map[string][]reseller.FileInstruction
	fileCerts map[string]string
	acked     map[string]bool
	// recorded is the NodeCert last written per certificate, so that a
	// sync writes only what changed.
	recorded map[string]store.NodeCert
	beats    int
	// deployFailures and deployRetry space the retries of a deployment
	// that failed on this node (a broken reload), by certificate.
	deployFailures map[string]int
	deployRetry    map[string]time.Time
}

func newCluster(db store.ClusterStore, node string, lease time.Duration) *cluster {
	return &cluster{
		store:     db,
		node:      node,
		instance:  randomHex(8),
		lease:     lease,
		started:   time.Now(),
		ackWait:   fileAckWait,
		kick:      make(chan struct{}, 1),
		held:      map[string]*heldLease{},
		files:     map[string][]httpchallenge.Written{},
		served:    map[string][]reseller.FileInstruction{},
		fileCerts: map[string]string{},
		acked:     map[string]bool{},
		recorded:  map[string]store.NodeCert{},

		deployFailures: map[string]int{},
		deployRetry:    map[string]time.Time{},
	}
}

// heldLease is a lease this process holds and renews.
type heldLease struct {
	// ctx ends when the lease is lost or released, or the context it was
	// taken under ends; context.Cause tells which (errLeaseLost).
	ctx context.Context
	// fenced is the store through which the holder writes.
	fenced store.Store
	// release gives the lease up (idempotent).
	release func()
}

// leaseLostError is the cause of a heldLease's context when the lease was
// lost: the driver stops at once, not after the stop grace.
type leaseLostError struct{ err error }

func (e *leaseLostError) Error() string { return "lease lost: " + e.err.Error() }
func (e *leaseLostError) Unwrap() error { return e.err }

// errLeaseReleased is the cause of a heldLease's context after release.
var errLeaseReleased = errors.New("lease released")

// hold takes the lease of cert and keeps it renewed, until release or
// until it cannot be renewed before it would expire. The error wraps
// ErrLeaseHeld when another node holds it.
func (c *cluster) hold(ctx context.Context, cert string, log *zap.Logger) (*heldLease, error) {
	c.mu.Lock()
	_, mine := c.held[cert]
	c.mu.Unlock()
	if mine {
		return nil, fmt.Errorf("certificate %s: this process holds its lease already: %w", cert, store.ErrLeaseHeld)
	}
	// The local deadline counts from before the request: the database's
	// expiry is later than that, never earlier.
	start := time.Now()
	l, err := c.store.AcquireLease(ctx, cert, c.node, c.lease)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	var wg sync.WaitGroup
	h := &heldLease{ctx: lctx, fenced: c.store.Fenced(l)}
	var lease = l // the renewals' copy; only the renewing goroutine writes it until wg.Wait
	h.release = sync.OnceFunc(func() {
		close(done)
		wg.Wait()
		cancel(errLeaseReleased)
		c.mu.Lock()
		if c.held[cert] == h {
			delete(c.held, cert)
		}
		c.mu.Unlock()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		if err := c.store.ReleaseLease(rctx, lease); err != nil {
			// It expires on its own; another node only waits longer.
			log.Warn("releasing the lease", zap.String("cert", cert), zap.Error(err))
		}
	})
	c.mu.Lock()
	c.held[cert] = h
	c.mu.Unlock()
	log.Debug("lease taken", zap.String("cert", cert), zap.Int64("token", l.Token))

	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := start.Add(c.lease)
		for {
			select {
			case <-done:
				return
			case <-lctx.Done():
				return
			case <-time.After(c.lease / 3):
			}
			t0 := time.Now()
			rctx, rcancel := context.WithTimeout(lctx, c.lease/3)
			nl, err := c.store.RenewLease(rctx, lease, c.lease)
			rcancel()
			switch {
			case err == nil:
				lease, deadline = nl, t0.Add(c.lease)
			case errors.Is(err, store.ErrLeaseLost):
				log.Error("lease lost; stopping work on the certificate", zap.String("cert", cert), zap.Error(err))
				cancel(&leaseLostError{err})
				return
			case lctx.Err() != nil:
				return
			default:
				// The database may come back in time; stop while the
				// lease is surely still ours, so that no step overlaps
				// another node's.
				log.Warn("renewing the lease", zap.String("cert", cert), zap.Error(err))
				if time.Until(deadline) < c.lease/3 {
					log.Error("the lease could not be renewed and expires soon; stopping work on the certificate", zap.String("cert", cert))
					cancel(&leaseLostError{fmt.Errorf("not renewed before its expiry: %w", err)})
					return
				}
			}
		}
	}()
	return h, nil
}

// heldFor returns the lease this process holds on cert, or nil.
func (c *cluster) heldFor(cert string) *heldLease {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[cert]
}

// storeFor is the store through which the driver of cert writes: the
// fenced view of its lease in a cluster. Without the lease, a cluster
// node's writes of that certificate are refused: only the lease holder
// writes an order or a live certificate.
func (d *Daemon) storeFor(cert string) store.Store {
	if d.cluster == nil {
		return d.store
	}
	if h := d.cluster.heldFor(cert); h != nil {
		return h.fenced
	}
	return unleasedStore{d.store}
}

// unleasedStore refuses the writes of a node that does not hold the lease.
type unleasedStore struct{ store.Store }

func (s unleasedStore) err(cert string) error {
	return fmt.Errorf("certificate %s: this node does not hold its lease: %w", cert, store.ErrLeaseLost)
}
func (s unleasedStore) PutOrder(_ context.Context, o *store.Order) error { return s.err(o.Cert) }
func (s unleasedStore) PutCertificate(_ context.Context, c *store.Certificate) error {
	return s.err(c.Name)
}
func (s unleasedStore) AddAttempt(_ context.Context, a store.Attempt) error { return s.err(a.Cert) }

// lease takes the lease of cert for a driver (cluster mode); release is
// a no-op for a single process, and ctx is returned as it is.
func (d *Daemon) lease(ctx context.Context, cert string) (context.Context, func(), error) {
	if d.cluster == nil {
		return ctx, func() {}, nil
	}
	h, err := d.cluster.hold(ctx, cert, d.log)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate %s: %w", cert, err)
	}
	return h.ctx, h.release, nil
}

// leaseLost returns a channel closed when this process loses the lease it
// holds on cert (nil without a lease): the driver's step stops at once.
func (d *Daemon) leaseLost(cert string) context.Context {
	if d.cluster == nil {
		return nil
	}
	h := d.cluster.heldFor(cert)
	if h == nil {
		return nil
	}
	return h.ctx
}

// announce tells the other nodes of a cluster about ev, so that they act
// on it now rather than at their next sync. Best effort: the sync catches
// up with a lost notification.
func (d *Daemon) announce(ctx context.Context, ev store.ClusterEvent) {
	if d.cluster == nil {
		return
	}
	nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := d.cluster.store.Notify(nctx, ev); err != nil {
		d.log.Debug("notifying the other nodes", zap.String("kind", ev.Kind), zap.Error(err))
	}
}

// runCluster keeps this node in the cluster until ctx ends: heartbeats,
// listening to the other nodes, and the sync. Run registers the node (its
// first heartbeat) before; runCluster writes the validation files of the
// orders in flight before it returns, so before Run says it is running
// and before its first sweep.
func (d *Daemon) runCluster(ctx context.Context, wg *sync.WaitGroup) {
	c := d.cluster
	// Registered first, the orders read next: a driver that looks at the
	// acknowledgements after the registration waits for this node's, and
	// an order whose driver looked earlier is read here still pending, its
	// files written now rather than at the first sync, a moment later:
	// the CA may already be fetching them from this node's web server.
	if _, err := d.syncFiles(ctx); err != nil && ctx.Err() == nil {
		d.log.Warn("reading the orders in flight, to write their validation files on this node", zap.Error(err))
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		// Heartbeats have a loop of their own, not the sync's: a sync held
		// up by a slow deployment or reload must not make this node look
		// gone to a driver, which would then stop waiting for its
		// validation files while its web server still answers the CA. A
		// node that is alive but does not write them is named by the
		// driver's bounded wait instead (waitFileAcks).
		tick := time.NewTicker(c.lease / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			// A heartbeat later than the lease would count for nothing.
			hctx, cancel := context.WithTimeout(ctx, c.lease)
			err := d.heartbeat(hctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				d.log.Warn("cluster heartbeat", zap.Error(err))
			}
		}
	}()
	go func() {
		defer wg.Done()
		backoff := time.Second
		for ctx.Err() == nil {
			err := c.store.Listen(ctx, func(ev store.ClusterEvent) {
				if ev.Kind == store.EventCallback && ev.UniqueID != "" {
					d.wakeOrder(ev.UniqueID, wakeCallback)
				}
				c.wake()
			})
			if ctx.Err() != nil {
				return
			}
			d.log.Warn("listening to the other nodes; retrying", zap.Error(err), zap.Duration("in", backoff))
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 30*time.Second)
			c.wake() // what was missed while deaf
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(c.lease / 3)
		defer tick.Stop()
		for {
			d.syncNode(ctx, wg)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-c.kick:
			}
		}
	}()
}

func (c *cluster) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// syncNode brings this node up to date with the cluster: it serves the
// pending validation files, resumes orders nobody drives and deploys the
// live certificates. (Heartbeats have their own loop: see runCluster.)
func (d *Daemon) syncNode(ctx context.Context, wg *sync.WaitGroup) {
	active, err := d.syncFiles(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("reading the orders in flight", zap.Error(err))
		}
		return // the database is away: nothing else would work either
	}
	d.resumeOrders(ctx, wg, active)
	lives, err := d.store.Certificates(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("reading the live certificates", zap.Error(err))
		}
		return
	}
	byName := map[string]*store.Certificate{}
	for _, l := range lives {
		byName[l.Name] = l
	}
	cfg := d.config()
	for i := range cfg.Certificates {
		if ctx.Err() != nil {
			return
		}
		if live := byName[cfg.Certificates[i].Name]; live != nil {
			d.followLive(ctx, &cfg.Certificates[i], live, active)
		}
	}
}

// syncFiles writes into this node's web roots and responder the
// validation files of the orders in flight that wait for them, and
// acknowledges them; it removes those of orders that no longer wait. It
// returns the orders in flight. The error is the store's, when it cannot
// say which orders are in flight; a file that cannot be written is logged
// (the driver names this node when it waits for it in vain).
func (d *Daemon) syncFiles(ctx context.Context) ([]*store.Order, error) {
	c := d.cluster
	active, err := d.store.ActiveOrders(ctx)
	if err != nil {
		return nil, err
	}
	pending := map[string]bool{}
	for _, o := range active {
		cc, err := d.certConfig(o.Cert)
		if err != nil {
			continue
		}
		if filesPending(o) {
			pending[o.UniqueID] = true
			if err := d.clusterFiles(ctx, cc, o); err != nil {
				d.orderLog(o).Warn("writing the validation files on this node", zap.Error(err))
			}
		}
	}
	// Files of orders no longer pending go, wherever the order is now.
	c.mu.Lock()
	var gone []string
	for uid := range c.fileCerts {
		if !pending[uid] {
			gone = append(gone, uid)
		}
	}
	c.mu.Unlock()
	for _, uid := range gone {
		d.removeNodeFiles(uid)
	}
	return active, nil
}

// heartbeat records this node as alive, and warns once when another live
// process uses the same node name: two processes sharing a name hold
// each other's leases.
func (d *Daemon) heartbeat(ctx context.Context) error {
	c := d.cluster
	prev, err := c.store.Heartbeat(ctx, store.Node{Name: c.node, Instance: c.instance, Version: d.version, Started: c.started})
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.beats++
	first := c.beats == 1
	c.mu.Unlock()
	if prev != nil && prev.Instance != c.instance {
		switch {
		case !first:
			d.log.Error("another dcvd process reports itself as this node: give every process its own [store] node",
				zap.String("node", c.node), zap.String("other_instance", prev.Instance))
		case time.Since(prev.Heartbeat) < c.lease:
			d.log.Warn("this node name was in use by another process moments ago (a restart, or two processes with one [store] node)",
				zap.String("node", c.node), zap.Time("its_last_heartbeat", prev.Heartbeat))
		}
	}
	return nil
}

// filesPending reports whether o's validation files must be served now.
func filesPending(o *store.Order) bool {
	switch o.Step {
	case store.StepPublishing, store.StepPublished, store.StepVisible, store.StepRechecked:
	default:
		return false
	}
	for _, in := range o.Instructions {
		if in.File != nil {
			return true
		}
	}
	return false
}

// clusterFiles writes o's validation files into this node's web roots and
// responder, and tells the cluster this node serves them. Safe to repeat.
func (d *Daemon) clusterFiles(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	c := d.cluster
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	var (
		written []httpchallenge.Written
		served  []reseller.FileInstruction
	)
	for _, in := range o.Instructions {
		if in.File == nil {
			continue
		}
		served = append(served, *in.File)
		// The instructions come from the database: checked again before
		// a file is written from them.
		if err := reseller.CheckDCVFileName(in.File.FileName); err != nil {
			return fmt.Errorf("validation file of %s: %w", in.Domain, err)
		}
		if len(cc.Webroots) > 0 {
			ws, err := httpchallenge.Write(cc.Webroots, *in.File)
			if err != nil {
				return fmt.Errorf("write the validation file of %s: %w", in.Domain, err)
			}
			written = mergeWritten(written, ws)
		}
	}
	if err := d.serveFiles(ctx, cc, o); err != nil {
		return err
	}
	c.mu.Lock()
	c.files[o.UniqueID] = mergeWritten(c.files[o.UniqueID], written)
	c.served[o.UniqueID] = served
	c.fileCerts[o.UniqueID] = o.Cert
	acked := c.acked[o.UniqueID]
	c.mu.Unlock()
	if acked {
		return nil
	}
	if err := c.store.AckFiles(ctx, o.UniqueID, c.node); err != nil {
		return fmt.Errorf("acknowledge the validation files: %w", err)
	}
	c.mu.Lock()
	c.acked[o.UniqueID] = true
	c.mu.Unlock()
	d.announce(ctx, store.ClusterEvent{Kind: store.EventOrder, Cert: o.Cert, UniqueID: o.UniqueID})
	return nil
}

// clusterWritten returns the validation files this node wrote for the
// order uniqueID (nil outside a cluster).
func (d *Daemon) clusterWritten(uniqueID string) []httpchallenge.Written {
	if d.cluster == nil {
		return nil
	}
	d.cluster.mu.Lock()
	defer d.cluster.mu.Unlock()
	return slices.Clone(d.cluster.files[uniqueID])
}

// clusterForget drops what this node remembers of uniqueID's files, once
// they are removed.
func (d *Daemon) clusterForget(uniqueID string) {
	if d.cluster == nil {
		return
	}
	c := d.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.files, uniqueID)
	delete(c.served, uniqueID)
	delete(c.fileCerts, uniqueID)
	delete(c.acked, uniqueID)
}

// removeNodeFiles removes the validation files this node wrote for an
// order that is no longer pending.
func (d *Daemon) removeNodeFiles(uniqueID string) {
	c := d.cluster
	c.mu.Lock()
	files := slices.Clone(c.files[uniqueID])
	served := slices.Clone(c.served[uniqueID])
	cert := c.fileCerts[uniqueID]
	c.mu.Unlock()
	log := d.log.With(zap.String("cert", cert), zap.String("unique_id", uniqueID))
	var cc *config.CertConfig
	if got, err := d.certConfig(cert); err == nil {
		cc = got
	}
	for _, f := range served {
		d.responder.Remove(f)
		if cc == nil {
			continue
		}
		if cc.Standalone != "" {
			if err := d.standalone(cc.Standalone).Remove(f); err != nil {
				log.Warn("stopping the standalone responder", zap.Error(err))
			}
		}
		// Also what an interrupted write may have left unrecorded.
		for _, wr := range cc.Webroots {
			files = mergeWritten(files, []httpchallenge.Written{{Webroot: wr.Dir, Name: f.FileName, Content: f.Content}})
		}
	}
	if err := httpchallenge.Remove(files); err != nil {
		log.Warn("removing the validation files on this node", zap.Error(err))
		return
	}
	log.Info("validation files removed on this node", zap.Int("files", len(files)))
	d.clusterForget(uniqueID)
}

// fileAckWait bounds how long the driver waits for the other nodes to
// serve the validation files before the step fails and is retried.
const fileAckWait = 30 * time.Second

// waitFileAcks waits until every node expected to serve o's validation
// files has acknowledged them: the CA may reach any of them. Expected is
// every node alive, by a heartbeat within the liveness window (the lease),
// whether or not it has acknowledged anything yet; that includes a node
// still starting, which registers before it reads the orders in flight
// (runCluster), and so one that joins while this waits. A node gone for
// good stops heartbeating and drops out of the window: it is waited for no
// longer than that. One that stays alive without acknowledging fails the
// step after c.ackWait, named, and the step is retried. Outside a cluster,
// and for orders without files, it returns at once.
func (d *Daemon) waitFileAcks(ctx context.Context, o *store.Order) error {
	if d.cluster == nil || !filesPending(o) {
		return nil
	}
	c := d.cluster
	start := time.Now()
	deadline := start.Add(c.ackWait)
	wait := 100 * time.Millisecond
	logged := false
	for {
		nodes, err := c.store.Nodes(ctx, c.lease)
		if err != nil {
			return fmt.Errorf("the nodes that must serve the validation files of order %s: %w", o.UniqueID, err)
		}
		acks, err := c.store.FileAcks(ctx, o.UniqueID) // its error names the order
		if err != nil {
			return fmt.Errorf("the nodes that serve the validation files: %w", err)
		}
		var missing []store.Node
		for _, n := range nodes {
			if n.Alive && !slices.Contains(acks, n.Name) {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 {
			if logged {
				d.orderLog(o).Info("every live node serves the validation files", zap.Duration("waited", time.Since(start).Round(time.Millisecond)))
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("live %s did not acknowledge the validation files of order %s within %s (is certificate %s configured with its web roots on every node, and is dcvd there working?)",
				describeNodes(missing), o.UniqueID, c.ackWait, o.Cert)
		}
		if !logged && time.Since(start) >= time.Second {
			names := make([]string, len(missing))
			for i, n := range missing {
				names[i] = n.Name
			}
			d.orderLog(o).Info("waiting for live nodes to serve the validation files", zap.Strings("nodes", names))
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}

// describeNodes names nodes for an error, each with its last heartbeat
// (on the database's clock): "node n2 (last heartbeat …)".
func describeNodes(nodes []store.Node) string {
	var b strings.Builder
	b.WriteString("node")
	if len(nodes) > 1 {
		b.WriteString("s")
	}
	for i, n := range nodes {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s (last heartbeat %s)", n.Name, n.Heartbeat.Format(time.RFC3339Nano))
	}
	return b.String()
}

// resumeOrders drives the orders in flight that no node drives: their
// lease is free or expired (the node that drove them died or lost the
// database).
func (d *Daemon) resumeOrders(ctx context.Context, wg *sync.WaitGroup, active []*store.Order) {
	if len(active) == 0 {
		return
	}
	// One read spares an acquisition attempt (a write) per order that
	// another node visibly holds; the acquisition decides in the end.
	leases, err := d.cluster.store.Leases(ctx)
	if err != nil {
		d.log.Warn("reading the leases", zap.Error(err))
		return
	}
	held := map[string]bool{}
	for _, l := range leases {
		if l.Holder != d.cluster.node && l.Expires.After(time.Now()) {
			held[l.Cert] = true
		}
	}
	d.life.startMu.Lock() // see lifecycle.startMu
	defer d.life.startMu.Unlock()
	for _, o := range active {
		if ctx.Err() != nil {
			return
		}
		if held[o.Cert] || d.isDriving(o.Cert) {
			continue
		}
		d.resume(ctx, wg, o)
	}
}

// followLive deploys cc's live certificate on this node when its deploy
// directory holds another one, and records what the directory holds.
func (d *Daemon) followLive(ctx context.Context, cc *config.CertConfig, live *store.Certificate, active []*store.Order) {
	c := d.cluster
	c.mu.Lock()
	last, known := c.recorded[cc.Name]
	c.mu.Unlock()
	if known && last.Serial == live.Serial && last.Error == "" {
		return // deployed here, and recorded: nothing to read
	}
	if d.isDriving(cc.Name) {
		return // the driver deploys, and records, itself
	}
	for _, o := range active {
		if o.Cert == cc.Name && (o.Step == store.StepIssued || o.Step == store.StepDeployed) {
			// The live certificate is about to change; this node's
			// directory may already hold the new one (a driver that
			// died after installing): wait until it is recorded.
			return
		}
	}
	onDisk := ""
	if deployed, err := d.target(cc).Live(ctx); err == nil {
		if leaves, err := certs.ParsePEM(deployed.CertPEM); err == nil {
			onDisk = certs.SerialHex(leaves[0])
		}
	}
	if onDisk == live.Serial || live.KeySealed == "" {
		// Up to date, or a certificate adopted from some node's deploy
		// directory, whose key the cluster does not hold.
		d.clusterDeployed(ctx, cc, onDisk, nil)
		return
	}
	c.mu.Lock()
	retry := c.deployRetry[cc.Name]
	c.mu.Unlock()
	if time.Now().Before(retry) {
		return
	}
	log := d.log.With(zap.String("cert", cc.Name), zap.String("serial", live.Serial))
	if err := d.deployLive(ctx, cc, live); err != nil {
		c.mu.Lock()
		c.deployFailures[cc.Name]++
		wait := retryBackoff(c.deployFailures[cc.Name])
		c.deployRetry[cc.Name] = time.Now().Add(wait)
		c.mu.Unlock()
		log.Error("deploying the live certificate on this node", zap.Error(err), zap.Duration("retry_in", wait))
		d.clusterDeployed(ctx, cc, onDisk, err)
		return
	}
	c.mu.Lock()
	delete(c.deployFailures, cc.Name)
	delete(c.deployRetry, cc.Name)
	c.mu.Unlock()
	log.Info("deployed the cluster's live certificate on this node", zap.String("dir", cc.Deploy.Dir))
	d.clusterDeployed(ctx, cc, live.Serial, nil)
	d.updateCertMetrics(ctx, cc)
}

// deployLive verifies the live certificate read from the database against
// its key and the configured names, then installs it and reloads.
func (d *Daemon) deployLive(ctx context.Context, cc *config.CertConfig, live *store.Certificate) error {
	o := &store.Order{Cert: live.Name, UniqueID: live.UniqueID, KeySealed: live.KeySealed, CertPEM: live.CertPEM,
		ChainPEM: live.ChainPEM, Names: live.Names, Serial: live.Serial, NotAfter: live.NotAfter}
	key, _, err := d.orderKey(o)
	if err != nil {
		return err
	}
	// The database is shared: what it says is checked like the CA's reply.
	if _, err := certs.Verify(live.CertPEM, live.ChainPEM, key, cc.Names(), d.rootPool(), d.now()); err != nil {
		return fmt.Errorf("the live certificate in the database was refused: %w", err)
	}
	b, err := d.bundle(o)
	if err != nil {
		return err
	}
	return deploy.Deploy(ctx, d.target(cc), b)
}

// clusterDeployed records what this node's deploy directory holds for cc,
// when it changed since the last record.
func (d *Daemon) clusterDeployed(ctx context.Context, cc *config.CertConfig, serial string, deployErr error) {
	if d.cluster == nil {
		return
	}
	c := d.cluster
	nc := store.NodeCert{Node: c.node, Cert: cc.Name, Serial: serial}
	if deployErr != nil {
		nc.Error = deployErr.Error()
	}
	c.mu.Lock()
	last, ok := c.recorded[cc.Name]
	c.mu.Unlock()
	if ok && last.Serial == nc.Serial && last.Error == nc.Error {
		return
	}
	if err := c.store.PutNodeCert(ctx, nc); err != nil {
		d.log.Warn("recording this node's certificate", zap.String("cert", cc.Name), zap.Error(err))
		return
	}
	c.mu.Lock()
	c.recorded[cc.Name] = nc
	c.mu.Unlock()
}
