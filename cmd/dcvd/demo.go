package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

// The demo drives one whole reissue against an in-process sandbox CA, with
// an in-process authoritative DNS server and web server standing in for the
// admin's DNS zone and web root. It is the README's first command: it needs
// no account, no network and no root.

const demoZone = "example.com"

// demoDomains is what the demo certificate covers, and how each is validated.
var demoDomains = map[string]reseller.Method{
	"example.com":      reseller.MethodDNS,
	"*.example.com":    reseller.MethodDNS,
	"shop.example.com": reseller.MethodHTTP,
}

func runDemo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("dcvd demo", flag.ContinueOnError)
	stateDir := fs.String("state-dir", "", "sandbox state directory (default: a temporary directory, removed afterwards)")
	outDir := fs.String("out", "", "where to write cert.pem, chain.pem, fullchain.pem, privkey.pem (default: <state-dir>/deploy)")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: dcvd demo [flags]\n\n"+
			"Runs one complete reissue against an in-process sandbox CA: key and CSR, signed\n"+
			"reissue, DCV published to a local DNS server and web root, visibility checked,\n"+
			"re-check requested, certificate verified and written, DCV cleaned up.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	if *stateDir == "" {
		dir, err := os.MkdirTemp("", "dcvd-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*stateDir = dir
	}
	if *outDir == "" {
		*outDir = filepath.Join(*stateDir, "deploy")
	}
	d := &demo{&stepper{out: stdout, start: time.Now()}}
	return d.run(ctx, *stateDir, *outDir)
}

// demo walks the steps, printing each.
type demo struct{ *stepper }

func (d *demo) run(ctx context.Context, stateDir, outDir string) error {
	// The admin's side: an authoritative DNS server for the zone and a web
	// server for the web root.
	dnsSrv, err := memdns.Start("127.0.0.1:0", demoZone)
	if err != nil {
		return err
	}
	defer dnsSrv.Close()
	webroot := filepath.Join(stateDir, "webroot")
	if err := os.MkdirAll(webroot, 0o755); err != nil {
		return err
	}
	web, err := serve(http.FileServer(http.Dir(webroot)))
	if err != nil {
		return err
	}
	defer web.Close()
	d.step("DNS server for %s on %s, web root %s served on %s", demoZone, dnsSrv.Addr(), webroot, web.Addr)

	// The CA's side.
	sb, err := sandbox.New(sandbox.Config{
		StateDir:         filepath.Join(stateDir, "sandbox"),
		DNSServer:        dnsSrv.Addr(),
		HTTPAddr:         web.Addr,
		NegativeCacheTTL: 5 * time.Minute,
		Validity:         90 * 24 * time.Hour,
		CheckInterval:    -1,
	})
	if err != nil {
		return fmt.Errorf("start sandbox: %w", err)
	}
	defer sb.Close()
	sb.Start(ctx)
	api, err := serve(sb.Handler())
	if err != nil {
		return err
	}
	defer api.Close()
	baseURL := "http://" + api.Addr + "/api/v1"
	keyID, secret := sb.AccessKey()
	d.step("sandbox CA at %s (access key %s)", baseURL, keyID)

	client, err := reseller.New(reseller.Config{BaseURL: baseURL, AccessKeyID: keyID, AccessKeySecret: secret})
	if err != nil {
		return err
	}

	// 1. Key and CSR, generated here; the key never leaves the host.
	names := sortedNames(demoDomains)
	key, csrPEM, err := newKeyAndCSR(names)
	if err != nil {
		return err
	}
	d.step("generated an ECDSA P-256 key and a CSR for %s", strings.Join(names, ", "))

	// 2. Submit the reissue. The unique_id is what makes a retry safe.
	if err := reseller.ValidateDomainDCV(demoDomains); err != nil {
		return err
	}
	req := reseller.ReissueRequest{
		UniqueID:  randomID(),
		ServiceID: "demo",
		DomainDCV: demoDomains,
		CSR:       csrPEM,
	}
	order, err := client.Reissue(ctx, req)
	if err != nil {
		return err
	}
	d.step("reissue submitted: unique_id %s, status %s, cost %.2f", req.UniqueID, order.Status, order.Cost)

	// A lost reply is retried with the same unique_id; the CA charges once.
	if _, err := client.Reissue(ctx, req); err != nil {
		return err
	}
	d.step("reissue re-sent with the same unique_id (as after a lost reply)")

	// 3. Validate what the CA asked for before publishing anything.
	plan, err := reseller.ValidateInstructions(demoDomains, order.DCV)
	if err != nil {
		return fmt.Errorf("DCV instructions refused: %w", err)
	}
	for _, w := range plan.Warnings {
		d.step("warning: %s", w)
	}
	var records []libdns.Record
	seen := map[string]bool{}
	var files []string
	for _, in := range plan.Instructions {
		switch {
		case in.CNAME != nil:
			if seen[in.CNAME.Name] { // example.com and *.example.com share one record
				continue
			}
			seen[in.CNAME.Name] = true
			records = append(records, libdns.CNAME{
				Name:   libdns.RelativeName(dns.Fqdn(in.CNAME.Name), dns.Fqdn(demoZone)),
				TTL:    time.Minute,
				Target: dns.Fqdn(in.CNAME.Target),
			})
		case in.File != nil:
			p := filepath.Join(webroot, ".well-known", "pki-validation", in.File.FileName)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(in.File.Content), 0o644); err != nil {
				return err
			}
			files = append(files, p)
		}
	}
	if _, err := dnsSrv.SetRecords(ctx, demoZone, records); err != nil {
		return fmt.Errorf("publish CNAMEs: %w", err)
	}
	d.step("published %d CNAME record(s) in one call and %d file(s)", len(records), len(files))
	defer func() {
		dnsSrv.DeleteRecords(context.Background(), demoZone, records)
		for _, f := range files {
			os.Remove(f)
		}
		d.step("cleaned up the DCV records and files")
	}()

	// 4. Prove the records and files are visible before asking the CA.
	for _, in := range plan.Instructions {
		switch {
		case in.CNAME != nil:
			if err := lookupCNAME(ctx, dnsSrv.Addr(), in.CNAME.Name, in.CNAME.Target); err != nil {
				return err
			}
		case in.File != nil:
			if err := fetchFile(ctx, web.Addr, in.File); err != nil {
				return err
			}
		}
	}
	d.step("every record answers on the authoritative server and every file is served")

	if err := client.UpdateDCV(ctx, req.ServiceID, demoDomains); err != nil {
		return err
	}
	d.step("re-check requested (update-dcv)")

	// 5. Poll until issued.
	for order.CertPEM == "" {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the certificate: %w (last status %q)", ctx.Err(), order.Status)
		case <-time.After(200 * time.Millisecond):
		}
		if order, err = client.Detail(ctx, req.ServiceID); err != nil {
			return err
		}
	}
	d.step("certificate issued (status %s)", order.Status)

	// 6. Verify before anything is written.
	leaf, err := verifyIssued(order, key, names, sb.RootPool())
	if err != nil {
		return fmt.Errorf("issued certificate refused: %w", err)
	}
	d.step("verified: matches our key, covers every name, chains to the sandbox root; serial %s, valid until %s",
		hex.EncodeToString(leaf.SerialNumber.Bytes()), leaf.NotAfter.Format(time.RFC3339))

	if err := writeDeployment(outDir, order, key); err != nil {
		return err
	}
	d.step("written to %s (cert.pem, chain.pem, fullchain.pem, privkey.pem)", outDir)

	charges := 0
	for _, c := range sb.Ledger() {
		if c.UniqueID == req.UniqueID {
			charges++
		}
	}
	d.step("ledger: %d charge(s) for unique_id %s after two submissions", charges, req.UniqueID)
	if charges != 1 {
		return fmt.Errorf("the sandbox charged %d times for one unique_id", charges)
	}
	return nil
}

