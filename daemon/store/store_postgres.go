package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresStore is the Store kept in a PostgreSQL database, which several
// dcvd processes (a cluster) may share. Open it with OpenPostgres.
//
// It uses pgx's own pool (pgxpool) rather than database/sql: the SQL differs
// from SQLite's in its placeholders anyway, so database/sql would share no
// code, while pgx natively gives typed server errors (the SQLSTATE and the
// constraint name PutOrder maps to ErrActiveOrder), per-connection setup
// (AfterConnect) and cancellation of a running query when its context ends.
//
// The schema is SQLite's (storeMigrations), plus the tables of cluster mode
// (postgresClusterMigrations), in the first schema of the connection's
// search_path, so that a DSN with search_path=… keeps dcvd's tables apart
// from anything else in the database. Its invariants are enforced by the
// database itself (unique and partial unique indexes, row locks), so they
// hold across every process that uses the database.
//
// It is the ClusterStore of cluster mode: see store_cluster.go.
type PostgresStore struct {
	pool *pgxpool.Pool
	// where names the server and database in errors; it never holds the
	// password.
	where string
	// now is the clock of Created and Updated; tests replace it.
	now func() time.Time
}

var (
	_ Store        = (*PostgresStore)(nil)
	_ ClusterStore = (*PostgresStore)(nil)
)

// postgresMigrationLock is the key of the advisory lock that serializes the
// migrations of every dcvd process on one database: the first to get it
// migrates, the others then find nothing left to do. Its value is arbitrary
// ("dcvd" in ASCII, then 1); it only must not collide with the keys of other
// software sharing the database.
const postgresMigrationLock int64 = 0x6463766400000001

// postgresClusterMigrationLock serializes the migrations of
// postgresClusterMigrations as postgresMigrationLock does the shared ones.
// A key of its own keeps the two procedures independent: neither ever waits
// for the other, whatever each learns to do later.
const postgresClusterMigrationLock int64 = 0x6463766400000002

// postgresClusterMigrations are the schema changes, in order, of the tables
// only cluster mode uses, which only PostgreSQL has: they are versioned in
// cluster_schema_migrations, apart from storeMigrations, so that the
// versions of the schema both drivers share stay the same numbers for both.
// The rules of storeMigrations apply (never edit one that shipped; a newer
// database is refused). Unlike the shared tables, these hold times as
// TIMESTAMPTZ: they are compared with the database's clock
// (clock_timestamp()), in SQL, and microseconds are plenty for that.
var postgresClusterMigrations = [][]string{
	// 1: leases, heartbeats, deployments per node, acknowledged files.
	{
		// A row is never deleted: its token only grows, so that a
		// token is never handed out twice for one certificate.
		// released tells a released lease from an expired one, for
		// the error that says why a lease was lost.
		`CREATE TABLE leases (
			cert     TEXT NOT NULL PRIMARY KEY,
			holder   TEXT NOT NULL,
			token    BIGINT NOT NULL CHECK (token > 0),
			expires  TIMESTAMPTZ NOT NULL,
			released BOOLEAN NOT NULL DEFAULT FALSE
		)`,
		`CREATE TABLE nodes (
			name      TEXT NOT NULL PRIMARY KEY,
			instance  TEXT NOT NULL,
			version   TEXT NOT NULL,
			started   TIMESTAMPTZ NOT NULL,
			heartbeat TIMESTAMPTZ NOT NULL
		)`,
		`CREATE TABLE node_certificates (
			node    TEXT NOT NULL,
			cert    TEXT NOT NULL,
			serial  TEXT NOT NULL,
			updated TIMESTAMPTZ NOT NULL,
			error   TEXT NOT NULL,
			PRIMARY KEY (node, cert)
		)`,
		`CREATE TABLE dcv_acks (
			unique_id TEXT NOT NULL,
			node      TEXT NOT NULL,
			written   TIMESTAMPTZ NOT NULL,
			PRIMARY KEY (unique_id, node)
		)`,
	},
}

