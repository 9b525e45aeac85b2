package sandbox

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// csrFixture reads a CSR made by openssl (see testdata/), so that the parser
// is tested on what real tools produce and no slow RSA keys are generated.
func csrFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// csrMake returns a PEM CSR for key made by Go.
func csrMake(t *testing.T, key crypto.Signer, names ...string) string {
	t.Helper()
	tmpl := &x509.CertificateRequest{DNSNames: names}
	if len(names) > 0 {
		tmpl.Subject = pkix.Name{CommonName: names[0]}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func csrECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestCSRAcceptsAllowedKeys(t *testing.T) {
	for _, tc := range []struct {
		file string
		cn   string
	}{
		{"csr-rsa2048.pem", "rsa2048.example.com"},
		{"csr-rsa4096.pem", "rsa4096.example.com"},
		{"csr-p256.pem", "p256.example.com"},
		{"csr-p384.pem", "p384.example.com"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			csr, err := parseCSR(csrFixture(t, tc.file))
			if err != nil {
				t.Fatalf("parseCSR: %v", err)
			}
			if csr.Subject.CommonName != tc.cn {
				t.Errorf("CN = %q, want %q", csr.Subject.CommonName, tc.cn)
			}
		})
	}
}

func TestCSRAcceptsVariants(t *testing.T) {
	p256 := csrFixture(t, "csr-p256.pem")
	block, _ := pem.Decode([]byte(p256))
	if block == nil {
		t.Fatal("fixture is not PEM")
	}
	newHeader := string(pem.EncodeToMemory(&pem.Block{Type: "NEW CERTIFICATE REQUEST", Bytes: block.Bytes}))
	for name, text := range map[string]string{
		"NEW CERTIFICATE REQUEST": newHeader,
		"text around the block":   "Certificate Request:\n    Data: ...\n" + p256 + "\n\n",
		"CRLF line ends":          strings.ReplaceAll(p256, "\n", "\r\n"),
		"Go-made ECDSA":           csrMake(t, csrECKey(t), "go.example.com"),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseCSR(text); err != nil {
				t.Fatalf("parseCSR: %v", err)
			}
		})
	}
}

