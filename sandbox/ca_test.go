package sandbox

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var caTestNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func caNew(t *testing.T, dir string) *authority {
	t.Helper()
	a, err := loadOrCreateAuthority(dir, caTestNow)
	if err != nil {
		t.Fatalf("loadOrCreateAuthority: %v", err)
	}
	return a
}

func caParsePEM(t *testing.T, text string) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode([]byte(text))
	if block == nil || block.Type != "CERTIFICATE" || strings.TrimSpace(string(rest)) != "" {
		t.Fatalf("not exactly one CERTIFICATE PEM block: %q", text)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCACreateAndReload(t *testing.T) {
	dir := t.TempDir()
	a := caNew(t, dir)

	caDir := filepath.Join(dir, "ca")
	for name, perm := range map[string]os.FileMode{
		"root.pem": 0o644, "intermediate.pem": 0o644,
		"root-key.pem": 0o600, "intermediate-key.pem": 0o600,
	} {
		info, err := os.Stat(filepath.Join(caDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != perm {
			t.Errorf("%s mode %v, want %v", name, info.Mode().Perm(), perm)
		}
	}
	entries, err := os.ReadDir(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("ca dir holds %v, want only the four files (no temporary files left)", names)
	}

	root := caParsePEM(t, a.rootPEM())
	inter := caParsePEM(t, a.chainPEM())
	if root.Subject.CommonName != "dcvd sandbox root" || inter.Subject.CommonName != "dcvd sandbox intermediate" {
		t.Errorf("names %q / %q", root.Subject.CommonName, inter.Subject.CommonName)
	}
	if !root.IsCA || root.MaxPathLen != 1 || !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("basic constraints: root CA=%v len=%d, intermediate CA=%v len=%d zero=%v",
			root.IsCA, root.MaxPathLen, inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero)
	}
	if got := root.NotAfter.Sub(root.NotBefore); got < 10*365*24*time.Hour || got > 10*366*24*time.Hour {
		t.Errorf("root validity %s, want 10 years", got)
	}
	if got := inter.NotAfter.Sub(inter.NotBefore); got < 5*365*24*time.Hour || got > 5*366*24*time.Hour {
		t.Errorf("intermediate validity %s, want 5 years", got)
	}
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate not signed by root: %v", err)
	}

	b, err := loadOrCreateAuthority(dir, caTestNow.Add(24*time.Hour))
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if b.rootPEM() != a.rootPEM() || b.chainPEM() != a.chainPEM() {
		t.Error("reloading gave another root or intermediate")
	}
	// A certificate issued before the restart still verifies after it.
	csr := caFixtureParsedCSR(t)
	leafPEM, _, err := a.issue(csr, []string{"example.com"}, caTestNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caVerify(t, b, leafPEM, "example.com", caTestNow.Add(time.Minute))
}

func caFixtureCSR(t *testing.T) string {
	t.Helper()
	return csrFixture(t, "csr-p256.pem")
}

// caFixtureParsedCSR is caFixtureCSR parsed.
func caFixtureParsedCSR(t *testing.T) *x509.CertificateRequest {
	t.Helper()
	csr, err := parseCSR(caFixtureCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func caVerify(t *testing.T, a *authority, leafPEM, name string, at time.Time) *x509.Certificate {
	t.Helper()
	leaf := caParsePEM(t, leafPEM)
	inters := x509.NewCertPool()
	if !inters.AppendCertsFromPEM([]byte(a.chainPEM())) {
		t.Fatal("chainPEM holds no certificate")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       name,
		Roots:         a.rootPool(),
		Intermediates: inters,
		CurrentTime:   at,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		t.Fatalf("leaf does not verify for %s: %v", name, err)
	}
	return leaf
}

func TestCAIssue(t *testing.T) {
	a := caNew(t, t.TempDir())
	names := []string{"www.example.com", "*.example.com", "example.com", "192.0.2.10", "2001:db8::1"}
	for _, tc := range []struct {
		name string
		csr  string
	}{
		{"ECDSA P-256", csrFixture(t, "csr-p256.pem")},
		{"ECDSA P-384", csrFixture(t, "csr-p384.pem")},
		{"RSA 2048", csrFixture(t, "csr-rsa2048.pem")},
		{"RSA 4096", csrFixture(t, "csr-rsa4096.pem")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := parseCSR(tc.csr)
			if err != nil {
				t.Fatal(err)
			}
			notBefore := caTestNow.Add(10 * time.Minute)
			validity := 90 * time.Minute
			certPEM, serial, err := a.issue(csr, names, notBefore, validity)
			if err != nil {
				t.Fatalf("issue: %v", err)
			}
			leaf := caVerify(t, a, certPEM, "foo.example.com", notBefore.Add(time.Minute))
			for _, n := range []string{"www.example.com", "example.com", "192.0.2.10", "2001:db8::1"} {
				if err := leaf.VerifyHostname(n); err != nil {
					t.Errorf("VerifyHostname(%s): %v", n, err)
				}
			}
			if err := leaf.VerifyHostname("a.b.example.com"); err == nil {
				t.Error("wildcard matched two labels")
			}
			if !slices.Equal(leaf.DNSNames, []string{"www.example.com", "*.example.com", "example.com"}) {
				t.Errorf("DNSNames %v", leaf.DNSNames)
			}
			if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("192.0.2.10")) ||
				!leaf.IPAddresses[1].Equal(net.ParseIP("2001:db8::1")) {
				t.Errorf("IPAddresses %v", leaf.IPAddresses)
			}
			if leaf.Subject.CommonName != "www.example.com" {
				t.Errorf("CN %q", leaf.Subject.CommonName)
			}
			pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
			if !ok || !pub.Equal(csr.PublicKey) {
				t.Error("leaf key is not the CSR's key")
			}
			if !leaf.NotBefore.Equal(notBefore) || !leaf.NotAfter.Equal(notBefore.Add(validity)) {
				t.Errorf("validity %s – %s, want %s – %s", leaf.NotBefore, leaf.NotAfter, notBefore, notBefore.Add(validity))
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("ExtKeyUsage %v", leaf.ExtKeyUsage)
			}
			if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.IsCA {
				t.Errorf("KeyUsage %v IsCA %v", leaf.KeyUsage, leaf.IsCA)
			}
			if len(serial) != 32 || strings.ToLower(serial) != serial || leaf.SerialNumber.Text(16) != strings.TrimLeft(serial, "0") {
				t.Errorf("serial %q, certificate has %x", serial, leaf.SerialNumber)
			}
			// Outside its validity the leaf must not verify.
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: a.rootPool(), Intermediates: caPool(t, a.chainPEM()),
				CurrentTime: notBefore.Add(validity + time.Minute)}); err == nil {
				t.Error("leaf verifies after its NotAfter")
			}
		})
	}
}

