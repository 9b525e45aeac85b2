// Command lineages lays out N certificates that are not due for renewal,
// offline, twice: as certbot lineages and as a dcvd configuration whose
// deploy directories hold the same certificates (which dcvd adopts on its
// first check). bench/certbot.sh and bench/idle.sh use it.
//
//	go run ./bench/sweep/lineages -dir /tmp/w -n 1000
//
// Each certificate is an ECDSA P-256 leaf for one name, cert-NNNNN.example.com,
// with a key of its own, issued 10 days ago for 90 days by a throwaway CA
// (ca.pem, self-signed): 80 days left, so that certbot (renew_before_expiry
// of 30 days) and dcvd (a third of the lifetime, 30 days) both find it due in
// about 50 days. The certificates carry no OCSP URL, so certbot checks no
// revocation over the network (with a real CA's certificates it would, once
// per lineage: more time for certbot, not measured here).
//
// Under -dir it writes:
//
//	ca.pem
//	certbot/config/archive/NAME/{cert,chain,fullchain,privkey}1.pem
//	certbot/config/live/NAME/{cert,chain,fullchain,privkey}.pem  symlinks into archive, as certbot makes them
//	certbot/config/renewal/NAME.conf                             as certbot 2.1 writes it (webroot authenticator)
//	certbot/{work,logs}/, www/
//	dcvd/deploy/NAME/{cert,chain,fullchain,privkey}.pem           the same files, as dcvd deploys them
//	dcvd/dcvd.toml, dcvd/api-secret, dcvd/state/
//
// The dcvd configuration points at an API on 127.0.0.1 port 9 (discard):
// with nothing due, no call is made, and one would fail at once.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "lineages:", err)
		os.Exit(1)
	}
}

// layout is what run writes, and where.
type layout struct {
	dir            string
	n              int
	metricsListen  string
	certbotVersion string
	now            time.Time
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lineages", flag.ContinueOnError)
	fs.SetOutput(stderr)
	l := layout{now: time.Now()}
	fs.StringVar(&l.dir, "dir", "", "the directory to write into (created; must be empty or absent)")
	fs.IntVar(&l.n, "n", 1000, "how many certificates")
	fs.StringVar(&l.metricsListen, "metrics-listen", "", "daemon.metrics_listen of the dcvd configuration (default: none)")
	fs.StringVar(&l.certbotVersion, "certbot-version", "2.1.0", "the version written into the renewal configurations")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case l.dir == "":
		return errors.New("-dir is required")
	case !filepath.IsAbs(l.dir):
		return fmt.Errorf("-dir %q: want an absolute path (the configurations name files by absolute path)", l.dir)
	case l.n < 1 || l.n > 99999:
		return fmt.Errorf("-n %d: want 1 to 99999", l.n)
	}
	if entries, err := os.ReadDir(l.dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s is not empty", l.dir)
	}
	start := time.Now()
	if err := l.write(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d certificates under %s in %s\n", l.n, l.dir, time.Since(start).Round(time.Millisecond))
	return nil
}

func (l layout) path(parts ...string) string {
	return filepath.Join(append([]string{l.dir}, parts...)...)
}

func (l layout) write() error {
	for _, d := range []string{"certbot/config/archive", "certbot/config/live", "certbot/config/renewal",
		"certbot/work", "certbot/logs", "www", "dcvd/deploy", "dcvd/state"} {
		if err := os.MkdirAll(l.path(d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(l.path("dcvd/state"), 0o700); err != nil {
		return err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dcvd bench CA"},
		NotBefore: l.now.Add(-365 * 24 * time.Hour), NotAfter: l.now.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create the CA: %w", err)
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := os.WriteFile(l.path("ca.pem"), caPEM, 0o644); err != nil {
		return err
	}
	secret := make([]byte, 16)
	rand.Read(secret)
	if err := os.WriteFile(l.path("dcvd/api-secret"), fmt.Appendf(nil, "%x\n", secret), 0o600); err != nil {
		return err
	}

	var cfg bytes.Buffer
	fmt.Fprintf(&cfg, `# Written by bench/sweep/lineages: %d certificates, none due.
[api]
base_url = "http://127.0.0.1:9/api/v1"
access_key_id = "bench"
access_key_secret_file = %s

[daemon]
state_dir = %s
log_level = "info"
`, l.n, strconv.Quote(l.path("dcvd/api-secret")), strconv.Quote(l.path("dcvd/state")))
	if l.metricsListen != "" {
		fmt.Fprintf(&cfg, "metrics_listen = %s\n", strconv.Quote(l.metricsListen))
	}
	for i := 1; i <= l.n; i++ {
		name := fmt.Sprintf("cert-%05d.example.com", i)
		if err := l.lineage(name, int64(i+1), ca, caKey, caPEM); err != nil {
			return fmt.Errorf("certificate %s: %w", name, err)
		}
		fmt.Fprintf(&cfg, `
[[certificate]]
name = %[1]q
service_id = "svc%05[2]d"
webroot = %[3]q
[certificate.domains]
%[1]q = "http"
[certificate.deploy]
dir = %[4]q
`, name, i, l.path("www"), l.path("dcvd/deploy", name))
	}
	return os.WriteFile(l.path("dcvd/dcvd.toml"), cfg.Bytes(), 0o600)
}

// lineage writes the certificate name, both ways.
func (l layout) lineage(name string, serial int64, ca *x509.Certificate, caKey *ecdsa.PrivateKey, caPEM []byte) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: l.now.Add(-10 * 24 * time.Hour), NotAfter: l.now.Add(80 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	files := map[string][]byte{
		"cert":      certPEM,
		"chain":     caPEM,
		"fullchain": append(append([]byte{}, certPEM...), caPEM...),
		"privkey":   keyPEM,
	}
	archive, live := l.path("certbot/config/archive", name), l.path("certbot/config/live", name)
	deploy := l.path("dcvd/deploy", name)
	for _, d := range []string{archive, live, deploy} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for kind, data := range files {
		mode := os.FileMode(0o644)
		if kind == "privkey" {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(archive, kind+"1.pem"), data, mode); err != nil {
			return err
		}
		// certbot's own links are relative: ../../archive/NAME/cert1.pem.
		if err := os.Symlink(filepath.Join("..", "..", "archive", name, kind+"1.pem"), filepath.Join(live, kind+".pem")); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(deploy, kind+".pem"), data, mode); err != nil {
			return err
		}
	}
	conf := fmt.Sprintf(`# renew_before_expiry = 30 days
version = %[1]s
archive_dir = %[2]s
cert = %[3]s/cert.pem
privkey = %[3]s/privkey.pem
chain = %[3]s/chain.pem
fullchain = %[3]s/fullchain.pem

# Options used in the renewal process
[renewalparams]
account = 0123456789abcdef0123456789abcdef
authenticator = webroot
webroot_path = %[4]s,
server = https://acme-v02.api.letsencrypt.org/directory
key_type = ecdsa
[[webroot_map]]
%[5]s = %[4]s
`, l.certbotVersion, archive, live, l.path("www"), name)
	return os.WriteFile(l.path("certbot/config/renewal", name+".conf"), []byte(conf), 0o644)
}
