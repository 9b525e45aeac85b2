// Package testpki makes keys, certificates and PEM text for tests, so that
// each test package does not carry its own copy of the same few lines.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// Key is a new P-256 key, or the test fails.
func Key(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Sign issues tmpl for pub, signed by signer as parent (tmpl itself for a
// self-signed certificate), or the test fails.
func Sign(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// PEM is certs as concatenated CERTIFICATE blocks.
func PEM(certs ...*x509.Certificate) string {
	var b strings.Builder
	for _, c := range certs {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return b.String()
}

// KeyPEM is key as a PKCS#8 PRIVATE KEY block, or the test fails.
func KeyPEM(t testing.TB, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// SelfSigned is a CA certificate of serial number 1 named name, signed by
// key itself and valid from notBefore to notAfter. Given names (DNS names
// and IP addresses), it is also a server certificate for them, so that a
// test server can present it and a client trust it as its own root.
func SelfSigned(t testing.TB, key crypto.Signer, name string, notBefore, notAfter time.Time, names ...string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	if len(names) > 0 {
		tmpl.KeyUsage |= x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		addNames(&tmpl.DNSNames, &tmpl.IPAddresses, names)
	}
	return Sign(t, tmpl, tmpl, key.Public(), key)
}

// addNames appends the IP addresses of names to ips and the rest to dns.
func addNames(dns *[]string, ips *[]net.IP, names []string) {
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			*ips = append(*ips, ip)
		} else {
			*dns = append(*dns, n)
		}
	}
}

// CA is a test CA: a root and an intermediate that signs leaves.
type CA struct {
	Root, Inter       *x509.Certificate
	RootKey, InterKey crypto.Signer
}

// NewCA makes a root and an intermediate named after name, valid around
// now.
func NewCA(t testing.TB, name string, now time.Time) *CA {
	t.Helper()
	ca := &CA{RootKey: Key(t), InterKey: Key(t)}
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " root"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	ca.Root = Sign(t, rootTmpl, rootTmpl, ca.RootKey.Public(), ca.RootKey)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " intermediate"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
	}
	ca.Inter = Sign(t, interTmpl, ca.Root, ca.InterKey.Public(), ca.RootKey)
	return ca
}

// Pool is a pool holding the CA's root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root)
	return p
}

// Leaf describes a leaf to issue.
type Leaf struct {
	Names               []string // DNS names and IP addresses
	NotBefore, NotAfter time.Time
	Usage               []x509.ExtKeyUsage // nil means server authentication
}

// Issue signs a leaf for pub with the intermediate.
func (ca *CA) Issue(t testing.TB, pub crypto.PublicKey, l Leaf) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    l.NotBefore, NotAfter: l.NotAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: l.Usage,
	}
	if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	addNames(&tmpl.DNSNames, &tmpl.IPAddresses, l.Names)
	return Sign(t, tmpl, ca.Inter, pub, ca.InterKey)
}

// CSR is a PEM certificate request signed by key for names: IP addresses
// as IP SANs, the rest as DNS names, and names[0] (if any) as the common
// name.
func CSR(t testing.TB, key crypto.Signer, names ...string) string {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if len(names) > 0 {
		tmpl.Subject = pkix.Name{CommonName: names[0]}
	}
	addNames(&tmpl.DNSNames, &tmpl.IPAddresses, names)
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// ParseCert parses the first certificate of a PEM text, or the test fails.
func ParseCert(t testing.TB, pemText string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(pemText))
	if b == nil {
		t.Fatalf("no PEM in %q", pemText)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
