package providers

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/libdns/rfc2136"

	"github.com/dcvd/dcvd/internal/section"
)

// Defaults of dcvd's own keys in a [dns.NAME] section.
const (
	DefaultTTL                 = 60 * time.Second
	DefaultPropagationTimeout  = 10 * time.Minute
	DefaultPropagationInterval = 500 * time.Millisecond
	DefaultPropagationMax      = 10 * time.Second
)

// commonKeys are dcvd's own keys of a [dns.NAME] section; all other keys
// belong to the provider.
var commonKeys = map[string]string{
	"provider":             "the provider type (see dcvd dns providers)",
	"zone":                 "the zone holding every name published with this section (default: the provider's zone list, else an SOA lookup)",
	"ttl":                  "TTL of the published CNAMEs (default 60s)",
	"propagation_timeout":  "how long to wait for every authoritative nameserver to answer (default 10m)",
	"propagation_interval": "above 500ms, the wait between all checks (for nameservers that limit answers); by default checks run every 250ms for 2 minutes, then every 400ms",
	"nameservers":          "authoritative servers to check instead of the zone's NS records (host:port), for hidden masters and split horizon",
	"resolvers":            "recursive resolvers for zone and nameserver lookups (host:port; default: /etc/resolv.conf)",
}

// Options are the process's outside world, replaceable in tests.
type Options struct {
	// LookupEnv reads *_env keys; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// ReadFile reads *_file keys; nil means os.ReadFile.
	ReadFile func(string) ([]byte, error)
	// HTTPClient, when set, is given to providers that take one (such as
	// cloudflare), so that tests can point them at a fake API.
	HTTPClient *http.Client
}

// DNS is one configured [dns.NAME] section: a libdns provider and how dcvd
// uses it. It is safe for concurrent use once configured.
type DNS struct {
	// Name is the section's name (main in [dns.main]).
	Name string
	// Kind is the provider type.
	Kind string
	// Provider is the configured libdns provider.
	Provider Provider
	// Zone, when set, is the zone of every record published through this
	// section (FQDN with trailing dot).
	Zone string
	// TTL of published records.
	TTL time.Duration
	// Propagation says how visibility is checked.
	Propagation Propagation

	secrets   []string
	zones     *zoneFinder
	setUnsafe bool
}

