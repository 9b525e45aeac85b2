package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/reseller"
)

// testSecret is the API secret the fake files and environment hold; no
// error or warning may contain it.
const testSecret = "TOPSECRET-s3cr3t-VALUE"

// testLoadOptions fakes the secret files and environment variables of the
// test configurations and of config.example.toml.
func testLoadOptions() LoadOptions {
	files := map[string]string{
		"/etc/dcvd/api-secret":       testSecret + "\n",
		"/etc/dcvd/store-dsn":        testDSN + "\n",
		"/etc/dcvd/store-key":        testStoreKeyB64 + "\n",
		"/etc/dcvd/empty-secret":     "\n",
		"/etc/dcvd/tsig.key":         "c2VjcmV0c2VjcmV0c2VjcmV0\n",
		"/etc/dcvd/tsig-dcvd.key":    "c2VjcmV0c2VjcmV0c2VjcmV0\n",
		"/etc/dcvd/tsig-bad.key":     "secret secret\n",
		"/etc/dcvd/cloudflare-token": "cf-token-value-0123456789\n",
		"/etc/dcvd/aliyun-secret":    "aliyun-secret-value\n",
	}
	env := map[string]string{
		"DCVD_API_SECRET":          testSecret,
		"DCVD_STORE_DSN":           testDSN,
		"DCVD_STORE_KEY":           testStoreKeyHex,
		"ALIYUN_ACCESS_KEY_SECRET": "aliyun-secret-value",
	}
	return fakeLoadOptions(files, env)
}

// fakeLoadOptions reads files and environment variables from the maps
// only, and names the host web1.example.com: loading touches nothing of
// the machine's.
func fakeLoadOptions(files, env map[string]string) LoadOptions {
	return LoadOptions{
		ReadFile: func(name string) ([]byte, error) {
			if v, ok := files[name]; ok {
				return []byte(v), nil
			}
			return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
		},
		LookupEnv: func(name string) (string, bool) {
			v, ok := env[name]
			return v, ok
		},
		Hostname: func() (string, error) { return "web1.example.com", nil },
	}
}

// testBaseConfig is valid. The #MARKER lines are where cases add keys.
const testBaseConfig = `
[api]
base_url = "https://api.example.net/api/v1"
access_key_id = "AKID"
access_key_secret_file = "/etc/dcvd/api-secret"
#API

[daemon]
state_dir = "/var/lib/dcvd"
#DAEMON

[dns.main]
provider = "rfc2136"
server = "ns1.example.net:53"
key_name = "dcvd"
key_alg = "hmac-sha256"
key_file = "/etc/dcvd/tsig.key"
#DNS

[[certificate]]
name = "shop"
service_id = "o91bZ"
dns = "main"
webroot = "/var/www/shop"
#CERT
[certificate.domains]
"shop.example.com" = "http"
"*.example.com" = "dns"
#DOMAINS
[certificate.deploy]
dir = "/etc/ssl/dcvd/shop"
reload = "systemctl reload nginx"
#DEPLOY
`

// edit applies old → new replacements (pairs) to testBaseConfig.
func edit(pairs ...string) string {
	s := testBaseConfig
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			panic("edit: no " + pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func load(t *testing.T, text string) (*Config, []string, error) {
	t.Helper()
	return parseConfig("test.toml", []byte(text), testLoadOptions())
}

// checkLoadErrors checks the outcome of a load that failed with err: no
// config, every error a *ConfigError, and one line per error, each
// starting with its want in order.
func checkLoadErrors(t *testing.T, cfg *Config, err error, want []string) {
	t.Helper()
	if cfg != nil {
		t.Errorf("a config came with the error")
	}
	errorKeys(t, err) // every error is a *ConfigError
	got := strings.Split(err.Error(), "\n")
	if len(got) != len(want) {
		t.Fatalf("%d errors, want %d:\n%s", len(got), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Errorf("error %d = %q\nwant prefix %q", i, got[i], w)
		}
	}
}

// errorKeys returns the key of every *ConfigError joined in err; any other
// error fails the test.
func errorKeys(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error is not a joined error: %v", err)
	}
	var keys []string
	for _, e := range j.Unwrap() {
		var ce *ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("error %q is not a *ConfigError", e)
		}
		keys = append(keys, ce.Key)
	}
	return keys
}

