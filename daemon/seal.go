package daemon

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// sealedPrefix starts every sealed key: the version says how the rest was
// made, so that a later format can be told apart from this one.
const sealedPrefix = "v1:"

// keySealer encrypts private keys before they go into a shared database
// (cluster mode): whoever reads the database without [store] encryption_key
// gets neither the keys nor a way to move one key to another certificate.
//
// AES-256-GCM with a random 96-bit nonce per key: a cluster seals a few keys
// a year per certificate, far from the 2^32 messages per key where random
// nonces become a risk.
type keySealer struct {
	aead cipher.AEAD
}

// newKeySealer makes a sealer from a 32-byte key.
func newKeySealer(key []byte) (*keySealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("the encryption key has %d bytes, want 32", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &keySealer{aead: aead}, nil
}

// sealAAD binds a sealed key to its certificate's name: a key copied to
// another certificate's row does not open there.
func sealAAD(cert string) []byte { return []byte("dcvd private key of certificate " + cert) }

// seal encrypts the PEM key of certificate cert.
func (s *keySealer) seal(cert string, keyPEM []byte) (string, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal the key of %s: %w", cert, err)
	}
	out := s.aead.Seal(nonce, nonce, keyPEM, sealAAD(cert))
	return sealedPrefix + base64.StdEncoding.EncodeToString(out), nil
}

// open decrypts what seal made for certificate cert.
func (s *keySealer) open(cert, sealed string) ([]byte, error) {
	body, ok := strings.CutPrefix(sealed, sealedPrefix)
	if !ok {
		return nil, fmt.Errorf("open the key of %s: not a sealed key of a known version", cert)
	}
	raw, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("open the key of %s: %w", cert, err)
	}
	n := s.aead.NonceSize()
	if len(raw) < n+s.aead.Overhead() {
		return nil, fmt.Errorf("open the key of %s: too short", cert)
	}
	keyPEM, err := s.aead.Open(nil, raw[:n], raw[n:], sealAAD(cert))
	if err != nil {
		return nil, fmt.Errorf("open the key of %s: %w", cert, errSealedKey)
	}
	return keyPEM, nil
}

// errSealedKey says a sealed key does not open: the wrong encryption key,
// or a sealed key of another certificate, or damaged data.
var errSealedKey = errors.New("it does not decrypt with [store] encryption_key (a different key, or a key sealed for another certificate)")
