package e2e_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

// These tests run HTTP file DCV through a real nginx (scripts/nginx.sh):
// dcvd's webroot writer puts the file where nginx serves it, the self-check
// and the sandbox CA both fetch it through nginx, and cleanup removes it.
// nginx's workers run as an unprivileged user, as a packaged nginx does, so
// a file they serve is a file the web server's user can read (certbot#9920).

const nginxSkip = "nginx not running: set %s (scripts/nginx.sh start DIR, then load DIR/env)"

// The sandbox's default catalogue has one service.
const serviceID = "demo"

// Generous bounds: nothing here waits unless something is broken.
const (
	testTimeout  = 90 * time.Second
	issueTimeout = 30 * time.Second
)

// requireEnv returns the variables, or skips the test naming the missing
// ones; with DCVD_TEST_REQUIRE_SERVERS set (CI) it fails instead.
func requireEnv(t *testing.T, names ...string) map[string]string {
	t.Helper()
	return requireVars(t, nginxSkip, names...)
}

// requireVars returns the variables names, or skips the test (fails with
// DCVD_TEST_REQUIRE_SERVERS set) with the reason skipFormat, whose %s is
// the missing ones.
func requireVars(t *testing.T, skipFormat string, names ...string) map[string]string {
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
		skipOrFail(t, fmt.Sprintf(skipFormat, strings.Join(missing, ", ")))
	}
	return env
}

// skipOrFail skips the test, or fails it where servers are required: in CI a
// test that cannot prove its point is a failure, not a skip.
func skipOrFail(t *testing.T, reason string) {
	t.Helper()
	if os.Getenv("DCVD_TEST_REQUIRE_SERVERS") != "" {
		t.Fatal(reason + " (DCVD_TEST_REQUIRE_SERVERS is set)")
	}
	t.Skip(reason)
}

// testContext bounds a whole test, so that a hung server fails it instead of
// hanging the run.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// startCA starts a sandbox CA that fetches http validation files from
// httpAddr, and a reseller client for it.
func startCA(t *testing.T, httpAddr string) (*sandbox.Server, *reseller.Client) {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{StateDir: t.TempDir(), HTTPAddr: httpAddr, CheckInterval: -1})
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	ts := httptest.NewServer(sb.Handler())
	t.Cleanup(func() {
		ts.Close()
		if err := sb.Close(); err != nil {
			t.Errorf("close sandbox: %v", err)
		}
	})
	id, secret := sb.AccessKey()
	client, err := reseller.New(reseller.Config{
		BaseURL:         ts.URL + "/api/v1",
		AccessKeyID:     id,
		AccessKeySecret: secret,
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatalf("reseller client: %v", err)
	}
	return sb, client
}

// newCSR returns a fresh ECDSA key and a PEM CSR for names.
func newCSR(t *testing.T, names ...string) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: names[0]},
		DNSNames: names,
	}, key)
	if err != nil {
		t.Fatalf("create CSR: %v", err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// reissueHTTP asks for a certificate for names, each validated by an http
// file, and returns what was requested and the validated file instructions.
func reissueHTTP(ctx context.Context, t *testing.T, client *reseller.Client, uniqueID string, names ...string) (crypto.PublicKey, map[string]reseller.Method, []reseller.FileInstruction) {
	t.Helper()
	key, csr := newCSR(t, names...)
	dcv := make(map[string]reseller.Method, len(names))
	for _, n := range names {
		dcv[n] = reseller.MethodHTTP
	}
	order, err := client.Reissue(ctx, reseller.ReissueRequest{
		UniqueID:  uniqueID,
		ServiceID: serviceID,
		DomainDCV: dcv,
		CSR:       csr,
	})
	if err != nil {
		t.Fatalf("reissue: %v", err)
	}
	plan, err := reseller.ValidateInstructions(dcv, order.DCV)
	if err != nil {
		t.Fatalf("the sandbox's DCV instructions: %v", err)
	}
	for _, w := range plan.Warnings {
		t.Logf("DCV instructions: %s", w)
	}
	var files []reseller.FileInstruction
	for _, in := range plan.Instructions {
		if in.File == nil {
			t.Fatalf("%s: %s instruction without a file", in.Domain, in.Method)
		}
		files = append(files, *in.File)
	}
	if len(files) != len(names) {
		t.Fatalf("got %d file instructions for %d names", len(files), len(names))
	}
	return key.Public(), dcv, files
}

// fetched is what a plain GET through a server returned.
type fetched struct {
	status      int
	contentType string
	location    string
	body        string
}

// fetch GETs http://host+path from the server at addr, as the CA would: no
// proxy, no redirect followed.
func fetch(ctx context.Context, t *testing.T, addr, host, path string) fetched {
	t.Helper()
	var d net.Dialer
	client := &http.Client{
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET http://%s%s through %s: %v", host, path, addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		t.Fatalf("GET http://%s%s through %s: read body: %v", host, path, addr, err)
	}
	return fetched{
		status:      resp.StatusCode,
		contentType: resp.Header.Get("Content-Type"),
		location:    resp.Header.Get("Location"),
		body:        string(body),
	}
}

// waitIssued polls the order until it carries a certificate.
func waitIssued(ctx context.Context, t *testing.T, client *reseller.Client) *reseller.Order {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, issueTimeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		o, err := client.Detail(ctx, serviceID)
		if err != nil {
			t.Fatalf("detail: %v", err)
		}
		if o.CertPEM != "" {
			return o
		}
		select {
		case <-ctx.Done():
			var st []string
			for _, e := range o.DCV {
				st = append(st, e.Domain+"="+e.Status)
			}
			t.Fatalf("no certificate within %s: order %s, DCV %s", issueTimeout, o.Status, strings.Join(st, " "))
		case <-tick.C:
		}
	}
}

// verifyLeaf checks that the issued certificate is for key and chains to
// the sandbox root for every name, using only what the reply carried as
// intermediates.
func verifyLeaf(t *testing.T, sb *sandbox.Server, o *reseller.Order, key crypto.PublicKey, names []string) {
	t.Helper()
	certs := parseCerts(t, "cert_pem", o.CertPEM)
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range append(certs[1:], parseCerts(t, "ca_pem", o.CAPEM)...) {
		inter.AddCert(c)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(key) {
		t.Errorf("the certificate's key is not the CSR's")
	}
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:         sb.RootPool(),
			Intermediates: inter,
			DNSName:       n,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}); err != nil {
			t.Errorf("verify the certificate for %s: %v", n, err)
		}
	}
}

