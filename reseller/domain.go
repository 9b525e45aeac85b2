package reseller

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// This file holds the request-side rules of domain_dcv, as the reissue
// documentation states them (its ⚠️ notes): which names may be asked for,
// and which DCV method each kind of name may use. The same rules are applied
// again to what the API returns (dcv.go), because the API is not trusted.

// ApproverLocalParts returns the only mailbox names the CA accepts for
// e-mail DCV. WHOIS addresses are refused by the CA, so they are refused here
// before a request is sent. A fresh slice is returned each time so that no
// caller can change the rule for everyone else.
func ApproverLocalParts() []string {
	return []string{"admin", "administrator", "postmaster", "webmaster", "hostmaster"}
}

// maxNameLen is the longest presentation-form DNS name (RFC 1035: 255
// octets on the wire, 253 characters without the trailing dot).
const maxNameLen = 253

// DCVError is one refused domain_dcv entry or DCV instruction. Several of
// them are joined with errors.Join, so that every problem of a request or
// reply is reported at once; use errors.As to inspect them.
type DCVError struct {
	// Domain is the name concerned, normalized when it could be.
	Domain string
	// Field is the offending field of the API's instruction, such as
	// "dns.fullname" or "http.url"; empty when the problem is the name or
	// the method itself.
	Field string
	// Reason says what is wrong, quoting the offending value.
	Reason string
}

// Error implements error.
func (e *DCVError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("domain %q: %s", e.Domain, e.Reason)
	}
	return fmt.Sprintf("domain %q: %s: %s", e.Domain, e.Field, e.Reason)
}

// NormalizeDomain returns the canonical form of a name of domain_dcv: spaces
// and one trailing dot trimmed, ASCII lower-cased, internationalized labels
// converted to A-labels (IDNA Lookup profile), an optional leading "*."
// kept. IPv4 and IPv6 literals (IPv6 optionally in brackets) are returned in
// their canonical text form, IPv4-mapped IPv6 as IPv4.
//
// It refuses what a CA cannot issue for and what could not be published
// safely: empty labels, labels that are not LDH (letters, digits, hyphens,
// 1–63 characters, no leading or trailing hyphen), names longer than 253
// characters, single-label names, a "*" anywhere but as the whole first
// label, an all-numeric top-level label (it would read as an IP address),
// and a bare public suffix ("com", "co.uk", "github.io").
//
// An internationalized name mixing U-labels with ASCII labels that have
// hyphens in the third and fourth positions ("r3--x") is refused: the IDNA
// Lookup profile forbids them. Such ASCII-only names are accepted.
func NormalizeDomain(name string) (string, error) {
	s := strings.TrimSpace(name)
	if s == "" {
		return "", errors.New("empty name")
	}
	if ip, ok := parseIPLiteral(s); ok {
		return ip.String(), nil
	}
	s = strings.TrimSuffix(s, ".")
	wildcard := false
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		wildcard, s = true, rest
	}
	if !utf8.ValidString(s) {
		return "", errors.New("not valid UTF-8")
	}
	needIDNA := false
	for _, r := range s {
		switch {
		case r >= utf8.RuneSelf:
			needIDNA = true
		case r == '*':
			return "", errors.New(`"*" is allowed only as the whole first label ("*.example.com")`)
		case !isLDHByte(byte(r)) && r != '.':
			return "", fmt.Errorf("contains %q: only letters, digits, hyphens and dots are allowed", r)
		}
	}
	lower := strings.ToLower(s)
	if strings.HasPrefix(lower, "xn--") || strings.Contains(lower, ".xn--") {
		// A-labels given as ASCII must still be valid Punycode of a valid
		// U-label; IDNA checks that.
		needIDNA = true
	}
	if needIDNA {
		a, err := idna.Lookup.ToASCII(s)
		if err != nil {
			return "", fmt.Errorf("invalid internationalized name: %w", err)
		}
		lower = strings.ToLower(a)
	}
	if err := checkHostName(lower); err != nil {
		return "", err
	}
	if suffix, _ := publicsuffix.PublicSuffix(lower); suffix == lower {
		return "", fmt.Errorf("%q is a public suffix, not a domain anyone can validate", lower)
	}
	if wildcard {
		lower = "*." + lower
		if len(lower) > maxNameLen {
			return "", fmt.Errorf("longer than %d characters", maxNameLen)
		}
	}
	return lower, nil
}

