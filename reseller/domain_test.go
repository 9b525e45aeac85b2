package reseller

import (
	"errors"
	"strings"
	"testing"
)

// joined returns the errors joined in err, or err itself.
func joined(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestNormalizeDomain(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	tests := []struct {
		in      string
		want    string
		wantErr string // substring of the error; "" means accepted
	}{
		{in: "example.com", want: "example.com"},
		{in: "  Example.COM. ", want: "example.com"},
		{in: "*.Example.com", want: "*.example.com"},
		{in: "*.example.com.", want: "*.example.com"},
		{in: "sub.example.co.uk", want: "sub.example.co.uk"},
		{in: "Bücher.example", want: "xn--bcher-kva.example"},
		{in: "*.bücher.example", want: "*.xn--bcher-kva.example"},
		{in: "例子.中国", want: "xn--fsqu00a.xn--fiqs8s"},
		{in: "ＥＸＡＭＰＬＥ。com", want: "example.com"},
		{in: "XN--BCHER-KVA.example", want: "xn--bcher-kva.example"},
		{in: "r3--sn-abc.googlevideo.com", want: "r3--sn-abc.googlevideo.com"},
		{in: long63 + ".com", want: long63 + ".com"},
		{in: "1.2.3.4", want: "1.2.3.4"},
		{in: "2001:DB8:0:0::1", want: "2001:db8::1"},
		{in: "[2001:db8::1]", want: "2001:db8::1"},
		{in: "::ffff:192.0.2.1", want: "192.0.2.1"},

		{in: "", wantErr: "empty"},
		{in: "   ", wantErr: "empty"},
		{in: "com", wantErr: "single label"},
		{in: "localhost", wantErr: "single label"},
		{in: "co.uk", wantErr: "public suffix"},
		{in: "github.io", wantErr: "public suffix"},
		{in: "*.co.uk", wantErr: "public suffix"},
		{in: "*.com", wantErr: "single label"},
		{in: "ex ample.com", wantErr: "contains ' '"},
		{in: "a..b.com", wantErr: "empty label"},
		{in: "example.com..", wantErr: "empty label"},
		{in: ".example.com", wantErr: "empty label"},
		{in: "a/b.example.com", wantErr: "contains '/'"},
		{in: "a_b.example.com", wantErr: "contains '_'"},
		{in: "exa%6dple.com", wantErr: "contains '%'"},
		{in: "example.com:443", wantErr: "contains ':'"},
		{in: "*.*.example.com", wantErr: `"*" is allowed only`},
		{in: "www.*.example.com", wantErr: `"*" is allowed only`},
		{in: "*example.com", wantErr: `"*" is allowed only`},
		{in: "*", wantErr: `"*" is allowed only`},
		{in: "*.", wantErr: `"*" is allowed only`},
		{in: "*..", wantErr: "empty"},
		{in: "-a.example.com", wantErr: "hyphen"},
		{in: "a-.example.com", wantErr: "hyphen"},
		{in: long63 + "a.com", wantErr: "longer than 63"},
		{in: strings.Repeat(long63+".", 4) + "com", wantErr: "longer than 253"},
		{in: "*." + strings.Repeat("a.", 125) + "com", wantErr: "longer than 253"},
		{in: "1.2.3.4.", wantErr: "all-numeric"},
		{in: "1.2.3.4.5", wantErr: "all-numeric"},
		{in: "01.2.3.4", wantErr: "all-numeric"},
		{in: "fe80::1%eth0", wantErr: "contains"},
		{in: "[1.2.3.4]", wantErr: "contains '['"},
		{in: "xn--zz.example", wantErr: "internationalized"},
		{in: "ex\x00ample.com", wantErr: "contains"},
		{in: "bad\xff.com", wantErr: "UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeDomain(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NormalizeDomain(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeDomain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			again, err := NormalizeDomain(got)
			if err != nil || again != got {
				t.Fatalf("not idempotent: NormalizeDomain(%q) = %q, %v", got, again, err)
			}
		})
	}
}

