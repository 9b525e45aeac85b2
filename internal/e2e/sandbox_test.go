package e2e_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/sandbox"
)

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
	sts, stdout := statusJSON(ctx, t, bin, cfgPath)
	for _, s := range sts {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("dcvd status --json does not list %s: %s", name, stdout)
	return certStatus{}
}

// statusJSON runs "dcvd status --json" and returns its entries and what
// it printed.
func statusJSON(ctx context.Context, t *testing.T, bin, cfgPath string) ([]certStatus, string) {
	t.Helper()
	r := runDcvd(ctx, bin, nil, "status", "--json", "--config", cfgPath)
	if statusFailed(r) {
		t.Fatalf("dcvd status --json: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	var sts []certStatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
		t.Fatalf("dcvd status --json printed %q: %v", r.stdout, err)
	}
	return sts, r.stdout
}

// startSandbox starts a sandbox CA (re-checking only on update-dcv) with
// its API on an httptest server, and returns it with the API's base URL.
func startSandbox(t *testing.T, cfg sandbox.Config) (*sandbox.Server, string) {
	t.Helper()
	return startSandboxBehind(t, cfg, nil)
}

// startSandboxBehind is startSandbox with the API served by front(the
// sandbox's handler) when front is not nil.
func startSandboxBehind(t *testing.T, cfg sandbox.Config, front func(http.Handler) http.Handler) (*sandbox.Server, string) {
	t.Helper()
	cfg.StateDir = t.TempDir()
	cfg.CheckInterval = -1
	sb, err := sandbox.New(cfg)
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sb.Start(ctx)
	h := sb.Handler()
	if front != nil {
		h = front(h)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		ts.Close()
		cancel()
		if err := sb.Close(); err != nil {
			t.Errorf("close sandbox: %v", err)
		}
	})
	return sb, ts.URL + "/api/v1"
}

// serveWebroot creates the directory webroot (0755) and serves it over
// HTTP on a loopback port until the test ends; it returns the address.
func serveWebroot(t *testing.T, webroot string) string {
	t.Helper()
	if err := os.Mkdir(webroot, 0o755); err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(http.FileServer(http.Dir(webroot)))
	t.Cleanup(web.Close)
	return web.Listener.Addr().String()
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
	return liveAndOrder(ctx, t, st, name)
}

// liveAndOrder reads the live certificate of name and the order that
// produced it from st.
func liveAndOrder(ctx context.Context, t *testing.T, st *store.SQLiteStore, name string) (*store.Certificate, *store.Order) {
	t.Helper()
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
