package config

// This file reads the [[certificate]] sections: each one's names and how
// they are validated (web roots, standalone, DNS), its key and its
// organization. Its [certificate.deploy] is read in deploy.go; the checks
// across certificates are in check.go.

import (
	"errors"
	"fmt"
	"maps"
	"net/mail"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/section"
	"github.com/dcvd/dcvd/reseller"
)

// cfgMaxRenewBefore is the longest lifetime a publicly trusted certificate
// may have (398 days): renewing earlier than that would renew constantly.
const cfgMaxRenewBefore = 398 * 24 * time.Hour

// The keys of [[certificate]], the key types and what a certificate's
// name may be.
var (
	cfgCertKeys = []string{"name", "service_id", "key_type", "reuse_key", "dns", "webroot", "webroot_owner",
		"webroot_group", "standalone", "http_connect", "renew_before", "contact_email", "domains", "deploy",
		"organization"}
	cfgKeyTypes = []string{KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA4096}
	cfgNameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
)

// cfgMaxNameLen bounds a certificate's name, which names files and log
// fields.
const cfgMaxNameLen = 64

// certificates reads every [[certificate]], the main file's and the
// fragments', and returns those without a problem.
func (l *loader) certificates(raw map[string]any) []CertConfig {
	v, present := raw["certificate"]
	if !present {
		l.warn("certificate", "no [[certificate]]: the daemon has nothing to renew")
		return nil
	}
	var tables []map[string]any
	switch t := v.(type) {
	case []map[string]any:
		tables = t
	case []any:
		for _, e := range t {
			m, ok := e.(map[string]any)
			if !ok {
				l.fail("certificate", "must be an array of tables [[certificate]], but holds %s", section.TypeName(e))
				return nil
			}
			tables = append(tables, m)
		}
	default:
		l.fail("certificate", "must be an array of tables: write [[certificate]] (double brackets), one per certificate, not %s", section.TypeName(v))
		return nil
	}
	var certs []CertConfig
	read := make([]certRead, 0, len(tables))
	for i, m := range tables {
		l.file = l.includes.certFile(i)
		c, prefix, ok := l.certificate(l.includes.certIndex(i), m)
		read = append(read, certRead{at: certAt{prefix: prefix, file: l.file, n: l.includes.certIndex(i) + 1}, cert: c})
		l.file = ""
		if ok {
			certs = append(certs, c)
		}
	}
	l.checkAcross(read)
	return certs
}

