package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/httplimit"
	"github.com/dcvd/dcvd/sandbox"
)

// The flood of TestListenerFlood: what took an unbounded daemon from 95 MB
// to over 1 GB.
const (
	floodConns = 2000
	floodBytes = 1 << 20 // of headers per connection, never ended
	// maxFloodGrowth is how much the daemon's peak RSS may exceed its RSS
	// before the flood.
	maxFloodGrowth = 64 << 20
	// floodGuard bounds the flood: a bounded daemon gets through it in
	// seconds (each connection is closed once it has sent 16 KiB, 256 at
	// a time); the guard only turns a hang into a failure.
	floodGuard = 30 * time.Second
	// floodSndBuf is the send buffer of the flood's sockets. The kernel
	// queues what a connection has sent and the daemon not yet read: the
	// receive window of each connection waiting in the backlog, and its
	// send buffer. A small one keeps the flood's kernel memory at about
	// 300 MB, for a few seconds, and changes nothing for the daemon,
	// which reads at most 16 KiB of each.
	floodSndBuf = 8 << 10
)

// TestListenerFlood floods a real "dcvd run"'s callback listener with
// floodConns connections, each sending up to floodBytes of headers and
// never ending them, and checks that:
//
//   - the daemon's peak RSS (VmHWM) grows by at most maxFloodGrowth;
//   - it never holds more than httplimit.MaxConns of those connections:
//     when all are open, and before any has sent anything, MaxConns are
//     accepted and the others wait in the kernel's backlog (in
//     /proc/net/tcp an accepted socket has an inode, a queued one none);
//     throughout the flood, the daemon's file descriptors stay below
//     MaxConns more than before;
//   - it closes every flood connection (the header bound);
//   - a real callback (the token of the order in flight) sent behind the
//     flood, and another after it, get 200: the listener is not dead;
//   - it still stops on SIGTERM.
//
// The daemon has one certificate whose order stays in flight: the web
// server its validation file is checked on answers 404, so the order waits
// for its next visibility check and its callback token stays valid.
func TestListenerFlood(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the flood's measures are read from Linux's /proc")
	}
	// The test holds floodConns sockets; dcvd, started from it, inherits
	// the limit (and needs MaxConns and a few more).
	raiseNoFile(t, floodConns+httplimit.MaxConns+512)
	if n := somaxconn(t); n < floodConns+httplimit.MaxConns {
		skipOrFail(t, fmt.Sprintf("net.core.somaxconn is %d: the kernel cannot queue %d connections on the listener (sysctl -w net.core.somaxconn=4096, the default since Linux 5.4)",
			n, floodConns))
	}
	bin := dcvdPlainBinary(t)
	ctx := testContext(t)
	dir := t.TempDir()
	webroot := filepath.Join(dir, "webroot")
	if err := os.Mkdir(webroot, 0o755); err != nil {
		t.Fatal(err)
	}
	notFound := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notFound.Close)
	webAddr := notFound.Listener.Addr().String()
	sb, apiURL, notifyURLs := startNotifySandbox(t, sandbox.Config{HTTPAddr: webAddr, Products: sandbox.DefaultProducts(),
		Services: []sandbox.Service{{ID: "flood", ProductID: sandbox.DefaultProducts()[0].ID}}})
	cfgPath := writeConfig(t, dir, sb, apiURL, map[string]any{
		"state_dir":       filepath.Join(shortTempDir(t), "state"),
		"callback_listen": "127.0.0.1:0",
		// The sandbox posts nothing while the order waits; were it to,
		// nothing listens there.
		"callback_url": "http://127.0.0.1:9",
		"log_format":   "json",
	}, nil, httpCert("flood", "flood", webroot, webAddr, filepath.Join(dir, "deploy")))

	run := startDcvdRun(t, bin, cfgPath, shortTempDir(t))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dcvd run's output:\n%s", run.out.String())
		}
	})
	pid := run.cmd.Process.Pid
	addr := waitListenAddr(ctx, t, run)
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	var notifyURL string
	waitUntil(ctx, t, "the order's reissue with its notify_url", func() string {
		if notifyURL = notifyURLs.first(); notifyURL == "" {
			return "no reissue yet"
		}
		return ""
	})
	u, err := parseNotifyURL(notifyURL)
	if err != nil {
		t.Fatal(err)
	}
	callbackURL := "http://" + addr + u
	// Settled: the order waits for its next visibility check.
	waitUntil(ctx, t, "the order to wait for a visibility check", func() string {
		st := dcvdStatus(ctx, t, bin, cfgPath, "flood")
		if st.Order == nil || st.LastError == "" {
			return fmt.Sprintf("order %+v, last error %q", st.Order, st.LastError)
		}
		return ""
	})
	if err := postCallback(ctx, callbackURL); err != nil {
		t.Fatalf("callback before the flood: %v", err)
	}

	before := readProcMem(t, pid)
	fdsBefore, err := fdCount(pid)
	if err != nil {
		t.Fatalf("the daemon's file descriptors: %v", err)
	}
	// Reset VmHWM to the current RSS (proc(5), clear_refs "5"), so that the
	// peak read after the flood is the flood's.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Logf("cannot reset VmHWM (%v): the peak compared is the whole run's", err)
	}
	t.Logf("before the flood: VmRSS %s, VmHWM %s, %d file descriptors; somaxconn %d",
		mb(before.rss), mb(before.hwm), fdsBefore, somaxconn(t))

	// Watch the listener's sockets and the daemon's file descriptors all
	// along.
	watch := newSocketWatch(t, pid, port)
	defer watch.stop()

	// Every flood connection is opened first, and starts sending at once
	// when all are: the daemon has accepted MaxConns of them, which send
	// nothing yet, and the others wait in the backlog. An uncapped daemon
	// would have accepted them all. Until the first accepted ones reach
	// ReadHeaderTimeout nothing changes, so that /proc/net/tcp, read at
	// rest, counts exactly; after it (on a machine that took seconds to
	// open 2,000 loopback connections) connections come and go, and the
	// counts are only shown.
	flood := newFlood(ctx, addr)
	dialStart := time.Now()
	if err := flood.dial(); err != nil {
		t.Fatalf("open the flood's connections: %v", err)
	}
	dialTook := time.Since(dialStart)
	atRest := func() bool { return time.Since(dialStart) < httplimit.ReadHeaderTimeout }
	var s listenerSample
	waitUntil(ctx, t, fmt.Sprintf("%d flood connections accepted", httplimit.MaxConns), func() string {
		s = watch.sample()
		if s.accepted > httplimit.MaxConns && atRest() {
			t.Fatalf("the daemon accepted %d connections at once, want at most %d", s.accepted, httplimit.MaxConns)
		}
		if s.accepted < httplimit.MaxConns {
			return fmt.Sprintf("%d accepted, %d waiting", s.accepted, s.waiting)
		}
		return ""
	})
	switch {
	case !atRest():
		t.Logf("all %d flood connections open in %s: %d accepted, %d waiting in the backlog (not at rest: not checked)",
			floodConns, dialTook.Round(time.Millisecond), s.accepted, s.waiting)
	case s.waiting == 0:
		t.Errorf("with %d connections open and %d accepted, none waits in the backlog", floodConns, s.accepted)
	default:
		t.Logf("all %d flood connections open in %s: %d accepted, %d waiting in the backlog",
			floodConns, dialTook.Round(time.Millisecond), s.accepted, s.waiting)
	}
	flood.send()
	floodStart := time.Now()

	// A real callback behind the flood in the backlog: it is answered once
	// the flood ahead of it is through.
	behind := make(chan error, 1)
	go func() { behind <- postCallback(ctx, callbackURL) }()
	flood.wait()
	floodTook := time.Since(floodStart)
	if err := <-behind; err != nil {
		t.Errorf("callback behind the flood: %v", err)
	}
	if err := postCallback(ctx, callbackURL); err != nil {
		t.Errorf("callback after the flood: %v", err)
	}
	watch.stop()

	after := readProcMem(t, pid)
	peak := watch.max()
	t.Logf("after the flood: VmRSS %s, VmHWM %s (%s over the RSS before; at most %s allowed)",
		mb(after.rss), mb(after.hwm), mb(after.hwm-before.rss), mb(maxFloodGrowth))
	// The counts from /proc/net/tcp are sampled while connections come and
	// go (see readListener): they are shown, not checked.
	t.Logf("during the flood (%s): at most about %d connections accepted and %d waiting, %d file descriptors (%d before); %s",
		floodTook.Round(time.Millisecond), peak.accepted, peak.waiting, peak.fds, fdsBefore, flood.summary())
	if growth := after.hwm - before.rss; growth > maxFloodGrowth {
		t.Errorf("the flood grew the daemon's RSS by %s at its peak (VmHWM %s, VmRSS before %s), want at most %s",
			mb(growth), mb(after.hwm), mb(before.rss), mb(maxFloodGrowth))
	}
	if peak.fds > fdsBefore+httplimit.MaxConns+16 {
		t.Errorf("the daemon had %d file descriptors open during the flood, %d before: more than the %d connections it may hold",
			peak.fds, fdsBefore, httplimit.MaxConns)
	}
	if open := flood.notClosed.Load(); open > 0 {
		t.Errorf("%d flood connections were still open %s after the flood started: their headers are unbounded in time or size",
			open, floodGuard)
	}

	// It stops as it should, whatever the flood left.
	if err := run.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-run.done:
		if run.err != nil {
			t.Errorf("dcvd run after SIGTERM: %v", run.err)
		}
	case <-time.After(20 * time.Second):
		t.Errorf("dcvd run did not stop within 20s of SIGTERM")
	}
}

