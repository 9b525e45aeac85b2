package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/internal/testfs"
	"github.com/dcvd/dcvd/reseller"
)

// controlWorld is a harness daemon serving its control socket.
type controlWorld struct {
	h      *harness
	d      *Daemon
	c      *control.Client
	path   string
	cfg    *config.Config
	watch  *stepWatch
	cancel context.CancelFunc
	served chan error
}

func newControlWorld(t *testing.T) *controlWorld {
	t.Helper()
	h := newHarness(t)
	w := &controlWorld{h: h, cfg: h.config(hDomains()), watch: newStepWatch(store.StepPublished), served: make(chan error, 1)}
	w.d = h.daemon(w.cfg, func(o *Options) { o.AfterStep = w.watch.afterStep })
	w.path = filepath.Join(testfs.ShortDir(t), control.SocketName)
	ln, err := control.Listen(w.path, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.served <- w.d.ServeControlOn(ctx, ln) }()
	t.Cleanup(func() { w.stop(t) })
	if w.c, err = control.Dial(w.path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.c.Close() })
	return w
}

// stop ends the server (once) and checks that it returned cleanly.
func (w *controlWorld) stop(t *testing.T) {
	if w.cancel == nil {
		return
	}
	w.cancel()
	w.cancel = nil
	if ok, err := awaitDone(w.served); !ok {
		t.Error("ServeControlOn did not return after its context ended")
	} else if err != nil {
		t.Errorf("ServeControlOn: %v", err)
	}
}

func wantControlError(t *testing.T, err error, status int, contains ...string) {
	t.Helper()
	var ce *control.Error
	if !errors.As(err, &ce) {
		t.Fatalf("got %v, want a *ControlError with status %d", err, status)
	}
	if ce.Status != status {
		t.Errorf("status %d (%s), want %d", ce.Status, ce.Message, status)
	}
	for _, s := range contains {
		if !strings.Contains(ce.Message, s) {
			t.Errorf("message %q does not contain %q", ce.Message, s)
		}
	}
}