// New configures the [dns.NAME] section name from its decoded TOML keys.
// Every problem is reported, each as an error naming dns.NAME.key; the
// warnings say what is allowed but unwise (a secret written inline).
//
// The error joins the problems (errors.Join: it unwraps with Unwrap()
// []error), each a *section.Error whose Key is the full key path
// ("dns.NAME.key") and whose Reason is the rest of the message, so that
// a caller can re-file them with errors.As instead of splitting messages
// at ": ". Only a provider's own Check error that does not name a key
// ("key: reason") is a plain error "dns.NAME.reason".
func New(name string, table map[string]any, opts Options) (*DNS, []string, error) {
	s := section.New("dns."+name, table, section.Options{LookupEnv: opts.LookupEnv, ReadFile: opts.ReadFile})

	kindName, _ := table["provider"].(string)
	kind, ok := lookupKind(kindName)
	if !ok {
		if kindName == "" {
			s.Fail("provider", "missing: say which DNS provider this section configures (one of %s)", strings.Join(kindNames(), ", "))
		} else {
			s.Fail("provider", "unknown provider %q (known: %s)", kindName, strings.Join(kindNames(), ", "))
		}
		return nil, nil, s.Err()
	}

	d := &DNS{Name: name, Kind: kind.Name, TTL: DefaultTTL}
	d.Propagation = Propagation{
		Timeout:     DefaultPropagationTimeout,
		Interval:    DefaultPropagationInterval,
		MaxInterval: DefaultPropagationMax,
	}
	provider := kind.New()
	fields := providerFields(provider)
	secret := map[string]bool{}
	for _, k := range kind.Secret {
		secret[k] = true
	}

	// k, k_file and k_env are three ways to set the provider key k, for
	// every key of the provider (a region may come from the environment
	// too), not only its secrets. baseOf maps a section key to the
	// provider key it sets.
	baseOf := func(k string) string {
		for _, suffix := range []string{section.FileSuffix, section.EnvSuffix} {
			if b, ok := strings.CutSuffix(k, suffix); ok {
				if _, isField := fields[b]; isField {
					return b
				}
			}
		}
		return k
	}
	s.Unknown(func(k string) bool {
		if _, isCommon := commonKeys[k]; isCommon {
			return true
		}
		_, isField := fields[baseOf(k)]
		return isField
	}, fmt.Sprintf(" for provider %s (its keys: %s; dcvd's: %s)", kind.Name,
		strings.Join(sortedKeys(fields), ", "), strings.Join(sortedKeys(commonKeys), ", ")))

	// given maps each provider key set in the section to the key it was
	// set with (key, key_file or key_env), for the checks of a provider's
	// values below.
	given := map[string]string{}
	for _, base := range sortedKeys(fields) {
		var forms []string
		for _, f := range s.Forms(base) {
			// A key such as x_file when both x and x_file are provider
			// keys sets x, not x_file.
			if baseOf(f) == base {
				forms = append(forms, f)
			}
		}
		// Sorted (k, k_env, k_file), the order the duplicate message has
		// always listed them in.
		sort.Strings(forms)
		if len(forms) > 0 {
			given[base] = forms[0]
		}
		if len(forms) > 1 {
			s.FailDuplicate(base, forms)
			continue
		}
		if len(forms) == 0 {
			if contains(kind.Required, base) {
				s.Fail(base, "required by provider %s: set %s, %s_file or %s_env", kind.Name, base, base, base)
			}
			continue
		}
		form := forms[0]
		var value any
		if form == base {
			// Inline, any TOML type: the field's setter checks it.
			value = table[form]
			if secret[base] {
				s.WarnInlineSecret(base)
			}
		} else {
			// A path or variable name that is not a string is reported
			// as the missing one it is.
			v, _ := table[form].(string)
			resolved, ok := s.Resolve(base, form, v)
			if !ok {
				continue
			}
			value = resolved
		}
		if secret[base] {
			if v, ok := value.(string); ok && v != "" {
				d.secrets = append(d.secrets, v)
			}
		}
		if err := fields[base].set(value); err != nil {
			s.Fail(form, "%v", err)
		} else if v, ok := value.(string); ok && v == "" && contains(kind.Required, base) {
			s.Fail(form, "required by provider %s, but empty", kind.Name)
		}
	}

	switch p := provider.(type) {
	case *rfc2136.Provider:
		checkTSIG(p, given, kind.Required, s.Fail)
	}

	// dcvd's own keys.
	if v, ok := table["zone"]; ok {
		z, isStr := v.(string)
		z = strings.ToLower(strings.TrimSpace(z))
		if !isStr || z == "" || strings.ContainsAny(z, " /\\") || strings.Contains(strings.Trim(z, "."), "..") {
			s.Fail("zone", "must be a domain name such as example.com")
		} else {
			d.Zone = strings.TrimSuffix(z, ".") + "."
		}
	}
	durationKey := func(key string, dst *time.Duration) {
		v, ok := table[key]
		if !ok {
			return
		}
		str, isStr := v.(string)
		dur, err := time.ParseDuration(str)
		if !isStr || err != nil || dur <= 0 {
			s.Fail(key, "must be a positive duration such as \"60s\" or \"10m\", got %v", v)
			return
		}
		*dst = dur
	}
	durationKey("ttl", &d.TTL)
	durationKey("propagation_timeout", &d.Propagation.Timeout)
	durationKey("propagation_interval", &d.Propagation.Interval)
	if d.TTL < time.Second {
		s.Fail("ttl", "must be at least 1s")
	}
	addrsKey := func(key string, dst *[]string) {
		v, ok := table[key]
		if !ok {
			return
		}
		list, isList := v.([]any)
		if !isList || len(list) == 0 {
			s.Fail(key, "must be a list of \"host:port\" strings")
			return
		}
		for _, e := range list {
			str, _ := e.(string)
			if _, _, err := net.SplitHostPort(str); err != nil {
				s.Fail(key, "%q is not host:port", e)
				continue
			}
			*dst = append(*dst, str)
		}
	}
	addrsKey("nameservers", &d.Propagation.Nameservers)
	addrsKey("resolvers", &d.Propagation.Resolvers)

	warnings := s.Warnings()
	if s.Failed() {
		return nil, warnings, s.Err()
	}
	if opts.HTTPClient != nil {
		setHTTPClient(provider, opts.HTTPClient)
	}
	if kind.Check != nil {
		if err := kind.Check(provider); err != nil {
			msg := d.Redact(err.Error())
			if key, reason, ok := strings.Cut(msg, ": "); ok {
				return nil, warnings, errors.Join(&section.Error{Key: s.Key(key), Reason: reason})
			}
			return nil, warnings, fmt.Errorf("%s.%s", s.Path(), msg)
		}
	}
	d.Provider = provider
	d.setUnsafe = kind.SetUnsafe
	d.zones = newZoneFinder(d.Zone, provider, d.Propagation.Resolvers, 10*time.Second)
	return d, warnings, nil
}

