package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestReloadEnvironment(t *testing.T) {
	t.Setenv("DCVD_TEST_API_SECRET", "s3cret-value")
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("LANG", "C.UTF-8")
	ca := newDeployTestCA(t)
	b := ca.issue(t, 0x1f2e, "shop.example.com", "*.example.com")
	out := filepath.Join(t.TempDir(), "env.out")
	spec := Spec{Dir: t.TempDir(), Reload: "env > " + out}
	var d Deployer
	if err := d.Deploy(context.Background(), spec, b); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	want := map[string]string{
		"DCVD_CERT_NAME":      "shop",
		"DCVD_DEPLOY_DIR":     spec.Dir,
		"DCVD_CERT_PATH":      filepath.Join(spec.Dir, "cert.pem"),
		"DCVD_CHAIN_PATH":     filepath.Join(spec.Dir, "chain.pem"),
		"DCVD_FULLCHAIN_PATH": filepath.Join(spec.Dir, "fullchain.pem"),
		"DCVD_KEY_PATH":       filepath.Join(spec.Dir, "privkey.pem"),
		"DCVD_DOMAINS":        "shop.example.com *.example.com",
		"DCVD_SERIAL":         "1f2e",
		"DCVD_NOT_AFTER":      b.NotAfter.UTC().Format(time.RFC3339),
		"LANG":                "C.UTF-8",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s=%q, want %q", k, env[k], v)
		}
	}
	if env["PATH"] == "" {
		t.Error("PATH not set")
	}
	for k := range env {
		// What the shell itself adds.
		allowed := []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "PWD", "OLDPWD", "SHLVL", "_"}
		if !strings.HasPrefix(k, "DCVD_") && !slices.Contains(allowed, k) || k == "DCVD_TEST_API_SECRET" {
			t.Errorf("the reload command inherits %s", k)
		}
	}
	if strings.Contains(string(data), "s3cret-value") {
		t.Error("the reload command's environment holds the secret")
	}
}

// deployTestAlive reports whether pid is a process that has not exited
// (a zombie waiting for its reaper has).
func deployTestAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesized command name.
	_, rest, ok := strings.Cut(string(data), ") ")
	return ok && !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

func TestReloadTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	b := ca.issue(t, 1, "shop.example.com")
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell waits for a child, which must die with it: long before it
	// would end on its own, or Reload's wait for the output to close.
	spec := Spec{Dir: t.TempDir(), ReloadTimeout: 200 * time.Millisecond,
		Reload: "sleep 120 & echo $! > " + pidFile + "; wait"}
	var d Deployer
	if err := d.Install(context.Background(), spec, b); err != nil {
		t.Fatal(err)
	}
	err := d.Reload(context.Background(), spec, b)
	if err == nil {
		t.Fatal("Reload succeeded")
	}
	for _, want := range []string{"reload certificate shop", `command "sleep 120 &`, "timed out after 200ms", "process group was killed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	// SIGKILL is delivered asynchronously; allow the child ample time to go.
	for deadline := time.Now().Add(5 * time.Second); deployTestAlive(pid); {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the reload command's child %d survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReloadFailureReportsOutput(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	b := ca.issue(t, 1, "shop.example.com")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name     string
		ctx      context.Context
		command  string
		want     []string
		dontWant []string
	}{
		{"exit status and output", context.Background(), "echo starting; echo 'nginx: [emerg] bad cert' >&2; exit 3",
			[]string{`command "echo starting;`, "failed: exit status 3", `last output: "starting\nnginx: [emerg] bad cert"`}, nil},
		{"long output keeps the end", context.Background(), "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; echo LAST >&2; exit 1",
			[]string{"exit status 1", `line2999\nLAST"`}, []string{"line0\\n", "line2989"}},
		{"no output", context.Background(), "exit 7", []string{"exit status 7"}, []string{"last output"}},
		{"canceled", canceled, "true", []string{"interrupted: context canceled"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := Spec{Dir: t.TempDir(), Reload: tt.command}
			var d Deployer
			err := d.Reload(tt.ctx, spec, b)
			if err == nil {
				t.Fatal("Reload succeeded")
			}
			msg := err.Error()
			for _, want := range append(tt.want, "reload certificate shop") {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			for _, bad := range tt.dontWant {
				if strings.Contains(msg, bad) {
					t.Errorf("error %q says %q", msg, bad)
				}
			}
			if len(msg) > reloadErrorBytes+512 {
				t.Errorf("error of %d bytes: the output is not bounded", len(msg))
			}
		})
	}
}

func TestReloadWithoutCommand(t *testing.T) {
	t.Parallel()
	d := Deployer{Run: func(context.Context, string, []string) (string, error) {
		t.Error("Run called without a reload command")
		return "", nil
	}}
	// The directory does not even exist: nothing is touched.
	spec := Spec{Dir: filepath.Join(t.TempDir(), "missing")}
	if err := d.Reload(context.Background(), spec, Bundle{Cert: "shop"}); err != nil {
		t.Fatal(err)
	}
}

// deployTestRunner is a Run that records the serials it reloaded and fails
// for those in fail (or for all after the first failAllAfter calls, when
// positive).
type deployTestRunner struct {
	mu           sync.Mutex
	serials      []string
	fail         map[string]bool
	failAllAfter int
}

func (r *deployTestRunner) run(_ context.Context, _ string, env []string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	serial := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "DCVD_SERIAL="); ok {
			serial = v
		}
	}
	r.serials = append(r.serials, serial)
	if r.fail[serial] || (r.failAllAfter > 0 && len(r.serials) > r.failAllAfter) {
		return "nginx: [emerg] cannot load certificate\n", errors.New("exit status 1")
	}
	return "", nil
}

