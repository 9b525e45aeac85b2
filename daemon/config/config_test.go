package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/testfs"
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
			if cfg != nil {
				t.Errorf("a config came with the error")
			}
			errorKeys(t, err) // every error is a *ConfigError
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(tt.want) {
				t.Fatalf("%d errors, want %d:\n%s", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("error %d = %q\nwant prefix %q", i, got[i], w)
				}
			}
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

func TestParseDuration(t *testing.T) {
	good := map[string]time.Duration{
		"0":       0,
		"30d":     30 * 24 * time.Hour,
		"1d12h":   36 * time.Hour,
		"1.5d":    36 * time.Hour,
		"720h":    720 * time.Hour,
		"90m":     90 * time.Minute,
		"1h30m5s": time.Hour + 30*time.Minute + 5*time.Second,
		"250ms":   250 * time.Millisecond,
		"-2d":     -48 * time.Hour,
		"+1d":     24 * time.Hour,
		"2d3d":    5 * 24 * time.Hour,
		"1µs":     time.Microsecond,
	}
	for in, want := range good {
		got, err := ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "30", "30 d", "30days", "1w", ".d", "1..5d", "-", "d30", "120000000d", "100000d100000d", "1d-2h"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %s, want an error", in, got)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("ParseDuration(%q): error %q does not quote the input", in, err)
		}
	}
}

