package e2e_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/sandbox"
)

// crashSteps are the steps after which the crash test kills dcvd: every
// step of an order from its creation to the last one before done.
var crashSteps = []store.Step{
	store.StepNew, store.StepSubmitted, store.StepPublishing, store.StepPublished, store.StepVisible,
	store.StepRechecked, store.StepIssued, store.StepDeployed, store.StepReloaded,
}

// crashCert is the certificate of the crash test, validated by http files
// only, so that it needs no server outside the test process.
const crashCert = "crash"

var crashNames = []string{"crash.example.com", "www.crash.example.com"}

// crashWorld is what one run of the crash test works on, all of it fresh:
// a sandbox CA, a web root served by an in-process web server, dcvd's
// state and deploy directories, and the file its reload command appends
// each deployed serial to.
type crashWorld struct {
	sb                                    *sandbox.Server
	cfgPath, stateDir, deployDir, webroot string
	reloads                               string
}

func newCrashWorld(t *testing.T) *crashWorld {
	t.Helper()
	dir := t.TempDir()
	w := &crashWorld{
		stateDir:  filepath.Join(dir, "state"),
		deployDir: filepath.Join(dir, "deploy"),
		webroot:   filepath.Join(dir, "webroot"),
		reloads:   filepath.Join(dir, "reloads.log"),
	}
	webAddr := serveWebroot(t, w.webroot)
	var apiURL string
	w.sb, apiURL = startSandbox(t, sandbox.Config{HTTPAddr: webAddr})
	domains := map[string]string{}
	for _, n := range crashNames {
		domains[n] = "http"
	}
	w.cfgPath = writeConfig(t, dir, w.sb, apiURL, map[string]any{
		"state_dir":     w.stateDir,
		"poll_interval": "50ms",
	}, nil, map[string]any{
		"name":         crashCert,
		"service_id":   serviceID,
		"webroot":      w.webroot,
		"http_connect": webAddr,
		"domains":      domains,
		"deploy": map[string]any{
			"dir":    w.deployDir,
			"reload": `printf '%s\n' "$DCVD_SERIAL" >>'` + w.reloads + `'`,
		},
	})
	return w
}

// TestCrashAtEveryStep kills dcvd with SIGKILL right after each step of
// the state machine is persisted (the crashtest build's hook), restarts
// it, and checks that the order it finishes is the one it began: charged
// once, with the key created before the crash, complete and matching
// files deployed, the reload run for them, and no validation file left.
// It restarts both ways an admin would: "dcvd reissue NAME --wait" again,
// and the daemon, "dcvd run", which resumes every order in flight.
func TestCrashAtEveryStep(t *testing.T) {
	bin := dcvdBinary(t, "crashtest")
	for _, step := range crashSteps {
		for _, restart := range []string{"reissue", "run"} {
			t.Run(string(step)+"/"+restart, func(t *testing.T) {
				t.Parallel()
				ctx := testContext(t)
				w := newCrashWorld(t)
				uid, keyFile, keyPEM := w.crash(ctx, t, bin, step)

				var out string
				switch restart {
				case "reissue":
					r := runDcvd(ctx, bin, nil, "reissue", crashCert, "--wait", "--config", w.cfgPath)
					if r.err != nil {
						t.Fatalf("dcvd reissue after the crash at %s: %v\nstdout:\n%s\nstderr:\n%s", step, r.err, r.stdout, r.stderr)
					}
					if !strings.Contains(r.stdout, uid) {
						t.Fatalf("after the crash at %s dcvd finished %q, not order %s", step, strings.TrimSpace(r.stdout), uid)
					}
					out = r.stderr
				case "run":
					out = w.runUntilDone(ctx, t, bin)
				}
				w.checkFinished(ctx, t, bin, uid, keyFile, keyPEM, out)
			})
		}
	}

	// After done nothing is left to resume: the crash must not have lost
	// the history (the cost) nor left any DCV behind.
	t.Run(string(store.StepDone), func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		w := newCrashWorld(t)
		uid, keyFile, keyPEM := w.crash(ctx, t, bin, store.StepDone)
		w.checkFinished(ctx, t, bin, uid, keyFile, keyPEM, "")
	})
}