func TestConfigValid(t *testing.T) {
	text := edit(
		"#API", `timeout = "45s"
ca_roots_file = "/etc/dcvd/roots.pem"`,
		"#DAEMON", `schedule = "@hourly"
callback_listen = "127.0.0.1:8089"
callback_url = "https://dcvd.example.com/"
http_listen = "127.0.0.1:8089"
max_concurrent = 2
poll_interval = "3s"
log_format = "json"
log_level = "debug"`,
		"#CERT", `key_type = "rsa-4096"
reuse_key = true
webroot_owner = "www-data"
webroot_group = "www-data"
http_connect = "127.0.0.1:80"
renew_before = "30d"
contact_email = "admin@example.com"`,
		`webroot = "/var/www/shop"`, `webroot = ["/var/www/shop/", "/srv/www/shop"]`,
		"#DOMAINS", `"Shop.Example.COM." = "HTTPS"
"mail.example.com" = "admin@example.com"
"192.0.2.1" = "http"`,
		`"shop.example.com" = "http"`, `"www.example.com" = "http"`,
		"#DEPLOY", `owner = "root"
group = "ssl-cert"
mode = "0640"
key_mode = "0o640"
reload_timeout = "1m30s"
[certificate.organization]
organization = "Example Ltd"
country = "cn"
date_of_incorporation = 2019-01-01
contact_phone = "13800138000"`,
	)
	cfg, warns, err := load(t, text)
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %q", warns)
	}
	api := cfg.API
	if api.BaseURL != "https://api.example.net/api/v1" || api.AccessKeyID != "AKID" || api.AccessKeySecret != testSecret ||
		api.Timeout != 45*time.Second || api.CARootsFile != "/etc/dcvd/roots.pem" {
		t.Errorf("api = %+v (secret %q)", api, api.AccessKeySecret)
	}
	wantDaemon := DaemonConfig{StateDir: "/var/lib/dcvd", Schedule: "@hourly", CallbackListen: "127.0.0.1:8089",
		CallbackURL: "https://dcvd.example.com", HTTPListen: "127.0.0.1:8089", LogFormat: "json", LogLevel: "debug",
		MaxConcurrent: 2, PollInterval: 3 * time.Second, ExpiryAlertDays: DefaultExpiryAlertDays, ServiceAlertDays: DefaultServiceAlertDays,
		HistoryRetention: DefaultHistoryRetention, HistoryPerCertificate: DefaultHistoryPerCertificate}
	if !reflect.DeepEqual(cfg.Daemon, wantDaemon) {
		t.Errorf("daemon = %+v, want %+v", cfg.Daemon, wantDaemon)
	}
	if d := cfg.DNS["main"]; d == nil || d.Kind != "rfc2136" || len(cfg.DNS) != 1 {
		t.Errorf("dns = %v", cfg.DNS)
	}
	if len(cfg.Certificates) != 1 {
		t.Fatalf("%d certificates", len(cfg.Certificates))
	}
	c := cfg.Certificates[0]
	if c.Name != "shop" || c.ServiceID != "o91bZ" || c.KeyType != KeyRSA4096 || !c.ReuseKey || c.DNS != "main" ||
		c.HTTPConnect != "127.0.0.1:80" || c.Standalone != "" || c.RenewBefore != 30*24*time.Hour ||
		c.ContactEmail != "admin@example.com" {
		t.Errorf("certificate = %+v", c)
	}
	if len(c.Webroots) != 2 || c.Webroots[0].Dir != "/var/www/shop" || c.Webroots[1].Dir != "/srv/www/shop" ||
		c.Webroots[1].Owner != "www-data" || c.Webroots[1].Group != "www-data" {
		t.Errorf("webroots = %+v", c.Webroots)
	}
	wantDomains := map[string]reseller.Method{
		"*.example.com": "dns", "www.example.com": "http", "shop.example.com": "https",
		"mail.example.com": "admin@example.com", "192.0.2.1": "http",
	}
	if fmt.Sprint(c.Domains) != fmt.Sprint(wantDomains) {
		t.Errorf("domains = %v, want %v", c.Domains, wantDomains)
	}
	wantNames := []string{"*.example.com", "192.0.2.1", "mail.example.com", "shop.example.com", "www.example.com"}
	if !slices.Equal(c.Names(), wantNames) {
		t.Errorf("Names() = %q, want %q", c.Names(), wantNames)
	}
	wantDeploy := deploy.Spec{Dir: "/etc/ssl/dcvd/shop", Owner: "root", Group: "ssl-cert", Mode: 0o640, KeyMode: 0o640,
		Reload: "systemctl reload nginx", ReloadTimeout: 90 * time.Second}
	if c.Deploy != wantDeploy {
		t.Errorf("deploy = %+v, want %+v", c.Deploy, wantDeploy)
	}
	o := c.Organization
	if o == nil || o.Organization != "Example Ltd" || o.Country != "CN" || o.DateOfIncorporation != "2019-01-01" ||
		o.ContactPhone != "13800138000" {
		t.Errorf("organization = %+v", o)
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, _, err := load(t, `
[api]
base_url = "http://127.0.0.1:8600/api/v1"
access_key_id = "AKID"
access_key_secret_env = "DCVD_API_SECRET"

[[certificate]]
name = "a"
service_id = "s1"
[certificate.domains]
"a.example.com" = "admin@example.com"
[certificate.deploy]
dir = "/etc/ssl/a"
`)
	if err != nil {
		t.Fatal(err)
	}
	wantDaemon := DaemonConfig{StateDir: DefaultStateDir, Schedule: DefaultSchedule, LogFormat: "console",
		LogLevel: "info", MaxConcurrent: 4, PollInterval: 10 * time.Second, ExpiryAlertDays: DefaultExpiryAlertDays, ServiceAlertDays: DefaultServiceAlertDays,
		HistoryRetention: DefaultHistoryRetention, HistoryPerCertificate: DefaultHistoryPerCertificate}
	if !reflect.DeepEqual(cfg.Daemon, wantDaemon) {
		t.Errorf("daemon = %+v, want %+v", cfg.Daemon, wantDaemon)
	}
	if cfg.API.Timeout != 30*time.Second || cfg.API.AccessKeySecret != testSecret {
		t.Errorf("api timeout %s, secret from env ok: %v", cfg.API.Timeout, cfg.API.AccessKeySecret == testSecret)
	}
	c := cfg.Certificates[0]
	if c.KeyType != "ecdsa-p256" || c.ReuseKey || c.RenewBefore != 0 || c.Organization != nil || c.Webroots != nil {
		t.Errorf("certificate = %+v", c)
	}
	wantDeploy := deploy.Spec{Dir: "/etc/ssl/a", Mode: 0o644, KeyMode: 0o600, ReloadTimeout: 60 * time.Second}
	if c.Deploy != wantDeploy {
		t.Errorf("deploy = %+v, want %+v", c.Deploy, wantDeploy)
	}
}

