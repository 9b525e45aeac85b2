package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// queryCNAME asks the DNS server at addr for name's CNAME and returns the
// targets it answers.
func queryCNAME(ctx context.Context, t *testing.T, addr, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeCNAME)
	c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
	resp, _, err := c.ExchangeContext(ctx, m, addr)
	if err != nil {
		t.Fatalf("query %s CNAME at %s: %v", name, addr, err)
	}
	if resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError {
		t.Fatalf("query %s CNAME at %s: %s", name, addr, dns.RcodeToString[resp.Rcode])
	}
	var out []string
	for _, rr := range resp.Answer {
		if c, ok := rr.(*dns.CNAME); ok {
			out = append(out, c.Target)
		}
	}
	return out
}

// transferZone returns every record of BIND's zone, by a TSIG-signed AXFR.
func transferZone(t *testing.T, env map[string]string) []dns.RR {
	t.Helper()
	addr, zone := env["DCVD_TEST_BIND_ADDR"], dns.Fqdn(strings.ToLower(env["DCVD_TEST_BIND_ZONE"]))
	keyName, alg := dns.Fqdn(env["DCVD_TEST_BIND_TSIG_NAME"]), dns.Fqdn(env["DCVD_TEST_BIND_TSIG_ALG"])
	m := new(dns.Msg)
	m.SetAxfr(zone)
	m.SetTsig(keyName, alg, 300, time.Now().Unix())
	tr := &dns.Transfer{TsigSecret: map[string]string{keyName: env["DCVD_TEST_BIND_TSIG_SECRET"]},
		DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second}
	ch, err := tr.In(m, addr)
	if err != nil {
		t.Fatalf("AXFR %s from %s: %v", zone, addr, err)
	}
	var rrs []dns.RR
	for e := range ch {
		if e.Error != nil {
			t.Fatalf("AXFR %s from %s: %v", zone, addr, e.Error)
		}
		rrs = append(rrs, e.RR...)
	}
	if len(rrs) == 0 {
		t.Fatalf("AXFR %s from %s returned nothing", zone, addr)
	}
	return rrs
}

// randomLabel is 8 random lower-case hex digits.
func randomLabel(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
