package store

import (
	"context"
	"errors"
	"reflect"
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
	{"SharedReader", testStoreSharedReader},
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