func TestNamePredicates(t *testing.T) {
	tests := []struct {
		name     string
		wildcard bool
		base     string
		ip       bool
	}{
		{"example.com", false, "example.com", false},
		{"*.example.com", true, "example.com", false},
		{"a.*.example.com", false, "a.*.example.com", false},
		{"192.0.2.1", false, "192.0.2.1", true},
		{"2001:db8::1", false, "2001:db8::1", true},
		{"[2001:db8::1]", false, "[2001:db8::1]", true},
		{"fe80::1%eth0", false, "fe80::1%eth0", false},
		{"1.2.3", false, "1.2.3", false},
	}
	for _, tt := range tests {
		if got := IsWildcard(tt.name); got != tt.wildcard {
			t.Errorf("IsWildcard(%q) = %v", tt.name, got)
		}
		if got := BaseName(tt.name); got != tt.base {
			t.Errorf("BaseName(%q) = %q", tt.name, got)
		}
		if got := IsIP(tt.name); got != tt.ip {
			t.Errorf("IsIP(%q) = %v", tt.name, got)
		}
	}
	for m, want := range map[Method]bool{MethodDNS: false, MethodHTTP: false, MethodHTTPS: false, "admin@example.com": true, "": false} {
		if got := IsEmailMethod(m); got != want {
			t.Errorf("IsEmailMethod(%q) = %v", m, got)
		}
	}
}

func TestApproverLocalPartsIsNotShared(t *testing.T) {
	p := ApproverLocalParts()
	if len(p) != 5 {
		t.Fatalf("ApproverLocalParts() = %v", p)
	}
	p[0] = "root"
	if ApproverLocalParts()[0] != "admin" {
		t.Fatal("changing the returned slice changed the rule")
	}
	if err := CheckApprover("example.com", "root@example.com"); err == nil {
		t.Fatal("root@ accepted after a caller changed its copy of the list")
	}
}

func TestCheckApprover(t *testing.T) {
	tests := []struct {
		name, address string
		wantErr       string
	}{
		{name: "sub.example4.com", address: "admin@example4.com"},
		{name: "sub.example4.com", address: "Hostmaster@SUB.Example4.com"},
		{name: "sub.example4.com", address: " webmaster@sub.example4.com. "},
		{name: "*.example.com", address: "postmaster@example.com"},
		{name: "a.b.example.co.uk", address: "administrator@b.example.co.uk"},
		{name: "a.b.example.co.uk", address: "administrator@example.co.uk"},
		{name: "bücher.example", address: "admin@xn--bcher-kva.example"},
		{name: "xn--bcher-kva.example", address: "admin@Bücher.example"},

		{name: "example.com", address: "root@example.com", wantErr: "mailbox"},
		{name: "example.com", address: "info@example.com", wantErr: "mailbox"},
		{name: "example.com", address: "admin+x@example.com", wantErr: "mailbox"},
		{name: "example.com", address: "admin@other.com", wantErr: "neither"},
		{name: "example.com", address: "admin@example.com.evil.com", wantErr: "neither"},
		{name: "example.com", address: "admin@com", wantErr: "single label"},
		{name: "example.co.uk", address: "admin@co.uk", wantErr: "public suffix"},
		{name: "sub.example4.com", address: "admin@email.example4.com", wantErr: "neither"},
		{name: "sub.example4.com", address: "admin@a.sub.example4.com", wantErr: "neither"},
		{name: "example.com", address: "adminexample.com", wantErr: "exactly one @"},
		{name: "example.com", address: "admin@@example.com", wantErr: "exactly one @"},
		{name: "example.com", address: "admin@*.example.com", wantErr: "plain domain"},
		{name: "example.com", address: "admin@192.0.2.1", wantErr: "plain domain"},
		{name: "example.com", address: "", wantErr: "exactly one @"},
		{name: "192.0.2.1", address: "admin@192.0.2.1", wantErr: "IP address"},
		{name: "co.uk", address: "admin@co.uk", wantErr: "public suffix"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+tt.address, func(t *testing.T) {
			err := CheckApprover(tt.name, tt.address)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckApprover(%q, %q) = %v", tt.name, tt.address, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("CheckApprover(%q, %q) = %v; want error containing %q", tt.name, tt.address, err, tt.wantErr)
			}
		})
	}
}

// seedRequest is the domain_dcv of the documentation's reissue request.
func seedRequest() map[string]Method {
	return map[string]Method{
		"*.example.com":    "dns",
		"example2.com":     "http",
		"example3.com":     "https",
		"sub.example4.com": "admin@example4.com",
		"*.example5.com":   "dns",
	}
}

