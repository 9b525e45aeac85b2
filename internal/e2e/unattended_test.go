package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dcvd/dcvd/notify"
	"github.com/dcvd/dcvd/sandbox"
)

// neverFires is a schedule that matches no date: 30 February.
const neverFires = "0 0 30 2 *"

// TestScheduleThatNeverFires: a schedule with no run is refused by
// check-config, by run (exit 78, before anything starts) and by SIGHUP
// (the old one kept), and the daemon that refused it stays idle.
func TestScheduleThatNeverFires(t *testing.T) {
	bin := dcvdBinary(t, "")
	ctx := testContext(t)
	dir, webroot, webAddr, sb, apiURL := firstCertWorld(t)
	stateDir := filepath.Join(shortTempDir(t), "state")
	cfgPath := writeConfig(t, dir, sb, apiURL, map[string]any{
		"state_dir": stateDir, "poll_interval": "50ms", "schedule": neverFires,
	}, nil, httpCert("first", "first", webroot, webAddr, filepath.Join(dir, "deploy")))

	for _, args := range [][]string{{"check-config"}, {"run"}} {
		start := time.Now()
		r := runDcvd(ctx, bin, []string{"RUNTIME_DIRECTORY=" + shortTempDir(t)}, append(args, "--config", cfgPath)...)
		if r.err == nil || !strings.Contains(r.stderr, "daemon.schedule") || !strings.Contains(r.stderr, "no run in the next year") {
			t.Errorf("dcvd %s with schedule %q: %v, stderr %q; want a refusal naming daemon.schedule", args[0], neverFires, r.err, r.stderr)
		}
		if code := exitStatus(r.err); code != 78 {
			t.Errorf("dcvd %s: exit code %d, want 78 (configuration error)", args[0], code)
		}
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("dcvd %s took %s to refuse the schedule", args[0], took)
		}
	}
	if n := len(sb.Ledger()); n != 0 {
		t.Errorf("a refused configuration led to %d charge(s)", n)
	}

	// A good schedule, then a SIGHUP to one that never fires.
	editConfig(t, cfgPath, func(cfg map[string]any) { cfg["daemon"].(map[string]any)["schedule"] = "17 */6 * * *" })
	notify := newNotifySocket(t)
	run := startDcvdRun(t, bin, cfgPath, shortTempDir(t), "NOTIFY_SOCKET="+notify.path)
	var status string
	notify.expect(t, "READY=1", &status)
	waitLive(ctx, t, bin, cfgPath, "first")

	editConfig(t, cfgPath, func(cfg map[string]any) { cfg["daemon"].(map[string]any)["schedule"] = neverFires })
	if err := run.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	notify.expect(t, "RELOADING=1", &status)
	notify.expect(t, "READY=1", &status)
	for deadline := time.Now().Add(notifyTimeout); !strings.Contains(run.out.String(), "no run in the next year"); {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not say why the schedule was refused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Idle: a daemon spinning on a zero next time burns a whole core;
	// this one must use next to nothing. 3 s of wall time, at most 0.5 s
	// of CPU, generous for a race-detector build on a loaded machine.
	before := cpuTime(t, run.cmd.Process.Pid)
	time.Sleep(3 * time.Second)
	if used := cpuTime(t, run.cmd.Process.Pid) - before; used > 500*time.Millisecond {
		t.Errorf("the daemon used %s of CPU in 3 s after a refused schedule: a busy loop", used)
	}
	if n := strings.Count(run.out.String(), "next renewal check"); n > 3 {
		t.Errorf("\"next renewal check\" logged %d times: the schedule loop spins", n)
	}
	if n := len(sb.Ledger()); n != 1 {
		t.Errorf("the sandbox charged %d times, want once", n)
	}
}

// firstCertWorld is a web root served on a loopback port and a sandbox CA
// that fetches from it and sells the service "first": it returns the test's
// directory, the web root, the web server's address, the CA and its API URL.
func firstCertWorld(t *testing.T) (dir, webroot, webAddr string, sb *sandbox.Server, apiURL string) {
	t.Helper()
	dir = t.TempDir()
	webroot = filepath.Join(dir, "webroot")
	webAddr = serveWebroot(t, webroot)
	product := sandbox.DefaultProducts()[0].ID
	sb, apiURL = startSandbox(t, sandbox.Config{HTTPAddr: webAddr, Products: sandbox.DefaultProducts(),
		Services: []sandbox.Service{{ID: "first", ProductID: product}}})
	return dir, webroot, webAddr, sb, apiURL
}

