package config

// The tests of this file hold config.example.toml to the code: it loads,
// and it documents every key, the commented sections included.

import (
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// examplePath is the example configuration, from this directory.
const examplePath = "../../config.example.toml"

// exampleText is the text of config.example.toml.
func exampleText(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestConfigExample loads config.example.toml with its secrets faked, and
// checks that it documents every key.
func TestConfigExample(t *testing.T) {
	cfg, warns, err := LoadConfig(examplePath, testLoadOptions())
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

	text := exampleText(t)
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
			if !strings.Contains(text, "[certificate."+k+"]") {
				t.Errorf("config.example.toml has no [certificate.%s]", k)
			}
			if k != "organization" {
				continue
			}
		}
		re := regexp.MustCompile(`(?m)^#? ?` + regexp.QuoteMeta(k) + ` +=`)
		if !re.MatchString(text) {
			t.Errorf("config.example.toml does not document %s (as `%s = …` or `# %s = …`)", k, k, k)
		}
	}
}

// TestConfigExampleNotifySections: the commented [notify.*] examples of
// config.example.toml load once uncommented, so that they cannot rot.
func TestConfigExampleNotifySections(t *testing.T) {
	text := exampleText(t)
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

// TestConfigExampleStoreSection: the commented postgres keys of the
// example's [store] load once uncommented, one secret form at a time, so
// that they cannot rot.
func TestConfigExampleStoreSection(t *testing.T) {
	text := exampleText(t)
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
