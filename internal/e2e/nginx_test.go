package e2e_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// reloadTimeout bounds how long nginx may take to serve what a reload
// asked it to: it reads the files and starts new workers at once, and its
// old workers exit as soon as their connections are closed.
const reloadTimeout = 15 * time.Second

// waitServed waits until nginx's reload is over, then checks that it
// presents the certificate with serial for serverName, and returns it.
//
// One handshake showing the new serial proves nothing about the next: the
// reload command only signals nginx's master, which reads the files, starts
// new workers and only a moment later (100 ms in nginx's source) tells the
// workers from before (old, taken before the reload) to stop; until they
// have handled that they go on accepting connections, with what was
// deployed before, and they exit once their connections are closed. (Seen
// here: after the first handshake with the new serial, a later one got the
// old serial in 6 reloads of 10.) So the reload is over when none of the old workers is left and a
// new one runs; from then on every connection reaches a new worker. Nothing
// else reloads this private nginx meanwhile: only this test does.
func waitServed(ctx context.Context, t *testing.T, ngx *nginxMaster, old []nginxProc, addr, serverName string, serial *big.Int) *x509.Certificate {
	t.Helper()
	ngx.waitReloaded(ctx, t, old)
	// Only new workers answer now: fresh connections, more than twice
	// scripts/nginx.sh's worker_processes (1), all show the new serial.
	var leaf *x509.Certificate
	for i := range 4 {
		var err error
		leaf, err = servedLeaf(ctx, addr, serverName, nil)
		if err != nil {
			t.Fatalf("TLS handshake %d with nginx on %s after the reload: %v", i+1, addr, err)
		}
		if leaf.SerialNumber.Cmp(serial) != 0 {
			t.Fatalf("handshake %d: nginx on %s serves serial %x after the reload was over (workers %v gone), want %x",
				i+1, addr, leaf.SerialNumber, old, serial)
		}
	}
	return leaf
}

// nginxMaster is the master process of the nginx that a reload command
// (nginx -s reload -p PREFIX -c CONF) signals.
type nginxMaster struct {
	pid     int
	pidFile string
}

// nginxProc is one process, told from a later process with a reused pid
// by its start time.
type nginxProc struct {
	pid   int
	start string // field 22 of /proc/PID/stat: clock ticks after boot
}

func (p nginxProc) String() string { return strconv.Itoa(p.pid) }

// nginxPidDirective is the pid directive of an nginx configuration.
var nginxPidDirective = regexp.MustCompile(`(?m)^\s*pid\s+"?([^";\s]+)"?\s*;`)

// nginxOf finds the master that reload signals the way nginx -s reload
// does: the pid file named by the pid directive of its configuration (-c,
// relative to the prefix -p). It needs Linux's /proc, where the e2e
// servers run.
func nginxOf(t *testing.T, reload string) *nginxMaster {
	t.Helper()
	var prefix, conf string
	args := strings.Fields(reload)
	for i := 0; i+1 < len(args); i++ {
		switch args[i] {
		case "-p":
			prefix = args[i+1]
		case "-c":
			conf = args[i+1]
		}
	}
	if conf == "" {
		t.Fatalf("the nginx reload command %q names no configuration (-c): cannot tell which nginx it reloads", reload)
	}
	if !filepath.IsAbs(conf) {
		conf = filepath.Join(prefix, conf)
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatalf("the configuration of the nginx the tests reload: %v", err)
	}
	m := nginxPidDirective.FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no pid directive: cannot find the nginx master it runs", conf)
	}
	pidFile := string(m[1])
	if !filepath.IsAbs(pidFile) {
		pidFile = filepath.Join(prefix, pidFile)
	}
	pb, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the pid of the nginx master: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pb)))
	if err != nil || pid <= 0 {
		t.Fatalf("%s holds %q, not a pid", pidFile, pb)
	}
	if _, _, err := procStat(pid); err != nil {
		t.Fatalf("the nginx master (pid %d, from %s) does not run: %v", pid, pidFile, err)
	}
	return &nginxMaster{pid: pid, pidFile: pidFile}
}

// procStat reads a process's parent and start time from /proc/PID/stat.
func procStat(pid int) (ppid int, start string, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, "", err
	}
	// "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses,
	// the fields after the last ')' do not.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, "", fmt.Errorf("/proc/%d/stat: %q has no command", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, starttime field 22.
	if len(f) < 20 {
		return 0, "", fmt.Errorf("/proc/%d/stat: %d fields after the command, want 20 or more", pid, len(f))
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, "", fmt.Errorf("/proc/%d/stat: parent %q: %w", pid, f[1], err)
	}
	return ppid, f[19], nil
}

// workers returns the master's children (its workers), sorted by pid.
func (m *nginxMaster) workers(t *testing.T) []nginxProc {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("listing processes: %v", err)
	}
	var out []nginxProc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ppid, start, err := procStat(pid)
		if err != nil || ppid != m.pid {
			continue // gone meanwhile, or not the master's
		}
		out = append(out, nginxProc{pid: pid, start: start})
	}
	if _, _, err := procStat(m.pid); err != nil {
		t.Fatalf("the nginx master (pid %d, from %s) is gone: %v", m.pid, m.pidFile, err)
	}
	return out
}

// waitReloaded waits, at most reloadTimeout, until none of old runs any
// more and the master has another worker: the master handled the reload
// and every worker left started after it.
func (m *nginxMaster) waitReloaded(ctx context.Context, t *testing.T, old []nginxProc) {
	t.Helper()
	if len(old) == 0 {
		t.Fatalf("the nginx master (pid %d) had no worker before the reload", m.pid)
	}
	deadline := time.Now().Add(reloadTimeout)
	for {
		now := m.workers(t)
		var left, started []nginxProc
		for _, p := range now {
			if slices.Contains(old, p) {
				left = append(left, p)
			} else {
				started = append(started, p)
			}
		}
		if len(left) == 0 && len(started) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx (master %d) %s after the reload: workers from before still run %v, new workers %v; did the reload reach it (see its error.log)?",
				m.pid, reloadTimeout, left, started)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for nginx's reload: %v", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