// TestControlReissueStatusRedeploy goes through the socket as the CLI
// does: status, a reissue driven by the daemon (a second one finds it in
// flight), redeploy refused while it works and done after, the order as it
// ended without its secrets, unknown names refused clearly, and the
// socket gone after the stop.
func TestControlReissueStatusRedeploy(t *testing.T) {
	w := newControlWorld(t)
	ctx := hCtx(t)

	sts, err := w.c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].Name != hCert || sts[0].Serial != "" || sts[0].Order != nil {
		t.Fatalf("status before any reissue: %+v", sts)
	}

	_, err = w.c.Reissue(ctx, "nope", false)
	wantControlError(t, err, http.StatusNotFound, `"nope"`, hCert, "reload")
	wantControlError(t, w.c.Redeploy(ctx, "nope"), http.StatusNotFound, `"nope"`)
	_, err = w.c.Order(ctx, "dcvd-unknown")
	wantControlError(t, err, http.StatusNotFound, "dcvd-unknown")
	wantControlError(t, w.c.Redeploy(ctx, hCert), http.StatusInternalServerError, "no live certificate")

	o, err := w.c.Reissue(ctx, hCert, false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(o.UniqueID, "dcvd-") || o.Cert != hCert || o.Step != store.StepNew {
		t.Fatalf("reissue returned %+v, want a new order of %s", o, hCert)
	}
	if uid := w.watch.waitHeld(t); uid != o.UniqueID {
		t.Fatalf("the daemon drives %s, the socket answered %s", uid, o.UniqueID)
	}
	// While the daemon's driver works on it: the same order, no second
	// one; no redeploy under its feet.
	again, err := w.c.Reissue(ctx, hCert, false)
	if err != nil || again.UniqueID != o.UniqueID || again.Step != store.StepPublished {
		t.Fatalf("a second reissue while in flight: %+v, %v; want order %s at %s", again, err, o.UniqueID, store.StepPublished)
	}
	wantControlError(t, w.c.Redeploy(ctx, hCert), http.StatusConflict, o.UniqueID, string(store.StepPublished))
	sts, err = w.c.Status(ctx)
	if err != nil || sts[0].Order == nil || sts[0].Order.UniqueID != o.UniqueID {
		t.Fatalf("status while in flight: %+v, %v", sts, err)
	}

	var seen []store.Step
	close(w.watch.release)
	done, err := w.c.Wait(ctx, hCert, o.UniqueID, 10*time.Millisecond, func(s store.Step) { seen = append(seen, s) })
	if err != nil {
		t.Fatal(err)
	}
	if done.UniqueID != o.UniqueID || done.Step != store.StepDone || done.Serial == "" || done.NotAfter.IsZero() || done.Cost == 0 {
		t.Fatalf("the order as it ended: %+v", done)
	}
	if len(seen) == 0 {
		t.Error("Wait reported no step")
	}
	if n := w.h.charges(o.UniqueID); n != 1 {
		t.Errorf("charged %d times, want once", n)
	}
	sts, err = w.c.Status(ctx)
	if err != nil || sts[0].Serial != done.Serial || sts[0].Order != nil {
		t.Fatalf("status after the reissue: %+v, %v; want serial %s and nothing in flight", sts, err, done.Serial)
	}

	// The order on the wire holds neither the key's path, the CSR nor the
	// callback token.
	stored, err := w.d.store.Order(ctx, o.UniqueID)
	if err != nil {
		t.Fatal(err)
	}
	var raw json.RawMessage
	if err := socketGet(ctx, socketHTTP(w.path), "/order?unique_id="+url.QueryEscape(o.UniqueID), &raw); err != nil {
		t.Fatal(err)
	}
	for what, secret := range map[string]string{"callback token": stored.CallbackToken, "key file": stored.KeyFile, "CSR": "CERTIFICATE REQUEST"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the order on the control socket shows its %s", what)
		}
	}

	waitNotDriving(t, w.d, hCert)
	if err := w.c.Redeploy(ctx, hCert); err != nil {
		t.Fatalf("redeploy: %v", err)
	}
	if calls := w.h.reload.calls(); len(calls) != 2 || calls[1] != done.Serial {
		t.Errorf("reload calls %v, want the issue's and the redeploy's, both for %s", calls, done.Serial)
	}

	// Wrong methods and missing parameters.
	for _, r := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/reissue?name=" + hCert, http.StatusMethodNotAllowed},
		{http.MethodPost, "/status", http.StatusMethodNotAllowed},
		{http.MethodPost, "/reissue", http.StatusBadRequest},
		{http.MethodPost, "/reissue?name=" + hCert + "&allow_domain_removal=maybe", http.StatusBadRequest},
		{http.MethodGet, "/order", http.StatusBadRequest},
		{http.MethodGet, "/nothing", http.StatusNotFound},
	} {
		req, _ := http.NewRequestWithContext(ctx, r.method, "http://dcvd"+r.path, nil)
		resp, err := socketHTTP(w.path).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != r.status {
			t.Errorf("%s %s: HTTP %d, want %d", r.method, r.path, resp.StatusCode, r.status)
		}
	}

	w.stop(t)
	if _, err := os.Lstat(w.path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket is still there after the stop: %v", err)
	}
	if _, err := control.Dial(w.path); !errors.Is(err, control.ErrNoDaemon) {
		t.Errorf("dial after the stop: %v, want ErrNoDaemon", err)
	}
}

// TestControlReissueResumesOrderNobodyDrives: an order left in flight by a
// "dcvd reissue" without --wait is taken up by the daemon's driver, not
// replaced by a second one.
func TestControlReissueResumesOrderNobodyDrives(t *testing.T) {
	w := newControlWorld(t)
	close(w.watch.release)
	ctx := hCtx(t)
	// The first poll after the re-check waits min(poll_interval, 2 s): with
	// the harness's 50 ms a loaded machine could reach it after it was due
	// and drive the order to its end without returning.
	slow := *w.cfg
	slow.Daemon.PollInterval = 2 * time.Second
	if err := w.d.Reload(&slow); err != nil {
		t.Fatal(err)
	}
	left, err := w.d.Reissue(ctx, hCert, ReissueOptions{Wait: false})
	if err != nil {
		t.Fatal(err)
	}
	if left.Step.Terminal() {
		t.Fatalf("the order ended at %s without waiting for the CA", left.Step)
	}
	o, err := w.c.Reissue(ctx, hCert, false)
	if err != nil {
		t.Fatal(err)
	}
	if o.UniqueID != left.UniqueID {
		t.Fatalf("the socket started order %s, want the one in flight %s", o.UniqueID, left.UniqueID)
	}
	done, err := w.c.Wait(ctx, hCert, o.UniqueID, 10*time.Millisecond, nil)
	if err != nil || done.Step != store.StepDone {
		t.Fatalf("the order in flight ended %+v, %v; want done", done, err)
	}
	if n := len(w.h.sb.Ledger()); n != 1 {
		t.Errorf("the sandbox charged %d times, want once", n)
	}
}

