package providers_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// These tests run against a real BIND9 and a real PowerDNS that
// scripts/dns-servers.sh starts; its DIR/env holds the variables read here.
// Without them the tests skip, so that go test ./... passes anywhere.
//
//	scripts/dns-servers.sh start /tmp/dcvd-dns
//	set -a; . /tmp/dcvd-dns/env; set +a
//	go test -race -run Integration -v ./providers/

// integrationServer is one real DNS server and how the test reaches it
// without going through the code under test.
type integrationServer struct {
	// addr is the server's DNS address (host:port).
	addr string
	// zone is the test zone, FQDN with trailing dot.
	zone string
	// section is the [dns.NAME] config for the provider under test.
	section map[string]any
	// configure adjusts the configured DNS before use.
	configure func(*providers.DNS)
	// snapshot lists the zone's records, one normalized line each, sorted,
	// with the SOA serial zeroed (an update bumps it).
	snapshot func(ctx context.Context) ([]string, error)
	// add and remove change records directly, for records the code under
	// test must leave alone.
	add, remove func(ctx context.Context, rrs []dns.RR) error
}

const (
	bindSkip = "BIND9 not running: set %s (scripts/dns-servers.sh start DIR, then load DIR/env)"
	pdnsSkip = "PowerDNS not running: set %s (scripts/dns-servers.sh start DIR, then load DIR/env)"
)

// requireEnv returns the variables, or skips the test naming the missing ones.
func requireEnv(t *testing.T, skipFormat string, names ...string) map[string]string {
	t.Helper()
	env := map[string]string{}
	var missing []string
	for _, n := range names {
		v := os.Getenv(n)
		if v == "" {
			missing = append(missing, n)
		}
		env[n] = v
	}
	if len(missing) > 0 {
		if os.Getenv("DCVD_TEST_REQUIRE_SERVERS") != "" {
			// CI sets this: there, a missing server is a failure, not a skip.
			t.Fatalf(skipFormat, strings.Join(missing, ", "))
		}
		t.Skipf(skipFormat, strings.Join(missing, ", "))
	}
	return env
}

// bindServer describes the BIND9 of scripts/dns-servers.sh: provider
// rfc2136 with the TSIG secret read through key_env, the zone found by an
// SOA lookup at the server itself.
func bindServer(t *testing.T) (*integrationServer, map[string]string) {
	env := requireEnv(t, bindSkip, "DCVD_TEST_BIND_ADDR", "DCVD_TEST_BIND_ZONE",
		"DCVD_TEST_BIND_TSIG_NAME", "DCVD_TEST_BIND_TSIG_ALG", "DCVD_TEST_BIND_TSIG_SECRET")
	addr, zone := env["DCVD_TEST_BIND_ADDR"], dns.Fqdn(strings.ToLower(env["DCVD_TEST_BIND_ZONE"]))
	keyName, alg := dns.Fqdn(env["DCVD_TEST_BIND_TSIG_NAME"]), dns.Fqdn(env["DCVD_TEST_BIND_TSIG_ALG"])
	secret := env["DCVD_TEST_BIND_TSIG_SECRET"]
	tsig := map[string]string{keyName: secret}

	update := func(ctx context.Context, build func(m *dns.Msg)) error {
		m := new(dns.Msg)
		m.SetUpdate(zone)
		build(m)
		m.SetTsig(keyName, alg, 300, time.Now().Unix())
		c := &dns.Client{Net: "tcp", TsigSecret: tsig, Timeout: 5 * time.Second}
		resp, _, err := c.ExchangeContext(ctx, m, addr)
		if err != nil {
			return fmt.Errorf("update %s at %s: %w", zone, addr, err)
		}
		if resp.Rcode != dns.RcodeSuccess {
			return fmt.Errorf("update %s at %s: %s", zone, addr, dns.RcodeToString[resp.Rcode])
		}
		return nil
	}
	srv := &integrationServer{
		addr: addr,
		zone: zone,
		section: map[string]any{
			"provider": "rfc2136",
			"server":   addr,
			"key_name": env["DCVD_TEST_BIND_TSIG_NAME"],
			"key_alg":  env["DCVD_TEST_BIND_TSIG_ALG"],
			"key_env":  "DCVD_TEST_BIND_TSIG_SECRET",
			// No zone key: the zone is found by an SOA walk at BIND itself,
			// and visibility is checked there through the config key.
			"resolvers":            []any{addr},
			"nameservers":          []any{addr},
			"ttl":                  "60s",
			"propagation_timeout":  "30s",
			"propagation_interval": "100ms",
		},
		snapshot: func(ctx context.Context) ([]string, error) {
			m := new(dns.Msg)
			m.SetAxfr(zone)
			m.SetTsig(keyName, alg, 300, time.Now().Unix())
			tr := &dns.Transfer{TsigSecret: tsig, DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second}
			ch, err := tr.In(m, addr)
			if err != nil {
				return nil, fmt.Errorf("AXFR %s from %s: %w", zone, addr, err)
			}
			var rrs []dns.RR
			for env := range ch {
				if env.Error != nil {
					return nil, fmt.Errorf("AXFR %s from %s: %w", zone, addr, env.Error)
				}
				rrs = append(rrs, env.RR...)
			}
			return normalize(rrs), nil
		},
		add: func(ctx context.Context, rrs []dns.RR) error {
			return update(ctx, func(m *dns.Msg) { m.Insert(rrs) })
		},
		remove: func(ctx context.Context, rrs []dns.RR) error {
			return update(ctx, func(m *dns.Msg) { m.Remove(rrs) })
		},
	}
	return srv, env
}

