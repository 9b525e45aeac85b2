package certs

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/testpki"
)

// TestVerifyIssued: a certificate from the API is accepted only when it is
// for the order's key, covers every configured name exactly (wildcards as
// wildcards), has sane dates, and its chain parses and signs it (reaching
// the roots when configured).
func TestVerifyIssued(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ca, rogue := testpki.NewCA(t, "good", now), testpki.NewCA(t, "rogue", now)
	key, other := testpki.Key(t), testpki.Key(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"example.com", "*.example.com", "www.example.com"}
	valid := testpki.Leaf{Names: names, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour)}
	with := func(f func(*testpki.Leaf)) testpki.Leaf { l := valid; f(&l); return l }

	good := ca.Issue(t, key.Public(), valid)
	keyBlock := testpki.KeyPEM(t, key)

	tests := []struct {
		name     string
		cert     string
		chain    string
		roots    *x509.CertPool
		names    []string
		wantErr  string // "" means accepted
		wantLeaf *x509.Certificate
	}{
		{name: "valid, chain to the roots", cert: testpki.PEM(good), chain: testpki.PEM(ca.Inter), roots: ca.Pool(), wantLeaf: good},
		{name: "valid, no roots configured", cert: testpki.PEM(good), chain: testpki.PEM(ca.Inter), wantLeaf: good},
		{name: "valid, chain appended to the leaf", cert: testpki.PEM(good, ca.Inter), roots: ca.Pool(), wantLeaf: good},
		{name: "valid, chain in both fields", cert: testpki.PEM(good, ca.Inter), chain: testpki.PEM(ca.Inter), roots: ca.Pool(), wantLeaf: good},
		{name: "valid, root included in the chain", cert: testpki.PEM(good), chain: testpki.PEM(ca.Inter, ca.Root), roots: ca.Pool(), wantLeaf: good},
		{name: "valid, no chain and no roots", cert: testpki.PEM(good), wantLeaf: good},
		{name: "valid, names in another case",
			cert:  testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.Names = []string{"EXAMPLE.com", "*.Example.COM", "WWW.example.com"} }))),
			chain: testpki.PEM(ca.Inter), roots: ca.Pool()},
		{name: "valid, an IP address", names: []string{"192.0.2.7"},
			cert:  testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.Names = []string{"192.0.2.7"} }))),
			chain: testpki.PEM(ca.Inter), roots: ca.Pool()},
		{name: "valid, not before within the clock skew", chain: testpki.PEM(ca.Inter),
			cert: testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.NotBefore = now.Add(30 * time.Minute) })))},

		{name: "another key", cert: testpki.PEM(ca.Issue(t, other.Public(), valid)), chain: testpki.PEM(ca.Inter), roots: ca.Pool(),
			wantErr: "not for this order's key"},
		{name: "another key type", cert: testpki.PEM(ca.Issue(t, rsaKey.Public(), valid)), chain: testpki.PEM(ca.Inter), roots: ca.Pool(),
			wantErr: "not for this order's key"},
		{name: "a name missing", chain: testpki.PEM(ca.Inter), roots: ca.Pool(),
			cert:    testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.Names = []string{"example.com", "*.example.com"} }))),
			wantErr: "does not cover www.example.com"},
		{name: "plain name where a wildcard is configured", names: []string{"*.example.com"}, chain: testpki.PEM(ca.Inter),
			cert:    testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.Names = []string{"www.example.com"} }))),
			wantErr: "does not cover *.example.com"},
		{name: "wildcard where a plain name is configured", names: []string{"www.example.com"}, chain: testpki.PEM(ca.Inter),
			cert:    testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.Names = []string{"*.example.com"} }))),
			wantErr: "does not cover www.example.com"},
		{name: "wildcard does not cover the apex", names: []string{"example.com"}, chain: testpki.PEM(ca.Inter),
			cert:    testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.Names = []string{"*.example.com"} }))),
			wantErr: "does not cover example.com"},
		{name: "IP address missing", names: []string{"192.0.2.7"}, chain: testpki.PEM(ca.Inter),
			cert:    testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.Names = []string{"192.0.2.8"} }))),
			wantErr: "does not cover 192.0.2.7"},
		{name: "expired", chain: testpki.PEM(ca.Inter),
			cert: testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) {
				l.NotBefore, l.NotAfter = now.Add(-100*24*time.Hour), now.Add(-time.Minute)
			}))),
			wantErr: "expired"},
		{name: "not yet valid", chain: testpki.PEM(ca.Inter),
			cert:    testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.NotBefore = now.Add(2 * time.Hour) }))),
			wantErr: "not valid before"},
		{name: "empty validity", chain: testpki.PEM(ca.Inter),
			cert:    testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) { l.NotAfter = l.NotBefore }))),
			wantErr: "validity is empty"},
		{name: "chain that did not sign it", cert: testpki.PEM(good), chain: testpki.PEM(rogue.Inter),
			wantErr: "did not sign"},
		{name: "chain that did not sign it, roots configured", cert: testpki.PEM(good), chain: testpki.PEM(rogue.Inter), roots: ca.Pool(),
			wantErr: "does not chain to the configured roots"},
		{name: "signed by another CA", cert: testpki.PEM(rogue.Issue(t, key.Public(), valid)), chain: testpki.PEM(rogue.Inter), roots: ca.Pool(),
			wantErr: "does not chain to the configured roots"},
		{name: "self-signed by the order's key", roots: ca.Pool(),
			cert: testpki.PEM(func() *x509.Certificate {
				tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), DNSNames: names, NotBefore: valid.NotBefore, NotAfter: valid.NotAfter,
					ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
				return testpki.Sign(t, tmpl, tmpl, key.Public(), key)
			}()),
			wantErr: "does not chain to the configured roots"},
		{name: "intermediate missing with roots configured", cert: testpki.PEM(good), roots: ca.Pool(),
			wantErr: "does not chain to the configured roots"},
		{name: "not for server authentication", chain: testpki.PEM(ca.Inter), roots: ca.Pool(),
			cert: testpki.PEM(ca.Issue(t, key.Public(), with(func(l *testpki.Leaf) {
				l.Usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			}))),
			wantErr: "does not chain to the configured roots"},
		{name: "roots mismatch", cert: testpki.PEM(good), chain: testpki.PEM(ca.Inter), roots: rogue.Pool(),
			wantErr: "does not chain to the configured roots"},
		{name: "garbage cert_pem", cert: "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n", chain: testpki.PEM(ca.Inter),
			wantErr: "cert_pem"},
		{name: "not PEM at all", cert: "<html>502 Bad Gateway</html>", chain: testpki.PEM(ca.Inter), wantErr: "cert_pem"},
		{name: "empty cert_pem", cert: "", chain: testpki.PEM(ca.Inter), wantErr: "cert_pem"},
		{name: "a private key in cert_pem", cert: keyBlock + testpki.PEM(good), chain: testpki.PEM(ca.Inter), wantErr: "cert_pem"},
		{name: "garbage ca_pem", cert: testpki.PEM(good), chain: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
			wantErr: "ca_pem"},
		{name: "ca_pem not PEM", cert: testpki.PEM(good), chain: "null", wantErr: "ca_pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.names
			if want == nil {
				want = names
			}
			got, err := Verify(tt.cert, tt.chain, key, want, tt.roots, now)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("accepted; want an error containing %q", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %q, want it to contain %q", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("a refused certificate was returned")
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			leaves, err := ParsePEM(got.LeafPEM)
			if err != nil || len(leaves) != 1 || !leaves[0].Equal(got.Leaf) {
				t.Fatalf("leafPEM is not exactly the leaf: %v", err)
			}
			if tt.wantLeaf != nil && !got.Leaf.Equal(tt.wantLeaf) {
				t.Errorf("returned leaf is not the certificate given")
			}
			if tt.chain != "" || strings.Count(tt.cert, "BEGIN") > 1 {
				chain, err := ParsePEM(got.ChainPEM)
				if err != nil || !chain[0].Equal(ca.Inter) {
					t.Fatalf("chainPEM does not start with the intermediate: %v", err)
				}
				for i := range chain {
					for j := range i {
						if chain[i].Equal(chain[j]) {
							t.Errorf("chain holds a certificate twice")
						}
					}
				}
			}
		})
	}
}
