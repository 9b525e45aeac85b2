package daemon

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/internal/testfs"
)

// treeOf lists everything below dir with its mode.
func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel+" "+fi.Mode().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// preflightProblems returns the problems of a *PreflightError, failing the
// test for any other error, and checks how the error reads.
func preflightProblems(t *testing.T, err error) []*config.ConfigError {
	t.Helper()
	if err == nil {
		return nil
	}
	var pe *PreflightError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *PreflightError", err, err)
	}
	if !strings.HasPrefix(pe.Error(), "pre-flight check failed, nothing was sent to the CA: ") {
		t.Errorf("error %q does not start as it should", pe.Error())
	}
	if pe.Cert != hCert || len(pe.Problems) == 0 {
		t.Errorf("PreflightError{Cert: %q, %d problems}", pe.Cert, len(pe.Problems))
	}
	if !slices.IsSortedFunc(pe.Problems, func(a, b *config.ConfigError) int { return strings.Compare(a.Key, b.Key) }) {
		t.Errorf("problems not sorted by key: %v", pe)
	}
	for _, p := range pe.Problems {
		if !strings.Contains(pe.Error(), p.Error()) {
			t.Errorf("the error does not list %q", p)
		}
	}
	return pe.Problems
}

// hasProblem tells whether one of problems is of key and mentions text.
func hasProblem(problems []*config.ConfigError, key, text string) bool {
	return slices.ContainsFunc(problems, func(p *config.ConfigError) bool {
		return p.Key == key && strings.Contains(p.Reason, text)
	})
}

func TestPreflight(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(hDomains())
	d := h.daemon(cfg, nil)
	cc := &d.config().Certificates[0]
	ctx := hCtx(t)

	// A good setup passes (the harness's reload command, which its fake
	// Deployer never runs, is not looked for) and leaves the web root, the
	// deploy directory's parent and the state directory as they were.
	dirs := []string{h.webroot, filepath.Dir(h.deployDir), h.stateDir}
	var before [][]string
	for _, dir := range dirs {
		testfs.MkdirAll(t, dir)
		before = append(before, treeOf(t, dir))
	}
	if err := d.preflight(ctx, cc); err != nil {
		t.Fatalf("preflight of a good setup: %v", err)
	}
	for i, dir := range dirs {
		if after := treeOf(t, dir); !slices.Equal(after, before[i]) {
			t.Errorf("preflight changed %s:\nbefore %q\nafter  %q", dir, before[i], after)
		}
	}

	t.Run("read-only web root", func(t *testing.T) {
		err, how := testfs.ReadOnly(t, h.webroot, func() error { return d.preflight(ctx, cc) })
		problems := preflightProblems(t, err)
		if !hasProblem(problems, "certificate[shop].webroot", "dcvd cannot create .well-known in "+h.webroot) {
			t.Errorf("web root made read-only by %s: preflight = %v", how, err)
		}
		if entries, _ := os.ReadDir(h.webroot); len(entries) > 0 {
			t.Errorf("preflight left %v in the web root", entries)
		}
	})

	t.Run("read-only web root under systemd", func(t *testing.T) {
		t.Setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
		err, how := testfs.ReadOnly(t, h.webroot, func() error { return d.preflight(ctx, cc) })
		problems := preflightProblems(t, err)
		if !hasProblem(problems, "certificate[shop].webroot", "ReadWritePaths=") ||
			!hasProblem(problems, "certificate[shop].webroot", h.webroot) {
			t.Errorf("web root made read-only by %s, under systemd: preflight = %v, want it to name ReadWritePaths= and the web root", how, err)
		}
	})

	t.Run("escaping symlink", func(t *testing.T) {
		outside := t.TempDir()
		link := filepath.Join(h.webroot, ".well-known")
		testfs.Symlink(t, outside, link)
		defer os.Remove(link)
		err := d.preflight(ctx, cc)
		problems := preflightProblems(t, err)
		if !hasProblem(problems, "certificate[shop].webroot", "outside the webroot") {
			t.Errorf("preflight = %v, want the symlink refused", err)
		}
		if entries, _ := os.ReadDir(outside); len(entries) > 0 {
			t.Errorf("preflight wrote %v outside the web root", entries)
		}
	})

	t.Run("every problem at once", func(t *testing.T) {
		link := filepath.Join(h.webroot, ".well-known")
		testfs.Symlink(t, "/", link)
		defer os.Remove(link)
		testfs.MkdirAll(t, h.deployDir)
		testfs.Chmod(t, h.deployDir, 0o777)
		defer os.Chmod(h.deployDir, 0o755)
		testfs.Chmod(t, h.stateDir, 0o777)
		defer os.Chmod(h.stateDir, 0o700)
		problems := preflightProblems(t, d.preflight(ctx, cc))
		for _, want := range []struct{ key, text string }{
			{"certificate[shop].deploy.dir", "writable by every user"},
			{"certificate[shop].webroot", "outside the webroot"},
			{"daemon.state_dir", "writable by its group or by every user"},
		} {
			if !hasProblem(problems, want.key, want.text) {
				t.Errorf("problems %v: none of %s saying %q", problems, want.key, want.text)
			}
		}
	})

	t.Run("ended context", func(t *testing.T) {
		ended, cancel := context.WithCancel(ctx)
		cancel()
		if err := d.preflight(ended, cc); !errors.Is(err, context.Canceled) {
			t.Errorf("preflight with an ended context = %v", err)
		}
	})
}

// TestPreflightStopsThePaidReissue: when the pre-flight check fails, no
// reissue reaches the CA and nothing is charged; the order waits at its
// first step, and once the setup is mended it goes through with the same
// unique_id, charged once.
func TestPreflightStopsThePaidReissue(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(hDomains())
	d := h.daemon(cfg, nil)
	ctx := hCtx(t)

	// A .well-known that leads out of the web root: Write would refuse it
	// at publishing, after the CA charged for the reissue.
	outside := t.TempDir()
	link := filepath.Join(h.webroot, ".well-known")
	testfs.Symlink(t, outside, link)

	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
	if n := h.events.count(evReissue); n != 0 {
		t.Fatalf("%d reissue request(s) reached the CA, %d charge(s), despite %v: the pre-flight check must run before the paid "+
			"reissue (d.preflight at the start of stepNew, steps.go)", n, len(h.sb.Ledger()), link)
	}
	problems := preflightProblems(t, err)
	if !hasProblem(problems, "certificate[shop].webroot", "outside the webroot") {
		t.Errorf("Reissue = %v, want the symlink named", err)
	}
	if n := len(h.sb.Ledger()); n != 0 {
		t.Errorf("%d charge(s) in the ledger", n)
	}
	if o == nil || o.Step != store.StepNew {
		t.Fatalf("order %+v, want it waiting at step new", o)
	}
	if entries, _ := os.ReadDir(outside); len(entries) > 0 {
		t.Errorf("files written outside the web root: %v", entries)
	}

	// Mended: the same order goes through, charged once.
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	h.clock.advance(time.Hour) // past the retry's backoff
	done := h.issue(ctx, d)
	if done.UniqueID != o.UniqueID {
		t.Errorf("the order after the mend is %s, want the held one %s", done.UniqueID, o.UniqueID)
	}
	if n := h.charges(o.UniqueID); n != 1 || len(h.sb.Ledger()) != 1 {
		t.Errorf("%d charge(s) for the order, %d in all; want 1", n, len(h.sb.Ledger()))
	}
	h.assertDeployedIs(done)
	h.assertDCVClean()
}