func TestValidateDomainDCVAccepts(t *testing.T) {
	for _, m := range []map[string]Method{
		seedRequest(),
		{"192.0.2.1": "http"},
		{"2001:db8::1": "https"},
		{"*.example.com": "hostmaster@example.com"},
		{"Bücher.example": "dns"},
		{"example.com": "dns", "www.example.com": "http"},
	} {
		if err := ValidateDomainDCV(m); err != nil {
			t.Errorf("ValidateDomainDCV(%v) = %v", m, err)
		}
	}
}

func TestValidateDomainDCVRefuses(t *testing.T) {
	tests := []struct {
		name    string
		m       map[string]Method
		wantErr string
	}{
		{"nil", nil, "empty"},
		{"empty", map[string]Method{}, "empty"},
		{"wildcard http", map[string]Method{"*.example.com": "http"}, `domain "*.example.com": a wildcard cannot be validated by http`},
		{"wildcard https", map[string]Method{"*.example.com": "https"}, `domain "*.example.com": a wildcard cannot be validated by https`},
		{"IP dns", map[string]Method{"192.0.2.1": "dns"}, `domain "192.0.2.1": an IP address cannot be validated by dns`},
		{"IP e-mail", map[string]Method{"192.0.2.1": "admin@192.0.2.1"}, `domain "192.0.2.1": an IP address cannot be validated by e-mail`},
		{"double wildcard", map[string]Method{"*.*.example.com": "dns"}, `domain "*.*.example.com": "*" is allowed only`},
		{"public suffix", map[string]Method{"co.uk": "dns"}, `domain "co.uk":`},
		{"upper-case method", map[string]Method{"example.com": "DNS"}, `domain "example.com": method "DNS"`},
		{"unknown method", map[string]Method{"example.com": "ftp"}, `domain "example.com": method "ftp"`},
		{"empty method", map[string]Method{"example.com": ""}, `domain "example.com": method ""`},
		{"whois approver", map[string]Method{"example.com": "owner@example.com"}, `domain "example.com": approver "owner@example.com": mailbox`},
		{"approver elsewhere", map[string]Method{"example.com": "admin@example.net"}, `domain "example.com": approver "admin@example.net"`},
		{"duplicate", map[string]Method{"example.com.": "dns", "EXAMPLE.com": "http"}, `domain "example.com": listed 2 times ("EXAMPLE.com", "example.com.")`},
		{"duplicate IDN", map[string]Method{"bücher.example": "dns", "xn--bcher-kva.example": "dns"}, `domain "xn--bcher-kva.example": listed 2 times`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateDomainDCV(tt.m)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ValidateDomainDCV(%v) = %v; want error containing %q", tt.m, err, tt.wantErr)
			}
		})
	}
}

func TestValidateDomainDCVReportsEverythingSorted(t *testing.T) {
	m := map[string]Method{
		"z.example.com":   "ftp",
		"*.example.com":   "http",
		"192.0.2.1":       "dns",
		"ok.example.com":  "dns",
		"a_b.example.com": "dns",
		"Dup.example.org": "dns",
		"dup.example.org": "https",
	}
	var first string
	for i := 0; i < 20; i++ { // map order must not leak into the message
		err := ValidateDomainDCV(m)
		if err == nil {
			t.Fatal("accepted")
		}
		if i == 0 {
			first = err.Error()
		} else if err.Error() != first {
			t.Fatalf("message changed between runs:\n%s\n---\n%s", first, err)
		}
	}
	errs := joined(ValidateDomainDCV(m))
	wantDomains := []string{"*.example.com", "192.0.2.1", "a_b.example.com", "dup.example.org", "z.example.com"}
	if len(errs) != len(wantDomains) {
		t.Fatalf("got %d problems, want %d:\n%s", len(errs), len(wantDomains), first)
	}
	for i, e := range errs {
		var de *DCVError
		if !errors.As(e, &de) {
			t.Fatalf("problem %d is %T, not *DCVError", i, e)
		}
		if de.Domain != wantDomains[i] {
			t.Errorf("problem %d is about %q, want %q", i, de.Domain, wantDomains[i])
		}
	}
	if strings.Contains(first, "ok.example.com") {
		t.Errorf("a valid name was reported: %s", first)
	}
}
