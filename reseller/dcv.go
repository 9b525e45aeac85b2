package reseller

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// This file turns the DCV instructions of a reply into something safe to
// publish. Everything in a reply is untrusted: a DNS record name could point
// at somebody else's zone, a file name could climb out of the web root, a
// URL could name another host. The documentation's own example is flawed
// (a CNAME outside the validated domain), so one flaw is repaired, loudly;
// everything else that is wrong is refused.

// PKIValidationPath is the only URL path prefix under which DCV files are
// served.
const PKIValidationPath = "/.well-known/pki-validation/"

// Limits on what the API may ask dcvd to publish. A CA's token file is a few
// dozen bytes; the limits only keep a hostile reply from filling a disk or a
// zone.
const (
	MaxDCVFileNameLen    = 255
	MaxDCVFileContentLen = 4096
)

// Instruction is one domain's validated DCV instruction: safe to publish.
// Exactly one of CNAME, File and Email is set, according to Method.
type Instruction struct {
	// Domain is the normalized requested name, wildcard kept
	// ("*.example.com").
	Domain string
	// Method is what was requested: dns, http, https, or the approver
	// address.
	Method Method
	// Status is "pending", "valid" … as the API said; informational only,
	// never a reason to skip publishing.
	Status string
	// CNAME is the record to publish for dns.
	CNAME *CNAMEInstruction
	// File is the file to serve for http and https.
	File *FileInstruction
	// Email is the approver mailbox the CA will write to for e-mail DCV.
	Email *EmailInstruction
}

// CNAMEInstruction is a CNAME record to publish.
type CNAMEInstruction struct {
	// Name is the record's owner, a fully qualified name, lower-case,
	// without trailing dot: one "_" label directly under the validated name
	// (wildcard removed) or under one of its parents within the same
	// registrable domain.
	Name string
	// Target is the record's value, a host name, lower-case, without
	// trailing dot.
	Target string
}

// FileInstruction is a file to serve over HTTP or HTTPS.
type FileInstruction struct {
	// Scheme is "http" or "https", as requested.
	Scheme string
	// Host is the validated name itself (an IP address in its canonical
	// form, without brackets): never a parent.
	Host string
	// Path is always PKIValidationPath + FileName.
	Path string
	// FileName is a single safe path segment: [A-Za-z0-9][A-Za-z0-9._-]*,
	// no "..", at most MaxDCVFileNameLen bytes.
	FileName string
	// Content is the exact body to serve: printable ASCII, tab, CR and LF
	// only, 1 to MaxDCVFileContentLen bytes.
	Content string
	// URL is where the CA will fetch the file, built from the fields above.
	URL string
}

// EmailInstruction names the approver mailbox for e-mail DCV.
type EmailInstruction struct {
	// Address is the requested approver in canonical form (lower-case
	// mailbox, normalized domain).
	Address string
}

// Plan is the validated DCV work of one reply.
type Plan struct {
	// Instructions holds one instruction per requested domain, sorted by
	// Domain.
	Instructions []Instruction
	// Warnings says what was ignored or repaired (an entry for a domain
	// that was not requested, a record name outside the domain replaced by
	// one derived from the hostname). They deserve a log line each.
	Warnings []string
}

// ValidateInstructions checks the DCV entries of a reply against the
// domain_dcv that was sent, and returns what may be published.
//
// Every requested domain must have exactly one entry (names are matched
// after NormalizeDomain); an entry for a domain that was not requested is
// ignored with a warning. Each entry must pass ValidateInstruction. When
// anything is refused, no plan is returned and the error joins one
// *DCVError per problem, sorted by domain.
func ValidateInstructions(requested map[string]Method, entries []DCVEntry) (*Plan, error) {
	if err := ValidateDomainDCV(requested); err != nil {
		return nil, fmt.Errorf("requested domain_dcv: %w", err)
	}
	want := make(map[string]Method, len(requested))
	for k, m := range requested {
		n, _ := NormalizeDomain(k) // cannot fail: ValidateDomainDCV passed
		want[n] = m
	}

	got := make(map[string][]DCVEntry, len(entries))
	var ignored []string
	for i, e := range entries {
		n, err := NormalizeDomain(e.Domain)
		if err != nil {
			ignored = append(ignored, fmt.Sprintf("dcv entry %d for %q ignored: invalid name: %v", i, clipUntrusted(e.Domain), err))
			continue
		}
		if _, ok := want[n]; !ok {
			ignored = append(ignored, fmt.Sprintf("domain %q: dcv entry ignored: that domain was not requested", n))
			continue
		}
		got[n] = append(got[n], e)
	}
	sort.Strings(ignored)

	plan := &Plan{}
	var errs []*DCVError
	for _, n := range sortedDomains(want) {
		switch es := got[n]; len(es) {
		case 0:
			errs = append(errs, &DCVError{Domain: n, Reason: "the reply has no DCV instruction for it"})
		case 1:
			ins, warnings, entryErrs := validateInstruction(n, want[n], es[0])
			plan.Warnings = append(plan.Warnings, warnings...)
			if len(entryErrs) > 0 {
				errs = append(errs, entryErrs...)
				continue
			}
			plan.Instructions = append(plan.Instructions, ins)
		default:
			errs = append(errs, &DCVError{Domain: n, Reason: fmt.Sprintf("the reply has %d DCV instructions for it; exactly one is expected", len(es))})
		}
	}
	if err := joinDCVErrors(errs); err != nil {
		return nil, err
	}
	plan.Warnings = append(plan.Warnings, ignored...)
	return plan, nil
}