// cpuTime is the user + system CPU time process pid has used so far,
// from /proc/PID/stat.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatalf("read the CPU time of %d: %v", pid, err)
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clockTicks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// alertSink is a webhook channel that records the kinds of the events it
// receives.
type alertSink struct {
	mu     sync.Mutex
	events []notify.WebhookPayload
}

func (s *alertSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var p notify.WebhookPayload
	if err := json.Unmarshal(body, &p); err == nil {
		s.mu.Lock()
		s.events = append(s.events, p)
		s.mu.Unlock()
	}
}

func (s *alertSink) count(kind notify.Kind) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

// TestReloadThatAlwaysFails: once the reload command starts failing, a
// reissue under dcvd run reloads at most 3 times in its first 60 s (the
// backoff grows across install and reload instead of restarting at 10 s
// with each install), alerts once, and the previous certificate stays
// live.
func TestReloadThatAlwaysFails(t *testing.T) {
	t.Parallel()
	bin := dcvdBinary(t, "")
	ctx := testContext(t)
	dir, webroot, webAddr, sb, apiURL := firstCertWorld(t)
	sink := &alertSink{}
	hook := httptest.NewServer(sink)
	t.Cleanup(hook.Close)

	stateDir := filepath.Join(shortTempDir(t), "state")
	runs := filepath.Join(dir, "reload-runs")
	broken := filepath.Join(dir, "web-server-broken")
	deployDir := filepath.Join(dir, "deploy")
	cert := httpCert("first", "first", webroot, webAddr, deployDir)
	// The reload logs when it ran, and fails while the flag file exists.
	cert["deploy"] = map[string]any{"dir": deployDir,
		"reload": "date +%s.%N >> " + runs + "; if [ -e " + broken + " ]; then echo broken >&2; exit 3; fi"}
	cfgPath := writeConfig(t, dir, sb, apiURL, map[string]any{"state_dir": stateDir, "poll_interval": "50ms"}, nil, cert)
	editConfig(t, cfgPath, func(cfg map[string]any) {
		cfg["notify"] = map[string]any{"hook": map[string]any{"type": "webhook", "url": hook.URL, "level": "error"}}
	})

	startDcvdRun(t, bin, cfgPath, shortTempDir(t))

	// A first certificate goes live with a working reload.
	waitLive(ctx, t, bin, cfgPath, "first")
	liveSerial := checkDeployed(t, deployDir, sb.RootPool(), []string{"first.example.com"}).SerialNumber

	// The web server breaks; a reissue (through the running daemon)
	// meets a reload that always fails.
	if err := os.WriteFile(broken, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	before := len(reloadTimes(t, runs))
	if r := runDcvd(ctx, bin, nil, "reissue", "first", "--config", cfgPath); r.err != nil {
		t.Fatalf("dcvd reissue first: %v\n%s", r.err, r.stderr)
	}
	var first time.Time
	for first.IsZero() {
		if ts := reloadTimes(t, runs); len(ts) > before {
			first = ts[before]
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the reload command never ran for the reissue")
		case <-time.After(50 * time.Millisecond):
		}
	}
	time.Sleep(time.Until(first.Add(62 * time.Second)))
	var inMinute int
	for _, ts := range reloadTimes(t, runs)[before:] {
		if ts.Sub(first) < 60*time.Second {
			inMinute++
		}
	}
	if inMinute > 3 {
		t.Errorf("the failing reload ran %d times in the first 60 s, want at most 3", inMinute)
	}
	// Alerts are delivered asynchronously: give the queue a moment.
	for deadline := time.Now().Add(5 * time.Second); sink.count(notify.ReloadFailed) == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if n := sink.count(notify.ReloadFailed); n != 1 {
		t.Errorf("%d reload_failed alerts in the first minute, want exactly 1", n)
	}
	if n := len(sb.Ledger()); n != 2 {
		t.Errorf("the sandbox charged %d times, want twice (first issue and the reissue)", n)
	}
	// The previous certificate is the one in place.
	if got := checkDeployed(t, deployDir, sb.RootPool(), []string{"first.example.com"}).SerialNumber; got.Cmp(liveSerial) != 0 {
		t.Errorf("deployed serial %x while the reload fails, want the previous %x", got, liveSerial)
	}
}

// reloadTimes reads the times at which the reload command ran.
func reloadTimes(t *testing.T, path string) []time.Time {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []time.Time
	for _, line := range strings.Fields(string(b)) {
		f, err := strconv.ParseFloat(line, 64)
		if err != nil {
			t.Fatalf("reload log line %q: %v", line, err)
		}
		out = append(out, time.Unix(0, int64(f*1e9)))
	}
	return out
}
