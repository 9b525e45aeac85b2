package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// This file tests "dcvd reissue --dry-run" (the rehearsal) and the refusal
// of a plain reissue without a daemon, end to end against the sandbox CA
// of newAllWorld (HTTP validation from a served web root).

// assertNothingSpent fails unless w's sandbox charged nothing and the
// command left no state behind: no state directory (so no order and no
// key), no probe file in the web root.
func (w *allWorld) assertNothingSpent(what string) {
	w.t.Helper()
	if n := len(w.sb.Ledger()); n != 0 {
		w.t.Errorf("%s: charged %d time(s)", what, n)
	}
	if _, err := os.Stat(filepath.Join(w.dir, "state")); !errors.Is(err, fs.ErrNotExist) {
		w.t.Errorf("%s: the state directory exists (%v): it may hold an order or a key", what, err)
	}
	if entries, _ := os.ReadDir(w.webroot); len(entries) != 0 {
		w.t.Errorf("%s: %d entries left in the web root", what, len(entries))
	}
}

// editConfig replaces old by new in the configuration file at path.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("the configuration has no %q", old)
	}
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), old, new)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReissueDryRun: the rehearsal passes on a good setup, printing every
// check and the reissue it would send, and fails (exit status 1) naming
// the step on each broken one; it never charges and leaves nothing.
func TestReissueDryRun(t *testing.T) {
	tests := []struct {
		name string
		// breakIt breaks w's configuration file cfg.
		breakIt func(t *testing.T, w *allWorld, cfg string)
		// step is the failed step the output names; "" for a pass.
		step, reason string
	}{
		{name: "good"},
		{name: "wrong secret", breakIt: func(t *testing.T, _ *allWorld, _ string) {
			t.Setenv("DCVD_TEST_ALL_SECRET", "not-the-secret")
		}, step: "api credentials", reason: "refused the credentials"},
		{name: "unknown service_id", breakIt: func(t *testing.T, _ *allWorld, cfg string) {
			editConfig(t, cfg, `service_id = "svc-c0"`, `service_id = "no-such-service"`)
		}, step: "service", reason: "no usable service"},
		{name: "web root not served", breakIt: func(t *testing.T, w *allWorld, cfg string) {
			editConfig(t, cfg, "webroot = "+quote(w.webroot), "webroot = "+quote(t.TempDir()))
		}, step: "http fetch c0.example.com", reason: "HTTP 404"},
		{name: "deploy dir not writable", breakIt: func(t *testing.T, w *allWorld, cfg string) {
			// Under a regular file: not creatable, even for root.
			file := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			editConfig(t, cfg, "dir = "+quote(w.deployDir("c0")), "dir = "+quote(filepath.Join(file, "deploy")))
		}, step: "pre-flight", reason: "deploy.dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newAllWorld(t, 1)
			cfg := w.config(nil)
			if tt.breakIt != nil {
				tt.breakIt(t, w, cfg)
			}
			r := runCmd(context.Background(), "reissue", "c0", "--dry-run", "--config", cfg)
			for _, want := range []string{
				"rehearsal of certificate c0 (nothing is paid, nothing is left behind):",
				"STEP", "plan", "api credentials", "service", "pre-flight", "http write", "http cleanup",
			} {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("output lacks %q\n%s", want, r)
				}
			}
			if tt.step == "" {
				if r.err != nil {
					t.Fatalf("the rehearsal failed\n%s", r)
				}
				for _, want := range []string{
					"http fetch c0.example.com", "ok: http://c0.example.com/.well-known/pki-validation/dcvd-rehearsal-",
					"certificate c0: would reissue c0.example.com, www.c0.example.com (service svc-c0, key ecdsa-p256, a new key), sending:",
					"c0.example.com                           http",
					"certificate c0: the real run would get past every step dcvd controls",
				} {
					if !strings.Contains(r.stdout, want) {
						t.Errorf("output lacks %q\n%s", want, r)
					}
				}
			} else {
				if got := exitCode(r.err); got != exitFailed {
					t.Errorf("exit status %d, want %d\n%s", got, exitFailed, r)
				}
				if r.err == nil || !strings.Contains(r.err.Error(), `at step "`+tt.step+`"`) || !strings.Contains(r.err.Error(), tt.reason) {
					t.Errorf("the error does not name step %q with %q\n%s", tt.step, tt.reason, r)
				}
				if !strings.Contains(r.stdout, `the real run would fail at step "`+tt.step+`": nothing was sent, nothing was paid`) {
					t.Errorf("the output does not name step %q\n%s", tt.step, r)
				}
			}
			w.assertNothingSpent("reissue --dry-run")
		})
	}
}

// TestReissueAllDryRunRehearses: --all --dry-run rehearses every
// certificate, names those that would fail, and spends nothing.
func TestReissueAllDryRunRehearses(t *testing.T) {
	w := newAllWorld(t, 3)
	cfg := w.config(func(name string, service *string, _ *[]string) {
		if name == "c1" {
			*service = "no-such-service"
		}
	})
	r := runCmd(context.Background(), "reissue", "--all", "--dry-run", "--config", cfg)
	if got := exitCode(r.err); got != exitFailed || !strings.Contains(r.err.Error(), "1 of 3 certificates would not get through: c1") {
		t.Errorf("exit status %d, want %d naming c1\n%s", got, exitFailed, r)
	}
	for _, want := range []string{"rehearsal of certificate c0", "rehearsal of certificate c1", "rehearsal of certificate c2",
		"certificate c0: the real run would get past", `certificate c1: the real run would fail at step "service"`,
		"certificate c2: the real run would get past"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q\n%s", want, r)
		}
	}
	w.assertNothingSpent("reissue --all --dry-run")
}

// TestReissueWithoutDaemonRefused: without --wait and without a running
// daemon, a reissue would pay and leave the order for no one: it is
// refused (exit status 1) before anything is sent, pointing to --wait and
// to starting the service.
func TestReissueWithoutDaemonRefused(t *testing.T) {
	w := newAllWorld(t, 1)
	cfg := w.config(nil)
	for _, args := range [][]string{
		{"reissue", "c0", "--config", cfg},
		{"reissue", "--all", "--config", cfg},
	} {
		r := runCmd(context.Background(), args...)
		if got := exitCode(r.err); got != exitFailed {
			t.Errorf("%v: exit status %d, want %d\n%s", args, got, exitFailed, r)
		}
		if r.err == nil || !strings.Contains(r.err.Error(), "no dcvd daemon is running") || !strings.Contains(r.err.Error(), "nothing was sent") ||
			!strings.Contains(r.err.Error(), " --wait to drive it to the end") || !strings.Contains(r.err.Error(), "systemctl start dcvd") {
			t.Errorf("%v: the refusal does not say why and what to do\n%s", args, r)
		}
		if n := len(w.sb.Ledger()); n != 0 {
			t.Errorf("%v: charged %d time(s)", args, n)
		}
	}
	if r := runCmd(context.Background(), "status", "--config", cfg); r.err == nil && strings.Contains(r.stdout, "order dcvd-") {
		t.Errorf("the refused reissue left an order:\n%s", r)
	}
}

// quote is a TOML basic string of s, as allWorld.config writes paths.
func quote(s string) string { return `"` + s + `"` }