// TestConfigExample loads config.example.toml with its secrets faked, and
// checks that it documents every key.
func TestConfigExample(t *testing.T) {
	const path = "../../config.example.toml"
	cfg, warns, err := LoadConfig(path, testLoadOptions())
	if err != nil {
		t.Fatalf("config.example.toml does not load:\n%v", err)
	}
	t.Logf("warnings: %q", warns)
	if len(cfg.Certificates) == 0 {
		t.Error("the example configures no certificate")
	}
	// Check may fail only on the paths, which do not exist here.
	pathKey := regexp.MustCompile(`^(daemon\.state_dir|api\.ca_roots_file|certificate\[[^]]+\]\.(deploy\.dir|webroot|deploy|deploy\.reload|webroot_owner|webroot_group))$`)
	for _, e := range cfg.Check() {
		var ce *ConfigError
		if !errors.As(e, &ce) || !pathKey.MatchString(ce.Key) {
			t.Errorf("Check: %v", e)
		} else {
			t.Logf("Check (expected here): %v", e)
		}
	}

	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	orgKeys := []string{"organization", "organization_unit", "registered_address_line1", "serial_no", "country",
		"state", "city", "postal_code", "organization_phone", "date_of_incorporation", "contact_name",
		"contact_title", "contact_phone"}
	var keys []string
	keys = append(keys, cfgAPIKeys...)
	keys = append(keys, cfgDaemonKeys...)
	keys = append(keys, cfgCertKeys...)
	keys = append(keys, cfgDeployKeys...)
	keys = append(keys, cfgStoreKeys...)
	keys = append(keys, orgKeys...)
	keys = append(keys, "zone", "ttl", "propagation_timeout", "propagation_interval", "nameservers", "resolvers")
	for _, k := range keys {
		if k == "domains" || k == "deploy" || k == "organization" {
			if !strings.Contains(string(text), "[certificate."+k+"]") {
				t.Errorf("config.example.toml has no [certificate.%s]", k)
			}
			if k != "organization" {
				continue
			}
		}
		re := regexp.MustCompile(`(?m)^#? ?` + regexp.QuoteMeta(k) + ` +=`)
		if !re.Match(text) {
			t.Errorf("config.example.toml does not document %s (as `%s = …` or `# %s = …`)", k, k, k)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	mk := func(rel string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(roots, testRootPEM(t), 0o644); err != nil {
		t.Fatal(err)
	}
	badRoots := filepath.Join(dir, "bad-roots.pem")
	if err := os.WriteFile(badRoots, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	good := &Config{
		API:    APIConfig{CARootsFile: roots},
		Daemon: DaemonConfig{StateDir: mk("state")},
		Certificates: []CertConfig{{
			Name:     "a",
			Webroots: []httpchallenge.Webroot{{Dir: mk("www")}},
			// Missing but creatable: Check must not leave it behind.
			Deploy: deploy.Spec{Dir: filepath.Join(dir, "deploy", "a")},
		}},
	}
	if errs := good.Check(); len(errs) != 0 {
		t.Errorf("Check: %v", errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "deploy")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Check left the deploy directory behind: %v", err)
	}
	if pool, err := good.API.CARoots(); err != nil || pool == nil {
		t.Errorf("CARoots: %v", err)
	}
	if pool, err := (APIConfig{}).CARoots(); err != nil || pool != nil {
		t.Errorf("CARoots without a file: %v, %v", pool, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".dcvd-check") {
			t.Errorf("probe file %s left behind", e.Name())
		}
	}

	bad := &Config{
		API:    APIConfig{CARootsFile: badRoots},
		Daemon: DaemonConfig{StateDir: filepath.Join(file, "state")},
		Certificates: []CertConfig{{
			Name:     "a",
			Webroots: []httpchallenge.Webroot{{Dir: filepath.Join(dir, "nowhere"), Owner: "no-such-user-dcvd"}, {Dir: file}},
			Deploy:   deploy.Spec{Dir: file, Group: "no-such-group-dcvd"},
		}, {
			Name:   "b",
			Deploy: deploy.Spec{Dir: filepath.Join(file, "sub", "dir"), Owner: "0", Group: "0"},
		}},
	}
	// The deploy directories are also in certificate a's web root (a
	// file, here): reported for both.
	want := []string{
		"api.ca_roots_file",
		"certificate[a].deploy",
		"certificate[a].deploy.dir",
		"certificate[a].deploy.dir",
		"certificate[a].webroot",
		"certificate[a].webroot",
		"certificate[a].webroot_owner",
		"certificate[b].deploy.dir",
		"certificate[b].deploy.dir",
		"daemon.state_dir",
	}
	errs := bad.Check()
	var got []string
	for _, e := range errs {
		var ce *ConfigError
		if !errors.As(e, &ce) {
			t.Fatalf("%v is not a *ConfigError", e)
		}
		got = append(got, ce.Key)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Check keys %q\nwant %q\nerrors: %v", got, want, errs)
	}
	text := fmt.Sprint(errs)
	for _, w := range []string{"not a directory", "no-such-user-dcvd", "no-such-group-dcvd", "nowhere"} {
		if !strings.Contains(text, w) {
			t.Errorf("Check errors do not mention %q: %v", w, errs)
		}
	}
}

// testRootPEM is a self-signed CA certificate.
func testRootPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dcvd test root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestConfigCredentialsDirectory: *_file keys may name systemd's
// credentials directory, and say so clearly when it is not set.
func TestConfigCredentialsDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "api-secret"), []byte("from-credentials\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := `[api]
base_url = "https://api.example.net/api/v1"
access_key_id = "AKID"
access_key_secret_file = "${CREDENTIALS_DIRECTORY}/api-secret"
`
	env := map[string]string{"CREDENTIALS_DIRECTORY": dir}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, _, err := parseConfig("test.toml", []byte(text), LoadOptions{LookupEnv: lookup})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.API.AccessKeySecret != "from-credentials" {
		t.Errorf("secret %q, want the credential's", cfg.API.AccessKeySecret)
	}
	delete(env, "CREDENTIALS_DIRECTORY")
	_, _, err = parseConfig("test.toml", []byte(text), LoadOptions{LookupEnv: lookup})
	if err == nil || !strings.Contains(err.Error(), "api.access_key_secret_file") || !strings.Contains(err.Error(), "LoadCredential") {
		t.Fatalf("got %v, want an error naming the key and LoadCredential", err)
	}
}

func TestConfigAlertDays(t *testing.T) {
	base := "[api]\nbase_url = \"https://a.example/api/v1\"\naccess_key_id = \"A\"\naccess_key_secret = \"s\"\n[daemon]\n"
	cfg, _, err := parseConfig("t.toml", []byte(base+"expiry_alert_days = [3, 14, 7, 7]\nservice_alert_days = [30, 90, 1, 30]\n"), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Daemon.ExpiryAlertDays, []int{14, 7, 3}) {
		t.Errorf("expiry days %v, want [14 7 3]", cfg.Daemon.ExpiryAlertDays)
	}
	if !reflect.DeepEqual(cfg.Daemon.ServiceAlertDays, []int{90, 30, 1}) {
		t.Errorf("service days %v, want [90 30 1]", cfg.Daemon.ServiceAlertDays)
	}
	for _, bad := range []string{`expiry_alert_days = [0]`, `expiry_alert_days = "14"`, `expiry_alert_days = [400]`,
		`service_alert_days = [0]`, `service_alert_days = 60`, `service_alert_days = [367]`, `service_alert_days = [60.5]`} {
		key := "daemon." + strings.Fields(bad)[0]
		if _, _, err := parseConfig("t.toml", []byte(base+bad+"\n"), LoadOptions{}); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: got %v, want an error naming %s", bad, err, key)
		}
	}
}

// TestConfigExampleNotifySections: the commented [notify.*] examples of
// config.example.toml load once uncommented, so that they cannot rot.
func TestConfigExampleNotifySections(t *testing.T) {
	data, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "# [notify.")
	end := strings.Index(text, "# DNS providers for dns-validated names.")
	if start < 0 || end < start {
		t.Fatal("config.example.toml has no commented [notify.*] examples before the DNS section")
	}
	var b strings.Builder
	b.WriteString("[api]\nbase_url = \"https://api.example.net/api/v1\"\naccess_key_id = \"AK\"\naccess_key_secret = \"s\"\n")
	sections := 0
	for _, line := range strings.Split(text[start:end], "\n") {
		if line = strings.TrimPrefix(strings.TrimPrefix(line, "#"), " "); strings.HasPrefix(line, "[notify.") {
			sections++
		}
		b.WriteString(line + "\n")
	}
	readFile := func(string) ([]byte, error) { return []byte("secret-from-file\n"), nil }
	cfg, _, err := parseConfig("example-notify.toml", []byte(b.String()), LoadOptions{ReadFile: readFile})
	if err != nil {
		t.Fatalf("the [notify.*] examples do not load:\n%v", err)
	}
	if len(cfg.Notify) != sections || sections < 5 {
		t.Fatalf("%d channels configured from %d example sections, want all of them (at least 5)", len(cfg.Notify), sections)
	}
}

// The [store] secrets of the tests: no error or warning may contain the
// DSN's password or the key, in any encoding.
const (
	testDSNPassword = "Pg-S3cret-pw"
	testDSN         = "postgres://dcvd:" + testDSNPassword + "@db1.example.net:5432/dcvd?sslmode=require"
	testStoreKeyRaw = "0123456789abcdef0123456789ABCDEF"
)

var (
	testStoreKeyB64 = base64.StdEncoding.EncodeToString([]byte(testStoreKeyRaw))
	testStoreKeyHex = hex.EncodeToString([]byte(testStoreKeyRaw))
)

// storeText is testBaseConfig with a [store] section of these lines.
func storeText(lines ...string) string {
	return testBaseConfig + "\n[store]\n" + strings.Join(lines, "\n") + "\n"
}

// checkNoStoreSecret fails when text holds a [store] secret of the tests.
func checkNoStoreSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, secret := range []string{testDSNPassword, testStoreKeyRaw, testStoreKeyB64,
		strings.TrimRight(testStoreKeyB64, "="), testStoreKeyHex, fmt.Sprint([]byte(testStoreKeyRaw))} {
		if strings.Contains(text, secret) {
			t.Errorf("%s holds a secret (%q): %s", what, secret, text)
		}
	}
}

func TestConfigStore(t *testing.T) {
	pg := `driver = "postgres"`
	dsnFile := `dsn_file = "/etc/dcvd/store-dsn"`
	keyFile := `encryption_key_file = "/etc/dcvd/store-key"`
	key := []byte(testStoreKeyRaw)
	tests := []struct {
		name     string
		text     string
		hostname string // "" means web1.example.com
		want     StoreConfig
		// warns are the prefixes of the warnings about [store].
		warns []string
	}{
		{"no [store]", testBaseConfig, "", StoreConfig{Driver: "sqlite", Lease: time.Minute}, nil},
		{"sqlite", storeText(`driver = "sqlite"`), "", StoreConfig{Driver: "sqlite", Lease: time.Minute}, nil},
		{"empty [store]", storeText(), "", StoreConfig{Driver: "sqlite", Lease: time.Minute}, nil},
		{"postgres from files", storeText(pg, dsnFile, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"postgres from the environment, key as hex", storeText(pg, `dsn_env = "DCVD_STORE_DSN"`, `encryption_key_env = "DCVD_STORE_KEY"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"inline DSN with a password", storeText(pg, `dsn = "`+testDSN+`"`, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key},
			[]string{"store.dsn: a secret written in the config file"}},
		{"inline key=value DSN with a password", storeText(pg, `dsn = "host=db1 dbname=dcvd password=`+testDSNPassword+`"`, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: "host=db1 dbname=dcvd password=" + testDSNPassword, Node: "web1", Lease: time.Minute, EncryptionKey: key},
			[]string{"store.dsn: a secret written in the config file"}},
		{"inline DSN without a password", storeText(pg, `dsn = " host=/run/postgresql dbname=dcvd user=dcvd "`, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: "host=/run/postgresql dbname=dcvd user=dcvd", Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"inline URL without a password", storeText(pg, `dsn = "postgresql://dcvd@db1/dcvd"`, keyFile), "",
			StoreConfig{Driver: "postgres", DSN: "postgresql://dcvd@db1/dcvd", Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"inline key, unpadded base64 in white space", storeText(pg, dsnFile, `encryption_key = " `+strings.TrimRight(testStoreKeyB64, "=")+`\n"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key},
			[]string{"store.encryption_key: a secret written in the config file"}},
		{"inline key, upper-case hex", storeText(pg, dsnFile, `encryption_key = "`+strings.ToUpper(testStoreKeyHex)+`"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key},
			[]string{"store.encryption_key: a secret written in the config file"}},
		{"node and lease", storeText(pg, dsnFile, keyFile, `node = "Web-2.dc_1"`, `lease = "90s"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "Web-2.dc_1", Lease: 90 * time.Second, EncryptionKey: key}, nil},
		{"shortest lease, longest node", storeText(pg, dsnFile, keyFile, `node = "`+strings.Repeat("n", 63)+`"`, `lease = "2s"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: strings.Repeat("n", 63), Lease: 2 * time.Second, EncryptionKey: key}, nil},
		{"longest lease", storeText(pg, dsnFile, keyFile, `lease = "1h"`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Hour, EncryptionKey: key}, nil},
		{"empty lease is the default", storeText(pg, dsnFile, keyFile, `lease = ""`), "",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "web1", Lease: time.Minute, EncryptionKey: key}, nil},
		{"host name without a domain", storeText(pg, dsnFile, keyFile), "Backend_07",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "Backend_07", Lease: time.Minute, EncryptionKey: key}, nil},
		{"host name sanitised", storeText(pg, dsnFile, keyFile), "wéb 1:x.example.com",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: "wb1x", Lease: time.Minute, EncryptionKey: key}, nil},
		{"long host name cut", storeText(pg, dsnFile, keyFile), strings.Repeat("h", 70) + ".example.com",
			StoreConfig{Driver: "postgres", DSN: testDSN, Node: strings.Repeat("h", 63), Lease: time.Minute, EncryptionKey: key}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testLoadOptions()
			if tt.hostname != "" {
				opts.Hostname = func() (string, error) { return tt.hostname, nil }
			}
			cfg, warns, err := parseConfig("test.toml", []byte(tt.text), opts)
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			if !reflect.DeepEqual(cfg.Store, tt.want) {
				t.Errorf("store = %+v (dsn %v, key %v)\nwant %+v", cfg.Store, cfg.Store.DSN == tt.want.DSN,
					slices.Equal(cfg.Store.EncryptionKey, tt.want.EncryptionKey), tt.want)
			}
			var storeWarns []string
			for _, w := range warns {
				checkNoStoreSecret(t, "a warning", w)
				if strings.HasPrefix(w, "store") {
					storeWarns = append(storeWarns, w)
				}
			}
			if len(storeWarns) != len(tt.warns) {
				t.Fatalf("warnings %q, want %q", storeWarns, tt.warns)
			}
			for i, w := range tt.warns {
				if !strings.HasPrefix(storeWarns[i], w) {
					t.Errorf("warning %d = %q, want prefix %q", i, storeWarns[i], w)
				}
			}
			for _, s := range []string{fmt.Sprintf("%v", cfg.Store), fmt.Sprintf("%+v", cfg.Store), fmt.Sprintf("%#v", cfg.Store),
				fmt.Sprintf("%+v", *cfg), fmt.Sprintf("%v", cfg)} {
				checkNoStoreSecret(t, "the printed config", s)
			}
		})
	}
}

