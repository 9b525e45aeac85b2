package fsutil

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteFileAtomicIgnoresUmaskAndLeavesNoTemp(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(p, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "new" {
		t.Fatalf("content %q, %v", b, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644 despite umask 077", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "f"), nil, 0o600); err == nil {
		t.Error("a write into a missing directory succeeded")
	}
}

func TestLookupIDs(t *testing.T) {
	tests := []struct {
		name    string
		lookup  func(string) (int, error)
		in      string
		want    int
		wantErr bool
	}{
		{"root by name", LookupUID, "root", 0, false},
		{"root group by name", LookupGID, "root", 0, false},
		{"numeric uid without an entry", LookupUID, "4242", 4242, false},
		{"numeric gid", LookupGID, "65534", 65534, false},
		{"unknown user", LookupUID, "no-such-user-dcvd", -1, true},
		{"unknown group", LookupGID, "no-such-group-dcvd", -1, true},
		{"negative", LookupUID, "-1", -1, true},
		{"out of range", LookupUID, "99999999999", -1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.lookup(tt.in)
			if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
				t.Fatalf("got %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
