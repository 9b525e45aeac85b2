package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file is the control socket: the running daemon answers "dcvd
// status", "dcvd reissue", "dcvd retry" and "dcvd redeploy" over a unix
// socket, so that those commands act through the daemon's own drivers
// instead of racing them from a second process. It speaks HTTP/1.1 with
// JSON:
//
//	GET  /status                                  → []CertStatus
//	POST /reissue?name=N[&allow_domain_removal=1] → the order, started or already in flight
//	POST /retry?name=N                            → {"order": …, "how": RetryHow, "holder": node}
//	POST /redeploy?name=N                         → {}
//	GET  /order?unique_id=U                       → the order
//
// Errors are {"error": "...", "code": "..."} with a 4xx or 5xx status;
// code (one of the Control* codes, or absent) tells apart refusals that
// share a status. Only the socket's owner (and root) may connect: it is
// created with mode 0600.

// ControlSocketName is the file name of the control socket.
const ControlSocketName = "dcvd.sock"

// maxSocketPath is the longest path a unix socket can be bound to on Linux
// (sun_path holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// The codes of the control socket's errors (ControlError.Code), for a
// client that acts on the kind of refusal: one to fix (an unknown name), one
// to wait out (busy, stopping), one for good (the domain-removal guard).
const (
	// ControlUnknownCertificate: the daemon's configuration has no such
	// [[certificate]] (404).
	ControlUnknownCertificate = "unknown_certificate"
	// ControlNoOrder: the certificate has no order in flight (404).
	ControlNoOrder = "no_order"
	// ControlBusy: a redeploy or an order that is just ending holds the
	// certificate (409); try again in a moment.
	ControlBusy = "busy"
	// ControlLeaseHeld: another node of the cluster drives the
	// certificate (409).
	ControlLeaseHeld = "lease_held"
	// ControlDomainRemoval: the domain-removal guard refused the reissue
	// (409); the admin must confirm it.
	ControlDomainRemoval = "domain_removal"
	// ControlServiceEnded: the certificate's service has ended (409): no
	// reissue renews it until a renewal is bought.
	ControlServiceEnded = "service_ended"
	// ControlStopping: the daemon is stopping (503).
	ControlStopping = "stopping"
)

// ErrNoDaemon says that no daemon answers on a control socket: the file is
// absent, or nothing listens on it any more. Commands then work on the
// state directly.
var ErrNoDaemon = errors.New("no dcvd daemon is running")

// ControlSocketPaths says where the control socket of a daemon whose state
// directory is stateDir goes: in runtimeDir (systemd's $RUNTIME_DIRECTORY,
// whose first entry is used) when it is set, else in stateDir. When the
// socket is in runtimeDir, link is a symbolic link in stateDir to it, by
// which a command run outside the service, without $RUNTIME_DIRECTORY,
// finds it; otherwise link is "".
func ControlSocketPaths(stateDir, runtimeDir string) (socket, link string) {
	inState := filepath.Join(stateDir, ControlSocketName)
	if dir, _, _ := strings.Cut(runtimeDir, ":"); dir != "" {
		socket = filepath.Join(dir, ControlSocketName)
		if socket != inState {
			return socket, inState
		}
	}
	return inState, ""
}

// ControlListener is the daemon's end of the control socket. Close stops
// listening and removes the socket and its link, if they are still the
// ones it created.
type ControlListener struct {
	net.Listener
	path, link string
	made       os.FileInfo
	closeOnce  sync.Once
	closeErr   error
}

// Path is the socket's path.
func (l *ControlListener) Path() string { return l.path }

