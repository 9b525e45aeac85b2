package store

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

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
