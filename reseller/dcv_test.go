package reseller

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// Values of the documentation's reissue response example.
const (
	seedHostname = "_310dcbbf4cce62f762a2aaa148d556bd"
	seedTarget   = "698d51a19d8a121ce581499d7b701668.bcbe3365e6ac95ea2c0343a2395834dd.20221122.comodoca.com"
	seedFileName = "310dcbbf4cce62f762a2aaa148d556bd.txt"
	seedContent  = "698d51a19d8a121ce581499d7b70166820221122\n20221122\ncomodoca.com"
)

func dnsEntry(domain, fullname string) DCVEntry {
	return DCVEntry{
		Domain: domain, Type: "dns", Subdomain: "*", TopLevelDomain: "example.com", Status: "valid",
		DNS: &DNSRecord{Type: "cname", Hostname: seedHostname, Fullname: fullname, Value: seedTarget},
	}
}

// httpEntry is typed "http" whatever the scheme, as in the documentation.
func httpEntry(domain, scheme string) DCVEntry {
	return DCVEntry{
		Domain: domain, Type: "http", TopLevelDomain: domain, Status: "pending",
		HTTP: &HTTPFile{
			Filename:     seedFileName,
			Filecontent:  seedContent,
			Filepath:     ".well-known/pki-validation/",
			Filefullpath: ".well-known/pki-validation/" + seedFileName,
			URL:          scheme + "://" + fileURLHost(domain) + "/.well-known/pki-validation/" + seedFileName,
		},
	}
}

func emailEntry(domain, address string) DCVEntry {
	return DCVEntry{
		Domain: domain, Type: "email", Subdomain: "email", TopLevelDomain: "example4.com", Status: "pending",
		Email: &EmailApprover{Address: address, Available: []string{"admin@email.example4.com", "root@evil.example"}},
	}
}

// seedEntries are the dcv entries of the documentation's reissue response.
func seedEntries() []DCVEntry {
	return []DCVEntry{
		dnsEntry("*.example.com", seedHostname+".example.com"),
		httpEntry("example2.com", "http"),
		httpEntry("example3.com", "https"),
		emailEntry("sub.example4.com", "admin@example4.com"),
		dnsEntry("*.example5.com", seedHostname+".example.com"),
	}
}

func checkSeedPlan(t *testing.T, plan *Plan) {
	t.Helper()
	want := []Instruction{
		{Domain: "*.example.com", Method: "dns", Status: "valid",
			CNAME: &CNAMEInstruction{Name: seedHostname + ".example.com", Target: seedTarget}},
		{Domain: "*.example5.com", Method: "dns", Status: "valid",
			CNAME: &CNAMEInstruction{Name: seedHostname + ".example5.com", Target: seedTarget}},
		{Domain: "example2.com", Method: "http", Status: "pending",
			File: &FileInstruction{Scheme: "http", Host: "example2.com", Path: "/.well-known/pki-validation/" + seedFileName,
				FileName: seedFileName, Content: seedContent, URL: "http://example2.com/.well-known/pki-validation/" + seedFileName}},
		{Domain: "example3.com", Method: "https", Status: "pending",
			File: &FileInstruction{Scheme: "https", Host: "example3.com", Path: "/.well-known/pki-validation/" + seedFileName,
				FileName: seedFileName, Content: seedContent, URL: "https://example3.com/.well-known/pki-validation/" + seedFileName}},
		{Domain: "sub.example4.com", Method: "admin@example4.com", Status: "pending",
			Email: &EmailInstruction{Address: "admin@example4.com"}},
	}
	if len(plan.Instructions) != len(want) {
		t.Fatalf("%d instructions, want %d: %+v", len(plan.Instructions), len(want), plan.Instructions)
	}
	for i, w := range want {
		assertInstruction(t, plan.Instructions[i], w)
	}
	if len(plan.Warnings) != 1 {
		t.Fatalf("warnings = %q, want exactly one (for *.example5.com)", plan.Warnings)
	}
	w := plan.Warnings[0]
	for _, part := range []string{`"*.example5.com"`, `"` + seedHostname + `.example.com"`, `"` + seedHostname + `.example5.com"`, "dns.hostname"} {
		if !strings.Contains(w, part) {
			t.Errorf("warning %q does not mention %s", w, part)
		}
	}
}

