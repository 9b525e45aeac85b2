package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
)

// This file holds the one implementation of Reader that both drivers use:
// reader, over a querier (the driver's connection pool) and the driver's
// sqlDialect. Only the writes, which differ in their transactions and
// locking, are the drivers' own.

// querier is the little of a connection pool the reads need. Both drivers
// adapt theirs: sqlQuerier (database/sql, SQLite) and pgxQuerier (pgxpool,
// PostgreSQL). The queries are in the dialect's spelling already.
type querier interface {
	// query runs q and returns its rows, which the caller closes.
	query(ctx context.Context, q string, args ...any) (rows, error)
	// queryRow runs q for its first row; Scan returns an error wrapping
	// sql.ErrNoRows when there is none.
	queryRow(ctx context.Context, q string, args ...any) scanner
}

// rows is a result set as querier.query returns it.
type rows interface {
	rowIter
	Close()
}

// reader implements Reader for both drivers. SQLiteStore and
// PostgresStore embed it, and so does the fenced view of a PostgresStore,
// whose reads are the store's own.
type reader struct {
	q querier
	d sqlDialect
}

var _ Reader = reader{}

// list reads every row of q with scan; what names the read in errors.
func list[T any](ctx context.Context, r reader, what, q string, args []any, scan func(scanner) (T, error)) ([]T, error) {
	rs, err := r.q.query(ctx, r.d.rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rs.Close()
	return collectRows(rs, what, scan)
}

// lookup reads the one row of q with scan; what names the item: the error
// wraps ErrNotFound when there is none.
func lookup[T any](ctx context.Context, r reader, what, q string, args []any, scan func(scanner) (T, error)) (T, error) {
	v, err := scan(r.q.queryRow(ctx, r.d.rebind(q), args...))
	if errors.Is(err, sql.ErrNoRows) { // pgx.ErrNoRows wraps it
		var zero T
		return zero, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		var zero T
		return zero, fmt.Errorf("read %s: %w", what, err)
	}
	return v, nil
}

// Certificate implements Reader.
func (r reader) Certificate(ctx context.Context, name string) (*Certificate, error) {
	return lookup(ctx, r, fmt.Sprintf("certificate %q", name),
		`SELECT `+certColumns+` FROM certificates WHERE name = ?`, []any{name}, scanCertificate)
}

// Certificates implements Reader.
func (r reader) Certificates(ctx context.Context) ([]*Certificate, error) {
	return list(ctx, r, "read certificates",
		`SELECT `+certColumns+` FROM certificates ORDER BY `+r.d.bytewise("name"), nil, scanCertificate)
}

// CertificateSummaries implements Reader.
func (r reader) CertificateSummaries(ctx context.Context) ([]*Certificate, error) {
	return list(ctx, r, "read certificates",
		`SELECT `+certSummaryColumns+` FROM certificates ORDER BY `+r.d.bytewise("name"), nil, scanCertificate)
}

// Order implements Reader.
func (r reader) Order(ctx context.Context, uniqueID string) (*Order, error) {
	return lookup(ctx, r, fmt.Sprintf("order %q", uniqueID),
		`SELECT `+orderColumns+` FROM orders WHERE unique_id = ?`, []any{uniqueID}, scanOrder)
}

// OrderByToken implements Reader.
func (r reader) OrderByToken(ctx context.Context, token string) (*Order, error) {
	if token == "" {
		return nil, fmt.Errorf("order by empty callback token: %w", ErrNotFound)
	}
	return lookup(ctx, r, "order by callback token",
		`SELECT `+orderColumns+` FROM orders WHERE callback_token = ?`, []any{token}, scanOrder)
}

// ActiveOrder implements Reader.
func (r reader) ActiveOrder(ctx context.Context, cert string) (*Order, error) {
	return lookup(ctx, r, fmt.Sprintf("order in flight of %q", cert),
		`SELECT `+orderColumns+` FROM orders WHERE cert = ? AND step <> ? AND step <> ?`,
		[]any{cert, string(StepDone), string(StepFailed)}, scanOrder)
}

// ActiveOrders implements Reader.
func (r reader) ActiveOrders(ctx context.Context) ([]*Order, error) {
	return list(ctx, r, "read orders in flight",
		`SELECT `+orderColumns+` FROM orders WHERE step <> ? AND step <> ?
		ORDER BY `+r.d.bytewise("created")+`, `+r.d.bytewise("unique_id"),
		[]any{string(StepDone), string(StepFailed)}, scanOrder)
}

// Attempts implements Reader.
func (r reader) Attempts(ctx context.Context, cert string, limit int) ([]Attempt, error) {
	q := `SELECT ` + attemptColumns + ` FROM attempts WHERE cert = ? ORDER BY id DESC`
	args := []any{cert}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	return list(ctx, r, fmt.Sprintf("read attempts of %q", cert), q, args, scanAttempt)
}

// RecentAttempts implements Reader. The limit is applied by the database,
// with the dialect's query (sqlDialect.recentAttempts); the grouping and
// the order are left to attemptsByCert rather than to a sort in SQL.
func (r reader) RecentAttempts(ctx context.Context, limit int) (map[string][]Attempt, error) {
	q := `SELECT id, ` + attemptColumns + ` FROM attempts`
	var args []any
	if limit > 0 {
		q, args = r.d.recentAttempts(limit)
	}
	got, err := list(ctx, r, "read the recent attempts", q, args, scanRankedAttempt)
	if err != nil {
		return nil, err
	}
	return attemptsByCert(got), nil
}

// TotalCost implements Reader.
func (r reader) TotalCost(ctx context.Context, cert string) (float64, error) {
	var total float64
	if err := r.q.queryRow(ctx, r.d.rebind(`SELECT
		COALESCE((SELECT SUM(cost) FROM attempts WHERE cert = ?), 0) +
		COALESCE((SELECT cost FROM pruned_costs WHERE cert = ?), 0)`), cert, cert).Scan(&total); err != nil {
		return 0, fmt.Errorf("read total cost of %q: %w", cert, err)
	}
	return total, nil
}

// Generations implements Reader. In SQLite the ranking reads the index
// orders_ended alone; only the rows kept are read whole, for their key
// file.
func (r reader) Generations(ctx context.Context, limit int) (map[string][]*Order, error) {
	if limit <= 0 {
		limit = math.MaxInt32
	}
	got, err := list(ctx, r, "read the generations", `SELECT o.unique_id, o.cert, o.step,
			COALESCE(`+r.d.jsonText("o.data", "key_file")+`, ''), o.created, o.updated
		FROM (SELECT unique_id, cert,
				ROW_NUMBER() OVER (PARTITION BY cert
					ORDER BY `+r.d.bytewise("updated")+` DESC, `+r.d.bytewise("unique_id")+` DESC) AS n
			FROM orders WHERE step = 'done') AS g
		JOIN orders AS o ON o.unique_id = g.unique_id
		WHERE g.n <= ? ORDER BY `+r.d.bytewise("g.cert")+`, g.n`, []any{limit}, scanGeneration)
	if err != nil {
		return nil, err
	}
	return generationsByCert(got), nil
}

// Services implements Reader.
func (r reader) Services(ctx context.Context) ([]Service, error) {
	return list(ctx, r, "read the services",
		`SELECT `+serviceColumns+` FROM services ORDER BY `+r.d.bytewise("service_id"), nil, scanService)
}
