package sdnotify

import (
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// listen binds a unixgram socket at addr (a path, or '@' for the abstract
// namespace) and points NOTIFY_SOCKET at it, as systemd does.
func listen(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", addr)
	return conn
}

// receive returns the next datagram. The deadline only keeps a broken
// sender from hanging the test; nothing is measured.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	return string(buf[:n])
}

// unsetenv removes key for the rest of the test and restores it after.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	t.Setenv(key, "")
	os.Unsetenv(key)
}

func monotonicNow(t *testing.T) uint64 {
	t.Helper()
	u, err := monotonicUsec()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestMessages(t *testing.T) {
	conn := listen(t, filepath.Join(t.TempDir(), "notify"))
	long := strings.Repeat("é", maxStatus) // 2 bytes each: twice the limit
	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"ready", Ready, "READY=1"},
		{"stopping", Stopping, "STOPPING=1"},
		{"watchdog", Watchdog, "WATCHDOG=1"},
		{"status", func() error { return Status("renewing shop: step visible") }, "STATUS=renewing shop: step visible"},
		{"status empty", func() error { return Status("") }, "STATUS="},
		{"status keeps UTF-8", func() error { return Status("续期 shop") }, "STATUS=续期 shop"},
		// A line break would let text from an API reply add READY=1 or
		// MAINPID= of its own.
		{"status cannot inject", func() error { return Status("failed: x\nREADY=1\r\nMAINPID=1") },
			"STATUS=failed: x READY=1  MAINPID=1"},
		{"raw", func() error { return Notify("STATUS=a\nERRNO=5") }, "STATUS=a\nERRNO=5"},
		{"status long", func() error { return Status(long) }, "STATUS=" + strings.Repeat("é", (maxStatus-len("…"))/2) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.send(); err != nil {
				t.Fatalf("send: %v", err)
			}
			if got := receive(t, conn); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStatusLineCutsAtCharacterBoundary(t *testing.T) {
	for _, s := range []string{
		strings.Repeat("a", maxStatus+1),
		"a" + strings.Repeat("é", maxStatus),
		strings.Repeat("续", maxStatus),
	} {
		got := statusLine(s)
		if len(got) > maxStatus {
			t.Errorf("statusLine(%d bytes) = %d bytes, want at most %d", len(s), len(got), maxStatus)
		}
		if !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
			t.Errorf("statusLine(%d bytes) is not valid UTF-8 ending in an ellipsis: %q", len(s), got[len(got)-8:])
		}
	}
	exact := strings.Repeat("a", maxStatus)
	if got := statusLine(exact); got != exact {
		t.Errorf("statusLine of exactly %d bytes was changed", maxStatus)
	}
}

func TestReloadingCarriesMonotonicTime(t *testing.T) {
	conn := listen(t, filepath.Join(t.TempDir(), "notify"))
	before := monotonicNow(t)
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	after := monotonicNow(t)
	got := receive(t, conn)
	m := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=([0-9]+)$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("got %q, want RELOADING=1 and MONOTONIC_USEC=", got)
	}
	usec, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	// CLOCK_MONOTONIC, not the wall clock: the value lies between two
	// readings of that clock taken around the call.
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d, not within [%d, %d] (CLOCK_MONOTONIC around the call)", usec, before, after)
	}
}

func TestAbstractSocket(t *testing.T) {
	addr := "@dcvd-sdnotify-test-" + strconv.Itoa(os.Getpid()) + "-" + rand.Text()
	conn := listen(t, addr)
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, conn); got != "READY=1" {
		t.Errorf("got %q, want READY=1", got)
	}
	// Nothing appears in the file system for an abstract name.
	if _, err := os.Stat(addr); !os.IsNotExist(err) {
		t.Errorf("stat %s: %v, want not exist", addr, err)
	}
}

func TestNoSocketIsNoOp(t *testing.T) {
	for _, set := range []bool{false, true} {
		if set {
			t.Setenv("NOTIFY_SOCKET", "")
		} else {
			unsetenv(t, "NOTIFY_SOCKET")
		}
		for name, send := range map[string]func() error{
			"Ready": Ready, "Reloading": Reloading, "Stopping": Stopping, "Watchdog": Watchdog,
			"Status": func() error { return Status("x") }, "Notify": func() error { return Notify("READY=1") },
		} {
			if err := send(); err != nil {
				t.Errorf("%s with NOTIFY_SOCKET unset (or empty: %v): %v", name, set, err)
			}
		}
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	notSocket := filepath.Join(dir, "file")
	if err := os.WriteFile(notSocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	secret := "api said: key s3cr3t-value rejected"
	tests := []struct {
		name, addr string
		send       func() error
		want       string // in the error
	}{
		{"missing socket", filepath.Join(dir, "none"), Ready, "sd_notify READY"},
		{"not a socket", notSocket, Stopping, "sd_notify STOPPING"},
		{"relative path", "notify.sock", Ready, "unsupported NOTIFY_SOCKET"},
		{"vsock", "vsock:2:1234", Watchdog, "unsupported NOTIFY_SOCKET"},
		{"no listener on abstract name", "@dcvd-sdnotify-none-" + rand.Text(), Ready, "sd_notify READY"},
		{"status text not in error", filepath.Join(dir, "none"), func() error { return Status(secret) }, "sd_notify STATUS"},
		{"malformed state not in error", filepath.Join(dir, "none"), func() error { return Notify(secret) }, "sd_notify message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tt.addr)
			err := tt.send()
			if err == nil {
				t.Fatalf("NOTIFY_SOCKET=%q: no error", tt.addr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error %q quotes the message text", err)
			}
		})
	}
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	other := strconv.Itoa(os.Getpid() + 1)
	const unset = "\x00unset"
	tests := []struct {
		name, usec, pid string
		want            time.Duration
	}{
		{"unset", unset, unset, 0},
		{"five minutes", "300000000", unset, 150 * time.Second},
		{"for this process", "300000000", self, 150 * time.Second},
		{"empty pid", "300000000", "", 150 * time.Second},
		{"odd microseconds", "3", self, 1500 * time.Nanosecond},
		{"for another process", "300000000", other, 0},
		{"bad pid", "300000000", "init", 0},
		{"zero", "0", self, 0},
		{"empty", "", self, 0},
		{"not a number", "5min", self, 0},
		{"negative", "-1000000", self, 0},
		{"huge", "18446744073709551615", self, time.Duration(1<<63-1) / time.Microsecond * time.Microsecond / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for key, v := range map[string]string{"WATCHDOG_USEC": tt.usec, "WATCHDOG_PID": tt.pid} {
				if v == unset {
					unsetenv(t, key)
				} else {
					t.Setenv(key, v)
				}
			}
			if got := WatchdogInterval(); got != tt.want {
				t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: got %v, want %v", tt.usec, tt.pid, got, tt.want)
			}
		})
	}
}
