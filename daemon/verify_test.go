package daemon

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/internal/testpki"
	"github.com/dcvd/dcvd/reseller"
)

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
			return testpki.Sign(t, tmpl, inter, testpki.Key(t).Public(), key)
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
			return testpki.Sign(t, tmpl, inter, real.PublicKey, key)
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
					data["cert_pem"] = testpki.PEM(f.forge(t, h, testpki.ParseCert(t, certPEM)))
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
	k := testpki.Key(t)
	path := dir + "/k.key"
	if err := certs.WriteKey(path, k); err != nil {
		t.Fatal(err)
	}
	loaded, _, err := certs.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ca := testpki.NewCA(t, "k", now)
	l := testpki.Leaf{Names: []string{"a.example.com"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	if _, err := certs.Verify(testpki.PEM(ca.Issue(t, k.Public(), l)), testpki.PEM(ca.Inter), loaded, l.Names, ca.Pool(), now); err != nil {
		t.Errorf("certificate for the stored key refused: %v", err)
	}
	if _, err := certs.Verify(testpki.PEM(ca.Issue(t, testpki.Key(t).Public(), l)), testpki.PEM(ca.Inter), loaded, l.Names, ca.Pool(), now); err == nil {
		t.Errorf("certificate for another key accepted")
	}
}
