package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dcvd/dcvd/sandbox"
)

// This file tests "dcvd reissue --all" end to end against the sandbox CA:
// certificates validated over HTTP (a web root served by a local web
// server, which the sandbox fetches from), so that the configuration file
// is all the command needs, with or without a running daemon.

// lockedBuffer collects the output of commands that run concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// allWorld is a sandbox CA with one service per certificate, a web root it
// validates from, and a configuration file for certificates c0…cN-1, each
// with two names.
type allWorld struct {
	t       *testing.T
	dir     string
	sb      *sandbox.Server
	api     string // the sandbox's base URL
	web     string // the web root server's host:port
	webroot string
	// services maps certificate name → service_id; names → the names of
	// each certificate.
	services map[string]string
	names    map[string][]string
}

func newAllWorld(t *testing.T, n int) *allWorld {
	t.Helper()
	w := &allWorld{t: t, dir: t.TempDir(), services: map[string]string{}, names: map[string][]string{}}
	w.webroot = filepath.Join(w.dir, "webroot")
	if err := os.MkdirAll(w.webroot, 0o755); err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(http.FileServer(http.Dir(w.webroot)))
	t.Cleanup(web.Close)
	w.web = strings.TrimPrefix(web.URL, "http://")

	var services []sandbox.Service
	for i := range n {
		name := fmt.Sprintf("c%d", i)
		w.services[name] = "svc-" + name
		w.names[name] = []string{name + ".example.com", "www." + name + ".example.com"}
		services = append(services, sandbox.Service{ID: "svc-" + name, ProductID: sandbox.DefaultProducts()[0].ID})
	}
	sb, err := sandbox.New(sandbox.Config{
		StateDir: filepath.Join(w.dir, "sandbox"), HTTPAddr: w.web, CheckInterval: -1,
		Products: sandbox.DefaultProducts(), Services: services,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	w.sb = sb
	api := httptest.NewServer(sb.Handler())
	t.Cleanup(api.Close)
	w.api = api.URL + "/api/v1"
	return w
}

// config writes the configuration file and returns its path; edit may
// change a certificate's service or names before it is written.
func (w *allWorld) config(edit func(name string, service *string, names *[]string)) string {
	w.t.Helper()
	keyID, secret := w.sb.AccessKey()
	w.t.Setenv("DCVD_TEST_ALL_SECRET", secret)
	var b strings.Builder
	fmt.Fprintf(&b, "[api]\nbase_url = %q\naccess_key_id = %q\naccess_key_secret_env = \"DCVD_TEST_ALL_SECRET\"\nca_roots_file = %q\n\n",
		w.api, keyID, w.sb.RootPath())
	fmt.Fprintf(&b, "[daemon]\nstate_dir = %q\nmax_concurrent = 2\npoll_interval = \"100ms\"\n\n", filepath.Join(w.dir, "state"))
	for i := range len(w.services) {
		name := fmt.Sprintf("c%d", i)
		service, names := w.services[name], w.names[name]
		if edit != nil {
			edit(name, &service, &names)
		}
		fmt.Fprintf(&b, "[[certificate]]\nname = %q\nservice_id = %q\nwebroot = %q\nhttp_connect = %q\n[certificate.domains]\n",
			name, service, w.webroot, w.web)
		for _, n := range names {
			fmt.Fprintf(&b, "%q = \"http\"\n", n)
		}
		fmt.Fprintf(&b, "[certificate.deploy]\ndir = %q\n\n", w.deployDir(name))
	}
	p := filepath.Join(w.dir, "config.toml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		w.t.Fatal(err)
	}
	return p
}

func (w *allWorld) deployDir(name string) string { return filepath.Join(w.dir, "deploy", name) }

// charges counts the ledger's charges by service_id.
func (w *allWorld) charges() map[string]int {
	out := map[string]int{}
	for _, c := range w.sb.Ledger() {
		out[c.ServiceID]++
	}
	return out
}

// assertDeployed checks that name's deploy directory holds a certificate.
func (w *allWorld) assertDeployed(name string) {
	w.t.Helper()
	if _, err := os.Stat(filepath.Join(w.deployDir(name), "fullchain.pem")); err != nil {
		w.t.Errorf("certificate %s not deployed: %v", name, err)
	}
}

func reissueAllCmd(t *testing.T, ctx context.Context, cfg string, extra ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut lockedBuffer
	args := append([]string{"reissue", "--all", "--wait", "--progress", "20ms", "--timeout", "2m", "--config", cfg}, extra...)
	err = run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestReissueAllInProcess: without a daemon, every certificate is
// reissued once, each with a progress line, and the last summary line and
// the final summary count them all.
func TestReissueAllInProcess(t *testing.T) {
	w := newAllWorld(t, 5)
	cfg := w.config(nil)
	stdout, stderr, err := reissueAllCmd(t, context.Background(), cfg)
	if err != nil {
		t.Fatalf("reissue --all: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	for name, service := range w.services {
		if n := w.charges()[service]; n != 1 {
			t.Errorf("certificate %s charged %d times, want once", name, n)
		}
		w.assertDeployed(name)
		if !strings.Contains(stderr, "] "+name+": done in ") {
			t.Errorf("no progress line for %s", name)
		}
	}
	for _, want := range []string{
		"no daemon running: reissuing 5 certificates in this process, 2 at a time, until each is deployed",
		"progress: 5/5 ended (5 ok, 0 failed), 0 in flight, 0 queued; elapsed ",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stdout, "reissue --all: 5 of 5 certificates reissued, 0 failed, 0 not started, in ") {
		t.Errorf("stdout:\n%s", stdout)
	}
	// The daemon's own steps are left out unless asked for.
	if strings.Contains(stderr, "reissue accepted") {
		t.Errorf("the daemon's info lines drown the progress:\n%s", stderr)
	}
}

// TestReissueAllReportsFailuresAndGoesOn: a certificate the domain-removal
// guard refuses and one the CA refuses are reported, the others are
// reissued, and the command fails.
func TestReissueAllReportsFailuresAndGoesOn(t *testing.T) {
	w := newAllWorld(t, 4)
	cfg := w.config(nil)
	if stdout, stderr, err := reissueAllCmd(t, context.Background(), cfg); err != nil {
		t.Fatalf("first reissue --all: %v\n%s\n%s", err, stdout, stderr)
	}
	// c1 drops a name of its live certificate (which the CA would revoke);
	// c2 names a service the CA does not know.
	cfg = w.config(func(name string, service *string, names *[]string) {
		switch name {
		case "c1":
			*names = (*names)[:1]
		case "c2":
			*service = "no-such-service"
		}
	})
	stdout, stderr, err := reissueAllCmd(t, context.Background(), cfg)
	if err == nil {
		t.Fatalf("reissue --all succeeded with failures:\n%s\n%s", stdout, stderr)
	}
	if exitCode(err) == 0 {
		t.Errorf("exit status 0 for %v", err)
	}
	if !strings.Contains(err.Error(), "2 of 4 certificates not reissued (2 failed, 0 not started)") {
		t.Errorf("error: %v", err)
	}
	for _, want := range []string{
		"c1: FAILED after", "would drop www.c1.example.com", "--allow-domain-removal",
		"c2: FAILED after", "SERVICE_NOT_FOUND",
		"c0: done in ", "c3: done in ",
		"progress: 4/4 ended (2 ok, 2 failed)",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stdout, "2 of 4 certificates reissued, 2 failed") || !strings.Contains(stdout, "failed: c") {
		t.Errorf("stdout:\n%s", stdout)
	}
	charges := w.charges()
	for name, want := range map[string]int{"c0": 2, "c1": 1, "c2": 1, "c3": 2} {
		if got := charges[w.services[name]]; got != want {
			t.Errorf("certificate %s charged %d times, want %d", name, got, want)
		}
	}
	if len(w.sb.Revocations()) != 0 {
		t.Errorf("revocations: %+v", w.sb.Revocations())
	}
}

// TestReissueAllThroughTheRunningDaemon: with a daemon running, each
// certificate is asked for on its control socket and followed there, and
// reissued once.
func TestReissueAllThroughTheRunningDaemon(t *testing.T) {
	w := newAllWorld(t, 4)
	cfg := w.config(nil)
	// Issued first, so that the daemon's own first check finds nothing
	// due: every reissue below is then one that --all asked for.
	if stdout, stderr, err := reissueAllCmd(t, context.Background(), cfg); err != nil {
		t.Fatalf("first reissue --all: %v\n%s\n%s", err, stdout, stderr)
	}
	daemonOut := startDaemon(t, cfg)

	stdout, stderr, err := reissueAllCmd(t, context.Background(), cfg)
	if err != nil {
		t.Fatalf("reissue --all: %v\nstdout:\n%s\nstderr:\n%s\ndaemon:\n%s", err, stdout, stderr, daemonOut.String())
	}
	if !strings.Contains(stderr, "reissuing 4 certificates through the running daemon") {
		t.Errorf("stderr:\n%s", stderr)
	}
	for name, service := range w.services {
		if n := w.charges()[service]; n != 2 {
			t.Errorf("certificate %s charged %d times, want twice (once by each run)", name, n)
		}
		w.assertDeployed(name)
		if !strings.Contains(stderr, "] "+name+": done in ") {
			t.Errorf("no progress line for %s:\n%s", name, stderr)
		}
	}
	if !strings.Contains(stdout, "4 of 4 certificates reissued") {
		t.Errorf("stdout:\n%s", stdout)
	}
}

func TestReissueAllRefusesBadArguments(t *testing.T) {
	cfg := writeConfig(t, "")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"reissue", "shop", "--all", "--config", cfg}, "not both"},
		{[]string{"reissue", "--config", cfg}, "or give --all"},
		{[]string{"reissue", "a", "b", "--config", cfg}, "unexpected arguments"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tt.args, &out, &out)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

// TestReissueAllDryRun lists what would be done, refusals included, and
// sends nothing.
func TestReissueAllDryRun(t *testing.T) {
	w := newAllWorld(t, 2)
	cfg := w.config(nil)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"reissue", "--all", "--dry-run", "--config", cfg}, &out, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"certificate c0: would reissue c0.example.com, www.c0.example.com (service svc-c0", "certificate c1: would reissue"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if n := len(w.sb.Ledger()); n != 0 {
		t.Errorf("a dry run charged %d times", n)
	}
}
