package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

// These tests run cluster mode (issue 7) as it is deployed: three "dcvd
// run" processes on one machine sharing a real PostgreSQL, each with its own
// state, web root and deploy directories, behind a load balancer that the
// sandbox CA fetches the validation files through. Each test starts a
// PostgreSQL of its own (scripts/postgres.sh start), because one of them
// stops it, and other packages' tests share the CI's server.

// clusterLease is the [store] lease of the tests: short, so that a
// takeover happens within a test, and above the 2s the config requires.
const clusterLease = 3 * time.Second

// clusterNodes are the names of the three nodes, in the order they are
// configured.
var clusterNodes = []string{"n1", "n2", "n3"}

// clusterCert is one [[certificate]] of a cluster test, and the sandbox
// service it is reissued against (of the same name).
type clusterCert struct {
	name    string
	domains map[string]string // name → "http" or an approver address
}

// httpClusterCert is a certificate with two names validated by http files.
func httpClusterCert(name string) clusterCert {
	return clusterCert{name: name, domains: map[string]string{
		name + ".example.com":          "http",
		"www." + name + ".example.com": "http",
	}}
}

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

// loadBalancer stands in front of the nodes' web servers as a real one
// would: each request goes to the next backend in turn. For every request
// for a validation file it records whether every backend's web root held
// that file, with the same content, at that moment.
type loadBalancer struct {
	roots    []string
	backends []http.Handler

	mu      sync.Mutex
	next    int
	down    map[int]bool // backends taken out, as a health check would
	fetches []dcvFetch
}

// dcvFetch is one request for a validation file.
type dcvFetch struct {
	at        time.Time
	host, uri string
	byCA      bool // by the sandbox CA, not a node's self-check
	backend   int
	status    int
	onAll     bool   // every web root held the file, the same
	differs   string // else what was missing or different
}

func newLoadBalancer(roots []string) *loadBalancer {
	lb := &loadBalancer{roots: roots, down: map[int]bool{}}
	for _, r := range roots {
		lb.backends = append(lb.backends, http.FileServer(http.Dir(r)))
	}
	return lb
}

// setDown takes backend i out of (or back into) the rotation.
func (lb *loadBalancer) setDown(i int, down bool) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.down[i] = down
}

func (lb *loadBalancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	lb.mu.Lock()
	i := lb.next
	for range lb.roots {
		if !lb.down[i] {
			break
		}
		i = (i + 1) % len(lb.roots)
	}
	lb.next = (i + 1) % len(lb.roots)
	lb.mu.Unlock()

	if !strings.HasPrefix(r.URL.Path, reseller.PKIValidationPath) {
		lb.backends[i].ServeHTTP(w, r)
		return
	}
	f := dcvFetch{at: time.Now(), host: r.Host, uri: r.URL.Path, backend: i,
		byCA: r.Header.Get("User-Agent") == "dcvd-sandbox-dcv-checker"}
	f.onAll, f.differs = lb.onAllRoots(r.URL.Path)
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	lb.backends[i].ServeHTTP(rec, r)
	f.status = rec.status
	lb.mu.Lock()
	lb.fetches = append(lb.fetches, f)
	lb.mu.Unlock()
}

// onAllRoots reports whether every web root holds the file at uri, with
// the same content, and if not, what is missing or different.
func (lb *loadBalancer) onAllRoots(uri string) (bool, string) {
	rel := filepath.FromSlash(strings.TrimPrefix(path.Clean(uri), "/"))
	var first []byte
	var problems []string
	for i, root := range lb.roots {
		b, err := os.ReadFile(filepath.Join(root, rel))
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("web root %d: %v", i, err))
		case i > 0 && first != nil && !bytes.Equal(b, first):
			problems = append(problems, fmt.Sprintf("web root %d holds %q, web root 0 %q", i, b, first))
		case i == 0:
			first = b
		}
	}
	return len(problems) == 0, strings.Join(problems, "; ")
}

// caFetches returns the requests the sandbox CA made.
func (lb *loadBalancer) caFetches() []dcvFetch {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var out []dcvFetch
	for _, f := range lb.fetches {
		if f.byCA {
			out = append(out, f)
		}
	}
	return out
}