// Redact replaces this section's secrets in s, for errors that providers
// build from their requests.
func (d *DNS) Redact(s string) string {
	for _, sec := range d.secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

// KeyNames returns the config keys of a provider type: its own and dcvd's.
func KeyNames(kind string) (own []string, common []string, ok bool) {
	k, ok := lookupKind(kind)
	if !ok {
		return nil, nil, false
	}
	return sortedKeys(providerFields(k.New())), sortedKeys(commonKeys), true
}

func kindNames() []string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.Name
	}
	return names
}

// field is one settable field of a provider struct.
type field struct{ v reflect.Value }

func (f field) set(value any) error {
	switch f.v.Interface().(type) {
	case time.Duration:
		s, ok := value.(string)
		d, err := time.ParseDuration(s)
		if !ok || err != nil {
			return fmt.Errorf("must be a duration such as \"30s\", got %v", value)
		}
		f.v.SetInt(int64(d))
		return nil
	}
	switch f.v.Kind() {
	case reflect.String:
		s, ok := value.(string)
		if !ok {
			return fmt.Errorf("must be a string, got %T", value)
		}
		f.v.SetString(s)
	case reflect.Bool:
		b, ok := value.(bool)
		if !ok {
			return fmt.Errorf("must be true or false, got %v", value)
		}
		f.v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := value.(int64)
		if !ok {
			return fmt.Errorf("must be an integer, got %v", value)
		}
		if f.v.OverflowInt(n) {
			return fmt.Errorf("%d is out of range", n)
		}
		f.v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := value.(int64)
		if !ok || n < 0 || f.v.OverflowUint(uint64(n)) {
			return fmt.Errorf("must be a non-negative integer, got %v", value)
		}
		f.v.SetUint(uint64(n))
	default:
		return fmt.Errorf("unsupported setting type %s", f.v.Type())
	}
	return nil
}

// providerFields maps config keys to the settable fields of the provider
// struct p points to: exported fields of kind string, bool, integer or
// time.Duration, also inside embedded structs. The key is the field's JSON
// name, or its name in snake_case when it has no JSON tag.
func providerFields(p Provider) map[string]field {
	out := map[string]field{}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			if !sf.IsExported() {
				continue
			}
			fv := v.Field(i)
			if sf.Anonymous && sf.Type.Kind() == reflect.Struct {
				walk(fv)
				continue
			}
			tag := strings.Split(sf.Tag.Get("json"), ",")[0]
			if tag == "-" {
				continue
			}
			switch sf.Type.Kind() {
			case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			default:
				continue
			}
			key := tag
			if key == "" {
				key = snakeCase(sf.Name)
			}
			out[key] = field{fv}
		}
	}
	walk(reflect.ValueOf(p).Elem())
	return out
}

