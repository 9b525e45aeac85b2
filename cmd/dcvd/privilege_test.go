package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the uid and gid the root tests give the state directory: a
// user other than root that every Linux system has.
const nobody = 65534

// requireRoot skips a test that needs root (to chown, and to see a command
// switch users), unless DCVD_TEST_REQUIRE_SERVERS says every test must run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	why := "needs root: it runs dcvd as root against a state directory owned by uid 65534 (nobody)"
	if os.Getenv("DCVD_TEST_REQUIRE_SERVERS") != "" {
		t.Fatal(why + " (DCVD_TEST_REQUIRE_SERVERS is set, so this fails rather than skips)")
	}
	t.Skip(why)
}

// openUp lets every user through dir and its parent (t.TempDir makes
// them 0700), as /var/lib and /etc/ssl are.
func openUp(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// chownNobody makes each directory (created if missing) nobody's.
func chownNobody(t *testing.T, mode os.FileMode, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
}

// builtDcvd builds cmd/dcvd once for the tests that must run it as a
// process of its own: a command run as root switches users for good, which
// the test process must not.
var builtDcvd struct {
	path string
	err  error
}

func dcvdBinary(t *testing.T) string {
	t.Helper()
	if builtDcvd.path == "" && builtDcvd.err == nil {
		dir, err := os.MkdirTemp("", "dcvd-bin-")
		if err == nil {
			builtDcvd.path = filepath.Join(dir, "dcvd")
			out, berr := exec.Command("go", "build", "-o", builtDcvd.path, ".").CombinedOutput()
			if berr != nil {
				err = errors.New(berr.Error() + "\n" + string(out))
			}
		}
		builtDcvd.err = err
	}
	if builtDcvd.err != nil {
		t.Fatalf("build dcvd: %v", builtDcvd.err)
	}
	// Every user may run it, from a directory every user may enter.
	if err := os.Chmod(filepath.Dir(builtDcvd.path), 0o755); err != nil {
		t.Fatal(err)
	}
	return builtDcvd.path
}

func runDcvd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, dcvdBinary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code
}

// rootOwned lists the files under dir that root owns.
func rootOwned(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == 0 {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRootCommandsLeaveNoRootOwnedState is issue 14's trap: commands run
// as root before the service starts (status, reissue, retry, redeploy)
// must leave no root-owned file in the state directory, or the daemon
// (user dcvd) fails with "permission denied".
func TestRootCommandsLeaveNoRootOwnedState(t *testing.T) {
	requireRoot(t)
	w := newAllWorld(t, 1)
	openUp(t, w.dir)
	state := filepath.Join(w.dir, "state")
	chownNobody(t, 0o700, state)
	chownNobody(t, 0o755, w.webroot, filepath.Join(w.dir, "deploy"))
	cfg := w.config(nil)

	steps := [][]string{
		{"status", "--config", cfg},
		{"reissue", "c0", "--wait", "--timeout", "90s", "--config", cfg},
		{"status", "--config", cfg},
		{"redeploy", "c0", "--config", cfg},
		{"retry", "c0", "--config", cfg}, // no order in flight: refused, but opens the state
	}
	for _, args := range steps {
		out, code := runDcvd(t, args...)
		t.Logf("dcvd %s: exit %d\n%s", strings.Join(args[:2], " "), code, out)
		if args[0] != "retry" && code != 0 {
			t.Fatalf("dcvd %v: exit %d\n%s", args, code, out)
		}
		if owned := rootOwned(t, state); len(owned) > 0 {
			t.Fatalf("after dcvd %v as root, root owns %v in the state directory", args, owned)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "dcvd.db")); err != nil {
		t.Fatalf("the reissue made no database: %v", err)
	}
	w.assertDeployed("c0")
	if owned := rootOwned(t, w.deployDir("c0")); len(owned) > 0 {
		t.Errorf("root owns %v in the deploy directory", owned)
	}
}

// TestRootCommandRefusesToCreateTheStateDir: a missing state directory is
// the installer's to make (as dcvd); as root a command refuses rather than
// make it root's, and says how. It refuses before it switches users, so it
// runs in this process.
func TestRootCommandRefusesToCreateTheStateDir(t *testing.T) {
	requireRoot(t)
	old := serviceUser
	serviceUser = "nobody" // installed as a service whose user is nobody
	t.Cleanup(func() { serviceUser = old })
	w := newAllWorld(t, 1)
	cfg := w.config(nil)
	state := filepath.Join(w.dir, "state")
	oldDir := serviceStateDir
	serviceStateDir = state // the service's own state directory
	t.Cleanup(func() { serviceStateDir = oldDir })
	var out bytes.Buffer
	err := run(context.Background(), []string{"reissue", "c0", "--wait", "--config", cfg}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "systemd-tmpfiles --create dcvd.conf") {
		t.Fatalf("reissue with no state directory: %v, want a refusal naming systemd-tmpfiles\n%s", err, out.String())
	}
	if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the state directory was created: %v", err)
	}
	if len(w.charges()) != 0 {
		t.Fatalf("the refused reissue was charged: %v", w.charges())
	}
}

// TestStatusCreatesNoState: before anything has run, status shows each
// configured certificate with no state, and creates neither the state
// directory nor the database.
func TestStatusCreatesNoState(t *testing.T) {
	w := newAllWorld(t, 2)
	cfg := w.config(nil)
	state := filepath.Join(w.dir, "state")
	for _, prepare := range []func(){
		func() {}, // no state directory
		func() { // a state directory the installer made, empty
			if err := os.Mkdir(state, 0o700); err != nil {
				t.Fatal(err)
			}
		},
	} {
		prepare()
		var stderr bytes.Buffer
		sts, err := statusFromState(context.Background(), cfg, &stderr)
		if err != nil {
			t.Fatal(err)
		}
		if len(sts) != 2 || sts[0].Name != "c0" || !strings.Contains(sts[0].RenewalReason, "no state") {
			t.Fatalf("status with no state: %+v", sts)
		}
		if !strings.Contains(stderr.String(), "nothing has run yet") {
			t.Errorf("status with no state says %q, want it to say nothing has run yet", stderr.String())
		}
		entries, err := os.ReadDir(state)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			t.Fatal(err)
		case len(entries) > 0:
			t.Fatalf("status created %v in the state directory", entries)
		}
	}
}
