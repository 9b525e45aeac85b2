package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dcvd/dcvd/daemon/config"
)

// TestExitCodes: every command follows one table of exit statuses, so
// that a script can tell a wrong command line (2) and a configuration to
// fix (78) from a failure (1) and from work to resume (75).
func TestExitCodes(t *testing.T) {
	w := newAllWorld(t, 1)
	good := w.config(nil)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.toml")
	broken := filepath.Join(dir, "broken.toml")
	if err := os.WriteFile(broken, []byte("[api\nbase_url = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	invalid := filepath.Join(dir, "invalid.toml")
	if err := os.WriteFile(invalid, []byte("[frobs]\nx = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want int
	}{
		{nil, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"help"}, exitOK},
		{[]string{"status", "--help"}, exitOK},
		{[]string{"status", "--bogus"}, exitUsage},
		{[]string{"reissue", "--config", good}, exitUsage},
		{[]string{"reissue", "a", "b", "--config", good}, exitUsage},
		{[]string{"reissue", "c0", "--all", "--config", good}, exitUsage},
		{[]string{"reissue", "nope", "--config", good}, exitUsage},
		{[]string{"reissue", "nope", "--dry-run", "--config", good}, exitUsage},
		{[]string{"retry", "--config", good}, exitUsage},
		{[]string{"retry", "nope", "--config", good}, exitUsage},
		{[]string{"redeploy", "nope", "--config", good}, exitUsage},
		{[]string{"dns"}, exitUsage},
		{[]string{"dns", "frob"}, exitUsage},
		{[]string{"dns", "test", "--domain", "example.com", "--config", good}, exitUsage},
		{[]string{"dns", "test", "main", "--domain", "example.com", "--config", good}, exitUsage},
		{[]string{"demo", "--bogus"}, exitUsage},

		{[]string{"check-config", "--config", missing}, exitConfig},
		{[]string{"check-config", "--config", broken}, exitConfig},
		{[]string{"check-config", "--config", invalid}, exitConfig},
		{[]string{"status", "--config", missing}, exitConfig},
		{[]string{"reissue", "c0", "--wait", "--config", invalid}, exitConfig},
		{[]string{"retry", "c0", "--config", broken}, exitConfig},
		{[]string{"redeploy", "c0", "--config", invalid}, exitConfig},
		{[]string{"run", "--config", missing}, exitConfig},
		{[]string{"dns", "test", "main", "--domain", "example.com", "--config", invalid}, exitConfig},

		{[]string{"check-config", "--config", good}, exitOK},
		{[]string{"redeploy", "c0", "--config", good}, exitFailed}, // nothing issued yet
		{[]string{"retry", "c0", "--config", good}, exitFailed},    // no order in flight
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tt.args, &out, &out)
			if got := exitCode(err); got != tt.want {
				t.Errorf("exit status %d (%v), want %d\n%s", got, err, tt.want, out.String())
			}
		})
	}
}

func TestExitCodeOfErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, exitOK},
		{"plain", errors.New("the CA refused"), exitFailed},
		{"usage", asUsage(errors.New("x")), exitUsage},
		{"config", asConfig(errors.New("x")), exitConfig},
		{"daemon config error", fmt.Errorf("start: %w", &config.ConfigError{Key: "daemon.schedule", Reason: "bad"}), exitConfig},
		{"resumable", asResumable(errors.New("in flight")), exitTempFail},
		{"wrapped resumable", fmt.Errorf("reissue: %w", asResumable(errors.New("in flight"))), exitTempFail},
		{"interrupted", fmt.Errorf("status: %w", context.Canceled), exitTempFail},
		{"out of time", fmt.Errorf("status: %w", context.DeadlineExceeded), exitTempFail},
	} {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("%s: exitCode(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
	if asUsage(nil) != nil || asConfig(nil) != nil || asResumable(nil) != nil {
		t.Error("marking nil made an error")
	}
}

// TestUsageDocumentsExitCodes: the statuses are in dcvd's usage and in
// the --help of its commands.
func TestUsageDocumentsExitCodes(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"reissue", "--help"}, {"retry", "--help"}, {"status", "--help"}} {
		var out bytes.Buffer
		if err := run(context.Background(), args, &out, &out); exitCode(err) != exitOK {
			t.Fatalf("%v: %v", args, err)
		}
		for _, want := range []string{"Exit status:", "\n  0 ", "\n  1 ", "\n  2 ", "\n  75 ", "\n  78 ", "dcvd retry NAME"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%v: usage lacks %q:\n%s", args, want, out.String())
			}
		}
	}
}
