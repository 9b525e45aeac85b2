package config

// The tests of this file are those of single keys of [api] and [daemon]
// with rules of their own: secret files in systemd's credentials
// directory, alert days, the request rate and listeners on every
// interface.

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

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
