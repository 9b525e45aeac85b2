package sandbox

import (
	"reflect"
	"strings"
	"testing"
)

func TestRulesNormalizeName(t *testing.T) {
	tests := []struct {
		in, want string
		ip, wild bool
		err      string
	}{
		{in: "Example.COM", want: "example.com"},
		{in: "*.Example.com", want: "*.example.com", wild: true},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "192.0.2.1", want: "192.0.2.1", ip: true},
		{in: "2001:DB8::1", want: "2001:db8::1", ip: true},
		{in: "::ffff:192.0.2.1", want: "192.0.2.1", ip: true},
		{in: "", err: "empty"},
		{in: " example.com", err: "spaces"},
		{in: "example.com.", err: "trailing dot"},
		{in: "fe80::1%eth0", err: "zone"},
		{in: "com", err: "fully qualified"},
		{in: "co.uk", err: "public suffix"},
		{in: "*.co.uk", err: "public suffix"},
		{in: "github.io", err: "public suffix"},
		{in: "*.*.example.com", err: "leftmost"},
		{in: "a*.example.com", err: "leftmost"},
		{in: "-a.example.com", err: "hyphen"},
		{in: "a..example.com", err: "empty label"},
		{in: "bücher.example", err: "not ASCII"},
		{in: "example.123", err: "numeric"},
		{in: strings.Repeat("a", 64) + ".example.com", err: "63"},
		{in: strings.Repeat("abcdefghi.", 26) + "com", err: "253"},
	}
	for _, tt := range tests {
		n, err := normalizeName(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("normalizeName(%q) = %+v, %v; want an error with %q", tt.in, n, err, tt.err)
			}
			continue
		}
		if err != nil || n.name != tt.want || n.ip != tt.ip || n.wildcard != tt.wild {
			t.Errorf("normalizeName(%q) = %+v, %v; want %s ip=%v wildcard=%v", tt.in, n, err, tt.want, tt.ip, tt.wild)
		}
	}
}

func TestRulesSplitAndApprovers(t *testing.T) {
	tests := []struct {
		name, sub, top  string
		approverDomains []string
	}{
		{"example.com", "", "example.com", []string{"example.com"}},
		{"*.example.com", "*", "example.com", []string{"example.com"}},
		{"a.b.example.co.uk", "a.b", "example.co.uk", []string{"a.b.example.co.uk", "b.example.co.uk", "example.co.uk"}},
		{"*.shop.example.com", "*.shop", "example.com", []string{"shop.example.com", "example.com"}},
		{"192.0.2.1", "", "192.0.2.1", nil},
	}
	for _, tt := range tests {
		n, err := normalizeName(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		sub, top := splitDomain(n)
		if sub != tt.sub || top != tt.top {
			t.Errorf("splitDomain(%s) = %q, %q; want %q, %q", tt.name, sub, top, tt.sub, tt.top)
		}
		if got := approverDomains(n); !reflect.DeepEqual(got, tt.approverDomains) {
			t.Errorf("approverDomains(%s) = %v, want %v", tt.name, got, tt.approverDomains)
		}
		if got := approverAddresses(n); len(got) != 5*len(tt.approverDomains) {
			t.Errorf("approverAddresses(%s) = %v", tt.name, got)
		}
	}
}

func TestRulesCheckMethod(t *testing.T) {
	tests := []struct {
		name, method, want, err string
	}{
		{"example.com", "DNS", "dns", ""},
		{"example.com", "http", "http", ""},
		{"example.com", " https ", "https", ""},
		{"example.com", "Admin@Example.com", "admin@example.com", ""},
		{"a.example.com", "postmaster@a.example.com", "postmaster@a.example.com", ""},
		{"*.example.com", "dns", "dns", ""},
		{"*.example.com", "http", "", "wildcard"},
		{"192.0.2.1", "https", "https", ""},
		{"192.0.2.1", "dns", "", "IP address"},
		{"192.0.2.1", "admin@example.com", "", "IP address"},
		{"a.example.com", "root@example.com", "", "WHOIS"},
		{"a.example.com", "admin@b.example.com", "", "must be at"},
		{"a.example.com", "admin@@example.com", "", "not an e-mail"},
		{"a.example.com", "", "", "no validation method"},
		{"a.example.com", "txt", "", "unknown"},
	}
	for _, tt := range tests {
		n, err := normalizeName(tt.name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := checkMethod(n, tt.method)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("checkMethod(%s, %q) = %q, %v; want an error with %q", tt.name, tt.method, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("checkMethod(%s, %q) = %q, %v; want %q", tt.name, tt.method, got, err, tt.want)
		}
	}
}

func TestRulesCommonNameFirst(t *testing.T) {
	fe := fieldErrors{}
	p := Product{ID: "p", MaxDomains: 5, Wildcard: true}
	got := checkDomainDCV(map[string]string{"b.example.com": "dns", "a.example.com": "dns", "www.example.com": "http"}, p, 5, "www.example.com", fe)
	if len(fe) != 0 || !reflect.DeepEqual(got.list(), []string{"www.example.com", "a.example.com", "b.example.com"}) {
		t.Errorf("order %v, errors %v", got.list(), fe)
	}
	checkDomainDCV(map[string]string{"A.example.com": "dns", "a.example.com": "dns"}, p, 5, "", fe)
	if !strings.Contains(strings.Join(fe["domain_dcv"], ";"), "twice") {
		t.Errorf("a name given twice in two cases: %v", fe)
	}
}
