package store

import (
	"context"
	"errors"
	"time"
)

// This file holds the contract of cluster mode: ClusterStore and the
// records it keeps (leases, nodes, deployments per node, events).
// PostgresStore implements it in postgres_cluster.go.

// ErrLeaseHeld is returned, wrapped, by ClusterStore.AcquireLease when
// another holder's lease on the certificate is current. The error names the
// holder and when its lease expires.
var ErrLeaseHeld = errors.New("lease held by another node")

// ErrLeaseLost is returned, wrapped, by ClusterStore.RenewLease and by the
// writes of a ClusterStore.Fenced store when the lease is no longer current:
// it expired, was released, or was taken by another acquisition (the error
// says which). The process must stop driving the certificate: another one
// may already be driving it.
var ErrLeaseLost = errors.New("lease lost")

// Lease is the right of one node to drive one certificate's orders: to make
// the writes that move an order on (through ClusterStore.Fenced) and the
// side effects between them. A Lease value is a receipt of one acquisition;
// it stays valid only while the database says so (see ClusterStore).
type Lease struct {
	// Cert is the [[certificate]] name the lease is on.
	Cert string
	// Holder is the name of the node holding it ([store] node).
	Holder string
	// Token is the fencing token: larger for every acquisition of this
	// certificate's lease, whoever acquires it, and never reused, so
	// that the writes of an earlier holder (or of an earlier process of
	// the same node) are told apart from those of the current one.
	Token int64
	// Expires is when the lease ends unless renewed, on the database's
	// clock: compare it with the local clock only as an estimate.
	Expires time.Time
}

// Node is one dcvd process of a cluster, as it last reported itself.
type Node struct {
	// Name is the node's name ([store] node), unique in the cluster.
	Name string
	// Instance is random per process start: two processes reporting
	// the same Name with different Instances are two processes
	// configured with one name (or one process restarted).
	Instance string
	// Version is the dcvd version the process runs.
	Version string
	// Started is when the process started (its own clock).
	Started time.Time
	// Heartbeat is when the process last reported itself, on the
	// database's clock.
	Heartbeat time.Time
	// Alive reports whether Heartbeat is within the `within` given to
	// ClusterStore.Nodes, on the database's clock.
	Alive bool
}

// NodeCert is what one node's deploy directory holds for one certificate.
type NodeCert struct {
	// Node is the node's name.
	Node string
	// Cert is the [[certificate]] name.
	Cert string
	// Serial is the serial (lower-case hex) of the certificate in the
	// node's deploy directory, "" when it holds none.
	Serial string
	// Updated is when the node last reported it, on the database's
	// clock; the value given to ClusterStore.PutNodeCert is ignored.
	Updated time.Time
	// Error is why the last deployment on that node failed, "" if it
	// did not.
	Error string
}

// ClusterEvent is a notification between the processes sharing a store. It
// only wakes the receivers up, to read the store sooner than their periodic
// sync would: it carries no state, may be lost, and may arrive more than
// once or at a process that has nothing to do with it (the sender included).
type ClusterEvent struct {
	// Kind is EventOrder, EventCertificate or EventCallback.
	Kind string
	// Cert is the [[certificate]] name concerned.
	Cert string
	// UniqueID is the order concerned, "" when none is.
	UniqueID string
}

// The kinds of ClusterEvent.
const (
	// EventOrder: an order of Cert changed step.
	EventOrder = "order"
	// EventCertificate: the live certificate of Cert changed.
	EventCertificate = "certificate"
	// EventCallback: the CA called back for order UniqueID of Cert; the
	// node that received the callback may not be the one driving the
	// order.
	EventCallback = "callback"
)

