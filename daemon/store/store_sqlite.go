package store

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"strings"
	"time"

	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"

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

	s := &SQLiteStore{db: db, path: path, now: time.Now}
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

// timeLayout is RFC 3339 in UTC with exactly nine fractional digits: unlike
// RFC3339Nano, whose trailing zeros are trimmed, its text sorts as the times
// do, so that ORDER BY on a time column is ORDER BY time.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// SetClock replaces the clock that stamps orders' Created and Updated, for
// tests that need rows of a given age.
func (s *SQLiteStore) SetClock(now func() time.Time) { s.now = now }

// DB is the database handle, for benchmarks that seed rows in bulk with
// SQL rather than through hundreds of thousands of calls.
func (s *SQLiteStore) DB() *sql.DB { return s.db }

// formatTime formats t for a time column; the zero time is "", so that "not
// set" stays distinguishable and round-trips.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

// parseTime reverses formatTime. The time is returned in UTC.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad time %q: %w", s, err)
	}
	return t.UTC(), nil
}

// knownSteps are the values of Step PutOrder accepts: an order whose step the
// state machine does not know could never be resumed.
var knownSteps = map[Step]bool{
	StepNew: true, StepSubmitted: true, StepPublishing: true, StepPublished: true,
	StepVisible: true, StepRechecked: true, StepIssued: true, StepDeployed: true,
	StepReloaded: true, StepDone: true, StepFailed: true,
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// Certificate implements Store.
func (s *SQLiteStore) Certificate(ctx context.Context, name string) (*Certificate, error) {
	c, err := scanCertificate(s.db.QueryRowContext(ctx, `SELECT `+certColumns+` FROM certificates WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("certificate %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate %q: %w", name, err)
	}
	return c, nil
}

// Certificates implements Store.
func (s *SQLiteStore) Certificates(ctx context.Context) ([]*Certificate, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+certColumns+` FROM certificates ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read certificates", scanCertificate)
}

const certColumns = `name, serial, names, not_before, not_after, cert_pem, chain_pem, key_file, unique_id, deployed_at, key_sealed`

// certSummaryColumns are certColumns with the PEMs and the sealed key left
// out (empty), for scanCertificate.
const certSummaryColumns = `name, serial, names, not_before, not_after, '', '', key_file, unique_id, deployed_at, ''`

// CertificateSummaries implements Store.
func (s *SQLiteStore) CertificateSummaries(ctx context.Context) ([]*Certificate, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+certSummaryColumns+` FROM certificates ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read certificates: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read certificates", scanCertificate)
}

func scanCertificate(row scanner) (*Certificate, error) {
	var (
		c                            Certificate
		names, nb, na, deployedAt    string
		errNB, errNA, errDep, errNms error
	)
	if err := row.Scan(&c.Name, &c.Serial, &names, &nb, &na, &c.CertPEM, &c.ChainPEM, &c.KeyFile, &c.UniqueID, &deployedAt, &c.KeySealed); err != nil {
		return nil, err
	}
	// A list of strings has no fields to refuse and Unmarshal refuses
	// trailing data: decodeJSON's decoder would cost a sweep ~10% more.
	errNms = json.Unmarshal([]byte(names), &c.Names)
	c.NotBefore, errNB = parseTime(nb)
	c.NotAfter, errNA = parseTime(na)
	c.DeployedAt, errDep = parseTime(deployedAt)
	if err := errors.Join(errNms, errNB, errNA, errDep); err != nil {
		return nil, fmt.Errorf("certificate %q: %w", c.Name, err)
	}
	return &c, nil
}

// PutCertificate implements Store.
func (s *SQLiteStore) PutCertificate(ctx context.Context, c *Certificate) error {
	if c == nil || c.Name == "" {
		return errors.New("put certificate: no name")
	}
	names, err := json.Marshal(c.Names)
	if err != nil {
		return fmt.Errorf("put certificate %q: %w", c.Name, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO certificates (`+certColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET
			serial = excluded.serial, names = excluded.names,
			not_before = excluded.not_before, not_after = excluded.not_after,
			cert_pem = excluded.cert_pem, chain_pem = excluded.chain_pem,
			key_file = excluded.key_file, unique_id = excluded.unique_id,
			deployed_at = excluded.deployed_at, key_sealed = excluded.key_sealed`,
		c.Name, c.Serial, string(names), formatTime(c.NotBefore), formatTime(c.NotAfter),
		c.CertPEM, c.ChainPEM, c.KeyFile, c.UniqueID, formatTime(c.DeployedAt), c.KeySealed)
	if err != nil {
		return fmt.Errorf("put certificate %q: %w", c.Name, err)
	}
	return nil
}

const orderColumns = `unique_id, cert, service_id, step, COALESCE(callback_token, ''), data, created, updated`

// Order implements Store.
func (s *SQLiteStore) Order(ctx context.Context, uniqueID string) (*Order, error) {
	o, err := scanOrder(s.db.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE unique_id = ?`, uniqueID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("order %q: %w", uniqueID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read order %q: %w", uniqueID, err)
	}
	return o, nil
}

// OrderByToken implements Store.
func (s *SQLiteStore) OrderByToken(ctx context.Context, token string) (*Order, error) {
	if token == "" {
		return nil, fmt.Errorf("order by empty callback token: %w", ErrNotFound)
	}
	o, err := scanOrder(s.db.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders WHERE callback_token = ?`, token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("order by callback token: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read order by callback token: %w", err)
	}
	return o, nil
}

// ActiveOrder implements Store.
func (s *SQLiteStore) ActiveOrder(ctx context.Context, cert string) (*Order, error) {
	o, err := scanOrder(s.db.QueryRowContext(ctx, `SELECT `+orderColumns+` FROM orders
		WHERE cert = ? AND step <> ? AND step <> ?`, cert, StepDone, StepFailed))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("order in flight of %q: %w", cert, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read order in flight of %q: %w", cert, err)
	}
	return o, nil
}

// ActiveOrders implements Store.
func (s *SQLiteStore) ActiveOrders(ctx context.Context) ([]*Order, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+orderColumns+` FROM orders
		WHERE step <> ? AND step <> ? ORDER BY created, unique_id`, StepDone, StepFailed)
	if err != nil {
		return nil, fmt.Errorf("read orders in flight: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read orders in flight", scanOrder)
}

// PutOrder implements Store.
func (s *SQLiteStore) PutOrder(ctx context.Context, o *Order) error {
	data, err := checkedOrderData(o)
	if err != nil {
		return err
	}
	var token any // NULL when empty: see the orders table
	if o.CallbackToken != "" {
		token = o.CallbackToken
	}
	now := s.now().UTC()
	var created time.Time
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var cert, step, createdText string
		err := tx.QueryRowContext(ctx, `SELECT cert, step, created FROM orders WHERE unique_id = ?`, o.UniqueID).
			Scan(&cert, &step, &createdText)
		insert := errors.Is(err, sql.ErrNoRows)
		if err != nil && !insert {
			return err
		}
		if insert {
			created = now
		} else if created, err = checkStoredOrder(o, cert, step, createdText); err != nil {
			return err
		}
		if !o.Step.Terminal() {
			var other string
			err := tx.QueryRowContext(ctx, `SELECT unique_id FROM orders
				WHERE cert = ? AND unique_id <> ? AND step <> ? AND step <> ?`,
				o.Cert, o.UniqueID, StepDone, StepFailed).Scan(&other)
			if err == nil {
				return fmt.Errorf("order %s is in flight: %w", other, ErrActiveOrder)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		if token != nil {
			var other string
			err := tx.QueryRowContext(ctx, `SELECT unique_id FROM orders WHERE callback_token = ? AND unique_id <> ?`,
				token, o.UniqueID).Scan(&other)
			if err == nil {
				return fmt.Errorf("order %s has the same callback token", other)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		if insert {
			_, err = tx.ExecContext(ctx, `INSERT INTO orders
				(unique_id, cert, service_id, step, callback_token, data, created, updated)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				o.UniqueID, o.Cert, o.ServiceID, string(o.Step), token, data, formatTime(created), formatTime(now))
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE orders SET
				service_id = ?, step = ?, callback_token = ?, data = ?, updated = ?
				WHERE unique_id = ?`,
				o.ServiceID, string(o.Step), token, data, formatTime(now), o.UniqueID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("put order %s of %q (step %s): %w", o.UniqueID, o.Cert, o.Step, err)
	}
	o.Created, o.Updated = created, now
	return nil
}

func scanOrder(row scanner) (*Order, error) {
	var (
		o                            Order
		step, data, created, updated string
	)
	if err := row.Scan(&o.UniqueID, &o.Cert, &o.ServiceID, &step, &o.CallbackToken, &data, &created, &updated); err != nil {
		return nil, err
	}
	o.Step = Step(step)
	var errC, errU error
	o.Created, errC = parseTime(created)
	o.Updated, errU = parseTime(updated)
	if err := errors.Join(errC, errU, decodeOrderData(data, &o)); err != nil {
		return nil, fmt.Errorf("order %s: %w", o.UniqueID, err)
	}
	return &o, nil
}

// orderData is the JSON in orders.data: the fields of Order that are not
// columns. It is dcvd's on-disk format, so its names are fixed by tags
// rather than by Go field names, and the types of other packages it holds
// are either made for persistence (providers.Record, httpchallenge.Written
// carry JSON tags) or mirrored here.
type orderData struct {
	Names              []string                `json:"names"`
	DomainDCV          map[string]string       `json:"domain_dcv"`
	KeyType            string                  `json:"key_type"`
	KeyFile            string                  `json:"key_file"`
	KeySealed          string                  `json:"key_sealed"` // since schema version 2
	CSR                string                  `json:"csr"`
	AllowDomainRemoval bool                    `json:"allow_domain_removal"`
	Instructions       []instructionData       `json:"instructions"`
	DNSRecords         []providers.Record      `json:"dns_records"`
	Files              []httpchallenge.Written `json:"files"`
	Cost               float64                 `json:"cost"`
	CertPEM            string                  `json:"cert_pem"`
	ChainPEM           string                  `json:"chain_pem"`
	Serial             string                  `json:"serial"`
	NotBefore          string                  `json:"not_before"`
	NotAfter           string                  `json:"not_after"`
	Attempts           int                     `json:"attempts"`
	NextAttempt        string                  `json:"next_attempt"`
	LastError          string                  `json:"last_error"`
}

// instructionData mirrors reseller.Instruction. The types it points to are
// converted from reseller's, so that a field added there stops the build
// here instead of being dropped on disk.
type instructionData struct {
	Domain string     `json:"domain"`
	Method string     `json:"method"`
	Status string     `json:"status"`
	CNAME  *cnameData `json:"cname,omitempty"`
	File   *fileData  `json:"file,omitempty"`
	Email  *emailData `json:"email,omitempty"`
}

type cnameData struct {
	Name   string `json:"name"`
	Target string `json:"target"`
}

type fileData struct {
	Scheme   string `json:"scheme"`
	Host     string `json:"host"`
	Path     string `json:"path"`
	FileName string `json:"file_name"`
	Content  string `json:"content"`
	URL      string `json:"url"`
}

type emailData struct {
	Address string `json:"address"`
}

func encodeOrderData(o *Order) (string, error) {
	d := orderData{
		Names:              o.Names,
		DomainDCV:          o.DomainDCV,
		KeyType:            o.KeyType,
		KeyFile:            o.KeyFile,
		KeySealed:          o.KeySealed,
		CSR:                o.CSR,
		AllowDomainRemoval: o.AllowDomainRemoval,
		DNSRecords:         o.DNSRecords,
		Files:              o.Files,
		Cost:               o.Cost,
		CertPEM:            o.CertPEM,
		ChainPEM:           o.ChainPEM,
		Serial:             o.Serial,
		NotBefore:          formatTime(o.NotBefore),
		NotAfter:           formatTime(o.NotAfter),
		Attempts:           o.Attempts,
		NextAttempt:        formatTime(o.NextAttempt),
		LastError:          o.LastError,
	}
	if o.Instructions != nil {
		d.Instructions = make([]instructionData, len(o.Instructions))
		for i, in := range o.Instructions {
			d.Instructions[i] = instructionData{
				Domain: in.Domain,
				Method: in.Method,
				Status: in.Status,
				CNAME:  (*cnameData)(in.CNAME),
				File:   (*fileData)(in.File),
				Email:  (*emailData)(in.Email),
			}
		}
	}
	b, err := json.Marshal(d)
	if err != nil {
		return "", fmt.Errorf("encode order data: %w", err)
	}
	return string(b), nil
}

func decodeOrderData(s string, o *Order) error {
	var d orderData
	if err := decodeJSON(s, &d); err != nil {
		return fmt.Errorf("order data: %w", err)
	}
	o.Names = d.Names
	o.DomainDCV = d.DomainDCV
	o.KeyType = d.KeyType
	o.KeyFile = d.KeyFile
	o.KeySealed = d.KeySealed
	o.CSR = d.CSR
	o.AllowDomainRemoval = d.AllowDomainRemoval
	o.DNSRecords = d.DNSRecords
	o.Files = d.Files
	o.Cost = d.Cost
	o.CertPEM = d.CertPEM
	o.ChainPEM = d.ChainPEM
	o.Serial = d.Serial
	o.Attempts = d.Attempts
	o.LastError = d.LastError
	if d.Instructions != nil {
		o.Instructions = make([]reseller.Instruction, len(d.Instructions))
		for i, in := range d.Instructions {
			o.Instructions[i] = reseller.Instruction{
				Domain: in.Domain,
				Method: in.Method,
				Status: in.Status,
				CNAME:  (*reseller.CNAMEInstruction)(in.CNAME),
				File:   (*reseller.FileInstruction)(in.File),
				Email:  (*reseller.EmailInstruction)(in.Email),
			}
		}
	}
	var errNB, errNA, errNext error
	o.NotBefore, errNB = parseTime(d.NotBefore)
	o.NotAfter, errNA = parseTime(d.NotAfter)
	o.NextAttempt, errNext = parseTime(d.NextAttempt)
	return errors.Join(errNB, errNA, errNext)
}

// decodeJSON decodes s into v, refusing fields v lacks: state written by a
// newer dcvd is refused rather than silently shortened.
func decodeJSON(s string, v any) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after JSON value")
	}
	return nil
}

const attemptColumns = `cert, unique_id, started, finished, outcome, cost, serial, error`

// AddAttempt implements Store.
func (s *SQLiteStore) AddAttempt(ctx context.Context, a Attempt) error {
	switch {
	case a.Cert == "":
		return fmt.Errorf("add attempt %s: no certificate name", a.UniqueID)
	case !a.Outcome.Terminal():
		return fmt.Errorf("add attempt %s of %q: outcome %q is not terminal", a.UniqueID, a.Cert, a.Outcome)
	case math.IsNaN(a.Cost) || math.IsInf(a.Cost, 0):
		return fmt.Errorf("add attempt %s of %q: cost %v is not a number", a.UniqueID, a.Cert, a.Cost)
	}
	var uid any // NULL when empty: see the attempts table
	if a.UniqueID != "" {
		uid = a.UniqueID
	}
	// The WHERE of DO UPDATE leaves a row of another certificate alone;
	// nothing changed then tells us so.
	res, err := s.db.ExecContext(ctx, `INSERT INTO attempts (`+attemptColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (unique_id) DO UPDATE SET
			started = excluded.started, finished = excluded.finished,
			outcome = excluded.outcome, cost = excluded.cost,
			serial = excluded.serial, error = excluded.error
		WHERE attempts.cert = excluded.cert`,
		a.Cert, uid, formatTime(a.Started), formatTime(a.Finished), string(a.Outcome), a.Cost, a.Serial, a.Error)
	if err != nil {
		return fmt.Errorf("add attempt %s of %q: %w", a.UniqueID, a.Cert, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("add attempt %s of %q: %w", a.UniqueID, a.Cert, err)
	}
	if n != 1 {
		return fmt.Errorf("add attempt %s of %q: that unique_id is recorded for another certificate", a.UniqueID, a.Cert)
	}
	return nil
}

// Attempts implements Store.
func (s *SQLiteStore) Attempts(ctx context.Context, cert string, limit int) ([]Attempt, error) {
	q := `SELECT ` + attemptColumns + ` FROM attempts WHERE cert = ? ORDER BY id DESC`
	args := []any{cert}
	if limit > 0 {
		q += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read attempts of %q: %w", cert, err)
	}
	defer rows.Close()
	return collectRows(rows, fmt.Sprintf("read attempts of %q", cert), scanAttempt)
}

// RecentAttempts implements Store. The limit is applied in SQL, so that a
// long history is not read to be thrown away: for each certificate (one
// pass over the index attempts_cert) the id of its limit-th newest attempt
// is looked up in that index, and only the attempts from that id on are
// read. With the pure-Go SQLite this costs a third of what ROW_NUMBER()
// OVER (PARTITION BY cert ORDER BY id DESC) does, which sorts every
// attempt; and less than reading the whole table when the histories are
// longer than the limit (see BenchmarkSweep/10k-long-history).
func (s *SQLiteStore) RecentAttempts(ctx context.Context, limit int) (map[string][]Attempt, error) {
	q := `SELECT id, ` + attemptColumns + ` FROM attempts`
	var args []any
	if limit > 0 {
		q = `SELECT a.id, a.cert, a.unique_id, a.started, a.finished, a.outcome, a.cost, a.serial, a.error
			FROM (SELECT cert, (SELECT id FROM attempts AS b WHERE b.cert = g.cert
					ORDER BY id DESC LIMIT 1 OFFSET ?) AS first
				FROM attempts AS g GROUP BY cert) AS c
			JOIN attempts AS a ON a.cert = c.cert AND a.id >= COALESCE(c.first, ?)`
		args = []any{limit - 1, int64(math.MinInt64)}
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
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

// TotalCost implements Store.
func (s *SQLiteStore) TotalCost(ctx context.Context, cert string) (float64, error) {
	var total float64
	if err := s.db.QueryRowContext(ctx, `SELECT
		COALESCE((SELECT SUM(cost) FROM attempts WHERE cert = ?), 0) +
		COALESCE((SELECT cost FROM pruned_costs WHERE cert = ?), 0)`, cert, cert).Scan(&total); err != nil {
		return 0, fmt.Errorf("read total cost of %q: %w", cert, err)
	}
	return total, nil
}

// Generations implements Store. The ranking reads the index orders_ended
// alone; only the rows kept are read whole, for their key file.
func (s *SQLiteStore) Generations(ctx context.Context, limit int) (map[string][]*Order, error) {
	if limit <= 0 {
		limit = math.MaxInt32
	}
	rows, err := s.db.QueryContext(ctx, `SELECT o.unique_id, o.cert, o.step,
			COALESCE(json_extract(o.data, '$.key_file'), ''), o.created, o.updated
		FROM (SELECT unique_id, cert,
				ROW_NUMBER() OVER (PARTITION BY cert ORDER BY updated DESC, unique_id DESC) AS n
			FROM orders WHERE step = 'done') AS g
		JOIN orders AS o ON o.unique_id = g.unique_id
		WHERE g.n <= ? ORDER BY g.cert, g.n`, limit)
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

// PruneHistory implements Store. Each table's doomed rows are selected
// first, then deleted by key in the same transaction, which holds the
// write lock from its start (_txlock=immediate): nothing changes between
// the two, and the costs carried are exactly those of the rows deleted.
func (s *SQLiteStore) PruneHistory(ctx context.Context, p HistoryPolicy) (Pruned, error) {
	perCert, before, limit := p.bounds()
	var out Pruned
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// An attempt's rank is beyond k when its id is below that of its
		// certificate's k-th newest (none when there are fewer): looked up
		// in the index attempts_cert, as RecentAttempts does, rather than
		// numbering every attempt with ROW_NUMBER, which sorts them all.
		ids, err := selectDoomed[int64](ctx, tx, `SELECT a.id
			FROM (SELECT cert,
					(SELECT id FROM attempts AS b WHERE b.cert = g.cert ORDER BY id DESC LIMIT 1 OFFSET ?) AS kept,
					(SELECT id FROM attempts AS b WHERE b.cert = g.cert ORDER BY id DESC LIMIT 1 OFFSET ?) AS counted
				FROM attempts AS g GROUP BY cert) AS c
			JOIN attempts AS a ON a.cert = c.cert AND a.id < c.kept
			WHERE a.id < c.counted OR a.finished < ?
			ORDER BY a.id LIMIT ?`,
			KeptAttempts-1, perCert-1, before, limit)
		if err != nil || len(ids) == 0 {
			return err
		}
		list, err := json.Marshal(ids)
		if err != nil {
			return err
		}
		// SQLite wants a WHERE in an upsert's SELECT (its parser
		// could take ON CONFLICT for a join's ON otherwise).
		if _, err := tx.ExecContext(ctx, `INSERT INTO pruned_costs (cert, cost)
			SELECT cert, SUM(cost) FROM attempts WHERE id IN (SELECT value FROM json_each(?)) GROUP BY cert
			ON CONFLICT (cert) DO UPDATE SET cost = pruned_costs.cost + excluded.cost`, string(list)); err != nil {
			return fmt.Errorf("carry the costs over: %w", err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM attempts WHERE id IN (SELECT value FROM json_each(?))`, string(list))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		out.Attempts = int(n)
		return err
	})
	if err != nil {
		return Pruned{}, fmt.Errorf("prune the attempts: %w", err)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		uids, err := selectDoomed[string](ctx, tx, `SELECT unique_id FROM (
				SELECT unique_id, step, updated,
					ROW_NUMBER() OVER (PARTITION BY cert ORDER BY updated DESC, unique_id DESC) AS n,
					ROW_NUMBER() OVER (PARTITION BY cert, step ORDER BY updated DESC, unique_id DESC) AS k
				FROM orders WHERE step = 'done' OR step = 'failed') AS ranked
			WHERE (n > ? OR updated < ?) AND NOT (step = 'done' AND k <= ?)
				AND unique_id NOT IN (SELECT unique_id FROM certificates)
			ORDER BY unique_id LIMIT ?`,
			perCert, before, KeptGenerations, limit)
		if err != nil || len(uids) == 0 {
			return err
		}
		list, err := json.Marshal(uids)
		if err != nil {
			return err
		}
		// The step again: an order in flight is never deleted, whatever
		// the selection said.
		res, err := tx.ExecContext(ctx, `DELETE FROM orders WHERE unique_id IN (SELECT value FROM json_each(?))
			AND (step = 'done' OR step = 'failed')`, string(list))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		out.Orders = int(n)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("prune the orders: %w", err)
	}
	return out, nil
}

// selectDoomed reads the one column of the rows a prune selected.
func selectDoomed[T any](ctx context.Context, tx *sql.Tx, q string, args ...any) ([]T, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return collectRows(rows, "select the rows to delete", func(r scanner) (T, error) {
		var v T
		err := r.Scan(&v)
		return v, err
	})
}