// report lists every validation file request, for a failed test's log.
func (lb *loadBalancer) report() string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var b strings.Builder
	for _, f := range lb.fetches {
		who := "self-check"
		if f.byCA {
			who = "CA"
		}
		fmt.Fprintf(&b, "%s %-10s http://%s%s → backend %d, HTTP %d, on all web roots: %t %s\n",
			f.at.Format("15:04:05.000"), who, f.host, f.uri, f.backend, f.status, f.onAll, f.differs)
	}
	return b.String()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// reissueLog records every request that reaches the sandbox's reissue
// endpoint, replays included: which unique_id each node sent for which
// service.
type reissueLog struct {
	mu   sync.Mutex
	reqs []reissueRequest
	// gate, while open, keeps reissue requests waiting, as a slow CA
	// would (see hold).
	gate chan struct{}
}

type reissueRequest struct {
	serviceID, uniqueID string
}

// hold keeps the reissue requests from now on waiting until release is
// called (or their client gives up: a 503, which it retries).
func (l *reissueLog) hold() (release func()) {
	gate := make(chan struct{})
	l.mu.Lock()
	l.gate = gate
	l.mu.Unlock()
	return sync.OnceFunc(func() { close(gate) })
}

// wrap records the reissue requests on their way to h.
func (l *reissueLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, reseller.PathReissue) {
			l.mu.Lock()
			gate := l.gate
			l.mu.Unlock()
			if gate != nil {
				select {
				case <-gate:
				case <-r.Context().Done():
					http.Error(w, "held back by the test", http.StatusServiceUnavailable)
					return
				}
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
			r.Body.Close()
			if err != nil {
				http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			var p map[string]any
			_ = json.Unmarshal(body, &p) // a malformed body is the sandbox's to refuse
			str := func(k string) string {
				if s, ok := p[k].(string); ok {
					return s
				}
				return r.URL.Query().Get(k)
			}
			l.mu.Lock()
			l.reqs = append(l.reqs, reissueRequest{serviceID: str("service_id"), uniqueID: str("unique_id")})
			l.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// uniqueIDs returns, per service, the distinct unique_ids sent for it.
func (l *reissueLog) uniqueIDs() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]string{}
	for _, r := range l.reqs {
		if !slices.Contains(out[r.serviceID], r.uniqueID) {
			out[r.serviceID] = append(out[r.serviceID], r.uniqueID)
		}
	}
	return out
}

// clusterStatus is one entry of "dcvd status --json" in cluster mode: the
// fields the tests read, by their JSON names.
type clusterStatus struct {
	certStatus
	Lease *struct {
		Holder  string    `json:"holder"`
		Token   int64     `json:"token"`
		Expires time.Time `json:"expires"`
		Current bool      `json:"current"`
	} `json:"lease"`
	Nodes []clusterNodeStatus `json:"nodes"`
}

// clusterNodeStatus is what "dcvd status --json" says of one node's
// deployment of a certificate.
type clusterNodeStatus struct {
	Node    string    `json:"node"`
	Serial  string    `json:"serial"`
	Updated time.Time `json:"updated"`
	Error   string    `json:"error"`
	Alive   bool      `json:"alive"`
}

// clusterStatuses runs "dcvd status --json" with a node's configuration
// and returns its entries by certificate; an error (not a failure) lets a
// caller poll through a moment when the command cannot answer.
func clusterStatuses(ctx context.Context, bin, cfgPath string) (map[string]clusterStatus, error) {
	r := runDcvd(ctx, bin, nil, "status", "--json", "--config", cfgPath)
	if statusFailed(r) {
		return nil, fmt.Errorf("dcvd status --json: %w\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	var sts []clusterStatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
		return nil, fmt.Errorf("dcvd status --json printed %q: %w", r.stdout, err)
	}
	out := map[string]clusterStatus{}
	for _, s := range sts {
		out[s.Name] = s
	}
	return out, nil
}

// settled says why st is not yet a certificate live and deployed on every
// node in nodes ("" when it is).
func settled(st clusterStatus, nodes []string) string {
	switch {
	case st.Serial == "":
		if st.Order != nil {
			return fmt.Sprintf("no certificate yet, order %s at %s", st.Order.UniqueID, st.Order.Step)
		}
		return "no certificate and no order"
	case st.Order != nil:
		return fmt.Sprintf("order %s still at %s", st.Order.UniqueID, st.Order.Step)
	case st.LastError != "":
		return "last error: " + st.LastError
	}
	for _, name := range nodes {
		i := slices.IndexFunc(st.Nodes, func(n clusterNodeStatus) bool { return n.Node == name })
		if i < 0 {
			return fmt.Sprintf("node %s not in the status (%+v)", name, st.Nodes)
		}
		n := st.Nodes[i]
		if !n.Alive || !strings.EqualFold(n.Serial, st.Serial) || n.Error != "" {
			return fmt.Sprintf("node %s: alive %t, serial %q (live %s), error %q", name, n.Alive, n.Serial, st.Serial, n.Error)
		}
	}
	return ""
}

// waitUntil polls cond every 200ms until it returns "", and fails with what
// it last returned when ctx ends.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() string) {
	t.Helper()
	for {
		why := cond()
		if why == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached (%v): %s", what, ctx.Err(), why)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// filesUnder lists the regular files under dir, relative to it.
func filesUnder(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
	return out
}

// checkOnlyDirs fails unless everything under dir is one of the
// directories allowed (relative to dir), each empty but for the others.
func checkOnlyDirs(t *testing.T, dir string, allowed ...string) {
	t.Helper()
	var stray []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			stray = append(stray, err.Error())
			return nil
		}
		if rel := strings.TrimPrefix(p, dir+"/"); p != dir && (!d.IsDir() || !slices.Contains(allowed, rel)) {
			stray = append(stray, rel)
		}
		return nil
	})
	if len(stray) > 0 {
		t.Errorf("%s still holds %v", dir, stray)
	}
}

// reloads reads a node's reload log: the serials reloaded, by certificate.
func reloads(t *testing.T, n *clusterNode) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(n.reloadLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if cert, serial, ok := strings.Cut(line, " "); ok {
			out[cert] = append(out[cert], serial)
		}
	}
	return out
}

// checkSameDeployed fails unless the deploy directories of cert on nodes
// hold the same four files, byte for byte, and checks the first one fully
// (complete, the key matching, chaining to the sandbox root for names).
func checkSameDeployed(t *testing.T, w *clusterWorld, cert string, names []string, nodes ...*clusterNode) {
	t.Helper()
	checkDeployed(t, nodes[0].deployDir(cert), w.sb.RootPool(), names)
	for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
		want, err := os.ReadFile(filepath.Join(nodes[0].deployDir(cert), f))
		if err != nil {
			t.Fatalf("node %s: %v", nodes[0].name, err)
		}
		for _, n := range nodes[1:] {
			got, err := os.ReadFile(filepath.Join(n.deployDir(cert), f))
			if err != nil {
				t.Errorf("node %s: %v", n.name, err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("certificate %s: node %s's %s differs from node %s's", cert, n.name, f, nodes[0].name)
			}
		}
	}
}

// sandboxService is a service as the sandbox's /sandbox/services shows it.
type sandboxService struct {
	ID            string `json:"service_id"`
	OrderUniqueID string `json:"order_unique_id"`
	OrderStatus   string `json:"order_status"`
	Serial        string `json:"serial"`
}

// sandboxServices reads the sandbox's services through its control
// endpoint, by service ID.
func sandboxServices(ctx context.Context, t *testing.T, sbURL string) map[string]sandboxService {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sbURL+"/sandbox/services", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /sandbox/services: %v", err)
	}
	defer resp.Body.Close()
	var env struct {
		Data []sandboxService `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatalf("GET /sandbox/services: %v", err)
	}
	out := map[string]sandboxService{}
	for _, s := range env.Data {
		out[s.ID] = s
	}
	return out
}

// checkOneOrderEach fails unless the sandbox charged exactly once for each
// certificate, and every reissue request for it carried that charge's
// unique_id; it returns the unique_ids by certificate.
func checkOneOrderEach(t *testing.T, w *clusterWorld) map[string]string {
	t.Helper()
	uids := map[string]string{}
	ledger := w.sb.Ledger()
	for _, c := range ledger {
		if prev, ok := uids[c.ServiceID]; ok {
			t.Errorf("service %s charged twice: %s and %s", c.ServiceID, prev, c.UniqueID)
		}
		uids[c.ServiceID] = c.UniqueID
	}
	if len(ledger) != len(w.certs) {
		t.Errorf("the sandbox charged %d time(s) (%+v), want once for each of %d certificate(s)", len(ledger), ledger, len(w.certs))
	}
	sent := w.reissues.uniqueIDs()
	for _, c := range w.certs {
		if _, ok := uids[c.name]; !ok {
			t.Errorf("certificate %s was never charged", c.name)
		}
		if got := sent[c.name]; len(got) != 1 || got[0] != uids[c.name] {
			t.Errorf("certificate %s: reissue requests carried unique_ids %v, want only %s", c.name, got, uids[c.name])
		}
	}
	return uids
}

// TestClusterThreeNodes: three nodes, three certificates of two http names
// each. Every certificate is charged once; every node deploys the same
// files and runs its reload; the CA found each validation file on all
// three web roots whenever it fetched one, and none is left after;
// "dcvd status" shows every node alive with the deployed serial.
func TestClusterThreeNodes(t *testing.T) {
	bin := dcvdBinary(t, "")
	ctx := testContext(t)
	certs := []clusterCert{httpClusterCert("c1"), httpClusterCert("c2"), httpClusterCert("c3")}
	w := newClusterWorld(t, certs...)
	start := time.Now()
	// Three members, then the orders: no reissue is answered before every
	// node is alive in the cluster, so that each order's driver waits for
	// all three nodes' validation files. Started one after the other, a
	// node could join after a driver had looked, and write the files only
	// as it starts, racing the CA's fetch (package daemon's
	// TestClusterStartingNodeWritesPendingFiles covers that case).
	release := w.reissues.hold()
	defer release()
	for _, n := range w.nodes {
		n.start(t, bin)
	}
	waitUntil(ctx, t, "three nodes alive in the cluster", func() string {
		sts, err := clusterStatuses(ctx, bin, w.nodes[0].cfgPath)
		if err != nil {
			return err.Error()
		}
		st := sts[certs[0].name]
		for _, name := range clusterNodes {
			if !slices.ContainsFunc(st.Nodes, func(n clusterNodeStatus) bool { return n.Node == name && n.Alive }) {
				return fmt.Sprintf("node %s not alive yet (%+v)", name, st.Nodes)
			}
		}
		return ""
	})
	release()

	// Done when node 1's status shows every certificate deployed on every
	// node, the reloads ran, and no validation file is left.
	var sts map[string]clusterStatus
	waitUntil(ctx, t, "every certificate live on three nodes", func() string {
		for _, n := range w.nodes {
			if n.exited() {
				t.Fatalf("node %s exited: %v\n%s", n.name, n.err, n.out.String())
			}
		}
		var err error
		if sts, err = clusterStatuses(ctx, bin, w.nodes[0].cfgPath); err != nil {
			return err.Error()
		}
		for _, c := range certs {
			st, ok := sts[c.name]
			if !ok {
				return "status does not list " + c.name
			}
			if why := settled(st, clusterNodes); why != "" {
				return c.name + ": " + why
			}
			for _, n := range w.nodes {
				if !slices.Contains(reloads(t, n)[c.name], st.Serial) {
					return fmt.Sprintf("%s: node %s has not reloaded serial %s yet", c.name, n.name, st.Serial)
				}
			}
		}
		for _, n := range w.nodes {
			if fs := filesUnder(n.webroot); len(fs) > 0 {
				return fmt.Sprintf("node %s's web root still holds %v", n.name, fs)
			}
		}
		return ""
	})
	t.Logf("three certificates live on three nodes after %s", time.Since(start).Round(time.Millisecond))

	uids := checkOneOrderEach(t, w)
	services := sandboxServices(ctx, t, w.sbURL)
	for _, c := range certs {
		st := sts[c.name]
		if sv := services[c.name]; !sameSerial(sv.Serial, st.Serial) || sv.OrderUniqueID != uids[c.name] {
			t.Errorf("certificate %s: the sandbox issued serial %s for order %s; dcvd shows %s, the ledger %s",
				c.name, sv.Serial, sv.OrderUniqueID, st.Serial, uids[c.name])
		}
		if len(st.Nodes) != len(clusterNodes) {
			t.Errorf("certificate %s: status lists nodes %+v, want %v", c.name, st.Nodes, clusterNodes)
		}
		if st.Lease == nil {
			t.Errorf("certificate %s: status shows no lease", c.name)
		} else if !slices.Contains(clusterNodes, st.Lease.Holder) || st.Lease.Token < 1 {
			t.Errorf("certificate %s: lease %+v, want one held by a node with a token", c.name, *st.Lease)
		}
		checkSameDeployed(t, w, c.name, slices.Collect(maps.Keys(c.domains)), w.nodes...)
		leaf := parseCerts(t, "cert.pem", readFile(t, filepath.Join(w.nodes[0].deployDir(c.name), "cert.pem")))[0]
		if leaf.SerialNumber.Cmp(parseSerial(t, st.Serial)) != 0 {
			t.Errorf("certificate %s: cert.pem has serial %x, dcvd status says %s", c.name, leaf.SerialNumber, st.Serial)
		}
		for _, n := range w.nodes {
			rl := reloads(t, n)[c.name]
			if len(rl) == 0 || rl[len(rl)-1] != st.Serial {
				t.Errorf("certificate %s: node %s reloaded for serials %v, want last %s", c.name, n.name, rl, st.Serial)
			}
			if len(rl) > 1 {
				t.Logf("certificate %s: node %s reloaded %d times (%v)", c.name, n.name, len(rl), rl)
			}
		}
	}

	// The CA fetched each name's file, and found it on all three web
	// roots every time.
	fetched := map[string]bool{}
	for _, f := range w.lb.caFetches() {
		fetched[f.host] = true
		if !f.onAll || f.status != http.StatusOK {
			t.Errorf("the CA fetched http://%s%s (backend %d, HTTP %d) when not every web root held it: %s",
				f.host, f.uri, f.backend, f.status, f.differs)
		}
	}
	for _, c := range certs {
		for name := range c.domains {
			if !fetched[name] {
				t.Errorf("the CA never fetched a validation file of %s", name)
			}
		}
	}
	// No file is left. The directories made for the files may stay:
	// several certificates' files shared them, and httpchallenge.Remove
	// leaves a directory it made while another order's file is in it.
	for _, n := range w.nodes {
		checkOnlyDirs(t, n.webroot, ".well-known", ".well-known/pki-validation")
	}

	for _, n := range w.nodes {
		if err := n.stop(); err != nil {
			t.Errorf("node %s, stopped with SIGTERM: %v", n.name, err)
		}
	}
}

// TestClusterLeaseHolderKilled: node 1, alone, takes the order to published
// and is killed there with SIGKILL (the crashtest build's hook). Nodes 2 and
// 3, started after, finish that same order — one charge, one unique_id —
// within the lease and some slack of the kill, and deploy it.
func TestClusterLeaseHolderKilled(t *testing.T) {
	bin := dcvdBinary(t, "crashtest")
	ctx := testContext(t)
	cert := httpClusterCert("c1")
	w := newClusterWorld(t, cert)
	n1, n2, n3 := w.node("n1"), w.node("n2"), w.node("n3")

	n1.start(t, bin, "DCVD_CRASH_AT_STEP=published")
	select {
	case <-n1.done:
	case <-ctx.Done():
		t.Fatalf("node 1 did not crash at published: %v\n%s", ctx.Err(), n1.out.String())
	}
	killed := n1.exitedAt
	if !killedBy(n1.err, syscall.SIGKILL) {
		t.Fatalf("node 1 with DCVD_CRASH_AT_STEP=published ended with %v, want death by SIGKILL\n%s", n1.err, n1.out.String())
	}
	const hook = "crashtest: SIGKILL after step published of order "
	out := n1.out.String()
	i := strings.Index(out, hook)
	if i < 0 {
		t.Fatalf("node 1 died by SIGKILL, but not from the hook (%q not in its output):\n%s", hook, out)
	}
	uid, _, _ := strings.Cut(out[i+len(hook):], "\n")
	uid = strings.TrimSpace(uid)
	// The lease is node 1's (it dies holding it), the order at published.
	if sts, err := clusterStatuses(ctx, bin, n2.cfgPath); err != nil {
		t.Errorf("dcvd status with no node running: %v", err)
	} else {
		st := sts[cert.name]
		if st.Order == nil || st.Order.UniqueID != uid || st.Order.Step != "published" {
			t.Errorf("after the crash dcvd status shows order %+v, want %s at published", st.Order, uid)
		}
		if st.Lease == nil || st.Lease.Holder != "n1" {
			t.Errorf("after the crash dcvd status shows lease %+v, want n1's", st.Lease)
		}
	}
	// A dead node's web server is taken out of the load balancer, as a
	// health check would: the CA must find the files the others wrote.
	w.lb.setDown(0, true)

	n2.start(t, bin)
	n3.start(t, bin)
	finishBy := killed.Add(clusterLease + 30*time.Second)
	deadline, cancel := context.WithDeadline(ctx, finishBy)
	defer cancel()
	var st clusterStatus
	waitUntil(deadline, t, "the order finished by node 2 or 3 within the lease + 30s of the kill", func() string {
		for _, n := range []*clusterNode{n2, n3} {
			if n.exited() {
				t.Fatalf("node %s exited: %v\n%s", n.name, n.err, n.out.String())
			}
		}
		sts, err := clusterStatuses(ctx, bin, n2.cfgPath)
		if err != nil {
			return err.Error()
		}
		st = sts[cert.name]
		if why := settled(st, []string{"n2", "n3"}); why != "" {
			return why
		}
		for _, n := range []*clusterNode{n2, n3} {
			if fs := filesUnder(n.webroot); len(fs) > 0 {
				return fmt.Sprintf("node %s's web root still holds %v", n.name, fs)
			}
		}
		return ""
	})
	t.Logf("order %s finished %s after node 1 was killed (lease %s)", uid, time.Since(killed).Round(time.Millisecond), clusterLease)

	checkCharges(t, w.sb, uid)
	if sent := w.reissues.uniqueIDs()[cert.name]; !slices.Equal(sent, []string{uid}) {
		t.Errorf("reissue requests carried unique_ids %v, want only node 1's %s", sent, uid)
	}
	if sv := sandboxServices(ctx, t, w.sbURL)[cert.name]; sv.OrderUniqueID != uid || !sameSerial(sv.Serial, st.Serial) {
		t.Errorf("the sandbox issued serial %s for order %s; dcvd shows %s, want order %s", sv.Serial, sv.OrderUniqueID, st.Serial, uid)
	}
	if st.Lease == nil || (st.Lease.Holder != "n2" && st.Lease.Holder != "n3") {
		t.Errorf("after the takeover the lease is %+v, want held last by n2 or n3", st.Lease)
	} else if st.Lease.Token < 2 {
		t.Errorf("after the takeover the lease has token %d, want more than node 1's", st.Lease.Token)
	}
	checkSameDeployed(t, w, cert.name, slices.Collect(maps.Keys(cert.domains)), n2, n3)
	for _, n := range []*clusterNode{n2, n3} {
		if rl := reloads(t, n)[cert.name]; len(rl) == 0 || rl[len(rl)-1] != st.Serial {
			t.Errorf("node %s reloaded for serials %v, want last %s", n.name, rl, st.Serial)
		}
	}
	for _, f := range w.lb.caFetches() {
		if f.backend == 0 || f.status != http.StatusOK {
			t.Errorf("the CA fetched http://%s%s from backend %d: HTTP %d", f.host, f.uri, f.backend, f.status)
		}
	}
	for _, n := range []*clusterNode{n2, n3} {
		checkOnlyEntries(t, n.webroot)
		if err := n.stop(); err != nil {
			t.Errorf("node %s, stopped with SIGTERM: %v", n.name, err)
		}
	}
}

// TestClusterPostgresDown: a network partition's stand-in. While an order
// waits for the CA (an e-mail validation not yet approved), PostgreSQL is
// stopped for three lease durations, then started again. No node dies, the
// order is submitted once (one unique_id, one charge), and once the
// approver clicks it completes and every node deploys it.
func TestClusterPostgresDown(t *testing.T) {
	bin := dcvdBinary(t, "")
	ctx := testContext(t)
	const approved = "www.c1.example.com"
	cert := clusterCert{name: "c1", domains: map[string]string{
		"c1.example.com": "http",
		approved:         "admin@c1.example.com",
	}}
	w := newClusterWorld(t, cert)
	for _, n := range w.nodes {
		n.start(t, bin)
	}
	checkRunning := func() {
		t.Helper()
		for _, n := range w.nodes {
			if n.exited() {
				t.Fatalf("node %s exited: %v\n%s", n.name, n.err, n.out.String())
			}
		}
	}

	// The order waits for the approval, its file on every web root.
	waitUntil(ctx, t, "the order waiting for the e-mail approval", func() string {
		checkRunning()
		sts, err := clusterStatuses(ctx, bin, w.nodes[0].cfgPath)
		if err != nil {
			return err.Error()
		}
		st := sts[cert.name]
		if st.Order == nil || st.Order.Step != "rechecked" {
			return fmt.Sprintf("order %+v, want one at rechecked", st.Order)
		}
		for _, n := range w.nodes {
			if len(filesUnder(n.webroot)) == 0 {
				return fmt.Sprintf("node %s's web root holds no validation file", n.name)
			}
		}
		return ""
	})
	if sv := sandboxServices(ctx, t, w.sbURL)[cert.name]; sv.OrderStatus != "pending" {
		t.Fatalf("the sandbox's order is %+v, want pending", sv)
	}

	// The outage.
	if err := postgresScript(w.root, "pause", w.pgDir); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	for time.Since(down) < 3*clusterLease {
		checkRunning()
		time.Sleep(200 * time.Millisecond)
	}
	if err := postgresScript(w.root, "resume", w.pgDir); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL was down for %s", time.Since(down).Round(time.Millisecond))
	checkRunning()

	if err := w.sb.ApproveEmail(cert.name, approved); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	var st clusterStatus
	waitUntil(ctx, t, "the order finished after PostgreSQL came back", func() string {
		checkRunning()
		sts, err := clusterStatuses(ctx, bin, w.nodes[0].cfgPath)
		if err != nil {
			return err.Error()
		}
		st = sts[cert.name]
		if why := settled(st, clusterNodes); why != "" {
			return why
		}
		for _, n := range w.nodes {
			if fs := filesUnder(n.webroot); len(fs) > 0 {
				return fmt.Sprintf("node %s's web root still holds %v", n.name, fs)
			}
		}
		return ""
	})
	t.Logf("order finished %s after the approval", time.Since(resumed).Round(time.Millisecond))

	uids := checkOneOrderEach(t, w)
	if sv := sandboxServices(ctx, t, w.sbURL)[cert.name]; sv.OrderUniqueID != uids[cert.name] || !sameSerial(sv.Serial, st.Serial) {
		t.Errorf("the sandbox issued serial %s for order %s; dcvd shows %s, the ledger %s", sv.Serial, sv.OrderUniqueID, st.Serial, uids[cert.name])
	}
	checkSameDeployed(t, w, cert.name, slices.Collect(maps.Keys(cert.domains)), w.nodes...)
	for _, n := range w.nodes {
		if rl := reloads(t, n)[cert.name]; len(rl) == 0 || rl[len(rl)-1] != st.Serial {
			t.Errorf("node %s reloaded for serials %v, want last %s", n.name, rl, st.Serial)
		}
		checkOnlyEntries(t, n.webroot)
	}
	for _, n := range w.nodes {
		if err := n.stop(); err != nil {
			t.Errorf("node %s, stopped with SIGTERM: %v", n.name, err)
		}
	}
}

// readFile returns the content of p.
func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
