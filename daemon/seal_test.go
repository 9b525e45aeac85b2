package daemon

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

func testSealer(t *testing.T, fill byte) *keySealer {
	t.Helper()
	s, err := newKeySealer(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKeySealerRoundTrip(t *testing.T) {
	s := testSealer(t, 7)
	keyPEM := []byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n")
	a, err := s.seal("web", keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.seal("web", keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two seals of one key are equal: the nonce is not random")
	}
	if strings.Contains(a, "PRIVATE") || !strings.HasPrefix(a, sealedPrefix) {
		t.Fatalf("sealed key %q", a)
	}
	for _, sealed := range []string{a, b} {
		got, err := s.open("web", sealed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, keyPEM) {
			t.Fatalf("opened %q, want %q", got, keyPEM)
		}
	}
}

func TestKeySealerRefuses(t *testing.T) {
	s := testSealer(t, 7)
	sealed, err := s.seal("web", []byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, sealedPrefix))
	raw[len(raw)-1] ^= 1
	tampered := sealedPrefix + base64.StdEncoding.EncodeToString(raw)
	tests := []struct {
		name, cert, sealed string
		sealer             *keySealer
		want               string
	}{
		{"another certificate", "mail", sealed, s, "does not decrypt"},
		{"another key", "web", sealed, testSealer(t, 8), "does not decrypt"},
		{"tampered", "web", tampered, s, "does not decrypt"},
		{"unknown version", "web", "v2:" + strings.TrimPrefix(sealed, sealedPrefix), s, "known version"},
		{"not base64", "web", sealedPrefix + "%%%", s, "illegal base64"},
		{"too short", "web", sealedPrefix + "AAAA", s, "too short"},
		{"empty", "web", "", s, "known version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.sealer.open(tt.cert, tt.sealed)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("open = %q, %v; want an error containing %q", got, err, tt.want)
			}
		})
	}
}

func TestNewKeySealerLength(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := newKeySealer(make([]byte, n)); err == nil {
			t.Errorf("a %d-byte key was accepted", n)
		}
	}
}