func TestCSRRefuses(t *testing.T) {
	ecKey := csrECKey(t)
	keyDER, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(ecKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	certTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}}
	certDER, err := x509.CreateCertificate(rand.Reader, certTmpl, certTmpl, ecKey.Public(), ecKey)
	if err != nil {
		t.Fatal(err)
	}
	good := csrFixture(t, "csr-p256.pem")
	goodBlock, _ := pem.Decode([]byte(good))
	tampered := append([]byte(nil), goodBlock.Bytes...)
	tampered[len(tampered)-1] ^= 0x01 // the last byte belongs to the signature
	pemOf := func(typ string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}

	for _, tc := range []struct {
		name  string
		text  string
		wants []string // all must appear in the error
	}{
		{"RSA-1024", csrFixture(t, "csr-rsa1024.pem"), []string{"RSA key of 1024 bits", "2048 or 4096"}},
		{"RSA-3072", csrFixture(t, "csr-rsa3072.pem"), []string{"RSA key of 3072 bits", "2048 or 4096"}},
		{"P-521", csrFixture(t, "csr-p521.pem"), []string{"curve P-521", "P-256 or P-384"}},
		{"Ed25519", csrFixture(t, "csr-ed25519.pem"), []string{"Ed25519"}},
		{"PKCS#8 private key", pemOf("PRIVATE KEY", keyDER), []string{"got a PRIVATE KEY", "not a CSR"}},
		{"EC private key", pemOf("EC PRIVATE KEY", ecDER), []string{"got a PRIVATE KEY", "EC PRIVATE KEY"}},
		{"public key", pemOf("PUBLIC KEY", pubDER), []string{"got a PUBLIC KEY", "not a CSR"}},
		{"certificate", pemOf("CERTIFICATE", certDER), []string{"got a CERTIFICATE", "not a CSR"}},
		{"other PEM type", pemOf("RSA CERTIFICATE REQUEST", goodBlock.Bytes), []string{`"RSA CERTIFICATE REQUEST"`, "want CERTIFICATE REQUEST"}},
		{"garbage", "this is not a CSR at all", []string{"no PEM block", "not a CSR"}},
		{"raw DER", string(goodBlock.Bytes), []string{"no PEM block"}},
		{"empty", "  \n", []string{"empty"}},
		{"two CSRs", good + good, []string{"2 PEM blocks", "CERTIFICATE REQUEST, CERTIFICATE REQUEST"}},
		{"CSR and key", good + pemOf("PRIVATE KEY", keyDER), []string{"2 PEM blocks", "PRIVATE KEY"}},
		{"bad signature", pemOf("CERTIFICATE REQUEST", tampered), []string{"signature does not verify"}},
		{"bad DER", pemOf("CERTIFICATE REQUEST", []byte{0x30, 0x03, 0x02, 0x01}), []string{"does not parse"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			csr, err := parseCSR(tc.text)
			if err == nil {
				t.Fatalf("parseCSR accepted it (CN %q)", csr.Subject.CommonName)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestCSRErrorsDoNotQuoteInput guards against echoing a pasted private key
// into logs.
func TestCSRErrorsDoNotQuoteInput(t *testing.T) {
	secret := "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"
	_, err := parseCSR(secret)
	if err == nil {
		t.Fatal("accepted")
	}
	if strings.Contains(err.Error(), secret[:16]) {
		t.Errorf("error quotes the input: %v", err)
	}
}

func TestDCVValuesFixedVector(t *testing.T) {
	der, err := os.ReadFile(filepath.Join("testdata", "dcv-vector.csr.der"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509.ParseCertificateRequest(der); err != nil {
		t.Fatalf("fixture is not a CSR: %v", err)
	}
	// Computed independently with:
	//   openssl dgst -md5 testdata/dcv-vector.csr.der    → b6520984c38ff740ebcff7ce2fa82ce0
	//   openssl dgst -sha256 testdata/dcv-vector.csr.der → 5f41498bbcb0bcffe8f31702662a72d372037a7d9305979b64a371f9e88173db
	want := dcvValues{
		RecordLabel: "_b6520984c38ff740ebcff7ce2fa82ce0",
		CNAMETarget: "5f41498bbcb0bcffe8f31702662a72d3.72037a7d9305979b64a371f9e88173db.20221122.comodoca.com",
		FileName:    "b6520984c38ff740ebcff7ce2fa82ce0.txt",
		FileContent: "5f41498bbcb0bcffe8f31702662a72d372037a7d9305979b64a371f9e88173db\ncomodoca.com\n20221122",
	}
	if got := computeDCVValues(der, "20221122", "comodoca.com"); got != want {
		t.Errorf("computeDCVValues =\n%+v\nwant\n%+v", got, want)
	}
}

func TestDCVValuesDependOnInputs(t *testing.T) {
	a := []byte(csrMake(t, csrECKey(t), "a.example.com"))
	b := []byte(csrMake(t, csrECKey(t), "a.example.com"))
	va := computeDCVValues(a, "u1", "ca.test")
	vb := computeDCVValues(b, "u1", "ca.test")
	if va.RecordLabel == vb.RecordLabel || va.CNAMETarget == vb.CNAMETarget ||
		va.FileName == vb.FileName || va.FileContent == vb.FileContent {
		t.Errorf("different CSRs share a value:\n%+v\n%+v", va, vb)
	}
	vu := computeDCVValues(a, "u2", "ca.test")
	if vu.RecordLabel != va.RecordLabel || vu.FileName != va.FileName {
		t.Errorf("unique value changed the CSR-only values: %+v vs %+v", vu, va)
	}
	if vu.CNAMETarget == va.CNAMETarget || vu.FileContent == va.FileContent {
		t.Errorf("unique value not part of target/content: %+v", vu)
	}
	// Shape: a DNS label of 33 chars, two 32-hex labels in the target.
	if len(va.RecordLabel) != 33 || !strings.HasPrefix(va.RecordLabel, "_") {
		t.Errorf("RecordLabel %q", va.RecordLabel)
	}
	parts := strings.Split(va.CNAMETarget, ".")
	if len(parts) != 5 || len(parts[0]) != 32 || len(parts[1]) != 32 || parts[2] != "u1" {
		t.Errorf("CNAMETarget %q", va.CNAMETarget)
	}
}