// pdnsServer describes the PowerDNS of scripts/dns-servers.sh: provider
// powerdns with the API token read from api_token_file, the zone explicit.
func pdnsServer(t *testing.T) (*integrationServer, map[string]string) {
	env := requireEnv(t, pdnsSkip, "DCVD_TEST_PDNS_ADDR", "DCVD_TEST_PDNS_API_URL",
		"DCVD_TEST_PDNS_API_KEY", "DCVD_TEST_PDNS_ZONE")
	addr, zone := env["DCVD_TEST_PDNS_ADDR"], dns.Fqdn(strings.ToLower(env["DCVD_TEST_PDNS_ZONE"]))
	apiURL := strings.TrimSuffix(env["DCVD_TEST_PDNS_API_URL"], "/")
	zoneURL := apiURL + "/api/v1/servers/localhost/zones/" + zone
	key := env["DCVD_TEST_PDNS_API_KEY"]
	tokenFile := filepath.Join(t.TempDir(), "pdns-api-token")
	if err := os.WriteFile(tokenFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	call := func(ctx context.Context, method string, body any) ([]byte, error) {
		var rd io.Reader
		if body != nil {
			b, err := json.Marshal(body)
			if err != nil {
				return nil, err
			}
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(ctx, method, zoneURL, rd)
		if err != nil {
			return nil, err
		}
		req.Header.Set("X-API-Key", key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, zoneURL, err)
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, zoneURL, err)
		}
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("%s %s: %s: %s", method, zoneURL, resp.Status, out)
		}
		return out, nil
	}
	type apiRecord struct {
		Content  string `json:"content"`
		Disabled bool   `json:"disabled"`
	}
	type rrset struct {
		Name       string      `json:"name"`
		Type       string      `json:"type"`
		TTL        uint32      `json:"ttl,omitempty"`
		ChangeType string      `json:"changetype,omitempty"`
		Records    []apiRecord `json:"records"`
	}
	patch := func(ctx context.Context, rrs []dns.RR, changeType string) error {
		var sets []rrset
		for _, rr := range rrs {
			h := rr.Header()
			s := rrset{Name: h.Name, Type: dns.TypeToString[h.Rrtype], TTL: h.Ttl, ChangeType: changeType, Records: []apiRecord{}}
			if changeType == "REPLACE" {
				s.Records = append(s.Records, apiRecord{Content: strings.TrimPrefix(rr.String(), h.String())})
			}
			sets = append(sets, s)
		}
		_, err := call(ctx, http.MethodPatch, map[string]any{"rrsets": sets})
		return err
	}
	srv := &integrationServer{
		addr: addr,
		zone: zone,
		section: map[string]any{
			"provider":             "powerdns",
			"server_url":           apiURL,
			"api_token_file":       tokenFile,
			"zone":                 strings.TrimSuffix(zone, "."),
			"ttl":                  "60s",
			"propagation_timeout":  "30s",
			"propagation_interval": "100ms",
		},
		configure: func(d *providers.DNS) {
			// Set on the DNS rather than in the section, as a caller may.
			d.Propagation.Nameservers = []string{addr}
		},
		snapshot: func(ctx context.Context) ([]string, error) {
			body, err := call(ctx, http.MethodGet, nil)
			if err != nil {
				return nil, err
			}
			var z struct {
				RRsets []rrset `json:"rrsets"`
			}
			if err := json.Unmarshal(body, &z); err != nil {
				return nil, fmt.Errorf("decode zone %s: %w", zone, err)
			}
			var rrs []dns.RR
			var disabled []string
			for _, s := range z.RRsets {
				for _, r := range s.Records {
					rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", s.Name, s.TTL, s.Type, r.Content))
					if err != nil {
						return nil, fmt.Errorf("record %s %s %q from the API: %w", s.Name, s.Type, r.Content, err)
					}
					if r.Disabled {
						disabled = append(disabled, "disabled "+strings.ToLower(rr.String()))
						continue
					}
					rrs = append(rrs, rr)
				}
			}
			out := append(normalize(rrs), disabled...)
			slices.Sort(out)
			return out, nil
		},
		add: func(ctx context.Context, rrs []dns.RR) error {
			return patch(ctx, rrs, "REPLACE")
		},
		remove: func(ctx context.Context, rrs []dns.RR) error {
			return patch(ctx, rrs, "DELETE")
		},
	}
	return srv, env
}