func assertInstruction(t *testing.T, got, want Instruction) {
	t.Helper()
	if got.Domain != want.Domain || got.Method != want.Method || got.Status != want.Status {
		t.Errorf("instruction %q: got domain %q method %q status %q, want %q %q %q",
			want.Domain, got.Domain, got.Method, got.Status, want.Domain, want.Method, want.Status)
	}
	if (got.CNAME == nil) != (want.CNAME == nil) || (got.File == nil) != (want.File == nil) || (got.Email == nil) != (want.Email == nil) {
		t.Fatalf("instruction %q: got %+v, want %+v", want.Domain, got, want)
	}
	if want.CNAME != nil && *got.CNAME != *want.CNAME {
		t.Errorf("instruction %q: CNAME %+v, want %+v", want.Domain, *got.CNAME, *want.CNAME)
	}
	if want.File != nil && *got.File != *want.File {
		t.Errorf("instruction %q: file %+v, want %+v", want.Domain, *got.File, *want.File)
	}
	if want.Email != nil && *got.Email != *want.Email {
		t.Errorf("instruction %q: e-mail %+v, want %+v", want.Domain, *got.Email, *want.Email)
	}
}

func TestValidateInstructionsSeed(t *testing.T) {
	plan, err := ValidateInstructions(seedRequest(), seedEntries())
	if err != nil {
		t.Fatalf("ValidateInstructions: %v", err)
	}
	checkSeedPlan(t, plan)
}

// seedResponseData is the data object of the documentation's reissue
// response, its // comments removed.
const seedResponseData = `{
"cost": 4208.01, "service_id": "o91bZ", "caid": "358174513", "status": "pending",
"cert_pem": null, "ca_pem": null, "not_before": null, "not_after": null,
"dcv": {
"*.example.com": {"type": "dns", "subdomain": "*", "topleveldomain": "example.com", "status": "valid",
 "dns": {"type": "cname", "hostname": "_310dcbbf4cce62f762a2aaa148d556bd",
  "fullname": "_310dcbbf4cce62f762a2aaa148d556bd.example.com",
  "value": "698d51a19d8a121ce581499d7b701668.bcbe3365e6ac95ea2c0343a2395834dd.20221122.comodoca.com"}},
"example2.com": {"type": "http", "subdomain": "", "topleveldomain": "example2.com", "status": "pending",
 "http": {"filename": "310dcbbf4cce62f762a2aaa148d556bd.txt",
  "filecontent": "698d51a19d8a121ce581499d7b70166820221122\n20221122\ncomodoca.com",
  "filepath": ".well-known/pki-validation/",
  "filefullpath": ".well-known/pki-validation/310dcbbf4cce62f762a2aaa148d556bd.txt",
  "url": "http://example2.com/.well-known/pki-validation/310dcbbf4cce62f762a2aaa148d556bd.txt"}},
"example3.com": {"type": "http", "subdomain": "", "topleveldomain": "example3.com", "status": "pending",
 "http": {"filename": "310dcbbf4cce62f762a2aaa148d556bd.txt",
  "filecontent": "698d51a19d8a121ce581499d7b70166820221122\n20221122\ncomodoca.com",
  "filepath": ".well-known/pki-validation/",
  "filefullpath": ".well-known/pki-validation/310dcbbf4cce62f762a2aaa148d556bd.txt",
  "url": "https://example3.com/.well-known/pki-validation/310dcbbf4cce62f762a2aaa148d556bd.txt"}},
"sub.example4.com": {"type": "email", "subdomain": "email", "topleveldomain": "example4.com", "status": "pending",
 "email": {"address": "admin@example4.com", "available": ["admin@example4.com", "administrator@example4.com",
  "webmaster@example4.com", "postmaster@example4.com", "hostmaster@example4.com", "admin@email.example4.com",
  "administrator@sub.example4.com", "webmaster@sub.example4.com", "postmaster@sub.example4.com",
  "hostmaster@sub.example4.com"]}},
"*.example5.com": {"type": "dns", "subdomain": "*", "topleveldomain": "example.com", "status": "valid",
 "dns": {"type": "cname", "hostname": "_310dcbbf4cce62f762a2aaa148d556bd",
  "fullname": "_310dcbbf4cce62f762a2aaa148d556bd.example.com",
  "value": "698d51a19d8a121ce581499d7b701668.bcbe3365e6ac95ea2c0343a2395834dd.20221122.comodoca.com"}}
}}`

