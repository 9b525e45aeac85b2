package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/dcvd/dcvd/internal/pgtest"
)

var postgresBackend = storeBackend{newDB: func(t *testing.T) storeDB {
	dsn := pgtest.NewSchema(t)
	return storeDB{
		open: func(ctx context.Context) (testStore, error) {
			s, err := OpenPostgres(ctx, dsn)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		raw: func(ctx context.Context, stmts ...string) error {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(context.WithoutCancel(ctx))
			for _, stmt := range stmts {
				if _, err := conn.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", stmt, err)
				}
			}
			return nil
		},
		dialect: postgresDialect,
	}
}}

func TestStorePostgres(t *testing.T) {
	pgtest.DSN(t)
	runStoreSuite(t, postgresBackend)
}

func (s *PostgresStore) exec(ctx context.Context, sql string) error {
	_, err := s.pool.Exec(ctx, sql)
	return err
}

func (s *PostgresStore) versions(ctx context.Context) ([]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// TestStorePostgresMigrationRace opens several stores on a new database at
// once, as the dcvd instances of a cluster starting together do: the
// migration lock must let exactly one of them create the schema.
func TestStorePostgresMigrationRace(t *testing.T) {
	db := postgresBackend.newDB(t)
	ctx := t.Context()
	const n = 8
	stores := make([]testStore, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { stores[i], errs[i] = db.open(ctx) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Errorf("open %d: %v", i, errs[i])
			continue
		}
		defer stores[i].Close()
	}
	if t.Failed() {
		return
	}
	var want []int
	for i := range storeMigrations {
		want = append(want, i+1)
	}
	got := schemaVersions(t, stores[0])
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("versions after %d concurrent opens = %v, want %v", n, got, want)
	}
	// Every store works on the one schema.
	if err := stores[n-1].PutOrder(ctx, fullOrder("u1", "shop")); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[0].Order(ctx, "u1"); err != nil {
		t.Errorf("order written by one store, read by another: %v", err)
	}
}

// TestStorePostgresRaceSameOrder makes several processes write the same
// order at once: none may resume it once another has finished it, and the
// inserts that lose the race to the first one become updates, not errors.
func TestStorePostgresRaceSameOrder(t *testing.T) {
	db := postgresBackend.newDB(t)
	ctx := t.Context()
	stores := []testStore{db.mustOpen(t), db.mustOpen(t), db.mustOpen(t)}
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			step := StepNew
			if i%3 == 0 {
				step = StepDone
			}
			errs[i] = stores[i%len(stores)].PutOrder(ctx, &Order{UniqueID: "u1", Cert: "shop", Step: step})
		})
	}
	wg.Wait()
	for i, err := range errs {
		// A non-terminal write after a done one is refused, and that
		// is the only error allowed.
		if err != nil && (i%3 == 0 || !strings.Contains(err.Error(), "never resumed")) {
			t.Errorf("write %d: %v", i, err)
		}
	}
	o, err := stores[0].Order(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if o.Step != StepDone {
		t.Errorf("after the race u1 is %s, want done: a finished order was resumed", o.Step)
	}
}

func TestStorePostgresOpenRefuses(t *testing.T) {
	dsn := pgtest.DSN(t)
	ctx := t.Context()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal("DCVD_TEST_POSTGRES_DSN does not parse")
	}
	pw := cfg.Password
	if pw == "" {
		t.Fatal("DCVD_TEST_POSTGRES_DSN has no password: the tests of its secrecy need one")
	}
	wrong := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(cfg.User, "wrong-"+pw),
		Host:     net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))),
		Path:     "/" + cfg.Database,
		RawQuery: "sslmode=disable",
	}
	badPort := "postgres://dcvd:" + pw + "@127.0.0.1:notaport/db"

	tests := []struct {
		name, dsn, want string
	}{
		{"no dsn", "", "no dsn"},
		{"dsn does not parse", badPort, "does not parse"},
		{"wrong password", wrong.String(), "password authentication failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenPostgres(ctx, tt.dsn)
			if err == nil {
				s.Close()
				t.Fatal("OpenPostgres succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), pw) {
				t.Errorf("error %q reveals the password", err)
			}
		})
	}
}

