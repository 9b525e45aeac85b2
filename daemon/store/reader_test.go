package store

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDialectRebind checks the placeholders of each dialect: SQLite's
// statements are as written, PostgreSQL's numbered in order, and a ? in a
// string literal is no placeholder.
func TestDialectRebind(t *testing.T) {
	q := `SELECT a FROM t WHERE b = ? AND c = '?' AND d IN (?, ?)`
	if got := sqliteDialect.rebind(q); got != q {
		t.Errorf("sqlite rebind = %q, want it unchanged", got)
	}
	want := `SELECT a FROM t WHERE b = $1 AND c = '?' AND d IN ($2, $3)`
	if got := postgresDialect.rebind(q); got != want {
		t.Errorf("postgres rebind = %q, want %q", got, want)
	}
	if got := postgresDialect.rebind(`SELECT 1`); got != `SELECT 1` {
		t.Errorf("postgres rebind without placeholders = %q", got)
	}
}

// sharedReader returns the reader s reads through, the one implementation
// of Reader both drivers embed.
func sharedReader(t *testing.T, s testStore) reader {
	t.Helper()
	switch s := s.(type) {
	case *SQLiteStore:
		return s.reader
	case *PostgresStore:
		return s.reader
	}
	t.Fatalf("%T embeds no reader", s)
	return reader{}
}

// testStoreSharedReader runs every method of the shared reader against the
// backend's dialect (storeSuite runs it on SQLite and on PostgreSQL), with
// names that sort differently by bytes than in most locales: whatever the
// database's collation, lists come in byte order.
func testStoreSharedReader(t *testing.T, b storeBackend) {
	s, db := b.openTestStore(t)
	r := sharedReader(t, s)
	if r.d.name != db.dialect.name {
		t.Fatalf("the %s store reads with the %s dialect", db.dialect.name, r.d.name)
	}
	ctx := t.Context()
	if r.d.numbered {
		// A test server in the C locale sorts by bytes anyway: give the
		// sorted columns a locale's collation, where ICU has one, so
		// that only the dialect's COLLATE "C" keeps the byte order.
		for _, c := range []string{"certificates.name", "services.service_id", "orders.unique_id", "orders.cert"} {
			table, column, _ := strings.Cut(c, ".")
			if err := s.exec(ctx, `ALTER TABLE `+table+` ALTER COLUMN `+column+` TYPE TEXT COLLATE "und-x-icu"`); err != nil {
				t.Logf("no ICU collation, the columns keep the database's: %v", err)
				break
			}
		}
	}
	s.SetClock(func() time.Time { return t0 }) // equal times: ties go by name

	// By bytes: upper case, then '_', then lower case, then non-ASCII.
	names := []string{"B", "_c", "a", "é"}
	for _, n := range []string{"é", "a", "_c", "B"} {
		c := fullCertificate(n)
		c.UniqueID = "done-" + n
		if err := s.PutCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
		done := fullOrder("done-"+n, n)
		done.Step, done.CallbackToken = StepDone, ""
		if err := s.PutOrder(ctx, done); err != nil {
			t.Fatal(err)
		}
		active := fullOrder("active-"+n, n)
		active.Step, active.CallbackToken = StepNew, "token-"+n
		if err := s.PutOrder(ctx, active); err != nil {
			t.Fatal(err)
		}
		for _, uid := range []string{"done-" + n, ""} {
			if err := s.AddAttempt(ctx, Attempt{Cert: n, UniqueID: uid, Outcome: StepDone, Cost: 2}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.PutService(ctx, Service{ServiceID: n, Cert: n, AlertedDays: NoServiceAlert}); err != nil {
			t.Fatal(err)
		}
	}

	certs, err := r.Certificates(ctx)
	if err != nil || !slices.Equal(certNames(certs), names) {
		t.Errorf("Certificates = %v, %v; want %v", certNames(certs), err, names)
	}
	sums, err := r.CertificateSummaries(ctx)
	if err != nil || !slices.Equal(certNames(sums), names) {
		t.Errorf("CertificateSummaries = %v, %v; want %v", certNames(sums), err, names)
	}
	for _, c := range sums {
		if c.CertPEM != "" || c.ChainPEM != "" || c.KeySealed != "" {
			t.Errorf("summary of %q has its bulk", c.Name)
		}
	}
	svcs, err := r.Services(ctx)
	var ids []string
	for _, sv := range svcs {
		ids = append(ids, sv.ServiceID)
	}
	if err != nil || !slices.Equal(ids, names) {
		t.Errorf("Services = %v, %v; want %v", ids, err, names)
	}
	active, err := r.ActiveOrders(ctx)
	var uids []string
	for _, o := range active {
		uids = append(uids, o.UniqueID)
	}
	wantActive := []string{"active-B", "active-_c", "active-a", "active-é"}
	if err != nil || !slices.Equal(uids, wantActive) {
		t.Errorf("ActiveOrders = %v, %v; want %v (equal Created: by unique_id, by bytes)", uids, err, wantActive)
	}
	gens, err := r.Generations(ctx, 0)
	if err != nil || !slices.Equal(slices.Sorted(maps.Keys(gens)), slices.Sorted(slices.Values(names))) {
		t.Errorf("Generations = %v, %v; want a key per certificate", gens, err)
	}
	for _, n := range names {
		if g := gens[n]; len(g) != 1 || g[0].UniqueID != "done-"+n || g[0].KeyFile != fullOrder("done-"+n, n).KeyFile {
			t.Errorf("Generations[%q] = %+v; want done-%s with its key file (read from the JSON by the dialect)", n, g, n)
		}
	}

	for _, n := range names {
		if c, err := r.Certificate(ctx, n); err != nil || c.Name != n {
			t.Errorf("Certificate(%q) = %v, %v", n, c, err)
		}
		if o, err := r.Order(ctx, "done-"+n); err != nil || o.Cert != n {
			t.Errorf("Order(done-%s) = %v, %v", n, o, err)
		}
		if o, err := r.OrderByToken(ctx, "token-"+n); err != nil || o.UniqueID != "active-"+n {
			t.Errorf("OrderByToken(token-%s) = %v, %v", n, o, err)
		}
		if o, err := r.ActiveOrder(ctx, n); err != nil || o.UniqueID != "active-"+n {
			t.Errorf("ActiveOrder(%q) = %v, %v", n, o, err)
		}
		if h, err := r.Attempts(ctx, n, 1); err != nil || len(h) != 1 || h[0].UniqueID != "" {
			t.Errorf("Attempts(%q, 1) = %+v, %v; want the newest only", n, h, err)
		}
		if total, err := r.TotalCost(ctx, n); err != nil || total != 4 {
			t.Errorf("TotalCost(%q) = %v, %v; want 4", n, total, err)
		}
	}
	recent, err := r.RecentAttempts(ctx, 1)
	if err != nil || len(recent) != len(names) {
		t.Errorf("RecentAttempts(1) = %v, %v; want a history per certificate", recent, err)
	}
	for n, h := range recent {
		if len(h) != 1 || h[0].UniqueID != "" {
			t.Errorf("RecentAttempts(1)[%q] = %+v; want the newest only", n, h)
		}
	}

	if _, err := r.Certificate(ctx, "A"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Certificate of another case = %v, want ErrNotFound", err)
	}
	if _, err := r.OrderByToken(ctx, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("OrderByToken(\"\") = %v, want ErrNotFound", err)
	}
}