// crash runs "dcvd reissue --wait" with the hook set to kill it after
// step, checks that it died there, and returns the order's unique_id and
// its key file with the key's bytes.
func (w *crashWorld) crash(ctx context.Context, t *testing.T, bin string, step store.Step) (uid, keyFile string, keyPEM []byte) {
	t.Helper()
	r := runDcvd(ctx, bin, []string{"DCVD_CRASH_AT_STEP=" + string(step)}, "reissue", crashCert, "--wait", "--config", w.cfgPath)
	if !killedBy(r.err, syscall.SIGKILL) {
		t.Fatalf("dcvd reissue with DCVD_CRASH_AT_STEP=%s ended with %v, want death by SIGKILL\nstdout:\n%s\nstderr:\n%s",
			step, r.err, r.stdout, r.stderr)
	}
	want := "crashtest: SIGKILL after step " + string(step) + " of order "
	i := strings.Index(r.stderr, want)
	if i < 0 {
		t.Fatalf("dcvd died by SIGKILL, but not from the hook (%q not in its output):\n%s", want, r.stderr)
	}
	uid, _, _ = strings.Cut(r.stderr[i+len(want):], "\n")

	// The crash left the order at exactly that step, its key on disk.
	st := dcvdStatus(ctx, t, bin, w.cfgPath, crashCert)
	switch {
	case step.Terminal() && st.Order != nil:
		t.Fatalf("after a crash at %s dcvd status shows order %+v in flight", step, st.Order)
	case !step.Terminal() && (st.Order == nil || st.Order.Step != string(step) || st.Order.UniqueID != uid):
		t.Fatalf("after the crash dcvd status shows order %+v, want %s at step %s", st.Order, uid, step)
	}
	keyFile, keyPEM = onlyKeyFile(t, w.stateDir)
	charged := 0
	for _, c := range w.sb.Ledger() {
		if c.UniqueID == uid {
			charged++
		}
	}
	if want := min(slices.Index(crashSteps, step), 1); step != store.StepDone && charged != want {
		t.Errorf("after a crash at step %s the sandbox charged %d time(s) for %s, want %d", step, charged, uid, want)
	}
	return uid, keyFile, keyPEM
}

// runUntilDone runs the daemon ("dcvd run") until dcvd status shows the
// certificate live and no order in flight, stops it with SIGTERM, and
// returns its output.
func (w *crashWorld) runUntilDone(ctx context.Context, t *testing.T, bin string) string {
	t.Helper()
	r := startDcvdRun(t, bin, w.cfgPath, "")
	out := r.out
	for {
		st := dcvdStatus(ctx, t, bin, w.cfgPath, crashCert)
		if st.Serial != "" && st.Order == nil {
			break
		}
		select {
		case <-r.done:
			t.Fatalf("dcvd run exited (%v) with the order at %+v:\n%s", r.err, st.Order, out.String())
		case <-ctx.Done():
			t.Fatalf("dcvd run did not finish the order (at %+v): %v\n%s", st.Order, ctx.Err(), out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("dcvd run, stopped with SIGTERM: %v\n%s", r.err, out.String())
		}
	case <-ctx.Done():
		t.Fatalf("dcvd run did not stop after SIGTERM: %v\n%s", ctx.Err(), out.String())
	}
	return out.String()
}

// checkFinished checks the world after order uid ended: dcvd shows the
// certificate live with nothing in flight and its cost recorded, the
// sandbox charged once, the key is the one created before the crash and is
// the deployed one, the deploy directory is complete and matching, the
// reload ran for it, and the webroot is as it was.
func (w *crashWorld) checkFinished(ctx context.Context, t *testing.T, bin, uid, keyFile string, keyPEM []byte, out string) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() && out != "" {
			t.Logf("dcvd's output after the restart:\n%s", out)
		}
	})
	st := dcvdStatus(ctx, t, bin, w.cfgPath, crashCert)
	if st.Serial == "" || st.Order != nil || st.LastError != "" {
		t.Fatalf("dcvd status after the restart: serial %q, order in flight %+v, last error %q; want a serial, no order, no error",
			st.Serial, st.Order, st.LastError)
	}

	// One charge, and the history records its cost.
	checkCharges(t, w.sb, uid)
	if amount := w.sb.Ledger()[0].Amount; st.TotalCost != amount {
		t.Errorf("dcvd status: total cost %.2f, the sandbox charged %.2f", st.TotalCost, amount)
	}

	// The same key: still the only one, unchanged, and deployed.
	if f, b := onlyKeyFile(t, w.stateDir); f != keyFile || !bytes.Equal(b, keyPEM) {
		t.Errorf("the key changed across the crash: %s before, %s after (same bytes: %t)", keyFile, f, bytes.Equal(b, keyPEM))
	}
	leaf := checkDeployed(t, w.deployDir, w.sb.RootPool(), crashNames)
	if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(publicKeyOf(t, keyFile, keyPEM)) {
		t.Errorf("the deployed certificate is not for the key created before the crash (%s)", keyFile)
	}
	if leaf.SerialNumber.Cmp(parseSerial(t, st.Serial)) != 0 {
		t.Errorf("cert.pem has serial %x, dcvd status says %s", leaf.SerialNumber, st.Serial)
	}
	checkOnlyEntries(t, w.deployDir, "cert.pem", "chain.pem", "fullchain.pem", "previous", "privkey.pem")

	// The reload ran, last for the deployed certificate.
	log, err := os.ReadFile(w.reloads)
	if err != nil {
		t.Fatalf("the reload command never ran: %v", err)
	}
	lines := strings.Fields(string(log))
	if len(lines) == 0 || lines[len(lines)-1] != st.Serial {
		t.Errorf("the reload command ran for serials %v, want the last one %s", lines, st.Serial)
	}

	// No validation file (nor a directory made for one) is left.
	checkOnlyEntries(t, w.webroot)
}

