package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/sandbox"
)

// notifyTimeout bounds the wait for one sd_notify message: dcvd sends them
// at once, so only a broken daemon makes a test wait that long.
const notifyTimeout = 20 * time.Second

// notifySocket is the NOTIFY_SOCKET a test gives dcvd, as systemd would:
// a unixgram socket whose messages it reads in order.
type notifySocket struct {
	path string
	msgs chan string
	// watchdogs counts the WATCHDOG=1 pings read so far.
	watchdogs atomic.Int64
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, msgs: make(chan string, 256)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 8192)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return n
}

// next returns the next message that is not a STATUS= or WATCHDOG= line,
// and the last STATUS= seen on the way.
func (n *notifySocket) next(t *testing.T, status *string) string {
	t.Helper()
	deadline := time.After(notifyTimeout)
	for {
		select {
		case m := <-n.msgs:
			if s, ok := strings.CutPrefix(m, "STATUS="); ok {
				if status != nil {
					*status = s
				}
				continue
			}
			if m == "WATCHDOG=1" {
				n.watchdogs.Add(1)
				continue
			}
			return m
		case <-deadline:
			t.Fatalf("no sd_notify message in %s", notifyTimeout)
			return ""
		}
	}
}

// expect fails unless the next message (past STATUS= and WATCHDOG=) is
// the state want, such as "READY=1"; RELOADING=1 must carry
// MONOTONIC_USEC.
func (n *notifySocket) expect(t *testing.T, want string, status *string) {
	t.Helper()
	m := n.next(t, status)
	first, rest, _ := strings.Cut(m, "\n")
	if first != want {
		t.Fatalf("sd_notify: got %q, want %s", m, want)
	}
	if want == "RELOADING=1" && !strings.HasPrefix(rest, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING=1 without MONOTONIC_USEC: %q", m)
	}
}

// shortTempDir is a directory with a short path, removed after the test:
// unix socket paths are limited to 107 bytes, and t.TempDir's can be long.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dcvd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// httpCert is a [[certificate]] validated by http files in webroot, which
// a web server at webAddr serves.
func httpCert(name, serviceID, webroot, webAddr, deployDir string) map[string]any {
	return map[string]any{
		"name":         name,
		"service_id":   serviceID,
		"webroot":      webroot,
		"http_connect": webAddr,
		"domains":      map[string]string{name + ".example.com": "http"},
		"deploy":       map[string]any{"dir": deployDir},
	}
}

