package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/internal/fsutil"
)

func GenerateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case config.KeyECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case config.KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case config.KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case config.KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("unknown key type %q", keyType)
}

// EncodeKey returns key as PKCS#8 PEM.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// WriteKey stores key as PKCS#8 PEM in a new file of mode 0600 (its
// directory 0700), synced before it is renamed into place: the key must be
// on disk before the CSR made from it leaves the host.
func WriteKey(path string, key crypto.Signer) error {
	data, err := EncodeKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("key directory: %w", err)
	}
	if err := fsutil.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return nil
}

func LoadKey(path string) (crypto.Signer, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read key: %w", err)
	}
	k, err := ParseKey(data, path)
	if err != nil {
		return nil, nil, err
	}
	return k, data, nil
}

// ParseKey reads a PEM private key; what names it in errors.
func ParseKey(data []byte, what string) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("key %s holds no PEM block", what)
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("key %s: unexpected PEM block %q", what, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", what, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key %s: not a signing key", what)
	}
	return s, nil
}

// NewCSR builds the CSR for names: DNS names (wildcards included) and IP
// addresses as SANs, and a common name for CAs that still read it.
func NewCSR(key crypto.Signer, names []string) (string, error) {
	if len(names) == 0 {
		return "", errors.New("no names")
	}
	tmpl := &x509.CertificateRequest{}
	cn := ""
	for _, n := range names {
		if ip := net.ParseIP(strings.Trim(n, "[]")); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		tmpl.DNSNames = append(tmpl.DNSNames, n)
		if cn == "" && !strings.HasPrefix(n, "*.") {
			cn = n
		}
	}
	if cn == "" {
		cn = names[0]
	}
	if len(cn) <= 64 {
		tmpl.Subject = pkix.Name{CommonName: cn}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return "", fmt.Errorf("create CSR: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}