// TestPlainBuildHasNoCrashHook: only the crashtest build kills itself; the
// ordinary binary does not even contain the hook, and ignores its
// variable.
func TestPlainBuildHasNoCrashHook(t *testing.T) {
	plain, crash := dcvdBinary(t, ""), dcvdBinary(t, "crashtest")
	const marker = "DCVD_CRASH_AT_STEP"
	for _, c := range []struct {
		bin  string
		want bool
	}{{plain, false}, {crash, true}} {
		b, err := os.ReadFile(c.bin)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(b, []byte(marker)); got != c.want {
			t.Errorf("%s contains %s: %t, want %t", c.bin, marker, got, c.want)
		}
	}

	ctx := testContext(t)
	w := newCrashWorld(t)
	r := runDcvd(ctx, plain, []string{"DCVD_CRASH_AT_STEP=" + string(store.StepNew)}, "reissue", crashCert, "--wait", "--config", w.cfgPath)
	if r.err != nil {
		t.Fatalf("the plain dcvd with DCVD_CRASH_AT_STEP set: %v\nstderr:\n%s", r.err, r.stderr)
	}
	// And a misspelt step is refused by the crashtest build rather than
	// silently never matching.
	r = runDcvd(ctx, crash, []string{"DCVD_CRASH_AT_STEP=publish"}, "status", "--config", w.cfgPath)
	if r.err == nil || !strings.Contains(r.stderr, `"publish" is not a step`) {
		t.Errorf("the crashtest dcvd with DCVD_CRASH_AT_STEP=publish: %v, stderr %q; want a refusal", r.err, r.stderr)
	}
}

// killedBy reports whether err says the process died of sig.
func killedBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// onlyKeyFile returns the one key file of the crash certificate under
// stateDir/keys, and its content.
func onlyKeyFile(t *testing.T, stateDir string) (string, []byte) {
	t.Helper()
	dir := filepath.Join(stateDir, "keys", crashCert)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("key directory: %v", err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("%s holds %v, want exactly one key file", dir, names)
	}
	p := filepath.Join(dir, entries[0].Name())
	checkMode(t, p, 0o600)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

// checkOnlyEntries fails unless dir holds exactly the entries want
// (sorted), listing any stray file, temporary ones included, recursively.
func checkOnlyEntries(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if !slices.Equal(got, want) {
		var all []string
		_ = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
			if err == nil && p != dir {
				all = append(all, strings.TrimPrefix(p, dir+"/"))
			}
			return nil
		})
		t.Errorf("%s holds %v, want %v", dir, all, want)
	}
}
