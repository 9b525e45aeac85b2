package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// storeBackend is one implementation of Store under the behavioural tests
// that every implementation must pass (storeSuite).
type storeBackend struct {
	// newDB returns a new, empty database, removed when the test ends.
	newDB func(t *testing.T) storeDB
}

// storeDB is one database of a backend.
type storeDB struct {
	// open opens a store on the database. Each call gives a store of its
	// own, as another process would have.
	open func(ctx context.Context) (testStore, error)
	// raw runs SQL statements on the database without opening a store
	// (no migration), as an older dcvd would have left it.
	raw func(ctx context.Context, stmts ...string) error
	// dialect is the backend's, for storeMigrations.
	dialect sqlDialect
}

// testStore is a Store with the hooks the behavioural tests need. Each
// implementation defines them in its own test file.
type testStore interface {
	Store
	// setClock replaces the clock of Created and Updated.
	SetClock(now func() time.Time)
	// migrate applies the migrations the database lacks.
	migrate(ctx context.Context) error
	// exec runs SQL, without parameters, behind the store's back.
	exec(ctx context.Context, sql string) error
	// versions returns the versions recorded in schema_migrations, in
	// order.
	versions(ctx context.Context) ([]int, error)
}

// storeSuite is the behaviour every Store must have; runStoreSuite runs it
// against one backend.
var storeSuite = []struct {
	name string
	test func(t *testing.T, b storeBackend)
}{
	{"CertificateRoundTrip", testStoreCertificateRoundTrip},
	{"CertificatesEmpty", testStoreCertificatesEmpty},
	{"CertificateSummaries", testStoreCertificateSummaries},
	{"OrderRoundTrip", testStoreOrderRoundTrip},
	{"TimesAreUTCAndExact", testStoreTimesAreUTCAndExact},
	{"NotFound", testStoreNotFound},
	{"OneActiveOrderPerCert", testStoreOneActiveOrderPerCert},
	{"PutOrderRefuses", testStorePutOrderRefuses},
	{"ActiveOrdersOldestFirst", testStoreActiveOrdersOldestFirst},
	{"Attempts", testStoreAttempts},
	{"RecentAttempts", testStoreRecentAttempts},
	{"RecentAttemptsReadOnlyTheLimit", testStoreRecentAttemptsReadOnlyTheLimit},
	{"Generations", testStoreGenerations},
	{"PruneAttempts", testStorePruneAttempts},
	{"PruneOrders", testStorePruneOrders},
	{"PruneInBatches", testStorePruneInBatches},
	{"ReopenKeepsData", testStoreReopenKeepsData},
	{"MigrationsIdempotent", testStoreMigrationsIdempotent},
	{"UpgradeFromVersion1", testStoreUpgradeFromVersion1},
	{"RefusesNewerSchema", testStoreRefusesNewerSchema},
	{"RefusesUnknownData", testStoreRefusesUnknownData},
	{"HonoursContext", testStoreHonoursContext},
	{"ConcurrentPutOrder", testStoreConcurrentPutOrder},
	{"Services", testStoreServices},
}

func runStoreSuite(t *testing.T, b storeBackend) {
	for _, tc := range storeSuite {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, b) })
	}
}

// mustOpen opens a store on db, closed when the test ends.
func (db storeDB) mustOpen(t *testing.T) testStore {
	t.Helper()
	s, err := db.open(t.Context())
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openTestStore opens a store on a new database, closed when the test ends.
func (b storeBackend) openTestStore(t *testing.T) (testStore, storeDB) {
	t.Helper()
	db := b.newDB(t)
	return db.mustOpen(t), db
}

var sqliteBackend = storeBackend{newDB: func(t *testing.T) storeDB {
	path := filepath.Join(t.TempDir(), "state.db")
	return storeDB{
		open: func(ctx context.Context) (testStore, error) {
			s, err := OpenSQLite(ctx, path)
			if err != nil {
				return nil, err
			}
			return s, nil
		},
		raw: func(ctx context.Context, stmts ...string) error {
			// Created private, as OpenSQLite requires.
			f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			db, err := sql.Open("sqlite", path)
			if err != nil {
				return err
			}
			defer db.Close()
			for _, stmt := range stmts {
				if _, err := db.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("%s: %w", stmt, err)
				}
			}
			return nil
		},
		dialect: sqliteDialect,
	}
}}

func TestStoreSQLite(t *testing.T) { runStoreSuite(t, sqliteBackend) }

func (s *SQLiteStore) exec(ctx context.Context, sql string) error {
	_, err := s.db.ExecContext(ctx, sql)
	return err
}

func (s *SQLiteStore) versions(ctx context.Context) ([]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var vs []int
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, rows.Err()
}

// openSQLiteTestStore opens a SQLite store in a temporary directory, closed
// when the test ends, for the tests of what only SQLite has (files).
func openSQLiteTestStore(t *testing.T) (*SQLiteStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

// fakeClock makes s stamp orders with start, start+1s, start+2s, … so that
// Created and Updated are predictable and distinct.
func fakeClock(s testStore, start time.Time) {
	next := start
	s.SetClock(func() time.Time {
		t := next
		next = next.Add(time.Second)
		return t
	})
}

var (
	t0 = time.Date(2026, 3, 1, 10, 20, 30, 123456789, time.UTC)
	t1 = time.Date(2027, 3, 1, 10, 20, 30, 0, time.UTC)
)

// fullOrder returns an order with every field set, down to the fields of
// the structs it holds (the first instruction has all three of CNAME, File
// and Email: the store does not validate instructions, and a round trip of
// that one covers every field; KeyFile and KeySealed are both set, where the
// daemon sets one, for the same reason).
func fullOrder(uniqueID, cert string) *Order {
	return &Order{
		UniqueID:  uniqueID,
		Cert:      cert,
		ServiceID: "o91bZ",
		Step:      StepRechecked,
		Names:     []string{"*.example.com", "shop.example.com", "mail.example.com"},
		DomainDCV: map[string]reseller.Method{
			"*.example.com":    reseller.MethodDNS,
			"shop.example.com": reseller.MethodHTTP,
			"mail.example.com": "admin@example.com",
		},
		KeyType:            "ecdsa-p256",
		KeyFile:            "/var/lib/dcvd/keys/" + uniqueID + ".key",
		KeySealed:          "v1:sealed-key-of-" + uniqueID,
		CSR:                "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
		CallbackToken:      "tok-" + uniqueID,
		AllowDomainRemoval: true,
		Instructions: []reseller.Instruction{
			{
				Domain: "*.example.com",
				Method: reseller.MethodDNS,
				Status: "pending",
				CNAME:  &reseller.CNAMEInstruction{Name: "_abc.example.com", Target: "x.dcv.example.net"},
				File: &reseller.FileInstruction{Scheme: "http", Host: "example.com",
					Path: "/.well-known/pki-validation/f.txt", FileName: "f.txt", Content: "line1\r\nline2",
					URL: "http://example.com/.well-known/pki-validation/f.txt"},
				Email: &reseller.EmailInstruction{Address: "admin@example.com"},
			},
			{
				Domain: "shop.example.com",
				Method: reseller.MethodHTTP,
				Status: "valid",
				File: &reseller.FileInstruction{Scheme: "http", Host: "shop.example.com",
					Path: "/.well-known/pki-validation/g.txt", FileName: "g.txt", Content: "abc",
					URL: "http://shop.example.com/.well-known/pki-validation/g.txt"},
			},
		},
		DNSRecords: []providers.Record{
			{Provider: "main", Zone: "example.com.", Name: "_abc.example.com", Target: "x.dcv.example.net", TTL: 60 * time.Second, ID: "rec-1"},
		},
		Files: []httpchallenge.Written{
			{Webroot: "/var/www/shop", Name: "g.txt", Content: "abc",
				CreatedDirs: []string{".well-known/pki-validation", ".well-known"}},
		},
		Cost:        12.34,
		CertPEM:     "-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n",
		ChainPEM:    "-----BEGIN CERTIFICATE-----\nchain\n-----END CERTIFICATE-----\n",
		Serial:      "0a1b2c",
		NotBefore:   t0,
		NotAfter:    t1,
		Attempts:    3,
		NextAttempt: t0.Add(90 * time.Minute),
		LastError:   "detail: certificate not issued yet",
		Created:     t0,
		Updated:     t0,
	}
}

func fullCertificate(name string) *Certificate {
	return &Certificate{
		Name:       name,
		Serial:     "0a1b2c",
		Names:      []string{"*.example.com", "shop.example.com"},
		NotBefore:  t0,
		NotAfter:   t1,
		CertPEM:    "-----BEGIN CERTIFICATE-----\nleaf\n-----END CERTIFICATE-----\n",
		ChainPEM:   "-----BEGIN CERTIFICATE-----\nchain\n-----END CERTIFICATE-----\n",
		KeyFile:    "/var/lib/dcvd/keys/u1.key",
		KeySealed:  "v1:sealed-key-of-u1",
		UniqueID:   "u1",
		DeployedAt: t0.Add(time.Hour),
	}
}

func fullAttempt(cert, uniqueID string) Attempt {
	return Attempt{
		Cert:     cert,
		UniqueID: uniqueID,
		Started:  t0,
		Finished: t0.Add(5 * time.Minute),
		Outcome:  StepFailed,
		Cost:     9.5,
		Serial:   "0a1b2c",
		Error:    "reissue: refused",
	}
}

// requireAllSet fails for every exported field of v, recursively, that is
// zero (for slices: empty, or a zero field in the first element). It makes
// the round-trip tests cover a field added to the types later: the fixture
// must set it, and then the round trip shows whether the store keeps it.
func requireAllSet(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			t.Errorf("fixture leaves %s nil", path)
			return
		}
		requireAllSet(t, path, v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			if v.Interface().(time.Time).IsZero() {
				t.Errorf("fixture leaves %s zero", path)
			}
			return
		}
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				requireAllSet(t, path+"."+f.Name, v.Field(i))
			}
		}
	case reflect.Slice, reflect.Map:
		if v.Len() == 0 {
			t.Errorf("fixture leaves %s empty", path)
			return
		}
		if v.Kind() == reflect.Slice {
			requireAllSet(t, path+"[0]", v.Index(0))
		}
	default:
		if v.IsZero() {
			t.Errorf("fixture leaves %s zero", path)
		}
	}
}