// The documentation's reply, decoded as the client decodes it, validates
// to the same plan as the hand-built entries.
func TestValidateInstructionsSeedJSON(t *testing.T) {
	var o Order
	if err := json.Unmarshal([]byte(seedResponseData), &o); err != nil {
		t.Fatalf("decode: %v", err)
	}
	plan, err := ValidateInstructions(seedRequest(), o.DCV)
	if err != nil {
		t.Fatalf("ValidateInstructions: %v", err)
	}
	checkSeedPlan(t, plan)
}

// refusalCase is one hostile or inconsistent entry. Each must be refused
// with an error naming the domain and the field.
type refusalCase struct {
	name    string
	domain  string
	method  Method
	entry   DCVEntry
	wantErr string // substring, normally `domain "<d>": <field>:`
	wantToo string // another substring, when the field alone is not specific enough
}

func httpCase(name, domain, scheme string, mutate func(*HTTPFile), wantField string) refusalCase {
	e := httpEntry(domain, scheme)
	mutate(e.HTTP)
	return refusalCase{name: name, domain: domain, method: scheme, entry: e,
		wantErr: `domain "` + domain + `": ` + wantField + ":"}
}

func dnsCase(name, domain string, r DNSRecord, wantField string) refusalCase {
	e := dnsEntry(domain, "")
	e.DNS = &r
	return refusalCase{name: name, domain: domain, method: MethodDNS, entry: e,
		wantErr: `domain "` + domain + `": ` + wantField + ":"}
}

func emailCase(name, address string, wantErr string) refusalCase {
	return refusalCase{name: name, domain: "sub.example4.com", method: "admin@example4.com",
		entry: emailEntry("sub.example4.com", address), wantErr: `domain "sub.example4.com": email.address: ` + wantErr}
}

// httpCases makes a case of each bad value: set writes it into the http
// file of domain's entry, and the refusal must name wantField.
func httpCases(prefix, domain, scheme string, bads []string, set func(f *HTTPFile, bad string), wantField string) []refusalCase {
	var cases []refusalCase
	for _, bad := range bads {
		cases = append(cases, httpCase(prefix+bad, domain, scheme, func(f *HTTPFile) { set(f, bad) }, wantField))
	}
	return cases
}

func hostileFileNames() []refusalCase {
	return httpCases("filename ", "example2.com", "http", []string{"../../etc/passwd", "a/b", `a\b`, ".hidden", "x..txt", "", "%2e%2e", "..", "-x", "a b",
		"a\x00b", "é.txt", strings.Repeat("a", 256)}, func(f *HTTPFile, bad string) {
		// Make filefullpath and url agree with the bad name, so that only
		// the file name check can catch it.
		f.Filename = bad
		f.Filefullpath = ".well-known/pki-validation/" + bad
		f.URL = "http://example2.com/.well-known/pki-validation/" + bad
	}, "http.filename")
}

