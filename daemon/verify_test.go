package daemon

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

// vCA is a test CA: a root and an intermediate that signs leaves.
type vCA struct {
	root, inter       *x509.Certificate
	rootKey, interKey crypto.Signer
}

func vKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func vSign(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
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

func newVCA(t *testing.T, name string, now time.Time) *vCA {
	t.Helper()
	ca := &vCA{rootKey: vKey(t), interKey: vKey(t)}
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " root"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	ca.root = vSign(t, rootTmpl, rootTmpl, ca.rootKey.Public(), ca.rootKey)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " intermediate"},
		NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
	}
	ca.inter = vSign(t, interTmpl, ca.root, ca.interKey.Public(), ca.rootKey)
	return ca
}

func (ca *vCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

// vLeaf describes a leaf to issue.
type vLeaf struct {
	names               []string
	notBefore, notAfter time.Time
	usage               []x509.ExtKeyUsage
}

func (ca *vCA) leaf(t *testing.T, pub crypto.PublicKey, l vLeaf) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    l.notBefore, NotAfter: l.notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: l.usage,
	}
	if tmpl.ExtKeyUsage == nil {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, n := range l.names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return vSign(t, tmpl, ca.inter, pub, ca.interKey)
}

func vPEM(certs ...*x509.Certificate) string {
	var b strings.Builder
	for _, c := range certs {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return b.String()
}

// TestVerifyIssued: a certificate from the API is accepted only when it is
// for the order's key, covers every configured name exactly (wildcards as
// wildcards), has sane dates, and its chain parses and signs it (reaching
// the roots when configured).
func TestVerifyIssued(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ca, rogue := newVCA(t, "good", now), newVCA(t, "rogue", now)
	key, other := vKey(t), vKey(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"example.com", "*.example.com", "www.example.com"}
	valid := vLeaf{names: names, notBefore: now.Add(-time.Hour), notAfter: now.Add(90 * 24 * time.Hour)}
	with := func(f func(*vLeaf)) vLeaf { l := valid; f(&l); return l }

	good := ca.leaf(t, key.Public(), valid)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyBlock := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))

	tests := []struct {
		name     string
		cert     string
		chain    string
		roots    *x509.CertPool
		names    []string
		wantErr  string // "" means accepted
		wantLeaf *x509.Certificate
	}{
		{name: "valid, chain to the roots", cert: vPEM(good), chain: vPEM(ca.inter), roots: ca.pool(), wantLeaf: good},
		{name: "valid, no roots configured", cert: vPEM(good), chain: vPEM(ca.inter), wantLeaf: good},
		{name: "valid, chain appended to the leaf", cert: vPEM(good, ca.inter), roots: ca.pool(), wantLeaf: good},
		{name: "valid, chain in both fields", cert: vPEM(good, ca.inter), chain: vPEM(ca.inter), roots: ca.pool(), wantLeaf: good},
		{name: "valid, root included in the chain", cert: vPEM(good), chain: vPEM(ca.inter, ca.root), roots: ca.pool(), wantLeaf: good},
		{name: "valid, no chain and no roots", cert: vPEM(good), wantLeaf: good},
		{name: "valid, names in another case",
			cert:  vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.names = []string{"EXAMPLE.com", "*.Example.COM", "WWW.example.com"} }))),
			chain: vPEM(ca.inter), roots: ca.pool()},
		{name: "valid, an IP address", names: []string{"192.0.2.7"},
			cert:  vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.names = []string{"192.0.2.7"} }))),
			chain: vPEM(ca.inter), roots: ca.pool()},
		{name: "valid, not before within the clock skew", chain: vPEM(ca.inter),
			cert: vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.notBefore = now.Add(30 * time.Minute) })))},

		{name: "another key", cert: vPEM(ca.leaf(t, other.Public(), valid)), chain: vPEM(ca.inter), roots: ca.pool(),
			wantErr: "not for this order's key"},
		{name: "another key type", cert: vPEM(ca.leaf(t, rsaKey.Public(), valid)), chain: vPEM(ca.inter), roots: ca.pool(),
			wantErr: "not for this order's key"},
		{name: "a name missing", chain: vPEM(ca.inter), roots: ca.pool(),
			cert:    vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.names = []string{"example.com", "*.example.com"} }))),
			wantErr: "does not cover www.example.com"},
		{name: "plain name where a wildcard is configured", names: []string{"*.example.com"}, chain: vPEM(ca.inter),
			cert:    vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.names = []string{"www.example.com"} }))),
			wantErr: "does not cover *.example.com"},
		{name: "wildcard where a plain name is configured", names: []string{"www.example.com"}, chain: vPEM(ca.inter),
			cert:    vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.names = []string{"*.example.com"} }))),
			wantErr: "does not cover www.example.com"},
		{name: "wildcard does not cover the apex", names: []string{"example.com"}, chain: vPEM(ca.inter),
			cert:    vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.names = []string{"*.example.com"} }))),
			wantErr: "does not cover example.com"},
		{name: "IP address missing", names: []string{"192.0.2.7"}, chain: vPEM(ca.inter),
			cert:    vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.names = []string{"192.0.2.8"} }))),
			wantErr: "does not cover 192.0.2.7"},
		{name: "expired", chain: vPEM(ca.inter),
			cert: vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) {
				l.notBefore, l.notAfter = now.Add(-100*24*time.Hour), now.Add(-time.Minute)
			}))),
			wantErr: "expired"},
		{name: "not yet valid", chain: vPEM(ca.inter),
			cert:    vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.notBefore = now.Add(2 * time.Hour) }))),
			wantErr: "not valid before"},
		{name: "empty validity", chain: vPEM(ca.inter),
			cert:    vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) { l.notAfter = l.notBefore }))),
			wantErr: "validity is empty"},
		{name: "chain that did not sign it", cert: vPEM(good), chain: vPEM(rogue.inter),
			wantErr: "did not sign"},
		{name: "chain that did not sign it, roots configured", cert: vPEM(good), chain: vPEM(rogue.inter), roots: ca.pool(),
			wantErr: "does not chain to the configured roots"},
		{name: "signed by another CA", cert: vPEM(rogue.leaf(t, key.Public(), valid)), chain: vPEM(rogue.inter), roots: ca.pool(),
			wantErr: "does not chain to the configured roots"},
		{name: "self-signed by the order's key", roots: ca.pool(),
			cert: vPEM(func() *x509.Certificate {
				tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), DNSNames: names, NotBefore: valid.notBefore, NotAfter: valid.notAfter,
					ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
				return vSign(t, tmpl, tmpl, key.Public(), key)
			}()),
			wantErr: "does not chain to the configured roots"},
		{name: "intermediate missing with roots configured", cert: vPEM(good), roots: ca.pool(),
			wantErr: "does not chain to the configured roots"},
		{name: "not for server authentication", chain: vPEM(ca.inter), roots: ca.pool(),
			cert: vPEM(ca.leaf(t, key.Public(), with(func(l *vLeaf) {
				l.usage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
			}))),
			wantErr: "does not chain to the configured roots"},
		{name: "roots mismatch", cert: vPEM(good), chain: vPEM(ca.inter), roots: rogue.pool(),
			wantErr: "does not chain to the configured roots"},
		{name: "garbage cert_pem", cert: "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n", chain: vPEM(ca.inter),
			wantErr: "cert_pem"},
		{name: "not PEM at all", cert: "<html>502 Bad Gateway</html>", chain: vPEM(ca.inter), wantErr: "cert_pem"},
		{name: "empty cert_pem", cert: "", chain: vPEM(ca.inter), wantErr: "cert_pem"},
		{name: "a private key in cert_pem", cert: keyBlock + vPEM(good), chain: vPEM(ca.inter), wantErr: "cert_pem"},
		{name: "garbage ca_pem", cert: vPEM(good), chain: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
			wantErr: "ca_pem"},
		{name: "ca_pem not PEM", cert: vPEM(good), chain: "null", wantErr: "ca_pem"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.names
			if want == nil {
				want = names
			}
			got, err := verifyIssued(tt.cert, tt.chain, key, want, tt.roots, now)
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
			leaves, err := parsePEMCerts(got.leafPEM)
			if err != nil || len(leaves) != 1 || !leaves[0].Equal(got.leaf) {
				t.Fatalf("leafPEM is not exactly the leaf: %v", err)
			}
			if tt.wantLeaf != nil && !got.leaf.Equal(tt.wantLeaf) {
				t.Errorf("returned leaf is not the certificate given")
			}
			if tt.chain != "" || strings.Count(tt.cert, "BEGIN") > 1 {
				chain, err := parsePEMCerts(got.chainPEM)
				if err != nil || !chain[0].Equal(ca.inter) {
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

// TestWrongCertificateNeverDeployed: the API returns a certificate the CA
// really signed, but for another key or without one of the names; the
// order fails, nothing is deployed (a first deployment leaves no files, a
// renewal leaves the previous ones byte for byte), the live certificate
// stands, and the DCV is cleaned up.
func TestWrongCertificateNeverDeployed(t *testing.T) {
	forgeries := []struct {
		name    string
		forge   func(t *testing.T, h *harness, real *x509.Certificate) *x509.Certificate
		wantErr string
	}{
		{"another key", func(t *testing.T, h *harness, real *x509.Certificate) *x509.Certificate {
			inter, key := h.sandboxIntermediate()
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), DNSNames: real.DNSNames, NotBefore: real.NotBefore,
				NotAfter: real.NotAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			return vSign(t, tmpl, inter, vKey(t).Public(), key)
		}, "not for this order's key"},
		{"a name missing", func(t *testing.T, h *harness, real *x509.Certificate) *x509.Certificate {
			inter, key := h.sandboxIntermediate()
			var names []string
			for _, n := range real.DNSNames {
				if n != "www.example.com" {
					names = append(names, n)
				}
			}
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(43), DNSNames: names, NotBefore: real.NotBefore,
				NotAfter: real.NotAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
			return vSign(t, tmpl, inter, real.PublicKey, key)
		}, "does not cover www.example.com"},
	}
	for _, f := range forgeries {
		for _, renewal := range []bool{false, true} {
			name := f.name + "/first deployment"
			if renewal {
				name = f.name + "/renewal"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				h := newHarness(t)
				ctx := hCtx(t)
				d := h.daemon(h.config(hDomains()), nil)
				var live *store.Certificate
				if renewal {
					h.issue(ctx, d)
					var err error
					if live, err = d.Store().Certificate(ctx, hCert); err != nil {
						t.Fatal(err)
					}
				}
				before := h.deployed()
				reloads := len(h.reload.calls())

				var forged atomic.Int32
				h.setRewrite(func(path string, body []byte) []byte {
					if path != reseller.PathDetail {
						return body
					}
					var env map[string]any
					if err := json.Unmarshal(body, &env); err != nil {
						t.Errorf("detail reply: %v", err)
						return body
					}
					data, _ := env["data"].(map[string]any)
					certPEM, _ := data["cert_pem"].(string)
					if certPEM == "" {
						return body
					}
					data["cert_pem"] = vPEM(f.forge(t, h, leafOf(t, certPEM)))
					forged.Add(1)
					out, err := json.Marshal(env)
					if err != nil {
						t.Error(err)
					}
					return out
				})

				o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
				if err == nil {
					t.Fatal("the order succeeded with a wrong certificate")
				}
				if forged.Load() == 0 {
					t.Fatal("no certificate was forged: the test did not test anything")
				}
				if !strings.Contains(err.Error(), f.wantErr) {
					t.Errorf("error %q, want it to contain %q", err, f.wantErr)
				}
				stored, err := d.Store().Order(ctx, o.UniqueID)
				if err != nil {
					t.Fatal(err)
				}
				if stored.Step != store.StepFailed || !strings.Contains(stored.LastError, f.wantErr) || stored.CertPEM != "" {
					t.Errorf("order: step %s, last error %q, cert stored %v; want failed, the reason, no cert",
						stored.Step, stored.LastError, stored.CertPEM != "")
				}
				after := h.deployed()
				if len(after) != len(before) {
					t.Errorf("deploy directory holds %d files, had %d", len(after), len(before))
				}
				for name, content := range before {
					if string(after[name]) != string(content) {
						t.Errorf("%s changed", name)
					}
				}
				if n := len(h.reload.calls()); n != reloads {
					t.Errorf("reload run %d time(s) for a refused certificate", n-reloads)
				}
				got, err := d.Store().Certificate(ctx, hCert)
				switch {
				case !renewal && !errors.Is(err, store.ErrNotFound):
					t.Errorf("a live certificate was recorded: %+v %v", got, err)
				case renewal && (err != nil || got.Serial != live.Serial):
					t.Errorf("the live certificate changed: %+v %v", got, err)
				}
				history, err := d.Store().Attempts(ctx, hCert, 1)
				if err != nil || len(history) != 1 || history[0].Outcome != store.StepFailed || history[0].UniqueID != o.UniqueID {
					t.Errorf("history %+v %v; want the failed attempt", history, err)
				}
				if _, err := d.Store().ActiveOrder(ctx, hCert); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("an order is still in flight: %v", err)
				}
				h.assertDCVClean()
			})
		}
	}
}

// TestVerifyIssuedUsesTheOrderKeyFile: the key compared is the one on disk
// for the order, not any key of the same type.
func TestVerifyIssuedUsesTheOrderKeyFile(t *testing.T) {
	dir := t.TempDir()
	k := vKey(t)
	path := dir + "/k.key"
	if err := writeKey(path, k); err != nil {
		t.Fatal(err)
	}
	loaded, _, err := loadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := newVCA(t, "k", now)
	l := vLeaf{names: []string{"a.example.com"}, notBefore: now.Add(-time.Hour), notAfter: now.Add(time.Hour)}
	if _, err := verifyIssued(vPEM(ca.leaf(t, k.Public(), l)), vPEM(ca.inter), loaded, l.names, ca.pool(), now); err != nil {
		t.Errorf("certificate for the stored key refused: %v", err)
	}
	if _, err := verifyIssued(vPEM(ca.leaf(t, vKey(t).Public(), l)), vPEM(ca.inter), loaded, l.names, ca.pool(), now); err == nil {
		t.Errorf("certificate for another key accepted")
	}
}
