package e2e_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestForegroundExitCodes runs the real binary as a script would and
// checks its exit statuses: 2 for a wrong command line, 78 for a
// configuration that cannot be used, 0 for help, which lists them.
func TestForegroundExitCodes(t *testing.T) {
	bin := dcvdBinary(t, "")
	ctx := testContext(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.toml")
	broken := filepath.Join(dir, "broken.toml")
	if err := os.WriteFile(broken, []byte("[daemon\nstate_dir = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want int
	}{
		{nil, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"reissue", "--config", broken}, 2},
		{[]string{"status", "--bogus"}, 2},
		{[]string{"retry"}, 2},
		{[]string{"check-config", "--config", missing}, 78},
		{[]string{"check-config", "--config", broken}, 78},
		{[]string{"status", "--config", broken}, 78},
		{[]string{"reissue", "shop", "--wait", "--config", missing}, 78},
		{[]string{"run", "--config", broken}, 78},
		{[]string{"help"}, 0},
	} {
		r := runDcvd(ctx, bin, nil, tt.args...)
		if got := exitStatus(r.err); got != tt.want {
			t.Errorf("dcvd %s: exit status %d (%v), want %d\nstdout:\n%s\nstderr:\n%s",
				strings.Join(tt.args, " "), got, r.err, tt.want, r.stdout, r.stderr)
		}
		if len(tt.args) == 1 && tt.args[0] == "help" {
			for _, s := range []string{"Exit status:", "75", "78", "dcvd retry NAME"} {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("dcvd help lacks %q:\n%s", s, r.stdout)
				}
			}
		}
	}
}