func caPool(t *testing.T, pemText string) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM([]byte(pemText)) {
		t.Fatal("no certificate in PEM")
	}
	return p
}

func TestCAIssueClampsToIntermediate(t *testing.T) {
	a := caNew(t, t.TempDir())
	inter := caParsePEM(t, a.chainPEM())
	csr := caFixtureParsedCSR(t)
	certPEM, _, err := a.issue(csr, []string{"example.com"}, caTestNow, 20*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if leaf := caParsePEM(t, certPEM); !leaf.NotAfter.Equal(inter.NotAfter) {
		t.Errorf("leaf NotAfter %s, want the intermediate's %s", leaf.NotAfter, inter.NotAfter)
	}
	if _, _, err := a.issue(csr, []string{"example.com"}, inter.NotAfter.Add(time.Hour), time.Hour); err == nil {
		t.Error("issued a certificate starting after the intermediate expired")
	}
}

func TestCAIssueRefuses(t *testing.T) {
	a := caNew(t, t.TempDir())
	csr := caFixtureParsedCSR(t)
	for _, tc := range []struct {
		name     string
		csr      *x509.CertificateRequest
		names    []string
		validity time.Duration
	}{
		{"nil CSR", nil, []string{"example.com"}, time.Hour},
		{"no names", csr, nil, time.Hour},
		{"empty name", csr, []string{"example.com", ""}, time.Hour},
		{"zero validity", csr, []string{"example.com"}, 0},
		{"negative validity", csr, []string{"example.com"}, -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := a.issue(tc.csr, tc.names, caTestNow, tc.validity); err == nil {
				t.Error("issued")
			}
		})
	}
}