func parseCerts(t *testing.T, field, text string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(text)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			t.Fatalf("%s: unexpected PEM block %q", field, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", field, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no certificate", field)
	}
	return out
}

// exists reports whether path exists (a dangling symlink counts).
func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Lstat(path)
	if err == nil {
		return true
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return false
}

// checkMode fails unless path has exactly the permission bits want.
func checkMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s has mode %#o, want %#o", path, got, want)
	}
}

// TestHTTPDCVThroughNginx is the whole HTTP DCV cycle against a real web
// server: write into nginx's webroot (and a second webroot nginx does not
// serve), self-check through nginx, let the sandbox CA fetch through nginx
// and issue, verify the certificate, clean up, and see nginx answer 404.
func TestHTTPDCVThroughNginx(t *testing.T) {
	env := requireEnv(t, "DCVD_TEST_NGINX_ADDR", "DCVD_TEST_NGINX_WEBROOT")
	addr, webroot := env["DCVD_TEST_NGINX_ADDR"], env["DCVD_TEST_NGINX_WEBROOT"]
	other := t.TempDir() // a second backend's webroot, not served by this nginx
	ctx := testContext(t)
	names := []string{"shop.example.com", "www.example.com"}
	wellKnown := filepath.Join(webroot, ".well-known")
	hadWellKnown := exists(t, wellKnown)

	sb, client := startCA(t, addr)
	key, dcv, files := reissueHTTP(ctx, t, client, "e2e-http-nginx", names...)

	webroots := []httpchallenge.Webroot{{Dir: webroot}, {Dir: other}}
	var written []httpchallenge.Written
	t.Cleanup(func() {
		// After a failure half-way, leave nginx's webroot as it was.
		if err := httpchallenge.Remove(written); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	for _, f := range files {
		ws, err := httpchallenge.Write(webroots, f)
		if err != nil {
			t.Fatalf("write %s: %v", f.URL, err)
		}
		written = append(written, ws...)
		for _, root := range []string{webroot, other} {
			dir := filepath.Join(root, ".well-known", "pki-validation")
			p := filepath.Join(dir, f.FileName)
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("webroot %s did not receive %s: %v", root, f.FileName, err)
			}
			if string(got) != f.Content {
				t.Errorf("%s holds %q, want %q", p, got, f.Content)
			}
			checkMode(t, p, 0o644)
			checkMode(t, dir, 0o755)
			checkMode(t, filepath.Dir(dir), 0o755)
		}

		// nginx's unprivileged workers serve it, as text/plain, exactly.
		got := fetch(ctx, t, addr, f.Host, f.Path)
		if got.status != http.StatusOK || got.body != f.Content {
			t.Fatalf("nginx served %s: HTTP %d %q, want 200 %q", f.URL, got.status, got.body, f.Content)
		}
		if !strings.HasPrefix(got.contentType, "text/plain") {
			t.Errorf("nginx served %s as %q, want text/plain", f.URL, got.contentType)
		}
		if err := (httpchallenge.Checker{Connect: addr}).Check(ctx, f); err != nil {
			t.Fatalf("self-check through nginx: %v", err)
		}
	}

	// The CA fetches through nginx too, and issues.
	if err := client.UpdateDCV(ctx, serviceID, dcv); err != nil {
		t.Fatalf("update-dcv: %v", err)
	}
	o := waitIssued(ctx, t, client)
	verifyLeaf(t, sb, o, key, names)

	if err := httpchallenge.Remove(written); err != nil {
		t.Fatalf("remove: %v", err)
	}
	for _, f := range files {
		if got := fetch(ctx, t, addr, f.Host, f.Path); got.status != http.StatusNotFound {
			t.Errorf("after cleanup nginx answers %s with HTTP %d, want 404", f.URL, got.status)
		}
		if err := (httpchallenge.Checker{Connect: addr}).Check(ctx, f); err == nil {
			t.Errorf("after cleanup the self-check of %s still passes", f.URL)
		}
	}
	if exists(t, filepath.Join(other, ".well-known")) {
		t.Errorf("cleanup left %s/.well-known", other)
	}
	if !hadWellKnown && exists(t, wellKnown) {
		t.Errorf("cleanup left %s, which did not exist before", wellKnown)
	}
	// Removing again is harmless (a restart may repeat a cleanup).
	if err := httpchallenge.Remove(written); err != nil {
		t.Errorf("second remove: %v", err)
	}
}

// TestHTTPSelfCheckRefusesRedirect: a server that redirects the validation
// URL to https (the usual "force https" server) fails the self-check, and
// the error names where it redirects, because the CA follows no redirect.
// The sandbox CA, fetching through the same server, does not issue either.
func TestHTTPSelfCheckRefusesRedirect(t *testing.T) {
	env := requireEnv(t, "DCVD_TEST_NGINX_ADDR", "DCVD_TEST_NGINX_WEBROOT", "DCVD_TEST_NGINX_REDIRECT_ADDR")
	addr, webroot, redirect := env["DCVD_TEST_NGINX_ADDR"], env["DCVD_TEST_NGINX_WEBROOT"], env["DCVD_TEST_NGINX_REDIRECT_ADDR"]
	ctx := testContext(t)

	_, client := startCA(t, redirect)
	_, dcv, files := reissueHTTP(ctx, t, client, "e2e-http-redirect", "shop.example.com")
	written, err := httpchallenge.Write([]httpchallenge.Webroot{{Dir: webroot}}, files[0])
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	t.Cleanup(func() {
		if err := httpchallenge.Remove(written); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	f := files[0]

	// The file is in place: the serving server passes, so what fails below
	// fails because of the redirect alone.
	if err := (httpchallenge.Checker{Connect: addr}).Check(ctx, f); err != nil {
		t.Fatalf("self-check through the serving nginx: %v", err)
	}
	target := "https://" + f.Host + f.Path
	if got := fetch(ctx, t, redirect, f.Host, f.Path); got.status != http.StatusMovedPermanently || got.location != target {
		t.Fatalf("the redirecting nginx answered HTTP %d Location %q, want 301 to %s", got.status, got.location, target)
	}
	err = (httpchallenge.Checker{Connect: redirect}).Check(ctx, f)
	if err == nil {
		t.Fatalf("self-check through a redirect to %s passed", target)
	}
	t.Logf("self-check through the redirecting nginx: %v", err)
	for _, want := range []string{target, "301"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("self-check error %q does not name %q", err, want)
		}
	}

	if err := client.UpdateDCV(ctx, serviceID, dcv); err != nil {
		t.Fatalf("update-dcv: %v", err)
	}
	o, err := client.Detail(ctx, serviceID)
	if err != nil {
		t.Fatalf("detail: %v", err)
	}
	if o.CertPEM != "" {
		t.Errorf("the sandbox CA issued although the validation URL redirects")
	}
}

// TestNginxRefusesUnreadableFile proves that the webroot tests above mean
// something: nginx's workers do not read what only the writer can read, so
// a DCV file (and its directories) must be world-readable, whatever the
// umask (certbot#9920). The files are written by hand, not by dcvd.
func TestNginxRefusesUnreadableFile(t *testing.T) {
	env := requireEnv(t, "DCVD_TEST_NGINX_ADDR", "DCVD_TEST_NGINX_WEBROOT", "DCVD_TEST_NGINX_WORKER_UID")
	addr, webroot := env["DCVD_TEST_NGINX_ADDR"], env["DCVD_TEST_NGINX_WEBROOT"]
	workerUID, err := strconv.Atoi(env["DCVD_TEST_NGINX_WORKER_UID"])
	if err != nil {
		t.Fatalf("DCVD_TEST_NGINX_WORKER_UID: %v", err)
	}
	if workerUID == 0 || workerUID == os.Getuid() {
		skipOrFail(t, fmt.Sprintf("nginx's workers run as uid %d, which can read what this test (uid %d) writes 0600: "+
			"start scripts/nginx.sh as root so that they run as nobody", workerUID, os.Getuid()))
	}
	ctx := testContext(t)

	// Build .well-known/pki-validation by hand, removing what was created.
	wellKnown := filepath.Join(webroot, ".well-known")
	dir := filepath.Join(wellKnown, "pki-validation")
	for _, d := range []string{wellKnown, dir} {
		if exists(t, d) {
			continue
		}
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.Remove(d); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		if err := os.Chmod(d, 0o755); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	dirMode := fi.Mode().Perm()
	if dirMode&0o005 != 0o005 {
		t.Fatalf("%s has mode %#o: others cannot list it, this test needs 0755", dir, dirMode)
	}

	tests := []struct {
		name       string
		fileMode   fs.FileMode
		dirMode    fs.FileMode // of pki-validation during the fetch
		wantStatus int
	}{
		{"0644 file in 0755 directory is served", 0o644, 0o755, http.StatusOK},
		{"0600 file is forbidden", 0o600, 0o755, http.StatusForbidden},
		{"0640 file is forbidden", 0o640, 0o755, http.StatusForbidden},
		// try_files cannot even stat the file: nginx answers as if it
		// were missing.
		{"0644 file in 0700 directory is not found", 0o644, 0o700, http.StatusNotFound},
		{"0644 file in 0711 directory is served", 0o644, 0o711, http.StatusOK},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("e2e-mode-%d-%d.txt", os.Getpid(), i)
			p := filepath.Join(dir, name)
			content := "mode test " + name
			if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := os.Remove(p); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			if err := os.Chmod(p, tt.fileMode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.dirMode); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := os.Chmod(dir, dirMode); err != nil {
					t.Errorf("restore %s: %v", dir, err)
				}
			})

			got := fetch(ctx, t, addr, "shop.example.com", reseller.PKIValidationPath+name)
			if got.status != tt.wantStatus {
				t.Fatalf("file %#o in directory %#o: nginx answered HTTP %d, want %d", tt.fileMode, tt.dirMode, got.status, tt.wantStatus)
			}
			if tt.wantStatus == http.StatusOK && got.body != content {
				t.Errorf("nginx served %q, want %q", got.body, content)
			}
		})
	}
}

