package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libdns/libdns"

	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

// sameSerial compares two hex serials as numbers (the sandbox pads to 32
// digits, dcvd prints the minimal bytes).
func sameSerial(a, b string) bool {
	x, ok1 := new(big.Int).SetString(a, 16)
	y, ok2 := new(big.Int).SetString(b, 16)
	return ok1 && ok2 && x.Cmp(y) == 0
}

// TestDomainRemovalGuard: a reissue that drops a name of the live
// certificate is refused before anything reaches the CA, by Reissue and by
// the dry run; confirmed, it proceeds and the CA revokes the live
// certificate, as documented.
func TestDomainRemovalGuard(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	cfg := h.config(map[string]reseller.Method{"a.example.com": reseller.MethodDNS, "b.example.com": reseller.MethodDNS})
	d, first := h.issued(ctx, cfg)
	live, err := d.Store().Certificate(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a.example.com", "b.example.com"}; !slices.Equal(live.Names, want) {
		t.Fatalf("live names %v, want %v", live.Names, want)
	}
	ledger, keys := len(h.sb.Ledger()), h.keyFiles()
	apiCalls := h.events.count("api ")
	deployedBefore := h.deployed()

	// The admin drops b from the config.
	cfg.Certificates[0].Domains = map[string]reseller.Method{"a.example.com": reseller.MethodDNS}

	checkRefusal := func(what string, err error) {
		t.Helper()
		var dre *DomainRemovalError
		if !errors.As(err, &dre) {
			t.Fatalf("%s: got %v, want a *DomainRemovalError", what, err)
		}
		if dre.Cert != hCert || dre.Serial != live.Serial || !slices.Equal(dre.Dropped, []string{"b.example.com"}) {
			t.Errorf("%s: refusal %+v, want cert %s, serial %s, dropped [b.example.com]", what, dre, hCert, live.Serial)
		}
		for _, want := range []string{"b.example.com", live.Serial, "revoke", "--allow-domain-removal"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: message %q does not mention %q", what, err, want)
			}
		}
	}
	o, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	checkRefusal("Reissue", err)
	if o != nil {
		t.Errorf("Reissue returned an order despite the refusal: %+v", o)
	}
	_, err = d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
	checkRefusal("Reissue without wait", err)
	_, err = d.Plan(ctx, hCert, false)
	checkRefusal("Plan", err)

	// Nothing was sent, stored or generated; the live certificate stands.
	if n := h.events.count("api "); n != apiCalls {
		t.Errorf("%d API call(s) made despite the refusal", n-apiCalls)
	}
	if n := len(h.sb.Ledger()); n != ledger {
		t.Errorf("ledger grew from %d to %d entries", ledger, n)
	}
	if _, err := d.Store().ActiveOrder(ctx, hCert); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an order was stored despite the refusal: %v", err)
	}
	if got := h.keyFiles(); !slices.Equal(got, keys) {
		t.Errorf("key files %v, want %v (no key generated for a refused order)", got, keys)
	}
	if revs := h.sb.Revocations(); len(revs) != 0 {
		t.Errorf("revocations after a refused reissue: %+v", revs)
	}
	if got := h.deployed(); string(got["cert.pem"]) != string(deployedBefore["cert.pem"]) {
		t.Errorf("deployed certificate changed")
	}

	// Adding a name is no removal.
	cfg.Certificates[0].Domains = map[string]reseller.Method{"a.example.com": reseller.MethodDNS,
		"b.example.com": reseller.MethodDNS, "c.example.com": reseller.MethodDNS}
	if p, err := d.Plan(ctx, hCert, false); err != nil {
		t.Errorf("Plan with an added name: %v", err)
	} else if len(p.Names) != 3 {
		t.Errorf("Plan names %v", p.Names)
	}
	cfg.Certificates[0].Domains = map[string]reseller.Method{"a.example.com": reseller.MethodDNS}

	// The dry run with the confirmation says what would be done.
	p, err := d.Plan(ctx, hCert, true)
	if err != nil {
		t.Fatalf("Plan confirmed: %v", err)
	}
	if !slices.Equal(p.Names, []string{"a.example.com"}) {
		t.Errorf("Plan names %v, want [a.example.com]", p.Names)
	}
	if n := len(h.sb.Ledger()); n != ledger {
		t.Errorf("the dry run charged: ledger %d → %d", ledger, n)
	}

	// Confirmed: the reissue proceeds and the sandbox revokes the old
	// certificate (the documented danger the guard is for).
	o, err = d.Reissue(ctx, hCert, ReissueOptions{Wait: true, AllowDomainRemoval: true})
	if err != nil {
		t.Fatalf("confirmed reissue: %v", err)
	}
	if o.Step != store.StepDone || !o.AllowDomainRemoval || o.UniqueID == first.UniqueID {
		t.Errorf("confirmed order: step %s, allow %v, unique_id %s", o.Step, o.AllowDomainRemoval, o.UniqueID)
	}
	stored, err := d.Store().Order(ctx, o.UniqueID)
	if err != nil || !stored.AllowDomainRemoval {
		t.Errorf("the confirmation is not recorded with the order: %+v, %v", stored, err)
	}
	revs := h.sb.Revocations()
	if len(revs) != 1 || !sameSerial(revs[0].Serial, live.Serial) || revs[0].UniqueID != o.UniqueID {
		t.Fatalf("revocations %+v, want the old serial %s revoked by %s", revs, live.Serial, o.UniqueID)
	}
	if h.charges(o.UniqueID) != 1 {
		t.Errorf("%d charges for the confirmed reissue", h.charges(o.UniqueID))
	}
	live2, err := d.Store().Certificate(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(live2.Names, []string{"a.example.com"}) || live2.Serial != o.Serial {
		t.Errorf("live certificate after the confirmed reissue: names %v serial %s", live2.Names, live2.Serial)
	}
	h.assertDeployedIs(o)
	h.assertDCVClean()
}

