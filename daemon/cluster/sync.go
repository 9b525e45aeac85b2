package cluster

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/dcvfiles"
	"github.com/dcvd/dcvd/daemon/store"
)

// Run keeps this node in the cluster until ctx ends: heartbeats,
// listening to the other nodes, and the sync, in goroutines counted by wg.
// The caller registers the node (its first Heartbeat) before; Run writes
// the validation files of the orders in flight before it returns, so
// before the daemon says it is running and before its first sweep.
func (n *Node) Run(ctx context.Context, wg *sync.WaitGroup, host Host) {
	// Registered first, the orders read next: a driver that looks at the
	// acknowledgements after the registration waits for this node's, and
	// an order whose driver looked earlier is read here still pending, its
	// files written now rather than at the first sync, a moment later:
	// the CA may already be fetching them from this node's web server.
	if _, err := n.syncFiles(ctx, host); err != nil && ctx.Err() == nil {
		n.log.Warn("reading the orders in flight, to write their validation files on this node", zap.Error(err))
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		n.heartbeats(ctx)
	}()
	go func() {
		defer wg.Done()
		n.listen(ctx, host)
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(n.lease / 3)
		defer tick.Stop()
		for {
			n.sync(ctx, wg, host)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			case <-n.kick:
			}
		}
	}()
}

// heartbeats has a loop of its own, not the sync's: a sync held up by a
// slow deployment or reload must not make this node look gone to a
// driver, which would then stop waiting for its validation files while
// its web server still answers the CA. A node that is alive but does not
// write them is named by the driver's bounded wait instead (WaitAcks).
func (n *Node) heartbeats(ctx context.Context) {
	tick := time.NewTicker(n.lease / 3)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// A heartbeat later than the lease would count for nothing.
		hctx, cancel := context.WithTimeout(ctx, n.lease)
		err := n.Heartbeat(hctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			n.log.Warn("cluster heartbeat", zap.Error(err))
		}
	}
}

// listen hears the other nodes' notifications until ctx ends, and wakes
// the sync (and, for a callback, the order's driver) on each.
func (n *Node) listen(ctx context.Context, host Host) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := n.store.Listen(ctx, func(ev store.ClusterEvent) {
			if ev.Kind == store.EventCallback && ev.UniqueID != "" {
				host.WakeOrder(ev.UniqueID)
			}
			n.wake()
		})
		if ctx.Err() != nil {
			return
		}
		n.log.Warn("listening to the other nodes; retrying", zap.Error(err), zap.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
		n.wake() // what was missed while deaf
	}
}

// sync brings this node up to date with the cluster: it serves the
// pending validation files, resumes orders nobody drives and deploys the
// live certificates. (Heartbeats have their own loop.)
func (n *Node) sync(ctx context.Context, wg *sync.WaitGroup, host Host) {
	active, err := n.syncFiles(ctx, host)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("reading the orders in flight", zap.Error(err))
		}
		return // the database is away: nothing else would work either
	}
	n.resumeOrders(ctx, wg, host, active)
	lives, err := n.store.Certificates(ctx)
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("reading the live certificates", zap.Error(err))
		}
		return
	}
	byName := map[string]*store.Certificate{}
	for _, l := range lives {
		byName[l.Name] = l
	}
	certs := host.Certificates()
	for i := range certs {
		if ctx.Err() != nil {
			return
		}
		if live := byName[certs[i].Name]; live != nil {
			n.followLive(ctx, host, &certs[i], live, active)
		}
	}
}

// syncFiles writes into this node's web roots and responder the
// validation files of the orders in flight that wait for them, and
// acknowledges them; it removes those of orders that no longer wait. It
// returns the orders in flight. The error is the store's, when it cannot
// say which orders are in flight; a file that cannot be written is logged
// (the driver names this node when it waits for it in vain).
func (n *Node) syncFiles(ctx context.Context, host Host) ([]*store.Order, error) {
	active, err := n.store.ActiveOrders(ctx)
	if err != nil {
		return nil, err
	}
	pending := map[string]bool{}
	for _, o := range active {
		cc, err := host.CertConfig(o.Cert)
		if err != nil {
			continue
		}
		if dcvfiles.Pending(o) {
			pending[o.UniqueID] = true
			if err := n.Publish(ctx, cc, o); err != nil {
				n.log.Warn("writing the validation files on this node", zap.String("cert", o.Cert), zap.String("unique_id", o.UniqueID), zap.Error(err))
			}
		}
	}
	// Files of orders no longer pending go, wherever the order is now.
	n.mu.Lock()
	var gone []string
	for uid := range n.fileCerts {
		if !pending[uid] {
			gone = append(gone, uid)
		}
	}
	n.mu.Unlock()
	for _, uid := range gone {
		n.removeNodeFiles(host, uid)
	}
	return active, nil
}

// resumeOrders has the daemon drive the orders in flight that no node
// drives: their lease is free or expired (the node that drove them died
// or lost the database).
func (n *Node) resumeOrders(ctx context.Context, wg *sync.WaitGroup, host Host, active []*store.Order) {
	if len(active) == 0 {
		return
	}
	// One read spares an acquisition attempt (a write) per order that
	// another node visibly holds; the acquisition decides in the end.
	leases, err := n.store.Leases(ctx)
	if err != nil {
		n.log.Warn("reading the leases", zap.Error(err))
		return
	}
	held := map[string]bool{}
	for _, l := range leases {
		if l.Holder != n.node && l.Expires.After(time.Now()) {
			held[l.Cert] = true
		}
	}
	var free []*store.Order
	for _, o := range active {
		if !held[o.Cert] {
			free = append(free, o)
		}
	}
	host.Resume(ctx, wg, free)
}
