package control

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/testfs"
)

// staleSocket leaves a socket file at path that nothing listens on, as a
// daemon killed with SIGKILL does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&fs.ModeSocket == 0 {
		t.Fatalf("no stale socket at %s: %v", path, err)
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// answers reports whether something accepts connections at path.
func answers(path string) bool {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestControlSocketPaths(t *testing.T) {
	tests := []struct {
		stateDir, runtimeDir string
		socket, link         string
	}{
		{"/var/lib/dcvd", "", "/var/lib/dcvd/dcvd.sock", ""},
		{"/var/lib/dcvd", "/run/dcvd", "/run/dcvd/dcvd.sock", "/var/lib/dcvd/dcvd.sock"},
		{"/var/lib/dcvd", "/run/dcvd:/run/other", "/run/dcvd/dcvd.sock", "/var/lib/dcvd/dcvd.sock"},
		{"/var/lib/dcvd", "/var/lib/dcvd", "/var/lib/dcvd/dcvd.sock", ""},
		{"/var/lib/dcvd", ":/run/other", "/var/lib/dcvd/dcvd.sock", ""},
	}
	for _, tt := range tests {
		socket, link := SocketPaths(tt.stateDir, tt.runtimeDir)
		if socket != tt.socket || link != tt.link {
			t.Errorf("ControlSocketPaths(%q, %q) = %q, %q; want %q, %q", tt.stateDir, tt.runtimeDir, socket, link, tt.socket, tt.link)
		}
	}
}

// TestControlSocketListen: the socket is 0600 from the start, a stale one
// is replaced, a live one or a stranger file refused, and Close removes
// only what is still its own.
func TestControlSocketListen(t *testing.T) {
	t.Run("mode 0600 and nothing else left", func(t *testing.T) {
		dir := testfs.ShortDir(t)
		path := filepath.Join(dir, SocketName)
		l, err := Listen(path, "")
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %s, want a socket with 0600", path, fi.Mode())
		}
		if got := entries(t, dir); !slices.Equal(got, []string{SocketName}) {
			t.Errorf("the directory holds %v, want only %s", got, SocketName)
		}
		if !answers(path) {
			t.Fatal("nothing answers on the socket")
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if got := entries(t, dir); len(got) != 0 {
			t.Errorf("after Close the directory holds %v", got)
		}
	})

	t.Run("stale socket removed", func(t *testing.T) {
		path := filepath.Join(testfs.ShortDir(t), SocketName)
		staleSocket(t, path)
		l, err := Listen(path, "")
		if err != nil {
			t.Fatalf("a stale socket made ListenControl fail: %v", err)
		}
		defer l.Close()
		if !answers(path) {
			t.Fatal("nothing answers on the new socket")
		}
	})

	t.Run("live socket refused", func(t *testing.T) {
		path := filepath.Join(testfs.ShortDir(t), SocketName)
		l, err := Listen(path, "")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		l2, err := Listen(path, "")
		if err == nil {
			l2.Close()
			t.Fatal("a second daemon took over a live control socket")
		}
		if !strings.Contains(err.Error(), "another dcvd daemon is running") {
			t.Errorf("refusal %q does not say another daemon runs", err)
		}
		if !answers(path) {
			t.Error("the refused attempt broke the live socket")
		}
	})

	t.Run("file in the way refused", func(t *testing.T) {
		path := filepath.Join(testfs.ShortDir(t), SocketName)
		if err := os.WriteFile(path, []byte("keep me\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if l, err := Listen(path, ""); err == nil {
			l.Close()
			t.Fatal("ListenControl replaced a regular file")
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "keep me\n" {
			t.Errorf("the file in the way was changed: %q, %v", b, err)
		}
	})

	t.Run("path too long", func(t *testing.T) {
		path := filepath.Join(testfs.ShortDir(t), strings.Repeat("d", 100), SocketName)
		if l, err := Listen(path, ""); err == nil {
			l.Close()
			t.Fatal("ListenControl took a path longer than a unix socket allows")
		} else if !strings.Contains(err.Error(), "too long") && !strings.Contains(err.Error(), "longer than") {
			t.Errorf("error %q does not say the path is too long", err)
		}
	})

	t.Run("link in the state directory", func(t *testing.T) {
		stateDir, runtimeDir := testfs.ShortDir(t), testfs.ShortDir(t)
		socket, link := SocketPaths(stateDir, runtimeDir)
		// A link left by a daemon that is gone points nowhere.
		if err := os.Symlink(filepath.Join(runtimeDir, "gone.sock"), link); err != nil {
			t.Fatal(err)
		}
		l, err := Listen(socket, link)
		if err != nil {
			t.Fatal(err)
		}
		if target, err := os.Readlink(link); err != nil || target != socket {
			t.Fatalf("link %s points to %q (%v), want %s", link, target, err, socket)
		}
		c, err := Dial(link)
		if err != nil {
			t.Fatalf("dial through the link: %v", err)
		}
		c.Close()
		// A second daemon with another runtime directory finds the first
		// through the link.
		socket2, _ := SocketPaths(stateDir, testfs.ShortDir(t))
		if l2, err := Listen(socket2, link); err == nil {
			l2.Close()
			t.Fatal("a second daemon on the same state directory was not refused")
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{socket, link} {
			if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("after Close %s is still there (%v)", p, err)
			}
		}
	})

	t.Run("close leaves a newer socket alone", func(t *testing.T) {
		path := filepath.Join(testfs.ShortDir(t), SocketName)
		old, err := Listen(path, "")
		if err != nil {
			t.Fatal(err)
		}
		// Someone removed it; a new daemon took the place.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		l, err := Listen(path, "")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		old.Close()
		if !answers(path) {
			t.Fatal("closing the old listener removed the new daemon's socket")
		}
	})
}

// TestControlDialNoDaemon: without a daemon the dial fails at once with
// ErrNoDaemon, so that commands fall back to the state.
func TestControlDialNoDaemon(t *testing.T) {
	dir := testfs.ShortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	staleSocket(t, stale)
	for _, path := range []string{filepath.Join(dir, "missing.sock"), stale} {
		c, err := Dial(path)
		if err == nil {
			c.Close()
			t.Fatalf("DialControl(%s) succeeded", path)
		}
		if !errors.Is(err, ErrNoDaemon) {
			t.Errorf("DialControl(%s): %v, want ErrNoDaemon", path, err)
		}
	}
}