// TestFailingReloadRestoresPreviousFiles: when the reload of a new
// certificate fails, the previous files are back byte for byte and
// reloaded (with their own serial in the environment), the order goes back
// to installing and is retried, and succeeds once the reload works.
func TestFailingReloadRestoresPreviousFiles(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	cfg := h.config(hDomains())
	d, first := h.issued(ctx, cfg)
	before := h.deployed()
	if calls := h.reload.calls(); !slices.Equal(calls, []string{first.Serial}) {
		t.Fatalf("reload calls after the first order %v, want [%s]", calls, first.Serial)
	}

	// The reload fails for any certificate but the first.
	h.reload.setFail(func(_ int, serial string) error {
		if serial != first.Serial {
			return fmt.Errorf("exit status 1")
		}
		return nil
	})
	o, err := h.step(ctx, d)
	if err == nil {
		t.Fatal("Reissue succeeded although the reload failed")
	}
	if !strings.Contains(err.Error(), "reload") || !strings.Contains(err.Error(), "restored") {
		t.Errorf("error %q does not say the reload failed and the files were restored", err)
	}
	after := h.deployed()
	for _, f := range hDeployFiles {
		if string(after[f]) != string(before[f]) {
			t.Errorf("%s is not the previous generation byte for byte", f)
		}
	}
	calls := h.reload.calls()
	if len(calls) != 3 || calls[1] != o.Serial || calls[2] != first.Serial {
		t.Errorf("reload calls %v, want [%s %s %s]: the new one, then the restored one", calls, first.Serial, o.Serial, first.Serial)
	}
	stored, err := d.Store().ActiveOrder(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Step != store.StepIssued || stored.Attempts != 1 || !strings.Contains(stored.LastError, "reload") ||
		!stored.NextAttempt.After(h.clock.Now()) {
		t.Errorf("order after the failed reload: step %s, attempts %d, next %s, last error %q; want issued, 1, later, a reload error",
			stored.Step, stored.Attempts, stored.NextAttempt, stored.LastError)
	}
	live, err := d.Store().Certificate(ctx, hCert)
	if err != nil || live.Serial != first.Serial {
		t.Errorf("the live certificate is not the first one any more: %+v %v", live, err)
	}
	st, err := d.Status(ctx)
	if err != nil || len(st) != 1 || st[0].Order == nil || !strings.Contains(st[0].LastError, "reload") {
		t.Errorf("status does not show the order and its reload error: %+v %v", st, err)
	}

	// Not before its backoff.
	if _, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: false}); err != nil {
		t.Fatalf("Reissue during the backoff: %v", err)
	}
	if n := len(h.reload.calls()); n != 3 {
		t.Errorf("the order was retried during its backoff (%d reload calls)", n)
	}

	// The reload works again; after the backoff the same order installs
	// again and completes.
	h.reload.setFail(nil)
	h.clock.advance(time.Minute)
	o2, err := h.step(ctx, d)
	if err != nil {
		t.Fatalf("resumed order: %v", err)
	}
	if o2.UniqueID != o.UniqueID || o2.Step != store.StepDone {
		t.Fatalf("resumed order %s in step %s, want %s done", o2.UniqueID, o2.Step, o.UniqueID)
	}
	if h.charges(o.UniqueID) != 1 {
		t.Errorf("%d charges for the order", h.charges(o.UniqueID))
	}
	h.assertDeployedIs(o2)
	prev, err := os.ReadFile(cfg.Certificates[0].Deploy.PreviousDir() + "/cert.pem")
	if err != nil || string(prev) != string(before["cert.pem"]) {
		t.Errorf("previous/cert.pem is not the first certificate: %v", err)
	}
	if live, err := d.Store().Certificate(ctx, hCert); err != nil || live.Serial != o2.Serial {
		t.Errorf("live certificate %+v, %v; want serial %s", live, err, o2.Serial)
	}
	h.assertDCVClean()
}