// postgresRetries bounds how often PutOrder runs its transaction again after
// losing a race to another transaction (see PutOrder).
const postgresRetries = 3

// OpenPostgres connects to the PostgreSQL database of dsn (a postgres:// URL
// or key=value connection string, as libpq takes; pool_* parameters set the
// pool, as pgxpool takes). It applies the migrations the database lacks,
// serialized across processes by an advisory lock, and refuses a database
// whose schema is newer than this code knows, rather than write to tables it
// does not understand. It refuses a server where synchronous_commit is off,
// under which a committed write may be lost. Errors never contain the DSN,
// which may hold a password.
func OpenPostgres(ctx context.Context, dsn string) (*PostgresStore, error) {
	if dsn == "" {
		return nil, errors.New("open PostgreSQL state database: no dsn")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts passwords only on a best-effort basis, and what
		// it wraps (a URL parse error) may quote the DSN whole.
		return nil, errors.New("open PostgreSQL state database: the dsn does not parse (not shown: it may hold a password)")
	}
	where := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))) + "/" + cfg.ConnConfig.Database
	cfg.AfterConnect = checkPostgresConn

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL state database %s: %w", where, err)
	}
	s := &PostgresStore{pool: pool, where: where, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open PostgreSQL state database %s: %w", where, err)
	}
	return s, nil
}

// SetClock replaces the clock that stamps orders' Created and Updated, for
// tests that need rows of a given age.
func (s *PostgresStore) SetClock(now func() time.Time) { s.now = now }

// checkPostgresConn refuses a connection on which a commit is not durable
// when it returns: an order's step must never go back, or a side effect
// could be repeated with a certificate at stake. "local", "on",
// "remote_write" and "remote_apply" all flush the local WAL first.
func checkPostgresConn(ctx context.Context, c *pgx.Conn) error {
	var v string
	if err := c.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v); err != nil {
		return fmt.Errorf("read synchronous_commit: %w", err)
	}
	if v == "off" {
		return errors.New("synchronous_commit is off: a committed write could be lost (set it to on for dcvd's role or database)")
	}
	return nil
}

// migrate applies the migrations the database lacks: the shared ones
// (storeMigrations), then cluster mode's (postgresClusterMigrations).
func (s *PostgresStore) migrate(ctx context.Context) error {
	if err := s.migrateTable(ctx, postgresMigrationLock, "schema_migrations", "schema",
		len(storeMigrations), func(v int) []string { return storeMigrations[v](postgresDialect) }); err != nil {
		return err
	}
	return s.migrateTable(ctx, postgresClusterMigrationLock, "cluster_schema_migrations", "cluster schema",
		len(postgresClusterMigrations), func(v int) []string { return postgresClusterMigrations[v] })
}

