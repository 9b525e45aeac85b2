package store

import (
	"context"
	"errors"
	"time"
)

// This file holds the contract of every store: Reader (what status, the
// CLI, metrics and the state machine read), Writer (what the state machine
// and housekeeping write), Store (both, and Close) and the errors they
// return. SQLiteStore and PostgresStore implement Store; their reads are
// one implementation (reader.go), their writes are each driver's own.

// ErrNotFound is returned, wrapped, by the [Reader] methods that look up
// one item when no row matches. Test for it with [errors.Is].
var ErrNotFound = errors.New("not found")

// ErrActiveOrder is returned, wrapped, by [Writer.PutOrder] when storing
// the order would give its certificate a second order in flight. It is the
// last guard against two reissues of one certificate (two charges, and the
// first certificate revoked by the second): the caller must finish or fail
// the order in flight instead of starting another one.
var ErrActiveOrder = errors.New("another order of this certificate is in flight")

// Reader reads what a [Store] keeps: the live certificates, the orders,
// the history of attempts with its costs, and the services. It is what
// "dcvd status", the metrics and the control API need, and what the state
// machine reads before it decides.
//
// Implementations must be safe for concurrent use by multiple goroutines.
// Every method honours its context: a call whose context is cancelled or
// whose deadline passes returns an error wrapping ctx.Err() as soon as the
// implementation notices. A read sees the state after the writes that
// returned before it started; it may or may not see those under way.
//
// The methods that look up one item ([Reader.Certificate], [Reader.Order],
// [Reader.OrderByToken], [Reader.ActiveOrder]) return an error wrapping
// [ErrNotFound] when there is none. The methods that list
// ([Reader.Certificates], [Reader.CertificateSummaries],
// [Reader.ActiveOrders], [Reader.Attempts], [Reader.RecentAttempts],
// [Reader.Generations], [Reader.Services]) return an empty slice (map) and
// a nil error when there is nothing to list, never ErrNotFound.
//
// Values returned are the caller's to modify: no two calls share memory.
// Lists of names are ordered by bytes, whatever the database's collation.
type Reader interface {
	// Certificate returns the live certificate of the configured
	// certificate name, or an error wrapping ErrNotFound if none was
	// recorded yet.
	Certificate(ctx context.Context, name string) (*Certificate, error)

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
	// if there is none. There is never more than one: see
	// [Writer.PutOrder].
	ActiveOrder(ctx context.Context, cert string) (*Order, error)

	// ActiveOrders returns every order in flight, of every certificate,
	// oldest (by Created) first: the orders to resume after a start.
	ActiveOrders(ctx context.Context) ([]*Order, error)

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
	// [Writer.PruneHistory] still count: their costs are carried over.
	TotalCost(ctx context.Context, cert string) (float64, error)

	// Generations returns, per certificate, the orders that ended done
	// (each produced a generation of the certificate), newest (last
	// updated) first, at most limit per certificate; limit <= 0 means
	// all. Only UniqueID, Cert, Step, KeyFile, Created and Updated are set:
	// it serves to know which keys the live and the previous generations
	// use (limit 2), without reading the orders' bulk. A certificate
	// without such an order has no key; the map is never nil.
	Generations(ctx context.Context, limit int) (map[string][]*Order, error)

	// Services returns every service recorded, ordered by ServiceID:
	// those of certificates no longer configured, or configured with
	// another service_id since, included.
	Services(ctx context.Context) ([]Service, error)
}

// Writer changes what a [Store] keeps: it is what the state machine writes
// as an order moves on (PutOrder, PutCertificate, AddAttempt), what the
// service check records (PutService) and what housekeeping deletes
// (PruneHistory).
//
// Implementations must be safe for concurrent use by multiple goroutines.
// Each method call is atomic on its own: after a crash the database holds
// either the state before a write or the state after it, never a mix, and
// a write is durable once the method has returned nil. Concurrent writes
// of the same row are not merged: the last one wins, so callers serialize
// the work on one certificate (the daemon runs at most one goroutine per
// certificate); the store itself only guarantees the invariants documented
// on each method, notably at most one order in flight per certificate.
//
// Every method honours its context, as [Reader]'s do. A write that returns
// an error has not been applied, except when the error comes from the
// final commit itself (a failed disk, a lost database connection), when
// the outcome is unknown, as with any database; callers that must know
// read the row back.
//
// Values passed in are not retained, except that PutOrder sets the
// timestamps of the *Order it is given.
type Writer interface {
	// PutCertificate records c as the live certificate of c.Name,
	// replacing the one recorded before, if any. c.Name must not be
	// empty.
	PutCertificate(ctx context.Context, c *Certificate) error

	// PutOrder inserts o, or replaces the stored order with the same
	// UniqueID. UniqueID and Cert must not be empty and Step must be one
	// of the Step constants. It sets o.Updated to the time of the write,
	// and o.Created to that time too on insert and to the stored value on
	// replace (a Created set by the caller is ignored).
	//
	// PutOrder refuses, changing nothing:
	//   - a non-terminal order when its certificate has another
	//     non-terminal order (the error wraps [ErrActiveOrder]);
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

	// PruneHistory deletes the history p allows to delete: the attempts
	// and the ended orders older than p.Before or beyond the newest
	// p.PerCertificate of their certificate, at most p.Limit of each per
	// call (the caller calls again while a count reaches p.Limit). Each
	// call is one transaction per table; the costs of the attempts it
	// deletes are carried over into [Reader.TotalCost].
	//
	// Whatever p says, it never deletes:
	//   - an order in flight;
	//   - the order of a live certificate (Certificate.UniqueID), nor the
	//     two newest done orders of a certificate (the live generation
	//     and the one before it, which the deploy directory keeps in
	//     previous/): their keys must stay known;
	//   - the newest [KeptAttempts] attempts of a certificate, which the
	//     renewal decision reads (the failures in a row).
	//
	// Running it from several processes at once is harmless: a row is
	// deleted, and its cost carried, once.
	PruneHistory(ctx context.Context, p HistoryPolicy) (Pruned, error)

	// PutService records s, replacing the record of the same ServiceID.
	// s.ServiceID must not be empty.
	PutService(ctx context.Context, s Service) error
}

// Store persists what the daemon must not forget across a crash or a
// restart: per certificate the live certificate, the orders (the one in
// flight and the finished ones) and a history of attempts with their cost.
// It is a [Reader] and a [Writer] on one database, and makes the promises
// of both.
//
// A Store may be shared by several dcvd processes (PostgresStore serving a
// cluster). The invariants enforced by the store then hold across processes,
// because the database enforces them, not the process. The store is not a
// lock, though: two processes may still both work on the same order;
// deciding which process drives which certificate is the business of
// [ClusterStore]'s leases, and the writes of the process that drives one go
// through [ClusterStore.Fenced], so that a process that lost its lease
// cannot write any more.
//
// In cluster mode the private key of an order and of the live certificate
// is not a file any more (KeyFile is "") but travels in the store, sealed
// (KeySealed): the store keeps it as the opaque text it is given, and never
// sees the key itself.
type Store interface {
	Reader
	Writer

	// Close releases the store's resources. Calls made after Close fail.
	Close() error
}

// KeptAttempts is how many of a certificate's newest attempts
// [Writer.PruneHistory] always keeps: what the renewal decision reads
// (NextRenewal counts the failures in a row, newest first, and the backoff
// stops growing long before 20).
const KeptAttempts = 20

// HistoryPolicy says which history [Writer.PruneHistory] may delete.
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

// Pruned counts what one [Writer.PruneHistory] call deleted.
type Pruned struct {
	Attempts int
	Orders   int
}
