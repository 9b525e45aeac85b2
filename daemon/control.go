package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file is the daemon's end of the control socket (package control
// has the protocol, the listener and the client): the handlers that run
// "dcvd status", "dcvd reissue", "dcvd retry" and "dcvd redeploy" through
// the daemon's own drivers.

// ServeControl serves the control socket at path (see control.Listen: a
// stale socket is removed, a live one refused) until ctx ends.
func (d *Daemon) ServeControl(ctx context.Context, path string) error {
	ln, err := control.Listen(path, "")
	if err != nil {
		return err
	}
	return d.ServeControlOn(ctx, ln)
}

// ServeControlOn serves the control requests on ln until ctx ends, then
// closes ln. A reissue asked for through it is driven by a goroutine of the
// daemon, which stops with ctx as Run's drivers do (the step at work may
// finish, see Options.StopGrace); ServeControlOn returns once those have
// stopped.
func (d *Daemon) ServeControlOn(ctx context.Context, ln net.Listener) error {
	c := &controlServer{d: d, ctx: ctx}
	// Bounded like the TCP listeners (listen.go), but with no write
	// timeout: a redeploy answers only once the reload command has run
	// (up to deploy.reload_timeout).
	srv := newBoundedServer(c.handler())
	srv.WriteTimeout = 0
	served := make(chan error, 1)
	go func() { served <- srv.Serve(boundedListener(ln)) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("control socket: %w", err)
	}
	// Requests at work (a redeploy) finish first: they are bounded by the
	// stop grace themselves.
	sctx, cancel := context.WithTimeout(context.Background(), d.life.stopGrace+5*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil && err == nil {
		err = fmt.Errorf("control socket: %w", serr)
	}
	ln.Close()
	c.drivers.Wait()
	return err
}

// controlServer handles the requests of one control socket.
type controlServer struct {
	d *Daemon
	// ctx is the daemon's: drivers started here stop with it.
	ctx     context.Context
	drivers sync.WaitGroup
}

// controlError is an error with the HTTP status (and code, when the
// client must tell it apart) it answers with.
type controlError struct {
	status int
	code   string
	err    error
}

func (e *controlError) Error() string { return e.err.Error() }
func (e *controlError) Unwrap() error { return e.err }

func statusError(status int, format string, args ...any) error {
	return &controlError{status: status, err: fmt.Errorf(format, args...)}
}

func codedError(status int, code, format string, args ...any) error {
	return &controlError{status: status, code: code, err: fmt.Errorf(format, args...)}
}

// replyStatus is the HTTP status and code an error is answered with.
func replyStatus(err error) (int, string) {
	var (
		ce  *controlError
		dre *DomainRemovalError
		see *ServiceEndedError
		noe *NoOrderError
		be  *busyError
	)
	switch {
	case errors.As(err, &ce):
		return ce.status, ce.code
	case errors.As(err, &dre):
		return http.StatusConflict, control.CodeDomainRemoval
	case errors.As(err, &see):
		return http.StatusConflict, control.CodeServiceEnded
	case errors.As(err, &noe):
		return http.StatusNotFound, control.CodeNoOrder
	case errors.As(err, &be):
		return http.StatusConflict, control.CodeBusy
	case errors.Is(err, store.ErrLeaseHeld):
		return http.StatusConflict, control.CodeLeaseHeld
	}
	return http.StatusInternalServerError, ""
}

func (c *controlServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status", c.only(http.MethodGet, func(r *http.Request) (any, int, error) {
		sts, err := c.d.Status(r.Context())
		if sts == nil {
			sts = []control.CertStatus{}
		}
		return sts, http.StatusOK, err
	}))
	mux.HandleFunc("/order", c.only(http.MethodGet, func(r *http.Request) (any, int, error) {
		id := r.URL.Query().Get("unique_id")
		if id == "" {
			return nil, 0, statusError(http.StatusBadRequest, "name the order: ?unique_id=")
		}
		o, err := c.d.store.Order(r.Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			return nil, 0, statusError(http.StatusNotFound, "no order %q", id)
		}
		if err != nil {
			return nil, 0, err
		}
		return control.OrderFrom(o), http.StatusOK, nil
	}))
	mux.HandleFunc("/reissue", c.only(http.MethodPost, func(r *http.Request) (any, int, error) {
		name, err := c.certName(r)
		if err != nil {
			return nil, 0, err
		}
		allow, err := queryBool(r, "allow_domain_removal")
		if err != nil {
			return nil, 0, err
		}
		o, err := c.startReissue(name, allow)
		if err != nil {
			return nil, 0, err
		}
		return o, http.StatusAccepted, nil
	}))
	mux.HandleFunc("/retry", c.only(http.MethodPost, func(r *http.Request) (any, int, error) {
		name, err := c.certName(r)
		if err != nil {
			return nil, 0, err
		}
		res, err := c.retry(name)
		if err != nil {
			return nil, 0, err
		}
		return res, http.StatusOK, nil
	}))
	mux.HandleFunc("/redeploy", c.only(http.MethodPost, func(r *http.Request) (any, int, error) {
		name, err := c.certName(r)
		if err != nil {
			return nil, 0, err
		}
		return struct{}{}, http.StatusOK, c.redeploy(name)
	}))
	return mux
}