func TestStoreFixturesSetEveryField(t *testing.T) {
	requireAllSet(t, "Order", reflect.ValueOf(fullOrder("u1", "shop")))
	requireAllSet(t, "Certificate", reflect.ValueOf(fullCertificate("shop")))
	requireAllSet(t, "Attempt", reflect.ValueOf(fullAttempt("shop", "u1")))
}

func testStoreCertificateRoundTrip(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()

	want := fullCertificate("shop")
	if err := s.PutCertificate(ctx, want); err != nil {
		t.Fatalf("PutCertificate: %v", err)
	}
	got, err := s.Certificate(ctx, "shop")
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}

	// An upsert replaces every field, including with zero values.
	repl := &Certificate{Name: "shop", Serial: "ff", Names: []string{"shop.example.com"}, NotAfter: t1.Add(time.Hour)}
	if err := s.PutCertificate(ctx, repl); err != nil {
		t.Fatalf("PutCertificate again: %v", err)
	}
	got, err = s.Certificate(ctx, "shop")
	if err != nil {
		t.Fatalf("Certificate: %v", err)
	}
	if !reflect.DeepEqual(got, repl) {
		t.Errorf("after replace:\n got %+v\nwant %+v", got, repl)
	}

	if err := s.PutCertificate(ctx, fullCertificate("api")); err != nil {
		t.Fatalf("PutCertificate api: %v", err)
	}
	all, err := s.Certificates(ctx)
	if err != nil {
		t.Fatalf("Certificates: %v", err)
	}
	if len(all) != 2 || all[0].Name != "api" || all[1].Name != "shop" {
		t.Errorf("Certificates = %v, want api then shop", certNames(all))
	}

	for _, bad := range []*Certificate{nil, {Serial: "x"}} {
		if err := s.PutCertificate(ctx, bad); err == nil {
			t.Errorf("PutCertificate(%+v) succeeded, want an error", bad)
		}
	}
}

func certNames(cs []*Certificate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func testStoreCertificatesEmpty(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	all, err := s.Certificates(t.Context())
	if err != nil || all == nil || len(all) != 0 {
		t.Errorf("Certificates on an empty store = %v, %v; want an empty slice, nil", all, err)
	}
	orders, err := s.ActiveOrders(t.Context())
	if err != nil || orders == nil || len(orders) != 0 {
		t.Errorf("ActiveOrders on an empty store = %v, %v; want an empty slice, nil", orders, err)
	}
	atts, err := s.Attempts(t.Context(), "shop", 0)
	if err != nil || atts == nil || len(atts) != 0 {
		t.Errorf("Attempts on an empty store = %v, %v; want an empty slice, nil", atts, err)
	}
}

func testStoreOrderRoundTrip(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	start := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	fakeClock(s, start)

	want := fullOrder("u1", "shop")
	want.Created = time.Time{} // ignored: PutOrder stamps it
	if err := s.PutOrder(ctx, want); err != nil {
		t.Fatalf("PutOrder: %v", err)
	}
	if !want.Created.Equal(start) || !want.Updated.Equal(start) {
		t.Errorf("after insert Created, Updated = %v, %v; want both %v", want.Created, want.Updated, start)
	}

	lookups := map[string]func() (*Order, error){
		"Order":        func() (*Order, error) { return s.Order(ctx, "u1") },
		"OrderByToken": func() (*Order, error) { return s.OrderByToken(ctx, "tok-u1") },
		"ActiveOrder":  func() (*Order, error) { return s.ActiveOrder(ctx, "shop") },
		"ActiveOrders": func() (*Order, error) {
			all, err := s.ActiveOrders(ctx)
			if err != nil || len(all) != 1 {
				return nil, fmt.Errorf("got %d orders, %v; want 1", len(all), err)
			}
			return all[0], nil
		},
	}
	for name, lookup := range lookups {
		got, err := lookup()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s round trip:\n got %+v\nwant %+v", name, got, want)
		}
	}

	// An update keeps Created, moves Updated, and may clear fields
	// (nil slices and maps stay nil, zero times stay zero).
	upd := &Order{UniqueID: "u1", Cert: "shop", Step: StepIssued, Created: t1}
	if err := s.PutOrder(ctx, upd); err != nil {
		t.Fatalf("PutOrder update: %v", err)
	}
	if !upd.Created.Equal(start) || !upd.Updated.Equal(start.Add(time.Second)) {
		t.Errorf("after update Created, Updated = %v, %v; want %v, %v", upd.Created, upd.Updated, start, start.Add(time.Second))
	}
	got, err := s.Order(ctx, "u1")
	if err != nil {
		t.Fatalf("Order: %v", err)
	}
	if !reflect.DeepEqual(got, upd) {
		t.Errorf("after update:\n got %+v\nwant %+v", got, upd)
	}
	// The token went with the update: the old one no longer matches.
	if _, err := s.OrderByToken(ctx, "tok-u1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("OrderByToken(old token) after the token was cleared: %v, want ErrNotFound", err)
	}
}