// TestControlReissueDomainRemovalGuard: the guard refuses through the
// socket as it does in the foreground, with its advice, and nothing is
// started until the admin confirms.
func TestControlReissueDomainRemovalGuard(t *testing.T) {
	w := newControlWorld(t)
	close(w.watch.release)
	ctx := hCtx(t)
	first := w.h.issue(ctx, w.d)

	fewer := *w.cfg
	fewer.Certificates = []config.CertConfig{w.cfg.Certificates[0]}
	fewer.Certificates[0].Domains = map[string]reseller.Method{"example.com": reseller.MethodDNS, "*.example.com": reseller.MethodDNS}
	if err := w.d.Reload(&fewer); err != nil {
		t.Fatal(err)
	}
	_, err := w.c.Reissue(ctx, hCert, false)
	wantControlError(t, err, http.StatusConflict, "www.example.com", first.Serial, "--allow-domain-removal")
	if o, err := w.d.store.ActiveOrder(ctx, hCert); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused reissue left order %v in flight (%v)", o, err)
	}

	o, err := w.c.Reissue(ctx, hCert, true)
	if err != nil {
		t.Fatal(err)
	}
	done, err := w.c.Wait(ctx, hCert, o.UniqueID, 10*time.Millisecond, nil)
	if err != nil || done.Step != store.StepDone {
		t.Fatalf("the confirmed reissue ended %+v, %v; want done", done, err)
	}
	if strings.Join(done.Names, " ") != "*.example.com example.com" {
		t.Errorf("the confirmed reissue covers %v", done.Names)
	}
}

// TestControlStoppingRefusesReissue: once the daemon stops, the socket
// starts nothing more.
func TestControlStoppingRefusesReissue(t *testing.T) {
	h := newHarness(t)
	d := h.daemon(h.config(hDomains()), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := &controlServer{d: d, ctx: ctx}
	if _, err := c.Reissue(hCert, false); err == nil {
		t.Fatal("a stopping daemon started a reissue")
	} else {
		var ce *controlError
		if !errors.As(err, &ce) || ce.status != http.StatusServiceUnavailable {
			t.Errorf("got %v, want 503", err)
		}
	}
	if _, err := d.store.ActiveOrder(context.Background(), hCert); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a stopping daemon created an order: %v", err)
	}
}

// TestControlServeControl: ServeControl creates the socket, answers on it
// until its context ends, and removes it.
func TestControlServeControl(t *testing.T) {
	h := newHarness(t)
	d := h.daemon(h.config(hDomains()), nil)
	path := filepath.Join(testfs.ShortDir(t), control.SocketName)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- d.ServeControl(ctx, path) }()
	var c *control.Client
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if c, err = control.Dial(path); err == nil {
			break
		}
		if !errors.Is(err, control.ErrNoDaemon) || time.Now().After(deadline) {
			t.Fatalf("dial: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	if sts, err := c.Status(ctx); err != nil || len(sts) != 1 {
		t.Fatalf("status: %+v, %v", sts, err)
	}
	if err := d.ServeControl(ctx, path); err == nil || !strings.Contains(err.Error(), "another dcvd daemon is running") {
		t.Errorf("a second ServeControl on the same path: %v, want a refusal", err)
	}
	cancel()
	if ok, err := awaitDone(served); !ok {
		t.Fatal("ServeControl did not return after its context ended")
	} else if err != nil {
		t.Fatalf("ServeControl: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the socket is still there: %v", err)
	}
}