func hostileFilePaths() []refusalCase {
	cases := httpCases("filepath ", "example2.com", "http", []string{"/etc/", "../", ".well-known/pki-validation/../../", "//.well-known/pki-validation/",
		`.well-known\pki-validation\`, "%2e%2e/", ".well-known/%70ki-validation/", ".well-known/pki-validation", "",
		".well-known/acme-challenge/"}, func(f *HTTPFile, bad string) { f.Filepath = bad }, "http.filepath")
	return append(cases, httpCases("filefullpath ", "example2.com", "http", []string{".well-known/pki-validation/other.txt", "/etc/passwd",
		".well-known/pki-validation/../" + seedFileName, "//.well-known/pki-validation/" + seedFileName,
		"pki-validation/" + seedFileName, seedFileName}, func(f *HTTPFile, bad string) { f.Filefullpath = bad }, "http.filefullpath")...)
}

func hostileURLs() []refusalCase {
	const p = "/.well-known/pki-validation/" + seedFileName
	var cases []refusalCase
	add := func(name, domain, scheme, url string, wantToo ...string) {
		c := httpCase("url "+name, domain, scheme, func(f *HTTPFile) { f.URL = url }, "http.url")
		c.wantToo = strings.Join(wantToo, "")
		cases = append(cases, c)
	}
	add("other host", "example2.com", "http", "http://evil.example"+p)
	add("suffix host", "example2.com", "http", "http://example2.com.evil.example"+p)
	add("parent host", "www.example2.com", "http", "http://example2.com"+p)
	add("child host", "example2.com", "http", "http://www.example2.com"+p)
	add("port", "example2.com", "http", "http://example2.com:8080"+p)
	add("https port on http", "example2.com", "http", "http://example2.com:443"+p)
	add("empty port", "example2.com", "http", "http://example2.com:"+p)
	add("userinfo", "example2.com", "http", "http://user:pw@example2.com"+p)
	add("empty userinfo", "example2.com", "http", "http://@example2.com"+p)
	add("query", "example2.com", "http", "http://example2.com"+p+"?a=b")
	add("empty query", "example2.com", "http", "http://example2.com"+p+"?")
	add("fragment", "example2.com", "http", "http://example2.com"+p+"#x")
	add("empty fragment", "example2.com", "http", "http://example2.com"+p+"#")
	add("https for http", "example2.com", "http", "https://example2.com"+p)
	add("http for https", "example3.com", "https", "http://example3.com"+p)
	add("ftp", "example2.com", "http", "ftp://example2.com"+p)
	add("encoded slash", "example2.com", "http", "http://example2.com/.well-known%2Fpki-validation/"+seedFileName, "path")
	add("encoded dots", "example2.com", "http", "http://example2.com/.well-known/pki-validation/%2e%2e/"+seedFileName)
	add("encoded letter", "example2.com", "http", "http://example2.com/.well-known/pki-validation/%33"+seedFileName[1:], "path")
	add("dot segments", "example2.com", "http", "http://example2.com/x/../.well-known/pki-validation/"+seedFileName)
	add("double slash", "example2.com", "http", "http://example2.com/"+p)
	add("other file", "example2.com", "http", "http://example2.com/.well-known/pki-validation/other.txt")
	add("encoded host", "example2.com", "http", "http://exa%6dple2.com"+p)
	add("backslash", "example2.com", "http", `http://example2.com\.well-known\pki-validation\`+seedFileName, "a backslash")
	add("tab", "example2.com", "http", "http://example2.com"+p+"\t", "a control character")
	add("space", "example2.com", "http", "http://example2.com"+p+" ", "a space")
	add("relative", "example2.com", "http", p, "not an absolute URL")
	add("no host", "example2.com", "http", "http://"+p, "not an absolute URL")
	add("opaque", "example2.com", "http", "http:example2.com"+p, "not an absolute URL")
	add("unparsable", "example2.com", "http", "http://[::1"+p)
	add("other IP", "192.0.2.1", "http", "http://192.0.2.2"+p)
	add("name for IP", "192.0.2.1", "http", "http://example2.com"+p)
	return cases
}

func hostileContents() []refusalCase {
	var cases []refusalCase
	for name, bad := range map[string]string{
		"NUL":       "abc\x00def",
		"escape":    "abc\x1b[31mdef",
		"DEL":       "abc\x7f",
		"vtab":      "abc\vdef",
		"non-ASCII": "abcé",
		"too long":  strings.Repeat("a", MaxDCVFileContentLen+1),
		"empty":     "",
	} {
		bad := bad
		cases = append(cases, httpCase("content "+name, "example3.com", "https", func(f *HTTPFile) {
			f.Filecontent = bad
		}, "http.filecontent"))
	}
	return cases
}

func hostileDNS() []refusalCase {
	// A valid 246-character name: with a 33-character label on top, the
	// record name would exceed 253 characters.
	longName := strings.Repeat(strings.Repeat("a", 63)+".", 3) + strings.Repeat("d", 50) + ".com"
	r := func(hostname, fullname, value string) DNSRecord {
		return DNSRecord{Type: "cname", Hostname: hostname, Fullname: fullname, Value: value}
	}
	cases := []refusalCase{
		dnsCase("two labels deep", "example.com", r("", "_a._b.example.com", seedTarget), "dns.fullname"),
		dnsCase("two labels deep, hostname agrees", "example.com", r("_a", "_a._b.example.com", seedTarget), "dns.fullname"),
		dnsCase("two-label hostname", "example.com", r("_a._b", "", seedTarget), "dns.hostname"),
		dnsCase("no underscore", "example.com", r("", "x310.example.com", seedTarget), "dns.fullname"),
		dnsCase("hostname without underscore", "example.com", r("x310", "", seedTarget), "dns.hostname"),
		dnsCase("underscore alone", "example.com", r("_", "", seedTarget), "dns.hostname"),
		dnsCase("underscore inside", "example.com", r("_a_b", "", seedTarget), "dns.hostname"),
		dnsCase("hostname too long", "example.com", r("_"+strings.Repeat("a", 63), "", seedTarget), "dns.hostname"),
		dnsCase("sibling domain", "example.com", r("", "_x.example.org", seedTarget), "dns.fullname"),
		dnsCase("sibling subdomain", "sub.example.com", r("", "_x.other.example.com", seedTarget), "dns.fullname"),
		dnsCase("child of the name", "example.com", r("", "_x.www.example.com", seedTarget), "dns.fullname"),
		dnsCase("public suffix", "example.com", r("", "_x.com", seedTarget), "dns.fullname"),
		dnsCase("public suffix co.uk", "example.co.uk", r("", "_x.co.uk", seedTarget), "dns.fullname"),
		dnsCase("garbage after name", "example.com", r("", "_x.example.com/evil", seedTarget), "dns.fullname"),
		dnsCase("hostname disagrees", "example.com", r("_a", "_b.example.com", seedTarget), "dns.fullname"),
		dnsCase("neither name", "example.com", r("", "", seedTarget), "dns"),
		dnsCase("record name too long", longName, r(seedHostname, "", seedTarget), "dns"),
		dnsCase("record type txt", "example.com", DNSRecord{Type: "TXT", Hostname: seedHostname, Value: seedTarget}, "dns.type"),
	}
	for _, bad := range []string{"1.2.3.4", "::1", "[2001:db8::1]"} {
		c := dnsCase("target "+bad, "example.com", r(seedHostname, seedHostname+".example.com", bad), "dns.value")
		c.wantToo = "is an IP address"
		cases = append(cases, c)
	}
	for _, bad := range []string{"-bad-.com", "a_b.example.com", "", "x", "x.", "a..b.com",
		"exa mple.com", "évil.example", "1.2.3.4.5", strings.Repeat("a", 64) + ".com"} {
		cases = append(cases, dnsCase("target "+bad, "example.com", r(seedHostname, seedHostname+".example.com", bad), "dns.value"))
	}
	return cases
}

func hostileTypesAndShapes() []refusalCase {
	noDNS := dnsEntry("example.com", "")
	noDNS.DNS = nil
	noHTTP := httpEntry("example2.com", "http")
	noHTTP.HTTP = nil
	noEmail := emailEntry("sub.example4.com", "")
	noEmail.Email = nil
	typed := func(e DCVEntry, typ string) DCVEntry { e.Type = typ; return e }
	otherDomain := httpEntry("example2.com", "http")
	otherDomain.Domain = "evil.example"
	return []refusalCase{
		{"dns gets http", "example2.com", MethodDNS, typed(httpEntry("example2.com", "http"), "http"), `domain "example2.com": type: "http"`, ""},
		{"http gets dns", "example.com", MethodHTTP, typed(dnsEntry("example.com", ""), "dns"), `domain "example.com": type: "dns"`, ""},
		{"http gets https", "example2.com", MethodHTTP, typed(httpEntry("example2.com", "http"), "https"), `domain "example2.com": type: "https"`, ""},
		{"https gets email", "example3.com", MethodHTTPS, typed(httpEntry("example3.com", "https"), "email"), `domain "example3.com": type: "email"`, ""},
		{"email gets dns", "sub.example4.com", "admin@example4.com", typed(dnsEntry("sub.example4.com", ""), "dns"), `domain "sub.example4.com": type: "dns"`, ""},
		{"empty type", "example.com", MethodDNS, typed(dnsEntry("example.com", ""), ""), `domain "example.com": type: ""`, ""},
		{"nil dns", "example.com", MethodDNS, noDNS, `domain "example.com": dns: missing`, ""},
		{"nil http", "example2.com", MethodHTTP, noHTTP, `domain "example2.com": http: missing`, ""},
		{"nil email", "sub.example4.com", "admin@example4.com", noEmail, `domain "sub.example4.com": email: missing`, ""},
		{"entry for another domain", "example2.com", MethodHTTP, otherDomain, `domain "example2.com": domain: the entry is for "evil.example"`, ""},
		{"wildcard with http", "*.example.com", MethodHTTP, httpEntry("*.example.com", "http"), `domain "*.example.com": a wildcard cannot`, ""},
		{"wildcard with https", "*.example.com", MethodHTTPS, httpEntry("*.example.com", "https"), `domain "*.example.com": a wildcard cannot`, ""},
		{"IP with dns", "192.0.2.1", MethodDNS, dnsEntry("192.0.2.1", ""), `domain "192.0.2.1": an IP address cannot be validated by dns`, ""},
		{"IP with e-mail", "192.0.2.1", "admin@192.0.2.1", emailEntry("192.0.2.1", "admin@192.0.2.1"), `domain "192.0.2.1": an IP address cannot`, ""},
		{"requested approver invalid", "sub.example4.com", "root@example4.com", emailEntry("sub.example4.com", "root@example4.com"), `domain "sub.example4.com": approver "root@example4.com": mailbox`, ""},
	}
}

func hostileEmails() []refusalCase {
	return []refusalCase{
		emailCase("root", "root@example4.com", `approver "root@example4.com": mailbox "root"`),
		emailCase("info", "info@example4.com", `approver "info@example4.com": mailbox "info"`),
		emailCase("other domain", "admin@evil.example", `approver "admin@evil.example"`),
		emailCase("public suffix", "admin@com", `approver "admin@com"`),
		emailCase("sibling from the docs", "admin@email.example4.com", `approver "admin@email.example4.com"`),
		emailCase("valid but not requested", "administrator@sub.example4.com", `"administrator@sub.example4.com" is not the requested approver "admin@example4.com"`),
		emailCase("empty", "", `approver ""`),
		emailCase("two @", "admin@example4.com@evil.example", `approver "admin@example4.com@evil.example" is not an e-mail address`),
	}
}

func TestValidateInstructionRefuses(t *testing.T) {
	var cases []refusalCase
	for _, group := range [][]refusalCase{hostileFileNames(), hostileFilePaths(), hostileURLs(), hostileContents(),
		hostileDNS(), hostileTypesAndShapes(), hostileEmails()} {
		cases = append(cases, group...)
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			ins, _, err := ValidateInstruction(tt.domain, tt.method, tt.entry)
			if err == nil {
				t.Fatalf("accepted: %+v", ins)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.wantToo) {
				t.Fatalf("error %q does not contain %q and %q", err, tt.wantErr, tt.wantToo)
			}
			if ins.CNAME != nil || ins.File != nil || ins.Email != nil {
				t.Fatalf("refused, yet an instruction was returned: %+v", ins)
			}
			for _, e := range joined(err) {
				var de *DCVError
				if !errors.As(e, &de) {
					t.Fatalf("problem %q is %T, not *DCVError", e, e)
				}
			}
			// The whole reply is refused too, and no plan escapes.
			plan, err := ValidateInstructions(map[string]Method{tt.domain: tt.method}, []DCVEntry{tt.entry})
			if err == nil || plan != nil {
				t.Fatalf("ValidateInstructions = %+v, %v; want a refusal", plan, err)
			}
		})
	}
}

