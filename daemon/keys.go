package daemon

import (
	"context"
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
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/internal/fsutil"
)

// Key types a [[certificate]] may ask for; the CA accepts exactly these.
const (
	KeyECDSAP256 = "ecdsa-p256"
	KeyECDSAP384 = "ecdsa-p384"
	KeyRSA2048   = "rsa-2048"
	KeyRSA4096   = "rsa-4096"
)

func generateKey(keyType string) (crypto.Signer, error) {
	switch keyType {
	case KeyECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyRSA2048:
		return rsa.GenerateKey(rand.Reader, 2048)
	case KeyRSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	}
	return nil, fmt.Errorf("unknown key type %q", keyType)
}

// encodeKey returns key as PKCS#8 PEM.
func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeKey stores key as PKCS#8 PEM in a new file of mode 0600 (its
// directory 0700), synced before it is renamed into place: the key must be
// on disk before the CSR made from it leaves the host.
func writeKey(path string, key crypto.Signer) error {
	data, err := encodeKey(key)
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

func loadKey(path string) (crypto.Signer, []byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read key: %w", err)
	}
	k, err := parseKey(data, path)
	if err != nil {
		return nil, nil, err
	}
	return k, data, nil
}

// parseKey reads a PEM private key; what names it in errors.
func parseKey(data []byte, what string) (crypto.Signer, error) {
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

// makeCSR builds the CSR for names: DNS names (wildcards included) and IP
// addresses as SANs, and a common name for CAs that still read it.
func makeCSR(key crypto.Signer, names []string) (string, error) {
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

// orphanKeyAge is how old a key file must be before removeOrphanKeys
// takes it for abandoned: a key is recorded in its order within
// milliseconds of being written.
const orphanKeyAge = time.Minute

// removeOrphanKeys deletes the key files of orders that were never
// recorded: a crash between writing an order's key and recording the order
// leaves one (or its temporary file) that nothing will ever use. A key of a
// recorded order, or of a live certificate, stays.
func (d *Daemon) removeOrphanKeys(ctx context.Context) {
	root := filepath.Join(d.config().Daemon.StateDir, "keys")
	certDirs, err := os.ReadDir(root)
	if err != nil {
		return // no keys yet
	}
	live := map[string]bool{}
	if lives, err := d.store.Certificates(ctx); err == nil {
		for _, c := range lives {
			live[c.KeyFile] = true
		}
	} else {
		d.log.Warn("looking for abandoned keys", zap.Error(err))
		return
	}
	for _, cd := range certDirs {
		if !cd.IsDir() {
			continue
		}
		dir := filepath.Join(root, cd.Name())
		files, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range files {
			path := filepath.Join(dir, f.Name())
			info, err := f.Info()
			if err != nil || !info.Mode().IsRegular() || time.Since(info.ModTime()) < orphanKeyAge || live[path] {
				continue
			}
			// <unique_id>.key, or the temporary file of its write.
			uid, isKey := strings.CutSuffix(f.Name(), ".key")
			if !isKey {
				if !strings.HasPrefix(f.Name(), ".") || !strings.Contains(f.Name(), ".key.tmp") {
					continue
				}
				uid = strings.TrimPrefix(f.Name()[:strings.Index(f.Name(), ".key.tmp")], ".")
			}
			if _, err := d.store.Order(ctx, uid); !errors.Is(err, ErrNotFound) {
				continue // recorded (or the store cannot say): keep it
			}
			if err := os.Remove(path); err != nil {
				d.log.Warn("removing an abandoned key", zap.String("file", path), zap.Error(err))
				continue
			}
			d.log.Info("removed the key of an order that was never recorded", zap.String("file", path))
		}
	}
}