// TestFirstReloadFailureKeepsNewFiles: with no previous generation there
// is nothing to restore; the new files stay and the reload is retried.
func TestFirstReloadFailureKeepsNewFiles(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	d := h.daemon(h.config(hDomains()), nil)
	h.reload.setFail(func(int, string) error { return errors.New("exit status 1") })
	o, err := h.step(ctx, d)
	if err == nil || !strings.Contains(err.Error(), "reload") {
		t.Fatalf("Reissue: %v, want a reload error", err)
	}
	stored, err := d.Store().ActiveOrder(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Step != store.StepDeployed && stored.Step != store.StepIssued {
		t.Errorf("order in step %s after the failed first reload", stored.Step)
	}
	if !strings.Contains(stored.LastError, "reload") {
		t.Errorf("last error %q", stored.LastError)
	}
	if got := h.deployed()["cert.pem"]; string(got) != stored.CertPEM {
		t.Errorf("the new files were not left in place")
	}
	if _, err := d.Store().Certificate(ctx, hCert); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a live certificate was recorded although its reload failed: %v", err)
	}
	h.reload.setFail(nil)
	h.clock.advance(time.Minute)
	o2, err := h.step(ctx, d)
	if err != nil || o2.Step != store.StepDone || o2.UniqueID != o.UniqueID {
		t.Fatalf("retried order: %v, %+v", err, o2)
	}
	h.assertDeployedIs(o2)
}

