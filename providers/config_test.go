package providers_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/libdns/cloudflare"

	"github.com/dcvd/dcvd/providers"
)

// testEnv is an environment for Options.LookupEnv.
func testEnv(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

// inlineSecret is a secret written in a section; no error may quote it.
const inlineSecret = "inline-s3cret-value-42"

func TestNewRejectsBadConfigNamingTheKey(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-file")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	token := secretFile(t, "file-token")
	env := testEnv(map[string]string{"DCVD_TEST_EMPTY": "", "DCVD_TEST_TOKEN": "env-token"})

	for _, tt := range []struct {
		name    string
		section map[string]any
		keys    []string // each must appear as dns.main.KEY
		text    string   // and this too, when set
	}{
		{"unknown provider", map[string]any{"provider": "nosuch"}, []string{"provider"}, `unknown provider "nosuch"`},
		{"missing provider", map[string]any{"api_token_file": token}, []string{"provider"}, "missing"},
		{"provider not a string", map[string]any{"provider": int64(3)}, []string{"provider"}, "missing"},
		{"unknown key", map[string]any{"provider": "cloudflare", "api_token_file": token, "api_tokn": "x"}, []string{"api_tokn"}, "unknown key"},
		{"unknown _file key", map[string]any{"provider": "cloudflare", "api_token_file": token, "password_file": token}, []string{"password_file"}, "unknown key"},
		{"missing required key", map[string]any{"provider": "cloudflare"}, []string{"api_token"}, "required"},
		{"missing one of two required keys", map[string]any{"provider": "alidns", "access_key_secret_file": token}, []string{"access_key_id"}, "required"},
		{"required key empty", map[string]any{"provider": "cloudflare", "api_token": ""}, []string{"api_token"}, "empty"},
		{"inline and file", map[string]any{"provider": "cloudflare", "api_token": inlineSecret, "api_token_file": token}, []string{"api_token", "api_token_file"}, "more than once"},
		{"file and env", map[string]any{"provider": "cloudflare", "api_token_file": token, "api_token_env": "DCVD_TEST_TOKEN"}, []string{"api_token_file", "api_token_env"}, "more than once"},
		{"file missing", map[string]any{"provider": "cloudflare", "api_token_file": missing}, []string{"api_token_file"}, "no-such-file"},
		{"file empty", map[string]any{"provider": "cloudflare", "api_token_file": empty}, []string{"api_token_file"}, "empty"},
		{"file path not a string", map[string]any{"provider": "cloudflare", "api_token_file": int64(7)}, []string{"api_token_file"}, ""},
		{"env unset", map[string]any{"provider": "cloudflare", "api_token_env": "DCVD_TEST_UNSET"}, []string{"api_token_env"}, "DCVD_TEST_UNSET"},
		{"env empty", map[string]any{"provider": "cloudflare", "api_token_env": "DCVD_TEST_EMPTY"}, []string{"api_token_env"}, "DCVD_TEST_EMPTY"},
		{"string key given a number", map[string]any{"provider": "cloudflare", "api_token": int64(12345)}, []string{"api_token"}, "string"},
		{"bool key given a string", map[string]any{"provider": "route53", "wait_for_route53_sync": "yes"}, []string{"wait_for_route53_sync"}, "true or false"},
		{"integer key given a string", map[string]any{"provider": "route53", "max_retries": "5"}, []string{"max_retries"}, "integer"},
		{"provider duration not a duration", map[string]any{"provider": "route53", "route53_max_wait": "soon"}, []string{"route53_max_wait"}, "duration"},
		{"ttl not a duration", map[string]any{"provider": "cloudflare", "api_token_file": token, "ttl": "abc"}, []string{"ttl"}, "abc"},
		{"ttl a number", map[string]any{"provider": "cloudflare", "api_token_file": token, "ttl": int64(60)}, []string{"ttl"}, "duration"},
		{"ttl under a second", map[string]any{"provider": "cloudflare", "api_token_file": token, "ttl": "500ms"}, []string{"ttl"}, "1s"},
		{"propagation_timeout negative", map[string]any{"provider": "cloudflare", "api_token_file": token, "propagation_timeout": "-1m"}, []string{"propagation_timeout"}, "positive"},
		{"propagation_interval zero", map[string]any{"provider": "cloudflare", "api_token_file": token, "propagation_interval": "0s"}, []string{"propagation_interval"}, "positive"},
		{"nameserver without port", map[string]any{"provider": "cloudflare", "api_token_file": token, "nameservers": []any{"127.0.0.1:53", "ns1.example.com"}}, []string{"nameservers"}, "ns1.example.com"},
		{"nameservers not a list", map[string]any{"provider": "cloudflare", "api_token_file": token, "nameservers": "127.0.0.1:53"}, []string{"nameservers"}, "list"},
		{"nameservers empty", map[string]any{"provider": "cloudflare", "api_token_file": token, "nameservers": []any{}}, []string{"nameservers"}, "list"},
		{"resolver not a string", map[string]any{"provider": "cloudflare", "api_token_file": token, "resolvers": []any{int64(53)}}, []string{"resolvers"}, "host:port"},
		{"zone not a name", map[string]any{"provider": "cloudflare", "api_token_file": token, "zone": "exa mple.com"}, []string{"zone"}, "domain name"},
		{"zone empty", map[string]any{"provider": "cloudflare", "api_token_file": token, "zone": ""}, []string{"zone"}, "domain name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, _, err := providers.New("main", tt.section, providers.Options{LookupEnv: env})
			if err == nil {
				t.Fatalf("New accepted %v", tt.section)
			}
			if d != nil {
				t.Errorf("New returned a DNS with its error")
			}
			for _, k := range tt.keys {
				if !strings.Contains(err.Error(), "dns.main."+k) {
					t.Errorf("error %q does not name dns.main.%s", err, k)
				}
			}
			if !strings.Contains(err.Error(), tt.text) {
				t.Errorf("error %q does not say %q", err, tt.text)
			}
			for _, secret := range []string{inlineSecret, "file-token", "env-token"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q quotes a secret", err)
				}
			}
		})
	}
}