// plainBuild is cmd/dcvd built without -race, when this test binary has it.
var plainBuild dcvdBuild

// dcvdPlainBinary returns the path of cmd/dcvd built as it ships, without
// the race detector even under -race: TestListenerFlood measures memory,
// and the race detector's instrumentation multiplies it (tenfold for a
// flood, whose every connection is a goroutine), so that a race build's
// RSS says nothing of dcvd's. The other tests run the race build.
func dcvdPlainBinary(t *testing.T) string {
	t.Helper()
	if !raceEnabled() {
		return dcvdBinary(t, "")
	}
	return buildDcvd(t, &plainBuild, "dcvd-norace", false, "")
}

// raiseNoFile sets this process's soft RLIMIT_NOFILE to its hard limit (Go
// raises it for itself, but gives a child the original one unless
// Setrlimit was called), and skips the test when that is below need.
func raiseNoFile(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Max < need {
		skipOrFail(t, fmt.Sprintf("the hard limit of open files is %d, the flood needs %d: raise it (ulimit -Hn, LimitNOFILE=)", lim.Max, need))
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("setrlimit RLIMIT_NOFILE to %d: %v", lim.Max, err)
	}
}

// somaxconn is the kernel's bound on a listener's backlog.
func somaxconn(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Fatalf("the backlog bound: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("/proc/sys/net/core/somaxconn: %v", err)
	}
	return n
}