func TestConfigStoreBad(t *testing.T) {
	pg := `driver = "postgres"`
	dsnFile := `dsn_file = "/etc/dcvd/store-dsn"`
	keyFile := `encryption_key_file = "/etc/dcvd/store-key"`
	keyHelp := "openssl rand -base64 32"
	pw := testDSNPassword
	tests := []struct {
		name     string
		text     string
		hostname func() (string, error) // nil means web1.example.com
		// want are "KEY: reason" prefixes, one per error, in sorted order.
		want []string
		// mention must be in the error text too.
		mention string
	}{
		{"[store] not a table", "store = \"postgres\"\n" + testBaseConfig, nil,
			[]string{"store: must be a table [store], not a string"}, ""},
		{"unknown key", storeText(`url = "x"`), nil,
			[]string{"store.url: unknown key (known here: driver, dsn, dsn_file, dsn_env, node, lease, encryption_key"}, ""},
		{"unknown driver", storeText(`driver = "mysql"`, dsnFile), nil,
			[]string{`store.driver: "mysql" is neither "sqlite" nor "postgres"`}, ""},
		{"driver not a string", storeText(`driver = 1`), nil,
			[]string{`store.driver: must be a string, not an integer`}, ""},
		{"sqlite with the postgres keys", storeText(`driver = "sqlite"`, `dsn = "`+testDSN+`"`, keyFile, `node = "web1"`, `lease = "1m"`), nil,
			[]string{`store.dsn: only with driver = "postgres" (with "sqlite", the state is in /var/lib/dcvd/dcvd.db)`,
				`store.encryption_key_file: only with driver = "postgres"`,
				`store.lease: only with driver = "postgres"`,
				`store.node: only with driver = "postgres"`}, ""},
		{"sqlite by default with a dsn", storeText(`dsn_env = "DCVD_STORE_DSN"`, `encryption_key = "x"`), nil,
			[]string{`store.dsn_env: only with driver = "postgres"`, `store.encryption_key: only with driver = "postgres"`}, ""},
		{"postgres without dsn and key", storeText(pg), nil,
			[]string{`store.dsn: required with driver = "postgres": set dsn_file`,
				`store.encryption_key: required with driver = "postgres"`}, keyHelp},
		{"dsn twice", storeText(pg, dsnFile, `dsn = "`+testDSN+`"`, keyFile), nil,
			[]string{`store.dsn: set more than once (store.dsn, store.dsn_file): keep one`}, ""},
		{"dsn file missing", storeText(pg, `dsn_file = "/etc/dcvd/nope"`, keyFile), nil,
			[]string{`store.dsn_file: cannot read the secret: open /etc/dcvd/nope`}, ""},
		{"dsn file empty", storeText(pg, `dsn_file = "/etc/dcvd/empty-secret"`, keyFile), nil,
			[]string{`store.dsn_file: file /etc/dcvd/empty-secret is empty`}, ""},
		{"dsn env unset", storeText(pg, `dsn_env = "NOPE"`, keyFile), nil,
			[]string{`store.dsn_env: environment variable NOPE is not set`}, ""},
		{"dsn empty", storeText(pg, `dsn = ""`, keyFile), nil,
			[]string{`store.dsn: must not be empty`}, ""},
		{"dsn blank", storeText(pg, `dsn = "  "`, keyFile), nil,
			[]string{`store.dsn: the connection string is blank`}, ""},
		{"dsn not a string", storeText(pg, `dsn = 5432`, keyFile), nil,
			[]string{`store.dsn: must be a string, not an integer`}, ""},
		{"URL with a bad escape in the password", storeText(pg, `dsn = "postgres://dcvd:`+pw+`%zz@db1/dcvd"`, keyFile), nil,
			[]string{`store.dsn: the postgres:// URL does not parse (not shown: it may hold a password); percent-encode`}, "%40"},
		{"URL with a password holding a slash", storeText(pg, `dsn = "postgresql://dcvd:`+pw+`/x@db1:5432/dcvd"`, keyFile), nil,
			[]string{`store.dsn: the postgres:// URL does not parse`}, "%2F"},
		{"URL with a bad port", storeText(pg, `dsn = "postgres://dcvd:`+pw+`@db1:99999/dcvd"`, keyFile), nil,
			[]string{`store.dsn: not a PostgreSQL connection string that parses`}, ""},
		{"URL with a bad sslmode", storeText(pg, `dsn = "postgres://dcvd:`+pw+`@db1/dcvd?sslmode=sometimes"`, keyFile), nil,
			[]string{`store.dsn: not a PostgreSQL connection string that parses`}, ""},
		{"URL with a bad pool parameter", storeText(pg, `dsn = "postgres://dcvd:`+pw+`@db1/dcvd?pool_max_conns=many"`, keyFile), nil,
			[]string{`store.dsn: not a PostgreSQL connection string that parses`}, ""},
		{"key=value with a bad port", storeText(pg, `dsn = "host=db1 password=`+pw+` port=abc"`, keyFile), nil,
			[]string{`store.dsn: not a PostgreSQL connection string that parses`}, ""},
		{"key=value with an open quote", storeText(pg, `dsn = "host=db1 password='`+pw+`"`, keyFile), nil,
			[]string{`store.dsn: not a PostgreSQL connection string that parses`}, ""},
		{"another database's URL", storeText(pg, `dsn_env = "MYSQL"`, keyFile), nil,
			[]string{`store.dsn_env: not a PostgreSQL connection string that parses`}, ""},
		{"key missing", storeText(pg, dsnFile), nil,
			[]string{`store.encryption_key: required with driver = "postgres", to seal the private keys`}, keyHelp},
		{"key twice", storeText(pg, dsnFile, keyFile, `encryption_key_env = "DCVD_STORE_KEY"`), nil,
			[]string{`store.encryption_key: set more than once (store.encryption_key_file, store.encryption_key_env)`}, ""},
		{"key file missing", storeText(pg, dsnFile, `encryption_key_file = "/etc/dcvd/no-key"`), nil,
			[]string{`store.encryption_key_file: cannot read the secret: open /etc/dcvd/no-key`}, ""},
		{"key file empty", storeText(pg, dsnFile, `encryption_key_file = "/etc/dcvd/empty-secret"`), nil,
			[]string{`store.encryption_key_file: file /etc/dcvd/empty-secret is empty`}, ""},
		{"key of 16 bytes", storeText(pg, dsnFile, `encryption_key_file = "/etc/dcvd/short-key"`), nil,
			[]string{`store.encryption_key_file: the key is 16 bytes once decoded from base64, not 32: must be 32 random bytes`}, keyHelp},
		{"key of 48 bytes", storeText(pg, dsnFile, `encryption_key_env = "LONG_KEY"`), nil,
			[]string{`store.encryption_key_env: the key is 48 bytes once decoded from base64, not 32`}, keyHelp},
		{"key of 32 hex digits", storeText(pg, dsnFile, `encryption_key = "`+testStoreKeyHex[:32]+`"`), nil,
			[]string{`store.encryption_key: the key is 32 hex digits, not 64`}, keyHelp},
		{"key of 65 hex digits", storeText(pg, dsnFile, `encryption_key = "`+testStoreKeyHex+`0"`), nil,
			[]string{`store.encryption_key: the key is 65 hex digits, not 64`}, keyHelp},
		{"key as URL-safe base64", storeText(pg, dsnFile, `encryption_key = "`+base64.URLEncoding.EncodeToString([]byte("\xfb\xff"+testStoreKeyRaw[2:]))+`"`), nil,
			[]string{`store.encryption_key: the key is neither base64 nor hex`}, keyHelp},
		{"key as a pass phrase", storeText(pg, dsnFile, `encryption_key = "correct horse battery staple"`), nil,
			[]string{`store.encryption_key: the key is neither base64 nor hex`}, keyHelp},
		{"key blank", storeText(pg, dsnFile, `encryption_key = " \t "`), nil,
			[]string{`store.encryption_key: the key is empty`}, keyHelp},
		{"bad node", storeText(pg, dsnFile, keyFile, `node = "web 1"`), nil,
			[]string{`store.node: "web 1" must be 1 to 63 characters of A-Z, a-z, 0-9, '.', '_' and '-'`}, ""},
		{"empty node", storeText(pg, dsnFile, keyFile, `node = ""`), nil,
			[]string{`store.node: "" must be 1 to 63 characters`}, ""},
		{"node too long", storeText(pg, dsnFile, keyFile, `node = "`+strings.Repeat("n", 64)+`"`), nil,
			[]string{`store.node: "` + strings.Repeat("n", 64) + `" must be 1 to 63 characters`}, ""},
		{"node not ASCII", storeText(pg, dsnFile, keyFile, `node = "wéb1"`), nil,
			[]string{`store.node: "wéb1" must be 1 to 63 characters`}, ""},
		{"node not a string", storeText(pg, dsnFile, keyFile, `node = 1`), nil,
			[]string{`store.node: must be a string, not an integer`}, ""},
		{"no host name", storeText(pg, dsnFile, keyFile), func() (string, error) { return "", errors.New("uname failed") },
			[]string{`store.node: cannot default to the host name (uname failed): set store.node`}, ""},
		{"unusable host name", storeText(pg, dsnFile, keyFile), func() (string, error) { return "ÿ ÿ.example.com", nil },
			[]string{`store.node: the host name "ÿ ÿ.example.com" leaves no usable node name: set store.node`}, ""},
		{"host name of a dot", storeText(pg, dsnFile, keyFile), func() (string, error) { return ".example.com", nil },
			[]string{`store.node: the host name ".example.com" leaves no usable node name: set store.node`}, ""},
		{"lease too short", storeText(pg, dsnFile, keyFile, `lease = "1500ms"`), nil,
			[]string{`store.lease: must be at least 2s`}, "1.5s"},
		{"lease too long", storeText(pg, dsnFile, keyFile, `lease = "1d"`), nil,
			[]string{`store.lease: must be at most 1h0m0s`}, "24h0m0s"},
		{"lease negative", storeText(pg, dsnFile, keyFile, `lease = "-1m"`), nil,
			[]string{`store.lease: must be positive`}, ""},
		{"lease not a duration", storeText(pg, dsnFile, keyFile, `lease = "a minute"`), nil,
			[]string{`store.lease: invalid duration "a minute"`}, ""},
		{"lease as a number", storeText(pg, dsnFile, keyFile, `lease = 60`), nil,
			[]string{`store.lease: must be a duration string`}, ""},
		{"everything at once", storeText(pg, `dsn = "postgres://dcvd:`+pw+`@db1:0x/dcvd"`, `encryption_key_file = "/etc/dcvd/short-key"`,
			`node = "a/b"`, `lease = "2h"`, `colour = "blue"`), nil,
			[]string{`store.colour: unknown key`, `store.dsn: `, `store.encryption_key_file: the key is 16 bytes`,
				`store.lease: must be at most`, `store.node: "a/b" must be`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testLoadOptions()
			if tt.hostname != nil {
				opts.Hostname = tt.hostname
			}
			readFile := opts.ReadFile
			opts.ReadFile = func(name string) ([]byte, error) {
				if name == "/etc/dcvd/short-key" {
					return []byte(base64.StdEncoding.EncodeToString([]byte(testStoreKeyRaw[:16])) + "\n"), nil
				}
				return readFile(name)
			}
			lookupEnv := opts.LookupEnv
			opts.LookupEnv = func(name string) (string, bool) {
				switch name {
				case "MYSQL":
					return "mysql://dcvd:" + testDSNPassword + "@db1/dcvd", true
				case "LONG_KEY":
					return base64.StdEncoding.EncodeToString([]byte(testStoreKeyRaw + testStoreKeyRaw[:16])), true
				}
				return lookupEnv(name)
			}
			cfg, warns, err := parseConfig("test.toml", []byte(tt.text), opts)
			if err == nil {
				t.Fatalf("loaded: %+v", cfg.Store)
			}
			if cfg != nil {
				t.Errorf("a config came with the error")
			}
			errorKeys(t, err) // every error is a *ConfigError
			got := strings.Split(err.Error(), "\n")
			if len(got) != len(tt.want) {
				t.Fatalf("%d errors, want %d:\n%s", len(got), len(tt.want), err)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("error %d = %q\nwant prefix %q", i, got[i], w)
				}
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("error does not mention %q: %v", tt.mention, err)
			}
			checkNoStoreSecret(t, "the error", err.Error())
			checkNoStoreSecret(t, "a warning", strings.Join(warns, "\n"))
		})
	}
}

