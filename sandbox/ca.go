package sandbox

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
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dcvd/dcvd/internal/fsutil"
)

// The sandbox CA is a root and an intermediate, like a commercial CA's: the
// root is what tests trust, the intermediate signs leaves and travels as
// ca_pem. Both are persisted so that a restarted sandbox keeps issuing under
// the root that clients already trust.
const (
	caSubdir        = "ca"
	caRootCertFile  = "root.pem"
	caRootKeyFile   = "root-key.pem"
	caInterCertFile = "intermediate.pem"
	caInterKeyFile  = "intermediate-key.pem"

	caRootName  = "dcvd sandbox root"
	caInterName = "dcvd sandbox intermediate"
	caOrg       = "dcvd sandbox"

	// caBackdate is how far before "now" the CA certificates start, so that a
	// client whose clock is a little behind still accepts them.
	caBackdate = time.Hour

	// caMaxCommonName is ub-common-name (RFC 5280): a longer first name is
	// left out of the subject rather than producing an invalid certificate;
	// the SANs carry it anyway.
	caMaxCommonName = 64
)

// authority is the sandbox CA. Its fields are set once by
// loadOrCreateAuthority and never written again, so issue may be called from
// any number of goroutines (crypto.Signer implementations of the standard
// library are safe for concurrent use).
type authority struct {
	root      *x509.Certificate
	inter     *x509.Certificate
	interKey  crypto.Signer
	rootText  string
	interText string
}

// loadOrCreateAuthority loads the CA from <dir>/ca/, or creates it there when
// none of its files exist. now is the creation time of a new CA and the time
// at which a loaded one must be valid.
//
// A partial or corrupt CA (a file missing, unreadable, not PEM, a key that
// does not match its certificate, an intermediate not signed by the root, an
// expired certificate) is an error naming the file: regenerating would
// silently replace the root that clients trust.
func loadOrCreateAuthority(dir string, now time.Time) (*authority, error) {
	caDir := filepath.Join(dir, caSubdir)
	files := []string{caRootCertFile, caRootKeyFile, caInterCertFile, caInterKeyFile}
	var present, missing []string
	for _, name := range files {
		_, err := os.Lstat(filepath.Join(caDir, name))
		switch {
		case err == nil:
			present = append(present, name)
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, name)
		default:
			return nil, fmt.Errorf("sandbox CA: %w", err)
		}
	}
	switch {
	case len(missing) == 0:
		return caLoad(caDir, now)
	case len(present) == 0:
		return caCreate(caDir, now)
	default:
		return nil, fmt.Errorf("sandbox CA in %s is incomplete: %s missing while %s exist; "+
			"restore the missing files, or remove the directory to start a new CA (clients must then trust the new root)",
			caDir, strings.Join(missing, ", "), strings.Join(present, ", "))
	}
}

func caCreate(caDir string, now time.Time) (*authority, error) {
	if err := os.MkdirAll(caDir, 0o755); err != nil {
		return nil, fmt.Errorf("create sandbox CA directory: %w", err)
	}
	start := now.Add(-caBackdate).Truncate(time.Second)

	rootKey, root, rootDER, err := caCertify("root", &x509.Certificate{
		Subject:               pkix.Name{CommonName: caRootName, Organization: []string{caOrg}},
		NotBefore:             start,
		NotAfter:              start.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}, nil, nil)
	if err != nil {
		return nil, err
	}
	interKey, inter, interDER, err := caCertify("intermediate", &x509.Certificate{
		Subject:               pkix.Name{CommonName: caInterName, Organization: []string{caOrg}},
		NotBefore:             start,
		NotAfter:              start.AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}, root, rootKey)
	if err != nil {
		return nil, err
	}

	rootKeyPEM, err := caKeyPEM(rootKey)
	if err != nil {
		return nil, err
	}
	interKeyPEM, err := caKeyPEM(interKey)
	if err != nil {
		return nil, err
	}
	a := &authority{
		root:      root,
		inter:     inter,
		interKey:  interKey,
		rootText:  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})),
		interText: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})),
	}
	// Keys first: a crash part-way leaves a state that the next start
	// reports as incomplete instead of one that looks like a usable CA.
	writes := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{caRootKeyFile, rootKeyPEM, 0o600},
		{caInterKeyFile, interKeyPEM, 0o600},
		{caRootCertFile, []byte(a.rootText), 0o644},
		{caInterCertFile, []byte(a.interText), 0o644},
	}
	for _, w := range writes {
		if err := fsutil.WriteFileAtomic(filepath.Join(caDir, w.name), w.data, w.perm); err != nil {
			return nil, fmt.Errorf("write sandbox CA: %w", err)
		}
	}
	return a, nil
}

func caLoad(caDir string, now time.Time) (*authority, error) {
	root, rootText, err := caReadCert(filepath.Join(caDir, caRootCertFile))
	if err != nil {
		return nil, err
	}
	rootKey, err := caReadKey(filepath.Join(caDir, caRootKeyFile))
	if err != nil {
		return nil, err
	}
	inter, interText, err := caReadCert(filepath.Join(caDir, caInterCertFile))
	if err != nil {
		return nil, err
	}
	interKey, err := caReadKey(filepath.Join(caDir, caInterKeyFile))
	if err != nil {
		return nil, err
	}

	if err := caKeyMatches(root, rootKey); err != nil {
		return nil, fmt.Errorf("sandbox CA %s and %s: %w",
			filepath.Join(caDir, caRootKeyFile), filepath.Join(caDir, caRootCertFile), err)
	}
	if err := caKeyMatches(inter, interKey); err != nil {
		return nil, fmt.Errorf("sandbox CA %s and %s: %w",
			filepath.Join(caDir, caInterKeyFile), filepath.Join(caDir, caInterCertFile), err)
	}
	if !root.IsCA || !root.BasicConstraintsValid {
		return nil, fmt.Errorf("sandbox CA %s: not a CA certificate", filepath.Join(caDir, caRootCertFile))
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("sandbox CA %s: not a self-signed root: %w", filepath.Join(caDir, caRootCertFile), err)
	}
	if !inter.IsCA || !inter.BasicConstraintsValid {
		return nil, fmt.Errorf("sandbox CA %s: not a CA certificate", filepath.Join(caDir, caInterCertFile))
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := inter.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, fmt.Errorf("sandbox CA %s does not chain to %s at %s: %w",
			filepath.Join(caDir, caInterCertFile), filepath.Join(caDir, caRootCertFile),
			now.UTC().Format(time.RFC3339), err)
	}
	return &authority{
		root:      root,
		inter:     inter,
		interKey:  interKey,
		rootText:  rootText,
		interText: interText,
	}, nil
}