// certificate reads the i-th [[certificate]]; prefix is its key path
// (certificate[NAME], or certificate[#N] when it has no usable name).
func (l *loader) certificate(i int, m map[string]any) (c CertConfig, prefix string, ok bool) {
	before := len(l.errs)
	prefix = fmt.Sprintf("certificate[#%d]", i+1)
	if name, isStr := m["name"].(string); isStr && cfgNameRE.MatchString(name) && len(name) <= cfgMaxNameLen {
		prefix = "certificate[" + name + "]"
		c.Name = name
	}
	s := l.newSection(prefix, m)
	unknown(s, cfgCertKeys...)
	if name, ok := required(s, "name", "a short name for this certificate ([a-z0-9][a-z0-9._-]*)"); ok && c.Name == "" {
		s.Fail("name", "%q must match [a-z0-9][a-z0-9._-]* and be at most %d characters (it names files and log lines)", name, cfgMaxNameLen)
	}
	if id, ok := required(s, "service_id", "the order's service_id from the reseller's console"); ok {
		if strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
			s.Fail("service_id", "%q must be printable ASCII without spaces", id)
		} else {
			c.ServiceID = id
		}
	}
	c.KeyType = KeyECDSAP256
	if kt, ok := s.String("key_type"); ok {
		if !slices.Contains(cfgKeyTypes, kt) {
			s.Fail("key_type", "%q is none of %s", kt, strings.Join(cfgKeyTypes, ", "))
		} else {
			c.KeyType = kt
		}
	}
	c.ReuseKey, _ = s.Bool("reuse_key")
	if e, ok := s.String("contact_email"); ok {
		if a, err := mail.ParseAddress(e); err != nil || a.Address != e {
			s.Fail("contact_email", "%q is not a plain e-mail address", e)
		} else {
			c.ContactEmail = e
		}
	}
	if s.Duration("renew_before", &c.RenewBefore) && c.RenewBefore >= cfgMaxRenewBefore {
		s.Fail("renew_before", "must be shorter than the longest certificate lifetime (398 days), or dcvd would renew on every check")
	}

	// How names are validated.
	webroots(s, &c)
	if a, ok := hostPort(s, "standalone", true); ok {
		c.Standalone = a
		if a == l.httpListen || a == l.callbackListen {
			s.Fail("standalone", "%s is already the daemon's own listener (daemon.http_listen or daemon.callback_listen): leave standalone out and the daemon's listener serves the files", a)
		}
	}
	if a, ok := hostPort(s, "http_connect", false); ok {
		c.HTTPConnect = a
	}
	if len(c.Webroots) > 0 && c.Standalone != "" {
		s.Fail("standalone", "set webroot or standalone, not both: with a web server running, standalone could not bind its port")
	}
	if dnsName, ok := s.String("dns"); ok {
		if !l.dnsSections[dnsName] {
			s.Fail("dns", "no [dns.%s] section in the config (sections: %s)", dnsName, QuoteList(slices.Sorted(maps.Keys(l.dnsSections))))
		} else {
			c.DNS = dnsName
			l.dnsUsed[dnsName] = true
		}
	}
	c.Domains = l.domains(s)
	var dnsNames, httpNames, httpsNames []string
	for _, n := range c.Names() {
		switch c.Domains[n] {
		case reseller.MethodDNS:
			dnsNames = append(dnsNames, n)
		case reseller.MethodHTTP:
			httpNames = append(httpNames, n)
		case reseller.MethodHTTPS:
			httpNames = append(httpNames, n)
			httpsNames = append(httpsNames, n)
		}
	}
	if len(dnsNames) > 0 && !s.Has("dns") {
		s.Fail("dns", "required by the dns-validated names %s: name a [dns.NAME] section", QuoteList(dnsNames))
	}
	if len(dnsNames) == 0 && c.DNS != "" {
		s.Warn("dns", "no name of this certificate is validated by dns")
	}
	if len(httpNames) > 0 && !s.Has("webroot") && !s.Has("standalone") && l.httpListen == "" {
		s.Fail("webroot", "required by the http/https-validated names %s: set webroot (the document root serving them), standalone (\"host:port\" dcvd listens on while validating) or daemon.http_listen (where the web server proxies /.well-known/pki-validation/)", QuoteList(httpNames))
	}
	if c.Standalone != "" && l.httpListen == "" {
		for _, n := range httpsNames {
			l.fail(s.Key("domains")+"."+strconv.Quote(n), "https validation needs a TLS server, and standalone serves plain http: use http, or a webroot")
		}
	}
	if len(httpNames) == 0 {
		for _, k := range []string{"webroot", "standalone", "http_connect"} {
			if s.Has(k) {
				s.Warn(k, "no name of this certificate is validated by http or https")
			}
		}
	}

	if d, ok := s.Table("deploy"); ok {
		c.Deploy = l.deploy(d)
	} else if !s.Has("deploy") {
		s.Fail("deploy", "required section [certificate.deploy] is missing (at least dir: where cert.pem, chain.pem, fullchain.pem and privkey.pem go)")
	}
	if o, ok := s.Table("organization"); ok {
		c.Organization = organization(o)
	}
	l.done(s)
	return c, prefix, len(l.errs) == before
}

// webroots reads webroot (a path or a list of paths), webroot_owner and
// webroot_group.
func webroots(s *section.Section, c *CertConfig) {
	owner, _ := s.String("webroot_owner")
	group, _ := s.String("webroot_group")
	v, present := s.Value("webroot")
	if !present {
		for _, k := range []string{"webroot_owner", "webroot_group"} {
			if s.Has(k) {
				s.Fail(k, "only meaningful with webroot")
			}
		}
		return
	}
	dirs, bad, inList, ok := stringOrList(v)
	switch {
	case !ok && inList:
		s.Fail("webroot", "must be a path or a list of paths, but the list holds %s", section.TypeName(bad))
		return
	case !ok:
		s.Fail("webroot", "must be a path or a list of paths, not %s", section.TypeName(bad))
		return
	case len(dirs) == 0:
		s.Fail("webroot", "must list at least one directory")
		return
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			s.Fail("webroot", "%q must be an absolute path", d)
			continue
		}
		d = filepath.Clean(d)
		if seen[d] {
			s.Fail("webroot", "%s is listed twice", d)
			continue
		}
		seen[d] = true
		if why := cfgHiddenByUnit(d); why != "" {
			s.Warn("webroot", "%s %s: the validation files would not reach the web server, and the CA's check would fail after the reissue is paid for", d, why)
		}
		c.Webroots = append(c.Webroots, httpchallenge.Webroot{Dir: d, Owner: owner, Group: group})
	}
}