// checkHostName checks an ASCII, lower-case name without trailing dot: LDH
// labels, at least two of them, at most 253 characters, and a top-level
// label that is not all digits (so that neither "1.2.3.4" nor "1.2.3.4.5"
// passes as a host name).
func checkHostName(s string) error {
	if s == "" {
		return errors.New("empty name")
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("longer than %d characters", maxNameLen)
	}
	labels := strings.Split(s, ".")
	if len(labels) < 2 {
		return fmt.Errorf("%q has a single label; a domain needs at least two", s)
	}
	for _, l := range labels {
		if err := checkLDHLabel(l); err != nil {
			return err
		}
	}
	if isAllDigits(labels[len(labels)-1]) {
		return fmt.Errorf("%q has an all-numeric top-level label", s)
	}
	return nil
}

func checkLDHLabel(l string) error {
	switch {
	case l == "":
		return errors.New(`empty label (".." or a leading dot)`)
	case len(l) > 63:
		return fmt.Errorf("label %q is longer than 63 characters", clipUntrusted(l))
	case l[0] == '-' || l[len(l)-1] == '-':
		return fmt.Errorf("label %q starts or ends with a hyphen", l)
	}
	for i := 0; i < len(l); i++ {
		if c := l[i]; !isLDHByte(c) || (c >= 'A' && c <= 'Z') {
			return fmt.Errorf("label %q contains %q: only lower-case letters, digits and hyphens are allowed", clipUntrusted(l), rune(c))
		}
	}
	return nil
}

func isLDHByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-'
}

func isAllDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseIPLiteral accepts an IPv4 or IPv6 literal, IPv6 optionally in
// brackets. Zones are refused: a certificate cannot name a link-local zone.
func parseIPLiteral(s string) (netip.Addr, bool) {
	bracketed := false
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s, bracketed = s[1:len(s)-1], true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || (bracketed && !a.Is6()) {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// IsWildcard reports whether name is a wildcard ("*.example.com").
func IsWildcard(name string) bool {
	return strings.HasPrefix(strings.TrimSpace(name), "*.")
}

// BaseName returns name without its wildcard label: the name whose control
// DCV proves.
func BaseName(name string) string {
	s := strings.TrimSpace(name)
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		return rest
	}
	return s
}

// IsIP reports whether name is an IPv4 or IPv6 literal (IPv6 optionally in
// brackets, no zone).
func IsIP(name string) bool {
	_, ok := parseIPLiteral(strings.TrimSpace(name))
	return ok
}

// IsEmailMethod reports whether a domain_dcv method is an approver address
// rather than dns, http or https.
func IsEmailMethod(m Method) bool {
	return strings.Contains(m, "@")
}

// CheckApprover checks that address may approve name by e-mail: one of
// ApproverLocalParts, "@", then the name itself (without its wildcard label)
// or one of its parents, never above the registrable domain. Comparison is
// case-insensitive. IP addresses cannot be validated by e-mail.
func CheckApprover(name, address string) error {
	_, err := normalizeApprover(name, address)
	return err
}

// normalizeApprover is CheckApprover returning the address in canonical
// form (lower-case local part, normalized domain).
func normalizeApprover(name, address string) (string, error) {
	n, err := NormalizeDomain(name)
	if err != nil {
		return "", err
	}
	if IsIP(n) {
		return "", errors.New("an IP address cannot be validated by e-mail")
	}
	addr := strings.TrimSpace(address)
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || strings.Contains(domain, "@") {
		return "", fmt.Errorf("approver %q is not an e-mail address with exactly one @", clipUntrusted(addr))
	}
	local = strings.ToLower(local)
	allowedLocal := false
	for _, l := range ApproverLocalParts() {
		if local == l {
			allowedLocal = true
			break
		}
	}
	if !allowedLocal {
		return "", fmt.Errorf("approver %q: mailbox %q is not one of %s (WHOIS and other addresses are refused by the CA)",
			clipUntrusted(addr), clipUntrusted(local), strings.Join(ApproverLocalParts(), ", "))
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return "", fmt.Errorf("approver %q: domain: %w", clipUntrusted(addr), err)
	}
	if IsWildcard(d) || IsIP(d) {
		return "", fmt.Errorf("approver %q: domain must be a plain domain name", clipUntrusted(addr))
	}
	base := BaseName(n)
	reg, err := publicsuffix.EffectiveTLDPlusOne(base)
	if err != nil {
		return "", fmt.Errorf("no registrable domain for %q: %w", base, err)
	}
	if !withinRegistrable(base, d, reg) {
		return "", fmt.Errorf("approver %q: %q is neither %q nor one of its parents within %q", clipUntrusted(addr), d, base, reg)
	}
	return local + "@" + d, nil
}

// withinRegistrable reports whether candidate is name or one of its parents,
// no higher than the registrable domain reg.
func withinRegistrable(name, candidate, reg string) bool {
	if candidate != name && !strings.HasSuffix(name, "."+candidate) {
		return false
	}
	return candidate == reg || strings.HasSuffix(candidate, "."+reg)
}

// checkMethod applies the documented method rules to a normalized name.
func checkMethod(name string, m Method) error {
	switch {
	case m == MethodDNS:
		if IsIP(name) {
			return errors.New("an IP address cannot be validated by dns")
		}
	case m == MethodHTTP || m == MethodHTTPS:
		if IsWildcard(name) {
			return fmt.Errorf("a wildcard cannot be validated by %s, only by dns or e-mail", m)
		}
	case IsEmailMethod(m):
		if IsIP(name) {
			return errors.New("an IP address cannot be validated by e-mail")
		}
		return CheckApprover(name, m)
	default:
		return fmt.Errorf("method %q is none of dns, http, https or an approver address", clipUntrusted(m))
	}
	return nil
}

// ValidateDomainDCV checks a domain_dcv map before it is sent: it must not
// be empty, every name must pass NormalizeDomain, every method must suit its
// name (a wildcard only dns or e-mail, an IP address neither dns nor e-mail,
// an approver per CheckApprover), and no two names may be the same after
// normalization. All problems are reported at once, sorted by domain, as
// *DCVError values joined with errors.Join.
func ValidateDomainDCV(domainDCV map[string]Method) error {
	if len(domainDCV) == 0 {
		return errors.New("domain_dcv is empty")
	}
	var errs []*DCVError
	seen := make(map[string][]string, len(domainDCV))
	for _, key := range sortedDomains(domainDCV) {
		n, err := NormalizeDomain(key)
		if err != nil {
			errs = append(errs, &DCVError{Domain: key, Reason: err.Error()})
			continue
		}
		seen[n] = append(seen[n], key)
		if err := checkMethod(n, domainDCV[key]); err != nil {
			errs = append(errs, &DCVError{Domain: key, Reason: err.Error()})
		}
	}
	for n, keys := range seen {
		if len(keys) > 1 {
			errs = append(errs, &DCVError{Domain: n, Reason: fmt.Sprintf("listed %d times (%s)", len(keys), quoteNames(keys))})
		}
	}
	return joinDCVErrors(errs)
}

// joinDCVErrors sorts problems by domain (keeping the order of one domain's
// problems) and joins them; nil when there are none.
func joinDCVErrors(errs []*DCVError) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Domain < errs[j].Domain })
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return errors.Join(out...)
}

func sortedDomains(m map[string]Method) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func quoteNames(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", clipUntrusted(s))
	}
	return strings.Join(q, ", ")
}

// clipUntrusted shortens untrusted text before it goes into an error or a
// warning, so that a hostile reply cannot flood the logs.
func clipUntrusted(s string) string {
	const limit = 80
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
