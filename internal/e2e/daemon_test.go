package e2e_test

import (
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/sandbox"
)

// TestDaemonReissueEndToEnd runs the real dcvd binary, as an admin would,
// against a sandbox CA, a real BIND9 (dns-validated names, RFC 2136 with
// TSIG) and a real nginx (the http-validated name's webroot, and the TLS
// site that serves the deploy directory):
//
//	dcvd check-config; dcvd reissue NAME --wait; dcvd status --json
//
// and then proves what the issue asks: nginx serves the new certificate (a
// TLS handshake verifies the chain against the sandbox root and the
// names), the DCV records are gone from BIND and the file from the
// webroot, and the sandbox charged exactly once.
func TestDaemonReissueEndToEnd(t *testing.T) {
	env := requireServers(t,
		"DCVD_TEST_BIND_ADDR", "DCVD_TEST_BIND_ZONE", "DCVD_TEST_BIND_TSIG_NAME", "DCVD_TEST_BIND_TSIG_ALG",
		"DCVD_TEST_BIND_TSIG_SECRET",
		"DCVD_TEST_NGINX_ADDR", "DCVD_TEST_NGINX_WEBROOT", "DCVD_TEST_NGINX_TLS_ADDR", "DCVD_TEST_NGINX_TLS_DIR",
		"DCVD_TEST_NGINX_RELOAD")
	bindAddr := env["DCVD_TEST_BIND_ADDR"]
	zone := strings.TrimSuffix(strings.ToLower(env["DCVD_TEST_BIND_ZONE"]), ".")
	webAddr, webroot := env["DCVD_TEST_NGINX_ADDR"], env["DCVD_TEST_NGINX_WEBROOT"]
	tlsAddr, tlsDir := env["DCVD_TEST_NGINX_TLS_ADDR"], env["DCVD_TEST_NGINX_TLS_DIR"]
	ctx := testContext(t)
	bin := dcvdBinary(t, "")

	// Fresh names under BIND's zone, so that runs against the same servers
	// never meet, and "nothing left under base" is checkable.
	label := "e2e-" + randomLabel(t)
	base := label + "." + zone
	wildcard, httpName := "*."+base, "shop-"+label+"."+zone
	domains := map[string]string{wildcard: "dns", base: "dns", httpName: "http"}
	const certName = "e2e"
	wellKnown := filepath.Join(webroot, ".well-known")
	hadWellKnown := exists(t, wellKnown)

	sb, apiURL := startSandbox(t, sandbox.Config{DNSServer: bindAddr, HTTPAddr: webAddr})
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	cfgPath := writeConfig(t, dir, sb, apiURL, map[string]any{
		"state_dir":     stateDir,
		"poll_interval": "100ms",
	}, map[string]any{
		"bind": map[string]any{
			"provider": "rfc2136",
			"server":   bindAddr,
			"key_name": env["DCVD_TEST_BIND_TSIG_NAME"],
			"key_alg":  env["DCVD_TEST_BIND_TSIG_ALG"],
			"key_file": writeSecret(t, dir, "tsig-secret", env["DCVD_TEST_BIND_TSIG_SECRET"]),
			// No zone: it is found by an SOA lookup at BIND itself.
			"resolvers":            []string{bindAddr},
			"nameservers":          []string{bindAddr},
			"ttl":                  "60s",
			"propagation_timeout":  "30s",
			"propagation_interval": "100ms",
		},
	}, map[string]any{
		"name":         certName,
		"service_id":   serviceID,
		"key_type":     "ecdsa-p256",
		"dns":          "bind",
		"webroot":      webroot,
		"http_connect": webAddr,
		"domains":      domains,
		"deploy": map[string]any{
			"dir":            tlsDir,
			"reload":         env["DCVD_TEST_NGINX_RELOAD"],
			"reload_timeout": "30s",
		},
	})

	// What nginx serves before: the placeholder of scripts/nginx.sh, or what
	// an earlier run deployed.
	before, err := servedLeaf(ctx, tlsAddr, httpName, nil)
	if err != nil {
		t.Fatalf("TLS handshake with nginx on %s before the reissue: %v", tlsAddr, err)
	}
	// The nginx the reload command signals, and its workers before dcvd
	// runs it: the ones that serve what was deployed before.
	ngx := nginxOf(t, env["DCVD_TEST_NGINX_RELOAD"])
	oldWorkers := ngx.workers(t)

	if r := runDcvd(ctx, bin, nil, "check-config", "--config", cfgPath); r.err != nil {
		t.Fatalf("dcvd check-config: %v\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	r := runDcvd(ctx, bin, nil, "reissue", certName, "--wait", "--config", cfgPath)
	if r.err != nil {
		t.Fatalf("dcvd reissue %s --wait: %v\nstdout:\n%s\nstderr:\n%s", certName, r.err, r.stdout, r.stderr)
	}
	t.Logf("dcvd reissue --wait took %s: %s", r.took.Round(time.Millisecond), strings.TrimSpace(r.stdout))

	st := dcvdStatus(ctx, t, bin, cfgPath, certName)
	if st.Serial == "" || st.Order != nil || st.LastError != "" {
		t.Fatalf("dcvd status after the reissue: serial %q, order in flight %+v, last error %q; want a serial, no order, no error",
			st.Serial, st.Order, st.LastError)
	}
	serial := parseSerial(t, st.Serial)

	// The state says which order it was and what it published.
	live, order := readState(ctx, t, stateDir, certName)
	if live.Serial != st.Serial || order.Step != store.StepDone {
		t.Fatalf("state: live serial %s (status says %s), order %s at step %s, want done", live.Serial, st.Serial, order.UniqueID, order.Step)
	}
	if !strings.Contains(r.stdout, order.UniqueID) {
		t.Errorf("dcvd reissue printed %q, which does not name order %s", r.stdout, order.UniqueID)
	}

	// The sandbox charged once, for this order.
	checkCharges(t, sb, order.UniqueID)
	if st.TotalCost != sb.Ledger()[0].Amount {
		t.Errorf("dcvd status: total cost %.2f, the sandbox charged %.2f", st.TotalCost, sb.Ledger()[0].Amount)
	}

	// The deploy directory holds the new generation, whole.
	leaf := checkDeployed(t, tlsDir, sb.RootPool(), slices.Collect(maps.Keys(domains)))
	if leaf.SerialNumber.Cmp(serial) != 0 {
		t.Fatalf("%s/cert.pem has serial %x, dcvd status says %s", tlsDir, leaf.SerialNumber, st.Serial)
	}

	// nginx serves it once the reload is over (see waitServed), then
	// every handshake shows it.
	served := waitServed(ctx, t, ngx, oldWorkers, tlsAddr, httpName, serial)
	if served.SerialNumber.Cmp(before.SerialNumber) == 0 {
		t.Fatalf("nginx serves serial %x, the same as before the reissue", before.SerialNumber)
	}
	for _, name := range []string{httpName, "www." + base, base} {
		got, err := servedLeaf(ctx, tlsAddr, name, sb.RootPool())
		if err != nil {
			t.Errorf("TLS handshake with nginx for %s, verified against the sandbox root: %v", name, err)
			continue
		}
		if got.SerialNumber.Cmp(serial) != 0 {
			t.Errorf("nginx serves serial %x for %s, want %s", got.SerialNumber, name, st.Serial)
		}
	}
	// The handshake checks names: one the certificate lacks is refused.
	if _, err := servedLeaf(ctx, tlsAddr, "other."+label+".example.net", sb.RootPool()); err == nil {
		t.Errorf("a TLS handshake for a name the certificate does not cover verified")
	}

	// The DCV records were in BIND's zone (the CA validated them there),
	// and are gone.
	if len(order.DNSRecords) == 0 {
		t.Fatalf("order %s published no DNS record, want the CNAMEs of %s and %s", order.UniqueID, wildcard, base)
	}
	for _, rec := range order.DNSRecords {
		if rec.Name != base && !strings.HasSuffix(rec.Name, "."+base) {
			t.Errorf("order %s published %s, outside %s", order.UniqueID, rec.Name, base)
		}
		if got := queryCNAME(ctx, t, bindAddr, rec.Name); len(got) > 0 {
			t.Errorf("BIND still answers %s CNAME %v after the reissue", rec.Name, got)
		}
	}
	// The query above can see a CNAME: the zone's own alias answers.
	if got := queryCNAME(ctx, t, bindAddr, "alias."+zone); len(got) == 0 {
		t.Fatalf("BIND answers no CNAME for alias.%s, which its zone file holds: the record checks above prove nothing", zone)
	}
	for _, rr := range transferZone(t, env) {
		owner := strings.TrimSuffix(strings.ToLower(rr.Header().Name), ".")
		if owner == base || strings.HasSuffix(owner, "."+base) {
			t.Errorf("BIND's zone still holds %s after the reissue", strings.ReplaceAll(rr.String(), "\t", " "))
		}
	}

	// The validation file was served by nginx (the CA fetched it there),
	// and is gone.
	files := 0
	for _, in := range order.Instructions {
		if in.File == nil {
			continue
		}
		files++
		p := filepath.Join(webroot, ".well-known", "pki-validation", in.File.FileName)
		if exists(t, p) {
			t.Errorf("the validation file %s of %s is still in nginx's webroot", p, in.Domain)
		}
		if got := fetch(ctx, t, webAddr, in.File.Host, in.File.Path); got.status != http.StatusNotFound {
			t.Errorf("after the reissue nginx answers %s with HTTP %d, want 404", in.File.URL, got.status)
		}
	}
	if files != 1 {
		t.Errorf("order %s had %d validation files, want 1 (for %s)", order.UniqueID, files, httpName)
	}
	if !hadWellKnown && exists(t, wellKnown) {
		t.Errorf("the reissue left %s, which did not exist before", wellKnown)
	}
}

// requireServers returns the variables, or skips the test naming the
// missing ones (fails with DCVD_TEST_REQUIRE_SERVERS set).
func requireServers(t *testing.T, names ...string) map[string]string {
	t.Helper()
	return requireVars(t, "BIND9 or nginx not running: set %s (scripts/dns-servers.sh start DIR and scripts/nginx.sh start DIR, then load both DIR/env)", names...)
}
