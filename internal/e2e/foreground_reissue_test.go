package e2e_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcvd/dcvd/sandbox"
)

// These tests run "dcvd reissue NAME --wait" (the real binary, in this
// process's stead and through a running "dcvd run") against a CA that
// fails in the ways that used to hang it: replies that cannot be
// understood, and no reply at all. Each must end within its bound with
// exit status 75 (the order in flight, resumable) and a message that says
// which order, where it stands and how to resume.

// fgCert is the certificate of these tests, validated by an http file.
const fgCert = "fg"

// exitTempFail is dcvd's exit status for work in flight, resumable.
const exitTempFail = 75

// fgWorld is a sandbox CA and dcvd's configuration for one certificate.
type fgWorld struct {
	sb                *sandbox.Server
	cfgPath, stateDir string
}

// newFgWorld makes a fresh world whose CA injects faults; apiTimeout,
// when set, is [api] timeout.
func newFgWorld(t *testing.T, faults sandbox.Faults, apiTimeout string) *fgWorld {
	t.Helper()
	dir := t.TempDir()
	webroot := filepath.Join(dir, "webroot")
	webAddr := serveWebroot(t, webroot)
	sb, apiURL := startSandbox(t, sandbox.Config{HTTPAddr: webAddr})
	if err := sb.SetFaults(faults); err != nil {
		t.Fatal(err)
	}
	w := &fgWorld{sb: sb, stateDir: filepath.Join(dir, "state")}
	w.cfgPath = writeConfig(t, dir, sb, apiURL, map[string]any{"state_dir": w.stateDir, "poll_interval": "100ms"}, nil,
		httpCert(fgCert, serviceID, webroot, webAddr, filepath.Join(dir, "deploy")))
	if apiTimeout != "" {
		editConfig(t, w.cfgPath, func(cfg map[string]any) { cfg["api"].(map[string]any)["timeout"] = apiTimeout })
	}
	return w
}