// domains reads [certificate.domains], validated by the reseller's rules;
// the names of the result are normalized.
func (l *loader) domains(s *section.Section) map[string]reseller.Method {
	d, ok := s.Table("domains")
	if !ok {
		if !s.Has("domains") {
			s.Fail("domains", "required section [certificate.domains] is missing: name → \"dns\", \"http\", \"https\" or an approver e-mail")
		}
		return nil
	}
	rawDCV := map[string]reseller.Method{}
	names := d.Keys()
	for _, name := range names {
		v, _ := d.Value(name)
		m, ok := v.(string)
		if !ok {
			// Always quoted: a name is a key of its own, dots and all.
			l.fail(d.Path()+"."+strconv.Quote(name), "must be a string: \"dns\", \"http\", \"https\" or an approver e-mail, not %s", section.TypeName(v))
			continue
		}
		rawDCV[name] = strings.ToLower(strings.TrimSpace(m))
	}
	if len(names) == 0 {
		l.fail(d.Path(), "must list at least one name")
		return nil
	}
	if len(rawDCV) == 0 {
		return nil
	}
	if err := reseller.ValidateDomainDCV(rawDCV); err != nil {
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			var de *reseller.DCVError
			if !errors.As(e, &de) {
				l.fail(d.Path(), "%v", e)
				continue
			}
			reason := de.Reason
			if de.Field != "" {
				reason = de.Field + ": " + reason
			}
			l.fail(d.Path()+"."+strconv.Quote(de.Domain), "%s", reason)
		}
	}
	out := make(map[string]reseller.Method, len(rawDCV))
	for name, m := range rawDCV {
		if n, err := reseller.NormalizeDomain(name); err == nil {
			out[n] = m
		}
	}
	return out
}

// organization reads [certificate.organization], the company data of an
// OV, EV or IV certificate; nil when it sets nothing.
func organization(s *section.Section) *reseller.Organization {
	o := &reseller.Organization{}
	fields := []struct {
		key string
		dst *string
	}{
		{"organization", &o.Organization},
		{"organization_unit", &o.OrganizationUnit},
		{"registered_address_line1", &o.RegisteredAddressLine1},
		{"serial_no", &o.SerialNo},
		{"country", &o.Country},
		{"state", &o.State},
		{"city", &o.City},
		{"postal_code", &o.PostalCode},
		{"organization_phone", &o.OrganizationPhone},
		{"date_of_incorporation", &o.DateOfIncorporation},
		{"contact_name", &o.ContactName},
		{"contact_title", &o.ContactTitle},
		{"contact_phone", &o.ContactPhone},
	}
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.key
	}
	unknown(s, known...)
	set := false
	for _, f := range fields {
		if f.key == "date_of_incorporation" {
			// An unquoted TOML date is what people write; accept it.
			v, _ := s.Value(f.key)
			if t, ok := v.(time.Time); ok {
				*f.dst = t.Format(time.DateOnly)
				set = true
				continue
			}
		}
		if v, ok := s.String(f.key); ok {
			*f.dst = strings.TrimSpace(v)
			set = set || *f.dst != ""
		}
	}
	if o.Country != "" {
		if len(o.Country) != 2 || strings.IndexFunc(o.Country, func(r rune) bool { return (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') }) >= 0 {
			s.Fail("country", "%q is not a two-letter country code such as \"CN\"", o.Country)
		}
		o.Country = strings.ToUpper(o.Country)
	}
	if o.DateOfIncorporation != "" {
		if _, err := time.Parse(time.DateOnly, o.DateOfIncorporation); err != nil {
			s.Fail("date_of_incorporation", "%q is not a date such as 2019-01-01", o.DateOfIncorporation)
		}
	}
	if !set {
		return nil
	}
	return o
}