// ValidateInstruction checks one entry of a reply against the method that
// was requested for domain, and returns the instruction to publish with
// warnings about what was repaired.
//
// The entry's type must agree with the method (an https request may come
// back with type "http", as in the documentation's example, but its URL must
// then be https). A dns entry must name a CNAME as one "_" label under the
// validated name or a parent within its registrable domain, pointing at a
// host name; a record name outside those (the documentation's example for
// *.example5.com) is replaced by one derived from the entry's hostname, with
// a warning. An http or https entry must name a safe file under
// PKIValidationPath of the validated host itself, with printable ASCII
// content. An e-mail entry must name the requested approver. The entry's
// subdomain and topleveldomain fields are known to be wrong in the
// documentation and are never used. All problems are joined in the error.
func ValidateInstruction(domain string, method Method, e DCVEntry) (Instruction, []string, error) {
	n, err := NormalizeDomain(domain)
	if err != nil {
		return Instruction{}, nil, &DCVError{Domain: domain, Reason: err.Error()}
	}
	ins, warnings, errs := validateInstruction(n, method, e)
	if err := joinDCVErrors(errs); err != nil {
		return Instruction{}, warnings, err
	}
	return ins, warnings, nil
}

// dcvCheck collects the problems and warnings of one domain's entry.
type dcvCheck struct {
	domain   string
	errs     []*DCVError
	warnings []string
}