func TestValidateInstructionAccepts(t *testing.T) {
	const p = "/.well-known/pki-validation/" + seedFileName
	withFile := func(domain, scheme string, mutate func(*HTTPFile)) DCVEntry {
		e := httpEntry(domain, scheme)
		mutate(e.HTTP)
		return e
	}
	withDNS := func(domain string, r DNSRecord) DCVEntry {
		e := dnsEntry(domain, "")
		e.DNS = &r
		return e
	}
	fileWant := func(scheme, host, url string) *FileInstruction {
		return &FileInstruction{Scheme: scheme, Host: host, Path: p, FileName: seedFileName, Content: seedContent, URL: url}
	}
	tests := []struct {
		name     string
		domain   string
		method   Method
		entry    DCVEntry
		want     Instruction
		warnings int
	}{
		{
			name: "leading slash filepath, default port, upper-case host, no filefullpath", domain: "Example2.com", method: MethodHTTP,
			entry: withFile("example2.com", "http", func(f *HTTPFile) {
				f.Filepath = "/.well-known/pki-validation/"
				f.Filefullpath = ""
				f.URL = "HTTP://EXAMPLE2.com:80" + p
			}),
			want: Instruction{Domain: "example2.com", Method: MethodHTTP, Status: "pending", File: fileWant("http", "example2.com", "http://example2.com"+p)},
		},
		{
			name: "https typed https, url absent is built", domain: "www.example3.com", method: MethodHTTPS,
			entry: func() DCVEntry {
				e := withFile("www.example3.com", "https", func(f *HTTPFile) { f.URL = ""; f.Filefullpath = "/" + f.Filefullpath })
				e.Type = "HTTPS"
				return e
			}(),
			want: Instruction{Domain: "www.example3.com", Method: MethodHTTPS, Status: "pending", File: fileWant("https", "www.example3.com", "https://www.example3.com"+p)},
		},
		{
			name: "IPv4 with http", domain: "192.0.2.1", method: MethodHTTP, entry: httpEntry("192.0.2.1", "http"),
			want: Instruction{Domain: "192.0.2.1", Method: MethodHTTP, Status: "pending", File: fileWant("http", "192.0.2.1", "http://192.0.2.1"+p)},
		},
		{
			name: "IPv6 with https", domain: "2001:DB8::1", method: MethodHTTPS, entry: httpEntry("2001:db8:0::1", "https"),
			want: Instruction{Domain: "2001:db8::1", Method: MethodHTTPS, Status: "pending", File: fileWant("https", "2001:db8::1", "https://[2001:db8::1]"+p)},
		},
		{
			name: "fullname with trailing dot and capitals", domain: "example.com", method: MethodDNS,
			entry: withDNS("example.com", DNSRecord{Type: "CNAME", Hostname: "_ABC", Fullname: "_abc.Example.COM.", Value: "Target.CA.example."}),
			want:  Instruction{Domain: "example.com", Method: MethodDNS, Status: "valid", CNAME: &CNAMEInstruction{Name: "_abc.example.com", Target: "target.ca.example"}},
		},
		{
			name: "hostname only, empty record type", domain: "*.shop.example.com", method: MethodDNS,
			entry: withDNS("*.shop.example.com", DNSRecord{Hostname: "_abc", Value: seedTarget}),
			want:  Instruction{Domain: "*.shop.example.com", Method: MethodDNS, Status: "valid", CNAME: &CNAMEInstruction{Name: "_abc.shop.example.com", Target: seedTarget}},
		},
		{
			name: "record under a parent within the registrable domain", domain: "a.b.example.co.uk", method: MethodDNS,
			entry: withDNS("a.b.example.co.uk", DNSRecord{Type: "cname", Fullname: "_abc.example.co.uk", Value: seedTarget}),
			want:  Instruction{Domain: "a.b.example.co.uk", Method: MethodDNS, Status: "valid", CNAME: &CNAMEInstruction{Name: "_abc.example.co.uk", Target: seedTarget}},
		},
		{
			name: "record outside (sibling) derived from hostname", domain: "example.com", method: MethodDNS,
			entry:    withDNS("example.com", DNSRecord{Hostname: "_abc", Fullname: "_abc.example.org", Value: seedTarget}),
			want:     Instruction{Domain: "example.com", Method: MethodDNS, Status: "valid", CNAME: &CNAMEInstruction{Name: "_abc.example.com", Target: seedTarget}},
			warnings: 1,
		},
		{
			name: "record under the public suffix derived from hostname", domain: "www.example.co.uk", method: MethodDNS,
			entry:    withDNS("www.example.co.uk", DNSRecord{Hostname: "_abc", Fullname: "_abc.co.uk", Value: seedTarget}),
			want:     Instruction{Domain: "www.example.co.uk", Method: MethodDNS, Status: "valid", CNAME: &CNAMEInstruction{Name: "_abc.www.example.co.uk", Target: seedTarget}},
			warnings: 1,
		},
		{
			name: "approver in other case, hostile available list ignored", domain: "sub.example4.com", method: "Admin@Example4.com",
			entry: emailEntry("sub.example4.com", "ADMIN@example4.COM"),
			want:  Instruction{Domain: "sub.example4.com", Method: "Admin@Example4.com", Status: "pending", Email: &EmailInstruction{Address: "admin@example4.com"}},
		},
		{
			name: "wildcard approver at its base name", domain: "*.example.com", method: "hostmaster@example.com",
			entry: emailEntry("*.example.com", "hostmaster@example.com"),
			want:  Instruction{Domain: "*.example.com", Method: "hostmaster@example.com", Status: "pending", Email: &EmailInstruction{Address: "hostmaster@example.com"}},
		},
		{
			name: "unloggable status dropped with a warning", domain: "example.com", method: MethodDNS,
			entry: func() DCVEntry {
				e := dnsEntry("example.com", seedHostname+".example.com")
				e.Status = "valid\x1b[2J"
				return e
			}(),
			want:     Instruction{Domain: "example.com", Method: MethodDNS, Status: "", CNAME: &CNAMEInstruction{Name: seedHostname + ".example.com", Target: seedTarget}},
			warnings: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ins, warnings, err := ValidateInstruction(tt.domain, tt.method, tt.entry)
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			assertInstruction(t, ins, tt.want)
			if len(warnings) != tt.warnings {
				t.Errorf("warnings = %q, want %d", warnings, tt.warnings)
			}
		})
	}
}