// setHTTPClient gives c to a provider with an HTTPClient field that accepts
// it.
func setHTTPClient(p Provider, c *http.Client) {
	f := reflect.ValueOf(p).Elem().FieldByName("HTTPClient")
	if f.IsValid() && f.CanSet() && reflect.TypeOf(c).AssignableTo(f.Type()) {
		f.Set(reflect.ValueOf(c))
	}
}

// snakeCase turns SecretId into secret_id and APIToken into api_token.
func snakeCase(s string) string {
	r := []rune(s)
	var b strings.Builder
	for i, c := range r {
		if unicode.IsUpper(c) {
			prevLower := i > 0 && unicode.IsLower(r[i-1])
			nextLower := i+1 < len(r) && unicode.IsLower(r[i+1])
			if i > 0 && (prevLower || (nextLower && unicode.IsUpper(r[i-1]))) {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(c))
		} else {
			b.WriteRune(c)
		}
	}
	return b.String()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// NewWith configures a DNS for a provider built in code rather than from a
// [dns.NAME] section: the demo's and tests' in-process servers. zone may be
// empty (found as New finds it); zero Propagation fields take the defaults.
func NewWith(name string, p Provider, zone string, prop Propagation) *DNS {
	if prop.Timeout == 0 {
		prop.Timeout = DefaultPropagationTimeout
	}
	if prop.Interval == 0 {
		prop.Interval = DefaultPropagationInterval
	}
	if prop.MaxInterval == 0 {
		prop.MaxInterval = DefaultPropagationMax
	}
	if zone != "" {
		zone = strings.ToLower(strings.TrimSuffix(zone, ".")) + "."
	}
	return &DNS{
		Name: name, Kind: "in-process", Provider: p, Zone: zone, TTL: DefaultTTL, Propagation: prop,
		zones: newZoneFinder(zone, p, prop.Resolvers, 10*time.Second),
	}
}

// tsigAlgorithms are the TSIG algorithms of github.com/miekg/dns, which
// libdns/rfc2136 signs with: any other fails every request.
var tsigAlgorithms = []string{"hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512"}

// checkTSIG checks the TSIG settings of an rfc2136 section. libdns/rfc2136
// signs every update and zone transfer, and github.com/miekg/dns decodes
// the secret (standard base64) and picks the algorithm only when it signs
// the first one: a missing or malformed key would otherwise fail at the
// first DNS call, after the reissue was paid for. given maps the keys set
// to the key they were set with; keys already reported as required by
// the registry are not reported again. The secret is never quoted.
func checkTSIG(p *rfc2136.Provider, given map[string]string, required []string, fail func(key, format string, args ...any)) {
	_, hasKey := given["key"]
	_, hasName := given["key_name"]
	_, hasAlg := given["key_alg"]
	if !hasKey {
		if !contains(required, "key") {
			fail("key", "required by provider rfc2136: every update and zone transfer is signed with TSIG, and fails without a key; set key_file (a file holding the base64 secret of the server's key statement), key_env or key, with key_name and key_alg")
		}
	} else if p.Key != "" {
		if b, err := base64.StdEncoding.DecodeString(p.Key); err != nil || len(b) == 0 {
			fail(given["key"], "the TSIG secret is not base64 (it is the secret of the server's key statement, as tsig-keygen prints it; not shown): every signed request would fail")
		}
	}
	switch {
	case !hasName && !contains(required, "key_name"):
		fail("key_name", "required by provider rfc2136: the name of the TSIG key, as in the server's key \"NAME\" { … } statement")
	case hasName && strings.TrimSpace(p.KeyName) == "":
		fail(given["key_name"], "must not be empty: the name of the TSIG key")
	}
	alg := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(p.KeyAlg), "."))
	switch {
	case !hasAlg && !contains(required, "key_alg"):
		fail("key_alg", "required by provider rfc2136: the TSIG algorithm, one of %s", strings.Join(tsigAlgorithms, ", "))
	case hasAlg && !contains(tsigAlgorithms, alg):
		fail(given["key_alg"], "%q is not a TSIG algorithm dcvd can sign with (%s)", p.KeyAlg, strings.Join(tsigAlgorithms, ", "))
	}
}