// ClusterStore is a Store shared by several dcvd processes, the nodes of a
// cluster (PostgresStore). Besides the Store, it holds what the nodes
// coordinate with: per-certificate leases with fencing tokens, the nodes'
// heartbeats, what each node deployed, which nodes wrote the validation
// files of an order, and events between the nodes.
//
// It makes the Store's promises (concurrency, atomicity, durability,
// contexts, not-found, values not shared) for its own methods too. Every
// time it compares or records (lease expiry, heartbeats, Updated) is on the
// database's clock, never a node's: the nodes' clocks may disagree, the
// database's is one. Durations are measured on that clock from the moment
// the database runs the statement, so a slow network shortens a lease as
// the caller sees it, never lengthens it.
//
// Exactly one node drives each certificate's orders: the one holding the
// certificate's lease. It acquires the lease with AcquireLease, renews it
// well before it expires (say every third of its duration) with RenewLease,
// and makes every write of the orders it drives through Fenced(lease), so
// that a write made after the lease was lost (a process paused, then
// resumed after another node took over) is refused by the database rather
// than overwrite the new holder's work. A node that dies stops renewing;
// once the lease expires, another node acquires it with a larger token and
// resumes the order in flight from its recorded step.
type ClusterStore interface {
	Store

	// AcquireLease acquires the lease on cert for holder for ttl (> 0).
	// It succeeds if cert has no lease yet, if its lease has expired or
	// was released, or if holder already holds it (the same node,
	// typically restarted): every success returns a lease with a token
	// larger than any before for cert, even for the same holder, so that
	// a restarted process fences out its previous incarnation, and with
	// Expires ttl after the database's present time. A lease held by
	// another holder and not expired is refused with an error wrapping
	// ErrLeaseHeld, naming the holder and the expiry; the current Lease
	// is returned too (for logs and status), and the zero Lease with
	// any other error. Acquisitions of one certificate's lease are
	// serialized by the database: of concurrent calls on an expired
	// lease, from any processes, exactly one succeeds.
	AcquireLease(ctx context.Context, cert, holder string, ttl time.Duration) (Lease, error)

	// RenewLease extends l to ttl (> 0) after the database's present
	// time, and returns the renewed lease (the same token, the new
	// Expires). It succeeds only if l is current: the same holder and
	// token as stored, and not expired. Otherwise it changes nothing and
	// returns an error wrapping ErrLeaseLost that says why (taken by
	// which holder with which token, expired, or released); a lost lease
	// is never renewed, it must be acquired again (with a new token).
	RenewLease(ctx context.Context, l Lease, ttl time.Duration) (Lease, error)

	// ReleaseLease ends l at once if it is current, so that another node
	// may acquire the certificate's lease without waiting for it to
	// expire (a clean shutdown). If l is not current (expired, released,
	// or taken over) there is nothing to release, and it returns nil.
	// Lease rows are never deleted, so tokens never repeat.
	ReleaseLease(ctx context.Context, l Lease) error

	// Leases returns the lease of every certificate whose lease was ever
	// acquired, current or not (Expires tells, on the database's clock),
	// ordered by certificate name.
	Leases(ctx context.Context) ([]Lease, error)

	// Fenced returns a view of the store for the holder of l. Its reads
	// are the store's own. Its PutOrder, PutCertificate and AddAttempt
	// check, in the same transaction as the write, that l is current
	// (the lease row is locked against acquisition while they write), and
	// refuse with an error wrapping ErrLeaseLost, writing nothing, when
	// it is not. A write for a certificate other than l.Cert is refused
	// with an error. Closing the view does nothing: the store remains
	// open. Fenced itself makes no call to the database.
	Fenced(l Lease) Store

	// Heartbeat records that node n.Name is alive: it inserts or
	// replaces the node's row (Instance, Version, Started as given;
	// Heartbeat the database's present time, n.Heartbeat and n.Alive are
	// ignored). It returns the row it replaced, nil if there was none, so
	// that the caller can warn when another process (another Instance)
	// reports under the same name. The previous row's Alive is false:
	// Heartbeat knows no `within`.
	Heartbeat(ctx context.Context, n Node) (previous *Node, err error)

	// Nodes returns every node that ever reported, ordered by name, with
	// Alive true for those whose last heartbeat is within the duration
	// `within` before the database's present time (within <= 0: none).
	// Nodes are never removed: a node gone for good stays listed, not
	// alive.
	Nodes(ctx context.Context, within time.Duration) ([]Node, error)

	// PutNodeCert records what node nc.Node's deploy directory holds
	// for certificate nc.Cert, replacing what it recorded before; Updated
	// is set to the database's present time. Node and Cert must not be
	// empty.
	PutNodeCert(ctx context.Context, nc NodeCert) error

	// NodeCerts returns what every node recorded, ordered by certificate
	// then node.
	NodeCerts(ctx context.Context) ([]NodeCert, error)

	// AckFiles records that node wrote the validation files of order
	// uniqueID to its webroots and responder. Acknowledging again is
	// harmless. uniqueID and node must not be empty.
	AckFiles(ctx context.Context, uniqueID, node string) error

	// FileAcks returns the names of the nodes that acknowledged the files
	// of order uniqueID, sorted; an empty slice if none did.
	FileAcks(ctx context.Context, uniqueID string) ([]string, error)

	// Notify sends ev to every process listening on the database (see
	// Listen), the sender included if it listens. Delivery is best
	// effort: a process not listening at that moment never gets it. Kind
	// must be one of the Event constants.
	Notify(ctx context.Context, ev ClusterEvent) error

	// Listen calls fn with every event notified on the database, in the
	// order sent, from one goroutine (Listen's), until ctx ends, when it
	// returns nil. It listens on a dedicated connection of its own. fn
	// should return soon: events wait while it runs. Events notified
	// before Listen started listening are not delivered, so the caller
	// reads the store after Listen starts (its periodic sync does).
	// Malformed notifications, and those of kinds this code does not
	// know (sent by a newer dcvd), are skipped. If the connection is
	// lost, Listen returns the error; the caller listens again, after a
	// backoff. Closing the store does not end a Listen: end its ctx
	// first.
	Listen(ctx context.Context, fn func(ClusterEvent)) error
}
