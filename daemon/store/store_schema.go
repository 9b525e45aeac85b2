package store

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
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
	// 3: history retention (Store.PruneHistory). pruned_costs holds, per
	// certificate, the summed cost of the attempts deleted, so that
	// TotalCost still counts every charge. orders_ended lets the ended
	// orders of each certificate be ranked by age from the index alone:
	// in SQLite a row's updated lies after its data, and reaching it
	// through the table would read every order's bulk.
	func(sqlDialect) []string {
		return []string{
			`CREATE TABLE pruned_costs (
			cert TEXT NOT NULL PRIMARY KEY,
			cost DOUBLE PRECISION NOT NULL
		)`,
			`CREATE INDEX orders_ended ON orders (cert, step, updated, unique_id)
			WHERE step = 'done' OR step = 'failed'`,
		}
	},
	// 4: services and the end of their paid period (Store.Services):
	// what the reseller said, when it was asked, and which alert was
	// announced last, so that a restart does not announce it again.
	func(sqlDialect) []string {
		return []string{
			`CREATE TABLE services (
			service_id   TEXT NOT NULL PRIMARY KEY,
			cert         TEXT NOT NULL,
			status       TEXT NOT NULL,
			expires      TEXT NOT NULL,
			checked      TEXT NOT NULL,
			alerted_days INTEGER NOT NULL
		)`,
		}
	},
	// 5: orders.data's dns_records carry the provider's record id
	// (providers.Record.ID, deleted by it on cleanup: a big alidns zone
	// hides a record from a listing). Older code refuses the unknown
	// field order by order; this version makes it refuse the database.
	// Nothing in the tables changes.
	func(sqlDialect) []string {
		return nil
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
func scanAttempt(row scanner) (Attempt, error) { return scanAttemptAfter(row) }

// scanAttemptAfter reads a row of the columns scanned into lead, then
// attemptColumns.
func scanAttemptAfter(row scanner, lead ...any) (Attempt, error) {
	var (
		a                  Attempt
		uid                *string // NULL when the attempt has no unique_id
		started, finished  string
		outcome            string
		errStart, errFinis error
	)
	dest := append(lead, &a.Cert, &uid, &started, &finished, &outcome, &a.Cost, &a.Serial, &a.Error)
	if err := row.Scan(dest...); err != nil {
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

// rankedAttempt is an attempt and its id, its place in the history.
type rankedAttempt struct {
	id int64
	Attempt
}

// scanRankedAttempt reads a row of id, then attemptColumns.
func scanRankedAttempt(row scanner) (rankedAttempt, error) {
	var r rankedAttempt
	a, err := scanAttemptAfter(row, &r.id)
	r.Attempt = a
	return r, err
}

// attemptsByCert groups attempts, in any order, into a map of slices that
// share no memory, each newest (largest id) first: RecentAttempts' queries
// leave the order to it rather than make the database sort.
func attemptsByCert(rows []rankedAttempt) map[string][]Attempt {
	groups := map[string][]rankedAttempt{}
	for _, r := range rows {
		groups[r.Cert] = append(groups[r.Cert], r)
	}
	m := make(map[string][]Attempt, len(groups))
	for cert, g := range groups {
		slices.SortFunc(g, func(a, b rankedAttempt) int { return cmp.Compare(b.id, a.id) })
		h := make([]Attempt, len(g))
		for i, r := range g {
			h[i] = r.Attempt
		}
		m[cert] = h
	}
	return m
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

// KeptGenerations is how many of a certificate's newest done orders
// PruneHistory keeps: the live generation and the one before it (the
// deploy directory's previous/), whose keys must stay known.
const KeptGenerations = 2

// bounds returns what the prune queries take from p: the count beyond
// which a certificate's rows go (a count no history reaches when p sets
// none), the age as time text (formatTime: "" when p sets none, and no
// text sorts before ""), and the rows of a table one call deletes.
func (p HistoryPolicy) bounds() (perCert int, before string, limit int) {
	perCert = p.PerCertificate
	if perCert <= 0 {
		perCert = math.MaxInt32
	}
	limit = p.Limit
	if limit <= 0 {
		limit = DefaultPruneLimit
	}
	return perCert, formatTime(p.Before), limit
}

// scanGeneration reads a row of Generations' query.
func scanGeneration(row scanner) (*Order, error) {
	var (
		o                      Order
		step, created, updated string
		errC, errU             error
	)
	if err := row.Scan(&o.UniqueID, &o.Cert, &step, &o.KeyFile, &created, &updated); err != nil {
		return nil, err
	}
	o.Step = Step(step)
	o.Created, errC = parseTime(created)
	o.Updated, errU = parseTime(updated)
	if err := errors.Join(errC, errU); err != nil {
		return nil, fmt.Errorf("order %s: %w", o.UniqueID, err)
	}
	return &o, nil
}

// generationsByCert groups orders by certificate, keeping their order.
func generationsByCert(orders []*Order) map[string][]*Order {
	m := map[string][]*Order{}
	for _, o := range orders {
		m[o.Cert] = append(m[o.Cert], o)
	}
	return m
}