func (c *dcvCheck) refuse(field, format string, args ...any) {
	c.errs = append(c.errs, &DCVError{Domain: c.domain, Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (c *dcvCheck) warn(format string, args ...any) {
	c.warnings = append(c.warnings, fmt.Sprintf("domain %q: ", c.domain)+fmt.Sprintf(format, args...))
}

// validateInstruction is ValidateInstruction for a normalized domain.
func validateInstruction(domain string, method Method, e DCVEntry) (Instruction, []string, []*DCVError) {
	c := &dcvCheck{domain: domain}
	if err := checkMethod(domain, method); err != nil {
		c.refuse("", "%v", err)
		return Instruction{}, nil, c.errs
	}
	if e.Domain != "" {
		if n, err := NormalizeDomain(e.Domain); err != nil || n != domain {
			c.refuse("domain", "the entry is for %q", clipUntrusted(e.Domain))
		}
	}
	ins := Instruction{Domain: domain, Method: method, Status: strings.ToLower(strings.TrimSpace(e.Status))}
	if !isPlainWord(ins.Status) {
		c.warn("status %q is not a plain word; ignored", clipUntrusted(ins.Status))
		ins.Status = ""
	}

	typ := strings.ToLower(strings.TrimSpace(e.Type))
	switch {
	case method == MethodDNS:
		if typ != "dns" {
			c.refuse("type", "%q does not match the requested method dns", clipUntrusted(e.Type))
			break
		}
		ins.CNAME = c.cname(e.DNS)
	case method == MethodHTTP || method == MethodHTTPS:
		// The documentation's example answers an https request with type
		// "http"; the scheme is then enforced on the URL.
		if typ != method && !(method == MethodHTTPS && typ == MethodHTTP) {
			c.refuse("type", "%q does not match the requested method %s", clipUntrusted(e.Type), method)
			break
		}
		ins.File = c.file(method, e.HTTP)
	default: // an approver address: checkMethod accepted nothing else
		if typ != "email" {
			c.refuse("type", "%q does not match the requested e-mail method", clipUntrusted(e.Type))
			break
		}
		ins.Email = c.email(method, e.Email)
	}
	if len(c.errs) > 0 {
		return Instruction{}, c.warnings, c.errs
	}
	return ins, c.warnings, nil
}

// cname validates a dns entry's record.
func (c *dcvCheck) cname(r *DNSRecord) *CNAMEInstruction {
	if r == nil {
		c.refuse("dns", "missing")
		return nil
	}
	if t := strings.ToLower(strings.TrimSpace(r.Type)); t != "" && t != "cname" {
		c.refuse("dns.type", "%q is not cname", clipUntrusted(r.Type))
	}
	base := BaseName(c.domain)
	reg, err := publicsuffix.EffectiveTLDPlusOne(base)
	if err != nil {
		c.refuse("", "no registrable domain: %v", err)
		return nil
	}
	allowed := fmt.Sprintf("%q", base)
	if base != reg {
		allowed = fmt.Sprintf("%q or a parent of it within %q", base, reg)
	}

	host := strings.ToLower(strings.TrimSpace(r.Hostname))
	hostOK := isRecordLabel(host)
	if host != "" && !hostOK {
		c.refuse("dns.hostname", `%q is not a single label of "_" then letters, digits or hyphens (2 to 63 characters)`, clipUntrusted(r.Hostname))
	}
	full := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(r.Fullname)), ".")

	var name string
	switch {
	case full != "":
		first, rest, _ := strings.Cut(full, ".")
		switch {
		case host != "" && first != host:
			c.refuse("dns.fullname", "%q does not begin with dns.hostname %q", clipUntrusted(r.Fullname), clipUntrusted(r.Hostname))
		case isRecordLabel(first) && withinRegistrable(base, rest, reg):
			name = full
		case !isRecordLabel(first) || checkHostName(rest) != nil:
			c.refuse("dns.fullname", `%q is not one "_" label directly under %s`, clipUntrusted(r.Fullname), allowed)
		case hostOK:
			// The documentation's own example does this (*.example5.com
			// with a record under example.com). The CA checks the record
			// under the name it validates, so that is where it goes; the
			// name received is never published.
			name = host + "." + base
			c.warn("dns.fullname %q is outside %s; publishing %q, derived from dns.hostname, instead", clipUntrusted(r.Fullname), allowed, name)
		default:
			c.refuse("dns.fullname", "%q is outside %s, and there is no dns.hostname to derive a record name from", clipUntrusted(r.Fullname), allowed)
		}
	case hostOK:
		name = host + "." + base
	case host == "":
		c.refuse("dns", "neither hostname nor fullname is given")
	}
	if name != "" && len(name) > maxNameLen {
		c.refuse("dns", "record name %q is longer than %d characters", clipUntrusted(name), maxNameLen)
		name = ""
	}

	target := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(r.Value)), ".")
	switch {
	case IsIP(target):
		c.refuse("dns.value", "%q is an IP address; a CNAME target must be a host name", clipUntrusted(r.Value))
		target = ""
	default:
		if err := checkHostName(target); err != nil {
			c.refuse("dns.value", "%q is not a host name: %v", clipUntrusted(r.Value), err)
			target = ""
		}
	}
	if name == "" || target == "" {
		return nil
	}
	return &CNAMEInstruction{Name: name, Target: target}
}

// isRecordLabel reports whether s is a DCV record label: "_" then 1 to 62
// lower-case letters, digits or hyphens.
func isRecordLabel(s string) bool {
	if len(s) < 2 || len(s) > 63 || s[0] != '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// file validates an http or https entry's file. scheme is the requested
// method.
func (c *dcvCheck) file(scheme string, f *HTTPFile) *FileInstruction {
	if f == nil {
		c.refuse("http", "missing")
		return nil
	}
	nerr := len(c.errs)
	if err := CheckDCVFileName(f.Filename); err != nil {
		c.refuse("http.filename", "%q: %v", clipUntrusted(f.Filename), err)
	}
	const dir = ".well-known/pki-validation/"
	if f.Filepath != dir && f.Filepath != "/"+dir {
		c.refuse("http.filepath", "%q is not %q", clipUntrusted(f.Filepath), dir)
	}
	if f.Filefullpath != "" && strings.TrimPrefix(f.Filefullpath, "/") != dir+f.Filename {
		c.refuse("http.filefullpath", "%q is not %q", clipUntrusted(f.Filefullpath), dir+f.Filename)
	}
	if f.URL != "" {
		c.checkFileURL(f.URL, scheme, f.Filename)
	}
	if err := checkDCVFileContent(f.Filecontent); err != nil {
		c.refuse("http.filecontent", "%v", err)
	}
	if len(c.errs) > nerr {
		return nil
	}
	path := PKIValidationPath + f.Filename
	return &FileInstruction{
		Scheme:   scheme,
		Host:     c.domain,
		Path:     path,
		FileName: f.Filename,
		Content:  f.Filecontent,
		URL:      (&url.URL{Scheme: scheme, Host: fileURLHost(c.domain), Path: path}).String(),
	}
}

// fileURLHost brackets an IPv6 address for use in a URL.
func fileURLHost(name string) string {
	if strings.Contains(name, ":") {
		return "[" + name + "]"
	}
	return name
}

// CheckDCVFileName accepts a plain file name for a DCV file:
// [A-Za-z0-9][A-Za-z0-9._-]*, no "..", at most MaxDCVFileNameLen bytes.
// Such a name is one path segment that no web server hides, so a file of
// that name stays inside .well-known/pki-validation/.
func CheckDCVFileName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > MaxDCVFileNameLen:
		return fmt.Errorf("longer than %d bytes", MaxDCVFileNameLen)
	case strings.Contains(s, ".."):
		return errors.New(`contains ".."`)
	case !isASCIIAlnum(s[0]):
		return errors.New("must begin with a letter or a digit")
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isASCIIAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("contains %q: only letters, digits, '.', '_' and '-' are allowed", rune(c))
		}
	}
	return nil
}

func isASCIIAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// checkDCVFileContent accepts 1 to MaxDCVFileContentLen bytes of printable
// ASCII, tab, CR and LF: what CA tokens are made of, and nothing a web
// server or a terminal could misread.
func checkDCVFileContent(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > MaxDCVFileContentLen {
		return fmt.Errorf("%d bytes, more than %d", len(s), MaxDCVFileContentLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 || c > 0x7e) && c != '\n' && c != '\r' && c != '\t' {
			return fmt.Errorf("byte 0x%02x at offset %d: only printable ASCII, tab, CR and LF are allowed", c, i)
		}
	}
	return nil
}

// checkFileURL checks the URL the API says the CA will fetch: the requested
// scheme, the validated host itself on the default port, the exact path, and
// nothing else.
func (c *dcvCheck) checkFileURL(raw, scheme, fileName string) {
	const field = "http.url"
	for i := 0; i < len(raw); i++ {
		if b := raw[i]; b <= ' ' || b == 0x7f || b == '\\' {
			c.refuse(field, "%q contains a space, a control character or a backslash", clipUntrusted(raw))
			return
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		c.refuse(field, "%q does not parse: %v", clipUntrusted(raw), err)
		return
	}
	if u.Scheme != scheme {
		c.refuse(field, "%q: scheme %q, want %q (the requested method)", clipUntrusted(raw), u.Scheme, scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		c.refuse(field, "%q is not an absolute URL with a host", clipUntrusted(raw))
		return
	}
	if u.User != nil {
		c.refuse(field, "%q has userinfo", clipUntrusted(raw))
	}
	if u.RawQuery != "" || u.ForceQuery {
		c.refuse(field, "%q has a query", clipUntrusted(raw))
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		c.refuse(field, "%q has a fragment", clipUntrusted(raw))
	}
	defaultPort := map[string]string{MethodHTTP: "80", MethodHTTPS: "443"}[scheme]
	if port := u.Port(); (port != "" && port != defaultPort) || strings.HasSuffix(u.Host, ":") {
		c.refuse(field, "%q: port %q, only the default port of %s is allowed", clipUntrusted(raw), port, scheme)
	}
	if h, err := NormalizeDomain(u.Hostname()); err != nil || h != c.domain {
		c.refuse(field, "%q: host %q is not %q (the file must be served by the validated name itself)", clipUntrusted(raw), clipUntrusted(u.Hostname()), c.domain)
	}
	want := PKIValidationPath + fileName
	if u.Path != want || u.EscapedPath() != want {
		c.refuse(field, "%q: path %q, want %q", clipUntrusted(raw), clipUntrusted(u.EscapedPath()), clipUntrusted(want))
	}
}

// email validates an e-mail entry. method is the requested approver.
func (c *dcvCheck) email(method Method, a *EmailApprover) *EmailInstruction {
	if a == nil {
		c.refuse("email", "missing")
		return nil
	}
	want, err := normalizeApprover(c.domain, method)
	if err != nil { // checkMethod accepted it; kept for safety
		c.refuse("", "requested approver: %v", err)
		return nil
	}
	got, err := normalizeApprover(c.domain, a.Address)
	if err != nil {
		c.refuse("email.address", "%v", err)
		return nil
	}
	if got != want {
		c.refuse("email.address", "%q is not the requested approver %q", clipUntrusted(a.Address), want)
		return nil
	}
	// a.Available is informational: the address is the one requested,
	// never one picked from a list the API made up.
	return &EmailInstruction{Address: want}
}

// isPlainWord reports whether a status is short and made of [a-z0-9_-],
// so that it can be logged as it is.
func isPlainWord(s string) bool {
	if len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