// only wraps a handler of one method, which answers a value to encode
// with a status, or an error.
func (c *controlServer) only(method string, h func(r *http.Request) (any, int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": r.URL.Path + " takes " + method})
			return
		}
		v, status, err := h(r)
		if err != nil {
			status, code := replyStatus(err)
			reply := map[string]string{"error": err.Error()}
			if code != "" {
				reply["code"] = code
			}
			writeJSON(w, status, reply)
			return
		}
		writeJSON(w, status, v)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// certName reads ?name= and checks that the daemon's configuration has
// that certificate.
func (c *controlServer) certName(r *http.Request) (string, error) {
	name := r.URL.Query().Get("name")
	if name == "" {
		return "", statusError(http.StatusBadRequest, "name the [[certificate]]: ?name=")
	}
	if _, err := c.d.certConfig(name); err != nil {
		cfg := c.d.config()
		names := make([]string, len(cfg.Certificates))
		for i := range cfg.Certificates {
			names[i] = cfg.Certificates[i].Name
		}
		return "", codedError(http.StatusNotFound, control.CodeUnknownCertificate,
			"the running daemon has no [[certificate]] named %q (it has: %s); if you added it to the config, reload the daemon first (systemctl reload dcvd, or send it SIGHUP)",
			name, config.QuoteList(names))
	}
	return name, nil
}

func queryBool(r *http.Request, key string) (bool, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, statusError(http.StatusBadRequest, "%s=%q is not a boolean", key, v)
	}
	return b, nil
}

// startReissue starts the reissue of name in a driver of the daemon, or
// finds its order in flight, and returns the order as it stands.
func (c *controlServer) startReissue(name string, allow bool) (control.Order, error) {
	d := c.d
	ctx := c.ctx
	if ctx.Err() != nil {
		return control.Order{}, codedError(http.StatusServiceUnavailable, control.CodeStopping, "the daemon is stopping")
	}
	d.life.startMu.Lock()
	defer d.life.startMu.Unlock()
	cc, err := d.certConfig(name)
	if err != nil {
		return control.Order{}, codedError(http.StatusNotFound, control.CodeUnknownCertificate, "%w", err)
	}
	if !d.claim(name) {
		// A driver is at work on it: that order is the answer.
		o, err := d.store.ActiveOrder(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return control.Order{}, &busyError{cert: name}
		}
		if err != nil {
			return control.Order{}, err
		}
		return control.OrderFrom(o), nil
	}
	lctx, release, err := d.lease(ctx, name)
	if err != nil {
		d.release(name)
		if errors.Is(err, store.ErrLeaseHeld) {
			// Another node of the cluster drives it: its order is the
			// answer, if it has one.
			if o, oerr := d.store.ActiveOrder(ctx, name); oerr == nil {
				return control.OrderFrom(o), nil
			}
			return control.Order{}, codedError(http.StatusConflict, control.CodeLeaseHeld, "%w", err)
		}
		return control.Order{}, err
	}
	o, err := d.store.ActiveOrder(lctx, name)
	if errors.Is(err, store.ErrNotFound) {
		o, err = d.newOrder(lctx, cc, allow)
	}
	if err != nil {
		release()
		d.release(name)
		return control.Order{}, err
	}
	// Read now: the driver changes o from here on.
	view := control.OrderFrom(o)
	d.orderLog(o).Info("reissue asked for on the control socket", zap.String("step", string(view.Step)))
	c.goDrive(lctx, cc, o, release)
	return view, nil
}

// goDrive drives o in a driver of the daemon, which stops with the
// daemon; the caller has claimed o.Cert and taken its lease, which
// release gives back.
func (c *controlServer) goDrive(lctx context.Context, cc *config.CertConfig, o *store.Order, release func()) {
	log := c.d.orderLog(o)
	c.drivers.Add(1)
	go func() {
		defer c.drivers.Done()
		defer release()
		if err := c.d.driveClaimed(lctx, cc, o, ReissueOptions{Wait: true}); err != nil && lctx.Err() == nil {
			if o.Step.Terminal() {
				log.Error("order ended in failure", zap.Error(err))
			} else {
				log.Error("driver stopped; the order stays in flight and will be resumed",
					zap.String("step", string(o.Step)), zap.Error(err))
			}
		}
	}()
}

// retry has the order in flight of name tried now (see Daemon.Retry). A
// running daemon drives every order in flight of its certificates, so its
// driver is usually there to be woken; when it is not (it stopped on an
// error of the database, to be resumed at the next check, hours away), a
// driver is started here, which tries the order at once.
func (c *controlServer) retry(name string) (control.RetryReply, error) {
	d := c.d
	if c.ctx.Err() != nil {
		return control.RetryReply{}, codedError(http.StatusServiceUnavailable, control.CodeStopping, "the daemon is stopping")
	}
	d.life.startMu.Lock() // a driver started here is one a reload sees
	defer d.life.startMu.Unlock()
	res, err := d.retry(c.ctx, name, func(lctx context.Context, cc *config.CertConfig, o *store.Order, release func()) {
		c.goDrive(lctx, cc, o, release)
	})
	if err != nil {
		return control.RetryReply{}, err
	}
	return control.RetryReply{Order: control.OrderFrom(res.Order), How: res.How, Holder: res.Holder}, nil
}

// redeploy runs Redeploy while no driver works on name. A stop lets it
// finish within the stop grace, and a client that goes away does not cut
// it off.
func (c *controlServer) redeploy(name string) error {
	d := c.d
	if !d.claim(name) {
		what := "an order is at work on it"
		if o, err := d.store.ActiveOrder(c.ctx, name); err == nil {
			what = fmt.Sprintf("its order %s is at step %s", o.UniqueID, o.Step)
		}
		return statusError(http.StatusConflict, "certificate %s: %s; redeploy once it has ended (the order deploys what it issues)", name, what)
	}
	defer d.release(name)
	work, end := d.workContext(c.ctx)
	defer end()
	return d.Redeploy(work, name)
}