func TestNewReportsEveryProblemAtOnce(t *testing.T) {
	section := map[string]any{
		"provider":               "alidns",
		"access_key_secret_file": filepath.Join(t.TempDir(), "absent"),
		"colour":                 "blue",
		"ttl":                    "abc",
		"nameservers":            []any{"ns1.example.com"},
		"propagation_timeout":    "forever",
	}
	_, _, err := providers.New("ali", section, providers.Options{LookupEnv: testEnv(nil)})
	if err == nil {
		t.Fatal("New accepted a section with five problems")
	}
	for _, k := range []string{"access_key_id", "access_key_secret_file", "colour", "ttl", "nameservers", "propagation_timeout"} {
		if !strings.Contains(err.Error(), "dns.ali."+k+":") {
			t.Errorf("error does not name dns.ali.%s:\n%v", k, err)
		}
	}
}

func TestNewSecretSources(t *testing.T) {
	env := testEnv(map[string]string{"CF_TOKEN": "token-from-env"})
	for _, tt := range []struct {
		name        string
		section     map[string]any
		wantToken   string
		wantWarning bool
	}{
		{"file, newline trimmed", map[string]any{"api_token_file": secretFile(t, "token-from-file")}, "token-from-file", false},
		{"file with CRLF", map[string]any{"api_token_file": tempFileWith(t, "token-crlf\r\n")}, "token-crlf", false},
		{"environment", map[string]any{"api_token_env": "CF_TOKEN"}, "token-from-env", false},
		{"inline, with a warning", map[string]any{"api_token": inlineSecret}, inlineSecret, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.section["provider"] = "cloudflare"
			d, warnings, err := providers.New("cf", tt.section, providers.Options{LookupEnv: env})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			p, ok := d.Provider.(*cloudflare.Provider)
			if !ok {
				t.Fatalf("provider is %T, want *cloudflare.Provider", d.Provider)
			}
			if p.APIToken != tt.wantToken {
				t.Errorf("APIToken = %q, want %q", p.APIToken, tt.wantToken)
			}
			if tt.wantWarning != (len(warnings) > 0) {
				t.Errorf("warnings %q; want a warning: %v", warnings, tt.wantWarning)
			}
			for _, w := range warnings {
				if !strings.Contains(w, "dns.cf.api_token") || !strings.Contains(w, "api_token_file") {
					t.Errorf("warning %q does not name dns.cf.api_token and the alternative", w)
				}
				if strings.Contains(w, inlineSecret) {
					t.Errorf("warning %q quotes the secret", w)
				}
			}
			if got := d.Redact("error quoting " + tt.wantToken); strings.Contains(got, tt.wantToken) {
				t.Errorf("Redact left the secret in %q", got)
			}
		})
	}
}

