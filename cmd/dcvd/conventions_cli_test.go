package main

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestVersionSpellings: dcvd --version, -v and version print the version:
// the stamped one in a release, an honest "dev" with the toolchain
// otherwise.
func TestVersionSpellings(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{{"--version"}, {"-v"}, {"version"}} {
		r := runCmd(ctx, args...)
		if r.err != nil || !strings.HasPrefix(r.stdout, "dcvd dev (go") {
			t.Errorf("%v: %v\n%s", args, r.err, r)
		}
	}
	old := version
	version = "1.2.3"
	t.Cleanup(func() { version = old })
	if r := runCmd(ctx, "--version"); r.err != nil || !strings.HasPrefix(r.stdout, "dcvd 1.2.3") {
		t.Errorf("stamped version: %v\n%s", r.err, r)
	}
}

// TestHelpOnEveryCommandAndGroup: --help and -h work on every command and
// group, exit 0 and print a usage.
func TestHelpOnEveryCommandAndGroup(t *testing.T) {
	ctx := context.Background()
	for _, args := range [][]string{
		{"--help"}, {"-h"}, {"help"}, {"help", "status"}, {"help", "dns"},
		{"dns", "--help"}, {"dns", "-h"}, {"dns", "test", "--help"}, {"dns", "providers", "--help"},
		{"reissue", "--help"}, {"retry", "--help"}, {"status", "--help"}, {"redeploy", "--help"},
		{"check-config", "--help"}, {"run", "--help"}, {"demo", "--help"}, {"version", "--help"}, {"status", "-h"},
	} {
		r := runCmd(ctx, args...)
		if exitCode(r.err) != exitOK || !strings.Contains(r.stdout, "Usage") {
			t.Errorf("%v: exit %d, want 0 and a usage\n%s", args, exitCode(r.err), r)
		}
	}
	// The listings this package writes show GNU-style flags.
	for _, args := range [][]string{{"status", "--help"}, {"dns", "test", "--help"}} {
		r := runCmd(ctx, args...)
		if !strings.Contains(r.stdout, "\n  --config FILE\n") || strings.Contains(r.stdout, "\n  -config") {
			t.Errorf("%v does not list --config FILE:\n%s", args, r.stdout)
		}
	}
}

// TestStatusForMonitoring: status shows days left, deploy dirs and zoned
// times, and exits 1 once a certificate expires within the alert window;
// --json keeps the daemon's fields and adds its own.
func TestStatusForMonitoring(t *testing.T) {
	w := newAllWorld(t, 1)
	cfg := w.config(nil)
	ctx := context.Background()
	if r := runCmd(ctx, "reissue", "c0", "--wait", "--timeout", "2m", "--config", cfg); r.err != nil {
		t.Fatalf("reissue:\n%s", r)
	}
	r := runCmd(ctx, "status", "--utc", "--config", cfg)
	if r.err != nil {
		t.Fatalf("status of a fresh certificate: %v\n%s", r.err, r)
	}
	for _, want := range []string{"DAYS LEFT", "DEPLOY DIR", w.deployDir("c0"), " UTC "} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status --utc lacks %q\n%s", want, r)
		}
	}

	// A window wider than the certificate's life: it is due for an alert.
	body, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wide := strings.Replace(string(body), "[daemon]\n", "[daemon]\nexpiry_alert_days = [365]\n", 1)
	if err := os.WriteFile(cfg, []byte(wide), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCmd(ctx, "status", "--config", cfg)
	if exitCode(r.err) != exitFailed || !strings.Contains(r.err.Error(), "c0: expires in") {
		t.Errorf("status with the certificate in the alert window: exit %d\n%s", exitCode(r.err), r)
	}
	r = runCmd(ctx, "status", "--json", "--config", cfg)
	var got []struct {
		Name      string     `json:"name"`
		NotAfter  *time.Time `json:"not_after"`
		DaysLeft  *int       `json:"days_left"`
		DeployDir string     `json:"deploy_dir"`
		Alert     string     `json:"alert"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 1 {
		t.Fatalf("status --json: %v\n%s", err, r)
	}
	if g := got[0]; exitCode(r.err) != exitFailed || g.NotAfter == nil || g.DaysLeft == nil || g.DeployDir != w.deployDir("c0") || g.Alert == "" {
		t.Errorf("status --json: exit %d, %+v", exitCode(r.err), g)
	}
}