// normalize turns records into sorted, de-duplicated lines; the SOA serial
// is zeroed and AXFR's closing SOA drops out as a duplicate.
func normalize(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if soa, ok := rr.(*dns.SOA); ok {
			c := *soa
			c.Serial = 0
			rr = &c
		}
		out = append(out, strings.ToLower(rr.String()))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// zoneNow is srv's zone; what names it in the failure when it cannot be
// read.
func zoneNow(t *testing.T, ctx context.Context, srv *integrationServer, what string) []string {
	t.Helper()
	zone, err := srv.snapshot(ctx)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return zone
}

// wantZoneUnchanged checks that srv's zone is before, as zoneNow(what)
// reads it; changed leads the failure.
func wantZoneUnchanged(t *testing.T, ctx context.Context, srv *integrationServer, before []string, what, changed string) {
	t.Helper()
	if gone, extra := diff(before, zoneNow(t, ctx, srv, what)); len(gone) > 0 || len(extra) > 0 {
		t.Errorf("%s:\n missing %q\n extra %q", changed, gone, extra)
	}
}

// diff returns the lines only in a and only in b.
func diff(a, b []string) (onlyA, onlyB []string) {
	for _, s := range a {
		if !slices.Contains(b, s) {
			onlyA = append(onlyA, s)
		}
	}
	for _, s := range b {
		if !slices.Contains(a, s) {
			onlyB = append(onlyB, s)
		}
	}
	return onlyA, onlyB
}

func randomLabel(t *testing.T) string {
	t.Helper()
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func mustRR(t *testing.T, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatalf("record %q: %v", s, err)
	}
	return rr
}

// queryCNAME asks the server itself (no recursion) for the CNAME at name.
func queryCNAME(ctx context.Context, addr, name string) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeCNAME)
	m.RecursionDesired = false
	c := &dns.Client{Timeout: 3 * time.Second}
	resp, _, err := c.ExchangeContext(ctx, m, addr)
	if err == nil && resp.Truncated {
		c.Net = "tcp"
		resp, _, err = c.ExchangeContext(ctx, m, addr)
	}
	if err != nil {
		return nil, fmt.Errorf("CNAME %s at %s: %w", name, addr, err)
	}
	return resp, nil
}

func wantCNAME(t *testing.T, ctx context.Context, addr, name, target string) {
	t.Helper()
	resp, err := queryCNAME(ctx, addr, name)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rcode != dns.RcodeSuccess || !resp.Authoritative {
		t.Fatalf("CNAME %s at %s: rcode %s, authoritative %v; want an authoritative answer",
			name, addr, dns.RcodeToString[resp.Rcode], resp.Authoritative)
	}
	var got []string
	for _, rr := range resp.Answer {
		if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, dns.Fqdn(name)) {
			got = append(got, strings.ToLower(c.Target))
		}
	}
	if len(got) != 1 || got[0] != dns.Fqdn(target) {
		t.Fatalf("CNAME %s at %s = %v, want [%s]", name, addr, got, dns.Fqdn(target))
	}
}