func testStoreTimesAreUTCAndExact(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	zone := time.FixedZone("UTC+8", 8*3600)
	o := &Order{UniqueID: "u1", Cert: "shop", Step: StepNew,
		NotAfter: time.Date(2026, 5, 6, 7, 8, 9, 1, zone), NextAttempt: time.Date(2026, 1, 1, 0, 0, 0, 0, zone)}
	if err := s.PutOrder(ctx, o); err != nil {
		t.Fatalf("PutOrder: %v", err)
	}
	got, err := s.Order(ctx, "u1")
	if err != nil {
		t.Fatalf("Order: %v", err)
	}
	if !got.NotAfter.Equal(o.NotAfter) || got.NotAfter.Location() != time.UTC {
		t.Errorf("NotAfter = %v, want %v in UTC", got.NotAfter, o.NotAfter)
	}
	if !got.NextAttempt.Equal(o.NextAttempt) {
		t.Errorf("NextAttempt = %v, want %v", got.NextAttempt, o.NextAttempt)
	}
	if !got.NotBefore.IsZero() {
		t.Errorf("NotBefore = %v, want zero", got.NotBefore)
	}
}

func TestStoreTimeTextSortsAsTime(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)
	times := []time.Time{
		base,
		base.Add(time.Nanosecond),
		base.Add(100 * time.Millisecond),
		base.Add(time.Second),
		base.Add(10 * time.Second),
		base.AddDate(1, 0, 0),
	}
	for i := 1; i < len(times); i++ {
		a, b := formatTime(times[i-1]), formatTime(times[i])
		if a >= b {
			t.Errorf("formatTime(%v) = %q does not sort before formatTime(%v) = %q", times[i-1], a, times[i], b)
		}
		back, err := parseTime(b)
		if err != nil || !back.Equal(times[i]) {
			t.Errorf("parseTime(%q) = %v, %v; want %v", b, back, err, times[i])
		}
	}
	if _, err := parseTime("yesterday"); err == nil {
		t.Error(`parseTime("yesterday") succeeded`)
	}
}

func testStoreNotFound(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	done := fullOrder("u-done", "old")
	done.Step = StepDone
	noToken := &Order{UniqueID: "u-notoken", Cert: "shop", Step: StepNew}
	for _, o := range []*Order{done, noToken} {
		if err := s.PutOrder(ctx, o); err != nil {
			t.Fatalf("PutOrder %s: %v", o.UniqueID, err)
		}
	}

	tests := []struct {
		name string
		call func() (any, error)
	}{
		{"Certificate", func() (any, error) { return s.Certificate(ctx, "nope") }},
		{"Order", func() (any, error) { return s.Order(ctx, "nope") }},
		{"OrderByToken unknown", func() (any, error) { return s.OrderByToken(ctx, "nope") }},
		// u-notoken has no token: "" must not find it.
		{"OrderByToken empty", func() (any, error) { return s.OrderByToken(ctx, "") }},
		{"ActiveOrder no order", func() (any, error) { return s.ActiveOrder(ctx, "nope") }},
		// old's only order is done.
		{"ActiveOrder only terminal", func() (any, error) { return s.ActiveOrder(ctx, "old") }},
	}
	// Even a row holding '' rather than NULL (written by something other
	// than PutOrder) is not found by the empty token.
	if err := s.exec(ctx, `INSERT INTO orders (unique_id, cert, service_id, step, callback_token, data, created, updated)
		VALUES ('raw', 'raw', '', 'done', '', '{}', '', '')`); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("got %v, %v; want ErrNotFound", got, err)
			}
		})
	}

	// A terminal order is still found by its unique_id and token.
	if _, err := s.Order(ctx, "u-done"); err != nil {
		t.Errorf("Order(done order): %v", err)
	}
	if _, err := s.OrderByToken(ctx, "tok-u-done"); err != nil {
		t.Errorf("OrderByToken(done order): %v", err)
	}
}

func testStoreOneActiveOrderPerCert(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	put := func(uid, cert string, step Step) error {
		return s.PutOrder(ctx, &Order{UniqueID: uid, Cert: cert, Step: step})
	}

	if err := put("a", "shop", StepNew); err != nil {
		t.Fatalf("first order: %v", err)
	}
	// Updating the order in flight is fine.
	if err := put("a", "shop", StepSubmitted); err != nil {
		t.Fatalf("update of the order in flight: %v", err)
	}
	// A second one for the same certificate is refused, and not stored.
	err := put("b", "shop", StepNew)
	if !errors.Is(err, ErrActiveOrder) {
		t.Fatalf("second order in flight: %v, want ErrActiveOrder", err)
	}
	if !strings.Contains(err.Error(), "order a is in flight") {
		t.Errorf("error %q does not name the order in flight", err)
	}
	if _, err := s.Order(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused order was stored: %v", err)
	}
	// Terminal orders never count: a finished one may be stored next to
	// the one in flight, and another certificate is independent.
	if err := put("old", "shop", StepFailed); err != nil {
		t.Errorf("terminal order next to the one in flight: %v", err)
	}
	if err := put("c", "api", StepNew); err != nil {
		t.Errorf("order of another certificate: %v", err)
	}
	// Once a is done, b may start.
	if err := put("a", "shop", StepDone); err != nil {
		t.Fatalf("finish a: %v", err)
	}
	if err := put("b", "shop", StepNew); err != nil {
		t.Fatalf("order after the previous one finished: %v", err)
	}
	got, err := s.ActiveOrder(ctx, "shop")
	if err != nil || got.UniqueID != "b" {
		t.Fatalf("ActiveOrder(shop) = %v, %v; want b", got, err)
	}

	// A finished order is never resumed, even when its certificate has no
	// other order in flight; an order never changes certificate; the
	// refusals change nothing.
	if err := put("b", "shop", StepFailed); err != nil {
		t.Fatalf("fail b: %v", err)
	}
	if err := put("a", "shop", StepSubmitted); err == nil {
		t.Error("a done order was moved back to submitted")
	}
	if err := put("old", "shop", StepNew); err == nil {
		t.Error("a failed order was moved back to new")
	}
	if _, err := s.ActiveOrder(ctx, "shop"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a finished order of shop is in flight again: %v", err)
	}
	if err := put("c", "shop", StepNew); err == nil {
		t.Error("an order was moved to another certificate")
	}
	if o, err := s.Order(ctx, "a"); err != nil || o.Step != StepDone {
		t.Errorf("after refused updates a = %+v, %v; want done", o, err)
	}
	if o, err := s.Order(ctx, "c"); err != nil || o.Cert != "api" {
		t.Errorf("after refused updates c = %+v, %v; want cert api", o, err)
	}
	// Terminal to terminal is fine (a late error recorded on a failed order).
	if err := s.PutOrder(ctx, &Order{UniqueID: "old", Cert: "shop", Step: StepFailed, LastError: "late"}); err != nil {
		t.Errorf("update of a failed order: %v", err)
	}

	// The database enforces the invariant too, whatever writes to it.
	if err := put("d", "shop", StepNew); err != nil {
		t.Fatalf("new order after the others finished: %v", err)
	}
	err = s.exec(ctx, `INSERT INTO orders (unique_id, cert, service_id, step, data, created, updated)
		VALUES ('raw', 'shop', '', 'published', '{}', '', '')`)
	if err == nil {
		t.Error("the database accepted a second order in flight written behind PutOrder's back")
	}
}