// TestConfigStoreKeyEncodings: the base64 and hex forms of one key are the
// same key, and whatever is not exactly 32 bytes is refused.
func TestConfigStoreKeyEncodings(t *testing.T) {
	raw := make([]byte, StoreEncryptionKeySize)
	for i := range raw {
		raw[i] = byte(255 - i*7)
	}
	for _, in := range []string{
		base64.StdEncoding.EncodeToString(raw),
		base64.RawStdEncoding.EncodeToString(raw),
		base64.StdEncoding.EncodeToString(raw) + "\n",
		"\t" + hex.EncodeToString(raw) + "\r\n",
		strings.ToUpper(hex.EncodeToString(raw)),
	} {
		got, err := cfgDecodeStoreKey(in)
		if err != nil || !slices.Equal(got, raw) {
			t.Errorf("cfgDecodeStoreKey(%q) = %x, %v; want %x", in, got, err, raw)
		}
	}
	for _, in := range []string{
		"",
		base64.StdEncoding.EncodeToString(raw[:31]),
		base64.StdEncoding.EncodeToString(append(raw, 0)),
		hex.EncodeToString(raw[:31]),
		hex.EncodeToString(raw)[:63],
		base64.StdEncoding.EncodeToString(raw)[:43] + "==",
		base64.URLEncoding.EncodeToString(raw),
		"g" + hex.EncodeToString(raw)[1:],
	} {
		if got, err := cfgDecodeStoreKey(in); err == nil {
			t.Errorf("cfgDecodeStoreKey(%q) = %x, want an error", in, got)
		} else if in != "" && strings.Contains(err.Error(), strings.TrimSpace(in)) {
			t.Errorf("cfgDecodeStoreKey(%q): the error quotes the key: %v", in, err)
		}
	}
}

