package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoRunsTheWholeFlow runs the README's first command in-process and
// checks what it leaves behind: a key and a certificate for it that carries
// every demo name, and no DCV file left in the web root.
func TestDemoRunsTheWholeFlow(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "deploy")
	var buf bytes.Buffer
	if err := run(context.Background(), []string{"demo", "--state-dir", dir, "--out", out}, &buf, &buf); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, buf.String())
	}
	for _, want := range []string{"reissue accepted", "DNS records published", "every record and file is visible",
		"re-check requested", "certificate issued and verified", "reload: demo serial", "order done",
		"1 charge(s)", "DCV left behind: 0 file(s), 0 CNAME(s)", "next renewal"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, buf.String())
		}
	}

	certPEM, err := os.ReadFile(filepath.Join(out, "fullchain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("fullchain.pem holds no PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for name := range demoDomains {
		if err := leaf.VerifyHostname(strings.Replace(name, "*", "www", 1)); err != nil {
			t.Errorf("certificate does not cover %s: %v", name, err)
		}
	}
	keyPEM, err := os.ReadFile(filepath.Join(out, "privkey.pem"))
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(keyPEM)
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(leaf.PublicKey) {
		t.Error("privkey.pem does not match the certificate")
	}
	fi, err := os.Stat(filepath.Join(out, "privkey.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("privkey.pem mode = %v, want 0600", fi.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(dir, "webroot", ".well-known", "pki-validation", "*"))
	if len(left) != 0 {
		t.Errorf("DCV files left behind: %v", left)
	}
}

func TestUnknownCommand(t *testing.T) {
	var buf bytes.Buffer
	if err := run(context.Background(), []string{"frobnicate"}, &buf, &buf); err == nil {
		t.Fatal("an unknown command succeeded")
	}
}