func testStorePutOrderRefuses(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	if err := s.PutOrder(ctx, &Order{UniqueID: "u1", Cert: "shop", Step: StepNew, CallbackToken: "secret-token"}); err != nil {
		t.Fatalf("PutOrder: %v", err)
	}
	tests := []struct {
		name string
		o    *Order
		want string
	}{
		{"nil", nil, "nil order"},
		{"no unique_id", &Order{Cert: "shop", Step: StepNew}, "no unique_id"},
		{"no cert", &Order{UniqueID: "u2", Step: StepNew}, "no certificate name"},
		{"no step", &Order{UniqueID: "u2", Cert: "api"}, `unknown step ""`},
		{"unknown step", &Order{UniqueID: "u2", Cert: "api", Step: "pending"}, `unknown step "pending"`},
		{"token of another order", &Order{UniqueID: "u2", Cert: "api", Step: StepNew, CallbackToken: "secret-token"},
			"order u1 has the same callback token"},
		{"cost not a number", &Order{UniqueID: "u2", Cert: "api", Step: StepNew, Cost: math.NaN()}, "unsupported value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.PutOrder(ctx, tt.o)
			if err == nil {
				t.Fatal("PutOrder succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "secret-token") {
				t.Errorf("error %q reveals the callback token", err)
			}
			if _, err := s.Order(ctx, "u2"); !errors.Is(err, ErrNotFound) {
				t.Errorf("the refused order was stored: %v", err)
			}
		})
	}
	if o, err := s.OrderByToken(ctx, "secret-token"); err != nil || o.UniqueID != "u1" {
		t.Errorf("OrderByToken after refusals = %+v, %v; want u1", o, err)
	}
}

func testStoreActiveOrdersOldestFirst(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	fakeClock(s, t0)
	// Created in the order c, a, b; d finishes; a is updated last, which
	// must not move it.
	for _, o := range []*Order{
		{UniqueID: "uc", Cert: "c", Step: StepNew},
		{UniqueID: "ua", Cert: "a", Step: StepNew},
		{UniqueID: "ub", Cert: "b", Step: StepNew},
		{UniqueID: "ud", Cert: "d", Step: StepNew},
		{UniqueID: "ud", Cert: "d", Step: StepDone},
		{UniqueID: "ua", Cert: "a", Step: StepVisible},
	} {
		if err := s.PutOrder(ctx, o); err != nil {
			t.Fatalf("PutOrder %s: %v", o.UniqueID, err)
		}
	}
	all, err := s.ActiveOrders(ctx)
	if err != nil {
		t.Fatalf("ActiveOrders: %v", err)
	}
	var ids []string
	for _, o := range all {
		ids = append(ids, o.UniqueID)
	}
	if want := []string{"uc", "ua", "ub"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ActiveOrders = %v, want %v", ids, want)
	}
}

func testStoreAttempts(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	add := func(a Attempt) {
		t.Helper()
		if err := s.AddAttempt(ctx, a); err != nil {
			t.Fatalf("AddAttempt %s: %v", a.UniqueID, err)
		}
	}
	first := fullAttempt("shop", "u1")
	add(first)
	second := fullAttempt("shop", "u2")
	second.Outcome, second.Cost, second.Error = StepDone, 10, ""
	add(second)
	// Attempts without a unique_id never collide.
	third := fullAttempt("shop", "")
	third.Cost = 0.25
	add(third)
	fourth := third
	add(fourth)
	add(fullAttempt("api", "u9"))

	all, err := s.Attempts(ctx, "shop", 0)
	if err != nil {
		t.Fatalf("Attempts: %v", err)
	}
	if want := []Attempt{fourth, third, second, first}; !reflect.DeepEqual(all, want) {
		t.Errorf("Attempts(shop, 0):\n got %+v\nwant %+v", all, want)
	}
	two, err := s.Attempts(ctx, "shop", 2)
	if err != nil || len(two) != 2 || two[1].Cost != third.Cost {
		t.Errorf("Attempts(shop, 2) = %+v, %v; want the newest two", two, err)
	}
	if neg, err := s.Attempts(ctx, "shop", -1); err != nil || len(neg) != 4 {
		t.Errorf("Attempts(shop, -1) = %d entries, %v; want all 4", len(neg), err)
	}

	total, err := s.TotalCost(ctx, "shop")
	if err != nil || total != 9.5+10+0.25+0.25 {
		t.Errorf("TotalCost(shop) = %v, %v; want 20", total, err)
	}

	// Adding u1 again (a crash after AddAttempt, before the order was
	// marked done) replaces it in place and does not count it twice.
	again := first
	again.Cost, again.Error = 11, "reissue: refused again"
	add(again)
	all, err = s.Attempts(ctx, "shop", 0)
	if err != nil || len(all) != 4 || !reflect.DeepEqual(all[3], again) {
		t.Errorf("after adding u1 again: %+v, %v; want 4 entries, u1 replaced in place", all, err)
	}
	total, err = s.TotalCost(ctx, "shop")
	if err != nil || total != 11+10+0.25+0.25 {
		t.Errorf("TotalCost(shop) after adding u1 again = %v, %v; want 21.5", total, err)
	}

	// A unique_id of another certificate is refused and changes nothing.
	if err := s.AddAttempt(ctx, fullAttempt("shop", "u9")); err == nil {
		t.Error("AddAttempt with api's unique_id under shop succeeded")
	}
	if got, err := s.Attempts(ctx, "api", 0); err != nil || len(got) != 1 || got[0].Cert != "api" {
		t.Errorf("api's history after the refusal = %+v, %v", got, err)
	}

	if total, err := s.TotalCost(ctx, "nope"); err != nil || total != 0 {
		t.Errorf("TotalCost(nope) = %v, %v; want 0, nil", total, err)
	}

	bad := []struct {
		name string
		a    Attempt
	}{
		{"no cert", Attempt{UniqueID: "x", Outcome: StepDone}},
		{"outcome not terminal", Attempt{Cert: "shop", UniqueID: "x", Outcome: StepIssued}},
		{"no outcome", Attempt{Cert: "shop", UniqueID: "x"}},
		{"cost NaN", Attempt{Cert: "shop", UniqueID: "x", Outcome: StepDone, Cost: math.NaN()}},
		{"cost infinite", Attempt{Cert: "shop", UniqueID: "x", Outcome: StepDone, Cost: math.Inf(1)}},
	}
	for _, tt := range bad {
		if err := s.AddAttempt(ctx, tt.a); err == nil {
			t.Errorf("AddAttempt %s succeeded, want an error", tt.name)
		}
	}
	if all, _ := s.Attempts(ctx, "shop", 0); len(all) != 4 {
		t.Errorf("refused attempts were stored: %d entries, want 4", len(all))
	}
}

// testStoreRecentAttempts: every certificate's history, each as Attempts
// returns it, whatever the limit, with histories added interleaved.
func testStoreRecentAttempts(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	empty, err := s.RecentAttempts(ctx, 20)
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("RecentAttempts on an empty store = %#v, %v; want an empty map", empty, err)
	}

	// shop, api and web take turns, so that no certificate's rows are
	// contiguous; shop has the longest history, web a single entry.
	n := 0
	add := func(cert, uniqueID string) Attempt {
		t.Helper()
		n++
		a := fullAttempt(cert, uniqueID)
		a.Cost = float64(n)
		a.Finished = a.Finished.Add(time.Duration(n) * time.Minute)
		if n%3 == 0 {
			a.Outcome, a.Error = StepDone, ""
		}
		if err := s.AddAttempt(ctx, a); err != nil {
			t.Fatalf("AddAttempt %s of %s: %v", uniqueID, cert, err)
		}
		return a
	}
	for i := range 6 {
		add("shop", fmt.Sprintf("s%d", i))
		if i < 4 {
			add("api", fmt.Sprintf("a%d", i))
		}
		if i == 2 {
			add("web", "w0")
			add("shop", "") // no unique_id
		}
	}
	// Replacing an attempt keeps its place in the history.
	again := fullAttempt("shop", "s1")
	again.Cost, again.Error = 100, "replaced"
	if err := s.AddAttempt(ctx, again); err != nil {
		t.Fatal(err)
	}

	for _, limit := range []int{-1, 0, 1, 2, 4, 7, 20} {
		got, err := s.RecentAttempts(ctx, limit)
		if err != nil {
			t.Fatalf("RecentAttempts(%d): %v", limit, err)
		}
		if len(got) != 3 {
			t.Errorf("RecentAttempts(%d) has %d certificates, want shop, api and web: %v", limit, len(got), got)
		}
		for _, cert := range []string{"shop", "api", "web"} {
			want, err := s.Attempts(ctx, cert, limit)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got[cert], want) {
				t.Errorf("RecentAttempts(%d)[%s]:\n got %+v\nwant %+v", limit, cert, got[cert], want)
			}
		}
	}
	all, err := s.RecentAttempts(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all["shop"]) != 7 || all["shop"][5].Error != "replaced" {
		t.Errorf("shop's whole history = %+v; want 7 entries, s1 replaced in place", all["shop"])
	}

	// The caller's to modify: nothing is shared, between certificates
	// or with a later call.
	two, err := s.RecentAttempts(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	shop := append(two["shop"], Attempt{Cert: "intruder"}, Attempt{Cert: "intruder"})
	for i := range shop {
		shop[i].Error = "changed by the caller"
	}
	for _, cert := range []string{"api", "web"} {
		if want, _ := s.Attempts(ctx, cert, 2); !reflect.DeepEqual(two[cert], want) {
			t.Errorf("changing shop's slice changed %s's: %+v", cert, two[cert])
		}
	}
	if again, _ := s.RecentAttempts(ctx, 2); again["shop"][0].Error == "changed by the caller" {
		t.Error("a change by the caller shows in a later RecentAttempts")
	}

	// A cluster store's fenced view reads the same.
	if cs, ok := s.(ClusterStore); ok {
		fenced, err := cs.Fenced(Lease{Cert: "shop", Holder: "n1", Token: 1}).RecentAttempts(ctx, 2)
		if want, _ := s.RecentAttempts(ctx, 2); err != nil || !reflect.DeepEqual(fenced, want) {
			t.Errorf("Fenced(...).RecentAttempts(2) = %+v, %v; want %+v", fenced, err, want)
		}
	}
}