// TestConfigExampleStoreSection: the commented postgres keys of the
// example's [store] load once uncommented, one secret form at a time, so
// that they cannot rot.
func TestConfigExampleStoreSection(t *testing.T) {
	data, err := os.ReadFile("../../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	start := strings.Index(text, "\n[store]\n")
	if start < 0 {
		t.Fatal("config.example.toml has no [store] section")
	}
	end := strings.Index(text[start+1:], "\n[")
	if n := strings.Index(text[start+1:], "\n# [notify."); n >= 0 && (end < 0 || n < end) {
		end = n
	}
	if end < 0 {
		t.Fatal("the [store] section of config.example.toml does not end")
	}
	keyLine := regexp.MustCompile(`^# ([a-z_]+) = `)
	lines := map[string]string{}
	for _, line := range strings.Split(text[start+1:start+1+end], "\n") {
		if m := keyLine.FindStringSubmatch(line); m != nil {
			lines[m[1]] = strings.TrimPrefix(line, "# ")
		}
	}
	for _, k := range cfgStoreKeys {
		if _, ok := lines[k]; !ok && k != "driver" {
			t.Errorf("the example's [store] has no commented %s", k)
		}
	}
	opts := testLoadOptions()
	for _, keys := range [][]string{
		{"dsn_file", "encryption_key_file", "node", "lease"},
		{"dsn_env", "encryption_key_env"},
		// encryption_key = "..." is a placeholder, not a key to copy.
		{"dsn", "encryption_key_file"},
	} {
		section := []string{`driver = "postgres"`}
		for _, k := range keys {
			section = append(section, lines[k])
		}
		cfg, _, err := parseConfig("example-store.toml", []byte(storeText(section...)), opts)
		if err != nil {
			t.Errorf("the [store] example with %q does not load:\n%v", keys, err)
			continue
		}
		if cfg.Store.Driver != StoreDriverPostgres || cfg.Store.DSN == "" || len(cfg.Store.EncryptionKey) != StoreEncryptionKeySize ||
			cfg.Store.Node == "" || cfg.Store.Lease != DefaultStoreLease {
			t.Errorf("the [store] example with %q gives %v", keys, cfg.Store)
		}
	}
}

// TestConfigMaxRequestsPerSecond reads [api] max_requests_per_second as
// integers and floats; absent and 0 mean no limit.
func TestConfigMaxRequestsPerSecond(t *testing.T) {
	tests := []struct {
		line string
		want float64
	}{
		{"", 0},
		{"max_requests_per_second = 0", 0},
		{"max_requests_per_second = 0.0", 0},
		{"max_requests_per_second = 20", 20},
		{"max_requests_per_second = 0.5", 0.5},
		{"max_requests_per_second = 1e3", 1000},
		{"max_requests_per_second = 2_000", 2000},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			cfg, _, err := load(t, edit("#API", tt.line))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.API.MaxRequestsPerSecond != tt.want {
				t.Errorf("MaxRequestsPerSecond = %v, want %v", cfg.API.MaxRequestsPerSecond, tt.want)
			}
			if tt.want > 0 && !strings.Contains(cfg.API.String(), "max_requests_per_second=") {
				t.Errorf("String does not show the rate: %s", cfg.API)
			}
		})
	}
}

