package control

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// SocketPaths says where the control socket of a daemon whose state
// directory is stateDir goes: in runtimeDir (systemd's $RUNTIME_DIRECTORY,
// whose first entry is used) when it is set, else in stateDir. When the
// socket is in runtimeDir, link is a symbolic link in stateDir to it, by
// which a command run outside the service, without $RUNTIME_DIRECTORY,
// finds it; otherwise link is "".
func SocketPaths(stateDir, runtimeDir string) (socket, link string) {
	inState := filepath.Join(stateDir, SocketName)
	if dir, _, _ := strings.Cut(runtimeDir, ":"); dir != "" {
		socket = filepath.Join(dir, SocketName)
		if socket != inState {
			return socket, inState
		}
	}
	return inState, ""
}

// Listener is the daemon's end of the control socket. Close stops
// listening and removes the socket and its link, if they are still the
// ones it created.
type Listener struct {
	net.Listener
	path, link string
	made       os.FileInfo
	closeOnce  sync.Once
	closeErr   error
}

// Path is the socket's path.
func (l *Listener) Path() string { return l.path }

// Close stops listening and removes the socket and its link.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		errs := []error{l.Listener.Close()}
		// A daemon started after this one (once this one stopped
		// answering) may have replaced them: leave those alone.
		if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.made) {
			errs = append(errs, ignoreNotExist(os.Remove(l.path)))
		}
		if l.link != "" {
			if target, err := os.Readlink(l.link); err == nil && target == l.path {
				errs = append(errs, ignoreNotExist(os.Remove(l.link)))
			}
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// Listen creates the control socket at path, mode 0600, and, when
// link is not "", a symbolic link at link to it (see SocketPaths).
// A socket (or link) left behind by a daemon that is gone is removed; one
// that still answers means another daemon runs, and Listen refuses.
// The socket's directory must exist.
func Listen(path, link string) (*Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket %s: the path is longer than the %d bytes a unix socket allows: use a shorter state_dir", path, maxSocketPath)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	if link != "" {
		if err := clearStale(link); err != nil {
			return nil, err
		}
	}
	// The socket is bound in a private directory and made 0600 before it
	// is linked into place, so that it is never reachable with the modes
	// of the process's umask, however wide.
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".dcvd-sock-")
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSocketPath {
		return nil, fmt.Errorf("control socket %s: the path is too long for a unix socket (%s, which dcvd binds first, is over %d bytes): use a shorter state_dir", path, tmp, maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// The listener's own name goes away with tmpDir; Close removes path.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*Listener, error) {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	// link(2) never replaces a file: a daemon that started in the same
	// moment and got there first makes this one fail, not both run.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fail(errors.New("another dcvd created it just now: is the daemon started twice?"))
		}
		return fail(err)
	}
	made, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	l := &Listener{Listener: ln, path: path, made: made}
	if link != "" {
		if err := os.Symlink(path, link); err != nil {
			l.Close()
			return nil, fmt.Errorf("control socket link %s: %w", link, err)
		}
		l.link = link
	}
	return l, nil
}

// clearStale removes a control socket (or link to one) at path that no
// daemon answers on, and refuses when one does or when path is something
// else.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode()&(fs.ModeSocket|fs.ModeSymlink) == 0 {
		return fmt.Errorf("control socket %s: a file that is not a socket is in the way: move it away", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("control socket %s: another dcvd daemon is running and answers on it: stop it first (dcvd status shows what it does)", path)
	}
	if !noDaemon(err) {
		return fmt.Errorf("control socket %s: cannot tell whether another daemon runs: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control socket %s: remove the one left by a daemon that is gone: %w", path, err)
	}
	return nil
}

// noDaemon reports whether a dial error means that nothing listens: no
// file (or a link to none), or a socket nobody accepts on.
func noDaemon(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