func testStoreReopenKeepsData(t *testing.T, b storeBackend) {
	db := b.newDB(t)
	ctx := t.Context()
	s, err := db.open(ctx)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	cert := fullCertificate("shop")
	order := fullOrder("u1", "shop")
	att := fullAttempt("shop", "u0")
	if err := s.PutCertificate(ctx, cert); err != nil {
		t.Fatal(err)
	}
	if err := s.PutOrder(ctx, order); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAttempt(ctx, att); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Order(ctx, "u1"); err == nil {
		t.Error("Order after Close succeeded")
	}

	s, err = db.open(ctx)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	if got, err := s.Certificate(ctx, "shop"); err != nil || !reflect.DeepEqual(got, cert) {
		t.Errorf("certificate after reopen = %+v, %v; want %+v", got, err, cert)
	}
	if got, err := s.Order(ctx, "u1"); err != nil || !reflect.DeepEqual(got, order) {
		t.Errorf("order after reopen = %+v, %v; want %+v", got, err, order)
	}
	if got, err := s.Attempts(ctx, "shop", 0); err != nil || !reflect.DeepEqual(got, []Attempt{att}) {
		t.Errorf("attempts after reopen = %+v, %v", got, err)
	}
}

func schemaVersions(t *testing.T, s testStore) []int {
	t.Helper()
	vs, err := s.versions(t.Context())
	if err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return vs
}

func testStoreMigrationsIdempotent(t *testing.T, b storeBackend) {
	s, db := b.openTestStore(t)
	ctx := t.Context()
	var want []int
	for i := range storeMigrations {
		want = append(want, i+1)
	}
	if got := schemaVersions(t, s); !reflect.DeepEqual(got, want) {
		t.Fatalf("versions after open = %v, want %v", got, want)
	}
	if err := s.PutOrder(ctx, fullOrder("u1", "shop")); err != nil {
		t.Fatal(err)
	}
	// Migrating again, in place or by reopening, changes nothing.
	if err := s.migrate(ctx); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	s2, err := db.open(ctx)
	if err != nil {
		t.Fatalf("second open of the same database: %v", err)
	}
	defer s2.Close()
	if got := schemaVersions(t, s2); !reflect.DeepEqual(got, want) {
		t.Errorf("versions after migrating again = %v, want %v", got, want)
	}
	if _, err := s2.Order(ctx, "u1"); err != nil {
		t.Errorf("order lost by migrating again: %v", err)
	}
}

// testStoreUpgradeFromVersion1 opens a database an older dcvd left at
// schema version 1, with a certificate and an order: migrating keeps them,
// with no sealed key.
func testStoreUpgradeFromVersion1(t *testing.T, b storeBackend) {
	db := b.newDB(t)
	ctx := t.Context()
	stmts := []string{`CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, applied TEXT NOT NULL)`}
	stmts = append(stmts, storeMigrations[0](db.dialect)...)
	stmts = append(stmts,
		`INSERT INTO schema_migrations (version, applied) VALUES (1, '')`,
		`INSERT INTO certificates (name, serial, names, not_before, not_after, cert_pem, chain_pem, key_file, unique_id, deployed_at)
		VALUES ('shop', '0a', '["shop.example.com"]', '', '', 'leaf', 'chain', '/keys/u1.key', 'u1', '')`,
		// The JSON version 1 wrote: no key_sealed.
		`INSERT INTO orders (unique_id, cert, service_id, step, callback_token, data, created, updated)
		VALUES ('u2', 'shop', 's', 'new', NULL, '{"names":["shop.example.com"],"key_file":"/keys/u2.key"}', '', '')`,
	)
	if err := db.raw(ctx, stmts...); err != nil {
		t.Fatalf("build a version 1 database: %v", err)
	}
	s := db.mustOpen(t)
	var want []int
	for i := range storeMigrations {
		want = append(want, i+1)
	}
	if got := schemaVersions(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("versions after upgrade = %v, want %v", got, want)
	}
	c, err := s.Certificate(ctx, "shop")
	if err != nil {
		t.Fatalf("certificate after upgrade: %v", err)
	}
	if c.KeyFile != "/keys/u1.key" || c.KeySealed != "" || c.Serial != "0a" || c.CertPEM != "leaf" {
		t.Errorf("certificate after upgrade = %+v, want its version 1 fields and no sealed key", c)
	}
	o, err := s.Order(ctx, "u2")
	if err != nil {
		t.Fatalf("order after upgrade: %v", err)
	}
	if o.KeyFile != "/keys/u2.key" || o.KeySealed != "" {
		t.Errorf("order after upgrade: KeyFile %q, KeySealed %q; want /keys/u2.key and none", o.KeyFile, o.KeySealed)
	}
	// And the new fields are written from now on.
	o.KeySealed = "v1:x"
	if err := s.PutOrder(ctx, o); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Order(ctx, "u2"); err != nil || got.KeySealed != "v1:x" {
		t.Errorf("order sealed after upgrade = %+v, %v", got, err)
	}
}

