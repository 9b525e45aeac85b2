package e2e_test

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/sandbox"
)

// The restart test's sizes: each kill comes after a random delay in
// [killMinDelay, killMinDelay+killDelaySpan) from the start of "dcvd run".
// A -race build of dcvd takes about 0.3s to start on a 2-core machine, so
// that about a quarter of the kills land while it starts (opening the
// state, resuming orders), the rest while it works.
const (
	killCerts     = 50
	killRestarts  = 20
	killMinDelay  = 10 * time.Millisecond
	killDelaySpan = 1200 * time.Millisecond
)

// dcvdRun is one "dcvd run" process, killed when the test ends if it is
// still running, its output logged if the test failed.
type dcvdRun struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

// startDcvdRun starts "dcvd run" on cfgPath with RUNTIME_DIRECTORY
// runtimeDir (none if "") and the extra environment env.
func startDcvdRun(t *testing.T, bin, cfgPath, runtimeDir string, env ...string) *dcvdRun {
	t.Helper()
	r := &dcvdRun{cmd: exec.Command(bin, "run", "--config", cfgPath), out: &lockedBuffer{}, done: make(chan struct{})}
	if runtimeDir != "" {
		env = append([]string{"RUNTIME_DIRECTORY=" + runtimeDir}, env...)
	}
	r.cmd.Env = dcvdEnv(env)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	r.cmd.WaitDelay = 5 * time.Second
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start dcvd run: %v", err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			r.cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("dcvd run's output:\n%s", r.out.String())
		}
	})
	return r
}

// statusAll runs "dcvd status --json" and returns its entries by name.
func statusAll(ctx context.Context, t *testing.T, bin, cfgPath string) map[string]certStatus {
	t.Helper()
	sts, _ := statusJSON(ctx, t, bin, cfgPath)
	out := map[string]certStatus{}
	for _, s := range sts {
		out[s.Name] = s
	}
	return out
}

// chargesByService returns the charges of ledger by service.
func chargesByService(ledger []sandbox.Charge) map[string][]sandbox.Charge {
	paid := map[string][]sandbox.Charge{}
	for _, c := range ledger {
		paid[c.ServiceID] = append(paid[c.ServiceID], c)
	}
	return paid
}

// checkOneChargeEach checks that ledger, the charges of sb, holds one
// charge for each of n certificates, and that sb revoked nothing.
func checkOneChargeEach(t *testing.T, sb *sandbox.Server, ledger []sandbox.Charge, n int) {
	t.Helper()
	if len(ledger) != n {
		t.Errorf("the sandbox charged %d time(s), want once for each of %d certificates", len(ledger), n)
	}
	if rs := sb.Revocations(); len(rs) > 0 {
		t.Errorf("the sandbox revoked %+v", rs)
	}
}

// killedState is what dcvd's state holds after a kill.
type killedState struct {
	live   map[string]*store.Certificate
	active map[string]*store.Order
}

// readKilledState opens dcvd's state (no dcvd may run) as a restart
// would, and reads the live certificates and the orders in flight. A kill
// before dcvd created its database leaves no state to read.
func readKilledState(ctx context.Context, t *testing.T, stateDir string) killedState {
	t.Helper()
	out := killedState{live: map[string]*store.Certificate{}, active: map[string]*store.Order{}}
	db := filepath.Join(stateDir, "dcvd.db")
	if _, err := os.Stat(db); errors.Is(err, fs.ErrNotExist) {
		return out
	}
	st, err := store.OpenSQLite(ctx, db)
	if err != nil {
		t.Fatalf("open dcvd's state after a kill: %v", err)
	}
	defer st.Close()
	certs, err := st.Certificates(ctx)
	if err != nil {
		t.Fatalf("read the live certificates after a kill: %v", err)
	}
	for _, c := range certs {
		out.live[c.Name] = c
	}
	orders, err := st.ActiveOrders(ctx)
	if err != nil {
		t.Fatalf("read the orders in flight after a kill: %v", err)
	}
	for _, o := range orders {
		if prev, ok := out.active[o.Cert]; ok {
			t.Fatalf("certificate %s has two orders in flight: %s at %s and %s at %s", o.Cert, prev.UniqueID, prev.Step, o.UniqueID, o.Step)
		}
		out.active[o.Cert] = o
	}
	return out
}

