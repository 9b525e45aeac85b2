// Package pgtest gives tests a private PostgreSQL schema on the test server
// that scripts/postgres.sh started: each test starts from an empty
// database and never sees another test's rows.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DSN returns the DSN of the test server that scripts/postgres.sh
// started, or skips the test without one (fails instead when
// DCVD_TEST_REQUIRE_SERVERS is set, as in CI).
func DSN(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("DCVD_TEST_POSTGRES_DSN")
	if dsn != "" {
		return dsn
	}
	const why = "DCVD_TEST_POSTGRES_DSN is not set: start a server with scripts/postgres.sh start DIR, then set -a; . DIR/env; set +a"
	if os.Getenv("DCVD_TEST_REQUIRE_SERVERS") != "" {
		t.Fatal(why + " (DCVD_TEST_REQUIRE_SERVERS is set, so this fails rather than skips)")
	}
	t.Skip(why)
	return ""
}

// WithParam returns dsn with the parameter key set to value, in either form
// of DSN (value must need no quoting).
func WithParam(t testing.TB, dsn, key, value string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal("DCVD_TEST_POSTGRES_DSN does not parse as a URL")
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "=" + value
}

// NewSchema creates a schema of its own for the test, dropped with
// everything in it when the test ends, and returns a DSN that uses it: each
// test starts from an empty database, and tests never see each other's rows.
func NewSchema(t testing.TB) string {
	t.Helper()
	dsn := DSN(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to the test server: %v", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	schema := "dcvd_test_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("connect to drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	return WithParam(t, dsn, "search_path", schema)
}
