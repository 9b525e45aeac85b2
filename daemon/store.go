package daemon

import (
	"context"
	"errors"
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
// methods that list (Certificates, ActiveOrders, Attempts) return an empty
// slice and a nil error when there is nothing to list, never ErrNotFound.
//
// Values passed in are not retained (except that PutOrder sets the
// timestamps of the *Order it is given), and values returned are the
// caller's to modify: no two calls share memory.
//
// A Store may later be shared by several dcvd processes (a PostgreSQL
// implementation serving a cluster). The invariants enforced by the store
// then hold across processes, because the database enforces them, not the
// process. The store is not a lock, though: two processes may still both
// work on the same order; deciding which process drives which certificate is
// the caller's business, above this interface.
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
	// added) first, at most limit entries; limit <= 0 means all.
	Attempts(ctx context.Context, cert string, limit int) ([]Attempt, error)

	// TotalCost returns the sum of the costs of cert's attempts: 0 for a
	// certificate without history. The cost of the order in flight is not
	// included until it is added as an attempt.
	TotalCost(ctx context.Context, cert string) (float64, error)

	// Close releases the store's resources. Calls made after Close fail.
	Close() error
}