func TestValidateInstructionsMatching(t *testing.T) {
	req := map[string]Method{"example.com": MethodDNS, "www.example.com": MethodHTTP}
	dns := dnsEntry("example.com", seedHostname+".example.com")
	web := httpEntry("www.example.com", "http")

	t.Run("names matched after normalization", func(t *testing.T) {
		a, b := dns, web
		a.Domain, b.Domain = "EXAMPLE.com.", " www.Example.com"
		plan, err := ValidateInstructions(map[string]Method{"Example.com": MethodDNS, "www.example.com.": MethodHTTP}, []DCVEntry{b, a})
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Instructions) != 2 || plan.Instructions[0].Domain != "example.com" || plan.Instructions[1].Domain != "www.example.com" {
			t.Fatalf("instructions not normalized and sorted: %+v", plan.Instructions)
		}
	})
	t.Run("missing entry", func(t *testing.T) {
		_, err := ValidateInstructions(req, []DCVEntry{dns})
		if err == nil || !strings.Contains(err.Error(), `domain "www.example.com": the reply has no DCV instruction`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("no entries at all", func(t *testing.T) {
		_, err := ValidateInstructions(req, nil)
		if n := len(joined(err)); n != 2 {
			t.Fatalf("want 2 missing domains, got %d: %v", n, err)
		}
	})
	t.Run("duplicate entry", func(t *testing.T) {
		dup := dns
		dup.Domain = "Example.COM"
		_, err := ValidateInstructions(req, []DCVEntry{dns, web, dup})
		if err == nil || !strings.Contains(err.Error(), `domain "example.com": the reply has 2 DCV instructions`) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("unrequested entries ignored with warnings", func(t *testing.T) {
		extra := dnsEntry("evil.example", "_x.evil.example")
		bad := dnsEntry("../etc", "")
		plan, err := ValidateInstructions(req, []DCVEntry{bad, dns, extra, web})
		if err != nil {
			t.Fatal(err)
		}
		for _, ins := range plan.Instructions {
			if ins.Domain != "example.com" && ins.Domain != "www.example.com" {
				t.Errorf("unrequested domain published: %+v", ins)
			}
		}
		if len(plan.Instructions) != 2 || len(plan.Warnings) != 2 {
			t.Fatalf("instructions %+v, warnings %q", plan.Instructions, plan.Warnings)
		}
		all := strings.Join(plan.Warnings, "\n")
		if !strings.Contains(all, `"evil.example"`) || !strings.Contains(all, `"../etc"`) || !strings.Contains(all, "ignored") {
			t.Fatalf("warnings %q do not name the ignored entries", plan.Warnings)
		}
	})
	t.Run("invalid request", func(t *testing.T) {
		_, err := ValidateInstructions(map[string]Method{"*.example.com": MethodHTTP}, []DCVEntry{httpEntry("*.example.com", "http")})
		if err == nil || !strings.Contains(err.Error(), "requested domain_dcv") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestValidateInstructionsReportsEverythingSorted(t *testing.T) {
	entries := seedEntries()
	entries[0].DNS.Value = "1.2.3.4"                             // *.example.com
	entries[1].HTTP.Filename = "../../etc/passwd"                // example2.com
	entries[2].HTTP.URL = "https://evil.example/x"               // example3.com
	entries[3].Email.Address = "root@example4.com"               // sub.example4.com
	entries[4].DNS.Hostname = ""                                 // *.example5.com: fullname outside, nothing to derive from
	entries = append(entries, httpEntry("example2.com", "http")) // a duplicate for example2.com, unlike the first
	for i := 0; i < 2; i++ {
		// Reversed input must give the same message.
		plan, err := ValidateInstructions(seedRequest(), entries)
		if plan != nil {
			t.Fatalf("a plan escaped: %+v", plan)
		}
		var domains []string
		for _, e := range joined(err) {
			var de *DCVError
			if !errors.As(e, &de) {
				t.Fatalf("problem %q is %T", e, e)
			}
			domains = append(domains, de.Domain)
		}
		want := []string{"*.example.com", "*.example5.com", "example2.com", "example3.com", "example3.com", "sub.example4.com"}
		if strings.Join(domains, " ") != strings.Join(want, " ") {
			t.Fatalf("problems about %q, want %q:\n%v", domains, want, err)
		}
		for l, r := 0, len(entries)-1; l < r; l, r = l+1, r-1 {
			entries[l], entries[r] = entries[r], entries[l]
		}
	}
}