// TestFaultsSIGKILLRestarts runs "dcvd run" (the real binary, built with
// -race under -race) with 50 certificates validated by http files in a web
// root that a test server serves, and kills it with SIGKILL after a random
// delay, 20 times. After each kill the state must open and hold at most
// one order in flight per certificate, and no certificate may have been
// charged twice or reissued under two unique_ids so far. A last run must
// then finish every certificate, and stop on SIGTERM. Then: every
// certificate deployed (chaining to the sandbox root, for its names, with
// the key of the order that the state records), its reload run last for
// the live serial; "dcvd status --json" showing each live with nothing in
// flight and no error, and the cost the sandbox charged; each order done
// in the state; the sandbox charged once per certificate, for that order,
// and every reissue request for a certificate carried that one unique_id;
// no validation file left in the web root; nothing panicked or raced.
//
// Two leftovers of a kill are tolerated, each checked to be exactly that:
// the temporary file of a validation file killed before its rename (its
// order's cleanup removes it, except a few bytes long and under a minute
// old, which could be another write in progress), and the key file of an
// order killed before it was recorded (removed at a later start once a
// minute old, longer than this test runs).
func TestFaultsSIGKILLRestarts(t *testing.T) {
	bin := dcvdBinary(t, "")
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0x6b696c6c)) // "kill"
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()

	dir := shortTempDir(t) // the control socket lives under it
	stateDir, runtimeDir := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	webroot, deployRoot := filepath.Join(dir, "webroot"), filepath.Join(dir, "deploy")
	reloadLog := filepath.Join(dir, "reloads.log")
	for _, d := range []string{runtimeDir, webroot} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(webroot, 0o755); err != nil {
		t.Fatal(err)
	}
	var webErrs, apiErrs serverErrors
	web := webErrs.start(t, http.FileServer(http.Dir(webroot)))
	t.Cleanup(web.Close)
	webAddr := web.Listener.Addr().String()

	names := make([]string, killCerts)
	product := sandbox.DefaultProducts()[0].ID
	var services []sandbox.Service
	for i := range names {
		names[i] = fmt.Sprintf("k%02d", i)
		services = append(services, sandbox.Service{ID: names[i], ProductID: product})
	}
	sb, err := sandbox.New(sandbox.Config{
		StateDir: t.TempDir(), HTTPAddr: webAddr, CheckInterval: -1,
		Products: sandbox.DefaultProducts(), Services: services,
	})
	if err != nil {
		t.Fatal(err)
	}
	reissues := &reissueLog{}
	api := apiErrs.start(t, reissues.wrap(sb.Handler()))
	t.Cleanup(func() {
		api.Close()
		sb.Close()
	})

	id, secret := sb.AccessKey()
	roots := filepath.Join(dir, "sandbox-root.pem")
	if err := os.WriteFile(roots, []byte(sb.RootPEM()), 0o644); err != nil {
		t.Fatal(err)
	}
	domains := func(name string) map[string]string {
		return map[string]string{name + ".example.com": "http", "www." + name + ".example.com": "http"}
	}
	var certs []map[string]any
	for _, name := range names {
		certs = append(certs, map[string]any{
			"name":         name,
			"service_id":   name,
			"webroot":      webroot,
			"http_connect": webAddr,
			"domains":      domains(name),
			"deploy": map[string]any{
				"dir":    filepath.Join(deployRoot, name),
				"reload": `printf '%s %s\n' "$DCVD_CERT_NAME" "$DCVD_SERIAL" >>'` + reloadLog + `'`,
			},
		})
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(map[string]any{
		"api": map[string]any{
			"base_url":               api.URL + "/api/v1",
			"access_key_id":          id,
			"access_key_secret_file": writeSecret(t, dir, "api-secret", secret),
			"ca_roots_file":          roots,
			"timeout":                "10s",
		},
		"daemon":      map[string]any{"state_dir": stateDir, "poll_interval": "50ms", "max_concurrent": 8},
		"certificate": certs,
	}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "dcvd.toml")
	if err := os.WriteFile(cfgPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}

	var runs []*dcvdRun
	t.Cleanup(func() {
		if t.Failed() {
			for i, r := range runs {
				t.Logf("----- output of run %d -----\n%s", i+1, r.out.String())
			}
		}
	})

	// Twenty kills, each checked.
	inFlight := map[store.Step]int{}
	for i := range killRestarts {
		delay := killMinDelay + time.Duration(rng.Int64N(int64(killDelaySpan)))
		r := startDcvdRun(t, bin, cfgPath, runtimeDir)
		runs = append(runs, r)
		select {
		case <-r.done:
			t.Fatalf("run %d: dcvd run exited by itself (%v) before its kill after %s", i+1, r.err, delay)
		case <-time.After(delay):
		}
		if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("run %d: SIGKILL: %v", i+1, err)
		}
		<-r.done
		if !killedBy(r.err, syscall.SIGKILL) {
			t.Fatalf("run %d: dcvd run ended with %v, want death by SIGKILL", i+1, r.err)
		}
		st := readKilledState(ctx, t, stateDir)
		steps := map[store.Step]int{}
		for _, o := range st.active {
			steps[o.Step]++
			inFlight[o.Step]++
		}
		ledger := sb.Ledger()
		t.Logf("kill %d after %s: %d live, in flight by step %v, %d charges", i+1, delay.Round(time.Millisecond), len(st.live), steps, len(ledger))
		charged := map[string]int{}
		for _, c := range ledger {
			if charged[c.ServiceID]++; charged[c.ServiceID] > 1 {
				t.Fatalf("after kill %d the sandbox charged %s twice: %+v", i+1, c.ServiceID, ledger)
			}
		}
		for svc, uids := range reissues.uniqueIDs() {
			if len(uids) > 1 {
				t.Fatalf("after kill %d certificate %s was reissued with unique_ids %v", i+1, svc, uids)
			}
		}
	}
	if len(inFlight) == 0 {
		t.Fatalf("no kill found an order in flight: the kills tested nothing")
	}
	t.Logf("orders in flight after the kills, by step, summed over the kills: %v", inFlight)
	killed := time.Since(start)

	// The last run finishes everything, and stops on SIGTERM. It is
	// watched through its control socket, which costs it less than a
	// "dcvd status" process would.
	r := startDcvdRun(t, bin, cfgPath, runtimeDir)
	runs = append(runs, r)
	socket, _ := control.SocketPaths(stateDir, runtimeDir)
	waitUntil(ctx, t, "every certificate live after the restarts", func() string {
		select {
		case <-r.done:
			t.Fatalf("the last dcvd run exited (%v) before finishing", r.err)
		default:
		}
		ctl, err := control.Dial(socket)
		if err != nil {
			return err.Error()
		}
		defer ctl.Close()
		sts, err := ctl.Status(ctx)
		if err != nil {
			return err.Error()
		}
		for _, st := range sts {
			if st.Serial == "" || st.Order != nil {
				return fmt.Sprintf("%s: serial %q, order %+v, last error %q", st.Name, st.Serial, st.Order, st.LastError)
			}
		}
		if len(sts) != len(names) {
			return fmt.Sprintf("the daemon has %d certificates, want %d", len(sts), len(names))
		}
		return ""
	})
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("the last dcvd run, stopped with SIGTERM: %v", r.err)
		}
	case <-ctx.Done():
		t.Fatalf("the last dcvd run did not stop after SIGTERM: %v", ctx.Err())
	}
	ran := time.Since(start)

	// The state, read with no dcvd running: each certificate live with
	// nothing in flight and no error; its order done.
	sts := statusAll(ctx, t, bin, cfgPath)
	ledger := sb.Ledger()
	paid := chargesByService(ledger)
	checkOneChargeEach(t, sb, ledger, len(names))
	sent := reissues.uniqueIDs()
	svcs := sandboxServices(ctx, t, api.URL)
	lastReload := map[string]string{}
	if b, err := os.ReadFile(reloadLog); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if cert, serial, ok := strings.Cut(line, " "); ok {
				lastReload[cert] = serial
			}
		}
	} else {
		t.Errorf("reload log: %v", err)
	}
	st, err := store.OpenSQLite(ctx, filepath.Join(stateDir, "dcvd.db"))
	if err != nil {
		t.Fatalf("open dcvd's state: %v", err)
	}
	defer st.Close()
	var contents []string // of the validation files of every order
	var orphanKeys []string
	for _, name := range names {
		s := sts[name]
		if s.Serial == "" || s.Order != nil || s.LastError != "" {
			t.Errorf("status of %s: serial %q, order in flight %+v, last error %q", name, s.Serial, s.Order, s.LastError)
			continue
		}
		live, order := liveAndOrder(ctx, t, st, name)
		if order.Step != store.StepDone || live.Serial != s.Serial {
			t.Errorf("state of %s: order %s at %s, live serial %s (status %s)", name, order.UniqueID, order.Step, live.Serial, s.Serial)
		}
		for _, in := range order.Instructions {
			if in.File != nil {
				contents = append(contents, in.File.Content)
			}
		}
		if cs := paid[name]; len(cs) != 1 || cs[0].UniqueID != live.UniqueID {
			t.Errorf("certificate %s: charges %+v, want one, for order %s", name, cs, live.UniqueID)
		} else if s.TotalCost != cs[0].Amount {
			t.Errorf("status of %s: total cost %.2f, the sandbox charged %.2f", name, s.TotalCost, cs[0].Amount)
		}
		if got := sent[name]; len(got) != 1 || got[0] != live.UniqueID {
			t.Errorf("certificate %s: reissue requests carried unique_ids %v, want only %s", name, got, live.UniqueID)
		}
		if sv := svcs[name]; sv.OrderUniqueID != live.UniqueID || !sameSerial(sv.Serial, live.Serial) {
			t.Errorf("certificate %s: the sandbox's current order is %s with serial %s, dcvd's %s with %s",
				name, sv.OrderUniqueID, sv.Serial, live.UniqueID, live.Serial)
		}

		dir := filepath.Join(deployRoot, name)
		leaf := checkDeployed(t, dir, sb.RootPool(), slices.Sorted(maps.Keys(domains(name))))
		if got := readFile(t, filepath.Join(dir, "cert.pem")); got != live.CertPEM {
			t.Errorf("certificate %s: %s/cert.pem is not the live certificate %s", name, dir, live.Serial)
		}
		keyPEM, err := os.ReadFile(live.KeyFile)
		if err != nil {
			t.Fatalf("certificate %s: the live key: %v", name, err)
		}
		if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(publicKeyOf(t, live.KeyFile, keyPEM)) {
			t.Errorf("certificate %s: the deployed certificate is not for the key of order %s (%s)", name, live.UniqueID, live.KeyFile)
		}
		if got := lastReload[name]; got != live.Serial {
			t.Errorf("certificate %s: the last reload was for serial %q, want %s", name, got, live.Serial)
		}

		// The deploy directory holds the four files and the kept
		// generation, no temporary file.
		checkOnlyEntries(t, dir, "cert.pem", "chain.pem", "fullchain.pem", "previous", "privkey.pem")

		// The key directory holds the live key, and at most keys of
		// orders that a kill cut off before they were recorded: unknown
		// to the state and never sent to the sandbox, whole
		// (UNIQUE_ID.key) or still in their temporary file
		// (.UNIQUE_ID.key.tmp-N).
		keyDir := filepath.Join(stateDir, "keys", name)
		if filepath.Dir(live.KeyFile) != keyDir {
			t.Errorf("certificate %s: the live key %s is not in %s", name, live.KeyFile, keyDir)
		}
		for _, f := range filesUnder(keyDir) {
			p := filepath.Join(keyDir, f)
			if p == live.KeyFile {
				continue
			}
			uid, ok := strings.CutSuffix(f, ".key")
			if !ok {
				tmp, _, isTmp := strings.Cut(f, ".key.tmp-")
				uid, ok = strings.CutPrefix(tmp, ".")
				ok = ok && isTmp
			}
			_, err := st.Order(ctx, uid)
			if !ok || !strings.HasPrefix(uid, "dcvd-") || !errors.Is(err, store.ErrNotFound) || slices.Contains(sent[name], uid) {
				t.Errorf("certificate %s: key file %s is neither the live key nor one of an order never recorded (%v)", name, p, err)
				continue
			}
			orphanKeys = append(orphanKeys, p)
		}
	}

	// The web root may keep the two directories that several orders
	// shared, and the temporary file of a validation file whose write a
	// kill interrupted (its content a prefix of an order's file); no
	// validation file, nothing else.
	var tmpFiles []string
	err = filepath.WalkDir(webroot, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == webroot {
			return err
		}
		rel := strings.TrimPrefix(p, webroot+"/")
		if d.IsDir() && (rel == ".well-known" || rel == ".well-known/pki-validation") {
			return nil
		}
		if d.Type().IsRegular() && rel == ".well-known/pki-validation/.dcvd-created" {
			return nil // the marker of the directories dcvd created, kept with them
		}
		base := filepath.Base(rel)
		if d.Type().IsRegular() && filepath.Dir(rel) == ".well-known/pki-validation" && strings.HasPrefix(base, ".dcvd-") && strings.HasSuffix(base, ".tmp") {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(contents, func(c string) bool { return strings.HasPrefix(c, string(b)) }) {
				tmpFiles = append(tmpFiles, rel)
				return nil
			}
		}
		t.Errorf("the web root still holds %s", rel)
		return nil
	})
	if err != nil {
		t.Errorf("walk the web root: %v", err)
	}
	if len(tmpFiles)+len(orphanKeys) > 0 {
		t.Logf("left by kills (reported): temporary files in the web root %v; keys of orders never recorded %v", tmpFiles, orphanKeys)
	}

	for i, r := range runs {
		for _, bad := range []string{"panic:", "DATA RACE", "fatal error:"} {
			if strings.Contains(r.out.String(), bad) {
				t.Errorf("run %d printed %q", i+1, bad)
			}
		}
	}
	webErrs.check(t, "the web server")
	apiErrs.check(t, "the sandbox's API server")
	t.Logf("%d certificates: %d kills in %s, then the last run: %s in all", len(names), killRestarts,
		killed.Round(time.Millisecond), ran.Round(time.Millisecond))
}
