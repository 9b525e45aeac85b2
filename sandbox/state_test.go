package sandbox

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dcvd/dcvd/reseller"
)

func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	clock := newSBClock()
	h := sbStart(t, dir, clock)
	_, csr := sbCSR(t, "a.example.com")
	first := h.reissue("k1", "svc", map[string]string{"a.example.com": "admin@example.com", "b.example.com": "admin@example.com"}, csr).mustOrder(t)
	for _, d := range []string{"a.example.com", "b.example.com"} {
		if err := h.srv.ApproveEmail("svc", d); err != nil {
			t.Fatal(err)
		}
	}
	h.reissue("k2", "svc", map[string]string{"a.example.com": "admin@example.com"}, "").mustSucceed(t)
	if err := h.srv.ApproveEmail("svc", "a.example.com"); err != nil {
		t.Fatal(err)
	}
	issued := h.detail("svc")
	if issued.Status != reseller.StatusIssued {
		t.Fatalf("not issued: %+v", issued)
	}
	created := h.call(http.MethodPost, reseller.PathCreate, map[string]any{"unique_id": "k3", "product_id": "single",
		"csr": csr, "domain_dcv": map[string]string{"a.example.com": "dns"}}).mustOrder(t)
	// A request that was accepted once, to be replayed after the restart.
	replay := sbRequest{method: http.MethodGet, path: reseller.PathDetail}
	replay.query = map[string][]string{"service_id": {"svc"}}
	h.sign(&replay, h.id, h.secret, clock.Now())
	if r, err := h.send(context.Background(), replay); err != nil || !r.env.Success {
		t.Fatalf("first send: %v %s", err, r.raw)
	}
	id, secret := h.srv.AccessKey()
	root := h.srv.RootPEM()
	ledger := h.srv.Ledger()
	balance := h.srv.Balance()
	h.stop()

	if fi, err := os.Stat(filepath.Join(dir, stateFileName)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, mode %v", err, fi.Mode())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 { // state.json and ca/
		t.Errorf("state directory holds %d entries, want state.json and ca/ (a temporary file left behind?)", len(entries))
	}

	h2 := sbStart(t, dir, clock)
	if id2, secret2 := h2.srv.AccessKey(); id2 != id || secret2 != secret {
		t.Error("the access key pair changed across a restart")
	}
	if h2.srv.RootPEM() != root {
		t.Error("the CA changed across a restart")
	}
	if l := h2.srv.Ledger(); len(l) != len(ledger) || l[0].UniqueID != "k1" || h2.srv.Balance() != balance {
		t.Errorf("ledger %+v balance %v, want %+v %v", l, h2.srv.Balance(), ledger, balance)
	}
	if len(h2.srv.Revocations()) != 1 {
		t.Errorf("revocations %+v", h2.srv.Revocations())
	}
	d := h2.detail("svc")
	if d.Status != reseller.StatusIssued || d.CertPEM != issued.CertPEM || d.CAID != issued.CAID {
		t.Errorf("detail after restart %+v", d)
	}
	h2.sbVerify(d, nil, "a.example.com")
	if d := h2.detail(created.ServiceID); d.CAID != created.CAID {
		t.Errorf("created service after restart: %+v", d)
	}
	// Orders by unique_id: a replay is still free.
	if o := h2.reissue("k1", "svc", nil, "").mustOrder(t); o.CAID != first.CAID || o.Status != reseller.StatusRevoked {
		t.Errorf("replayed k1 after restart: %+v", o)
	}
	if n := len(h2.srv.Ledger()); n != len(ledger) {
		t.Errorf("a replay after restart charged: %d entries", n)
	}
	// Nonces.
	r, err := h2.send(context.Background(), replay)
	if err != nil {
		t.Fatal(err)
	}
	r.mustRefuse(t, http.StatusUnauthorized, CodeNonceReused)
	// Configured services do not overwrite those in the state.
	for _, s := range h2.srv.Services() {
		if s.ID == "svc" && strings.Join(s.Domains, ",") != "a.example.com,b.example.com" {
			t.Errorf("paid domains of svc after restart: %v", s.Domains)
		}
	}
}

func TestConfiguredAccessKeyAndCorruptState(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{StateDir: dir, AccessKeyID: "AKID", AccessKeySecret: "s3cret", CheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if id, secret := s.AccessKey(); id != "AKID" || secret != "s3cret" {
		t.Errorf("key pair %s %s", id, secret)
	}
	// The default catalogue when none is configured.
	if svcs := s.Services(); len(svcs) != 1 || svcs[0].ID != "demo" || svcs[0].ProductID != "sectigo-dv-multi" || svcs[0].MaxDomains != 100 {
		t.Errorf("default services %+v", svcs)
	}
	s.Close()
	s, err = New(Config{StateDir: dir, CheckInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if id, secret := s.AccessKey(); id != "AKID" || secret != "s3cret" {
		t.Errorf("key pair after restart %s %s", id, secret)
	}
	s.Close()

	if err := os.WriteFile(filepath.Join(dir, stateFileName), []byte(`{"version":1,`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{StateDir: dir}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt state: %v", err)
	}
	for _, cfg := range []Config{
		{},
		{StateDir: t.TempDir(), Services: []Service{{ID: "x", ProductID: "missing"}}},
		{StateDir: t.TempDir(), Products: []Product{{ID: "p", MaxDomains: 0}}},
		{StateDir: t.TempDir(), Products: []Product{{ID: "p", MaxDomains: 1, Validation: "XV"}}},
	} {
		if s, err := New(cfg); err == nil {
			s.Close()
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// An ephemeral sandbox writes no state: a benchmark measures its client,
// not the sandbox's disk. It still charges and answers as usual.
func TestEphemeralWritesNoState(t *testing.T) {
	dir := t.TempDir()
	h := sbStart(t, dir, nil, func(c *Config) { c.Ephemeral = true })
	_, csr := sbCSR(t, "a.example.com")
	h.reissue("k1", "svc", map[string]string{"a.example.com": "admin@example.com"}, csr).mustOrder(t)
	if n := len(h.srv.Ledger()); n != 1 {
		t.Fatalf("ledger holds %d charges, want 1", n)
	}
	h.stop()
	if _, err := os.Stat(filepath.Join(dir, stateFileName)); !os.IsNotExist(err) {
		t.Fatalf("an ephemeral sandbox wrote %s: %v", stateFileName, err)
	}
}
