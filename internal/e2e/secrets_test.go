package e2e_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/sandbox"
)

// TestSecretsNeverLogged runs dcvd with every kind of secret configured —
// the API secret, a DNS provider token, a webhook signing secret — at debug
// level through a whole reissue, then status and check-config, and greps
// everything it printed for them.
func TestSecretsNeverLogged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin := dcvdBinary(t, "")
	dir := t.TempDir()
	webroot := filepath.Join(dir, "webroot")
	webAddr := serveWebroot(t, webroot)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer hook.Close()
	sb, apiURL := startSandbox(t, sandbox.Config{HTTPAddr: webAddr})
	_, apiSecret := sb.AccessKey()

	const dnsToken = "cf-token-5ecr3t-0123456789abcdef"
	const hookSecret = "hook-5ecr3t-fedcba9876543210"
	cfgPath := writeConfig(t, dir, sb, apiURL, map[string]any{
		"state_dir": filepath.Join(dir, "state"), "poll_interval": "50ms", "log_level": "debug",
	}, map[string]any{
		"cf": map[string]any{"provider": "cloudflare", "api_token_file": writeSecret(t, dir, "cf-token", dnsToken)},
	}, map[string]any{
		"name": "secrets", "service_id": serviceID, "webroot": webroot, "http_connect": webAddr,
		"domains": map[string]string{"secrets.example.com": "http"},
		"deploy":  map[string]any{"dir": filepath.Join(dir, "deploy")},
	})
	f, err := os.OpenFile(cfgPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("\n[notify.hook]\ntype = \"webhook\"\nlevel = \"all\"\nurl = \"" + hook.URL + "\"\nsecret_file = \"" +
		writeSecret(t, dir, "hook-secret", hookSecret) + "\"\n")
	f.Close()
	if err != nil {
		t.Fatal(err)
	}

	var printed strings.Builder
	for _, args := range [][]string{
		{"check-config", "--config", cfgPath},
		{"reissue", "secrets", "--wait", "--config", cfgPath},
		{"status", "--json", "--config", cfgPath},
		{"status", "--config", cfgPath},
	} {
		r := runDcvd(ctx, bin, nil, args...)
		// check-config may fail on paths; status exits 1 on a failing certificate.
		if r.err != nil && args[0] != "check-config" && (args[0] != "status" || statusFailed(r)) {
			t.Fatalf("dcvd %v: %v\nstdout:\n%s\nstderr:\n%s", args, r.err, r.stdout, r.stderr)
		}
		printed.WriteString(r.stdout)
		printed.WriteString(r.stderr)
	}
	out := printed.String()
	if !strings.Contains(out, "order done") {
		t.Fatalf("the reissue did not finish; output:\n%s", out)
	}
	for name, secret := range map[string]string{"API secret": apiSecret, "DNS token": dnsToken, "webhook secret": hookSecret} {
		if strings.Contains(out, secret) {
			t.Errorf("the %s appears in dcvd's output", name)
		}
	}
}
