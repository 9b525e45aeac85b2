package sandbox

import (
	"fmt"
	"net/mail"
	"net/netip"
	"net/url"
	"sort"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// This file holds the sandbox's own rules for names and DCV methods, as the
// reseller's documentation states them. The sandbox plays the independent
// CA, so it does not reuse dcvd's client-side checks: a bug there must not be
// hidden by the same bug here.

// approverLocalParts are the mailboxes a CA may write to for e-mail
// validation, in the order the documentation's example lists them. WHOIS
// addresses are not accepted.
var approverLocalParts = []string{"admin", "administrator", "webmaster", "postmaster", "hostmaster"}

// organizationFields are required for OV, EV and IV products, and cannot
// change once such a certificate has been issued.
var organizationFields = []string{
	"organization", "organization_unit", "registered_address_line1", "serial_no", "country", "state", "city",
	"postal_code", "organization_phone", "date_of_incorporation", "contact_name", "contact_title", "contact_phone",
}

// domainName is a name of a certificate, normalised: lower case, an IP in
// its canonical form.
type domainName struct {
	name     string
	ip       bool
	wildcard bool
	base     string // name without its "*." label
}

// normalizeName checks that raw is a valid DNS name (possibly a wildcard) or
// an IP literal, and returns it normalised.
func normalizeName(raw string) (domainName, error) {
	if raw == "" {
		return domainName{}, fmt.Errorf("empty domain name")
	}
	if strings.TrimSpace(raw) != raw {
		return domainName{}, fmt.Errorf("%q: surrounded by spaces", raw)
	}
	if addr, err := netip.ParseAddr(raw); err == nil {
		if addr.Zone() != "" {
			return domainName{}, fmt.Errorf("%q: an IP address with a zone cannot be certified", raw)
		}
		s := addr.Unmap().String()
		return domainName{name: s, ip: true, base: s}, nil
	}
	name := strings.ToLower(raw)
	base, wildcard := strings.CutPrefix(name, "*.")
	if strings.HasSuffix(base, ".") {
		return domainName{}, fmt.Errorf("%q: remove the trailing dot", raw)
	}
	if len(name) > 253 {
		return domainName{}, fmt.Errorf("%q: longer than 253 characters", raw)
	}
	if strings.Contains(base, "*") {
		return domainName{}, fmt.Errorf("%q: a wildcard must be the whole leftmost label (*.example.com)", raw)
	}
	labels := strings.Split(base, ".")
	if len(labels) < 2 {
		if wildcard {
			return domainName{}, fmt.Errorf("%q: a wildcard over the public suffix %s cannot be certified", raw, base)
		}
		return domainName{}, fmt.Errorf("%q: not a fully qualified domain name", raw)
	}
	for _, l := range labels {
		if err := checkLabel(l); err != nil {
			return domainName{}, fmt.Errorf("%q: %w", raw, err)
		}
	}
	if allDigits(labels[len(labels)-1]) {
		return domainName{}, fmt.Errorf("%q: the top-level label is numeric (neither a domain name nor an IP address)", raw)
	}
	if suffix, _ := publicsuffix.PublicSuffix(base); suffix == base {
		if wildcard {
			return domainName{}, fmt.Errorf("%q: a wildcard over the public suffix %s cannot be certified", raw, base)
		}
		return domainName{}, fmt.Errorf("%q: %s is a public suffix, not a domain that can be validated", raw, base)
	}
	return domainName{name: name, wildcard: wildcard, base: base}, nil
}

func checkLabel(l string) error {
	if l == "" {
		return fmt.Errorf("empty label")
	}
	if len(l) > 63 {
		return fmt.Errorf("label %q is longer than 63 characters", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-':
			if i == 0 || i == len(l)-1 {
				return fmt.Errorf("label %q starts or ends with a hyphen", l)
			}
		case c >= 0x80:
			return fmt.Errorf("label %q is not ASCII; send the A-label (xn--…)", l)
		default:
			return fmt.Errorf("label %q has the character %q (only letters, digits and hyphens)", l, c)
		}
	}
	return nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// registrableDomain is the name's public suffix plus one label, the highest
// level an approver address may be at.
func registrableDomain(n domainName) string {
	if n.ip {
		return n.name
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(n.base)
	if err != nil {
		// normalizeName refused public suffixes; keep the name itself.
		return n.base
	}
	return d
}

// splitDomain returns the documented subdomain and topleveldomain of a name:
// the registrable domain, and what stands before it ("*" for a wildcard over
// the registrable domain, "" for the registrable domain itself or an IP).
func splitDomain(n domainName) (subdomain, top string) {
	top = registrableDomain(n)
	if n.ip || n.name == top {
		return "", top
	}
	return strings.TrimSuffix(n.name, "."+top), top
}

// approverDomains are the domains an approver address may be at: the name
// (without its wildcard label) and each parent down to the registrable
// domain, never the public suffix.
func approverDomains(n domainName) []string {
	if n.ip {
		return nil
	}
	top := registrableDomain(n)
	var out []string
	d := n.base
	for {
		out = append(out, d)
		if d == top {
			return out
		}
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return out
		}
		d = d[i+1:]
	}
}

// approverAddresses lists every address the CA accepts as approver for n.
func approverAddresses(n domainName) []string {
	var out []string
	for _, d := range approverDomains(n) {
		for _, l := range approverLocalParts {
			out = append(out, l+"@"+d)
		}
	}
	return out
}

func isEmailMethod(m string) bool { return strings.Contains(m, "@") }

// checkMethod checks one domain_dcv method for n and returns it normalised
// (lower case).
func checkMethod(n domainName, raw string) (string, error) {
	m := strings.ToLower(strings.TrimSpace(raw))
	switch {
	case m == "":
		return "", fmt.Errorf("%s: no validation method", n.name)
	case m == "dns":
		if n.ip {
			return "", fmt.Errorf("%s: an IP address cannot be validated by dns; use http or https", n.name)
		}
	case m == "http" || m == "https":
		if n.wildcard {
			return "", fmt.Errorf("%s: a wildcard can only be validated by dns or e-mail, not %s", n.name, m)
		}
	case isEmailMethod(m):
		if n.ip {
			return "", fmt.Errorf("%s: an IP address cannot be validated by e-mail; use http or https", n.name)
		}
		if err := checkApprover(n, m); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("%s: unknown validation method %q (want dns, http, https or an approver e-mail address)", n.name, raw)
	}
	return m, nil
}

// checkApprover checks an approver address: one of the admin mailboxes at the
// name or one of its parents above the public suffix.
func checkApprover(n domainName, addr string) error {
	local, domain, ok := strings.Cut(addr, "@")
	if !ok || strings.Contains(domain, "@") {
		return fmt.Errorf("%s: %q is not an e-mail address", n.name, addr)
	}
	allowedLocal := false
	for _, l := range approverLocalParts {
		if local == l {
			allowedLocal = true
		}
	}
	if !allowedLocal {
		return fmt.Errorf("%s: approver %q must be admin@, administrator@, postmaster@, webmaster@ or hostmaster@ (WHOIS addresses are not accepted)", n.name, addr)
	}
	for _, d := range approverDomains(n) {
		if domain == d {
			return nil
		}
	}
	return fmt.Errorf("%s: approver %q must be at %s", n.name, addr, strings.Join(approverDomains(n), " or "))
}

// fieldErrors collects 422 validation errors by field.
type fieldErrors map[string][]string

func (fe fieldErrors) add(field, format string, args ...any) {
	fe[field] = append(fe[field], fmt.Sprintf(format, args...))
}

// orderNames is a validated domain_dcv: names CN first, method per name.
type orderNames struct {
	names   []domainName
	methods map[string]string
}

// list returns the names as strings, in order.
func (o orderNames) list() []string {
	out := make([]string, len(o.names))
	for i, n := range o.names {
		out[i] = n.name
	}
	return out
}

// checkDomainDCV validates a domain_dcv map against the product and the
// service's limit. commonName, when it is one of the names, is put first;
// the others follow in byte order. Errors go to fe under "domain_dcv".
func checkDomainDCV(dcv map[string]string, p Product, maxDomains int, commonName string, fe fieldErrors) orderNames {
	out := orderNames{methods: map[string]string{}}
	keys := make([]string, 0, len(dcv))
	for k := range dcv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, raw := range keys {
		n, err := normalizeName(raw)
		if err != nil {
			fe.add("domain_dcv", "%v", err)
			continue
		}
		if _, dup := out.methods[n.name]; dup {
			fe.add("domain_dcv", "%s is listed twice", n.name)
			continue
		}
		if n.wildcard && !p.Wildcard {
			fe.add("domain_dcv", "%s: product %s does not allow wildcard names", n.name, p.ID)
			continue
		}
		m, err := checkMethod(n, dcv[raw])
		if err != nil {
			fe.add("domain_dcv", "%v", err)
			continue
		}
		out.methods[n.name] = m
		out.names = append(out.names, n)
	}
	if len(dcv) > maxDomains {
		fe.add("domain_dcv", "%d domains exceed the service's limit of %d", len(dcv), maxDomains)
	}
	sort.SliceStable(out.names, func(i, j int) bool {
		ci, cj := out.names[i].name == commonName, out.names[j].name == commonName
		if ci != cj {
			return ci
		}
		return out.names[i].name < out.names[j].name
	})
	return out
}

// checkContactEmail accepts a bare e-mail address.
func checkContactEmail(v string) error {
	a, err := mail.ParseAddress(v)
	if err != nil || a.Address != v || a.Name != "" {
		return fmt.Errorf("%q is not an e-mail address", v)
	}
	return nil
}

// checkNotifyURL accepts an absolute http or https URL.
func checkNotifyURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("not a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: the scheme must be http or https", v)
	}
	if u.Host == "" {
		return fmt.Errorf("%q: no host", v)
	}
	if u.User != nil {
		return fmt.Errorf("the URL must not carry credentials")
	}
	return nil
}
