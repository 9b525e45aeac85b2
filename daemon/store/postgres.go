package store

// This file holds PostgresStore: connecting, migrating (the shared schema
// and cluster mode's) and its transactions. Its reads are reader's
// (reader.go), its writes are in postgres_write.go, its ClusterStore
// methods in postgres_cluster.go and its fenced view in postgres_fenced.go.

import (
	"context"
	"errors"
	"fmt"
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
// It uses pgx's own pool (pgxpool) rather than database/sql: the reads and
// the shared steps of the writes run over small adapters of either
// (querier, execer), so database/sql would share no more code, while pgx
// natively gives typed server errors (the SQLSTATE and the
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
// It is the ClusterStore of cluster mode: see postgres_cluster.go.
type PostgresStore struct {
	// reader gives the reads, shared with SQLiteStore.
	reader
	pool *pgxpool.Pool
	// where names the server and database in errors; it never holds the
	// password.
	where string
	// now is the clock of Created and Updated; tests replace it.
	now func() time.Time
	// channel is the LISTEN/NOTIFY channel of the store's schema.
	channel string
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
	s := &PostgresStore{reader: reader{q: pgxQuerier{pool}, d: postgresDialect}, pool: pool, where: where, now: time.Now}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open PostgreSQL state database %s: %w", where, err)
	}
	var schema string
	if err := pool.QueryRow(ctx, `SELECT coalesce(current_schema(), '')`).Scan(&schema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open PostgreSQL state database %s: its schema: %w", where, err)
	}
	s.channel = channelFor(schema)
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
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Close closes the pool's connections; calls made after Close fail.
func (s *PostgresStore) Close() error {
	s.pool.Close()
	return nil
}

// pgxQuerier is the querier of the shared reads over pgx.
type pgxQuerier struct{ q pgQuerier }

func (q pgxQuerier) query(ctx context.Context, s string, args ...any) (rows, error) {
	rs, err := q.q.Query(ctx, s, args...)
	if err != nil {
		return nil, err
	}
	return rs, nil
}

func (q pgxQuerier) queryRow(ctx context.Context, s string, args ...any) scanner {
	return q.q.QueryRow(ctx, s, args...)
}

// pgxExecer is the execer of the shared write steps over pgx.
type pgxExecer struct{ q pgQuerier }

func (e pgxExecer) queryRow(ctx context.Context, s string, args ...any) scanner {
	return e.q.QueryRow(ctx, s, args...)
}

func (e pgxExecer) exec(ctx context.Context, s string, args ...any) error {
	_, err := e.q.Exec(ctx, s, args...)
	return err
}