// migrateTable applies the migrations versioned in table that the database
// lacks, one transaction each: known is how many this code knows, stmts(v)
// the statements of the one after version v, and what names the schema in
// errors. Each transaction first takes the advisory lock, then creates
// table if needed and reads the version, so that processes starting
// together apply each migration once: the others wait for the lock, then
// see the new version.
func (s *PostgresStore) migrateTable(ctx context.Context, lock int64, table, what string, known int, stmts func(v int) []string) error {
	for {
		done := false
		err := s.tx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, lock); err != nil {
				return fmt.Errorf("take the %s migration lock: %w", what, err)
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+table+` (
				version INTEGER NOT NULL PRIMARY KEY,
				applied TEXT NOT NULL
			)`); err != nil {
				return fmt.Errorf("create %s: %w", table, err)
			}
			var v int
			if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM `+table).Scan(&v); err != nil {
				return fmt.Errorf("read %s version: %w", what, err)
			}
			switch {
			case v > known:
				return fmt.Errorf("%s version %d is newer than this dcvd knows (%d): run the dcvd that last wrote it, or a newer one", what, v, known)
			case v == known:
				done = true
				return nil
			}
			for _, stmt := range stmts(v) {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("%s migration %d: %w", what, v+1, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO `+table+` (version, applied) VALUES ($1, $2)`,
				v+1, formatTime(s.now())); err != nil {
				return fmt.Errorf("%s migration %d: record version: %w", what, v+1, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// tx runs fn in a transaction (READ COMMITTED, PostgreSQL's default) and
// commits it if fn returns nil.
func (s *PostgresStore) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		// Roll back even when ctx has ended (the usual reason fn
		// failed), but not forever on a dead server; pgx closes the
		// connection if that fails, which rolls back too.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = tx.Rollback(rctx)
		cancel()
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// pgQuerier is what both the pool and a transaction offer: a write runs on
// either, depending on whether it is fenced.
type pgQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// fenceFunc runs first in the transaction of a fenced write and vetoes it
// by returning an error (see PostgresStore.Fenced).
type fenceFunc func(ctx context.Context, tx pgx.Tx) error

// write runs fn on the pool, a statement on its own; with a fence, in a
// transaction after the fence.
func (s *PostgresStore) write(ctx context.Context, fence fenceFunc, fn func(q pgQuerier) error) error {
	if fence == nil {
		return fn(s.pool)
	}
	return s.tx(ctx, func(tx pgx.Tx) error {
		if err := fence(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
}

// Close closes the pool's connections; calls made after Close fail.
func (s *PostgresStore) Close() error {
	s.pool.Close()
	return nil
}

// Certificate implements Store.
func (s *PostgresStore) Certificate(ctx context.Context, name string) (*Certificate, error) {
	c, err := scanCertificate(s.pool.QueryRow(ctx, `SELECT `+certColumns+` FROM certificates WHERE name = $1`, name))
	if errors.Is(err, sql.ErrNoRows) { // pgx.ErrNoRows wraps it
		return nil, fmt.Errorf("certificate %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate %q: %w", name, err)
	}
	return c, nil
}

// Certificates implements Store. COLLATE "C" orders by bytes, as SQLite
// does, whatever the database's collation.
func (s *PostgresStore) Certificates(ctx context.Context) ([]*Certificate, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+certColumns+` FROM certificates ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read certificates", scanCertificate)
}

// PutCertificate implements Store.
func (s *PostgresStore) PutCertificate(ctx context.Context, c *Certificate) error {
	return s.putCertificate(ctx, c, nil)
}

// putCertificate is PutCertificate, fenced when fence is not nil.
func (s *PostgresStore) putCertificate(ctx context.Context, c *Certificate, fence fenceFunc) error {
	if c == nil || c.Name == "" {
		return errors.New("put certificate: no name")
	}
	names, err := json.Marshal(c.Names)
	if err != nil {
		return fmt.Errorf("put certificate %q: %w", c.Name, err)
	}
	err = s.write(ctx, fence, func(q pgQuerier) error {
		_, err := q.Exec(ctx, `INSERT INTO certificates (`+certColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (name) DO UPDATE SET
				serial = excluded.serial, names = excluded.names,
				not_before = excluded.not_before, not_after = excluded.not_after,
				cert_pem = excluded.cert_pem, chain_pem = excluded.chain_pem,
				key_file = excluded.key_file, unique_id = excluded.unique_id,
				deployed_at = excluded.deployed_at, key_sealed = excluded.key_sealed`,
			c.Name, c.Serial, string(names), formatTime(c.NotBefore), formatTime(c.NotAfter),
			c.CertPEM, c.ChainPEM, c.KeyFile, c.UniqueID, formatTime(c.DeployedAt), c.KeySealed)
		return err
	})
	if err != nil {
		return fmt.Errorf("put certificate %q: %w", c.Name, err)
	}
	return nil
}

// Order implements Store.
func (s *PostgresStore) Order(ctx context.Context, uniqueID string) (*Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE unique_id = $1`, uniqueID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("order %q: %w", uniqueID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read order %q: %w", uniqueID, err)
	}
	return o, nil
}

// OrderByToken implements Store.
func (s *PostgresStore) OrderByToken(ctx context.Context, token string) (*Order, error) {
	if token == "" {
		return nil, fmt.Errorf("order by empty callback token: %w", ErrNotFound)
	}
	o, err := scanOrder(s.pool.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE callback_token = $1`, token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("order by callback token: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read order by callback token: %w", err)
	}
	return o, nil
}

// ActiveOrder implements Store.
func (s *PostgresStore) ActiveOrder(ctx context.Context, cert string) (*Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders
		WHERE cert = $1 AND step <> $2 AND step <> $3`, cert, string(StepDone), string(StepFailed)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("order in flight of %q: %w", cert, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read order in flight of %q: %w", cert, err)
	}
	return o, nil
}

// ActiveOrders implements Store. COLLATE "C" orders the fixed-width time
// text by bytes, which is by time, whatever the database's collation.
func (s *PostgresStore) ActiveOrders(ctx context.Context) ([]*Order, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+orderColumns+` FROM orders
		WHERE step <> $1 AND step <> $2 ORDER BY created COLLATE "C", unique_id COLLATE "C"`,
		string(StepDone), string(StepFailed))
	if err != nil {
		return nil, fmt.Errorf("read orders in flight: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read orders in flight", scanOrder)
}

// PutOrder implements Store.
//
// Unlike SQLite's, PostgreSQL's transactions run side by side (READ
// COMMITTED), so the checks PutOrder makes before writing can be overtaken
// by another process. The stored row is locked (FOR UPDATE) for the whole
// transaction, so that a concurrent write of the same order waits and the
// checks see its result; a concurrent insert that the checks could not see
// yet makes the write fail on a unique index (orders_one_active, the
// callback token, the primary key), and the transaction is run again, when
// the checks see the row that won and refuse with the usual error.
func (s *PostgresStore) PutOrder(ctx context.Context, o *Order) error {
	return s.putOrder(ctx, o, nil)
}

// putOrder is PutOrder, fenced when fence is not nil: the fence runs first
// in every try's transaction.
func (s *PostgresStore) putOrder(ctx context.Context, o *Order, fence fenceFunc) error {
	data, err := checkedOrderData(o)
	if err != nil {
		return err
	}
	var token *string // NULL when empty: see the orders table
	if o.CallbackToken != "" {
		token = &o.CallbackToken
	}
	var now, created time.Time
	for try := 0; ; try++ {
		now = s.now().UTC()
		err = s.tx(ctx, func(tx pgx.Tx) error {
			if fence != nil {
				if err := fence(ctx, tx); err != nil {
					return err
				}
			}
			var err error
			created, err = s.putOrderTx(ctx, tx, o, token, data, now)
			return err
		})
		if err == nil || try >= postgresRetries || !lostRace(err) {
			break
		}
	}
	if err != nil {
		if constraintOf(err) == "orders_one_active" {
			// Still losing after the retries (a writer that is not
			// PutOrder keeps inserting): the database said it all.
			err = fmt.Errorf("another order is in flight: %w", ErrActiveOrder)
		}
		return fmt.Errorf("put order %s of %q (step %s): %w", o.UniqueID, o.Cert, o.Step, err)
	}
	o.Created, o.Updated = created, now
	return nil
}

// putOrderTx is one try of PutOrder's transaction; it returns the order's
// Created.
func (s *PostgresStore) putOrderTx(ctx context.Context, tx pgx.Tx, o *Order, token *string, data string, now time.Time) (time.Time, error) {
	var (
		cert, step, createdText string
		created                 time.Time
	)
	err := tx.QueryRow(ctx, `SELECT cert, step, created FROM orders WHERE unique_id = $1 FOR UPDATE`, o.UniqueID).
		Scan(&cert, &step, &createdText)
	insert := errors.Is(err, sql.ErrNoRows)
	if err != nil && !insert {
		return created, err
	}
	if insert {
		created = now
	} else if created, err = checkStoredOrder(o, cert, step, createdText); err != nil {
		return created, err
	}
	if !o.Step.Terminal() {
		var other string
		err := tx.QueryRow(ctx, `SELECT unique_id FROM orders
			WHERE cert = $1 AND unique_id <> $2 AND step <> $3 AND step <> $4`,
			o.Cert, o.UniqueID, string(StepDone), string(StepFailed)).Scan(&other)
		if err == nil {
			return created, fmt.Errorf("order %s is in flight: %w", other, ErrActiveOrder)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return created, err
		}
	}
	if token != nil {
		var other string
		err := tx.QueryRow(ctx, `SELECT unique_id FROM orders WHERE callback_token = $1 AND unique_id <> $2`,
			*token, o.UniqueID).Scan(&other)
		if err == nil {
			return created, fmt.Errorf("order %s has the same callback token", other)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return created, err
		}
	}
	if insert {
		_, err = tx.Exec(ctx, `INSERT INTO orders
			(unique_id, cert, service_id, step, callback_token, data, created, updated)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			o.UniqueID, o.Cert, o.ServiceID, string(o.Step), token, data, formatTime(created), formatTime(now))
	} else {
		_, err = tx.Exec(ctx, `UPDATE orders SET
			service_id = $1, step = $2, callback_token = $3, data = $4, updated = $5
			WHERE unique_id = $6`,
			o.ServiceID, string(o.Step), token, data, formatTime(now), o.UniqueID)
	}
	return created, err
}