func TestDeployRestoresPreviousGenerationWhenReloadFails(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	a, b := ca.issue(t, 0xa, "shop.example.com"), ca.issue(t, 0xb, "shop.example.com")

	tests := []struct {
		name        string
		runner      *deployTestRunner
		wantErr     []string
		wantRestore bool // the restored generation's reload succeeded
	}{
		{"restored generation reloads", &deployTestRunner{fail: map[string]bool{"0b": true}},
			[]string{"previous generation was restored and reloaded", "the new certificate is not live"}, true},
		{"restored generation fails too", &deployTestRunner{failAllAfter: 1},
			[]string{"previous generation was restored, but reloading it failed too"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := Spec{Dir: t.TempDir(), Reload: "systemctl reload nginx"}
			d := Deployer{Run: tt.runner.run}
			ctx := context.Background()
			if err := d.Deploy(ctx, spec, a); err != nil {
				t.Fatal(err)
			}
			err := d.Deploy(ctx, spec, b)
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("Deploy = %v, want a *Error", err)
			}
			if !de.Restored || de.Rollback != nil || (de.RestoreReload == nil) != tt.wantRestore {
				t.Errorf("Error %+v", de)
			}
			for _, want := range append(tt.wantErr, "deploy certificate shop", `command "systemctl reload nginx" failed`,
				"cannot load certificate") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			// Reloads: a, b (failed), then a again, described as a.
			if want := []string{"0a", "0b", "0a"}; !slices.Equal(tt.runner.serials, want) {
				t.Errorf("reloads of serials %q, want %q", tt.runner.serials, want)
			}
			deployTestCheckGeneration(t, "restored", spec.Dir, deployTestFiles(a))
			deployTestCheckGeneration(t, "previous", spec.PreviousDir(), deployTestFiles(a))

			// The next attempt keeps a, not a copy of b.
			tt.runner.fail, tt.runner.failAllAfter = nil, 0
			if err := d.Deploy(ctx, spec, b); err != nil {
				t.Fatal(err)
			}
			deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(b))
			deployTestCheckGeneration(t, "previous", spec.PreviousDir(), deployTestFiles(a))
		})
	}
}

func TestDeployFirstFailingReloadHasNothingToRestore(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	b := ca.issue(t, 0xb, "shop.example.com")
	runner := &deployTestRunner{fail: map[string]bool{"0b": true}}
	d := Deployer{Run: runner.run}
	spec := Spec{Dir: filepath.Join(t.TempDir(), "shop"), Reload: "systemctl reload nginx"}
	err := d.Deploy(context.Background(), spec, b)
	var de *Error
	if !errors.As(err, &de) {
		t.Fatalf("Deploy = %v, want a *Error", err)
	}
	if de.Restored || !errors.Is(err, ErrNoPreviousGeneration) {
		t.Errorf("Error %+v", de)
	}
	if !strings.Contains(err.Error(), "nothing to restore (no previous generation): the new files stay in place") {
		t.Errorf("error %q does not say that nothing was restored", err)
	}
	if len(runner.serials) != 1 {
		t.Errorf("%d reloads, want 1", len(runner.serials))
	}
	deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(b))
}