func TestConfigBad(t *testing.T) {
	tests := []struct {
		name string
		text string
		// want are "KEY: reason substring" expectations, one per error,
		// in the sorted order of the errors.
		want []string
	}{
		{"unknown top-level key", edit("\n[api]", "colour = \"blue\"\n[api]"),
			[]string{"colour: unknown section or key"}},
		{"unknown key in api", edit("#API", "secret = \"x\""), []string{"api.secret: unknown key"}},
		{"unknown key in daemon", edit("#DAEMON", "statedir = \"/x\""), []string{"daemon.statedir: unknown key"}},
		{"unknown key in certificate", edit("#CERT", "renew = true"), []string{"certificate[shop].renew: unknown key"}},
		{"unknown key in deploy", edit("#DEPLOY", "path = \"/x\""), []string{"certificate[shop].deploy.path: unknown key"}},
		{"unknown key in organization", edit("#DEPLOY", "[certificate.organization]\ncompany = \"X\""),
			[]string{"certificate[shop].organization.company: unknown key"}},
		{"unknown key in dns section", edit("#DNS", "token = \"x\""), []string{"dns.main.token: unknown key"}},
		{"quoted unknown key", edit("#DEPLOY", `"a.b" = 1`), []string{`certificate[shop].deploy."a.b": unknown key`}},
		{"missing service_id", edit("service_id = \"o91bZ\"\n", ""),
			[]string{"certificate[shop].service_id: required"}},
		{"empty service_id", edit(`service_id = "o91bZ"`, `service_id = " "`),
			[]string{"certificate[shop].service_id: must not be empty"}},
		{"wildcard with http", edit(`"*.example.com" = "dns"`, `"*.example.com" = "http"`),
			[]string{`certificate[shop].domains."*.example.com": a wildcard cannot be validated by http`}},
		{"bad approver", edit("#DOMAINS", `"mail.example.com" = "info@example.com"`),
			[]string{`certificate[shop].domains."mail.example.com": `}},
		{"approver of another domain", edit("#DOMAINS", `"mail.example.com" = "admin@example.org"`),
			[]string{`certificate[shop].domains."mail.example.com": `}},
		{"bad method", edit("#DOMAINS", `"mail.example.com" = "ftp"`),
			[]string{`certificate[shop].domains."mail.example.com": method "ftp" is none of`}},
		{"bad domain name", edit("#DOMAINS", `"bad_name.example.com" = "dns"`),
			[]string{`certificate[shop].domains."bad_name.example.com": `}},
		{"duplicate after normalization", edit("#DOMAINS", `"SHOP.example.com." = "http"`),
			[]string{`certificate[shop].domains."shop.example.com": listed 2 times`}},
		{"method not a string", edit("#DOMAINS", `"mail.example.com" = 1`),
			[]string{`certificate[shop].domains."mail.example.com": must be a string`}},
		{"empty domains", edit(`"shop.example.com" = "http"`+"\n"+`"*.example.com" = "dns"`, "",
			`dns = "main"`, "", `webroot = "/var/www/shop"`, ""),
			[]string{"certificate[shop].domains: must list at least one name"}},
		{"missing domains", edit("[certificate.domains]\n"+`"shop.example.com" = "http"`+"\n"+`"*.example.com" = "dns"`, "",
			`dns = "main"`, "", `webroot = "/var/www/shop"`, ""),
			[]string{"certificate[shop].domains: required section [certificate.domains] is missing"}},
		{"dns name without dns provider", edit(`dns = "main"`, ""),
			[]string{`certificate[shop].dns: required by the dns-validated names "*.example.com"`}},
		{"unknown dns section name", edit(`dns = "main"`, `dns = "nope"`),
			[]string{`certificate[shop].dns: no [dns.nope] section in the config (sections: "main")`}},
		{"unknown dns provider type", edit(`provider = "rfc2136"`, `provider = "bind-magic"`),
			[]string{`dns.main.provider: unknown provider "bind-magic"`}},
		{"http name without webroot", edit(`webroot = "/var/www/shop"`, ""),
			[]string{`certificate[shop].webroot: required by the http/https-validated names "shop.example.com"`}},
		{"relative webroot", edit(`webroot = "/var/www/shop"`, `webroot = "www/shop"`),
			[]string{`certificate[shop].webroot: "www/shop" must be an absolute path`}},
		{"webroot list with a number", edit(`webroot = "/var/www/shop"`, `webroot = ["/a", 2]`),
			[]string{`certificate[shop].webroot: must be a path or a list of paths, but the list holds an integer`}},
		{"webroot listed twice", edit(`webroot = "/var/www/shop"`, `webroot = ["/a", "/a/"]`),
			[]string{`certificate[shop].webroot: /a is listed twice`}},
		{"webroot_owner without webroot", edit(`webroot = "/var/www/shop"`, `standalone = ":80"`+"\nwebroot_owner = \"www\""),
			[]string{`certificate[shop].webroot_owner: only meaningful with webroot`}},
		{"webroot and standalone", edit("#CERT", `standalone = "0.0.0.0:80"`),
			[]string{`certificate[shop].standalone: set webroot or standalone, not both`}},
		{"https with standalone", edit(`webroot = "/var/www/shop"`, `standalone = "0.0.0.0:80"`,
			`"shop.example.com" = "http"`, `"shop.example.com" = "https"`),
			[]string{`certificate[shop].domains."shop.example.com": https validation needs a TLS server`}},
		{"standalone on the daemon's listener", edit(`webroot = "/var/www/shop"`, `standalone = "127.0.0.1:8080"`,
			"#DAEMON", `http_listen = "127.0.0.1:8080"`),
			[]string{`certificate[shop].standalone: 127.0.0.1:8080 is already the daemon's own listener`}},
		{"bad standalone", edit(`webroot = "/var/www/shop"`, `standalone = "80"`),
			[]string{`certificate[shop].standalone: "80" is not "host:port"`}},
		{"bad http_connect", edit("#CERT", `http_connect = "127.0.0.1:0"`),
			[]string{`certificate[shop].http_connect: "127.0.0.1:0": port must be a number from 1 to 65535`}},
		{"bad key_type", edit("#CERT", `key_type = "rsa-1024"`),
			[]string{`certificate[shop].key_type: "rsa-1024" is none of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-4096`}},
		{"reuse_key not a boolean", edit("#CERT", `reuse_key = "yes"`),
			[]string{`certificate[shop].reuse_key: must be true or false, not a string`}},
		{"bad renew_before", edit("#CERT", `renew_before = "30 days"`),
			[]string{`certificate[shop].renew_before: invalid duration "30 days"`}},
		{"renew_before as a number", edit("#CERT", `renew_before = 30`),
			[]string{`certificate[shop].renew_before: must be a duration string`}},
		{"renew_before too long", edit("#CERT", `renew_before = "400d"`),
			[]string{`certificate[shop].renew_before: must be shorter than the longest certificate lifetime`}},
		{"negative renew_before", edit("#CERT", `renew_before = "-1d"`),
			[]string{`certificate[shop].renew_before: must be positive`}},
		{"bad contact_email", edit("#CERT", `contact_email = "Admin <admin@example.com>"`),
			[]string{`certificate[shop].contact_email: "Admin <admin@example.com>" is not a plain e-mail address`}},
		{"bad name", edit(`name = "shop"`, `name = "Shop!"`),
			[]string{`certificate[#1].name: "Shop!" must match`}},
		{"missing name", edit(`name = "shop"`, ""),
			[]string{`certificate[#1].name: required`}},
		{"duplicate certificate names",
			testBaseConfig + "\n[[certificate]]\nname = \"shop\"\nservice_id = \"x2\"\n[certificate.domains]\n\"a.example.com\" = \"dns\"\n[certificate.deploy]\ndir = \"/etc/ssl/other\"\n",
			[]string{`certificate[shop].dns: required by the dns-validated names "a.example.com"`,
				`certificate[shop].name: "shop" names more than one [[certificate]] (#1, #2)`}},
		{"duplicate service_id and deploy dir",
			testBaseConfig + "\n[[certificate]]\nname = \"two\"\nservice_id = \"o91bZ\"\n[certificate.domains]\n\"a.example.com\" = \"admin@example.com\"\n[certificate.deploy]\ndir = \"/etc/ssl/dcvd/shop/\"\n",
			[]string{`certificate[two].deploy.dir: /etc/ssl/dcvd/shop is also the deploy directory of certificate[shop]`,
				`certificate[two].service_id: service_id "o91bZ" is also used by certificate[shop]`}},
		{"single [certificate] table", strings.Replace(testBaseConfig, "[[certificate]]", "[certificate]", 1),
			[]string{`certificate: must be an array of tables: write [[certificate]]`}},
		{"bad schedule", edit("#DAEMON", `schedule = "every 6 hours"`),
			[]string{`daemon.schedule: "every 6 hours" is not a 5-field cron expression`}},
		{"six-field schedule", edit("#DAEMON", `schedule = "0 17 */6 * * *"`),
			[]string{`daemon.schedule: "0 17 */6 * * *" is not a 5-field cron expression`}},
		{"callback_listen without callback_url", edit("#DAEMON", `callback_listen = "127.0.0.1:8089"`),
			[]string{`daemon.callback_url: required with daemon.callback_listen`}},
		{"callback_url without callback_listen", edit("#DAEMON", `callback_url = "https://dcvd.example.com"`),
			[]string{`daemon.callback_listen: required with daemon.callback_url`}},
		{"callback_url not http", edit("#DAEMON", `callback_url = "ftp://dcvd.example.com"`+"\n"+`callback_listen = ":8089"`),
			[]string{`daemon.callback_url: "ftp://dcvd.example.com" is not an absolute http or https URL`}},
		{"relative state_dir", edit(`state_dir = "/var/lib/dcvd"`, `state_dir = "state"`),
			[]string{`daemon.state_dir: "state" must be an absolute path`}},
		{"max_concurrent as a string", edit("#DAEMON", `max_concurrent = "4"`),
			[]string{`daemon.max_concurrent: must be an integer, not a string`}},
		{"max_concurrent zero", edit("#DAEMON", `max_concurrent = 0`),
			[]string{`daemon.max_concurrent: must be from 1 to 1000, got 0`}},
		{"poll_interval too long", edit("#DAEMON", `poll_interval = "1h"`),
			[]string{`daemon.poll_interval: must be at most 5m0s`}},
		{"bad log_format", edit("#DAEMON", `log_format = "text"`),
			[]string{`daemon.log_format: "text" is neither "console" nor "json"`}},
		{"bad log_level", edit("#DAEMON", `log_level = "verbose"`),
			[]string{`daemon.log_level: "verbose" is none of debug, info, warn, error`}},
		{"daemon not a table", "daemon = 1\n" + edit("[daemon]\n"+`state_dir = "/var/lib/dcvd"`, ""),
			[]string{`daemon: must be a table [daemon], not an integer`}},
		{"bad mode string", edit("#DEPLOY", `mode = "rw-r--r--"`),
			[]string{`certificate[shop].deploy.mode: "rw-r--r--" is not an octal file mode like "0640"`}},
		{"mode as an integer", edit("#DEPLOY", `mode = 640`),
			[]string{`certificate[shop].deploy.mode: must be a string like "0640", not an integer`}},
		{"mode with setuid", edit("#DEPLOY", `mode = "4755"`),
			[]string{`certificate[shop].deploy.mode: "4755" is not an octal file mode like "0640"`}},
		{"world-readable key", edit("#DEPLOY", `key_mode = "0644"`),
			[]string{`certificate[shop].deploy.key_mode: 0644 lets every user of the host read or change the private key`}},
		{"key not readable by its owner", edit("#DEPLOY", `key_mode = "0040"`),
			[]string{`certificate[shop].deploy.key_mode: "0040" does not let the owner read the file`}},
		{"relative deploy dir", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "ssl/shop"`),
			[]string{`certificate[shop].deploy.dir: "ssl/shop" must be an absolute path`}},
		{"missing deploy dir", edit(`dir = "/etc/ssl/dcvd/shop"`, ""),
			[]string{`certificate[shop].deploy.dir: required`}},
		{"missing deploy section", edit("[certificate.deploy]\n"+`dir = "/etc/ssl/dcvd/shop"`+"\n"+`reload = "systemctl reload nginx"`, ""),
			[]string{`certificate[shop].deploy: required section [certificate.deploy] is missing`}},
		{"deploy not a table", edit("#CERT", `deploy = "/etc/ssl"`,
			"[certificate.deploy]\n"+`dir = "/etc/ssl/dcvd/shop"`+"\n"+`reload = "systemctl reload nginx"`, ""),
			[]string{`certificate[shop].deploy: must be a table, not a string`}},
		{"bad reload_timeout", edit("#DEPLOY", `reload_timeout = "soon"`),
			[]string{`certificate[shop].deploy.reload_timeout: invalid duration "soon"`}},
		{"bad country", edit("#DEPLOY", "[certificate.organization]\ncountry = \"China\""),
			[]string{`certificate[shop].organization.country: "China" is not a two-letter country code`}},
		{"bad date_of_incorporation", edit("#DEPLOY", "[certificate.organization]\ndate_of_incorporation = \"1/1/2019\""),
			[]string{`certificate[shop].organization.date_of_incorporation: "1/1/2019" is not a date`}},
		{"missing api", strings.Replace(testBaseConfig, "[api]\nbase_url", "[apix]\nbase_url", 1),
			[]string{`api: required section [api] is missing`, `apix: unknown section or key`}},
		{"base_url not http", edit(`base_url = "https://api.example.net/api/v1"`, `base_url = "api.example.net/api/v1"`),
			[]string{`api.base_url: "api.example.net/api/v1" is not an absolute http or https URL`}},
		{"base_url with a query", edit(`base_url = "https://api.example.net/api/v1"`, `base_url = "https://api.example.net/api/v1?x=1"`),
			[]string{`api.base_url: "https://api.example.net/api/v1?x=1" must not have a query or fragment`}},
		{"base_url with user info", edit(`base_url = "https://api.example.net/api/v1"`, `base_url = "https://u:pw@api.example.net/api/v1"`),
			[]string{`api.base_url: must not contain user info`}},
		{"missing access_key_id", edit(`access_key_id = "AKID"`, ""),
			[]string{`api.access_key_id: required`}},
		{"no secret", edit(`access_key_secret_file = "/etc/dcvd/api-secret"`, ""),
			[]string{`api.access_key_secret: required: set access_key_secret_file`}},
		{"two secrets", edit("#API", `access_key_secret_env = "DCVD_API_SECRET"`),
			[]string{`api.access_key_secret: set more than once (api.access_key_secret_file, api.access_key_secret_env)`}},
		{"secret file missing", edit(`/etc/dcvd/api-secret`, `/etc/dcvd/nope`),
			[]string{`api.access_key_secret_file: cannot read the secret: open /etc/dcvd/nope`}},
		{"secret file empty", edit(`/etc/dcvd/api-secret`, `/etc/dcvd/empty-secret`),
			[]string{`api.access_key_secret_file: file /etc/dcvd/empty-secret is empty`}},
		{"secret env unset", edit(`access_key_secret_file = "/etc/dcvd/api-secret"`, `access_key_secret_env = "NOPE"`),
			[]string{`api.access_key_secret_env: environment variable NOPE is not set`}},
		{"bad timeout", edit("#API", `timeout = "0s"`),
			[]string{`api.timeout: must be positive`}},
		{"negative request rate", edit("#API", `max_requests_per_second = -1`),
			[]string{`api.max_requests_per_second: must not be negative`}},
		{"negative float request rate", edit("#API", `max_requests_per_second = -0.5`),
			[]string{`api.max_requests_per_second: must not be negative`}},
		{"NaN request rate", edit("#API", `max_requests_per_second = nan`),
			[]string{`api.max_requests_per_second: must be a finite number`}},
		{"infinite request rate", edit("#API", `max_requests_per_second = inf`),
			[]string{`api.max_requests_per_second: must be a finite number`}},
		{"request rate as a string", edit("#API", `max_requests_per_second = "20"`),
			[]string{`api.max_requests_per_second: must be a number of requests per second such as 20 or 0.5, not a string`}},
		{"request rate as a boolean", edit("#API", `max_requests_per_second = true`),
			[]string{`api.max_requests_per_second: must be a number of requests per second such as 20 or 0.5, not a boolean`}},
		{"dns not tables", edit("[dns.main]\n", "[dnsx]\n", "\n[api]", "dns = \"main\"\n[api]"),
			[]string{`certificate[shop].dns: no [dns.main] section in the config (sections: none)`,
				`dns: must be tables such as [dns.main], not a string`, `dnsx: unknown section or key`}},
		{"dns provider missing key", edit(`server = "ns1.example.net:53"`, ""),
			[]string{`dns.main.server: required by provider rfc2136`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := load(t, tt.text)
			if err == nil {
				t.Fatalf("loaded: %+v", cfg)
			}
			checkLoadErrors(t, cfg, err, tt.want)
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("the secret is in the error: %v", err)
			}
		})
	}
}

// TestConfigAllAtOnce checks that problems all over the file are reported
// together, sorted, and the same way every time.
func TestConfigAllAtOnce(t *testing.T) {
	text := edit(
		"#API", "timeout = 30",
		"#DAEMON", `schedule = "nope"`+"\n"+`callback_listen = "127.0.0.1:8089"`,
		`dns = "main"`, `dns = "other"`,
		"#CERT", `key_type = "dsa"`+"\nbogus = 1",
		`"*.example.com" = "dns"`, `"*.example.com" = "https"`,
		"#DEPLOY", `mode = 644`,
	)
	_, _, err := load(t, text)
	if err == nil {
		t.Fatal("loaded")
	}
	want := []string{
		"api.timeout",
		"certificate[shop].bogus",
		"certificate[shop].deploy.mode",
		`certificate[shop].dns`,
		`certificate[shop].domains."*.example.com"`,
		"certificate[shop].key_type",
		"daemon.callback_url",
		"daemon.schedule",
	}
	if got := errorKeys(t, err); !slices.Equal(got, want) {
		t.Errorf("keys:\n%q\nwant\n%q\nerror:\n%v", got, want, err)
	}
	for range 5 {
		_, _, again := load(t, text)
		if again.Error() != err.Error() {
			t.Fatalf("not deterministic:\n%v\n---\n%v", err, again)
		}
	}
}

func TestConfigWarnings(t *testing.T) {
	text := edit(
		`base_url = "https://api.example.net/api/v1"`, `base_url = "http://api.example.net/api/v1"`,
		`access_key_secret_file = "/etc/dcvd/api-secret"`, `access_key_secret = "`+testSecret+`"`,
		"#DNS", "[dns.spare]\nprovider = \"rfc2136\"\nserver = \"ns2.example.net:53\"\nkey_name = \"k\"\nkey_alg = \"hmac-sha256\"\nkey_file = \"/etc/dcvd/tsig.key\"",
		`"shop.example.com" = "http"`, `"shop.example.com" = "dns"`,
	)
	cfg, warns, err := load(t, text)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.API.AccessKeySecret != testSecret {
		t.Error("inline secret not read")
	}
	want := []string{
		"api.access_key_secret: a secret written in the config file",
		"api.base_url: plain http to a remote host",
		"certificate[shop].webroot: no name of this certificate is validated by http or https",
		"dns.spare: not used by any certificate",
	}
	if len(warns) != len(want) {
		t.Fatalf("warnings %q, want %d", warns, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(warns[i], w) {
			t.Errorf("warning %d = %q, want prefix %q", i, warns[i], w)
		}
		if strings.Contains(warns[i], testSecret) {
			t.Errorf("the secret is in warning %q", warns[i])
		}
	}
	cfg, warns, err = load(t, testBaseConfig[:strings.Index(testBaseConfig, "[[certificate]]")])
	if err != nil || len(cfg.Certificates) != 0 {
		t.Fatalf("config without certificates: %v", err)
	}
	if !slices.ContainsFunc(warns, func(w string) bool { return strings.HasPrefix(w, "certificate: no [[certificate]]") }) {
		t.Errorf("no warning about a config without certificates: %q", warns)
	}
}

// TestConfigSecretNotEchoed checks that the secret shows up neither in
// errors nor when the config is printed.
func TestConfigSecretNotEchoed(t *testing.T) {
	_, _, err := load(t, edit(`access_key_secret_file = "/etc/dcvd/api-secret"`, `access_key_secret = 918273645`))
	if err == nil || !strings.Contains(err.Error(), "api.access_key_secret: must be a string, not an integer") ||
		strings.Contains(err.Error(), "918273645") {
		t.Errorf("error = %v", err)
	}
	cfg, _, err := load(t, testBaseConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprintf("%v", cfg.API), fmt.Sprintf("%+v", cfg.API), fmt.Sprintf("%#v", cfg.API),
		fmt.Sprintf("%+v", *cfg)} {
		if strings.Contains(s, testSecret) {
			t.Errorf("the secret is printed: %s", s)
		}
	}
}

func TestConfigSyntaxError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte("[api]\nbase_url = \"x\"\naccess_key_id = = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadConfig(path, testLoadOptions())
	if err == nil || !strings.Contains(err.Error(), path+": line 3, column") {
		t.Errorf("error = %v, want the file and line 3", err)
	}
	_, _, err = LoadConfig(filepath.Join(dir, "missing.toml"), testLoadOptions())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	// A secret typed without quotes is a syntax error that the parser
	// quotes: the error says where, never what (found by FuzzLoadConfig).
	for _, text := range []string{"[api]\naccess_key_secret = abcdefSECRETxyz\n", "[dns.0]\ntoken =AAAAAA0\n",
		"[api]\ntimeout = 1e\n"} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := LoadConfig(path, testLoadOptions())
		if err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: error %v, want one naming line 2", text, err)
		}
		if err != nil && (strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "AAAAAA")) {
			t.Errorf("%q: the error quotes the value: %v", text, err)
		}
	}
	// A duplicate key is a syntax error too.
	_, _, err = load(t, testBaseConfig+"\n[api]\n")
	if err == nil || !strings.Contains(err.Error(), "line ") {
		t.Errorf("duplicate table: %v", err)
	}
}
