package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/sandbox"
)

// cmdResult is one run of a command in this process.
type cmdResult struct {
	stdout, stderr string
	err            error
	took           time.Duration
}

func (r cmdResult) String() string {
	return "error: " + errString(r.err) + "\nstdout:\n" + r.stdout + "\nstderr:\n" + r.stderr
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

func runCmd(ctx context.Context, args ...string) cmdResult {
	var out, errOut lockedBuffer
	start := time.Now()
	err := run(ctx, args, &out, &errOut)
	return cmdResult{stdout: out.String(), stderr: errOut.String(), err: err, took: time.Since(start)}
}

// stateOf opens the state of w (no daemon may run) for f.
func (w *allWorld) stateOf(f func(ctx context.Context, s store.Store)) {
	w.t.Helper()
	ctx := context.Background()
	s, err := store.OpenSQLite(ctx, filepath.Join(w.dir, "state", "dcvd.db"))
	if err != nil {
		w.t.Fatal(err)
	}
	defer s.Close()
	f(ctx, s)
}

// backoffOrder leaves an order of c0 in flight at step new, after a
// reissue the CA failed, and then pushes it into a backoff of a day after
// seven failures, as a week of a CA's outage leaves it. The CA is well
// again afterwards.
func (w *allWorld) backoffOrder(cfg string) *store.Order {
	w.t.Helper()
	if err := w.sb.SetFaults(sandbox.Faults{ErrorRate: 1}); err != nil {
		w.t.Fatal(err)
	}
	// --wait: a plain reissue with no daemon running is refused.
	r := runCmd(context.Background(), "reissue", "c0", "--wait", "--timeout", "2s", "--config", cfg)
	if got := exitCode(r.err); got != exitTempFail {
		w.t.Fatalf("reissue against a failing CA: exit status %d, want %d\n%s", got, exitTempFail, r)
	}
	if err := w.sb.SetFaults(sandbox.Faults{}); err != nil {
		w.t.Fatal(err)
	}
	var o *store.Order
	w.stateOf(func(ctx context.Context, s store.Store) {
		var err error
		if o, err = s.ActiveOrder(ctx, "c0"); err != nil {
			w.t.Fatalf("the failed reissue left no order in flight: %v", err)
		}
		o.Attempts, o.NextAttempt = 7, time.Now().Add(24*time.Hour)
		if err := s.PutOrder(ctx, o); err != nil {
			w.t.Fatal(err)
		}
	})
	if !strings.Contains(r.err.Error(), o.UniqueID) {
		w.t.Errorf("the failed reissue does not name its order %s: %v", o.UniqueID, r.err)
	}
	return o
}

// TestReissueAndRetryInBackoff, without a daemon: reissue says that the
// order is in backoff and how to try it now (and does not wait a day for
// it), status shows it, retry makes it due, and reissue --wait then ends
// it, charged once.
func TestReissueAndRetryInBackoff(t *testing.T) {
	w := newAllWorld(t, 1)
	cfg := w.config(nil)
	o := w.backoffOrder(cfg)
	ctx := context.Background()

	wantBackoff := "certificate c0: order " + o.UniqueID + " is in backoff at step new after 7 failures until "
	for _, args := range [][]string{
		{"reissue", "c0", "--config", cfg},
		{"reissue", "c0", "--wait", "--config", cfg},
	} {
		r := runCmd(ctx, args...)
		if got := exitCode(r.err); got != exitTempFail || !strings.Contains(r.err.Error(), wantBackoff) ||
			!strings.Contains(r.err.Error(), "run dcvd retry c0 to try it now") || !strings.Contains(r.err.Error(), "last error: reseller reissue") {
			t.Errorf("%v: exit status %d, want %d and %q\n%s", args, got, exitTempFail, wantBackoff, r)
		}
		if r.took > time.Minute {
			t.Errorf("%v waited %s for an order in backoff for a day", args, r.took)
		}
	}

	r := runCmd(ctx, "status", "--config", cfg)
	for _, want := range []string{"c0: order " + o.UniqueID + " is in backoff at step new after 7 failures; next attempt ",
		"last error: reseller reissue", "run dcvd retry c0 to try it now"} {
		// An order in backoff is failing: status exits 1 for monitoring.
		if exitCode(r.err) != exitFailed || !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q\n%s", want, r)
		}
	}
	r = runCmd(ctx, "status", "--json", "--config", cfg)
	var sts []control.CertStatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil || len(sts) != 1 || sts[0].Order == nil {
		t.Fatalf("status --json: %v\n%s", err, r)
	}
	if got := sts[0].Order; !got.Backoff || got.Hint != "dcvd retry c0" || got.Attempts != 7 || got.NextAttempt == nil ||
		!strings.HasPrefix(got.LastError, "reseller reissue") {
		t.Errorf("status --json of the order in backoff: %+v", got)
	}

	r = runCmd(ctx, "retry", "c0", "--config", cfg)
	if r.err != nil || !strings.Contains(r.stdout, "no daemon is running: the order will be tried when dcvd run starts, or run dcvd reissue c0 --wait now") ||
		!strings.Contains(r.stdout, o.UniqueID) || !strings.Contains(r.stdout, "7 failures so far") {
		t.Fatalf("retry without a daemon:\n%s", r)
	}
	w.stateOf(func(ctx context.Context, s store.Store) {
		got, err := s.ActiveOrder(ctx, "c0")
		if err != nil || got.UniqueID != o.UniqueID || got.NextAttempt.After(time.Now()) || got.Attempts != 7 {
			t.Fatalf("after retry the order is %+v (%v), want %s due now with its 7 failures", got, err, o.UniqueID)
		}
	})

	r = runCmd(ctx, "reissue", "c0", "--wait", "--timeout", "2m", "--config", cfg)
	if r.err != nil || !strings.Contains(r.stdout, "deployed") || !strings.Contains(r.stdout, o.UniqueID) {
		t.Fatalf("reissue --wait after the retry:\n%s", r)
	}
	if n := w.charges()["svc-c0"]; n != 1 {
		t.Errorf("charged %d times, want once", n)
	}
	r = runCmd(ctx, "retry", "c0", "--config", cfg)
	if exitCode(r.err) != exitFailed || !strings.Contains(errString(r.err), "certificate c0 has no order in flight; dcvd reissue c0 starts one") {
		t.Errorf("retry with nothing in flight:\n%s", r)
	}
}