// startDaemon runs "dcvd run" on w until the test ends, and waits until
// it answers on its control socket.
func (w *fgWorld) startDaemon(t *testing.T, bin string) *dcvdRun {
	t.Helper()
	r := startDcvdRun(t, bin, w.cfgPath, shortTempDir(t))
	link := filepath.Join(w.stateDir, "dcvd.sock")
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Lstat(link); err == nil {
			return r
		}
		select {
		case <-r.done:
			t.Fatalf("dcvd run exited: %v\n%s", r.err, r.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dcvd run made no control socket within 30s:\n%s", r.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inFlight is the unique_id and step of the order in flight of fgCert,
// from "dcvd status --json" (through the daemon when one runs).
func (w *fgWorld) inFlight(ctx context.Context, t *testing.T, bin string) (uid, step string) {
	t.Helper()
	st := dcvdStatus(ctx, t, bin, w.cfgPath, fgCert)
	if st.Order == nil {
		t.Fatalf("dcvd status shows no order in flight for %s", fgCert)
	}
	return st.Order.UniqueID, st.Order.Step
}

// exitStatus is the exit status of a finished dcvd, -1 when it did not
// exit by itself.
func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// wantResumable checks that a dcvd run ended with exit status 75 within
// bound and said each of want on stderr.
func wantResumable(t *testing.T, r ran, bound time.Duration, want ...string) {
	t.Helper()
	if got := exitStatus(r.err); got != exitTempFail {
		t.Errorf("exit status %d (%v), want %d", got, r.err, exitTempFail)
	}
	if r.took > bound {
		t.Errorf("took %s, want at most %s", r.took.Round(time.Millisecond), bound)
	}
	for _, s := range want {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q", s)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
}

// TestForegroundReissueGivesUpOnMalformedReplies: a CA that takes the
// reissue but answers it with truncated JSON every time. The daemon's
// backoff would retry it for ever; the foreground command gives up after
// three identical failures (10 s and 30 s of backoff apart), within 60 s,
// naming the error, the order kept with its unique_id and how to resume.
// The CA charged once.
func TestForegroundReissueGivesUpOnMalformedReplies(t *testing.T) {
	bin := dcvdBinary(t, "")
	const bound = 60 * time.Second
	inProcessAndThroughDaemon(t, bin, sandbox.Faults{MalformedRate: 1}, "", func(t *testing.T, ctx context.Context, w *fgWorld, how string) {
		resume := "dcvd reissue " + fgCert + " --wait"
		if how == throughDaemon {
			resume = "dcvd retry " + fgCert
		}
		r := runDcvd(ctx, bin, nil, "reissue", fgCert, "--wait", "--config", w.cfgPath)
		uid, step := w.inFlight(ctx, t, bin)
		wantResumable(t, r, bound, "gave up after 3 identical failures, which waiting will not mend",
			"reseller reissue: cannot understand the reply (HTTP 200)",
			"order "+uid+" is still in flight at step new", resume)
		t.Logf("dcvd reissue --wait %s gave up after %s", how, r.took.Round(time.Millisecond))
		if step != "new" {
			t.Errorf("the order is at step %s, want new", step)
		}
		if n := len(w.sb.Ledger()); n != 1 {
			t.Errorf("the sandbox charged %d times, want once (one unique_id)", n)
		}
	})
}

// TestForegroundReissueTimeoutIsHard: a CA that takes the reissue and
// never answers, with [api] timeout far beyond the command's: --timeout
// 20s ends the command within 25 s, the request at work included.
func TestForegroundReissueTimeoutIsHard(t *testing.T) {
	bin := dcvdBinary(t, "")
	const bound = 25 * time.Second
	inProcessAndThroughDaemon(t, bin, sandbox.Faults{Latency: time.Hour}, "10m", func(t *testing.T, ctx context.Context, w *fgWorld, how string) {
		r := runDcvd(ctx, bin, nil, "reissue", fgCert, "--wait", "--timeout", "20s", "--config", w.cfgPath)
		uid, _ := w.inFlight(ctx, t, bin)
		wantResumable(t, r, bound, "not done after 20s (--timeout)", "order "+uid+" is still in flight at step new")
		t.Logf("dcvd reissue --wait --timeout 20s %s took %s", how, r.took.Round(time.Millisecond))
	})
}

// throughDaemon names the subtests of inProcessAndThroughDaemon in which
// "dcvd run" is running.
const throughDaemon = "through the daemon"

// inProcessAndThroughDaemon runs f in two parallel subtests, "in-process"
// and "through the daemon", each on a fresh newFgWorld(t, faults,
// apiTimeout); in the second, "dcvd run" runs on it.
func inProcessAndThroughDaemon(t *testing.T, bin string, faults sandbox.Faults, apiTimeout string, f func(t *testing.T, ctx context.Context, w *fgWorld, how string)) {
	for _, how := range []string{"in-process", throughDaemon} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			w := newFgWorld(t, faults, apiTimeout)
			if how == throughDaemon {
				w.startDaemon(t, bin)
			}
			f(t, ctx, w, how)
		})
	}
}

// TestForegroundReissueSignal: Ctrl-C (and SIGTERM) while the reissue
// request is at the CA, which takes it and never answers: the command
// ends at once with exit status 75, saying the order is still in flight
// and how to resume; sending the order again later charges nothing more.
func TestForegroundReissueSignal(t *testing.T) {
	bin := dcvdBinary(t, "")
	const bound = 5 * time.Second
	for _, tt := range []struct {
		name   string
		sig    syscall.Signal
		daemon bool
	}{
		{"SIGINT", syscall.SIGINT, false},
		{"SIGTERM", syscall.SIGTERM, false},
		{"SIGINT through the daemon", syscall.SIGINT, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			w := newFgWorld(t, sandbox.Faults{Latency: time.Hour}, "10m")
			if tt.daemon {
				w.startDaemon(t, bin)
			}
			cmd := exec.Command(bin, "reissue", fgCert, "--wait", "--config", w.cfgPath)
			cmd.Env = dcvdEnv(nil)
			var stdout, stderr lockedBuffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			cmd.WaitDelay = 5 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			waited := make(chan struct{})
			go func() {
				defer close(waited)
				exited <- cmd.Wait()
			}()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-waited
			})

			// The sandbox charges once it has taken the reissue, then
			// holds its reply: from then on the request is in flight.
			// Through the daemon, the command follows the order by then.
			for len(w.sb.Ledger()) == 0 || (tt.daemon && !strings.Contains(stderr.String(), "; following it")) {
				select {
				case err := <-exited:
					t.Fatalf("dcvd reissue exited before the request was in flight: %v\n%s", err, stderr.String())
				case <-ctx.Done():
					t.Fatalf("the reissue never reached the CA:\n%s", stderr.String())
				case <-time.After(20 * time.Millisecond):
				}
			}
			if err := cmd.Process.Signal(tt.sig); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			var err error
			select {
			case err = <-exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("dcvd reissue still runs 30s after %s:\n%s", tt.name, stderr.String())
			}
			r := ran{stdout: stdout.String(), stderr: stderr.String(), err: err, took: time.Since(sent)}
			uid, step := w.inFlight(ctx, t, bin)
			wantResumable(t, r, bound, "interrupted: order "+uid+" is still in flight at step "+step, "dcvd reissue "+fgCert+" --wait")
			t.Logf("dcvd reissue --wait exited %s after %s", r.took.Round(time.Millisecond), tt.name)
			if !tt.daemon {
				if strings.Contains(r.stderr, "context canceled") {
					t.Errorf("the message is the bare context error:\n%s", r.stderr)
				}
				if !strings.Contains(r.stderr, "the same unique_id again: the CA charges once") {
					t.Errorf("the message does not say that resending is safe:\n%s", r.stderr)
				}
			}
		})
	}
}