// TestConfigRefusesWhatFailsAfterPayment: setups that check-config used to
// pass and that failed only once a reissue was paid for (or exposed the
// private key) are refused by LoadConfig, each naming its key.
func TestConfigRefusesWhatFailsAfterPayment(t *testing.T) {
	second := func(lines ...string) string {
		return testBaseConfig + "\n[[certificate]]\nname = \"two\"\nservice_id = \"s2\"\n" + strings.Join(lines, "\n") +
			"\n[certificate.domains]\n\"two.example.com\" = \"http\"\n[certificate.deploy]\n"
	}
	tests := []struct {
		name string
		text string
		// want is the one error, as a "KEY: reason" prefix, and mention a
		// part of its reason.
		want, mention string
	}{
		{"deploy.dir /", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/"`),
			`certificate[shop].deploy.dir: / is a directory of the system`, "/etc/ssl/dcvd/NAME"},
		{"deploy.dir /etc", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/etc/"`),
			`certificate[shop].deploy.dir: /etc is a directory of the system`, "privkey.pem"},
		{"deploy.dir /etc/ssl/private", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/etc/ssl/private"`),
			`certificate[shop].deploy.dir: /etc/ssl/private is a directory of the system`, ""},
		{"deploy.dir /usr/local", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/usr/local"`),
			`certificate[shop].deploy.dir: /usr/local is a directory of the system`, ""},
		{"deploy.dir /srv", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/srv"`),
			`certificate[shop].deploy.dir: /srv is a directory of the system`, "/srv/dcvd/NAME"},
		{"deploy.dir /home", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/home"`),
			`certificate[shop].deploy.dir: /home is a directory of the system`, ""},
		{"deploy.dir under /proc", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/proc/self/certs"`),
			`certificate[shop].deploy.dir: /proc/self/certs is on a kernel file system`, ""},
		{"deploy.dir in the runtime directory", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/run/dcvd/shop"`),
			`certificate[shop].deploy.dir: /run/dcvd/shop is in dcvd's runtime directory`, "empties"},
		{"deploy.dir is the state directory", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/var/lib/dcvd"`),
			`certificate[shop].deploy.dir: /var/lib/dcvd is daemon.state_dir`, ""},
		{"deploy.dir in the key directory", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/var/lib/dcvd/keys/shop"`),
			`certificate[shop].deploy.dir: /var/lib/dcvd/keys/shop is inside daemon.state_dir/keys`, ""},
		{"deploy.dir in its web root", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/var/www/shop/ssl"`),
			`certificate[shop].deploy.dir: /var/www/shop/ssl is inside the web root /var/www/shop of certificate[shop]`, "privkey.pem"},
		{"deploy.dir is its web root", edit(`dir = "/etc/ssl/dcvd/shop"`, `dir = "/var/www/shop/"`),
			`certificate[shop].deploy.dir: /var/www/shop is inside the web root /var/www/shop of certificate[shop]`, ""},
		{"deploy.dir in another certificate's web root", second(`webroot = "/srv/www/two"`) + `dir = "/var/www/shop/.certs/two"` + "\n",
			`certificate[two].deploy.dir: /var/www/shop/.certs/two is inside the web root /var/www/shop of certificate[shop]`, ""},
		{"key_mode with group write", edit("#DEPLOY", `key_mode = "0660"`),
			`certificate[shop].deploy.key_mode: 0660 lets the file's group change the private key`, `"0640"`},
		{"key_mode with other bits", edit("#DEPLOY", `key_mode = "0602"`),
			`certificate[shop].deploy.key_mode: 0602 lets every user of the host read or change the private key`, ""},
		{"mode writable by everyone", edit("#DEPLOY", `mode = "0666"`),
			`certificate[shop].deploy.mode: 0666 lets every user of the host replace the certificate files`, ""},
		{"TSIG secret not base64", edit(`key_file = "/etc/dcvd/tsig.key"`, `key_file = "/etc/dcvd/tsig-bad.key"`),
			`dns.main.key_file: the TSIG secret is not base64`, ""},
		{"webhook URL with a space", edit("#DEPLOY", "[notify.ops]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/dcvd alerts\""),
			`notify.ops.url: contains a space or a control character`, "%20"},
		{"webhook URL with a tab", edit("#DEPLOY", "[notify.ops]\ntype = \"webhook\"\nurl = \"https://hooks.example.com/dcvd\\talerts\""),
			`notify.ops.url: contains a space or a control character`, ""},
		{"robot URL not absolute", edit("#DEPLOY", "[notify.bot]\ntype = \"wecom\"\nurl = \"qyapi.weixin.qq.com/cgi-bin/webhook/send\"\nkey = \"k\""),
			`notify.bot.url: must be an absolute http:// or https:// URL`, ""},
		{"callback_url with a space", edit("#DAEMON", "callback_listen = \"127.0.0.1:8089\"\ncallback_url = \"https://dcvd.example.com/call back\""),
			`daemon.callback_url: contains a space or a control character`, ""},
		{"base_url without a host name", edit(`base_url = "https://api.example.net/api/v1"`, `base_url = "https://:443/api/v1"`),
			`api.base_url: "https://:443/api/v1" has no host`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := load(t, tt.text)
			if err == nil {
				t.Fatalf("loaded: %+v", cfg)
			}
			errorKeys(t, err) // every error is a *ConfigError
			got := strings.Split(err.Error(), "\n")
			if len(got) != 1 || !strings.HasPrefix(got[0], tt.want) || !strings.Contains(got[0], tt.mention) {
				t.Errorf("error:\n%s\nwant one, starting %q and mentioning %q", err, tt.want, tt.mention)
			}
			for _, secret := range []string{testSecret, "secret secret", "c2VjcmV0c2VjcmV0c2VjcmV0"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error quotes a secret: %v", err)
				}
			}
		})
	}
}