func TestStorePostgresRefusesAsyncCommit(t *testing.T) {
	dsn := pgtest.NewSchema(t)
	// A runtime parameter in the DSN stands for a server, role or
	// database configured so.
	s, err := OpenPostgres(t.Context(), pgtest.WithParam(t, dsn, "synchronous_commit", "off"))
	if err == nil {
		s.Close()
		t.Fatal("OpenPostgres accepted synchronous_commit=off")
	}
	if !strings.Contains(err.Error(), "synchronous_commit is off") {
		t.Errorf("error %q does not say why", err)
	}
	// And "local", which is durable on the server, is accepted.
	s, err = OpenPostgres(t.Context(), pgtest.WithParam(t, dsn, "synchronous_commit", "local"))
	if err != nil {
		t.Fatalf("OpenPostgres with synchronous_commit=local: %v", err)
	}
	s.Close()
}

func TestStorePostgresClosed(t *testing.T) {
	s, _ := postgresBackend.openTestStore(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Certificates(t.Context()); err == nil {
		t.Error("Certificates after Close succeeded")
	}
	if err := s.PutOrder(t.Context(), fullOrder("u1", "shop")); err == nil {
		t.Error("PutOrder after Close succeeded")
	}
	// Closing twice is harmless.
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestStorePostgresDSNErrorsAreSilent checks the promise made when no server
// is needed: an unparsable DSN is never quoted.
func TestStorePostgresDSNErrorsAreSilent(t *testing.T) {
	const secret = "s3cr3t-pw"
	for _, dsn := range []string{
		"postgres://u:" + secret + "@host:badport/db",
		"postgres://u:" + secret + "@[::1/db",
		"host=x password=" + secret + " port=notanumber",
	} {
		_, err := OpenPostgres(t.Context(), dsn)
		if err == nil {
			t.Errorf("OpenPostgres accepted a bad dsn")
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q reveals the password", err)
		}
		if errors.Is(err, context.Canceled) {
			t.Errorf("unexpected cancellation: %v", err)
		}
	}
}

// TestStorePostgresPruneConcurrently: the nodes of a cluster prune the
// shared history at the same time: together they delete what one would,
// and carry every deleted cost once.
func TestStorePostgresPruneConcurrently(t *testing.T) {
	db := postgresBackend.newDB(t)
	ctx := t.Context()
	stores := []testStore{db.mustOpen(t), db.mustOpen(t), db.mustOpen(t)}
	s := stores[0]
	const perCert = 60
	certs := []string{"shop", "api"}
	total := addFailedHistory(t, s, certs, perCert, t1, time.Hour, 0.25)
	p := HistoryPolicy{Before: t1, PerCertificate: 100, Limit: 5}
	var (
		mu  sync.Mutex
		sum Pruned
		wg  sync.WaitGroup
	)
	for _, st := range stores {
		wg.Go(func() {
			for range 200 {
				n, err := st.PruneHistory(ctx, p)
				if err != nil {
					t.Errorf("PruneHistory: %v", err)
					return
				}
				mu.Lock()
				sum.Attempts += n.Attempts
				sum.Orders += n.Orders
				done := sum.Attempts == len(certs)*(perCert-KeptAttempts) && sum.Orders == len(certs)*perCert
				mu.Unlock()
				if done {
					return
				}
			}
		})
	}
	wg.Wait()
	if want := (Pruned{Attempts: len(certs) * (perCert - KeptAttempts), Orders: len(certs) * perCert}); sum != want {
		t.Errorf("the stores deleted %+v together, want %+v", sum, want)
	}
	for _, cert := range certs {
		if got, err := s.TotalCost(ctx, cert); err != nil || got != total[cert] {
			t.Errorf("TotalCost(%s) = %v, %v; want %v: a deleted cost was carried twice, or not at all", cert, got, err, total[cert])
		}
		if h, err := s.Attempts(ctx, cert, 0); err != nil || len(h) != KeptAttempts {
			t.Errorf("%s keeps %d attempts, %v; want %d", cert, len(h), err, KeptAttempts)
		}
	}
}
