package daemon

import (
	"errors"
	"fmt"
	"time"
)

// sqlDialect holds what differs between the SQL of the store drivers in the
// schema. Everything else in storeMigrations is written once for both.
type sqlDialect struct {
	// autoID is the column definition of a primary key the database
	// numbers itself, in insertion order.
	autoID string
}

var (
	// sqliteDialect: an INTEGER PRIMARY KEY is SQLite's rowid, which it
	// numbers itself.
	sqliteDialect = sqlDialect{autoID: "INTEGER PRIMARY KEY"}
	// postgresDialect: PostgreSQL has no rowid; ALWAYS refuses an id
	// written by hand, so that nothing can break the numbering.
	postgresDialect = sqlDialect{autoID: "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"}
)

// storeMigrations are the schema changes, in order, shared by the SQLite and
// PostgreSQL stores: the database's version is the number applied
// (schema_migrations holds one row per version). Each is applied in one
// transaction with its version row. Never edit one that shipped: append a new
// one. A change of the JSON in orders.data that older code could not read (it
// refuses unknown fields) needs a new version too, so that older code refuses
// the database as a whole, not order by order.
//
// The SQL is kept portable: TEXT columns, DOUBLE PRECISION rather than REAL
// (which is single precision in PostgreSQL), times as fixed-width UTC text
// (see formatTime: it keeps nanoseconds, which PostgreSQL's timestamptz would
// round to microseconds, and sorts as the times do), JSON in TEXT, partial
// indexes (both have them). What cannot be portable comes from the dialect.
var storeMigrations = []func(d sqlDialect) []string{
	// 1: the initial schema.
	func(d sqlDialect) []string {
		return []string{
			`CREATE TABLE certificates (
			name        TEXT NOT NULL PRIMARY KEY,
			serial      TEXT NOT NULL,
			names       TEXT NOT NULL,
			not_before  TEXT NOT NULL,
			not_after   TEXT NOT NULL,
			cert_pem    TEXT NOT NULL,
			chain_pem   TEXT NOT NULL,
			key_file    TEXT NOT NULL,
			unique_id   TEXT NOT NULL,
			deployed_at TEXT NOT NULL
		)`,
			// callback_token is NULL, not '', when the order has
			// none: NULLs never collide in a UNIQUE column.
			`CREATE TABLE orders (
			unique_id      TEXT NOT NULL PRIMARY KEY,
			cert           TEXT NOT NULL,
			service_id     TEXT NOT NULL,
			step           TEXT NOT NULL,
			callback_token TEXT UNIQUE,
			data           TEXT NOT NULL,
			created        TEXT NOT NULL,
			updated        TEXT NOT NULL
		)`,
			`CREATE INDEX orders_cert_step ON orders (cert, step)`,
			// The database itself refuses a second order in flight
			// for one certificate, whichever process or code path
			// writes it. PostgresStore.PutOrder relies on the name.
			`CREATE UNIQUE INDEX orders_one_active ON orders (cert)
			WHERE step <> 'done' AND step <> 'failed'`,
			`CREATE TABLE attempts (
			id        ` + d.autoID + `,
			cert      TEXT NOT NULL,
			unique_id TEXT UNIQUE,
			started   TEXT NOT NULL,
			finished  TEXT NOT NULL,
			outcome   TEXT NOT NULL,
			cost      DOUBLE PRECISION NOT NULL,
			serial    TEXT NOT NULL,
			error     TEXT NOT NULL
		)`,
			`CREATE INDEX attempts_cert ON attempts (cert, id)`,
		}
	},
	// 2: cluster mode's sealed private keys. The live certificate's is a
	// column; the order's is the field key_sealed of orders.data, which
	// older code would refuse order by order: this version makes it
	// refuse the database instead.
	func(sqlDialect) []string {
		return []string{
			`ALTER TABLE certificates ADD COLUMN key_sealed TEXT NOT NULL DEFAULT ''`,
		}
	},
}

// rowIter is what both drivers' result sets offer (*sql.Rows, pgx.Rows):
// enough to read a list the same way for both.
type rowIter interface {
	scanner
	Next() bool
	Err() error
}

// collectRows reads every row with scan; what, on error, names the read.
// The caller closes rows.
func collectRows[T any](rows rowIter, what string, scan func(scanner) (T, error)) ([]T, error) {
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// scanAttempt reads a row of attemptColumns.
func scanAttempt(row scanner) (Attempt, error) {
	var (
		a                  Attempt
		uid                *string // NULL when the attempt has no unique_id
		started, finished  string
		outcome            string
		errStart, errFinis error
	)
	if err := row.Scan(&a.Cert, &uid, &started, &finished, &outcome, &a.Cost, &a.Serial, &a.Error); err != nil {
		return Attempt{}, err
	}
	if uid != nil {
		a.UniqueID = *uid
	}
	a.Outcome = Step(outcome)
	a.Started, errStart = parseTime(started)
	a.Finished, errFinis = parseTime(finished)
	if err := errors.Join(errStart, errFinis); err != nil {
		return Attempt{}, fmt.Errorf("attempt %s: %w", a.UniqueID, err)
	}
	return a, nil
}

// checkedOrderData checks what PutOrder refuses whatever the database holds, and
// encodes the order's structured fields.
func checkedOrderData(o *Order) (string, error) {
	switch {
	case o == nil:
		return "", errors.New("put order: nil order")
	case o.UniqueID == "":
		return "", fmt.Errorf("put order of %q: no unique_id", o.Cert)
	case o.Cert == "":
		return "", fmt.Errorf("put order %s: no certificate name", o.UniqueID)
	case !knownSteps[o.Step]:
		return "", fmt.Errorf("put order %s of %q: unknown step %q", o.UniqueID, o.Cert, o.Step)
	}
	data, err := encodeOrderData(o)
	if err != nil {
		return "", fmt.Errorf("put order %s of %q: %w", o.UniqueID, o.Cert, err)
	}
	return data, nil
}

// checkStoredOrder refuses an update of the stored order (cert, step,
// created as stored) that PutOrder must not make, and returns its Created.
func checkStoredOrder(o *Order, cert, step, createdText string) (time.Time, error) {
	if cert != o.Cert {
		return time.Time{}, fmt.Errorf("it belongs to certificate %q", cert)
	}
	if Step(step).Terminal() && !o.Step.Terminal() {
		return time.Time{}, fmt.Errorf("it is %s, and a finished order is never resumed", step)
	}
	return parseTime(createdText)
}