// TestConfigListenerWarnings: a listener bound to every interface loads,
// with a warning that says what it exposes and how to bind loopback.
func TestConfigListenerWarnings(t *testing.T) {
	tests := []struct {
		daemon string
		want   []string // warning prefixes about [daemon], sorted
	}{
		{`metrics_listen = ":9402"`, []string{`daemon.metrics_listen: ":9402" listens on every interface: anyone who reaches the port reads /metrics`}},
		{`metrics_listen = "0.0.0.0:9402"`, []string{`daemon.metrics_listen: "0.0.0.0:9402" listens on every interface`}},
		{`metrics_listen = "[::]:9402"`, []string{`daemon.metrics_listen: "[::]:9402" listens on every interface`}},
		{"callback_listen = \":8089\"\ncallback_url = \"https://dcvd.example.com\"\nhttp_listen = \":8089\"", []string{
			`daemon.callback_listen: ":8089" listens on every interface: anyone who reaches the port can post callbacks`,
			`daemon.http_listen: ":8089" listens on every interface: anyone who reaches the port gets the pending validation files`,
		}},
		{`metrics_listen = "127.0.0.1:9402"`, nil},
		{`metrics_listen = "[::1]:9402"`, nil},
		{`metrics_listen = "192.0.2.10:9402"`, nil},
		{`metrics_listen = "localhost:9402"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.daemon, func(t *testing.T) {
			_, warns, err := load(t, edit("#DAEMON", tt.daemon))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range warns {
				if strings.HasPrefix(w, "daemon.") {
					got = append(got, w)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("warnings %q, want %d", got, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("warning %q, want prefix %q", got[i], w)
				}
				if !strings.Contains(got[i], `"127.0.0.1:`) && !strings.Contains(got[i], `"[::1]:`) {
					t.Errorf("warning %q does not say how to bind loopback", got[i])
				}
			}
		})
	}
	// Paths the shipped unit hides from dcvd: allowed, with a warning.
	_, warns, err := load(t, edit(`webroot = "/var/www/shop"`, `webroot = "/tmp/www"`, `dir = "/etc/ssl/dcvd/shop"`, `dir = "/home/web/ssl"`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"certificate[shop].deploy.dir: /home/web/ssl is in /home, which dcvd.service hides",
		"certificate[shop].webroot: /tmp/www is in /tmp, which dcvd.service makes private to dcvd (PrivateTmp=yes)"}
	if len(warns) != len(want) {
		t.Fatalf("warnings %q, want %q", warns, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(warns[i], w) {
			t.Errorf("warning %q, want prefix %q", warns[i], w)
		}
	}
}

// TestConfigCheckHost: setups of the host that make an order fail after
// the reissue is paid for, or expose the keys, are reported by Check (and
// so by the pre-flight check, which shares the code), each naming its key.
func TestConfigCheckHost(t *testing.T) {
	root := os.Geteuid() == 0
	tests := []struct {
		name string
		// setup changes a good configuration and its directories.
		setup func(t *testing.T, c *Config, w *hostWorld)
		// key and mention are what one of Check's errors must hold.
		key, mention string
		// readOnly, when set, runs Check with this directory read-only.
		readOnly func(w *hostWorld) string
	}{
		{name: "read-only web root", readOnly: func(w *hostWorld) string { return w.webroot },
			key: "certificate[a].webroot", mention: "dcvd cannot create .well-known in"},
		{name: "read-only pki-validation", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.MkdirAll(t, filepath.Join(w.webroot, ".well-known", "pki-validation"))
		}, readOnly: func(w *hostWorld) string { return filepath.Join(w.webroot, ".well-known", "pki-validation") },
			key: "certificate[a].webroot", mention: "dcvd cannot create files in"},
		{name: ".well-known symlink leaving the web root", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.Symlink(t, w.outside, filepath.Join(w.webroot, ".well-known"))
		}, key: "certificate[a].webroot", mention: "outside the webroot"},
		{name: "pki-validation symlink leaving the web root", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.MkdirAll(t, filepath.Join(w.webroot, ".well-known"))
			testfs.Symlink(t, w.outside, filepath.Join(w.webroot, ".well-known", "pki-validation"))
		}, key: "certificate[a].webroot", mention: "outside the webroot"},
		{name: "unknown webroot_owner", setup: func(t *testing.T, c *Config, w *hostWorld) {
			c.Certificates[0].Webroots[0].Owner = "no-such-user-dcvd"
		}, key: "certificate[a].webroot_owner", mention: "no-such-user-dcvd"},
		{name: "deploy.dir in a web root through a symlink", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.MkdirAll(t, filepath.Join(w.webroot, "certs"))
			link := filepath.Join(w.base, "certs")
			testfs.Symlink(t, filepath.Join(w.webroot, "certs"), link)
			c.Certificates[0].Deploy.Dir = filepath.Join(link, "a")
		}, key: "certificate[a].deploy.dir", mention: "the web server would serve privkey.pem"},
		{name: "deploy.dir in another certificate's web root through a symlink", setup: func(t *testing.T, c *Config, w *hostWorld) {
			other := filepath.Join(w.base, "other-www")
			testfs.MkdirAll(t, filepath.Join(other, "ssl"))
			c.Certificates = append(c.Certificates, CertConfig{Name: "b", Webroots: []httpchallenge.Webroot{{Dir: other}},
				Deploy: deploy.Spec{Dir: filepath.Join(w.base, "deploy-b")}})
			link := filepath.Join(w.base, "ssl-link")
			testfs.Symlink(t, filepath.Join(other, "ssl"), link)
			c.Certificates[0].Deploy.Dir = link
		}, key: "certificate[a].deploy.dir", mention: "of certificate[b] once symlinks are resolved"},
		{name: "deploy.dir a symlink to /etc", setup: func(t *testing.T, c *Config, w *hostWorld) {
			link := filepath.Join(w.base, "etc-link")
			testfs.Symlink(t, "/etc", link)
			c.Certificates[0].Deploy.Dir = link
		}, key: "certificate[a].deploy.dir", mention: "leads through symlinks to /etc, which is a directory of the system"},
		{name: "deploy.dir writable by everyone", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.MkdirAll(t, c.Certificates[0].Deploy.Dir)
			testfs.Chmod(t, c.Certificates[0].Deploy.Dir, 0o777)
		}, key: "certificate[a].deploy.dir", mention: "writable by every user (mode 0777)"},
		{name: "state_dir writable by everyone", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.Chmod(t, c.Daemon.StateDir, 0o777)
		}, key: "daemon.state_dir", mention: "writable by its group or by every user (mode 0777)"},
		{name: "state_dir writable by its group", setup: func(t *testing.T, c *Config, w *hostWorld) {
			testfs.Chmod(t, c.Daemon.StateDir, 0o770)
		}, key: "daemon.state_dir", mention: "(mode 0770)"},
		{name: "keys open to the group", setup: func(t *testing.T, c *Config, w *hostWorld) {
			keys := filepath.Join(c.Daemon.StateDir, "keys")
			testfs.MkdirAll(t, keys)
			testfs.Chmod(t, keys, 0o750)
		}, key: "daemon.state_dir", mention: "keys is open to its group or to other users (mode 0750)"},
		{name: "keys owned by someone else", setup: func(t *testing.T, c *Config, w *hostWorld) {
			keys := filepath.Join(c.Daemon.StateDir, "keys")
			if !root {
				// Unprivileged, no directory can be given away: the
				// keys/ of this state directory is root's / instead.
				testfs.Symlink(t, "/", keys)
				return
			}
			testfs.MkdirAll(t, keys)
			if err := os.Chown(keys, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, key: "daemon.state_dir", mention: "is owned by uid"},
		{name: "reload program missing", setup: func(t *testing.T, c *Config, w *hostWorld) {
			c.Certificates[0].Deploy.Reload = "no-such-program-dcvd reload nginx"
		}, key: "certificate[a].deploy.reload", mention: `"no-such-program-dcvd" is not found in PATH`},
		{name: "reload program not executable", setup: func(t *testing.T, c *Config, w *hostWorld) {
			c.Certificates[0].Deploy.Reload = filepath.Join(w.base, "reload.sh") + " --now"
			if err := os.WriteFile(filepath.Join(w.base, "reload.sh"), []byte("#!/bin/sh\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, key: "certificate[a].deploy.reload", mention: "is not an executable file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, w := newHostWorld(t)
			if errs := c.Check(); len(errs) != 0 {
				t.Fatalf("the good setup: Check = %v", errs)
			}
			if tt.setup != nil {
				tt.setup(t, c, w)
			}
			check := func() error { return errors.Join(c.Check()...) }
			var err error
			if tt.readOnly != nil {
				err, _ = testfs.ReadOnly(t, tt.readOnly(w), check)
			} else {
				err = check()
			}
			for _, e := range cfgUnjoin(err) {
				var ce *ConfigError
				if !errors.As(e, &ce) {
					t.Fatalf("%v is not a *ConfigError", e)
				}
				if ce.Key == tt.key && strings.Contains(ce.Reason, tt.mention) {
					return
				}
			}
			t.Errorf("Check = %v\nwant an error of %s mentioning %q", err, tt.key, tt.mention)
		})
	}
}

// hostWorld is the directories of TestConfigCheckHost's configuration.
type hostWorld struct {
	base, webroot, outside string
}

// newHostWorld returns a configuration of one certificate, "a", that
// passes Check, in a temporary directory.
func newHostWorld(t *testing.T) (*Config, *hostWorld) {
	t.Helper()
	base := t.TempDir()
	w := &hostWorld{base: base, webroot: filepath.Join(base, "www"), outside: filepath.Join(base, "outside")}
	testfs.MkdirAll(t, w.webroot)
	testfs.MkdirAll(t, w.outside)
	state := filepath.Join(base, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	return &Config{
		Daemon: DaemonConfig{StateDir: state},
		Certificates: []CertConfig{{
			Name:     "a",
			Webroots: []httpchallenge.Webroot{{Dir: w.webroot}},
			Deploy:   deploy.Spec{Dir: filepath.Join(base, "deploy", "a"), Reload: "true"},
		}},
	}, w
}