func wantNXDOMAIN(t *testing.T, ctx context.Context, addr, name string) {
	t.Helper()
	resp, err := queryCNAME(ctx, addr, name)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rcode != dns.RcodeNameError {
		t.Fatalf("CNAME %s at %s: rcode %s with answer %v, want NXDOMAIN", name, addr, dns.RcodeToString[resp.Rcode], resp.Answer)
	}
}

// unrelatedRecords are records near the DCV names that dcvd must never
// touch: an address, another issuer's DCV CNAME, and a TXT at a DCV-style
// name (publishing a CNAME there would delete it).
func unrelatedRecords(t *testing.T, zone, label string) (rrs []dns.RR, txtName string) {
	txtName = "_txt" + label + "." + zone
	return []dns.RR{
		mustRR(t, fmt.Sprintf("keep-%s.%s 300 IN A 127.0.0.9", label, zone)),
		mustRR(t, fmt.Sprintf("_other%s.%s 300 IN CNAME other-%s.dcv.example.net.", label, zone, label)),
		mustRR(t, fmt.Sprintf(`%s 300 IN TXT "placed by the dcvd integration test"`, txtName)),
	}, txtName
}

// runIntegration publishes DCV CNAMEs through the provider, sees them on the
// server, checks propagation, republishes (no change), cleans up, and checks
// that the zone is record for record what it was.
func runIntegration(t *testing.T, srv *integrationServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	label := randomLabel(t)
	zoneName := strings.TrimSuffix(srv.zone, ".")

	unrelated, txtName := unrelatedRecords(t, srv.zone, label)
	if err := srv.add(ctx, unrelated); err != nil {
		t.Fatalf("add unrelated records: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.remove(ctx, unrelated); err != nil {
			t.Errorf("remove unrelated records: %v", err)
		}
	})
	before := zoneNow(t, ctx, srv, "zone before")

	d, warnings, err := providers.New("it", srv.section, providers.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("New warned %q; the secret comes from the environment or a file", warnings)
	}
	if srv.configure != nil {
		srv.configure(d)
	}

	nameA := "_dcv" + label + "a." + zoneName
	nameB := "_dcv" + label + "b.sub" + label + "." + zoneName
	targetA := "a" + label + ".dcv-target.example"
	targetB := "b" + label + ".dcv-target.example"
	recs, err := d.Plan(ctx, []reseller.CNAMEInstruction{
		{Name: nameA, Target: targetA}, // example.com
		{Name: nameA, Target: targetA}, // *.example.com: the same record
		{Name: nameB, Target: targetB},
	})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	want := []providers.Record{
		{Provider: "it", Zone: srv.zone, Name: nameA, Target: targetA, TTL: time.Minute},
		{Provider: "it", Zone: srv.zone, Name: nameB, Target: targetB, TTL: time.Minute},
	}
	if !slices.Equal(recs, want) {
		t.Fatalf("Plan = %+v\nwant %+v", recs, want)
	}
	wantNXDOMAIN(t, ctx, srv.addr, nameA)

	rep, err := d.Publish(ctx, recs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if len(rep.Set) != 2 || len(rep.Unchanged) != 0 || rep.Calls != 1 {
		t.Errorf("first Publish: set %d, unchanged %d, calls %d; want 2, 0, 1 (one batch for the zone)",
			len(rep.Set), len(rep.Unchanged), rep.Calls)
	}
	wantCNAME(t, ctx, srv.addr, nameA, targetA)
	wantCNAME(t, ctx, srv.addr, nameB, targetB)

	published := zoneNow(t, ctx, srv, "zone after Publish")
	removed, added := diff(before, published)
	wantAdded := normalize([]dns.RR{
		mustRR(t, fmt.Sprintf("%s. 60 IN CNAME %s.", nameA, targetA)),
		mustRR(t, fmt.Sprintf("%s. 60 IN CNAME %s.", nameB, targetB)),
	})
	if len(removed) > 0 || !slices.Equal(added, wantAdded) {
		t.Errorf("Publish changed the zone by\n removing %q\n adding %q\nwant only %q added", removed, added, wantAdded)
	}

	if err := d.WaitVisible(ctx, recs); err != nil {
		t.Fatalf("WaitVisible: %v", err)
	}

	rep, err = d.Publish(ctx, recs)
	if err != nil {
		t.Fatalf("second Publish: %v", err)
	}
	if len(rep.Set) != 0 || len(rep.Unchanged) != 2 || rep.Calls != 0 {
		t.Errorf("second Publish: set %d, unchanged %d, calls %d; want 0, 2, 0 (nothing to change)",
			len(rep.Set), len(rep.Unchanged), rep.Calls)
	}

	if err := d.Cleanup(ctx, recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	wantNXDOMAIN(t, ctx, srv.addr, nameA)
	wantNXDOMAIN(t, ctx, srv.addr, nameB)
	wantZoneUnchanged(t, ctx, srv, before, "zone after Cleanup", "Cleanup left the zone changed")
	if err := d.Cleanup(ctx, recs); err != nil {
		t.Errorf("second Cleanup (records already gone): %v", err)
	}

	// A DCV name that holds another record type is refused, not replaced.
	txtRecs, err := d.Plan(ctx, []reseller.CNAMEInstruction{{Name: strings.TrimSuffix(txtName, "."), Target: targetA}})
	if err != nil {
		t.Fatalf("Plan %s: %v", txtName, err)
	}
	if _, err := d.Publish(ctx, txtRecs); err == nil {
		t.Errorf("Publish over the TXT at %s succeeded; want a refusal", txtName)
	} else {
		t.Logf("Publish over the TXT refused: %v", err)
	}
	wantZoneUnchanged(t, ctx, srv, before, "zone at the end", "refused Publish changed the zone")
}

func TestIntegrationBIND(t *testing.T) {
	srv, _ := bindServer(t)
	runIntegration(t, srv)
}

func TestIntegrationPowerDNS(t *testing.T) {
	srv, _ := pdnsServer(t)
	runIntegration(t, srv)
}

// runBadCredentials checks that a rejected credential fails Publish, keeps
// the secret out of the error, and changes nothing.
func runBadCredentials(t *testing.T, srv *integrationServer, opts providers.Options, secret string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := zoneNow(t, ctx, srv, "zone before")
	d, _, err := providers.New("bad", srv.section, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if srv.configure != nil {
		srv.configure(d)
	}
	label := randomLabel(t)
	name := "_dcv" + label + "." + strings.TrimSuffix(srv.zone, ".")
	recs, err := d.Plan(ctx, []reseller.CNAMEInstruction{{Name: name, Target: label + ".dcv-target.example"}})
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	_, err = d.Publish(ctx, recs)
	if err == nil {
		t.Fatal("Publish with a wrong credential succeeded")
	}
	t.Logf("Publish refused: %v", err)
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error shows the secret: %v", err)
	}
	if !strings.Contains(err.Error(), "dns bad") {
		t.Errorf("error %q does not name the section", err)
	}
	wantNXDOMAIN(t, ctx, srv.addr, name)
	wantZoneUnchanged(t, ctx, srv, before, "zone after", "failed Publish changed the zone")
}

func TestIntegrationBINDWrongKey(t *testing.T) {
	srv, env := bindServer(t)
	wrong := make([]byte, 32)
	if _, err := rand.Read(wrong); err != nil {
		t.Fatal(err)
	}
	secret := hex.EncodeToString(wrong) // valid base64 too, and not the key
	lookup := func(name string) (string, bool) {
		if name == "DCVD_TEST_BIND_TSIG_SECRET" {
			return secret, true
		}
		return env[name], env[name] != ""
	}
	runBadCredentials(t, srv, providers.Options{LookupEnv: lookup}, secret)
}

func TestIntegrationPowerDNSWrongToken(t *testing.T) {
	srv, _ := pdnsServer(t)
	secret := "wrong-" + randomLabel(t)
	if err := os.WriteFile(srv.section["api_token_file"].(string), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	runBadCredentials(t, srv, providers.Options{}, secret)
}
