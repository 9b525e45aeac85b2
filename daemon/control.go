package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file is the daemon's end of the control socket (package control
// has the protocol, its handler, the listener and the client): the
// control.Backend that runs "dcvd status", "dcvd reissue", "dcvd retry"
// and "dcvd redeploy" through the daemon's own drivers.

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
	srv := newBoundedServer(control.Handler(c))
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

// controlServer handles the requests of one control socket: its
// control.Backend.
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

var _ control.Backend = (*controlServer)(nil)

func (c *controlServer) Status(ctx context.Context) ([]control.CertStatus, error) {
	return c.d.Status(ctx)
}
func (c *controlServer) Order(ctx context.Context, uniqueID string) (*store.Order, error) {
	return c.d.store.Order(ctx, uniqueID)
}
func (c *controlServer) Reply(err error) (int, string) { return replyStatus(err) }

// CheckName checks that the daemon's configuration has the certificate
// name.
func (c *controlServer) CheckName(name string) error {
	if _, err := c.d.certConfig(name); err != nil {
		cfg := c.d.config()
		names := make([]string, len(cfg.Certificates))
		for i := range cfg.Certificates {
			names[i] = cfg.Certificates[i].Name
		}
		return codedError(http.StatusNotFound, control.CodeUnknownCertificate,
			"the running daemon has no [[certificate]] named %q (it has: %s); if you added it to the config, reload the daemon first (systemctl reload dcvd, or send it SIGHUP)",
			name, config.QuoteList(names))
	}
	return nil
}

// Reissue starts the reissue of name in a driver of the daemon, or
// finds its order in flight, and returns the order as it stands.
func (c *controlServer) Reissue(name string, allow bool) (control.Order, error) {
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
	h, err := d.acquire(ctx, cc, func(lctx context.Context) (*store.Order, error) {
		return d.newOrder(lctx, cc, allow)
	})
	switch {
	case isClaimed(err):
		// A driver is at work on it: that order is the answer.
		o, err := d.store.ActiveOrder(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return control.Order{}, &busyError{cert: name}
		}
		if err != nil {
			return control.Order{}, err
		}
		return control.OrderFrom(o), nil
	case isLeaseRefused(err) && errors.Is(err, store.ErrLeaseHeld):
		// Another node of the cluster drives it: its order is the
		// answer, if it has one.
		if o, oerr := d.store.ActiveOrder(ctx, name); oerr == nil {
			return control.OrderFrom(o), nil
		}
		return control.Order{}, codedError(http.StatusConflict, control.CodeLeaseHeld, "%w", err)
	case err != nil:
		return control.Order{}, err
	}
	// Read now: the driver changes the order from here on.
	view := control.OrderFrom(h.o)
	h.log.Info("reissue asked for on the control socket", zap.String("step", string(view.Step)))
	d.goDrive(&c.drivers, h)
	return view, nil
}

// Retry has the order in flight of name tried now (see Daemon.Retry). A
// running daemon drives every order in flight of its certificates, so its
// driver is usually there to be woken; when it is not (it stopped on an
// error of the database, to be resumed at the next check, hours away), a
// driver is started here, which tries the order at once.
func (c *controlServer) Retry(name string) (control.RetryReply, error) {
	d := c.d
	if c.ctx.Err() != nil {
		return control.RetryReply{}, codedError(http.StatusServiceUnavailable, control.CodeStopping, "the daemon is stopping")
	}
	d.life.startMu.Lock() // a driver started here is one a reload sees
	defer d.life.startMu.Unlock()
	res, err := d.retry(c.ctx, name, func(h *orderHandle) { d.goDrive(&c.drivers, h) })
	if err != nil {
		return control.RetryReply{}, err
	}
	return control.RetryReply{Order: control.OrderFrom(res.Order), How: res.How, Holder: res.Holder}, nil
}

// Redeploy runs Daemon.Redeploy while no driver works on name. A stop lets it
// finish within the stop grace, and a client that goes away does not cut
// it off.
func (c *controlServer) Redeploy(name string) error {
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