// TestCrashDuringRestoringReload: a crash after the previous files were
// restored, before anything else, must not leave the order believing the
// new certificate is deployed.
func TestCrashDuringRestoringReload(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	cfg := h.config(hDomains())
	d, first := h.issued(ctx, cfg)

	failed := false
	h.reload.setFail(func(_ int, serial string) error {
		if failed {
			// The previous files are back in place; the process dies
			// while they are being reloaded.
			panic(hCrash{})
		}
		if serial != first.Serial {
			failed = true
			return errors.New("exit status 1")
		}
		return nil
	})
	_, _, crashed := untilCrash(func() (*store.Order, error) { return h.step(ctx, d) })
	if !crashed {
		t.Fatal("the restoring reload was not reached")
	}
	h.closeDaemon(d)

	h.reload.setFail(nil)
	h.clock.advance(time.Minute)
	d2 := h.daemon(cfg, nil)
	o, err := d2.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	if err != nil {
		t.Fatalf("resumed order: %v", err)
	}
	live, err := d2.Store().Certificate(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if live.Serial != o.Serial {
		t.Errorf("live serial %s, order serial %s", live.Serial, o.Serial)
	}
	// What the store calls live must be what is deployed.
	h.assertDeployedIs(o)
	if h.charges(o.UniqueID) != 1 {
		t.Errorf("%d charges", h.charges(o.UniqueID))
	}
}

// TestRecheckOnlyAfterRecordsVisible: update-dcv is sent only after every
// record answers on the nameserver and every file is served, even when the
// provider acknowledges writes before they land.
func TestRecheckOnlyAfterRecordsVisible(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	h.provider.setMode(dnsLag, 300*time.Millisecond)
	d := h.daemon(h.config(hDomains()), func(opts *Options) {
		opts.AfterStep = func(o *store.Order) { h.events.add("step " + string(o.Step)) }
	})
	// An early re-check poisons the CA's negative cache and the order
	// stalls: bound it, and look at the order of events first.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	o, err := d.Reissue(rctx, hCert, ReissueOptions{Wait: true})

	ev := h.events.snapshot()
	update := h.events.first(evUpdateDCV)
	if update < 0 || h.events.count(evUpdateDCV) != 1 {
		t.Fatalf("update-dcv calls: %d, want 1\nevents: %q", h.events.count(evUpdateDCV), ev)
	}
	if n := h.events.count(evValidate); n != 0 {
		t.Errorf("%d validate-dcv calls", n)
	}
	published, visible := h.events.first("step "+string(store.StepPublished)), h.events.first("step "+string(store.StepVisible))
	written := h.events.last("dns written")
	switch {
	case published < 0 || visible < 0 || written < 0:
		t.Fatalf("missing events: %q", ev)
	case written < published:
		t.Fatalf("the records landed before the order was published; the lag did not happen: %q", ev)
	case visible < written:
		t.Errorf("step visible recorded before the records landed: %q", ev)
	case update < visible:
		t.Errorf("update-dcv sent before the records were visible: %q", ev)
	}
	// The self-check fetched the file before the CA was asked to.
	selfCheck := h.events.first("web 200 " + hWKPrefix)
	if selfCheck < 0 || selfCheck > update {
		t.Errorf("the validation file was not served before update-dcv: %q", ev)
	}
	if err != nil || o.Step != store.StepDone {
		t.Fatalf("order: %v", err)
	}
	if h.charges(o.UniqueID) != 1 {
		t.Errorf("%d charges", h.charges(o.UniqueID))
	}
	h.assertDCVClean()
}

// TestRecheckNeverSentWhileRecordsInvisible: a provider that acknowledges
// writes it never makes leaves the order waiting at published, with the
// lagging nameserver named, and the CA is never asked to look (its negative
// cache stays clean: once the records really appear, the order completes).
func TestRecheckNeverSentWhileRecordsInvisible(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	h.provider.setMode(dnsLost, 0)
	h.propTimeout = 300 * time.Millisecond
	d := h.daemon(h.config(hDomains()), nil)

	_, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
	if err == nil {
		t.Fatal("Reissue succeeded with records that never became visible")
	}
	if !strings.Contains(err.Error(), h.dns.Addr()) {
		t.Errorf("error %q does not name the lagging nameserver %s", err, h.dns.Addr())
	}
	o, err := d.Store().ActiveOrder(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if o.Step != store.StepPublished || o.Attempts != 1 || !strings.Contains(o.LastError, h.dns.Addr()) {
		t.Errorf("order: step %s, attempts %d, last error %q; want published, 1, naming %s", o.Step, o.Attempts, o.LastError, h.dns.Addr())
	}

	// Retried after its backoff: still not visible, still not asked.
	h.clock.advance(time.Minute)
	if _, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: false}); err == nil {
		t.Fatal("second try succeeded")
	}
	if o, err = d.Store().ActiveOrder(ctx, hCert); err != nil || o.Step != store.StepPublished || o.Attempts != 2 {
		t.Errorf("order after the second try: %+v, %v", o, err)
	}
	if n := h.events.count(evUpdateDCV) + h.events.count(evValidate); n != 0 {
		t.Fatalf("the CA was asked to check %d time(s) before the records were visible: %q", n, h.events.snapshot())
	}
	if n := h.events.count(evReissue); n != 1 {
		t.Errorf("%d reissue calls", n)
	}

	// The records finally appear (the provider caught up).
	var recs []libdns.Record
	for _, r := range o.DNSRecords {
		recs = append(recs, libdns.CNAME{Name: libdns.RelativeName(r.Name+".", r.Zone), TTL: time.Minute, Target: r.Target + "."})
	}
	if len(recs) == 0 {
		t.Fatal("the order planned no DNS record")
	}
	if _, err := h.dns.SetRecords(ctx, hZone, recs); err != nil {
		t.Fatal(err)
	}
	h.reissueOnceDNSWorks(ctx, d, "order after the records appeared")
}