func testStoreRefusesNewerSchema(t *testing.T, b storeBackend) {
	s, db := b.openTestStore(t)
	ctx := t.Context()
	future := len(storeMigrations) + 1
	if err := s.exec(ctx, fmt.Sprintf(`INSERT INTO schema_migrations (version, applied) VALUES (%d, '')`, future)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := db.open(ctx)
	if err == nil {
		s2.Close()
		t.Fatal("open accepted a database newer than the code")
	}
	if !strings.Contains(err.Error(), "newer") || !strings.Contains(err.Error(), fmt.Sprint(future)) {
		t.Errorf("error %q does not say the schema is newer", err)
	}
}

func testStoreRefusesUnknownData(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	if err := s.PutOrder(ctx, fullOrder("u1", "shop")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCertificate(ctx, fullCertificate("shop")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, sql string
		read      func() error
	}{
		{"order data with a field this code lacks",
			`UPDATE orders SET data = '{"names":[],"published_somewhere_new":true}'`,
			func() error { _, err := s.Order(ctx, "u1"); return err }},
		{"order data not JSON",
			`UPDATE orders SET data = 'names=a'`,
			func() error { _, err := s.ActiveOrder(ctx, "shop"); return err }},
		{"order time garbled",
			`UPDATE orders SET data = '{}', created = 'yesterday'`,
			func() error { _, err := s.ActiveOrders(ctx); return err }},
		{"certificate names not a list",
			`UPDATE certificates SET names = '"shop.example.com"'`,
			func() error { _, err := s.Certificate(ctx, "shop"); return err }},
		{"certificate time garbled",
			`UPDATE certificates SET names = '[]', not_after = '2026-13-01'`,
			func() error { _, err := s.Certificates(ctx); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.exec(ctx, tt.sql); err != nil {
				t.Fatal(err)
			}
			if err := tt.read(); err == nil {
				t.Error("read succeeded, want an error")
			}
		})
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestStoreFileModes(t *testing.T) {
	s, path := openSQLiteTestStore(t)
	ctx := t.Context()
	if err := s.PutOrder(ctx, fullOrder("u1", "shop")); err != nil {
		t.Fatal(err)
	}
	// While the store is open and has written, WAL mode keeps -wal and
	// -shm next to the database: all three must be private.
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if m := fileMode(t, p); m != 0o600 {
			t.Errorf("%s has mode %#o, want 0600", filepath.Base(p), m)
		}
	}
}

func TestStoreOpenRefuses(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()

	public := filepath.Join(dir, "public.db")
	if err := os.WriteFile(public, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(public, 0o644); err != nil {
		t.Fatal(err)
	}
	publicWAL := filepath.Join(dir, "wal.db")
	s, err := OpenSQLite(ctx, publicWAL)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutOrder(ctx, fullOrder("u1", "shop")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(publicWAL+"-wal", nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(publicWAL+"-wal", 0o640); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, path, want string
	}{
		{"no path", "", "no path"},
		{"missing directory", filepath.Join(dir, "missing", "state.db"), "no such file"},
		{"a directory", dir, "is a directory"},
		{"readable by others", public, "chmod 600"},
		{"WAL readable by the group", publicWAL, "wal.db-wal has mode 0640"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenSQLite(ctx, tt.path)
			if err == nil {
				s.Close()
				t.Fatal("OpenSQLite succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
	// The refused file is left as it was: fixing modes is the admin's call.
	if m := fileMode(t, public); m != 0o644 {
		t.Errorf("refused file's mode changed to %#o", m)
	}
}

func TestStoreOddPath(t *testing.T) {
	// '?', '#' and '%' mean something in SQLite's URIs: the database must
	// still be exactly the file named, and no other file may appear.
	dir := t.TempDir()
	path := filepath.Join(dir, "st?ate#1%41.db")
	s, err := OpenSQLite(t.Context(), path)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	if err := s.PutOrder(t.Context(), fullOrder("u1", "shop")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{filepath.Base(path)}; !reflect.DeepEqual(names, want) {
		t.Errorf("directory holds %q, want %q", names, want)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Size() == 0 {
		t.Errorf("the database was not written to %s: %v", path, err)
	}
}

func testStoreHonoursContext(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := map[string]func() error{
		"Certificate":    func() error { _, err := s.Certificate(ctx, "shop"); return err },
		"PutCertificate": func() error { return s.PutCertificate(ctx, fullCertificate("shop")) },
		"Certificates":   func() error { _, err := s.Certificates(ctx); return err },
		"Order":          func() error { _, err := s.Order(ctx, "u1"); return err },
		"OrderByToken":   func() error { _, err := s.OrderByToken(ctx, "tok"); return err },
		"ActiveOrder":    func() error { _, err := s.ActiveOrder(ctx, "shop"); return err },
		"ActiveOrders":   func() error { _, err := s.ActiveOrders(ctx); return err },
		"PutOrder":       func() error { return s.PutOrder(ctx, fullOrder("u1", "shop")) },
		"AddAttempt":     func() error { return s.AddAttempt(ctx, fullAttempt("shop", "u1")) },
		"Attempts":       func() error { _, err := s.Attempts(ctx, "shop", 0); return err },
		"RecentAttempts": func() error { _, err := s.RecentAttempts(ctx, 20); return err },
		"TotalCost":      func() error { _, err := s.TotalCost(ctx, "shop"); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
		}
	}
	// Nothing was written.
	if _, err := s.Order(t.Context(), "u1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("PutOrder with a cancelled context stored the order: %v", err)
	}
	if _, err := b.newDB(t).open(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("open with a cancelled context: %v, want context.Canceled", err)
	}
}

func testStoreConcurrentPutOrder(t *testing.T, b storeBackend) {
	s, db := b.openTestStore(t)
	ctx := t.Context()
	// A second store on the same database stands for a second process
	// ("dcvd reissue" while the daemon runs, or another dcvd of a
	// cluster): the invariants must hold across connections, not only
	// between goroutines sharing one.
	s2, err := db.open(ctx)
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	defer s2.Close()
	stores := []testStore{s, s2}
	const certs, contenders = 8, 8
	var wg sync.WaitGroup

	// Each certificate's order walks its steps from its own goroutine,
	// all certificates at once.
	steps := []Step{StepNew, StepSubmitted, StepPublishing, StepPublished, StepVisible,
		StepRechecked, StepIssued, StepDeployed, StepReloaded, StepDone}
	errs := make(chan error, certs*len(steps)+contenders)
	for i := range certs {
		wg.Go(func() {
			st := stores[i%2]
			o := fullOrder(fmt.Sprintf("walk-%d", i), fmt.Sprintf("cert-%d", i))
			for _, step := range steps {
				o.Step = step
				if err := st.PutOrder(ctx, o); err != nil {
					errs <- err
					return
				}
				if err := st.AddAttempt(ctx, Attempt{Cert: o.Cert, UniqueID: o.UniqueID, Outcome: StepDone, Cost: 1}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	// Meanwhile several goroutines race to start an order for the same
	// certificate: exactly one may win.
	var mu sync.Mutex
	var winners []string
	for i := range contenders {
		wg.Go(func() {
			uid := fmt.Sprintf("race-%d", i)
			err := stores[i%2].PutOrder(ctx, &Order{UniqueID: uid, Cert: "contested", Step: StepNew, CallbackToken: uid})
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, uid)
				mu.Unlock()
			case !errors.Is(err, ErrActiveOrder):
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if len(winners) != 1 {
		t.Fatalf("%d orders in flight were accepted for one certificate (%v), want 1", len(winners), winners)
	}
	active, err := s.ActiveOrders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 1 || active[0].UniqueID != winners[0] {
		t.Errorf("ActiveOrders = %d orders, want only %s", len(active), winners[0])
	}
	for i := range certs {
		o, err := s.Order(ctx, fmt.Sprintf("walk-%d", i))
		if err != nil || o.Step != StepDone {
			t.Errorf("walk-%d = %+v, %v; want done", i, o, err)
		}
		if total, err := s.TotalCost(ctx, fmt.Sprintf("cert-%d", i)); err != nil || total != 1 {
			t.Errorf("TotalCost(cert-%d) = %v, %v; want 1 (one attempt per unique_id)", i, total, err)
		}
	}
}

// TestStoreKnownSteps keeps knownSteps in step with the Step constants
// declared in types.go: an order in a step missing there could not be
// stored.
func TestStoreKnownSteps(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "types.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := map[Step]bool{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Step" {
				continue
			}
			for _, v := range vs.Values {
				lit, ok := v.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("a Step constant is not a string literal: %T", v)
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				declared[Step(s)] = true
			}
		}
	}
	if len(declared) == 0 {
		t.Fatal("found no Step constants in types.go")
	}
	if !reflect.DeepEqual(declared, knownSteps) {
		t.Errorf("Step constants in types.go = %v, knownSteps = %v", declared, knownSteps)
	}
}

func testStoreCertificateSummaries(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	if got, err := s.CertificateSummaries(ctx); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("CertificateSummaries on an empty store = %v, %v; want an empty slice, nil", got, err)
	}
	for _, name := range []string{"web", "mail"} {
		c := &Certificate{Name: name, Serial: "0a" + name, Names: []string{name + ".example.com"},
			NotBefore: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC),
			CertPEM: "leaf of " + name, ChainPEM: "chain of " + name, KeyFile: "/k/" + name, KeySealed: "v1:sealed",
			UniqueID: "u-" + name, DeployedAt: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
		if err := s.PutCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	full, err := s.Certificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.CertificateSummaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(full) {
		t.Fatalf("%d summaries for %d certificates", len(got), len(full))
	}
	for i, c := range full {
		want := *c
		want.CertPEM, want.ChainPEM, want.KeySealed = "", "", ""
		if !reflect.DeepEqual(got[i], &want) {
			t.Errorf("summary %d = %+v, want %+v", i, got[i], want)
		}
	}
}

// testStoreRecentAttemptsReadOnlyTheLimit: the limit is applied by the
// database, so that the sweep reads KeptAttempts attempts per
// certificate however long the histories: an attempt beyond the limit that
// cannot be read (its time is garbage) is not read.
func testStoreRecentAttemptsReadOnlyTheLimit(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	const n = KeptAttempts + 10
	for i := range n {
		for _, cert := range []string{"shop", "api"} {
			a := fullAttempt(cert, fmt.Sprintf("%s-%02d", cert, i))
			a.Finished = t0.Add(time.Duration(i) * time.Hour)
			if err := s.AddAttempt(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.AddAttempt(ctx, fullAttempt("web", "web-0")); err != nil {
		t.Fatal(err)
	}
	want := map[string][]Attempt{}
	for _, cert := range []string{"shop", "api", "web"} {
		h, err := s.Attempts(ctx, cert, KeptAttempts)
		if err != nil {
			t.Fatal(err)
		}
		want[cert] = h
	}
	if len(want["shop"]) != KeptAttempts || want["shop"][0].UniqueID != fmt.Sprintf("shop-%02d", n-1) {
		t.Fatalf("Attempts(shop, %d) = %d entries, newest %s", KeptAttempts, len(want["shop"]), want["shop"][0].UniqueID)
	}
	// The oldest of each long history can no longer be read.
	if err := s.exec(ctx, `UPDATE attempts SET finished = 'garbage' WHERE unique_id IN ('shop-00', 'api-00')`); err != nil {
		t.Fatal(err)
	}
	got, err := s.RecentAttempts(ctx, KeptAttempts)
	if err != nil {
		t.Fatalf("RecentAttempts(%d) read beyond the limit: %v", KeptAttempts, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("RecentAttempts(%d):\n got %+v\nwant %+v", KeptAttempts, got, want)
	}
	if _, err := s.Attempts(ctx, "shop", KeptAttempts); err != nil {
		t.Errorf("Attempts(shop, %d) read beyond the limit: %v", KeptAttempts, err)
	}
	// The whole history does reach the garbage: the test tests something.
	if _, err := s.RecentAttempts(ctx, 0); err == nil {
		t.Error("RecentAttempts(0) read a garbage time without an error")
	}
}

// putOrderAt stores o as written at time at (its Updated, and its Created
// when new).
func putOrderAt(t *testing.T, s testStore, o *Order, at time.Time) {
	t.Helper()
	s.SetClock(func() time.Time { return at })
	if err := s.PutOrder(t.Context(), o); err != nil {
		t.Fatalf("PutOrder %s: %v", o.UniqueID, err)
	}
}

func testStoreGenerations(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	if got, err := s.Generations(ctx, 2); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Generations on an empty store = %#v, %v; want an empty map", got, err)
	}
	day := 24 * time.Hour
	orders := []struct {
		uid, cert string
		step      Step
		age       int // days
	}{
		{"s1", "shop", StepDone, 90}, {"s2", "shop", StepFailed, 70}, {"s3", "shop", StepDone, 60},
		{"s4", "shop", StepDone, 30}, {"s5", "shop", StepFailed, 10}, {"s6", "shop", StepPublished, 5},
		{"a1", "api", StepDone, 50}, {"w1", "web", StepFailed, 20},
	}
	for _, o := range orders {
		full := fullOrder(o.uid, o.cert)
		full.Step = o.step
		putOrderAt(t, s, full, t1.Add(-time.Duration(o.age)*day))
	}
	tests := []struct {
		limit int
		want  map[string][]string
	}{
		{2, map[string][]string{"shop": {"s4", "s3"}, "api": {"a1"}}},
		{1, map[string][]string{"shop": {"s4"}, "api": {"a1"}}},
		{0, map[string][]string{"shop": {"s4", "s3", "s1"}, "api": {"a1"}}},
	}
	for _, tt := range tests {
		got, err := s.Generations(ctx, tt.limit)
		if err != nil {
			t.Fatalf("Generations(%d): %v", tt.limit, err)
		}
		ids := map[string][]string{}
		for cert, os := range got {
			for _, o := range os {
				ids[cert] = append(ids[cert], o.UniqueID)
				// Only what the keys need, without the bulk.
				want := &Order{UniqueID: o.UniqueID, Cert: cert, Step: StepDone, KeyFile: fullOrder(o.UniqueID, cert).KeyFile,
					Created: o.Updated, Updated: o.Updated}
				if !reflect.DeepEqual(o, want) {
					t.Errorf("Generations(%d): %+v, want %+v", tt.limit, o, want)
				}
			}
		}
		if !reflect.DeepEqual(ids, tt.want) {
			t.Errorf("Generations(%d) = %v, want %v", tt.limit, ids, tt.want)
		}
	}
}

// testStorePruneAttempts: the attempts older than the retention or beyond
// the count per certificate go, but never the newest KeptAttempts, which
// the renewal decision reads, and never another certificate's; the costs
// of those deleted still count in TotalCost.
func testStorePruneAttempts(t *testing.T, b storeBackend) {
	day := 24 * time.Hour
	now := t1
	tests := []struct {
		name   string
		n      int                 // attempts of shop, one a day, the newest a day old
		failed func(rank int) bool // rank 1 is the newest
		policy HistoryPolicy
		want   int // the newest attempts of shop that stay
	}{
		{name: "young history", n: 5, policy: HistoryPolicy{Before: now.Add(-30 * day), PerCertificate: 100}, want: 5},
		{name: "by age, down to the floor", n: 40, policy: HistoryPolicy{Before: now.Add(-10 * day), PerCertificate: 100}, want: KeptAttempts},
		{name: "by age", n: 40, policy: HistoryPolicy{Before: now.Add(-30*day - time.Hour), PerCertificate: 100}, want: 30},
		{name: "by count", n: 40, policy: HistoryPolicy{PerCertificate: 25}, want: 25},
		{name: "by count, down to the floor", n: 40, policy: HistoryPolicy{PerCertificate: 5}, want: KeptAttempts},
		{name: "by age and count", n: 40, policy: HistoryPolicy{Before: now.Add(-30*day - time.Hour), PerCertificate: 25}, want: 25},
		{name: "no policy", n: 40, policy: HistoryPolicy{}, want: 40},
		{name: "old failures in a row", n: 40, failed: func(int) bool { return true },
			policy: HistoryPolicy{Before: now.Add(-time.Hour), PerCertificate: 1}, want: KeptAttempts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := b.openTestStore(t)
			ctx := t.Context()
			for i := range tt.n {
				rank := tt.n - i
				a := fullAttempt("shop", fmt.Sprintf("s%03d", rank))
				a.Cost = float64(rank)
				a.Finished = now.Add(-time.Duration(rank) * day)
				a.Outcome = StepDone
				if tt.failed != nil && tt.failed(rank) {
					a.Outcome = StepFailed
				}
				if err := s.AddAttempt(ctx, a); err != nil {
					t.Fatal(err)
				}
			}
			// Another certificate's short and old history.
			for i := range 3 {
				a := fullAttempt("api", fmt.Sprintf("a%d", i))
				a.Finished = now.Add(-1000 * day)
				if err := s.AddAttempt(ctx, a); err != nil {
					t.Fatal(err)
				}
			}
			before, err := s.Attempts(ctx, "shop", 0)
			if err != nil {
				t.Fatal(err)
			}
			costs := map[string]float64{}
			for _, cert := range []string{"shop", "api"} {
				if costs[cert], err = s.TotalCost(ctx, cert); err != nil {
					t.Fatal(err)
				}
			}
			// The renewal decision (daemon.NextRenewal) reads the newest
			// KeptAttempts attempts and nothing else of the history.
			decisionInput := before[:min(len(before), KeptAttempts)]

			pruned, err := s.PruneHistory(ctx, tt.policy)
			if err != nil {
				t.Fatalf("PruneHistory: %v", err)
			}
			after, err := s.Attempts(ctx, "shop", 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(after, before[:tt.want]) {
				t.Errorf("shop keeps %d attempts, want the newest %d", len(after), tt.want)
			}
			if pruned.Attempts != tt.n-tt.want || pruned.Orders != 0 {
				t.Errorf("PruneHistory = %+v, want %d attempts and no order", pruned, tt.n-tt.want)
			}
			if api, err := s.Attempts(ctx, "api", 0); err != nil || len(api) != 3 {
				t.Errorf("api's history after the prune: %d attempts, %v; want its 3, under the floor", len(api), err)
			}
			for cert, want := range costs {
				if got, err := s.TotalCost(ctx, cert); err != nil || got != want {
					t.Errorf("TotalCost(%s) after the prune = %v, %v; want %v as before", cert, got, err, want)
				}
			}
			if got := after[:min(len(after), KeptAttempts)]; !reflect.DeepEqual(got, decisionInput) {
				t.Errorf("the renewal decision's input changed with the prune: %d attempts, was %d", len(got), len(decisionInput))
			}
			// Again: nothing more to delete.
			if again, err := s.PruneHistory(ctx, tt.policy); err != nil || again != (Pruned{}) {
				t.Errorf("a second PruneHistory = %+v, %v; want nothing", again, err)
			}
		})
	}
}

// testStorePruneOrders: ended orders older than the retention or beyond
// the count per certificate go; never an order in flight, the live
// certificate's order, or the two newest done orders of a certificate
// (the live and the previous generations, whose keys are needed).
func testStorePruneOrders(t *testing.T, b storeBackend) {
	day := 24 * time.Hour
	now := t1
	orders := []struct {
		uid, cert string
		step      Step
		age       int // days
	}{
		{"s1", "shop", StepDone, 100},
		{"s2", "shop", StepFailed, 90},
		{"s3", "shop", StepDone, 80}, // the live certificate's
		{"s4", "shop", StepDone, 60}, // second newest done
		{"s5", "shop", StepFailed, 50},
		{"s6", "shop", StepDone, 40},      // newest done
		{"s7", "shop", StepPublished, 50}, // in flight
		{"a1", "api", StepFailed, 100},
		{"a2", "api", StepFailed, 1},
	}
	tests := []struct {
		name   string
		policy HistoryPolicy
		want   []string // the orders that stay
	}{
		{"by age", HistoryPolicy{Before: now.Add(-30 * day), PerCertificate: 100}, []string{"a2", "s3", "s4", "s6", "s7"}},
		{"by age, recent", HistoryPolicy{Before: now.Add(-55 * day), PerCertificate: 100}, []string{"a2", "s3", "s4", "s5", "s6", "s7"}},
		{"by count", HistoryPolicy{PerCertificate: 2}, []string{"a1", "a2", "s3", "s4", "s5", "s6", "s7"}},
		{"by count, one", HistoryPolicy{PerCertificate: 1}, []string{"a2", "s3", "s4", "s6", "s7"}},
		{"no policy", HistoryPolicy{}, []string{"a1", "a2", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := b.openTestStore(t)
			ctx := t.Context()
			for _, o := range orders {
				full := fullOrder(o.uid, o.cert)
				full.Step = o.step
				putOrderAt(t, s, full, now.Add(-time.Duration(o.age)*day))
			}
			live := fullCertificate("shop")
			live.UniqueID = "s3"
			if err := s.PutCertificate(ctx, live); err != nil {
				t.Fatal(err)
			}
			pruned, err := s.PruneHistory(ctx, tt.policy)
			if err != nil {
				t.Fatalf("PruneHistory: %v", err)
			}
			var kept []string
			for _, o := range orders {
				_, err := s.Order(ctx, o.uid)
				switch {
				case err == nil:
					kept = append(kept, o.uid)
				case !errors.Is(err, ErrNotFound):
					t.Fatal(err)
				}
			}
			slices.Sort(kept)
			if !reflect.DeepEqual(kept, tt.want) {
				t.Errorf("orders kept %v, want %v", kept, tt.want)
			}
			if pruned.Orders != len(orders)-len(tt.want) || pruned.Attempts != 0 {
				t.Errorf("PruneHistory = %+v, want %d orders", pruned, len(orders)-len(tt.want))
			}
			if a, err := s.ActiveOrder(ctx, "shop"); err != nil || a.UniqueID != "s7" {
				t.Errorf("the order in flight after the prune: %v, %v", a, err)
			}
		})
	}
}

// testStorePruneInBatches: each call deletes at most Limit rows of each
// table, and the calls add up to the whole prune, the costs carried once.
func testStorePruneInBatches(t *testing.T, b storeBackend) {
	s, _ := b.openTestStore(t)
	ctx := t.Context()
	day := 24 * time.Hour
	const perCert = 30
	certs := []string{"shop", "api", "web"}
	total := map[string]float64{}
	for i := range perCert {
		for _, cert := range certs {
			a := fullAttempt(cert, fmt.Sprintf("%s-%02d", cert, i))
			a.Cost = float64(i) + 0.5
			a.Finished = t1.Add(-time.Duration(perCert-i) * day)
			if err := s.AddAttempt(ctx, a); err != nil {
				t.Fatal(err)
			}
			total[cert] += a.Cost
			o := fullOrder(fmt.Sprintf("o-%s-%02d", cert, i), cert)
			o.Step = StepFailed
			putOrderAt(t, s, o, a.Finished)
		}
	}
	p := HistoryPolicy{Before: t1, PerCertificate: 100, Limit: 7}
	wantAttempts := len(certs) * (perCert - KeptAttempts)
	wantOrders := len(certs) * perCert
	var sum Pruned
	for calls := 0; ; calls++ {
		if calls > 100 {
			t.Fatal("PruneHistory never ran out of rows to delete")
		}
		n, err := s.PruneHistory(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if n.Attempts > p.Limit || n.Orders > p.Limit {
			t.Fatalf("one call deleted %+v, more than the limit %d", n, p.Limit)
		}
		sum.Attempts += n.Attempts
		sum.Orders += n.Orders
		if n == (Pruned{}) {
			break
		}
	}
	if sum.Attempts != wantAttempts || sum.Orders != wantOrders {
		t.Errorf("the calls deleted %+v, want %d attempts and %d orders", sum, wantAttempts, wantOrders)
	}
	for _, cert := range certs {
		if got, err := s.TotalCost(ctx, cert); err != nil || got != total[cert] {
			t.Errorf("TotalCost(%s) = %v, %v; want %v", cert, got, err, total[cert])
		}
		if h, err := s.Attempts(ctx, cert, 0); err != nil || len(h) != KeptAttempts {
			t.Errorf("%s keeps %d attempts, %v; want %d", cert, len(h), err, KeptAttempts)
		}
	}
}
