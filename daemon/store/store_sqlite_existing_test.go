package store

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

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
