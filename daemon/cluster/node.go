// Package cluster is what a dcvd process does as one node of a cluster:
// several processes, one per web server, sharing a PostgreSQL store
// ([store] driver = "postgres"). The daemon drives orders; this package
// holds what being one of several adds to that, behind Node and the Host
// the daemon gives it.
//
//   - One node drives each certificate's order, under a lease (see
//     store.ClusterStore): the lease is taken before anything is decided,
//     kept renewed while the order is driven, and every write of the
//     driver is fenced by it (lease.go). A node that dies stops renewing;
//     once the lease expires another node takes it and resumes the order
//     from its recorded step, with the same unique_id, so the CA charges
//     once.
//   - Every node writes the validation files of pending orders into its
//     own web roots and responder, and says so (AckFiles); the driver asks
//     the CA to look only once every live node has (files.go). A node that
//     starts registers (heartbeats) first and writes the files of the
//     orders in flight next, before anything else: a driver that looks
//     after the registration waits for it, and an order already past that
//     look has its files on the new node as early as can be (sync.go).
//   - Every node deploys the live certificate (with its sealed key) to its
//     own deploy directory, runs its own reload, and records what it holds
//     (PutNodeCert; follow.go).
//
// Nodes wake each other through the store's notifications; a periodic sync
// (a third of the lease) makes up for a notification lost.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/dcvfiles"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/reseller"
)

// FileAckWait bounds how long the driver waits for the other nodes to
// serve the validation files before the step fails and is retried.
const FileAckWait = 30 * time.Second

// Options are what a node is made of.
type Options struct {
	Store store.ClusterStore
	// Node is this node's name ([store] node), Lease the lease's length.
	Node  string
	Lease time.Duration
	// Version is this build's version, reported with each heartbeat.
	Version string
	Log     *zap.Logger
	// Local serves the files this node writes.
	Local *dcvfiles.Local
	// Backoff is the wait before retry n of a failed deployment.
	Backoff func(n int) time.Duration
}

// Node is the state of a process that is a node of a cluster.
type Node struct {
	store    store.ClusterStore
	node     string
	instance string
	lease    time.Duration
	started  time.Time
	version  string
	log      *zap.Logger
	local    *dcvfiles.Local
	backoff  func(int) time.Duration
	// AckWait bounds how long a driver waits for the live nodes to
	// acknowledge an order's validation files (FileAckWait; tests
	// shorten it).
	AckWait time.Duration
	// kick asks the sync loop to run now (buffered: kicks coalesce).
	kick chan struct{}

	// writeMu makes the writes of validation files one at a time: the
	// driver and the sync may write the same order's files at once.
	writeMu sync.Mutex

	mu sync.Mutex
	// held are the leases this process holds, by certificate.
	held map[string]*Lease
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

// New returns a node; it does nothing until Run or a driver uses it.
func New(o Options) *Node {
	b := make([]byte, 8)
	rand.Read(b)
	return &Node{
		store:     o.Store,
		node:      o.Node,
		instance:  hex.EncodeToString(b),
		lease:     o.Lease,
		started:   time.Now(),
		version:   o.Version,
		log:       o.Log,
		local:     o.Local,
		backoff:   o.Backoff,
		AckWait:   FileAckWait,
		kick:      make(chan struct{}, 1),
		held:      map[string]*Lease{},
		files:     map[string][]httpchallenge.Written{},
		served:    map[string][]reseller.FileInstruction{},
		fileCerts: map[string]string{},
		acked:     map[string]bool{},
		recorded:  map[string]store.NodeCert{},

		deployFailures: map[string]int{},
		deployRetry:    map[string]time.Time{},
	}
}

// Name is this node's name.
func (n *Node) Name() string { return n.node }

// LeaseDuration is how long a lease lasts unrenewed, and the liveness
// window of a heartbeat.
func (n *Node) LeaseDuration() time.Duration { return n.lease }

// Store is the shared store.
func (n *Node) Store() store.ClusterStore { return n.store }

// Heartbeat records this node as alive, and warns once when another live
// process uses the same node name: two processes sharing a name hold
// each other's leases.
func (n *Node) Heartbeat(ctx context.Context) error {
	prev, err := n.store.Heartbeat(ctx, store.Node{Name: n.node, Instance: n.instance, Version: n.version, Started: n.started})
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.beats++
	first := n.beats == 1
	n.mu.Unlock()
	if prev != nil && prev.Instance != n.instance {
		switch {
		case !first:
			n.log.Error("another dcvd process reports itself as this node: give every process its own [store] node",
				zap.String("node", n.node), zap.String("other_instance", prev.Instance))
		case time.Since(prev.Heartbeat) < n.lease:
			n.log.Warn("this node name was in use by another process moments ago (a restart, or two processes with one [store] node)",
				zap.String("node", n.node), zap.Time("its_last_heartbeat", prev.Heartbeat))
		}
	}
	return nil
}

// Announce tells the other nodes about ev, so that they act on it now
// rather than at their next sync. Best effort: the sync catches up with a
// lost notification. A nil node (no cluster) announces nothing.
func (n *Node) Announce(ctx context.Context, ev store.ClusterEvent) {
	if n == nil {
		return
	}
	nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := n.store.Notify(nctx, ev); err != nil {
		n.log.Debug("notifying the other nodes", zap.String("kind", ev.Kind), zap.Error(err))
	}
}

// Holder names the node that holds cert's lease, "" when it cannot be
// read (an answer that names it is only more precise).
func (n *Node) Holder(ctx context.Context, cert string) string {
	leases, err := n.store.Leases(ctx)
	if err != nil {
		return ""
	}
	for _, l := range leases {
		if l.Cert == cert {
			return l.Holder
		}
	}
	return ""
}

func (n *Node) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}