// notifyURLs collects the notify_url of every reissue the sandbox gets.
type notifyURLs struct {
	mu   sync.Mutex
	urls []string
}

func (n *notifyURLs) first() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.urls) == 0 {
		return ""
	}
	return n.urls[0]
}

// startNotifySandbox is startSandbox, and also returns the notify_urls of
// the reissues: the callback token of an order is in nothing else the test
// may read while dcvd runs.
func startNotifySandbox(t *testing.T, cfg sandbox.Config) (*sandbox.Server, string, *notifyURLs) {
	t.Helper()
	urls := &notifyURLs{}
	sb, apiURL := startSandboxBehind(t, cfg, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Body != nil && strings.HasSuffix(r.URL.Path, "/reissue") {
				body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
				r.Body.Close()
				if err != nil {
					return // the client is gone
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
				var p struct {
					NotifyURL string `json:"notify_url"`
				}
				if json.Unmarshal(body, &p) == nil && p.NotifyURL != "" {
					urls.mu.Lock()
					urls.urls = append(urls.urls, p.NotifyURL)
					urls.mu.Unlock()
				}
			}
			h.ServeHTTP(w, r)
		})
	})
	return sb, apiURL, urls
}

// parseNotifyURL returns the path of a notify_url: /callback/<token>.
func parseNotifyURL(u string) (string, error) {
	_, path, ok := strings.Cut(strings.TrimPrefix(u, "http://"), "/")
	if !ok || !strings.HasPrefix(path, "callback/") {
		return "", fmt.Errorf("notify_url %q has no /callback/<token>", u)
	}
	return "/" + path, nil
}

