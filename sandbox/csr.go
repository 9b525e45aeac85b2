package sandbox

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// parseCSR reads a certificate signing request the way the reseller's CA
// does: exactly one PEM block of type CERTIFICATE REQUEST (or the older NEW
// CERTIFICATE REQUEST), a valid self-signature, and an RSA 2048/4096-bit or
// ECDSA P-256/P-384 key. Text around the block is ignored, because openssl
// req -text puts a human-readable dump before it.
//
// Errors say what was received instead, so that a client that sends its
// private key learns it at once. They never quote the input: a mistaken
// paste may hold key material.
func parseCSR(pemText string) (*x509.CertificateRequest, error) {
	if strings.TrimSpace(pemText) == "" {
		return nil, errors.New("CSR: empty")
	}
	var blocks []*pem.Block
	rest := []byte(pemText)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	switch len(blocks) {
	case 0:
		return nil, fmt.Errorf("CSR: got %d bytes with no PEM block (no -----BEGIN CERTIFICATE REQUEST----- line), not a CSR", len(pemText))
	case 1:
	default:
		types := make([]string, len(blocks))
		for i, b := range blocks {
			types[i] = b.Type
		}
		return nil, fmt.Errorf("CSR: got %d PEM blocks (%s), want exactly one CERTIFICATE REQUEST", len(blocks), strings.Join(types, ", "))
	}
	block := blocks[0]
	switch t := block.Type; {
	case t == "CERTIFICATE REQUEST" || t == "NEW CERTIFICATE REQUEST":
	case strings.Contains(t, "PRIVATE KEY"):
		return nil, fmt.Errorf("CSR: got a PRIVATE KEY (PEM %q), not a CSR; never send a private key, send the certificate request made with it", t)
	case strings.Contains(t, "PUBLIC KEY"):
		return nil, fmt.Errorf("CSR: got a PUBLIC KEY (PEM %q), not a CSR; send the certificate request made with its private key", t)
	case strings.Contains(t, "CERTIFICATE") && !strings.Contains(t, "REQUEST"):
		return nil, fmt.Errorf("CSR: got a CERTIFICATE (PEM %q), not a CSR", t)
	default:
		return nil, fmt.Errorf("CSR: got a PEM block of type %q, want CERTIFICATE REQUEST", t)
	}

	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CSR: the CERTIFICATE REQUEST block does not parse: %w", err)
	}
	if err := csrCheckKey(csr); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR: signature does not verify (altered, or signed with another key): %w", err)
	}
	return csr, nil
}

// csrCheckKey enforces the reseller's documented key rule. RSA 3072 is
// refused although it is sound: the documentation allows 2048 and 4096 only.
func csrCheckKey(csr *x509.CertificateRequest) error {
	switch pub := csr.PublicKey.(type) {
	case *rsa.PublicKey:
		bits := pub.N.BitLen()
		if bits != 2048 && bits != 4096 {
			return fmt.Errorf("CSR: got an RSA key of %d bits; RSA keys must be 2048 or 4096 bits", bits)
		}
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() && pub.Curve != elliptic.P384() {
			return fmt.Errorf("CSR: got an ECDSA key on curve %s; ECDSA keys must be on P-256 or P-384", pub.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		return errors.New("CSR: got an Ed25519 key; keys must be RSA 2048/4096 or ECDSA P-256/P-384")
	case nil:
		return fmt.Errorf("CSR: got a key of unsupported algorithm %s; keys must be RSA 2048/4096 or ECDSA P-256/P-384", csr.PublicKeyAlgorithm)
	default:
		return fmt.Errorf("CSR: got a %T key; keys must be RSA 2048/4096 or ECDSA P-256/P-384", pub)
	}
	return nil
}

// dcvValues are what a domain's owner must publish to prove control, all
// derived from the CSR so that they change with it.
type dcvValues struct {
	RecordLabel string // "_" + MD5(csr) hex: the CNAME's label under the domain
	CNAMETarget string // where that CNAME must point
	FileName    string // MD5(csr) hex + ".txt", under /.well-known/pki-validation/
	FileContent string // what that file must hold
}

// computeDCVValues derives the DCV values from the CSR's DER the way Sectigo
// does: MD5 and SHA-256 of the DER in lower-case hex. uniqueValue separates
// orders with the same CSR; caDomain is the CA's domain (comodoca.com for
// Sectigo).
func computeDCVValues(csrDER []byte, uniqueValue, caDomain string) dcvValues {
	m := md5.Sum(csrDER)
	s := sha256.Sum256(csrDER)
	md := hex.EncodeToString(m[:])
	sha := hex.EncodeToString(s[:])
	return dcvValues{
		RecordLabel: "_" + md,
		CNAMETarget: sha[:32] + "." + sha[32:] + "." + uniqueValue + "." + caDomain,
		FileName:    md + ".txt",
		FileContent: sha + "\n" + caDomain + "\n" + uniqueValue,
	}
}