func TestCAIssueLongFirstNameHasNoCN(t *testing.T) {
	a := caNew(t, t.TempDir())
	csr := caFixtureParsedCSR(t)
	long := strings.Repeat("a", 60) + ".example.com"
	certPEM, _, err := a.issue(csr, []string{long}, caTestNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := caVerify(t, a, certPEM, long, caTestNow.Add(time.Minute))
	if leaf.Subject.CommonName != "" {
		t.Errorf("CN %q longer than 64", leaf.Subject.CommonName)
	}
}

func TestCAIssueConcurrent(t *testing.T) {
	a := caNew(t, t.TempDir())
	csr := caFixtureParsedCSR(t)
	const n = 16
	serials := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, serials[i], errs[i] = a.issue(csr, []string{"example.com"}, caTestNow, time.Hour)
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[serials[i]] {
			t.Errorf("serial %s issued twice", serials[i])
		}
		seen[serials[i]] = true
	}
}

func TestCALoadRefusesBrokenState(t *testing.T) {
	// A CA made once and copied into each case, so that each case breaks its
	// own copy.
	src := t.TempDir()
	caNew(t, src)
	other := t.TempDir()
	caNew(t, other)
	read := func(dir, name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, "ca", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	for _, tc := range []struct {
		name   string
		now    time.Time
		damage func(t *testing.T, caDir string)
		wants  []string
	}{
		{"corrupt intermediate key", caTestNow, func(t *testing.T, caDir string) {
			caWrite(t, filepath.Join(caDir, "intermediate-key.pem"), []byte("garbage\n"), 0o600)
		}, []string{"intermediate-key.pem", "no PEM block"}},
		{"truncated root certificate", caTestNow, func(t *testing.T, caDir string) {
			b := read(src, "root.pem")
			caWrite(t, filepath.Join(caDir, "root.pem"), b[:len(b)/2], 0o644)
		}, []string{"root.pem"}},
		{"key PEM holding garbage DER", caTestNow, func(t *testing.T, caDir string) {
			caWrite(t, filepath.Join(caDir, "root-key.pem"),
				pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("nope")}), 0o600)
		}, []string{"root-key.pem"}},
		{"missing intermediate", caTestNow, func(t *testing.T, caDir string) {
			if err := os.Remove(filepath.Join(caDir, "intermediate.pem")); err != nil {
				t.Fatal(err)
			}
		}, []string{"intermediate.pem missing", "incomplete"}},
		{"keys swapped", caTestNow, func(t *testing.T, caDir string) {
			caWrite(t, filepath.Join(caDir, "root-key.pem"), read(src, "intermediate-key.pem"), 0o600)
		}, []string{"root-key.pem", "does not match"}},
		{"intermediate of another CA", caTestNow, func(t *testing.T, caDir string) {
			caWrite(t, filepath.Join(caDir, "intermediate.pem"), read(other, "intermediate.pem"), 0o644)
			caWrite(t, filepath.Join(caDir, "intermediate-key.pem"), read(other, "intermediate-key.pem"), 0o600)
		}, []string{"intermediate.pem does not chain to", "root.pem"}},
		{"two blocks in a certificate file", caTestNow, func(t *testing.T, caDir string) {
			b := read(src, "root.pem")
			caWrite(t, filepath.Join(caDir, "root.pem"), append(b, b...), 0o644)
		}, []string{"root.pem", "unexpected data"}},
		{"expired intermediate", caTestNow.AddDate(6, 0, 0), func(*testing.T, string) {},
			[]string{"intermediate.pem", "expired"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			caDir := filepath.Join(dir, "ca")
			if err := os.Mkdir(caDir, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"root.pem", "intermediate.pem"} {
				caWrite(t, filepath.Join(caDir, name), read(src, name), 0o644)
			}
			for _, name := range []string{"root-key.pem", "intermediate-key.pem"} {
				caWrite(t, filepath.Join(caDir, name), read(src, name), 0o600)
			}
			tc.damage(t, caDir)
			before := caSnapshot(t, caDir)

			a, err := loadOrCreateAuthority(dir, tc.now)
			if err == nil {
				t.Fatalf("loaded a broken CA (root %d bytes)", len(a.rootPEM()))
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if after := caSnapshot(t, caDir); !maps.Equal(before, after) {
				t.Error("a failed load changed the CA files")
			}
		})
	}
}

func caWrite(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
}

func caSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func TestCACreateFailsOnUnwritableDir(t *testing.T) {
	dir := t.TempDir()
	// A regular file where the ca directory should be.
	caWrite(t, filepath.Join(dir, "ca"), []byte("x"), 0o644)
	if _, err := loadOrCreateAuthority(dir, caTestNow); err == nil {
		t.Error("created a CA under a regular file")
	}
}
