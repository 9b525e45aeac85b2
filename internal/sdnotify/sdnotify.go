// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): the datagrams a Type=notify service sends to
// $NOTIFY_SOCKET to say that it is ready, reloading or stopping, to publish a
// status line, and to keep its watchdog from firing.
//
// Every function is a no-op returning nil when NOTIFY_SOCKET is unset, so
// that the daemon behaves the same under systemd, under another supervisor
// and in a terminal. The environment is read on every call and never
// changed: tests set it per test, and a child process (a reload command)
// inherits it unchanged, which is harmless because NotifyAccess=main makes
// systemd ignore messages from any process but the main one.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// sendTimeout bounds one send: a datagram to a receiver that is not
// reading can block once the socket buffer is full, and a notification is
// never worth stalling the daemon's work for.
const sendTimeout = 5 * time.Second

// maxStatus is the longest STATUS= text sent, in bytes. systemd reads a
// notification into a buffer of PIPE_BUF (4096) bytes and drops longer
// datagrams whole, so a long status (an error quoting an API reply) is
// shortened rather than lost.
const maxStatus = 2048

// Notify sends state, one or more newline-separated VARIABLE=value
// assignments, to the socket named by $NOTIFY_SOCKET: a path, or an abstract
// socket name written with a leading '@'. Without the variable it does
// nothing and returns nil.
func Notify(state string) error {
	addr, ok := os.LookupEnv("NOTIFY_SOCKET")
	if !ok || addr == "" {
		return nil
	}
	if !strings.HasPrefix(addr, "/") && !strings.HasPrefix(addr, "@") {
		// systemd 254 added vsock: addresses, for virtual machines; a
		// daemon on a host never gets one, so it is an error, not ignored.
		return fmt.Errorf("sd_notify %s: unsupported NOTIFY_SOCKET %q: want an absolute path or an @abstract name", firstVar(state), addr)
	}
	// net.Dial maps a leading '@' to Linux's abstract namespace.
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", firstVar(state), err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(sendTimeout)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", firstVar(state), err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", firstVar(state), err)
	}
	return nil
}

// Ready tells systemd that start-up or a reload is complete: READY=1. Until
// it is sent after a start, "systemctl start" waits; after Reloading, it
// ends the reload.
func Ready() error {
	return Notify("READY=1")
}

// Reloading tells systemd that the service is reloading its configuration:
// RELOADING=1 with MONOTONIC_USEC=, the CLOCK_MONOTONIC time systemd (253
// and later, Type=notify-reload) needs to match the message to the reload it
// asked for. The service sends Ready when the reload is over, whether the
// new configuration was taken or refused.
func Reloading() error {
	usec, err := monotonicUsec()
	if err != nil {
		return fmt.Errorf("sd_notify RELOADING: %w", err)
	}
	return Notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatUint(usec, 10))
}

// Stopping tells systemd that the service is shutting down: STOPPING=1.
func Stopping() error {
	return Notify("STOPPING=1")
}

// Status publishes s as the one-line status "systemctl status" shows:
// STATUS=s. Line breaks become spaces, so that text taken from elsewhere
// (an error quoting an API reply) cannot add assignments of its own such as
// READY=1 or MAINPID=; text longer than 2048 bytes is cut at a character
// boundary and ends with "…".
func Status(s string) error {
	return Notify("STATUS=" + statusLine(s))
}

// Watchdog tells systemd's watchdog that the service is alive: WATCHDOG=1.
// Send it at least every WatchdogInterval.
func Watchdog() error {
	return Notify("WATCHDOG=1")
}

// WatchdogInterval returns how often Watchdog must be called: half of
// $WATCHDOG_USEC, as sd_watchdog_enabled(3) advises, which leaves room for a
// late tick. It returns 0, meaning no watchdog, when WATCHDOG_USEC is unset,
// zero or not a number, or when WATCHDOG_PID names another process (the
// variables were inherited from a parent that systemd watches).
func WatchdogInterval() time.Duration {
	v, ok := os.LookupEnv("WATCHDOG_USEC")
	if !ok {
		return 0
	}
	usec, err := strconv.ParseUint(v, 10, 64)
	if err != nil || usec == 0 {
		return 0
	}
	if p, ok := os.LookupEnv("WATCHDOG_PID"); ok && p != "" {
		pid, err := strconv.Atoi(p)
		if err != nil || pid != os.Getpid() {
			return 0
		}
	}
	const maxUsec = uint64(1<<63-1) / uint64(time.Microsecond)
	if usec > maxUsec {
		// More than 292 years: no watchdog worth the name, but not off.
		usec = maxUsec
	}
	return time.Duration(usec) * time.Microsecond / 2
}

// statusLine makes s safe as the value of one STATUS= assignment.
func statusLine(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	if len(s) <= maxStatus {
		return s
	}
	const ellipsis = "…"
	cut := maxStatus - len(ellipsis)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// firstVar names the first variable of state, for error messages: the
// values (a status text) stay out of them.
func firstVar(state string) string {
	name, _, found := strings.Cut(state, "=")
	if !found || name == "" || strings.Contains(name, "\n") {
		return "message"
	}
	return name
}

// monotonicUsec reads CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC against (Go's time package does not expose its
// monotonic reading as an absolute value).
func monotonicUsec() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("read CLOCK_MONOTONIC: %w", err)
	}
	if ts.Sec < 0 || ts.Nsec < 0 {
		return 0, errors.New("read CLOCK_MONOTONIC: negative time")
	}
	return uint64(ts.Sec)*1e6 + uint64(ts.Nsec)/1e3, nil
}
