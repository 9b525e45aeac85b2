package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned, wrapped, by the Store methods that look up one
// item when no row matches. Test for it with errors.Is.
var ErrNotFound = errors.New("not found")

// ErrActiveOrder is returned, wrapped, by Store.PutOrder when storing the
// order would give its certificate a second order in flight. It is the last
// guard against two reissues of one certificate (two charges, and the first
// certificate revoked by the second): the caller must finish or fail the
// order in flight instead of starting another one.
var ErrActiveOrder = errors.New("another order of this certificate is in flight")

// Store persists what the daemon must not forget across a crash or a
// restart: per certificate the live certificate, the orders (the one in
// flight and the finished ones) and a history of attempts with their cost.
//
// Implementations of Store must be safe for concurrent use by multiple
// goroutines. Each method call is atomic on its own: after a crash the
// database holds either the state before a write or the state after it,
// never a mix, and a write is durable once the method has returned nil.
// Concurrent writes of the same row are not merged: the last one wins, so
// callers serialize the work on one certificate (the daemon runs at most one
// goroutine per certificate); the store itself only guarantees the
// invariants documented on each method, notably at most one order in flight
// per certificate.
//
// Every method honours its context: a call whose context is cancelled or
// whose deadline passes returns an error wrapping ctx.Err() as soon as the
// implementation notices. A write that returns an error has not been applied,
// except when the error comes from the final commit itself (a failed disk, a
// lost database connection), when the outcome is unknown, as with any
// database; callers that must know read the row back.
//
// The methods that look up one item (Certificate, Order, OrderByToken,
// ActiveOrder) return an error wrapping ErrNotFound when there is none. The
// methods that list (Certificates, ActiveOrders, Attempts, RecentAttempts,
// Generations) return an empty slice (map) and a nil error when there is
// nothing to list, never ErrNotFound.
//
// Values passed in are not retained (except that PutOrder sets the
// timestamps of the *Order it is given), and values returned are the
// caller's to modify: no two calls share memory.
//
// A Store may be shared by several dcvd processes (PostgresStore serving a
// cluster). The invariants enforced by the store then hold across processes,
// because the database enforces them, not the process. The store is not a
// lock, though: two processes may still both work on the same order;
// deciding which process drives which certificate is the business of
// ClusterStore's leases, and the writes of the process that drives one go
// through ClusterStore.Fenced, so that a process that lost its lease cannot
// write any more.
//
// In cluster mode the private key of an order and of the live certificate
// is not a file any more (KeyFile is "") but travels in the store, sealed
// (KeySealed): the store keeps it as the opaque text it is given, and never
// sees the key itself.
type Store interface {
	// Certificate returns the live certificate of the configured
	// certificate name, or an error wrapping ErrNotFound if none was
	// recorded yet.
	Certificate(ctx context.Context, name string) (*Certificate, error)

	// PutCertificate records c as the live certificate of c.Name,
	// replacing the one recorded before, if any. c.Name must not be
	// empty.
	PutCertificate(ctx context.Context, c *Certificate) error

	// Certificates returns every recorded live certificate, ordered by
	// name.
	Certificates(ctx context.Context) ([]*Certificate, error)

	// CertificateSummaries returns what Certificates returns, without the
	// bulk: CertPEM, ChainPEM and KeySealed are empty. It is what a
	// decision over every certificate needs (names, dates, serial),
	// at a fraction of the reading and of the memory.
	CertificateSummaries(ctx context.Context) ([]*Certificate, error)

	// Order returns the order with the given unique_id, in whatever step
	// it is, or an error wrapping ErrNotFound.
	Order(ctx context.Context, uniqueID string) (*Order, error)

	// OrderByToken returns the order whose CallbackToken is token, in
	// whatever step it is (terminal ones included: the caller decides
	// what a late callback means), or an error wrapping ErrNotFound. The
	// empty token never matches, whatever the stored orders hold, so
	// that a callback without a token finds nothing. Errors never
	// contain the token.
	OrderByToken(ctx context.Context, token string) (*Order, error)

	// ActiveOrder returns the order in flight (whose Step is not
	// terminal) of the certificate cert, or an error wrapping ErrNotFound
	// if there is none. There is never more than one: see PutOrder.
	ActiveOrder(ctx context.Context, cert string) (*Order, error)

	// ActiveOrders returns every order in flight, of every certificate,
	// oldest (by Created) first: the orders to resume after a start.
	ActiveOrders(ctx context.Context) ([]*Order, error)

	// PutOrder inserts o, or replaces the stored order with the same
	// UniqueID. UniqueID and Cert must not be empty and Step must be one
	// of the Step constants. It sets o.Updated to the time of the write,
	// and o.Created to that time too on insert and to the stored value on
	// replace (a Created set by the caller is ignored).
	//
	// PutOrder refuses, changing nothing:
	//   - a non-terminal order when its certificate has another
	//     non-terminal order (the error wraps ErrActiveOrder);
	//   - moving a terminal order back to a non-terminal step: a
	//     finished order is never resumed, a later attempt is a new
	//     order with a new UniqueID;
	//   - changing the Cert of a stored order;
	//   - a non-empty CallbackToken that another order already has.
	PutOrder(ctx context.Context, o *Order) error

	// AddAttempt records an order that ended in a's certificate's
	// history. a.Cert must not be empty, a.Outcome must be terminal and
	// a.Cost finite. There is at most one attempt per non-empty UniqueID:
	// adding one again replaces the first (keeping its place in the
	// history), so that repeating the last step of an order after a crash
	// neither duplicates the entry nor counts its cost twice. Adding an
	// attempt whose UniqueID is recorded for another certificate is
	// refused.
	AddAttempt(ctx context.Context, a Attempt) error

	// Attempts returns the history of the certificate cert, newest (last
	// added) first, at most limit entries (applied by the database);
	// limit <= 0 means all.
	Attempts(ctx context.Context, cert string, limit int) ([]Attempt, error)

	// RecentAttempts returns the history of every certificate that has
	// one, keyed by certificate name, each as Attempts(ctx, name, limit)
	// would return it: newest (last added) first, at most limit entries;
	// limit <= 0 means all. A certificate without attempts has no key,
	// and with no attempts at all the map is empty (never nil). It is one
	// read, for the renewal check of every certificate at once, where a
	// call of Attempts per certificate would cost a query each; the
	// database applies the limit, so that the attempts beyond it are
	// never read.
	RecentAttempts(ctx context.Context, limit int) (map[string][]Attempt, error)

	// TotalCost returns the sum of the costs of cert's attempts: 0 for a
	// certificate without history. The cost of the order in flight is not
	// included until it is added as an attempt. Attempts deleted by
	// PruneHistory still count: their costs are carried over.
	TotalCost(ctx context.Context, cert string) (float64, error)

	// Generations returns, per certificate, the orders that ended done
	// (each produced a generation of the certificate), newest (last
	// updated) first, at most limit per certificate; limit <= 0 means
	// all. Only UniqueID, Cert, Step, KeyFile, Created and Updated are set:
	// it serves to know which keys the live and the previous generations
	// use (limit 2), without reading the orders' bulk. A certificate
	// without such an order has no key; the map is never nil.
	Generations(ctx context.Context, limit int) (map[string][]*Order, error)

	// PruneHistory deletes the history p allows to delete: the attempts
	// and the ended orders older than p.Before or beyond the newest
	// p.PerCertificate of their certificate, at most p.Limit of each per
	// call (the caller calls again while a count reaches p.Limit). Each
	// call is one transaction per table; the costs of the attempts it
	// deletes are carried over into TotalCost.
	//
	// Whatever p says, it never deletes:
	//   - an order in flight;
	//   - the order of a live certificate (Certificate.UniqueID), nor the
	//     two newest done orders of a certificate (the live generation
	//     and the one before it, which the deploy directory keeps in
	//     previous/): their keys must stay known;
	//   - the newest KeptAttempts attempts of a certificate, which the
	//     renewal decision reads (the failures in a row).
	//
	// Running it from several processes at once is harmless: a row is
	// deleted, and its cost carried, once.
	PruneHistory(ctx context.Context, p HistoryPolicy) (Pruned, error)

	// Services returns every service recorded, ordered by ServiceID:
	// those of certificates no longer configured, or configured with
	// another service_id since, included.
	Services(ctx context.Context) ([]Service, error)

	// PutService records s, replacing the record of the same ServiceID.
	// s.ServiceID must not be empty.
	PutService(ctx context.Context, s Service) error

	// Close releases the store's resources. Calls made after Close fail.
	Close() error
}

// KeptAttempts is how many of a certificate's newest attempts
// Store.PruneHistory always keeps: what the renewal decision reads
// (NextRenewal counts the failures in a row, newest first, and the backoff
// stops growing long before 20).
const KeptAttempts = 20

// HistoryPolicy says which history Store.PruneHistory may delete.
type HistoryPolicy struct {
	// Before: attempts that finished, and ended orders last updated,
	// before it may go. The zero time deletes nothing by age.
	Before time.Time
	// PerCertificate is how many attempts, and how many ended orders, of
	// each certificate are kept at most, the newest; <= 0 deletes
	// nothing by count. Never fewer than KeptAttempts attempts are kept.
	PerCertificate int
	// Limit bounds the rows of each table one call deletes, so that a
	// first pass over a long history does not hold the database's write
	// lock for long; <= 0 means DefaultPruneLimit.
	Limit int
}

// DefaultPruneLimit is HistoryPolicy.Limit when none is given.
const DefaultPruneLimit = 1000

// Pruned counts what one Store.PruneHistory call deleted.
type Pruned struct {
	Attempts int
	Orders   int
}

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