// TestRetryThroughTheRunningDaemon: the daemon resumes the order in
// backoff and waits out its day; reissue says so, and retry --wait has the
// daemon try it now and follows it to the end.
func TestRetryThroughTheRunningDaemon(t *testing.T) {
	w := newAllWorld(t, 1)
	cfg := w.config(nil)
	o := w.backoffOrder(cfg)

	daemonOut := startDaemon(t, cfg)

	bg := context.Background()
	r := runCmd(bg, "reissue", "c0", "--wait", "--config", cfg)
	if exitCode(r.err) != exitTempFail || !strings.Contains(errString(r.err), "is in backoff at step new after 7 failures") ||
		!strings.Contains(errString(r.err), "run dcvd retry c0 to try it now") {
		t.Errorf("reissue --wait through the daemon, in backoff:\n%s", r)
	}
	r = runCmd(bg, "status", "--config", cfg)
	if !strings.Contains(r.stdout, "run dcvd retry c0 to try it now") {
		t.Errorf("status through the daemon:\n%s", r)
	}

	r = runCmd(bg, "retry", "c0", "--wait", "--timeout", "2m", "--config", cfg)
	if r.err != nil || !strings.Contains(r.stdout, "the running daemon tries order "+o.UniqueID) ||
		!strings.Contains(r.stdout, "serial") || !strings.Contains(r.stdout, "deployed") {
		t.Fatalf("retry --wait through the daemon:\n%s\ndaemon:\n%s", r, daemonOut.String())
	}
	if n := w.charges()["svc-c0"]; n != 1 {
		t.Errorf("charged %d times, want once", n)
	}
	w.assertDeployed("c0")
}

// startDaemon runs "dcvd run" on cfg in this process until the test
// ends, and returns once it answers on its control socket; its output is
// returned for the test's messages.
func startDaemon(t *testing.T, cfg string) *lockedBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &lockedBuffer{}
	ran := make(chan error, 1)
	go func() { ran <- run(ctx, []string{"run", "--config", cfg}, out, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ran:
			if err != nil {
				t.Errorf("dcvd run: %v\n%s", err, out.String())
			}
		case <-time.After(time.Minute):
			t.Error("dcvd run did not stop")
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		c, err := dialRunning(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if c != nil {
			c.Close()
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never answered on its control socket:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRetryUsage: retry names one certificate.
func TestRetryUsage(t *testing.T) {
	cfg := writeConfig(t, "")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"retry", "--config", cfg}, "name the [[certificate]]"},
		{[]string{"retry", "a", "b", "--config", cfg}, "unexpected arguments"},
		{[]string{"retry", "--bogus", "--config", cfg}, "flag provided but not defined"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tt.args, &out, &out)
		if err == nil || !strings.Contains(err.Error(), tt.want) || exitCode(err) != exitUsage {
			t.Errorf("%v: %v (exit status %d), want a usage error containing %q", tt.args, err, exitCode(err), tt.want)
		}
		if !strings.Contains(out.String(), "Usage: dcvd retry NAME") {
			t.Errorf("%v printed no usage:\n%s", tt.args, out.String())
		}
	}
}
