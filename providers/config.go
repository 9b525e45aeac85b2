package providers

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/libdns/rfc2136"
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
	"propagation_interval": "wait between checks after the first 2 minutes (which check every 250ms), growing to 10s (default 500ms)",
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
func New(name string, section map[string]any, opts Options) (*DNS, []string, error) {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	prefix := "dns." + name
	var errs []error
	fail := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", prefix, key, fmt.Sprintf(format, args...)))
	}

	kindName, _ := section["provider"].(string)
	kind, ok := lookupKind(kindName)
	if !ok {
		if kindName == "" {
			fail("provider", "missing: say which DNS provider this section configures (one of %s)", strings.Join(kindNames(), ", "))
		} else {
			fail("provider", "unknown provider %q (known: %s)", kindName, strings.Join(kindNames(), ", "))
		}
		return nil, nil, errors.Join(errs...)
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

	// Group keys by base name: k, k_file and k_env are three ways to set k.
	type source struct{ key, how string }
	sources := map[string][]source{}
	var keys []string
	for k := range section {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var warnings []string
	for _, k := range keys {
		base, how := k, "inline"
		for _, suffix := range []string{"_file", "_env"} {
			if b, ok := strings.CutSuffix(k, suffix); ok {
				if _, isField := fields[b]; isField {
					base, how = b, suffix[1:]
				}
			}
		}
		if _, isCommon := commonKeys[k]; isCommon {
			continue
		}
		if _, isField := fields[base]; !isField {
			fail(k, "unknown key for provider %s (its keys: %s; dcvd's: %s)", kind.Name,
				strings.Join(sortedKeys(fields), ", "), strings.Join(sortedKeys(commonKeys), ", "))
			continue
		}
		sources[base] = append(sources[base], source{k, how})
	}

	// given maps each provider key set in the section to the key it was
	// set with (key, key_file or key_env), for the checks of a provider's
	// values below.
	given := map[string]string{}
	for _, base := range sortedKeys(fields) {
		srcs := sources[base]
		if len(srcs) > 0 {
			given[base] = srcs[0].key
		}
		if len(srcs) > 1 {
			var names []string
			for _, s := range srcs {
				names = append(names, prefix+"."+s.key)
			}
			fail(base, "set more than once (%s): keep one", strings.Join(names, ", "))
			continue
		}
		if len(srcs) == 0 {
			if contains(kind.Required, base) {
				fail(base, "required by provider %s: set %s, %s_file or %s_env", kind.Name, base, base, base)
			}
			continue
		}
		src := srcs[0]
		var value any
		switch src.how {
		case "inline":
			value = section[src.key]
			if secret[base] {
				warnings = append(warnings, fmt.Sprintf("%s.%s: a secret written in the config file; prefer %s_file or %s_env", prefix, base, base, base))
			}
		case "file":
			path, ok := section[src.key].(string)
			if !ok || path == "" {
				fail(src.key, "must be a file path")
				continue
			}
			b, err := opts.ReadFile(path)
			if err != nil {
				fail(src.key, "cannot read the secret: %v", err)
				continue
			}
			v := strings.TrimRight(string(b), "\r\n")
			if v == "" {
				fail(src.key, "file %s is empty", path)
				continue
			}
			value = v
		case "env":
			envName, ok := section[src.key].(string)
			if !ok || envName == "" {
				fail(src.key, "must be the name of an environment variable")
				continue
			}
			v, ok := opts.LookupEnv(envName)
			if !ok || v == "" {
				fail(src.key, "environment variable %s is not set", envName)
				continue
			}
			value = v
		}
		if secret[base] {
			if s, ok := value.(string); ok && s != "" {
				d.secrets = append(d.secrets, s)
			}
		}
		if err := fields[base].set(value); err != nil {
			fail(src.key, "%v", err)
		} else if s, ok := value.(string); ok && s == "" && contains(kind.Required, base) {
			fail(src.key, "required by provider %s, but empty", kind.Name)
		}
	}

	switch p := provider.(type) {
	case *rfc2136.Provider:
		checkTSIG(p, given, kind.Required, fail)
	}

	// dcvd's own keys.
	if v, ok := section["zone"]; ok {
		z, isStr := v.(string)
		z = strings.ToLower(strings.TrimSpace(z))
		if !isStr || z == "" || strings.ContainsAny(z, " /\\") || strings.Contains(strings.Trim(z, "."), "..") {
			fail("zone", "must be a domain name such as example.com")
		} else {
			d.Zone = strings.TrimSuffix(z, ".") + "."
		}
	}
	durationKey := func(key string, dst *time.Duration) {
		v, ok := section[key]
		if !ok {
			return
		}
		s, isStr := v.(string)
		dur, err := time.ParseDuration(s)
		if !isStr || err != nil || dur <= 0 {
			fail(key, "must be a positive duration such as \"60s\" or \"10m\", got %v", v)
			return
		}
		*dst = dur
	}
	durationKey("ttl", &d.TTL)
	durationKey("propagation_timeout", &d.Propagation.Timeout)
	durationKey("propagation_interval", &d.Propagation.Interval)
	if d.TTL < time.Second {
		fail("ttl", "must be at least 1s")
	}
	addrsKey := func(key string, dst *[]string) {
		v, ok := section[key]
		if !ok {
			return
		}
		list, isList := v.([]any)
		if !isList || len(list) == 0 {
			fail(key, "must be a list of \"host:port\" strings")
			return
		}
		for _, e := range list {
			s, _ := e.(string)
			if _, _, err := net.SplitHostPort(s); err != nil {
				fail(key, "%q is not host:port", e)
				continue
			}
			*dst = append(*dst, s)
		}
	}
	addrsKey("nameservers", &d.Propagation.Nameservers)
	addrsKey("resolvers", &d.Propagation.Resolvers)

	if len(errs) > 0 {
		return nil, warnings, errors.Join(errs...)
	}
	if opts.HTTPClient != nil {
		setHTTPClient(provider, opts.HTTPClient)
	}
	if kind.Check != nil {
		if err := kind.Check(provider); err != nil {
			return nil, warnings, fmt.Errorf("%s.%s", prefix, d.Redact(err.Error()))
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