// lostRace reports whether err is PostgreSQL refusing a transaction because
// another one got there first: a unique violation, a serialization failure
// or a deadlock. Running the transaction again then gives the right answer.
func lostRace(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "23505", "40001", "40P01":
		return true
	}
	return false
}

// constraintOf returns the name of the constraint err violates, or "".
func constraintOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.ConstraintName
	}
	return ""
}

// AddAttempt implements Store. INSERT … ON CONFLICT is atomic in PostgreSQL
// too: two processes adding the same unique_id at once leave one row.
func (s *PostgresStore) AddAttempt(ctx context.Context, a Attempt) error {
	return s.addAttempt(ctx, a, nil)
}

// addAttempt is AddAttempt, fenced when fence is not nil.
func (s *PostgresStore) addAttempt(ctx context.Context, a Attempt, fence fenceFunc) error {
	switch {
	case a.Cert == "":
		return fmt.Errorf("add attempt %s: no certificate name", a.UniqueID)
	case !a.Outcome.Terminal():
		return fmt.Errorf("add attempt %s of %q: outcome %q is not terminal", a.UniqueID, a.Cert, a.Outcome)
	case math.IsNaN(a.Cost) || math.IsInf(a.Cost, 0):
		return fmt.Errorf("add attempt %s of %q: cost %v is not a number", a.UniqueID, a.Cert, a.Cost)
	}
	var uid *string // NULL when empty: see the attempts table
	if a.UniqueID != "" {
		uid = &a.UniqueID
	}
	// The WHERE of DO UPDATE leaves a row of another certificate alone;
	// nothing changed then tells us so.
	var tag pgconn.CommandTag
	err := s.write(ctx, fence, func(q pgQuerier) error {
		var err error
		tag, err = q.Exec(ctx, `INSERT INTO attempts (`+attemptColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (unique_id) DO UPDATE SET
				started = excluded.started, finished = excluded.finished,
				outcome = excluded.outcome, cost = excluded.cost,
				serial = excluded.serial, error = excluded.error
			WHERE attempts.cert = excluded.cert`,
			a.Cert, uid, formatTime(a.Started), formatTime(a.Finished), string(a.Outcome), a.Cost, a.Serial, a.Error)
		return err
	})
	if err != nil {
		return fmt.Errorf("add attempt %s of %q: %w", a.UniqueID, a.Cert, err)
	}
	if tag.RowsAffected() != 1 {
		return fmt.Errorf("add attempt %s of %q: that unique_id is recorded for another certificate", a.UniqueID, a.Cert)
	}
	return nil
}

// Attempts implements Store.
func (s *PostgresStore) Attempts(ctx context.Context, cert string, limit int) ([]Attempt, error) {
	q := `SELECT ` + attemptColumns + ` FROM attempts WHERE cert = $1 ORDER BY id DESC`
	args := []any{cert}
	if limit > 0 {
		q += ` LIMIT $2`
		args = append(args, limit)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read attempts of %q: %w", cert, err)
	}
	defer rows.Close()
	return collectRows(rows, fmt.Sprintf("read attempts of %q", cert), scanAttempt)
}

// RecentAttempts implements Store. The database keeps limit per
// certificate (ROW_NUMBER), so that a long history does not cross the
// network.
func (s *PostgresStore) RecentAttempts(ctx context.Context, limit int) (map[string][]Attempt, error) {
	q := `SELECT id, ` + attemptColumns + ` FROM attempts`
	var args []any
	if limit > 0 {
		q = `SELECT id, ` + attemptColumns + ` FROM (
				SELECT id, ` + attemptColumns + `, ROW_NUMBER() OVER (PARTITION BY cert ORDER BY id DESC) AS n
				FROM attempts) AS recent
			WHERE n <= $1`
		args = []any{limit}
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read the recent attempts: %w", err)
	}
	defer rows.Close()
	got, err := collectRows(rows, "read the recent attempts", scanRankedAttempt)
	if err != nil {
		return nil, err
	}
	return attemptsByCert(got), nil
}

// CertificateSummaries implements Store.
func (s *PostgresStore) CertificateSummaries(ctx context.Context) ([]*Certificate, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+certSummaryColumns+` FROM certificates ORDER BY name COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read certificates", scanCertificate)
}

// CertificateSummaries implements Store: the store's own.
func (f *fencedStore) CertificateSummaries(ctx context.Context) ([]*Certificate, error) {
	return f.s.CertificateSummaries(ctx)
}

// RecentAttempts implements Store: the store's own, as fencedStore's other
// reads (store_cluster.go).
func (f *fencedStore) RecentAttempts(ctx context.Context, limit int) (map[string][]Attempt, error) {
	return f.s.RecentAttempts(ctx, limit)
}

// TotalCost implements Store.
func (s *PostgresStore) TotalCost(ctx context.Context, cert string) (float64, error) {
	var total float64
	if err := s.pool.QueryRow(ctx, `SELECT
		COALESCE((SELECT SUM(cost) FROM attempts WHERE cert = $1), 0) +
		COALESCE((SELECT cost FROM pruned_costs WHERE cert = $1), 0)`, cert).Scan(&total); err != nil {
		return 0, fmt.Errorf("read total cost of %q: %w", cert, err)
	}
	return total, nil
}

// Generations implements Store. COLLATE "C" orders the fixed-width time
// text by bytes, which is by time, as SQLite does.
func (s *PostgresStore) Generations(ctx context.Context, limit int) (map[string][]*Order, error) {
	if limit <= 0 {
		limit = math.MaxInt32
	}
	rows, err := s.pool.Query(ctx, `SELECT o.unique_id, o.cert, o.step,
			COALESCE(o.data::json ->> 'key_file', ''), o.created, o.updated
		FROM (SELECT unique_id, cert,
				ROW_NUMBER() OVER (PARTITION BY cert
					ORDER BY updated COLLATE "C" DESC, unique_id COLLATE "C" DESC) AS n
			FROM orders WHERE step = 'done') AS g
		JOIN orders AS o ON o.unique_id = g.unique_id
		WHERE g.n <= $1 ORDER BY g.cert COLLATE "C", g.n`, limit)
	if err != nil {
		return nil, fmt.Errorf("read the generations: %w", err)
	}
	defer rows.Close()
	got, err := collectRows(rows, "read the generations", scanGeneration)
	if err != nil {
		return nil, err
	}
	return generationsByCert(got), nil
}

// postgresPruneLock is the key of the advisory lock a PruneHistory
// transaction tries to take: while one process prunes a table, the others
// skip it rather than wait for, or deadlock with, its row locks. The
// deletes are harmless when run twice (a deleted row is not deleted, nor
// its cost carried, again); the lock only spares the work.
const postgresPruneLock int64 = 0x6463766400000003

// PruneHistory implements Store. Each table is one statement in a
// transaction that first tries the prune lock; a process that does not get
// it deletes nothing (another one is at it). The attempts are deleted and
// their costs carried in one statement: RETURNING gives the rows this
// statement deleted, so a row another process deleted first is not
// carried twice.
func (s *PostgresStore) PruneHistory(ctx context.Context, p HistoryPolicy) (Pruned, error) {
	perCert, before, limit := p.bounds()
	var out Pruned
	err := s.prune(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `WITH doomed AS (
				DELETE FROM attempts WHERE id IN (
					SELECT id FROM (
						SELECT id, finished, ROW_NUMBER() OVER (PARTITION BY cert ORDER BY id DESC) AS n
						FROM attempts) AS ranked
					WHERE n > $1 AND (n > $2 OR finished COLLATE "C" < $3) ORDER BY id LIMIT $4)
				RETURNING cert, cost
			), carried AS (
				INSERT INTO pruned_costs (cert, cost)
				SELECT cert, SUM(cost) FROM doomed GROUP BY cert
				ON CONFLICT (cert) DO UPDATE SET cost = pruned_costs.cost + excluded.cost
			)
			SELECT count(*) FROM doomed`, KeptAttempts, perCert, before, limit).Scan(&out.Attempts)
	})
	if err != nil {
		return Pruned{}, fmt.Errorf("prune the attempts: %w", err)
	}
	err = s.prune(ctx, func(tx pgx.Tx) error {
		// The step again in the outer WHERE: it is checked on the row
		// as it is when deleted, whatever the selection read.
		tag, err := tx.Exec(ctx, `DELETE FROM orders WHERE unique_id IN (
				SELECT unique_id FROM (
					SELECT unique_id, step, updated,
						ROW_NUMBER() OVER (PARTITION BY cert
							ORDER BY updated COLLATE "C" DESC, unique_id COLLATE "C" DESC) AS n,
						ROW_NUMBER() OVER (PARTITION BY cert, step
							ORDER BY updated COLLATE "C" DESC, unique_id COLLATE "C" DESC) AS k
					FROM orders WHERE step = 'done' OR step = 'failed') AS ranked
				WHERE (n > $1 OR updated COLLATE "C" < $2) AND NOT (step = 'done' AND k <= $3)
					AND unique_id NOT IN (SELECT unique_id FROM certificates)
				ORDER BY unique_id LIMIT $4)
			AND (step = 'done' OR step = 'failed')`, perCert, before, KeptGenerations, limit)
		out.Orders = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return out, fmt.Errorf("prune the orders: %w", err)
	}
	return out, nil
}

// prune runs fn in a transaction if it gets the prune lock; without it,
// it does nothing.
func (s *PostgresStore) prune(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, postgresPruneLock).Scan(&got); err != nil {
			return fmt.Errorf("try the prune lock: %w", err)
		}
		if !got {
			return nil
		}
		return fn(tx)
	})
}

// Generations implements Store: the store's own.
func (f *fencedStore) Generations(ctx context.Context, limit int) (map[string][]*Order, error) {
	return f.s.Generations(ctx, limit)
}

// PruneHistory implements Store: the store's own, unfenced. It deletes
// only ended history, which no lease holder writes, and it is not one
// certificate's.
func (f *fencedStore) PruneHistory(ctx context.Context, p HistoryPolicy) (Pruned, error) {
	return f.s.PruneHistory(ctx, p)
}