func sortedNames(m map[string]reseller.Method) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func newKeyAndCSR(names []string) (*ecdsa.PrivateKey, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: names[0]},
		DNSNames: names,
	}, key)
	if err != nil {
		return nil, "", fmt.Errorf("create CSR: %w", err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

func randomID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

type server struct {
	Addr string
	srv  *http.Server
}

func serve(h http.Handler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &server{Addr: ln.Addr().String(), srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go s.srv.Serve(ln)
	return s, nil
}

func (s *server) Close() error { return s.srv.Close() }

func lookupCNAME(ctx context.Context, server, name, target string) error {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeCNAME)
	r, _, err := new(dns.Client).ExchangeContext(ctx, m, server)
	if err != nil {
		return fmt.Errorf("look up CNAME %s at %s: %w", name, server, err)
	}
	for _, a := range r.Answer {
		if c, ok := a.(*dns.CNAME); ok && strings.EqualFold(c.Target, dns.Fqdn(target)) {
			return nil
		}
	}
	return fmt.Errorf("CNAME %s at %s: answer %v does not point to %s", name, server, r.Answer, target)
}

func fetchFile(ctx context.Context, addr string, f *reseller.FileInstruction) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+f.Path, nil)
	if err != nil {
		return err
	}
	req.Host = f.Host
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", f.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("fetch %s: %w", f.URL, err)
	}
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != strings.TrimSpace(f.Content) {
		return fmt.Errorf("fetch %s: HTTP %d, content does not match", f.URL, resp.StatusCode)
	}
	return nil
}

// verifyIssued checks the certificate against what was asked for: our key,
// every name, a chain to the trusted root.
func verifyIssued(order *reseller.Order, key *ecdsa.PrivateKey, names []string, roots *x509.CertPool) (*x509.Certificate, error) {
	certs, err := parseCerts(order.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("cert_pem: %w", err)
	}
	chain, err := parseCerts(order.CAPEM)
	if err != nil {
		return nil, fmt.Errorf("ca_pem: %w", err)
	}
	leaf := certs[0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("the certificate is not for our key")
	}
	inter := x509.NewCertPool()
	for _, c := range append(certs[1:], chain...) {
		inter.AddCert(c)
	}
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inter}); err != nil {
			return nil, fmt.Errorf("name %s: %w", n, err)
		}
	}
	return leaf, nil
}

func parseCerts(pemText string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(pemText)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

func writeDeployment(dir string, order *reseller.Order, key *ecdsa.PrivateKey) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	cert := strings.TrimSpace(order.CertPEM) + "\n"
	chain := strings.TrimSpace(order.CAPEM) + "\n"
	files := []struct {
		name string
		data string
		mode os.FileMode
	}{
		{"privkey.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})), 0o600},
		{"cert.pem", cert, 0o644},
		{"chain.pem", chain, 0o644},
		{"fullchain.pem", cert + chain, 0o644},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