// A reload cut short by dcvd stopping is not a failed reload: the new files
// stay for the reload to be run again on resume.
func TestDeployInterruptedReloadRestoresNothing(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	a, b := ca.issue(t, 0xa, "shop.example.com"), ca.issue(t, 0xb, "shop.example.com")
	spec := Spec{Dir: t.TempDir(), Reload: "systemctl reload nginx"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := 0
	d := Deployer{Run: func(rctx context.Context, _ string, env []string) (string, error) {
		runs++
		if slices.Contains(env, "DCVD_SERIAL=0b") {
			cancel()
			<-rctx.Done()
			return "", rctx.Err()
		}
		return "", nil
	}}
	if err := d.Deploy(ctx, spec, a); err != nil {
		t.Fatal(err)
	}
	err := d.Deploy(ctx, spec, b)
	var de *Error
	if err == nil || errors.As(err, &de) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Deploy = %v, want a plain cancellation", err)
	}
	if runs != 2 {
		t.Errorf("%d reloads, want 2", runs)
	}
	deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(b))
	deployTestCheckGeneration(t, "previous", spec.PreviousDir(), deployTestFiles(a))
}

func TestRollback(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	a, b := ca.issue(t, 1, "shop.example.com"), ca.issue(t, 2, "shop.example.com")
	ctx := context.Background()
	var d Deployer

	t.Run("no previous generation", func(t *testing.T) {
		spec := Spec{Dir: t.TempDir()}
		if err := d.Install(ctx, spec, a); err != nil {
			t.Fatal(err)
		}
		err := d.Rollback(ctx, spec)
		if !errors.Is(err, ErrNoPreviousGeneration) || !strings.Contains(err.Error(), spec.Dir) {
			t.Errorf("Rollback = %v, want ErrNoPreviousGeneration naming %s", err, spec.Dir)
		}
		deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(a))
	})
	t.Run("missing directory", func(t *testing.T) {
		spec := Spec{Dir: filepath.Join(t.TempDir(), "missing")}
		if err := d.Rollback(ctx, spec); err == nil || !strings.Contains(err.Error(), spec.Dir) {
			t.Errorf("Rollback = %v, want an error naming %s", err, spec.Dir)
		}
	})
	t.Run("restores exactly the kept generation", func(t *testing.T) {
		// The kept generation had no chain.pem: the new one must go too.
		spec := Spec{Dir: t.TempDir(), Mode: 0o640}
		kept := deployTestFiles(a)
		delete(kept, "chain.pem")
		deployTestWrite(t, spec.Dir, kept)
		if err := d.Install(ctx, spec, b); err != nil {
			t.Fatal(err)
		}
		if err := d.Rollback(ctx, spec); err != nil {
			t.Fatal(err)
		}
		deployTestCheckGeneration(t, "current", spec.Dir, kept)
		deployTestCheckGeneration(t, "previous", spec.PreviousDir(), kept)
		fi, err := os.Stat(spec.CertPath())
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o640 {
			t.Errorf("restored cert.pem: mode %v, want the spec's 0640", fi.Mode())
		}
	})
}

func TestDeployWaitsForTheDirectoryLock(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	b := ca.issue(t, 1, "shop.example.com")
	spec := Spec{Dir: t.TempDir()}
	var d Deployer
	unlock, err := d.lock(context.Background(), spec.Dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = d.Install(ctx, spec, b)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for another deploy") {
		t.Errorf("Install while locked = %v, want it to wait until the deadline", err)
	}
	deployTestCheckGeneration(t, "current", spec.Dir, map[string]string{})
	unlock()
	if err := d.Install(context.Background(), spec, b); err != nil {
		t.Fatal(err)
	}
}

func TestReloadOutputKeepsTheEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"fits", []string{"ab", "cd"}, "abcd"},
		{"overflow across writes", []string{"abcdef", "ghij"}, "[2 earlier bytes not kept]\ncdefghij"},
		{"one large write", []string{"ab", "0123456789xyz"}, "[7 earlier bytes not kept]\n56789xyz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &reloadOutput{max: 8}
			for _, w := range tt.writes {
				if n, err := o.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := o.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}