// listenRE finds the address of the callback listener in dcvd's JSON log.
var listenRE = regexp.MustCompile(`"msg":"listening for callbacks and validation requests".*"addr":"([^"]+)"`)

// waitListenAddr returns the address dcvd's callback listener is bound to
// (callback_listen has port 0), from its log.
func waitListenAddr(ctx context.Context, t *testing.T, run *dcvdRun) string {
	t.Helper()
	var addr string
	waitUntil(ctx, t, "dcvd to listen for callbacks", func() string {
		if m := listenRE.FindStringSubmatch(run.out.String()); m != nil {
			addr = m[1]
			return ""
		}
		select {
		case <-run.done:
			t.Fatalf("dcvd run exited: %v", run.err)
		default:
		}
		return "not listening yet"
	})
	return addr
}

// postCallback posts the CA's callback, as the CA would, and returns an
// error unless dcvd answers 200: the token is the order's, and the order is
// in flight.
func postCallback(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, floodGuard)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"status":"pending"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// A connection of its own, which waits in the backlog like any other.
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		return fmt.Errorf("%s %q, want 200", resp.Status, body)
	}
	return nil
}

// procMem is a process's resident memory, in bytes.
type procMem struct{ rss, hwm int64 }

// readProcMem reads VmRSS and VmHWM (the peak RSS) from /proc/pid/status.
func readProcMem(t *testing.T, pid int) procMem {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("the daemon's memory: %v", err)
	}
	var m procMem
	for line := range strings.Lines(string(b)) {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.rss
		case "VmHWM":
			dst = &m.hwm
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(val), "kB")), 10, 64)
		if err != nil {
			t.Fatalf("/proc/%d/status: %s: %v", pid, strings.TrimSpace(line), err)
		}
		*dst = kb << 10
	}
	if m.rss == 0 || m.hwm == 0 {
		t.Fatalf("/proc/%d/status has no VmRSS or VmHWM:\n%s", pid, b)
	}
	return m
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

// listenerSample is what /proc says of the daemon's listener at one time.
type listenerSample struct {
	// accepted counts the connections to the listener's port that have an
	// inode: the daemon accepted them, a file descriptor holds them.
	// waiting counts the established ones without: they are in the
	// listener's accept queue, on which the daemon spends nothing.
	accepted, waiting int
	fds               int
}

// socketWatch samples the daemon's listener until stopped, and keeps the
// largest of each count.
type socketWatch struct {
	t    *testing.T
	pid  int
	port int

	mu   sync.Mutex
	peak listenerSample
	err  error

	quit     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newSocketWatch(t *testing.T, pid, port int) *socketWatch {
	w := &socketWatch{t: t, pid: pid, port: port, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-tick.C:
				w.sample()
			}
		}
	}()
	return w
}

// sample takes one sample, keeps its peaks, and returns it.
func (w *socketWatch) sample() listenerSample {
	s, err := readListener(w.port)
	fds, ferr := fdCount(w.pid)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		err = ferr
	}
	if err != nil {
		if w.err == nil {
			w.err = err
		}
		return s
	}
	s.fds = fds
	w.peak.accepted = max(w.peak.accepted, s.accepted)
	w.peak.waiting = max(w.peak.waiting, s.waiting)
	w.peak.fds = max(w.peak.fds, s.fds)
	return s
}

func (w *socketWatch) stop() {
	w.stopOnce.Do(func() {
		close(w.quit)
		<-w.done
		if w.err != nil {
			w.t.Errorf("watching the listener: %v", w.err)
		}
	})
}

func (w *socketWatch) max() listenerSample {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

// fdCount returns the number of file descriptors pid has open.
func fdCount(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// TCP states in /proc/net/tcp.
const (
	tcpEstablished = "01"
	tcpListen      = "0A"
)

// readListener counts the connections to local port port in
// /proc/net/tcp (the listener is on 127.0.0.1): see listenerSample. The
// file is not read at one instant: a connection that changes while it is
// read may be listed twice, so each is counted once, by its remote
// address, in the state last read. Connections that end and others that
// begin during the read may still both be counted.
func readListener(port int) (listenerSample, error) {
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return listenerSample{}, err
	}
	defer f.Close()
	local := fmt.Sprintf(":%04X", port)
	accepted := map[string]bool{} // by remote address
	sc := bufio.NewScanner(f)
	sc.Scan() // the header line
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || !strings.HasSuffix(fs[1], local) || fs[3] == tcpListen {
			continue
		}
		switch {
		case fs[9] != "0":
			accepted[fs[2]] = true
		case fs[3] == tcpEstablished:
			accepted[fs[2]] = false
		default:
			delete(accepted, fs[2]) // closed by the daemon
		}
	}
	var s listenerSample
	for _, a := range accepted {
		if a {
			s.accepted++
		} else {
			s.waiting++
		}
	}
	return s, sc.Err()
}