// reissueOnceDNSWorks puts the DNS provider back to normal, moves the
// clock past the backoff and drives the order to the end: one update-dcv
// call, one charge, the certificate deployed and the DCV records gone.
// failure says what a reissue error means.
func (h *harness) reissueOnceDNSWorks(ctx context.Context, d *Daemon, failure string) {
	h.t.Helper()
	h.provider.setMode(dnsNormal, 0)
	h.clock.advance(time.Hour)
	done, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
	if err != nil {
		h.t.Fatalf("%s: %v", failure, err)
	}
	if n := h.events.count(evUpdateDCV); n != 1 {
		h.t.Errorf("%d update-dcv calls, want 1", n)
	}
	if h.charges(done.UniqueID) != 1 {
		h.t.Errorf("%d charges", h.charges(done.UniqueID))
	}
	h.assertDeployedIs(done)
	h.assertDCVClean()
}

// crashSteps are the steps after which the crash tests stop the daemon.
var crashSteps = []store.Step{store.StepNew, store.StepSubmitted, store.StepPublishing, store.StepPublished, store.StepVisible, store.StepRechecked,
	store.StepIssued, store.StepDeployed, store.StepReloaded}

// TestResumeAfterCrashAtEveryStep: a daemon stopped right after any step
// is recorded — dead (a panic out of AfterStep: nothing more runs) or
// cancelled — is resumed by a new daemon on the same state, which finishes
// the same order: one charge, the same key, complete files, DCV gone.
func TestResumeAfterCrashAtEveryStep(t *testing.T) {
	for _, how := range []string{"kill", "cancel"} {
		for _, step := range crashSteps {
			t.Run(how+"/"+string(step), func(t *testing.T) {
				t.Parallel()
				h := newHarness(t)
				ctx := hCtx(t)
				cfg := h.config(hDomains())

				var uid, keyFile string
				var keyPEM []byte
				stopped := false
				cctx, cancel := context.WithCancel(ctx)
				defer cancel()
				d1 := h.daemon(cfg, func(opts *Options) {
					opts.AfterStep = func(o *store.Order) {
						if o.Step == store.StepNew {
							uid, keyFile = o.UniqueID, o.KeyFile
							var err error
							if keyPEM, err = os.ReadFile(o.KeyFile); err != nil {
								t.Errorf("the key is not on disk at step new: %v", err)
							}
						}
						if o.Step != step || stopped {
							return
						}
						stopped = true
						if how == "kill" {
							panic(hCrash{step})
						}
						cancel()
					}
				})
				_, err, crashed := untilCrash(func() (*store.Order, error) {
					return d1.Reissue(cctx, hCert, ReissueOptions{Wait: true})
				})
				if !stopped {
					t.Fatalf("step %s never reached: %v", step, err)
				}
				if how == "kill" && !crashed {
					t.Fatalf("the daemon was not stopped at %s: %v", step, err)
				}
				h.closeDaemon(d1)

				d2 := h.daemon(cfg, nil)
				var o *store.Order
				if _, aerr := d2.Store().ActiveOrder(ctx, hCert); aerr == nil {
					if o, err = d2.Reissue(ctx, hCert, ReissueOptions{Wait: true}); err != nil {
						t.Fatalf("resume after %s %s: %v", how, step, err)
					}
				} else if how == "cancel" && errors.Is(aerr, store.ErrNotFound) {
					// Cancelled at the last step, the first daemon may have
					// finished before it noticed.
					if o, err = d2.Store().Order(ctx, uid); err != nil {
						t.Fatal(err)
					}
				} else {
					t.Fatalf("no order in flight after %s at %s: %v", how, step, aerr)
				}

				if o.UniqueID != uid || o.Step != store.StepDone {
					t.Fatalf("order %s in step %s, want %s done", o.UniqueID, o.Step, uid)
				}
				if n := h.charges(uid); n != 1 || len(h.sb.Ledger()) != 1 {
					t.Errorf("%d charge(s) for %s, %d in all; want exactly 1", n, uid, len(h.sb.Ledger()))
				}
				if o.KeyFile != keyFile {
					t.Errorf("key file %s, want %s", o.KeyFile, keyFile)
				}
				if now, err := os.ReadFile(keyFile); err != nil || string(now) != string(keyPEM) {
					t.Errorf("the key changed after the restart: %v", err)
				}
				if keys := h.keyFiles(); len(keys) != 1 {
					t.Errorf("key files %v, want only the order's", keys)
				}
				h.assertDeployedIs(o)
				live, err := d2.Store().Certificate(ctx, hCert)
				if err != nil || live.Serial != o.Serial || live.UniqueID != uid {
					t.Errorf("live certificate %+v, %v", live, err)
				}
				history, err := d2.Store().Attempts(ctx, hCert, 0)
				if err != nil || len(history) != 1 || history[0].Outcome != store.StepDone || history[0].UniqueID != uid {
					t.Errorf("history %+v, %v; want one done attempt", history, err)
				}
				if calls := h.reload.calls(); len(calls) == 0 || calls[len(calls)-1] != o.Serial {
					t.Errorf("reload calls %v, the last one not for %s", calls, o.Serial)
				}
				h.assertDCVClean()
			})
		}
	}
}

