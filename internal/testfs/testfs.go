// Package testfs holds file system helpers shared by the tests of several
// packages. It is imported only by _test files.
package testfs

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// ReadOnly runs f with dir read-only for this process, and says how it
// was made so. Unprivileged: mode 0555. As root, which modes do not stop:
// a read-only bind mount of dir — what systemd's ProtectSystem=strict does
// to a path missing from ReadWritePaths= — in a mount namespace private to
// a thread of its own, where f runs (so f must do its file system work in
// the calling goroutine, and start none that touch dir). The test is
// skipped when neither is possible.
func ReadOnly(t testing.TB, dir string, f func() error) (err error, how string) {
	t.Helper()
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	probe := filepath.Join(dir, ".dcvd-test-writable")
	w, err := os.Create(probe)
	if err != nil {
		return f(), "mode 0555"
	}
	w.Close()
	os.Remove(probe)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	type result struct {
		err  error
		skip string
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the Go runtime ends a thread whose goroutine
		// exits locked, and the mount namespace with it, so the mount
		// never reaches the rest of the process or the host.
		runtime.LockOSThread()
		if err := syscall.Unshare(syscall.CLONE_NEWNS); err != nil {
			done <- result{skip: "unshare(CLONE_NEWNS): " + err.Error()}
			return
		}
		if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
			done <- result{skip: "make / private: " + err.Error()}
			return
		}
		if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
			done <- result{skip: "bind mount: " + err.Error()}
			return
		}
		if err := syscall.Mount("", dir, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			done <- result{skip: "remount read-only: " + err.Error()}
			return
		}
		done <- result{err: f()}
	}()
	r := <-done
	if r.skip != "" {
		t.Skipf("running as root, which file modes do not stop, and a read-only bind mount is not possible here (%s)", r.skip)
	}
	return r.err, "a read-only bind mount"
}