// tempFileWith writes content as is to a new file and returns its path.
func tempFileWith(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNewNonSecretKeyInlineDoesNotWarn(t *testing.T) {
	section := map[string]any{"provider": "alidns", "access_key_id": "LTAIkeyid", "access_key_secret_file": secretFile(t, "s")}
	_, warnings, err := providers.New("ali", section, providers.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings for a key ID written inline: %q", warnings)
	}
}

func TestNewTencentCloudSnakeCaseKeys(t *testing.T) {
	section := map[string]any{
		"provider":        "tencentcloud",
		"secret_id":       "AKIDtencent0001",
		"secret_key_file": secretFile(t, "tencent-secret-key"),
		"session_token":   "tencent-session-token",
	}
	d, warnings, err := providers.New("tc", section, providers.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if len(warnings) == 0 {
		t.Errorf("no warning for session_token written inline")
	}
	p, ok := d.Provider.(*providers.TencentCloud)
	if !ok {
		t.Fatalf("provider is %T, want *providers.TencentCloud", d.Provider)
	}
	if p.SecretId != "AKIDtencent0001" || p.SecretKey != "tencent-secret-key" || p.SessionToken != "tencent-session-token" {
		t.Errorf("provider = %+v", *p)
	}
	// region is a key (upstream's field) but refused: see tencentcloud.go.
	section["region"] = "ap-guangzhou"
	if _, _, err := providers.New("tc", section, providers.Options{}); err == nil || !strings.Contains(err.Error(), "dns.tc.region") {
		t.Errorf("New with region: %v; want a refusal of dns.tc.region", err)
	}
	delete(section, "region")
	// The Go field names are not keys.
	section["SecretId"] = "x"
	if _, _, err := providers.New("tc", section, providers.Options{}); err == nil || !strings.Contains(err.Error(), "dns.tc.SecretId") {
		t.Errorf("New with key SecretId: %v; want an unknown-key error", err)
	}
}

func TestNewDefaultsAndDcvdKeys(t *testing.T) {
	d, _, err := providers.New("cf", map[string]any{"provider": "cloudflare", "api_token_file": secretFile(t, "tok")}, providers.Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if d.Name != "cf" || d.Kind != "cloudflare" || d.Zone != "" || d.TTL != providers.DefaultTTL ||
		d.Propagation.Timeout != providers.DefaultPropagationTimeout || d.Propagation.Interval != providers.DefaultPropagationInterval ||
		d.Propagation.MaxInterval != providers.DefaultPropagationMax || d.Propagation.Nameservers != nil || d.Propagation.Resolvers != nil {
		t.Errorf("defaults: %+v", d)
	}

	client := &http.Client{}
	d, _, err = providers.New("cf", map[string]any{
		"provider":             "cloudflare",
		"api_token_file":       secretFile(t, "tok"),
		"zone":                 "Example.COM",
		"ttl":                  "2m",
		"propagation_timeout":  "3m",
		"propagation_interval": "250ms",
		"nameservers":          []any{"192.0.2.53:53", "[2001:db8::53]:53"},
		"resolvers":            []any{"127.0.0.1:5353"},
	}, providers.Options{HTTPClient: client})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if d.Zone != "example.com." || d.TTL != 2*time.Minute || d.Propagation.Timeout != 3*time.Minute || d.Propagation.Interval != 250*time.Millisecond ||
		!slices.Equal(d.Propagation.Nameservers, []string{"192.0.2.53:53", "[2001:db8::53]:53"}) || !slices.Equal(d.Propagation.Resolvers, []string{"127.0.0.1:5353"}) {
		t.Errorf("configured: %+v", d)
	}
	if p := d.Provider.(*cloudflare.Provider); p.HTTPClient != client {
		t.Errorf("cloudflare HTTPClient = %v, want the one from Options", p.HTTPClient)
	}
	// A provider without an HTTPClient field simply does not get one.
	if _, _, err := providers.New("ali", map[string]any{"provider": "alidns", "access_key_id": "id", "access_key_secret_file": secretFile(t, "s")},
		providers.Options{HTTPClient: client}); err != nil {
		t.Errorf("New alidns with an HTTP client: %v", err)
	}
}

// TestEveryKindBuilds proves the registry: every provider type can be
// configured from its required keys, each key reaches the provider, and
// leaving any required key out is an error naming it.
func TestEveryKindBuilds(t *testing.T) {
	kinds := providers.Kinds()
	var names []string
	for _, k := range kinds {
		names = append(names, k.Name)
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("Kinds() not sorted: %q", names)
	}
	for _, want := range []string{"acmedns", "alidns", "azure", "bunny", "cloudflare", "desec", "digitalocean", "gandi", "godaddy",
		"googleclouddns", "hetzner", "huaweicloud", "linode", "namecheap", "ovh", "porkbun", "powerdns", "rfc2136", "route53",
		"tencentcloud", "vultr"} {
		if !slices.Contains(names, want) {
			t.Errorf("provider %s is not registered", want)
		}
	}
	kinds[0].Name = "changed by the caller"
	if providers.Kinds()[0].Name == kinds[0].Name {
		t.Error("Kinds() returns the registry itself; a caller can change it")
	}
	if _, _, ok := providers.KeyNames("nosuch"); ok {
		t.Error("KeyNames of an unknown provider says ok")
	}

	for _, k := range providers.Kinds() {
		t.Run(k.Name, func(t *testing.T) {
			own, common, ok := providers.KeyNames(k.Name)
			if !ok {
				t.Fatalf("KeyNames(%q) not ok", k.Name)
			}
			for _, key := range append(slices.Clone(k.Required), k.Secret...) {
				if !slices.Contains(own, key) {
					t.Errorf("key %s of Required/Secret is not among the provider's keys %q", key, own)
				}
			}
			for _, key := range []string{"provider", "zone", "ttl", "propagation_timeout", "propagation_interval", "nameservers", "resolvers"} {
				if !slices.Contains(common, key) {
					t.Errorf("dcvd key %s missing from %q", key, common)
				}
			}
			if k.About == "" {
				t.Error("no About line")
			}

			// Secrets from the environment, other keys inline: no warning.
			vars := map[string]string{}
			section := map[string]any{"provider": k.Name}
			valueOf := func(key string) string {
				// rfc2136's New checks the TSIG algorithm and key
				// (every request is signed): those need real values.
				switch {
				case k.Name == "rfc2136" && key == "key_alg":
					return "hmac-sha256"
				case k.Name == "rfc2136" && key == "key":
					return testTSIGSecret
				}
				return "dummy-" + key
			}
			for _, key := range k.Required {
				value := valueOf(key)
				if slices.Contains(k.Secret, key) {
					envName := "DCVD_TEST_" + strings.ToUpper(key)
					vars[envName] = value
					section[key+"_env"] = envName
				} else {
					section[key] = value
				}
			}
			d, warnings, err := providers.New("x", section, providers.Options{LookupEnv: testEnv(vars)})
			if err != nil {
				t.Fatalf("New with the required keys: %v", err)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings: %q", warnings)
			}
			if d.Kind != k.Name || d.Provider == nil {
				t.Fatalf("New = kind %q, provider %v", d.Kind, d.Provider)
			}
			typ := reflect.TypeOf(d.Provider).Elem()
			// dcvd's wrappers of a libdns provider embed it first.
			if typ.PkgPath() == "github.com/dcvd/dcvd/providers" && typ.Kind() == reflect.Struct && typ.NumField() > 0 && typ.Field(0).Anonymous {
				typ = typ.Field(0).Type
			}
			if pkg := typ.PkgPath(); !strings.HasPrefix(pkg, "github.com/libdns/"+k.Name) {
				t.Errorf("provider %s is %T from %s", k.Name, d.Provider, pkg)
			}
			values := stringFields(reflect.ValueOf(d.Provider).Elem())
			for _, key := range k.Required {
				if !slices.Contains(values, valueOf(key)) {
					t.Errorf("the value of %s did not reach the provider (its strings: %q)", key, values)
				}
			}

			for _, key := range k.Required {
				without := map[string]any{}
				for sk, v := range section {
					if sk != key && sk != key+"_env" {
						without[sk] = v
					}
				}
				if _, _, err := providers.New("x", without, providers.Options{LookupEnv: testEnv(vars)}); err == nil ||
					!strings.Contains(err.Error(), "dns.x."+key) {
					t.Errorf("New without %s: %v; want an error naming dns.x.%s", key, err, key)
				}
			}
		})
	}
}

// stringFields returns the values of v's exported string fields, also in
// embedded structs.
func stringFields(v reflect.Value) []string {
	var out []string
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), v.Type().Field(i)
		switch {
		case !sf.IsExported():
		case f.Kind() == reflect.String:
			out = append(out, f.String())
		case sf.Anonymous && f.Kind() == reflect.Struct:
			out = append(out, stringFields(f)...)
		}
	}
	return out
}

func ExampleNew() {
	section := map[string]any{
		"provider":       "cloudflare",
		"api_token_file": "/etc/dcvd/cloudflare-token",
		"zone":           "example.com",
	}
	_, _, err := providers.New("main", section, providers.Options{
		ReadFile: func(string) ([]byte, error) { return []byte("token\n"), nil },
	})
	fmt.Println(err)
	// Output: <nil>
}

// TestRoute53UnknownProfileIsAConfigError: libdns/route53 calls log.Fatalf
// when its AWS configuration does not load, which would end the daemon in
// the middle of a reissue; New must refuse the section instead.
func TestRoute53UnknownProfileIsAConfigError(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	_, _, err := providers.New("aws", map[string]any{"provider": "route53", "profile": "nosuch", "region": "us-east-1"}, providers.Options{})
	if err == nil || !strings.Contains(err.Error(), "dns.aws.profile") {
		t.Fatalf("got %v, want an error naming dns.aws.profile", err)
	}
	if _, _, err := providers.New("aws", map[string]any{"provider": "route53", "region": "us-east-1"}, providers.Options{}); err != nil {
		t.Fatalf("route53 without a profile: %v", err)
	}
}

// testTSIGSecret is a TSIG secret as tsig-keygen prints one.
const testTSIGSecret = "ZGN2ZC10ZXN0LXRzaWctc2VjcmV0LTAxMjM0NTY3ODk="

// TestRFC2136TSIG: the rfc2136 provider signs every request with TSIG, so
// a section whose key, key name or algorithm would make every request
// fail is refused when it is read, not after a reissue is paid for; the
// secret is never quoted.
func TestRFC2136TSIG(t *testing.T) {
	notBase64 := "not base64 at all!"
	env := testEnv(map[string]string{"TSIG_GOOD": testTSIGSecret, "TSIG_BAD": "dcvd-secret-0123456789"})
	base := func(extra map[string]any) map[string]any {
		s := map[string]any{"provider": "rfc2136", "server": "ns1.example.net:53"}
		for k, v := range extra {
			s[k] = v
		}
		return s
	}
	good := map[string]any{"key_name": "dcvd", "key_alg": "hmac-sha256", "key_env": "TSIG_GOOD"}
	with := func(changes map[string]any) map[string]any {
		s := base(good)
		for k, v := range changes {
			if v == nil {
				delete(s, k)
			} else {
				s[k] = v
			}
		}
		return s
	}
	for _, tt := range []struct {
		name    string
		section map[string]any
		// want are "dns.x.KEY: reason" prefixes, one per error; none
		// means the section loads.
		want []string
	}{
		{"good, from the environment", with(nil), nil},
		{"good, from a file with its newline", with(map[string]any{"key_env": nil, "key_file": secretFile(t, testTSIGSecret)}), nil},
		{"good, algorithm as a domain name", with(map[string]any{"key_alg": "HMAC-SHA512."}), nil},
		{"no TSIG at all", base(nil), []string{"dns.x.key: required by provider rfc2136", "dns.x.key_alg: required", "dns.x.key_name: required"}},
		{"no key", with(map[string]any{"key_env": nil}), []string{"dns.x.key: required by provider rfc2136"}},
		{"key not base64, inline", with(map[string]any{"key_env": nil, "key": notBase64}), []string{"dns.x.key: the TSIG secret is not base64"}},
		{"key not base64, from a file", with(map[string]any{"key_env": nil, "key_file": secretFile(t, notBase64)}),
			[]string{"dns.x.key_file: the TSIG secret is not base64"}},
		{"key not base64, from the environment", with(map[string]any{"key_env": "TSIG_BAD"}), []string{"dns.x.key_env: the TSIG secret is not base64"}},
		{"key base64 without padding", with(map[string]any{"key_env": nil, "key": strings.TrimRight(testTSIGSecret, "=")}),
			[]string{"dns.x.key: the TSIG secret is not base64"}},
		{"no key_name", with(map[string]any{"key_name": nil}), []string{"dns.x.key_name: required by provider rfc2136"}},
		{"empty key_name", with(map[string]any{"key_name": " "}), []string{"dns.x.key_name: must not be empty"}},
		{"no key_alg", with(map[string]any{"key_alg": nil}), []string{"dns.x.key_alg: required by provider rfc2136"}},
		{"unknown key_alg", with(map[string]any{"key_alg": "hmac-md5.sig-alg.reg.int"}),
			[]string{`dns.x.key_alg: "hmac-md5.sig-alg.reg.int" is not a TSIG algorithm`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := providers.New("x", tt.section, providers.Options{LookupEnv: env})
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("New accepted %v", tt.section)
			}
			got := strings.Split(err.Error(), "\n")
			slices.Sort(got)
			if len(got) != len(tt.want) {
				t.Fatalf("errors:\n%v\nwant %d", err, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("error %q, want prefix %q", got[i], w)
				}
			}
			for _, secret := range []string{notBase64, "dcvd-secret-0123456789", testTSIGSecret, strings.TrimRight(testTSIGSecret, "=")} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error quotes the secret: %v", err)
				}
			}
		})
	}
}