// TestHTTPDCVThroughNginxProxy is the README's setup for a host with no
// webroot: nginx proxies /.well-known/pki-validation/ to dcvd's responder
// with the Host header kept, and the self-check and the sandbox CA both
// succeed through it. A proxy that sent its upstream's address as Host
// would make the responder answer 404, so the pass proves the snippet.
func TestHTTPDCVThroughNginxProxy(t *testing.T) {
	env := requireEnv(t, "DCVD_TEST_NGINX_PROXY_ADDR", "DCVD_TEST_NGINX_UPSTREAM_ADDR")
	proxy, upstream := env["DCVD_TEST_NGINX_PROXY_ADDR"], env["DCVD_TEST_NGINX_UPSTREAM_ADDR"]
	ctx := testContext(t)
	names := []string{"shop.example.com", "www.example.com"}

	ln, err := net.Listen("tcp", upstream)
	if err != nil {
		t.Fatalf("listen on nginx's upstream %s (free when scripts/nginx.sh started): %v", upstream, err)
	}
	resp := httpchallenge.NewResponder()
	srv := &http.Server{Handler: resp, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close responder: %v", err)
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("responder: %v", err)
		}
	})

	sb, client := startCA(t, proxy)
	key, dcv, files := reissueHTTP(ctx, t, client, "e2e-http-proxy", names...)
	for _, f := range files {
		resp.Add(f)
		if err := (httpchallenge.Checker{Connect: proxy}).Check(ctx, f); err != nil {
			t.Fatalf("self-check through nginx's proxy: %v", err)
		}
	}
	if got := fetch(ctx, t, proxy, "other.example.com", files[0].Path); got.status != http.StatusNotFound {
		t.Errorf("the responder served %s for another host: HTTP %d", files[0].Path, got.status)
	}

	if err := client.UpdateDCV(ctx, serviceID, dcv); err != nil {
		t.Fatalf("update-dcv: %v", err)
	}
	verifyLeaf(t, sb, waitIssued(ctx, t, client), key, names)

	for _, f := range files {
		resp.Remove(f)
		if got := fetch(ctx, t, proxy, f.Host, f.Path); got.status != http.StatusNotFound {
			t.Errorf("after Remove nginx's proxy answers %s with HTTP %d, want 404", f.URL, got.status)
		}
	}
	if n := resp.Pending(); n != 0 {
		t.Errorf("%d files still pending after Remove", n)
	}
}
