package certs

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"
)

// ClockSkew is how far in the future a certificate's NotBefore may be:
// CAs backdate, but clocks drift.
const ClockSkew = time.Hour

// issued is a certificate that passed Verify.
type Issued struct {
	Leaf     *x509.Certificate
	LeafPEM  string // the leaf as issued, normalised
	ChainPEM string // the chain, deduplicated
}

// Verify checks a certificate from the API before anything is
// written: it is for our key, covers every configured name, its chain
// parses and signs it (and reaches roots when configured), and its dates
// are sane. The API is not trusted; a wrong certificate is never deployed.
func Verify(certPEM, chainPEM string, key crypto.Signer, names []string, roots *x509.CertPool, now time.Time) (*Issued, error) {
	certs, err := ParsePEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("cert_pem: %w", err)
	}
	chain := certs[1:] // some replies append the chain to the leaf
	if strings.TrimSpace(chainPEM) != "" {
		more, err := ParsePEM(chainPEM)
		if err != nil {
			return nil, fmt.Errorf("ca_pem: %w", err)
		}
		chain = append(chain, more...)
	}
	chain = Dedupe(chain)
	leaf := certs[0]

	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("the certificate is not for this order's key")
	}
	if missing := Uncovered(leaf, names); len(missing) > 0 {
		return nil, fmt.Errorf("the certificate does not cover %s", strings.Join(missing, ", "))
	}
	switch {
	case !leaf.NotAfter.After(leaf.NotBefore):
		return nil, fmt.Errorf("the certificate's validity is empty (%s to %s)", leaf.NotBefore, leaf.NotAfter)
	case leaf.NotBefore.After(now.Add(ClockSkew)):
		return nil, fmt.Errorf("the certificate is not valid before %s", leaf.NotBefore.Format(time.RFC3339))
	case !leaf.NotAfter.After(now):
		return nil, fmt.Errorf("the certificate expired at %s", leaf.NotAfter.Format(time.RFC3339))
	}
	if roots != nil {
		inter := x509.NewCertPool()
		for _, c := range chain {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return nil, fmt.Errorf("the certificate does not chain to the configured roots: %w", err)
		}
	} else if len(chain) > 0 {
		if err := leaf.CheckSignatureFrom(chain[0]); err != nil {
			return nil, fmt.Errorf("the first certificate of the chain did not sign the certificate: %w", err)
		}
	}
	return &Issued{Leaf: leaf, LeafPEM: EncodePEM(certs[:1]), ChainPEM: EncodePEM(chain)}, nil
}

// Uncovered returns the names the certificate's SANs do not list. A
// wildcard name must be listed as such: *.example.com is not covered by
// www.example.com, and example.com is not covered by *.example.com.
func Uncovered(leaf *x509.Certificate, names []string) []string {
	dns := map[string]bool{}
	for _, n := range leaf.DNSNames {
		dns[strings.ToLower(strings.TrimSuffix(n, "."))] = true
	}
	var missing []string
	for _, n := range names {
		if ip := net.ParseIP(strings.Trim(n, "[]")); ip != nil {
			found := false
			for _, a := range leaf.IPAddresses {
				if a.Equal(ip) {
					found = true
				}
			}
			if !found {
				missing = append(missing, n)
			}
			continue
		}
		if !dns[strings.ToLower(n)] {
			missing = append(missing, n)
		}
	}
	return missing
}

// LeafNames lists a certificate's names as configured names look.
func LeafNames(c *x509.Certificate) []string {
	var out []string
	for _, n := range c.DNSNames {
		out = append(out, strings.ToLower(n))
	}
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	sort.Strings(out)
	return out
}

func ParsePEM(text string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(text)
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

func EncodePEM(certs []*x509.Certificate) string {
	var b strings.Builder
	for _, c := range certs {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return b.String()
}

func Dedupe(certs []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range certs {
		dup := false
		for _, o := range out {
			if o.Equal(c) {
				dup = true
			}
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}

func SerialHex(c *x509.Certificate) string {
	return hex.EncodeToString(c.SerialNumber.Bytes())
}
