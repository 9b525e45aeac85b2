package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/sandbox"
)

// clusterWorld is what one cluster test works on, all of it fresh: a
// PostgreSQL, a sandbox CA (its reissue requests recorded), a load balancer
// over the nodes' web roots, and three nodes configured but not started.
type clusterWorld struct {
	root     string // the repository
	pgDir    string // scripts/postgres.sh's DIR
	sb       *sandbox.Server
	sbURL    string // the sandbox's server, for its control endpoints
	lb       *loadBalancer
	reissues *reissueLog
	certs    []clusterCert
	nodes    []*clusterNode
}

func newClusterWorld(t *testing.T, certs ...clusterCert) *clusterWorld {
	t.Helper()
	root := repoRoot(t)
	w := &clusterWorld{root: root, certs: certs, reissues: &reissueLog{}}
	var dsn string
	w.pgDir, dsn = startPostgres(t, root)

	// The nodes' directories: short paths, for the control sockets.
	base := shortTempDir(t)
	shared := filepath.Join(base, "shared")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	var webroots []string
	for _, name := range clusterNodes {
		d := filepath.Join(base, name)
		n := &clusterNode{
			name:       name,
			stateDir:   filepath.Join(d, "state"),
			runtimeDir: filepath.Join(d, "run"),
			webroot:    filepath.Join(d, "webroot"),
			deployRoot: filepath.Join(d, "deploy"),
			reloadLog:  filepath.Join(d, "reloads.log"),
			cfgPath:    filepath.Join(d, "dcvd.toml"),
		}
		for _, sub := range []string{d, n.runtimeDir, n.webroot} {
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		// A RUNTIME_DIRECTORY as systemd makes it.
		if err := os.Chmod(n.runtimeDir, 0o700); err != nil {
			t.Fatal(err)
		}
		w.nodes = append(w.nodes, n)
		webroots = append(webroots, n.webroot)
	}

	w.lb = newLoadBalancer(webroots)
	lbServer := httptest.NewServer(w.lb)
	t.Cleanup(lbServer.Close)
	lbAddr := lbServer.Listener.Addr().String()

	product := sandbox.DefaultProducts()[0].ID
	var services []sandbox.Service
	for _, c := range certs {
		services = append(services, sandbox.Service{ID: c.name, ProductID: product})
	}
	sb, err := sandbox.New(sandbox.Config{
		StateDir: t.TempDir(), HTTPAddr: lbAddr, CheckInterval: -1,
		Products: sandbox.DefaultProducts(), Services: services,
	})
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sb.Start(ctx)
	ts := httptest.NewServer(w.reissues.wrap(sb.Handler()))
	t.Cleanup(func() {
		ts.Close()
		cancel()
		if err := sb.Close(); err != nil {
			t.Errorf("close sandbox: %v", err)
		}
	})
	w.sb, w.sbURL = sb, ts.URL

	// What every node shares: the API account, the database, the key that
	// seals private keys in it.
	id, secret := sb.AccessKey()
	roots := filepath.Join(shared, "sandbox-root.pem")
	if err := os.WriteFile(roots, []byte(sb.RootPEM()), 0o644); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	api := map[string]any{
		"base_url":               ts.URL + "/api/v1",
		"access_key_id":          id,
		"access_key_secret_file": writeSecret(t, shared, "api-secret", secret),
		"ca_roots_file":          roots,
		"timeout":                "10s",
	}
	dsnFile := writeSecret(t, shared, "dsn", dsn)
	keyFile := writeSecret(t, shared, "seal-key", base64.StdEncoding.EncodeToString(key))
	for _, n := range w.nodes {
		var cfgCerts []map[string]any
		for _, c := range certs {
			cfgCerts = append(cfgCerts, map[string]any{
				"name":         c.name,
				"service_id":   c.name,
				"webroot":      n.webroot,
				"http_connect": lbAddr,
				"domains":      c.domains,
				"deploy": map[string]any{
					"dir":    n.deployDir(c.name),
					"reload": `printf '%s %s\n' "$DCVD_CERT_NAME" "$DCVD_SERIAL" >>'` + n.reloadLog + `'`,
				},
			})
		}
		cfg := map[string]any{
			"api": api,
			"daemon": map[string]any{
				"state_dir":     n.stateDir,
				"poll_interval": "100ms",
				"log_level":     "debug",
			},
			"store": map[string]any{
				"driver":              "postgres",
				"dsn_file":            dsnFile,
				"node":                n.name,
				"lease":               clusterLease.String(),
				"encryption_key_file": keyFile,
			},
			"certificate": cfgCerts,
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
			t.Fatalf("encode the config of %s: %v", n.name, err)
		}
		if err := os.WriteFile(n.cfgPath, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// Registered after PostgreSQL's, so run before it: the nodes stop
	// first, then their output is shown if the test failed.
	t.Cleanup(func() {
		for _, n := range w.nodes {
			n.kill()
		}
		if t.Failed() {
			for _, n := range w.nodes {
				if n.out != nil {
					t.Logf("----- output of node %s -----\n%s", n.name, n.out.String())
				}
			}
			t.Logf("----- validation file fetches through the load balancer -----\n%s", w.lb.report())
		}
	})
	return w
}

// node returns the node called name.
func (w *clusterWorld) node(name string) *clusterNode {
	for _, n := range w.nodes {
		if n.name == name {
			return n
		}
	}
	panic("no node " + name)
}

// clusterNode is one "dcvd run" of a cluster test, and its files.
type clusterNode struct {
	name                           string
	stateDir, runtimeDir, webroot  string
	deployRoot, reloadLog, cfgPath string
	cmd                            *exec.Cmd
	out                            *lockedBuffer
	done                           chan struct{} // closed when the process has exited
	err                            error         // its exit, once done is closed
	exitedAt                       time.Time     // when Wait returned
}

func (n *clusterNode) deployDir(cert string) string { return filepath.Join(n.deployRoot, cert) }

// start runs "dcvd run" for the node, with env added to its environment.
func (n *clusterNode) start(t *testing.T, bin string, env ...string) {
	t.Helper()
	if n.cmd != nil {
		t.Fatalf("node %s started twice", n.name)
	}
	n.cmd = exec.Command(bin, "run", "--config", n.cfgPath)
	n.cmd.Env = dcvdEnv(append([]string{"RUNTIME_DIRECTORY=" + n.runtimeDir}, env...))
	n.out = &lockedBuffer{}
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	n.cmd.WaitDelay = 5 * time.Second
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start node %s: %v", n.name, err)
	}
	n.done = make(chan struct{})
	go func() {
		err := n.cmd.Wait()
		n.err, n.exitedAt = err, time.Now()
		close(n.done)
	}()
}

// exited reports whether the node's process has ended.
func (n *clusterNode) exited() bool {
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits for the exit, which it returns.
func (n *clusterNode) stop() error {
	if n.done == nil {
		return nil
	}
	if !n.exited() {
		if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			return fmt.Errorf("SIGTERM to node %s: %w", n.name, err)
		}
	}
	select {
	case <-n.done:
		return n.err
	case <-time.After(20 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		return fmt.Errorf("node %s did not exit within 20s of SIGTERM; killed", n.name)
	}
}

// kill ends the node, if it runs, gently first; for the cleanup.
func (n *clusterNode) kill() {
	if n.done == nil || n.exited() {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
}

// repoRoot is the repository holding this package (internal/e2e).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "scripts", "postgres.sh")); err != nil {
		t.Fatalf("the repository's scripts/postgres.sh, from %s: %v", root, err)
	}
	return root
}

// postgresScript runs scripts/postgres.sh with args, returning its output
// in the error.
func postgresScript(root string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "postgres.sh"), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("scripts/postgres.sh %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// startPostgres starts a PostgreSQL of the test's own and returns its
// directory and DSN; it is stopped when the test ends. Without PostgreSQL
// the test skips (fails with DCVD_TEST_REQUIRE_SERVERS set).
func startPostgres(t *testing.T, root string) (dir, dsn string) {
	t.Helper()
	// Its own temporary directory, the script's DIR itself: as root the
	// server runs as "postgres", which must reach DIR, and the script
	// opens DIR (not its parents) to it.
	dir = shortTempDir(t)
	if err := postgresScript(root, "start", dir); err != nil {
		skipOrFail(t, fmt.Sprintf("PostgreSQL is not installed or did not start (scripts/postgres.sh install needs root): %v", err))
	}
	t.Cleanup(func() {
		if err := postgresScript(root, "stop", dir); err != nil {
			t.Errorf("stop PostgreSQL: %v", err)
		}
	})
	f, err := os.Open(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "export DCVD_TEST_POSTGRES_DSN="); ok {
			return dir, v
		}
	}
	t.Fatalf("%s/env holds no DCVD_TEST_POSTGRES_DSN", dir)
	return "", ""
}