// TestControlRetry goes through the socket as "dcvd retry" does: refusals
// with their codes, an order in backoff that nobody drives tried at once
// by a driver the daemon starts, and one whose driver waits out the
// backoff woken; each ends done with one charge.
func TestControlRetry(t *testing.T) {
	w := newControlWorld(t)
	close(w.watch.release)
	ctx := hCtx(t)

	_, err := w.c.Retry(ctx, "nope")
	wantControlError(t, err, http.StatusNotFound, `"nope"`)
	if ce := (*control.Error)(nil); errors.As(err, &ce) && ce.Code != control.CodeUnknownCertificate {
		t.Errorf("code %q, want %q", ce.Code, control.CodeUnknownCertificate)
	}
	_, err = w.c.Retry(ctx, hCert)
	wantControlError(t, err, http.StatusNotFound, "has no order in flight", "dcvd reissue shop starts one")
	if ce := (*control.Error)(nil); errors.As(err, &ce) && ce.Code != control.CodeNoOrder {
		t.Errorf("code %q, want %q", ce.Code, control.CodeNoOrder)
	}

	// Nobody drives it: the daemon starts a driver, which tries at once.
	stuck := orderInBackoff(t, w.h, w.d)
	res, err := w.c.Retry(ctx, hCert)
	if err != nil {
		t.Fatal(err)
	}
	if res.How != control.RetryStarted || res.Order.UniqueID != stuck.UniqueID || res.Order.Attempts != 1 || res.Order.LastError != stuck.LastError {
		t.Fatalf("retry of an order nobody drives: %+v (order %+v), want a driver started on %s", res, res.Order, stuck.UniqueID)
	}
	done, err := w.c.Wait(ctx, hCert, stuck.UniqueID, 10*time.Millisecond, nil)
	if err != nil || done.Step != store.StepDone {
		t.Fatalf("the retried order ended %+v, %v; want done", done, err)
	}
	waitNotDriving(t, w.d, hCert)

	// A driver the socket started waits out the backoff: woken.
	stuck = orderInBackoff(t, w.h, w.d)
	o, err := w.c.Reissue(ctx, hCert, false)
	if err != nil || o.UniqueID != stuck.UniqueID || !InBackoff(o, w.h.clock.Now()) {
		t.Fatalf("reissue of the order in backoff: %+v, %v; want order %s, in backoff", o, err, stuck.UniqueID)
	}
	waitDriverWaiting(t, w.d, stuck.UniqueID)
	if res, err = w.c.Retry(ctx, hCert); err != nil || res.How != control.RetryWoken {
		t.Fatalf("retry of an order whose driver waits: %+v, %v; want it woken", res, err)
	}
	done, err = w.c.Wait(ctx, hCert, stuck.UniqueID, 10*time.Millisecond, nil)
	if err != nil || done.Step != store.StepDone {
		t.Fatalf("the woken order ended %+v, %v; want done", done, err)
	}
	if n := len(w.h.sb.Ledger()); n != 2 {
		t.Errorf("the sandbox charged %d times for two orders, want twice", n)
	}

	// A stopping daemon starts nothing.
	c := &controlServer{d: w.d, ctx: canceledContext()}
	if _, err := c.Retry(hCert); err == nil {
		t.Error("a stopping daemon took a retry")
	} else if status, code := replyStatus(err); status != http.StatusServiceUnavailable || code != control.CodeStopping {
		t.Errorf("a stopping daemon answered %d %q, want 503 %q", status, code, control.CodeStopping)
	}
}

func canceledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestControlFollowStopsOnObserve: an error from Follow's observe ends
// the follow with it and the order as it stands; the daemon's driver goes
// on.
func TestControlFollowStopsOnObserve(t *testing.T) {
	w := newControlWorld(t)
	ctx := hCtx(t)
	o, err := w.c.Reissue(ctx, hCert, false)
	if err != nil {
		t.Fatal(err)
	}
	w.watch.waitHeld(t)
	stop := errors.New("enough")
	var seen []store.Step
	got, err := w.c.Follow(ctx, hCert, o.UniqueID, 10*time.Millisecond, func(st *control.OrderStatus) error {
		seen = append(seen, st.Step)
		return stop
	})
	if !errors.Is(err, stop) || got == nil || got.UniqueID != o.UniqueID || got.Step != store.StepPublished {
		t.Fatalf("Follow: %+v, %v; want order %s at %s with the observer's error", got, err, o.UniqueID, store.StepPublished)
	}
	if len(seen) != 1 || seen[0] != store.StepPublished {
		t.Errorf("observe saw %v, want one look at %s", seen, store.StepPublished)
	}
	close(w.watch.release)
	if done, err := w.c.Wait(ctx, hCert, o.UniqueID, 10*time.Millisecond, nil); err != nil || done.Step != store.StepDone {
		t.Fatalf("the order ended %+v, %v; want done", done, err)
	}
}

// socketHTTP is a plain HTTP client over the control socket at path, for
// requests that control.Client never makes.
func socketHTTP(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", path)
		},
	}}
}

// socketGet GETs path over hc and decodes the JSON reply into out.
func socketGet(ctx context.Context, hc *http.Client, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://dcvd"+path, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