// flood is floodConns connections to addr, each sending up to floodBytes
// of headers that never end.
type flood struct {
	ctx   context.Context
	addr  string
	conns []net.Conn
	start chan struct{} // closed when the connections are to send
	wg    sync.WaitGroup

	// closed counts the connections the daemon closed; notClosed those
	// still open at the guard; got431 those that read the 431 reply
	// (the daemon closes right after it, so a client that is still
	// sending may never read it).
	closed, notClosed, got431 atomic.Int64
}

// The headers the flood sends, after its request line: half the
// connections send lines of 1,000 bytes, half one endless line, which
// net/http buffers differently. Neither ends the headers.
var (
	floodLines   = floodHeaders(1000)
	floodOneLine = floodHeaders(floodBytes)
)

// floodHeaders returns floodBytes of header lines of line bytes each.
func floodHeaders(line int) []byte {
	b := make([]byte, 0, floodBytes)
	for i := 0; len(b) < floodBytes; i++ {
		start := len(b)
		b = fmt.Appendf(b, "X-Flood-%d: ", i)
		for len(b)-start < line-2 && len(b) < floodBytes-2 {
			b = append(b, 'a')
		}
		b = append(b, "\r\n"...)
	}
	return b
}

func newFlood(ctx context.Context, addr string) *flood {
	return &flood{ctx: ctx, addr: addr, start: make(chan struct{})}
}

// dial opens every connection, sending nothing yet.
func (f *flood) dial() error {
	ctx, cancel := context.WithTimeout(f.ctx, floodGuard)
	defer cancel()
	f.conns = make([]net.Conn, floodConns)
	errs := make([]error, floodConns)
	var wg sync.WaitGroup
	for i := range f.conns {
		wg.Go(func() {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", f.addr)
			if err != nil {
				errs[i] = fmt.Errorf("connection %d: %w", i, err)
				return
			}
			if err := c.(*net.TCPConn).SetWriteBuffer(floodSndBuf); err != nil {
				errs[i] = fmt.Errorf("connection %d: %w", i, err)
			}
			f.conns[i] = c
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range f.conns {
			if c != nil {
				c.Close()
			}
		}
		return err
	}
	for i, c := range f.conns {
		f.wg.Go(func() {
			defer c.Close()
			<-f.start
			f.run(i, c)
		})
	}
	return nil
}

// send starts the sending on every connection.
func (f *flood) send() { close(f.start) }

// wait returns once the daemon has closed every connection, or the guard
// is reached.
func (f *flood) wait() { f.wg.Wait() }

// run sends connection i's headers until they are all sent or the daemon
// closes the connection, then waits for its close.
func (f *flood) run(i int, c net.Conn) {
	c.SetDeadline(time.Now().Add(floodGuard))
	headers := floodLines
	if i%2 == 1 {
		headers = floodOneLine
	}
	_, err := fmt.Fprintf(c, "POST /callback/flood%d HTTP/1.1\r\nHost: dcvd.example.com\r\n", i)
	for off := 0; off < len(headers) && err == nil; off += 16 << 10 {
		_, err = c.Write(headers[off:min(off+16<<10, len(headers))])
	}
	// The headers never end: only the daemon closes the connection. Read
	// what it answers until then.
	reply, rerr := io.ReadAll(c)
	if bytes.HasPrefix(reply, []byte("HTTP/1.1 431 ")) {
		f.got431.Add(1)
	}
	if isTimeout(err) || isTimeout(rerr) {
		f.notClosed.Add(1)
		return
	}
	f.closed.Add(1)
}

func (f *flood) summary() string {
	return fmt.Sprintf("%d connections closed by dcvd (%d read its 431), %d not closed",
		f.closed.Load(), f.got431.Load(), f.notClosed.Load())
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}
