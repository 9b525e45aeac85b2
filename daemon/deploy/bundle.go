package deploy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Bundle is what gets deployed.
type Bundle struct {
	Cert     string // the [[certificate]] name
	CertPEM  string // leaf
	ChainPEM string // issuer chain, possibly empty
	KeyPEM   string
	Names    []string
	Serial   string
	NotAfter time.Time
}

// contents returns the four files of b, after checking that the leaf is
// one certificate, the chain only certificates, and that the key is the
// leaf's: a deploy directory must never hold a certificate its key cannot
// serve, whatever the caller checked before.
func (b Bundle) contents() (map[string]string, error) {
	leaf := deployPEMText(b.CertPEM)
	chain := deployPEMText(b.ChainPEM)
	key := deployPEMText(b.KeyPEM)
	if n, err := deployCountCerts(leaf); err != nil {
		return nil, fmt.Errorf("leaf certificate: %w", err)
	} else if n != 1 {
		return nil, fmt.Errorf("leaf certificate: %d certificates, want exactly 1", n)
	}
	if _, err := deployCountCerts(chain); err != nil {
		return nil, fmt.Errorf("chain: %w", err)
	}
	block, rest := pem.Decode([]byte(key))
	if block == nil || !strings.HasSuffix(block.Type, "PRIVATE KEY") || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("private key: not a single PEM private key")
	}
	if _, err := tls.X509KeyPair([]byte(leaf+chain), []byte(key)); err != nil {
		return nil, fmt.Errorf("the private key does not go with the certificate: %w", err)
	}
	return map[string]string{
		CertFile:      leaf,
		ChainFile:     chain,
		FullchainFile: leaf + chain,
		KeyFile:       key,
	}, nil
}

// deployPEMText ends non-empty PEM text with a newline, so that the leaf
// and the chain concatenate into a valid fullchain.pem.
func deployPEMText(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

// deployCountCerts counts the CERTIFICATE blocks of s and refuses anything
// else in it.
func deployCountCerts(s string) (int, error) {
	n := 0
	rest := []byte(s)
	for len(bytes.TrimSpace(rest)) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return n, errors.New("not PEM")
		}
		if block.Type != "CERTIFICATE" {
			return n, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// deployedBundle describes the generation dir holds, for the environment
// of the reload after a rollback; what cannot be read stays empty.
func deployedBundle(cert, dir string) Bundle {
	certPEM, _, err := deployReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return Bundle{Cert: cert}
	}
	b := describe(certPEM)
	b.Cert = cert
	return b
}

// describe is certPEM with, when its first block is a certificate, its
// names, serial and expiry; nothing is verified.
func describe(certPEM string) Bundle {
	b := Bundle{CertPEM: certPEM}
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		return b
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return b
	}
	b.Serial = hex.EncodeToString(leaf.SerialNumber.Bytes())
	b.NotAfter = leaf.NotAfter
	b.Names = append(b.Names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		b.Names = append(b.Names, ip.String())
	}
	slices.Sort(b.Names)
	return b
}