// TestLostReissueReplyChargesOnce: the CA acts on a reissue whose reply is
// lost; the retry carries the same unique_id, and the CA charges once.
func TestLostReissueReplyChargesOnce(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	var lost atomic.Int32
	h.mu.Lock()
	h.lose = func(path string) bool {
		return path == reseller.PathReissue && lost.Add(1) <= 2
	}
	h.mu.Unlock()
	d := h.daemon(h.config(hDomains()), nil)

	for try := 1; try <= 2; try++ {
		_, err := h.step(ctx, d)
		if err == nil {
			t.Fatalf("try %d: the reissue succeeded although its reply was lost", try)
		}
		o, err := d.Store().ActiveOrder(ctx, hCert)
		if err != nil {
			t.Fatal(err)
		}
		if o.Step != store.StepNew || o.Attempts != try || !o.NextAttempt.After(h.clock.Now()) {
			t.Fatalf("after lost reply %d: step %s, attempts %d, next %s", try, o.Step, o.Attempts, o.NextAttempt)
		}
		h.clock.advance(time.Hour)
	}
	o, err := h.step(ctx, d)
	if err != nil || o.Step != store.StepDone {
		t.Fatalf("order after the replies came back: %v", err)
	}
	if n := h.events.count(evReissue); n != 3 {
		t.Errorf("%d reissue calls, want 3", n)
	}
	if ledger := h.sb.Ledger(); len(ledger) != 1 || ledger[0].UniqueID != o.UniqueID {
		t.Errorf("ledger %+v, want one charge for %s", ledger, o.UniqueID)
	}
	h.assertDeployedIs(o)
}

// TestRetryPublishesAgain: a record that vanished after it was published
// (dropped by the provider, deleted by someone) is written again when the
// visibility check is retried, and the order completes without a second
// charge or an early re-check.
func TestRetryPublishesAgain(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	h.provider.setMode(dnsLost, 0) // the first write is lost
	h.propTimeout = 300 * time.Millisecond
	d := h.daemon(h.config(hDomains()), nil)

	if _, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: false}); err == nil {
		t.Fatal("Reissue succeeded with a lost DNS write")
	}
	o, err := d.Store().ActiveOrder(ctx, hCert)
	if err != nil || o.Step != store.StepPublished || o.Attempts != 1 {
		t.Fatalf("after the lost write: %+v, %v; want step published, attempt 1", o, err)
	}
	h.reissueOnceDNSWorks(ctx, d, "the retry did not publish again")
}
