package config

import (
	"bytes"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/internal/section"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// The secrets the fake files and environment of FuzzLoadConfig hold. No
// error or warning may contain one, whatever the configuration.
var fzLoadSecrets = []string{
	"fileSECRETapi0123456789", "envSECRETapi0123456789", "postgres://dcvd:fileSECRETpg0123@db1:5432/dcvd",
	"fileSECRETpg0123", "envSECRETpg0123", "cfFileSECRETtoken0123", "aliyunEnvSECRET0123",
	"webhookFileSECRET0123", "smtpEnvSECRET0123", "9Rk6o1sT3Tq1d+DN2DqCvbXlVJm1cSl1Af9SYp8SO7Q",
	"f5193aa35b534ed4ea1d77e0d80ea82bd7e55499b571297501ff52629f123bb4",
}

// fzLoadOptions fakes the secret files, the environment and the host name,
// so that loading reads nothing of the host's.
func fzLoadOptions() LoadOptions {
	files := map[string]string{
		"/etc/dcvd/api-secret":                     "fileSECRETapi0123456789\n",
		"/etc/dcvd/store-dsn":                      "postgres://dcvd:fileSECRETpg0123@db1:5432/dcvd\n",
		"/etc/dcvd/store-key":                      "9Rk6o1sT3Tq1d+DN2DqCvbXlVJm1cSl1Af9SYp8SO7Q=\n",
		"/etc/dcvd/cloudflare-token":               "cfFileSECRETtoken0123\n",
		"/etc/dcvd/tsig-dcvd.key":                  "c2VjcmV0c2VjcmV0c2VjcmV0\n",
		"/etc/dcvd/webhook-secret":                 "webhookFileSECRET0123\n",
		"/etc/dcvd/empty":                          "\n",
		"/run/credentials/dcvd.service/api-secret": "fileSECRETapi0123456789\n",
	}
	env := map[string]string{
		"DCVD_API_SECRET":          "envSECRETapi0123456789",
		"DCVD_STORE_DSN":           "host=db1 dbname=dcvd user=dcvd password=envSECRETpg0123",
		"DCVD_STORE_KEY":           "f5193aa35b534ed4ea1d77e0d80ea82bd7e55499b571297501ff52629f123bb4",
		"ALIYUN_ACCESS_KEY_SECRET": "aliyunEnvSECRET0123",
		"SMTP_PASSWORD":            "smtpEnvSECRET0123",
		"CREDENTIALS_DIRECTORY":    "/run/credentials/dcvd.service",
	}
	return fakeLoadOptions(files, env)
}

// fzConfigSeeds are configurations in the shapes people write: the
// example, inline secrets in every section that takes one, a cluster
// store, notification channels, and common mistakes.
var fzConfigSeeds = []string{
	`[api]
base_url = "https://api.example.net/api/v1"
access_key_id = "AKID"
access_key_secret = "inlineSECRETapi0123456789"

[daemon]
state_dir = "/var/lib/dcvd"
callback_listen = "127.0.0.1:8089"
callback_url = "https://dcvd.example.com/"
http_listen = "127.0.0.1:8089"

[dns.main]
provider = "cloudflare"
api_token = "inlineSECRETcf0123456789"

[dns.tsig]
provider = "rfc2136"
server = "ns1.example.net:53"
key_name = "dcvd"
key_alg = "hmac-sha256"
key = "inlineSECRETtsig0123456789"

[[certificate]]
name = "shop"
service_id = "o91bZ"
dns = "main"
[certificate.domains]
"shop.example.com" = "http"
"*.example.com" = "dns"
"mail.example.com" = "admin@example.com"
[certificate.deploy]
dir = "/etc/ssl/dcvd/shop"
reload = "systemctl reload nginx"
`,
	`[api]
base_url = "http://127.0.0.1:8600/api/v1"
access_key_id = "AK"
access_key_secret_env = "DCVD_API_SECRET"
timeout = "45s"

[store]
driver = "postgres"
dsn = "postgres://dcvd:inlineSECRETpg0123456789@db1:5432/dcvd?sslmode=disable"
node = "web1"
lease = "30s"
encryption_key = "inlineSECRETkeyAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

[[certificate]]
name = "mail"
service_id = "x7Kp2"
key_type = "rsa-2048"
standalone = "0.0.0.0:80"
renew_before = "30d"
[certificate.domains]
"autodiscover.example.net" = "http"
[certificate.deploy]
dir = "/etc/ssl/dcvd/mail"
group = "mail"
key_mode = "0640"
[certificate.organization]
organization = "Example Ltd"
country = "cn"
date_of_incorporation = 2019-01-01
`,
	`[api]
base_url = "https://api.example.net/api/v1"
access_key_id = "AKID"
access_key_secret_file = "${CREDENTIALS_DIRECTORY}/api-secret"

[store]
driver = "postgres"
dsn_file = "/etc/dcvd/store-dsn"
encryption_key_env = "DCVD_STORE_KEY"

[dns.aliyun]
provider = "alidns"
access_key_id = "LTAI"
access_key_secret_env = "ALIYUN_ACCESS_KEY_SECRET"

[dns.aws]
provider = "route53"
profile = "dcvd"
secret_access_key = "inlineSECRETaws0123456789"

[notify.ops]
type = "webhook"
url = "https://hooks.example.com/dcvd"
secret = "inlineSECRETwebhook0123"
level = "all"

[notify.mail]
type = "smtp"
server = "smtp.example.com:587"
username = "dcvd"
password = "inlineSECRETsmtp0123456"
from = "dcvd@example.com"
to = ["ops@example.com"]

[notify.wecom]
type = "wecom"
key = "inlineSECRETwecom0123456"

[notify.ding]
type = "dingtalk"
access_token = "inlineSECRETding0123456"
secret = "SECinlineSECRETding0123"

[notify.lark]
type = "feishu"
hook_id = "inlineSECRETfeishu012345"
secret = "inlineSECRETlark0123456"

[[certificate]]
name = "apex"
service_id = "s1"
dns = "aliyun"
[certificate.domains]
"example.org" = "dns"
[certificate.deploy]
dir = "/etc/ssl/dcvd/apex"
`,
	"[api]\naccess_key_secret = \"inlineSECRET\\qescape\"\n",
	"[api]\naccess_key_secret = 918273645\n[api]\n",
	"api.access_key_secret = \"inlineSECRETdotted0123\"\napi.base_url = \"ftp://x\"\n[[certificate]]\nname = \"UPPER\"\n",
	"[daemon]\nschedule = \"61 * * * *\"\nmax_concurrent = 0\npoll_interval = \"1d\"\nexpiry_alert_days = [0, 400]\nlog_level = \"trace\"\n",
	"[[certificate]]\nname = \"a\"\nservice_id = \"s 1\"\nwebroot = [\"rel\", \"/x\", \"/x/\"]\nstandalone = \":80\"\n[certificate.domains]\n\"*.example.com\" = \"http\"\n\"192.0.2.1\" = \"dns\"\n\"co.uk\" = \"dns\"\n\"x.example.com\" = \"root@example.com\"\n[certificate.deploy]\ndir = \"/d\"\nmode = \"0200\"\nkey_mode = 640\n",
	"certificate = 3\ndns = []\nnotify = \"x\"\nstore = 1\n",
}

// FuzzLoadConfig loads fuzzed TOML through LoadConfig, from a file in the
// temporary directory, with the host's files, environment and name faked.
// Properties: no panic; a syntax error is reported with the file and line,
// any other error is a join of *ConfigError, each naming a key of the
// file's sections, sorted by key; loading the same bytes again gives the
// same config, warnings and error; no secret, from the fake files and
// environment or written inline (api.access_key_secret, store.dsn,
// store.encryption_key, a DNS provider's or a notification channel's
// secret keys), appears in an error or a warning; and a config that loads
// keeps the promises the daemon relies on (fzCheckLoaded).
func FuzzLoadConfig(f *testing.F) {
	dir := f.TempDir()
	// Providers and the PostgreSQL DSN parser look at the environment and
	// at files under $HOME (~/.aws, ~/.pgpass): point them at the
	// temporary directory, where nothing is.
	for k, v := range map[string]string{
		"HOME": dir, "AWS_CONFIG_FILE": filepath.Join(dir, "aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "aws-credentials"), "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_PROFILE": "", "AWS_REGION": "", "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
		"PGPASSFILE": filepath.Join(dir, "pgpass"), "PGSERVICEFILE": filepath.Join(dir, "pg_service.conf"),
		"PGSYSCONFDIR": dir, "PGHOST": "", "PGPORT": "", "PGUSER": "", "PGPASSWORD": "", "PGDATABASE": "",
		"PGSSLMODE": "", "PGSERVICE": "",
	} {
		f.Setenv(k, v)
	}
	if example, err := os.ReadFile(examplePath); err != nil {
		f.Fatal(err)
	} else {
		f.Add(example)
	}
	for _, s := range fzConfigSeeds {
		f.Add([]byte(s))
	}
	path := filepath.Join(dir, "dcvd.toml")
	opts := fzLoadOptions()

	f.Fuzz(func(t *testing.T, data []byte) {
		load := func(b []byte) (*Config, []string, error) {
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return LoadConfig(path, opts)
		}
		cfg, warns, err := load(data)
		fzCheckConfigError(t, data, path, err)
		if err == nil {
			if cfg == nil {
				t.Fatal("no config and no error")
			}
			fzCheckLoaded(t, cfg)
		} else if cfg != nil {
			t.Fatal("a config returned with an error")
		}
		text := fzMessages(err, warns)
		for _, s := range fzLoadSecrets {
			if strings.Contains(text, s) {
				t.Fatalf("a secret from a file or the environment appears in the messages:\n%s", text)
			}
		}
		if !sort.StringsAreSorted(warns) {
			t.Fatalf("warnings not sorted: %q", warns)
		}

		cfg2, warns2, err2 := load(data)
		if fzMessages(err2, warns2) != text {
			t.Fatalf("a second load gave other messages:\n%s\n---\n%s", text, fzMessages(err2, warns2))
		}
		if !fzDeepEqual(reflect.ValueOf(cfg), reflect.ValueOf(cfg2), map[[2]uintptr]bool{}) {
			t.Fatalf("a second load gave another config:\n%+v\n---\n%+v", cfg, cfg2)
		}

		// Inline secrets: load again with every secret value's letters and
		// digits rotated. Text of a secret that is in the messages of the
		// first load and not of the second came from the secret.
		spans := fzSecretSpans(data)
		if len(spans) == 0 {
			return
		}
		rotated := bytes.Clone(data)
		for _, sp := range spans {
			for i := sp[0]; i < sp[1]; i++ {
				rotated[i] = fzRotate(rotated[i])
			}
		}
		_, warns3, err3 := load(rotated)
		text3 := fzMessages(err3, warns3)
		for _, sp := range spans {
			secret := string(data[sp[0]:sp[1]])
			if w, leaked := fzLeak(secret, text, text3); leaked {
				t.Fatalf("the inline secret %q appears in the messages (%q):\n%s", secret, w, text)
			}
		}
	})
}

// fzMessages is what a user sees of a load: the error and the warnings.
func fzMessages(err error, warns []string) string {
	var b strings.Builder
	if err != nil {
		b.WriteString(err.Error())
	}
	for _, w := range warns {
		b.WriteString("\nwarning: ")
		b.WriteString(w)
	}
	return b.String()
}

// fzCheckConfigError checks the shape of LoadConfig's error for data.
func fzCheckConfigError(t *testing.T, data []byte, path string, err error) {
	t.Helper()
	var raw map[string]any
	if _, perr := toml.Decode(string(data), &raw); perr != nil {
		if err == nil {
			t.Fatalf("TOML that does not parse (%v) loaded", perr)
		}
		var ce *ConfigError
		if errors.As(err, &ce) || !strings.Contains(err.Error(), "config "+path+": ") {
			t.Fatalf("a syntax error is reported as %T %q, want the file and line", err, err)
		}
		return
	}
	if err == nil {
		return
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T is not a join of *ConfigError: %v", err, err)
	}
	sections := slices.Clone(cfgTopLevel)
	for k := range raw {
		sections = append(sections, section.KeyPart(k))
	}
	var keys []string
	for _, e := range j.Unwrap() {
		ce, ok := e.(*ConfigError)
		if !ok {
			t.Fatalf("joined error %T is not a *ConfigError: %v", e, e)
		}
		if ce.Key == "" || ce.Reason == "" {
			t.Fatalf("ConfigError without a key or a reason: %q", ce.Error())
		}
		if !slices.ContainsFunc(sections, func(s string) bool {
			return ce.Key == s || strings.HasPrefix(ce.Key, s+".") || strings.HasPrefix(ce.Key, s+"[")
		}) {
			t.Fatalf("ConfigError key %q names no section of the file", ce.Key)
		}
		keys = append(keys, ce.Key)
	}
	if !sort.StringsAreSorted(keys) {
		t.Fatalf("errors not sorted by key: %q", keys)
	}
}

// fzCheckLoaded checks what the daemon relies on in a config that loaded.
func fzCheckLoaded(t *testing.T, cfg *Config) {
	t.Helper()
	if u, err := url.Parse(cfg.API.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		t.Fatalf("api.base_url %q loaded", cfg.API.BaseURL)
	}
	if cfg.API.AccessKeyID == "" || cfg.API.AccessKeySecret == "" {
		t.Fatal("a config without access key loaded")
	}
	if !filepath.IsAbs(cfg.Daemon.StateDir) || cfg.Daemon.MaxConcurrent < 1 || cfg.Daemon.MaxConcurrent > 1000 ||
		cfg.Daemon.PollInterval <= 0 || cfg.Daemon.PollInterval > cfgMaxPollInterval {
		t.Fatalf("[daemon] out of bounds: %+v", cfg.Daemon)
	}
	if (cfg.Daemon.CallbackListen == "") != (cfg.Daemon.CallbackURL == "") {
		t.Fatalf("callback_listen %q without callback_url %q, or the reverse", cfg.Daemon.CallbackListen, cfg.Daemon.CallbackURL)
	}
	switch cfg.Store.Driver {
	case StoreDriverSQLite:
	case StoreDriverPostgres:
		if cfg.Store.DSN == "" || cfg.Store.Node == "" || len(cfg.Store.EncryptionKey) != StoreEncryptionKeySize {
			t.Fatal("a postgres store without dsn, node or a 32-byte key loaded")
		}
	default:
		t.Fatalf("store driver %q loaded", cfg.Store.Driver)
	}
	names, services, dirs := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, c := range cfg.Certificates {
		if !cfgNameRE.MatchString(c.Name) || len(c.Name) > cfgMaxNameLen || names[c.Name] {
			t.Fatalf("certificate name %q loaded (bad or repeated)", c.Name)
		}
		if c.ServiceID == "" || services[c.ServiceID] {
			t.Fatalf("certificate %q: service_id %q empty or repeated", c.Name, c.ServiceID)
		}
		if !filepath.IsAbs(c.Deploy.Dir) || filepath.Clean(c.Deploy.Dir) != c.Deploy.Dir || dirs[c.Deploy.Dir] {
			t.Fatalf("certificate %q: deploy.dir %q not absolute, not clean or repeated", c.Name, c.Deploy.Dir)
		}
		names[c.Name], services[c.ServiceID], dirs[c.Deploy.Dir] = true, true, true
		if c.Deploy.KeyMode&0o007 != 0 || c.Deploy.KeyMode&0o400 == 0 || c.Deploy.Mode&0o400 == 0 {
			t.Fatalf("certificate %q: modes %04o / key %04o", c.Name, c.Deploy.Mode, c.Deploy.KeyMode)
		}
		if len(c.Domains) == 0 {
			t.Fatalf("certificate %q without names loaded", c.Name)
		}
		if err := reseller.ValidateDomainDCV(c.Domains); err != nil {
			t.Fatalf("certificate %q: the reseller refuses its domains: %v", c.Name, err)
		}
		for n, m := range c.Domains {
			if nn, err := reseller.NormalizeDomain(n); err != nil || nn != n {
				t.Fatalf("certificate %q: name %q is not normalized (%q, %v)", c.Name, n, nn, err)
			}
			if m == reseller.MethodDNS && cfg.DNS[c.DNS] == nil {
				t.Fatalf("certificate %q: %q is validated by dns, but [dns.%s] is not configured", c.Name, n, c.DNS)
			}
		}
	}
}

// fzSecretSpans finds, lexically, the values written inline for keys that
// hold secrets, and returns their byte ranges in data (quotes excluded).
// Tables are tracked from [header] lines, dotted keys are followed, and
// multi-line strings are skipped; inline tables are not looked into.
func fzSecretSpans(data []byte) [][2]int {
	var spans [][2]int
	var table []string
	pos := 0
	for pos < len(data) {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos
		}
		line := data[pos:end]
		start := pos
		pos = end + 1
		trimmed := bytes.TrimLeft(line, " \t")
		if len(trimmed) == 0 || trimmed[0] == '#' {
			continue
		}
		if trimmed[0] == '[' {
			h := strings.Trim(string(trimmed), "[] \t\r")
			if i := strings.IndexByte(h, ']'); i >= 0 {
				h = h[:i]
			}
			table = fzKeyPath(h)
			continue
		}
		eq := bytes.IndexByte(line, '=')
		if eq < 0 {
			continue
		}
		full := append(slices.Clone(table), fzKeyPath(string(line[:eq]))...)
		v := eq + 1
		for v < len(line) && (line[v] == ' ' || line[v] == '\t') {
			v++
		}
		rest := line[v:]
		if bytes.HasPrefix(rest, []byte(`"""`)) || bytes.HasPrefix(rest, []byte(`'''`)) {
			// A multi-line string: skip to its end, wherever that is.
			closing := rest[:3]
			if i := bytes.Index(data[start+v+3:], closing); i >= 0 {
				pos = start + v + 3 + i + 3
				if nl := bytes.IndexByte(data[pos:], '\n'); nl >= 0 {
					pos += nl + 1
				} else {
					pos = len(data)
				}
			} else {
				pos = len(data)
			}
			continue
		}
		if !fzSecretKey(full) {
			continue
		}
		var a, b int
		switch {
		case len(rest) > 0 && (rest[0] == '"' || rest[0] == '\''):
			a = start + v + 1
			b = a
			for b < end && data[b] != rest[0] {
				if rest[0] == '"' && data[b] == '\\' && b+1 < end {
					b++
				}
				b++
			}
			b = min(b, end)
		default:
			a = start + v
			b = a
			for b < end && !bytes.ContainsRune([]byte(" \t\r,}]#"), rune(data[b])) {
				b++
			}
		}
		if b > a {
			spans = append(spans, [2]int{a, b})
		}
	}
	return spans
}

// fzKeyPath splits a TOML key (dotted, quoted parts kept whole) into its
// parts, without quotes and spaces.
func fzKeyPath(k string) []string {
	var parts []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

// fzProviderSecrets are the secret keys of every DNS provider type.
var fzProviderSecrets = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range providers.Kinds() {
		for _, s := range k.Secret {
			m[s] = true
		}
	}
	return m
}()

// fzSecretKey reports whether a key path holds a secret written inline.
func fzSecretKey(p []string) bool {
	switch {
	case len(p) == 2 && p[0] == "api":
		return p[1] == "access_key_secret"
	case len(p) == 2 && p[0] == "store":
		return p[1] == "dsn" || p[1] == "encryption_key"
	case len(p) == 3 && p[0] == "dns":
		return fzProviderSecrets[p[2]]
	case len(p) == 3 && p[0] == "notify":
		return slices.Contains([]string{"secret", "password", "key", "access_token", "hook_id"}, p[2])
	}
	return false
}

// fzRotate maps a letter or digit to another of its kind (ROT13, digits
// +5), so that a value keeps its shape and its length.
func fzRotate(c byte) byte {
	switch {
	case c >= 'a' && c <= 'z':
		return 'a' + (c-'a'+13)%26
	case c >= 'A' && c <= 'Z':
		return 'A' + (c-'A'+13)%26
	case c >= '0' && c <= '9':
		return '0' + (c-'0'+5)%10
	}
	return c
}

// fzLeak reports whether a piece of secret (6 bytes, 4 of them letters or
// digits) moved with the secret: it occurs more often in the messages of
// the original load than in those of the load with the secret rotated, and
// its rotation more often in the latter. The messages' own text does not
// move, even when the rotated secret takes another path through the loader
// (a dsn that no longer starts with "postgres://" is not told it "does not
// parse" as a postgres:// URL).
func fzLeak(secret, orig, rotated string) (string, bool) {
	const n = 6
	for i := 0; i+n <= len(secret); i++ {
		w := secret[i : i+n]
		rw := make([]byte, n)
		alnum := 0
		for j := 0; j < n; j++ {
			if rw[j] = fzRotate(w[j]); rw[j] != w[j] {
				alnum++
			}
		}
		if alnum >= 4 && strings.Count(orig, w) > strings.Count(rotated, w) &&
			strings.Count(rotated, string(rw)) > strings.Count(orig, string(rw)) {
			return w, true
		}
	}
	return "", false
}

// fzDeepEqual is reflect.DeepEqual, except that two funcs are equal when
// both are nil or both are not (a config holds clocks and HTTP clients).
func fzDeepEqual(a, b reflect.Value, seen map[[2]uintptr]bool) bool {
	if a.IsValid() != b.IsValid() {
		return false
	}
	if !a.IsValid() {
		return true
	}
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Func, reflect.Chan, reflect.UnsafePointer:
		return a.IsNil() == b.IsNil()
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		k := [2]uintptr{a.Pointer(), b.Pointer()}
		if seen[k] {
			return true
		}
		seen[k] = true
		return fzDeepEqual(a.Elem(), b.Elem(), seen)
	case reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return fzDeepEqual(a.Elem(), b.Elem(), seen)
	case reflect.Struct:
		for i := range a.NumField() {
			if !fzDeepEqual(a.Field(i), b.Field(i), seen) {
				return false
			}
		}
		return true
	case reflect.Slice, reflect.Array:
		if a.Kind() == reflect.Slice && a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !fzDeepEqual(a.Index(i), b.Index(i), seen) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		it := a.MapRange()
		for it.Next() {
			bv := b.MapIndex(it.Key())
			if !bv.IsValid() || !fzDeepEqual(it.Value(), bv, seen) {
				return false
			}
		}
		return true
	case reflect.String:
		return a.String() == b.String()
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return a.Uint() == b.Uint()
	case reflect.Float32, reflect.Float64:
		x, y := a.Float(), b.Float()
		return x == y || x != x && y != y
	case reflect.Complex64, reflect.Complex128:
		return a.Complex() == b.Complex()
	}
	return false
}