// Close stops listening and removes the socket and its link.
func (l *ControlListener) Close() error {
	l.closeOnce.Do(func() {
		errs := []error{l.Listener.Close()}
		// A daemon started after this one (once this one stopped
		// answering) may have replaced them: leave those alone.
		if fi, err := os.Lstat(l.path); err == nil && os.SameFile(fi, l.made) {
			errs = append(errs, ignoreNotExist(os.Remove(l.path)))
		}
		if l.link != "" {
			if target, err := os.Readlink(l.link); err == nil && target == l.path {
				errs = append(errs, ignoreNotExist(os.Remove(l.link)))
			}
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// ListenControl creates the control socket at path, mode 0600, and, when
// link is not "", a symbolic link at link to it (see ControlSocketPaths).
// A socket (or link) left behind by a daemon that is gone is removed; one
// that still answers means another daemon runs, and ListenControl refuses.
// The socket's directory must exist.
func ListenControl(path, link string) (*ControlListener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("control socket %s: the path is longer than the %d bytes a unix socket allows: use a shorter state_dir", path, maxSocketPath)
	}
	if err := clearStale(path); err != nil {
		return nil, err
	}
	if link != "" {
		if err := clearStale(link); err != nil {
			return nil, err
		}
	}
	// The socket is bound in a private directory and made 0600 before it
	// is linked into place, so that it is never reachable with the modes
	// of the process's umask, however wide.
	tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".dcvd-sock-")
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSocketPath {
		return nil, fmt.Errorf("control socket %s: the path is too long for a unix socket (%s, which dcvd binds first, is over %d bytes): use a shorter state_dir", path, tmp, maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	// The listener's own name goes away with tmpDir; Close removes path.
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*ControlListener, error) {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	// link(2) never replaces a file: a daemon that started in the same
	// moment and got there first makes this one fail, not both run.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fail(errors.New("another dcvd created it just now: is the daemon started twice?"))
		}
		return fail(err)
	}
	made, err := os.Lstat(path)
	if err != nil {
		return fail(err)
	}
	l := &ControlListener{Listener: ln, path: path, made: made}
	if link != "" {
		if err := os.Symlink(path, link); err != nil {
			l.Close()
			return nil, fmt.Errorf("control socket link %s: %w", link, err)
		}
		l.link = link
	}
	return l, nil
}

// clearStale removes a control socket (or link to one) at path that no
// daemon answers on, and refuses when one does or when path is something
// else.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if fi.Mode()&(fs.ModeSocket|fs.ModeSymlink) == 0 {
		return fmt.Errorf("control socket %s: a file that is not a socket is in the way: move it away", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("control socket %s: another dcvd daemon is running and answers on it: stop it first (dcvd status shows what it does)", path)
	}
	if !noDaemon(err) {
		return fmt.Errorf("control socket %s: cannot tell whether another daemon runs: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control socket %s: remove the one left by a daemon that is gone: %w", path, err)
	}
	return nil
}

// noDaemon reports whether a dial error means that nothing listens: no
// file (or a link to none), or a socket nobody accepts on.
func noDaemon(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// ServeControl serves the control socket at path (see ListenControl: a
// stale socket is removed, a live one refused) until ctx ends.
func (d *Daemon) ServeControl(ctx context.Context, path string) error {
	ln, err := ListenControl(path, "")
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
		return http.StatusConflict, ControlDomainRemoval
	case errors.As(err, &see):
		return http.StatusConflict, ControlServiceEnded
	case errors.As(err, &noe):
		return http.StatusNotFound, ControlNoOrder
	case errors.As(err, &be):
		return http.StatusConflict, ControlBusy
	case errors.Is(err, store.ErrLeaseHeld):
		return http.StatusConflict, ControlLeaseHeld
	}
	return http.StatusInternalServerError, ""
}

// orderJSON is an order as the control socket shows it: what a command
// prints, without the key's path, the CSR or the callback token.
type orderJSON struct {
	UniqueID    string     `json:"unique_id"`
	Cert        string     `json:"cert"`
	Step        store.Step `json:"step"`
	Names       []string   `json:"names,omitempty"`
	Serial      string     `json:"serial,omitempty"`
	NotAfter    *time.Time `json:"not_after,omitempty"`
	Cost        float64    `json:"cost"`
	Attempts    int        `json:"attempts,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	Created     time.Time  `json:"created"`
}

func toOrderJSON(o *store.Order) orderJSON {
	j := orderJSON{UniqueID: o.UniqueID, Cert: o.Cert, Step: o.Step, Names: append([]string(nil), o.Names...),
		Serial: o.Serial, Cost: o.Cost, Attempts: o.Attempts, LastError: o.LastError, Created: o.Created}
	if !o.NotAfter.IsZero() {
		t := o.NotAfter
		j.NotAfter = &t
	}
	if !o.NextAttempt.IsZero() {
		t := o.NextAttempt
		j.NextAttempt = &t
	}
	return j
}

func (j orderJSON) order() *store.Order {
	o := &store.Order{UniqueID: j.UniqueID, Cert: j.Cert, Step: j.Step, Names: j.Names, Serial: j.Serial, Cost: j.Cost,
		Attempts: j.Attempts, LastError: j.LastError, Created: j.Created}
	if j.NotAfter != nil {
		o.NotAfter = *j.NotAfter
	}
	if j.NextAttempt != nil {
		o.NextAttempt = *j.NextAttempt
	}
	return o
}

func (c *controlServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status", c.only(http.MethodGet, func(r *http.Request) (any, int, error) {
		sts, err := c.d.Status(r.Context())
		if sts == nil {
			sts = []CertStatus{}
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
		return toOrderJSON(o), http.StatusOK, nil
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
		return "", codedError(http.StatusNotFound, ControlUnknownCertificate,
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
func (c *controlServer) startReissue(name string, allow bool) (orderJSON, error) {
	d := c.d
	ctx := c.ctx
	if ctx.Err() != nil {
		return orderJSON{}, codedError(http.StatusServiceUnavailable, ControlStopping, "the daemon is stopping")
	}
	d.life.startMu.Lock()
	defer d.life.startMu.Unlock()
	cc, err := d.certConfig(name)
	if err != nil {
		return orderJSON{}, codedError(http.StatusNotFound, ControlUnknownCertificate, "%w", err)
	}
	if !d.claim(name) {
		// A driver is at work on it: that order is the answer.
		o, err := d.store.ActiveOrder(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return orderJSON{}, &busyError{cert: name}
		}
		if err != nil {
			return orderJSON{}, err
		}
		return toOrderJSON(o), nil
	}
	lctx, release, err := d.lease(ctx, name)
	if err != nil {
		d.release(name)
		if errors.Is(err, store.ErrLeaseHeld) {
			// Another node of the cluster drives it: its order is the
			// answer, if it has one.
			if o, oerr := d.store.ActiveOrder(ctx, name); oerr == nil {
				return toOrderJSON(o), nil
			}
			return orderJSON{}, codedError(http.StatusConflict, ControlLeaseHeld, "%w", err)
		}
		return orderJSON{}, err
	}
	o, err := d.store.ActiveOrder(lctx, name)
	if errors.Is(err, store.ErrNotFound) {
		o, err = d.newOrder(lctx, cc, allow)
	}
	if err != nil {
		release()
		d.release(name)
		return orderJSON{}, err
	}
	// Read now: the driver changes o from here on.
	view := toOrderJSON(o)
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

// retryJSON is the answer to POST /retry.
type retryJSON struct {
	Order  orderJSON `json:"order"`
	How    RetryHow  `json:"how"`
	Holder string    `json:"holder,omitempty"`
}

// retry has the order in flight of name tried now (see Daemon.Retry). A
// running daemon drives every order in flight of its certificates, so its
// driver is usually there to be woken; when it is not (it stopped on an
// error of the database, to be resumed at the next check, hours away), a
// driver is started here, which tries the order at once.
func (c *controlServer) retry(name string) (retryJSON, error) {
	d := c.d
	if c.ctx.Err() != nil {
		return retryJSON{}, codedError(http.StatusServiceUnavailable, ControlStopping, "the daemon is stopping")
	}
	d.life.startMu.Lock() // a driver started here is one a reload sees
	defer d.life.startMu.Unlock()
	res, err := d.retry(c.ctx, name, func(lctx context.Context, cc *config.CertConfig, o *store.Order, release func()) {
		c.goDrive(lctx, cc, o, release)
	})
	if err != nil {
		return retryJSON{}, err
	}
	return retryJSON{Order: toOrderJSON(res.Order), How: res.How, Holder: res.Holder}, nil
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

// ControlClient talks to a running daemon over its control socket. It is
// safe for concurrent use.
type ControlClient struct {
	path string
	hc   *http.Client
}

// ControlError is an error the daemon answered with.
type ControlError struct {
	// Status is the HTTP status: 404 for an unknown certificate or order,
	// 409 when the certificate is busy or the domain-removal guard
	// refuses, 400 for a bad request, 503 when the daemon is stopping.
	Status int
	// Code tells apart the refusals of one status: one of the Control*
	// codes, "" for the others.
	Code    string
	Message string
}

// Error is the daemon's message.
func (e *ControlError) Error() string { return e.Message }

// DialControl connects to the daemon's control socket at path. When no
// daemon answers there (no socket, or a socket nobody listens on) the error
// wraps ErrNoDaemon at once; any other failure, such as a socket the
// caller may not use, is an error of its own.
func DialControl(path string) (*ControlClient, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		if noDaemon(err) {
			return nil, fmt.Errorf("%w on %s: %w", ErrNoDaemon, path, err)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	conn.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", path)
		},
		MaxIdleConns: 1,
	}
	return &ControlClient{path: path, hc: &http.Client{Transport: tr}}, nil
}

// Path is the socket the client talks to.
func (c *ControlClient) Path() string { return c.path }

// Close releases the client's idle connection.
func (c *ControlClient) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// maxControlReply bounds a reply of the daemon.
const maxControlReply = 16 << 20

func (c *ControlClient) call(ctx context.Context, method, path string, query url.Values, out any) error {
	u := "http://dcvd" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("daemon on %s: %s %s: %w", c.path, method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxControlReply))
	if err != nil {
		return fmt.Errorf("daemon on %s: %s %s: %w", c.path, method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("daemon on %s: %s %s: HTTP %d", c.path, method, path, resp.StatusCode)
		}
		return &ControlError{Status: resp.StatusCode, Code: e.Code, Message: e.Error}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("daemon on %s: %s %s: bad reply: %w", c.path, method, path, err)
	}
	return nil
}

// Status returns what the daemon's Status does, for its configuration.
func (c *ControlClient) Status(ctx context.Context) ([]CertStatus, error) {
	var sts []CertStatus
	if err := c.call(ctx, http.MethodGet, "/status", nil, &sts); err != nil {
		return nil, err
	}
	return sts, nil
}

// Reissue has the daemon reissue name now, or finds its order in flight,
// and returns at once with the order as it stands: the daemon drives it.
// The order holds no key path, CSR or callback token.
func (c *ControlClient) Reissue(ctx context.Context, name string, allowDomainRemoval bool) (*store.Order, error) {
	q := url.Values{"name": {name}}
	if allowDomainRemoval {
		q.Set("allow_domain_removal", "1")
	}
	var j orderJSON
	if err := c.call(ctx, http.MethodPost, "/reissue", q, &j); err != nil {
		return nil, err
	}
	return j.order(), nil
}

// Retry has the daemon try the order in flight of name now (see
// Daemon.Retry, and the control server's retry, which starts a driver when
// the daemon has none on it). The order holds no key path, CSR or callback
// token. A certificate without an order in flight is a *ControlError with
// Code ControlNoOrder.
func (c *ControlClient) Retry(ctx context.Context, name string) (*RetryResult, error) {
	var j retryJSON
	if err := c.call(ctx, http.MethodPost, "/retry", url.Values{"name": {name}}, &j); err != nil {
		return nil, err
	}
	return &RetryResult{Order: j.Order.order(), How: j.How, Holder: j.Holder}, nil
}

// Redeploy has the daemon install the live certificate of name again and
// reload, unless an order is at work on it.
func (c *ControlClient) Redeploy(ctx context.Context, name string) error {
	var out struct{}
	return c.call(ctx, http.MethodPost, "/redeploy", url.Values{"name": {name}}, &out)
}

// Order returns the order uniqueID as it stands (without key path, CSR or
// callback token).
func (c *ControlClient) Order(ctx context.Context, uniqueID string) (*store.Order, error) {
	var j orderJSON
	if err := c.call(ctx, http.MethodGet, "/order", url.Values{"unique_id": {uniqueID}}, &j); err != nil {
		return nil, err
	}
	return j.order(), nil
}

// Wait polls the daemon's status every poll until the order uniqueID of
// certificate name is no longer in flight, and returns it as it ended.
// progress, when set, is called with each step the order is seen at.
// When ctx ends first, the order is returned as last seen, with ctx's
// error; the daemon carries it on.
func (c *ControlClient) Wait(ctx context.Context, name, uniqueID string, poll time.Duration, progress func(store.Step)) (*store.Order, error) {
	var last store.Step
	return c.Follow(ctx, name, uniqueID, poll, func(o *OrderStatus) error {
		if o.Step != last {
			last = o.Step
			if progress != nil {
				progress(last)
			}
		}
		return nil
	})
}

// Follow is Wait with a look at the order at each poll: observe is called
// with the order in flight as the daemon's status shows it (its step,
// failed tries, next attempt and last error). An error observe returns
// ends the follow: the order is returned as last seen, with that error;
// the daemon carries it on.
func (c *ControlClient) Follow(ctx context.Context, name, uniqueID string, poll time.Duration, observe func(*OrderStatus) error) (*store.Order, error) {
	for {
		sts, err := c.Status(ctx)
		if err != nil {
			return c.lastSeen(uniqueID, err)
		}
		var st *CertStatus
		for i := range sts {
			if sts[i].Name == name {
				st = &sts[i]
			}
		}
		if st == nil || st.Order == nil || st.Order.UniqueID != uniqueID {
			// Ended (or its certificate left the configuration): the
			// order itself says how.
			return c.Order(ctx, uniqueID)
		}
		if err := observe(st.Order); err != nil {
			return c.lastSeen(uniqueID, err)
		}
		select {
		case <-ctx.Done():
			return c.lastSeen(uniqueID, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// lastSeenWait bounds the look at the order after a wait ended: a wait
// that ends on the caller's deadline must not outlast it by much.
const lastSeenWait = 2 * time.Second

// lastSeen returns the order as it stands with err, for a wait that ends
// before the order does.
func (c *ControlClient) lastSeen(uniqueID string, err error) (*store.Order, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lastSeenWait)
	defer cancel()
	o, oerr := c.Order(ctx, uniqueID)
	if oerr != nil {
		return nil, err
	}
	return o, err
}
