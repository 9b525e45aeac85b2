package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

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

// A reader ("dcvd status") must not create the state database: a file
// created by root before the service starts locks the daemon's user out.
func TestOpenSQLiteExistingCreatesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "dcvd.db")
	_, err := OpenSQLiteExisting(ctx, path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("OpenSQLiteExisting on no database: %v, want an error matching fs.ErrNotExist", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("OpenSQLiteExisting left %d file(s) behind: %v", len(entries), entries)
	}

	// Once the daemon has made it, the reader opens it.
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenSQLiteExisting(ctx, path)
	if err != nil {
		t.Fatalf("OpenSQLiteExisting on the daemon's database: %v", err)
	}
	defer s.Close()
	if _, err := s.ActiveOrders(ctx); err != nil {
		t.Fatal(err)
	}
}