// editConfig rewrites the configuration at path through edit.
func editConfig(t *testing.T, path string, edit func(cfg map[string]any)) {
	t.Helper()
	var cfg map[string]any
	if _, err := toml.DecodeFile(path, &cfg); err != nil {
		t.Fatal(err)
	}
	edit(cfg)
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// statusNames lists the certificates of a status, and the serial of each.
func statusNames(sts []control.CertStatus) (names []string, serials map[string]string) {
	serials = map[string]string{}
	for _, s := range sts {
		names = append(names, s.Name)
		serials[s.Name] = s.Serial
	}
	return names, serials
}

// TestSIGHUPReloadsConfig runs "dcvd run" as systemd would (NOTIFY_SOCKET,
// RUNTIME_DIRECTORY and WATCHDOG_USEC set) and checks the whole
// conversation: READY=1 once up, WATCHDOG=1 pings; a second daemon on the same state refused; on SIGHUP with a
// broken config RELOADING=1 then READY=1, the problem logged by its key,
// and the old configuration still served over the control socket (to
// "dcvd status" too); on SIGHUP with a good config that adds a certificate
// RELOADING=1, READY=1, both certificates in the status and the new one
// issued by the running daemon; on SIGTERM STOPPING=1 and exit 0, the
// control socket gone.
func TestSIGHUPReloadsConfig(t *testing.T) {
	bin := dcvdBinary(t, "")
	ctx := testContext(t)
	dir := t.TempDir()
	webroot := filepath.Join(dir, "webroot")
	webAddr := serveWebroot(t, webroot)
	product := sandbox.DefaultProducts()[0].ID
	sb, apiURL := startSandbox(t, sandbox.Config{HTTPAddr: webAddr, Products: sandbox.DefaultProducts(),
		Services: []sandbox.Service{{ID: "first", ProductID: product}, {ID: "second", ProductID: product}}})
	stateDir := filepath.Join(shortTempDir(t), "state")
	runtimeDir := shortTempDir(t)
	first := httpCert("first", "first", webroot, webAddr, filepath.Join(dir, "deploy-first"))
	second := httpCert("second", "second", webroot, webAddr, filepath.Join(dir, "deploy-second"))
	cfgPath := writeConfig(t, dir, sb, apiURL, map[string]any{
		"state_dir":     stateDir,
		"poll_interval": "50ms",
	}, nil, first)

	notify := newNotifySocket(t)
	// WatchdogSec=1s: a ping every half second.
	run := startDcvdRun(t, bin, cfgPath, runtimeDir, "NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=1000000")
	out := run.out
	signal := func(sig syscall.Signal) {
		t.Helper()
		if err := run.cmd.Process.Signal(sig); err != nil {
			t.Fatalf("signal %s: %v", sig, err)
		}
	}

	var status string
	notify.expect(t, "READY=1", &status)
	socket := filepath.Join(runtimeDir, control.SocketName)
	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatalf("control socket: %v", err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %s has mode %s, want a socket with 0600", socket, fi.Mode())
	}

	// A second daemon on the same state is refused, and leaves the first
	// one's socket alone.
	if r := runDcvd(ctx, bin, []string{"RUNTIME_DIRECTORY=" + shortTempDir(t)}, "run", "--config", cfgPath); r.err == nil ||
		!strings.Contains(r.stderr, "another dcvd daemon is running") {
		t.Fatalf("a second dcvd run: %v, stderr %q; want a refusal", r.err, r.stderr)
	}

	// The first certificate is issued by the daemon; "dcvd status" (no
	// RUNTIME_DIRECTORY: it goes through the link in the state directory)
	// asks the daemon.
	waitLive(ctx, t, bin, cfgPath, "first")
	ctl, err := control.Dial(filepath.Join(stateDir, control.SocketName))
	if err != nil {
		t.Fatalf("the control socket through the state directory's link: %v", err)
	}
	defer ctl.Close()

	// A broken config is refused, the old one kept.
	editConfig(t, cfgPath, func(cfg map[string]any) {
		cfg["daemon"].(map[string]any)["bogus_key"] = "x"
		cfg["certificate"] = []map[string]any{first, second}
	})
	signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1", &status)
	notify.expect(t, "READY=1", &status)
	// The log reaches the test through a pipe, maybe after READY=1.
	for deadline := time.Now().Add(notifyTimeout); !strings.Contains(out.String(), "daemon.bogus_key"); {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not name the refused key daemon.bogus_key")
		}
		time.Sleep(20 * time.Millisecond)
	}
	sts, err := ctl.Status(ctx)
	if err != nil {
		t.Fatalf("status over the control socket after the refused reload: %v", err)
	}
	if names, _ := statusNames(sts); !slices.Equal(names, []string{"first"}) {
		t.Errorf("after the refused reload the daemon has %v, want the old [first]", names)
	}
	if st := dcvdStatus(ctx, t, bin, cfgPath, "first"); st.Serial == "" {
		t.Errorf("dcvd status with the broken config on disk lost the issued certificate")
	}
	waitStatus(t, notify, &status, "last reload refused")

	// A good config with a second certificate is taken, and the daemon
	// issues it.
	editConfig(t, cfgPath, func(cfg map[string]any) {
		delete(cfg["daemon"].(map[string]any), "bogus_key")
	})
	signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1", &status)
	notify.expect(t, "READY=1", &status)
	sts, err = ctl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if names, _ := statusNames(sts); !slices.Equal(names, []string{"first", "second"}) {
		t.Fatalf("after the good reload the daemon has %v, want [first second]", names)
	}
	waitLive(ctx, t, bin, cfgPath, "second")
	checkDeployed(t, filepath.Join(dir, "deploy-second"), sb.RootPool(), []string{"second.example.com"})
	perService := map[string]int{}
	for _, c := range sb.Ledger() {
		perService[c.ServiceID]++
	}
	if perService["first"] != 1 || perService["second"] != 1 || len(perService) != 2 {
		t.Errorf("the sandbox charged %v, want once for each service", perService)
	}
	waitStatus(t, notify, &status, "2 certificates")
	// The watchdog is fed every half WATCHDOG_USEC.
	waitWatchdog(t, notify, &status)

	// SIGTERM: STOPPING=1, exit 0, the socket and its link gone.
	signal(syscall.SIGTERM)
	notify.expect(t, "STOPPING=1", &status)
	select {
	case <-run.done:
		if run.err != nil {
			t.Fatalf("dcvd run after SIGTERM: %v", run.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("dcvd run did not exit within 20s of SIGTERM")
	}
	for _, p := range []string{socket, filepath.Join(stateDir, control.SocketName)} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there after the stop (%v)", p, err)
		}
	}
}

// waitLive waits until "dcvd status --json" shows name live with no
// order in flight.
func waitLive(ctx context.Context, t *testing.T, bin, cfgPath, name string) {
	t.Helper()
	for {
		st := dcvdStatus(ctx, t, bin, cfgPath, name)
		if st.Serial != "" && st.Order == nil {
			if st.LastError != "" {
				t.Fatalf("%s issued, but with last error %q", name, st.LastError)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s was not issued (order %+v, last error %q): %v", name, st.Order, st.LastError, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitStatus waits for a STATUS= containing want (it is sent when it
// changes, and refreshed every 30 s at most).
func waitStatus(t *testing.T, n *notifySocket, status *string, want string) {
	t.Helper()
	waitNotify(t, n, status, func() bool { return strings.Contains(*status, want) },
		fmt.Sprintf("a status with %q", want),
		func() string { return fmt.Sprintf("no STATUS= with %q; the last was %q", want, *status) })
}

// waitWatchdog waits for a WATCHDOG=1 (unless one came already), taking
// STATUS= lines on the way.
func waitWatchdog(t *testing.T, n *notifySocket, status *string) {
	t.Helper()
	waitNotify(t, n, status, func() bool { return n.watchdogs.Load() > 0 }, "WATCHDOG=1",
		func() string { return fmt.Sprintf("no WATCHDOG=1 in %s with WATCHDOG_USEC set", notifyTimeout) })
}

// waitNotify takes the sd_notify messages, STATUS= into *status and
// WATCHDOG=1 counted, until done holds; any other message, or done still
// false after notifyTimeout, fails the test (waiting names what it waits
// for, timedOut says what did not come).
func waitNotify(t *testing.T, n *notifySocket, status *string, done func() bool, waiting string, timedOut func() string) {
	t.Helper()
	deadline := time.After(notifyTimeout)
	for !done() {
		select {
		case m := <-n.msgs:
			if s, ok := strings.CutPrefix(m, "STATUS="); ok {
				*status = s
			} else if m == "WATCHDOG=1" {
				n.watchdogs.Add(1)
			} else {
				t.Fatalf("sd_notify %q while waiting for %s", m, waiting)
			}
		case <-deadline:
			t.Fatal(timedOut())
		}
	}
}
