package store

// This file holds SQLiteStore: opening the database file (its mode, the
// pragmas), migrating it and its transactions. Its reads are reader's
// (reader.go), its writes are in sqlite_write.go.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	// The pure-Go SQLite driver, registered as "sqlite": dcvd must build
	// without cgo.
	_ "modernc.org/sqlite"
)

// SQLiteStore is the Store kept in one SQLite database file (WAL mode) under
// the daemon's state directory. Open it with OpenSQLite.
//
// It uses one database connection. SQLite lets only one connection write at
// a time anyway, and a single connection means the process never competes
// with itself for the write lock (no SQLITE_BUSY between goroutines, no
// deadlock between two transactions that read and then write): the
// goroutines take turns, each call waiting for the connection under its own
// context. Reads wait behind writes, which costs nothing at dcvd's scale (a
// handful of rows per certificate). Another process on the same file, such
// as "dcvd status" while the daemon runs, is a separate connection: WAL lets
// it read while the daemon writes, and writes wait up to busy_timeout (5s)
// for each other, every transaction taking the write lock at BEGIN
// (_txlock=immediate) so that waiting is all they ever do.
type SQLiteStore struct {
	// reader gives the reads, shared with PostgresStore.
	reader
	db   *sql.DB
	path string
	// now is the clock of Created and Updated; tests replace it.
	now func() time.Time
}

var _ Store = (*SQLiteStore)(nil)

// sqlitePragmas are applied by the driver to the connection when it opens.
// synchronous=FULL makes a commit durable before it returns (NORMAL, usual
// with WAL, may lose the last commits on power loss): an order's step must
// never go back, or a side effect could be repeated with a certificate at
// stake.
var sqlitePragmas = []string{
	"busy_timeout(5000)",
	"journal_mode(WAL)",
	"synchronous(FULL)",
	"foreign_keys(1)",
}

// OpenSQLite opens the state database at path, creating it (mode 0600) if it
// does not exist; its directory must exist. It refuses a file that group or
// others may access, since the database holds the orders' callback tokens
// and CSRs. It applies the migrations the database lacks and refuses a
// database whose schema is newer than this code knows, rather than write to
// tables it does not understand.
func OpenSQLite(ctx context.Context, path string) (*SQLiteStore, error) {
	return openSQLite(ctx, path, true)
}

// OpenSQLiteExisting is OpenSQLite for callers that only read, such as
// "dcvd status": it never creates the database, and returns an error
// matching fs.ErrNotExist when there is none, so that a command run before
// the daemon ever ran creates nothing (a file created by root would lock
// the daemon's user out). An existing database is opened as OpenSQLite
// does, migrations included.
func OpenSQLiteExisting(ctx context.Context, path string) (*SQLiteStore, error) {
	return openSQLite(ctx, path, false)
}

func openSQLite(ctx context.Context, path string, create bool) (*SQLiteStore, error) {
	if path == "" {
		return nil, errors.New("open state database: no path")
	}
	// Create the file ourselves: SQLite would create it with 0644 less
	// the umask, and it copies the database file's mode to its -wal and
	// -shm files.
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open state database: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open state database: %w", err)
	}
	if err := checkPrivateFiles(path); err != nil {
		return nil, fmt.Errorf("open state database: %w", err)
	}

	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return nil, fmt.Errorf("open state database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	// Keep the connection: reopening it would cost the pragmas again
	// and, with WAL, a recovery scan.
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)

	s := &SQLiteStore{reader: reader{q: sqlQuerier{db}, d: sqliteDialect}, db: db, path: path, now: time.Now}
	if err := s.init(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open state database %s: %w", path, err)
	}
	return s, nil
}

// sqliteDSN builds the driver's URI for path. SQLite decodes %HH in a URI's
// path, so '%', '?' and '#', which would end the path or be decoded, are
// escaped.
func sqliteDSN(path string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	var q strings.Builder
	for i, p := range sqlitePragmas {
		if i > 0 {
			q.WriteByte('&')
		}
		q.WriteString("_pragma=")
		q.WriteString(p)
	}
	return "file:" + esc + "?" + q.String() + "&_txlock=immediate"
}

// init checks that the pragmas took (journal_mode=WAL silently stays in the
// old mode on file systems without shared memory), migrates, and checks the
// modes of the files SQLite created meanwhile.
func (s *SQLiteStore) init(ctx context.Context) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("read journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not wal: does the file system support it?", mode)
	}
	var sync int
	if err := s.db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		return fmt.Errorf("read synchronous: %w", err)
	}
	if sync != 2 {
		return fmt.Errorf("synchronous is %d, not 2 (FULL)", sync)
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	return checkPrivateFiles(s.path)
}

// migrate applies the migrations the database lacks, one transaction each.
// Each transaction reads the version again under the write lock, so that two
// processes opening a new database at once apply each migration once.
func (s *SQLiteStore) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER NOT NULL PRIMARY KEY,
		applied TEXT NOT NULL
	)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for {
		done := false
		err := s.tx(ctx, func(tx *sql.Tx) error {
			var v int
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
				return fmt.Errorf("read schema version: %w", err)
			}
			switch {
			case v > len(storeMigrations):
				return fmt.Errorf("schema version %d is newer than this dcvd knows (%d): run the dcvd that last wrote it, or a newer one", v, len(storeMigrations))
			case v == len(storeMigrations):
				done = true
				return nil
			}
			for _, stmt := range storeMigrations[v](sqliteDialect) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d: %w", v+1, err)
				}
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied) VALUES (?, ?)`,
				v+1, formatTime(s.now())); err != nil {
				return fmt.Errorf("migration %d: record version: %w", v+1, err)
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

// checkPrivateFiles refuses the database file, or its -wal or -shm file if
// present, when it is not a regular file or group or others have any access
// to it.
func checkPrivateFiles(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && p != path {
			continue
		}
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", p)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return fmt.Errorf("%s has mode %#o: it holds callback tokens and must be private to dcvd's user (chmod 600 %s)", p, perm, p)
		}
	}
	return nil
}

// tx runs fn in a transaction and commits it if fn returns nil.
func (s *SQLiteStore) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Close closes the database. SQLite checkpoints the WAL into the database
// file and removes the -wal and -shm files when the last connection closes.
func (s *SQLiteStore) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close state database %s: %w", s.path, err)
	}
	return nil
}

// SetClock replaces the clock that stamps orders' Created and Updated, for
// tests that need rows of a given age.
func (s *SQLiteStore) SetClock(now func() time.Time) { s.now = now }

// DB is the database handle, for benchmarks that seed rows in bulk with
// SQL rather than through hundreds of thousands of calls.
func (s *SQLiteStore) DB() *sql.DB { return s.db }

// sqlQuerier is the querier of the shared reads over database/sql.
type sqlQuerier struct{ db *sql.DB }

func (q sqlQuerier) query(ctx context.Context, s string, args ...any) (rows, error) {
	rs, err := q.db.QueryContext(ctx, s, args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rs}, nil
}

func (q sqlQuerier) queryRow(ctx context.Context, s string, args ...any) scanner {
	return q.db.QueryRowContext(ctx, s, args...)
}

// sqlRows is *sql.Rows as rows: the error of Close, which only repeats
// that of Next or Err for a read, is dropped.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }
