package e2e_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/miekg/dns"

	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/sandbox"
)

// TestDaemonReissueEndToEnd runs the real dcvd binary, as an admin would,
// against a sandbox CA, a real BIND9 (dns-validated names, RFC 2136 with
// TSIG) and a real nginx (the http-validated name's webroot, and the TLS
// site that serves the deploy directory):
//
//	dcvd check-config; dcvd reissue NAME --wait; dcvd status --json
//
// and then proves what the issue asks: nginx serves the new certificate (a
// TLS handshake verifies the chain against the sandbox root and the
// names), the DCV records are gone from BIND and the file from the
// webroot, and the sandbox charged exactly once.
func TestDaemonReissueEndToEnd(t *testing.T) {
	env := requireServers(t,
		"DCVD_TEST_BIND_ADDR", "DCVD_TEST_BIND_ZONE", "DCVD_TEST_BIND_TSIG_NAME", "DCVD_TEST_BIND_TSIG_ALG",
		"DCVD_TEST_BIND_TSIG_SECRET",
		"DCVD_TEST_NGINX_ADDR", "DCVD_TEST_NGINX_WEBROOT", "DCVD_TEST_NGINX_TLS_ADDR", "DCVD_TEST_NGINX_TLS_DIR",
		"DCVD_TEST_NGINX_RELOAD")
	bindAddr := env["DCVD_TEST_BIND_ADDR"]
	zone := strings.TrimSuffix(strings.ToLower(env["DCVD_TEST_BIND_ZONE"]), ".")
	webAddr, webroot := env["DCVD_TEST_NGINX_ADDR"], env["DCVD_TEST_NGINX_WEBROOT"]
	tlsAddr, tlsDir := env["DCVD_TEST_NGINX_TLS_ADDR"], env["DCVD_TEST_NGINX_TLS_DIR"]
	ctx := testContext(t)
	bin := dcvdBinary(t, "")

	// Fresh names under BIND's zone, so that runs against the same servers
	// never meet, and "nothing left under base" is checkable.
	label := "e2e-" + randomLabel(t)
	base := label + "." + zone
	wildcard, httpName := "*."+base, "shop-"+label+"."+zone
	domains := map[string]string{wildcard: "dns", base: "dns", httpName: "http"}
	const certName = "e2e"
	wellKnown := filepath.Join(webroot, ".well-known")
	hadWellKnown := exists(t, wellKnown)

	sb, apiURL := startSandbox(t, sandbox.Config{DNSServer: bindAddr, HTTPAddr: webAddr})
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	cfgPath := writeConfig(t, dir, sb, apiURL, map[string]any{
		"state_dir":     stateDir,
		"poll_interval": "100ms",
	}, map[string]any{
		"bind": map[string]any{
			"provider": "rfc2136",
			"server":   bindAddr,
			"key_name": env["DCVD_TEST_BIND_TSIG_NAME"],
			"key_alg":  env["DCVD_TEST_BIND_TSIG_ALG"],
			"key_file": writeSecret(t, dir, "tsig-secret", env["DCVD_TEST_BIND_TSIG_SECRET"]),
			// No zone: it is found by an SOA lookup at BIND itself.
			"resolvers":            []string{bindAddr},
			"nameservers":          []string{bindAddr},
			"ttl":                  "60s",
			"propagation_timeout":  "30s",
			"propagation_interval": "100ms",
		},
	}, map[string]any{
		"name":         certName,
		"service_id":   serviceID,
		"key_type":     "ecdsa-p256",
		"dns":          "bind",
		"webroot":      webroot,
		"http_connect": webAddr,
		"domains":      domains,
		"deploy": map[string]any{
			"dir":            tlsDir,
			"reload":         env["DCVD_TEST_NGINX_RELOAD"],
			"reload_timeout": "30s",
		},
	})

	// What nginx serves before: the placeholder of scripts/nginx.sh, or what
	// an earlier run deployed.
	before, err := servedLeaf(ctx, tlsAddr, httpName, nil)
	if err != nil {
		t.Fatalf("TLS handshake with nginx on %s before the reissue: %v", tlsAddr, err)
	}
	// The nginx the reload command signals, and its workers before dcvd
	// runs it: the ones that serve what was deployed before.
	ngx := nginxOf(t, env["DCVD_TEST_NGINX_RELOAD"])
	oldWorkers := ngx.workers(t)

	if r := runDcvd(ctx, bin, nil, "check-config", "--config", cfgPath); r.err != nil {
		t.Fatalf("dcvd check-config: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	r := runDcvd(ctx, bin, nil, "reissue", certName, "--wait", "--config", cfgPath)
	if r.err != nil {
		t.Fatalf("dcvd reissue %s --wait: %v\nstdout:\n%s\nstderr:\n%s", certName, r.err, r.stdout, r.stderr)
	}
	t.Logf("dcvd reissue --wait took %s: %s", r.took.Round(time.Millisecond), strings.TrimSpace(r.stdout))

	st := dcvdStatus(ctx, t, bin, cfgPath, certName)
	if st.Serial == "" || st.Order != nil || st.LastError != "" {
		t.Fatalf("dcvd status after the reissue: serial %q, order in flight %+v, last error %q; want a serial, no order, no error",
			st.Serial, st.Order, st.LastError)
	}
	serial := parseSerial(t, st.Serial)

	// The state says which order it was and what it published.
	live, order := readState(ctx, t, stateDir, certName)
	if live.Serial != st.Serial || order.Step != store.StepDone {
		t.Fatalf("state: live serial %s (status says %s), order %s at step %s, want done", live.Serial, st.Serial, order.UniqueID, order.Step)
	}
	if !strings.Contains(r.stdout, order.UniqueID) {
		t.Errorf("dcvd reissue printed %q, which does not name order %s", r.stdout, order.UniqueID)
	}

	// The sandbox charged once, for this order.
	checkCharges(t, sb, order.UniqueID)
	if st.TotalCost != sb.Ledger()[0].Amount {
		t.Errorf("dcvd status: total cost %.2f, the sandbox charged %.2f", st.TotalCost, sb.Ledger()[0].Amount)
	}

	// The deploy directory holds the new generation, whole.
	leaf := checkDeployed(t, tlsDir, sb.RootPool(), slices.Collect(maps.Keys(domains)))
	if leaf.SerialNumber.Cmp(serial) != 0 {
		t.Fatalf("%s/cert.pem has serial %x, dcvd status says %s", tlsDir, leaf.SerialNumber, st.Serial)
	}

	// nginx serves it once the reload is over (see waitServed), then
	// every handshake shows it.
	served := waitServed(ctx, t, ngx, oldWorkers, tlsAddr, httpName, serial)
	if served.SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Fatalf("nginx serves serial %x, the same as before the reissue", before.SerialNumber)
	}
	for _, name := range []string{httpName, "www." + base, base} {
		got, err := servedLeaf(ctx, tlsAddr, name, sb.RootPool())
		if err != nil {
			t.Errorf("TLS handshake with nginx for %s, verified against the sandbox root: %v", name, err)
			continue
		}
		if got.SerialNumber.Cmp(serial) != 0 {
			t.Errorf("nginx serves serial %x for %s, want %s", got.SerialNumber, name, st.Serial)
		}
	}
	// The handshake checks names: one the certificate lacks is refused.
	if _, err := servedLeaf(ctx, tlsAddr, "other."+label+".example.net", sb.RootPool()); err == nil {
		t.Errorf("a TLS handshake for a name the certificate does not cover verified")
	}

	// The DCV records were in BIND's zone (the CA validated them there),
	// and are gone.
	if len(order.DNSRecords) == 0 {
		t.Fatalf("order %s published no DNS record, want the CNAMEs of %s and %s", order.UniqueID, wildcard, base)
	}
	for _, rec := range order.DNSRecords {
		if rec.Name != base && !strings.HasSuffix(rec.Name, "."+base) {
			t.Errorf("order %s published %s, outside %s", order.UniqueID, rec.Name, base)
		}
		if got := queryCNAME(ctx, t, bindAddr, rec.Name); len(got) > 0 {
			t.Errorf("BIND still answers %s CNAME %v after the reissue", rec.Name, got)
		}
	}
	// The query above can see a CNAME: the zone's own alias answers.
	if got := queryCNAME(ctx, t, bindAddr, "alias."+zone); len(got) == 0 {
		t.Fatalf("BIND answers no CNAME for alias.%s, which its zone file holds: the record checks above prove nothing", zone)
	}
	for _, rr := range transferZone(t, env) {
		owner := strings.TrimSuffix(strings.ToLower(rr.Header().Name), ".")
		if owner == base || strings.HasSuffix(owner, "."+base) {
			t.Errorf("BIND's zone still holds %s after the reissue", strings.ReplaceAll(rr.String(), "\t", " "))
		}
	}

	// The validation file was served by nginx (the CA fetched it there),
	// and is gone.
	files := 0
	for _, in := range order.Instructions {
		if in.File == nil {
			continue
		}
		files++
		p := filepath.Join(webroot, ".well-known", "pki-validation", in.File.FileName)
		if exists(t, p) {
			t.Errorf("the validation file %s of %s is still in nginx's webroot", p, in.Domain)
		}
		if got := fetch(ctx, t, webAddr, in.File.Host, in.File.Path); got.status != http.StatusNotFound {
			t.Errorf("after the reissue nginx answers %s with HTTP %d, want 404", in.File.URL, got.status)
		}
	}
	if files != 1 {
		t.Errorf("order %s had %d validation files, want 1 (for %s)", order.UniqueID, files, httpName)
	}
	if !hadWellKnown && exists(t, wellKnown) {
		t.Errorf("the reissue left %s, which did not exist before", wellKnown)
	}
}

// requireServers returns the variables, or skips the test naming the
// missing ones (fails with DCVD_TEST_REQUIRE_SERVERS set).
func requireServers(t *testing.T, names ...string) map[string]string {
	t.Helper()
	env := map[string]string{}
	var missing []string
	for _, n := range names {
		v := os.Getenv(n)
		if v == "" {
			missing = append(missing, n)
		}
		env[n] = v
	}
	if len(missing) > 0 {
		skipOrFail(t, fmt.Sprintf("BIND9 or nginx not running: set %s (scripts/dns-servers.sh start DIR and scripts/nginx.sh start DIR, then load both DIR/env)",
			strings.Join(missing, ", ")))
	}
	return env
}

// The dcvd binary under test is built once per test binary, into binDir,
// for each set of build tags asked for.
var (
	binDir string
	builds = map[string]*dcvdBuild{"": {}, "crashtest": {}}
)

type dcvdBuild struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dcvd-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildTimeout bounds one go build (a cold cache compiles SQLite).
const buildTimeout = 10 * time.Minute

// dcvdBinary returns the path of cmd/dcvd built with tags, building it on
// first use. Under -race it is built with -race too, so that a data race
// in the daemon fails these tests.
func dcvdBinary(t *testing.T, tags string) string {
	t.Helper()
	b, ok := builds[tags]
	if !ok {
		t.Fatalf("no dcvd build with tags %q", tags)
	}
	name := "dcvd"
	if tags != "" {
		name += "-" + tags
	}
	return buildDcvd(t, b, name, raceEnabled(), tags)
}

// buildDcvd builds cmd/dcvd into binDir/name once per b (with the race
// detector when race, with tags when given) and returns its path.
func buildDcvd(t *testing.T, b *dcvdBuild, name string, race bool, tags string) string {
	t.Helper()
	b.once.Do(func() {
		goCmd, err := goCommand()
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(binDir, name)
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		if tags != "" {
			args = append(args, "-tags", tags)
		}
		args = append(args, "github.com/dcvd/dcvd/cmd/dcvd")
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, goCmd, args...)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
			return
		}
		t.Logf("built %s in %s", strings.Join(cmd.Args[1:], " "), time.Since(start).Round(time.Millisecond))
	})
	if b.err != nil {
		t.Fatalf("build dcvd: %v", b.err)
	}
	return b.path
}

// goCommand is the go command of the toolchain that built this test, else
// the one on PATH.
func goCommand() (string, error) {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p, nil
	}
	p, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no go command in %s/bin or on PATH: %w", runtime.GOROOT(), err)
	}
	return p, nil
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// dcvdEnv is the environment of a dcvd run: this process's, without the
// crash hook's variable, with GORACE for a -race build, plus env.
func dcvdEnv(env []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DCVD_CRASH_AT_STEP=") && !strings.HasPrefix(kv, "GORACE=") {
			out = append(out, kv)
		}
	}
	out = append(out, "GORACE="+goraceFor(os.Getenv("GORACE")))
	return append(out, env...)
}

// goraceFor is GORACE for a dcvd built with -race: the caller's options,
// and no second of sleep at each exit (the race runtime's default, which
// would make every run of dcvd take a second longer) unless asked for.
func goraceFor(gorace string) string {
	if strings.Contains(gorace, "atexit_sleep_ms=") {
		return gorace
	}
	return strings.TrimSpace(gorace + " atexit_sleep_ms=0")
}

// ran is one run of the dcvd binary.
type ran struct {
	stdout, stderr string
	err            error
	took           time.Duration
}

// runDcvd runs bin with args in dcvdEnv(env).
func runDcvd(ctx context.Context, bin string, env []string, args ...string) ran {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = dcvdEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	return ran{stdout: stdout.String(), stderr: stderr.String(), err: err, took: time.Since(start)}
}

// certStatus is one entry of "dcvd status --json": the fields the tests
// read, by their JSON names.
type certStatus struct {
	Name   string `json:"name"`
	Serial string `json:"serial"`
	Order  *struct {
		UniqueID string `json:"unique_id"`
		Step     string `json:"step"`
	} `json:"order"`
	LastError string  `json:"last_error"`
	TotalCost float64 `json:"total_cost"`
}

// dcvdStatus runs "dcvd status --json" and returns the entry of name.
// statusFailed says whether a "dcvd status" run failed as a command: exit
// status 1 with its output is its verdict for monitoring (a certificate
// failing or expiring soon), not a failure to report.
func statusFailed(r ran) bool {
	return r.err != nil && (exitStatus(r.err) != 1 || r.stdout == "")
}

func dcvdStatus(ctx context.Context, t *testing.T, bin, cfgPath, name string) certStatus {
	t.Helper()
	r := runDcvd(ctx, bin, nil, "status", "--json", "--config", cfgPath)
	if statusFailed(r) {
		t.Fatalf("dcvd status --json: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	var sts []certStatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
		t.Fatalf("dcvd status --json printed %q: %v", r.stdout, err)
	}
	for _, s := range sts {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("dcvd status --json does not list %s: %s", name, r.stdout)
	return certStatus{}
}

// startSandbox starts a sandbox CA (re-checking only on update-dcv) with
// its API on an httptest server, and returns it with the API's base URL.
func startSandbox(t *testing.T, cfg sandbox.Config) (*sandbox.Server, string) {
	t.Helper()
	cfg.StateDir = t.TempDir()
	cfg.CheckInterval = -1
	sb, err := sandbox.New(cfg)
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sb.Start(ctx)
	ts := httptest.NewServer(sb.Handler())
	t.Cleanup(func() {
		ts.Close()
		cancel()
		if err := sb.Close(); err != nil {
			t.Errorf("close sandbox: %v", err)
		}
	})
	return sb, ts.URL + "/api/v1"
}

// writeConfig writes dcvd's configuration file into dir: [api] for sb at
// apiURL (the secret in a file, the sandbox root as ca_roots_file),
// [daemon], [dns.*] and one [[certificate]]. Encoding with the TOML encoder
// quotes names and commands whatever they hold.
func writeConfig(t *testing.T, dir string, sb *sandbox.Server, apiURL string, daemonSection, dnsSections, cert map[string]any) string {
	t.Helper()
	id, secret := sb.AccessKey()
	roots := filepath.Join(dir, "sandbox-root.pem")
	if err := os.WriteFile(roots, []byte(sb.RootPEM()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"api": map[string]any{
			"base_url":               apiURL,
			"access_key_id":          id,
			"access_key_secret_file": writeSecret(t, dir, "api-secret", secret),
			"ca_roots_file":          roots,
			"timeout":                "10s",
		},
		"daemon":      daemonSection,
		"certificate": []map[string]any{cert},
	}
	if len(dnsSections) > 0 {
		cfg["dns"] = dnsSections
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
		t.Fatalf("encode the config: %v", err)
	}
	path := filepath.Join(dir, "dcvd.toml")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeSecret writes a secret into a 0600 file in dir and returns its path.
func writeSecret(t *testing.T, dir, name, secret string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// readState reads the live certificate of name and the order that
// produced it from dcvd's state (no dcvd process may be running).
func readState(ctx context.Context, t *testing.T, stateDir, name string) (*store.Certificate, *store.Order) {
	t.Helper()
	st, err := store.OpenSQLite(ctx, filepath.Join(stateDir, "dcvd.db"))
	if err != nil {
		t.Fatalf("open dcvd's state: %v", err)
	}
	defer st.Close()
	live, err := st.Certificate(ctx, name)
	if err != nil {
		t.Fatalf("the live certificate of %s: %v", name, err)
	}
	o, err := st.Order(ctx, live.UniqueID)
	if err != nil {
		t.Fatalf("order %s of %s: %v", live.UniqueID, name, err)
	}
	return live, o
}

// checkCharges fails unless the sandbox's ledger holds exactly one charge,
// for uniqueID.
func checkCharges(t *testing.T, sb *sandbox.Server, uniqueID string) {
	t.Helper()
	ledger := sb.Ledger()
	n := 0
	for _, c := range ledger {
		if c.UniqueID == uniqueID {
			n++
		}
	}
	if n != 1 || len(ledger) != 1 {
		t.Fatalf("the sandbox charged %d time(s) for order %s and %d time(s) in all (%+v), want exactly once",
			n, uniqueID, len(ledger), ledger)
	}
}

// checkDeployed checks the deploy directory dir: cert.pem, chain.pem,
// fullchain.pem and privkey.pem are there with their modes, fullchain is
// cert + chain, the key is the certificate's, and the certificate chains
// to roots for every name. It returns the leaf.
func checkDeployed(t *testing.T, dir string, roots *x509.CertPool, names []string) *x509.Certificate {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("deploy directory: %v", err)
		}
		return string(b)
	}
	certPEM, chainPEM, fullPEM, keyPEM := read("cert.pem"), read("chain.pem"), read("fullchain.pem"), read("privkey.pem")
	checkMode(t, filepath.Join(dir, "cert.pem"), 0o644)
	checkMode(t, filepath.Join(dir, "chain.pem"), 0o644)
	checkMode(t, filepath.Join(dir, "fullchain.pem"), 0o644)
	checkMode(t, filepath.Join(dir, "privkey.pem"), 0o600)
	if fullPEM != certPEM+chainPEM {
		t.Errorf("%s/fullchain.pem is not cert.pem followed by chain.pem", dir)
	}
	certs := parseCerts(t, "cert.pem", certPEM)
	if len(certs) != 1 {
		t.Fatalf("%s/cert.pem holds %d certificates, want the leaf alone", dir, len(certs))
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range parseCerts(t, "chain.pem", chainPEM) {
		inter.AddCert(c)
	}
	if _, err := tls.X509KeyPair([]byte(fullPEM), []byte(keyPEM)); err != nil {
		t.Errorf("%s: privkey.pem does not go with fullchain.pem: %v", dir, err)
	}
	if pub := publicKeyOf(t, "privkey.pem", []byte(keyPEM)); !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
		t.Errorf("%s: privkey.pem is not the key of cert.pem", dir)
	}
	for _, n := range names {
		n = strings.Replace(n, "*.", "www.", 1)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: n,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s/cert.pem for %s: %v", dir, n, err)
		}
	}
	return leaf
}

// publicKeyOf parses a PEM private key and returns its public key.
func publicKeyOf(t *testing.T, what string, keyPEM []byte) crypto.PublicKey {
	t.Helper()
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		t.Fatalf("%s holds no PEM block", what)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		if k, err = x509.ParseECPrivateKey(b.Bytes); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		t.Fatalf("%s: %T is not a signing key", what, k)
	}
	return s.Public()
}

// parseSerial parses a serial as dcvd prints it (hex).
func parseSerial(t *testing.T, s string) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(s, 16)
	if !ok {
		t.Fatalf("serial %q is not hex", s)
	}
	return n
}

// servedLeaf makes a TLS handshake with addr for serverName and returns
// the leaf the server presented. With roots, the chain and the name are
// verified against them; without, anything is accepted (to look only).
func servedLeaf(ctx context.Context, addr, serverName string, roots *x509.CertPool) (*x509.Certificate, error) {
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config:    &tls.Config{ServerName: serverName, RootCAs: roots, InsecureSkipVerify: roots == nil},
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("the server presented no certificate")
	}
	return certs[0], nil
}

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

// queryCNAME asks the DNS server at addr for name's CNAME and returns the
// targets it answers.
func queryCNAME(ctx context.Context, t *testing.T, addr, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeCNAME)
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	resp, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		t.Fatalf("query %s CNAME at %s: %v", name, addr, err)
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		t.Fatalf("query %s CNAME at %s: %s", name, addr, dns.RcodeToString[resp.Rcode])
	}
	var out []string
	for _, rr := range resp.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			out = append(out, c.Target)
		}
	}
	return out
}

// transferZone returns every record of BIND's zone, by a TSIG-signed AXFR.
func transferZone(t *testing.T, env map[string]string) []dns.RR {
	t.Helper()
	addr, zone := env["DCVD_TEST_BIND_ADDR"], dns.Fqdn(strings.ToLower(env["DCVD_TEST_BIND_ZONE"]))
	keyName, alg := dns.Fqdn(env["DCVD_TEST_BIND_TSIG_NAME"]), dns.Fqdn(env["DCVD_TEST_BIND_TSIG_ALG"])
	m := new(dns.Msg)
	m.SetAxfr(zone)
	m.SetTsig(keyName, alg, 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{keyName: env["DCVD_TEST_BIND_TSIG_SECRET"]},
		DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second}
	ch, err := tr.In(m, addr)
	if err != nil {
		t.Fatalf("AXFR %s from %s: %v", zone, addr, err)
	}
	var rrs []dns.RR
	for e := range ch {
		if e.Error != nil {
			t.Fatalf("AXFR %s from %s: %v", zone, addr, e.Error)
		}
		rrs = append(rrs, e.RR...)
	}
	if len(rrs) == 0 {
		t.Fatalf("AXFR %s from %s returned nothing", zone, addr)
	}
	return rrs
}

// randomLabel is 8 random lower-case hex digits.
func randomLabel(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