// rootPEM returns the root certificate, PEM-encoded: what a client must trust.
func (a *authority) rootPEM() string { return a.rootText }

// chainPEM returns the intermediate certificate, PEM-encoded: what an order's
// ca_pem carries.
func (a *authority) chainPEM() string { return a.interText }

// rootPool returns a new pool holding only the root; the caller may add to it.
func (a *authority) rootPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(a.root)
	return p
}

// issue signs a TLS server certificate for csr.PublicKey with the
// intermediate. names become the SANs (IP literals as IP addresses, anything
// else, wildcards included, as DNS names) and names[0] the common name. The
// caller has validated the names and proven control of them; issue only
// refuses what would make a malformed certificate.
//
// The leaf cannot outlive the intermediate, so its NotAfter is cut to the
// intermediate's, as a real CA does; likewise NotBefore is raised to the
// intermediate's NotBefore. serial is the certificate's random 128-bit
// serial number in lower-case hex (32 digits).
func (a *authority) issue(csr *x509.CertificateRequest, names []string, notBefore time.Time, validity time.Duration) (certPEM string, serial string, err error) {
	if csr == nil || csr.PublicKey == nil {
		return "", "", errors.New("issue: no CSR public key")
	}
	if len(names) == 0 {
		return "", "", errors.New("issue: no names")
	}
	if validity <= 0 {
		return "", "", fmt.Errorf("issue: validity %s is not positive", validity)
	}
	var dnsNames []string
	var ips []net.IP
	for _, n := range names {
		if n == "" || strings.TrimSpace(n) != n {
			return "", "", fmt.Errorf("issue: name %q is empty or has spaces", n)
		}
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
			continue
		}
		dnsNames = append(dnsNames, n)
	}

	notBefore = notBefore.Truncate(time.Second)
	notAfter := notBefore.Add(validity)
	if notBefore.Before(a.inter.NotBefore) {
		notBefore = a.inter.NotBefore
	}
	if notAfter.After(a.inter.NotAfter) {
		notAfter = a.inter.NotAfter
	}
	if !notAfter.After(notBefore) {
		return "", "", fmt.Errorf("issue: the intermediate is valid until %s, too late for a certificate from %s",
			a.inter.NotAfter.UTC().Format(time.RFC3339), notBefore.UTC().Format(time.RFC3339))
	}

	sn, err := caRandomSerial()
	if err != nil {
		return "", "", err
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := csr.PublicKey.(*rsa.PublicKey); ok {
		// TLS 1.2 RSA key exchange encrypts to the certificate's key.
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		DNSNames:              dnsNames,
		IPAddresses:           ips,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if len(names[0]) <= caMaxCommonName {
		tmpl.Subject.CommonName = names[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.inter, csr.PublicKey, a.interKey)
	if err != nil {
		return "", "", fmt.Errorf("issue certificate for %s: %w", names[0], err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), fmt.Sprintf("%032x", sn), nil
}

// caCertify makes a key and a certificate of tmpl for it (given a fresh
// serial), signed by parentKey as parent or, when parent is nil,
// self-signed. what ("root", "intermediate") names it in errors.
func caCertify(what string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate sandbox %s key: %w", what, err)
	}
	if tmpl.SerialNumber, err = caRandomSerial(); err != nil {
		return nil, nil, nil, err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create sandbox %s certificate: %w", what, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse new sandbox %s certificate: %w", what, err)
	}
	return key, cert, der, nil
}

// caRandomSerial returns a random positive 128-bit serial number.
func caRandomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("random serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func caKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode sandbox CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// caReadPEM reads a file that must hold exactly one PEM block of type want
// and nothing else but whitespace, so that a truncated or concatenated file
// is caught rather than half-used.
func caReadPEM(path, want string) (*pem.Block, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox CA: %w", err)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, nil, fmt.Errorf("sandbox CA %s: no PEM block (%d bytes; truncated or corrupt)", path, len(data))
	}
	if block.Type != want {
		return nil, nil, fmt.Errorf("sandbox CA %s: PEM block is %q, want %q", path, block.Type, want)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, nil, fmt.Errorf("sandbox CA %s: unexpected data after the %s block", path, want)
	}
	return block, data, nil
}

func caReadCert(path string) (*x509.Certificate, string, error) {
	block, data, err := caReadPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, "", err
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("sandbox CA %s: %w", path, err)
	}
	return cert, string(data), nil
}

func caReadKey(path string) (crypto.Signer, error) {
	block, _, err := caReadPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sandbox CA %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("sandbox CA %s: a %T cannot sign", path, key)
	}
	return signer, nil
}

func caKeyMatches(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return errors.New("the private key does not match the certificate")
	}
	return nil
}
