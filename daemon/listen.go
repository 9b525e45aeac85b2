package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/internal/httplimit"
)

// startListener serves callbacks at daemon.callback_listen and the
// responder at daemon.http_listen (one listener when they are equal).
func (d *Daemon) startListener(ctx context.Context, wg *sync.WaitGroup) (string, error) {
	dc := d.config().Daemon
	cb, hl := dc.CallbackListen, dc.HTTPListen
	var addrs []string
	serve := func(addr string, h http.Handler) error {
		a, err := d.serveHTTP(ctx, wg, addr, h)
		if err != nil {
			return err
		}
		addrs = append(addrs, a)
		return nil
	}
	switch {
	case cb != "" && cb == hl:
		mux := http.NewServeMux()
		mux.Handle("/callback/", d.CallbackHandler())
		mux.Handle("/.well-known/pki-validation/", d.responder)
		if err := serve(cb, mux); err != nil {
			return "", err
		}
	default:
		if cb != "" {
			if err := serve(cb, d.CallbackHandler()); err != nil {
				return "", err
			}
		}
		if hl != "" {
			if err := serve(hl, d.responder); err != nil {
				return "", err
			}
		}
	}
	return strings.Join(addrs, ", "), nil
}

// serveHTTP serves h on addr until ctx ends, and returns the bound address.
// The server is bounded (newBoundedServer, boundedListener): addr may face
// the internet, and nobody needs a token to connect.
func (d *Daemon) serveHTTP(ctx context.Context, wg *sync.WaitGroup, addr string, h http.Handler) (string, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := newBoundedServer(h)
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(boundedListener(ln)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("listener stopped", zap.String("addr", ln.Addr().String()), zap.Error(err))
		}
	}()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Shutdown waits for the connections at work, a flood's still
		// sending its headers among them; after 5 s, Close ends those
		// that are left, so that a stop waits no longer for a flood.
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	return ln.Addr().String(), nil
}

// newBoundedServer returns the http.Server of a daemon listener, with the
// bounds of internal/httplimit: at most 16 KiB of request line and headers
// (MaxHeaderBytes is 12 KiB, net/http adds 4 KiB of slack), beyond which
// the request gets 431; 5 s to send the headers, 20 s for the whole request,
// 30 s to handle it and write the reply, 30 s idle between keep-alive
// requests. A connection thus buffers at most 16 KiB and lasts seconds, so
// that a client can neither fill the memory with headers nor hold a
// connection open for free. Serve it on boundedListener(ln).
//
// For the control socket (control.go), turn WriteTimeout off: a redeploy
// answers only once the reload command has run, which may take up to
// deploy.reload_timeout.
func newBoundedServer(h http.Handler) *http.Server {
	return httplimit.NewServer(h)
}

// boundedListener returns ln accepting at most 256 connections at once
// (httplimit.MaxConns): 256 connections each buffering at most 16 KiB of
// headers cost about 12 MB, however many connections a flood opens. The
// ones beyond wait, unaccepted, in the kernel's backlog, where they cost
// dcvd nothing, and are served in turn as connections end (within seconds,
// by the timeouts): a CA's callback or validation fetch arriving during a
// flood is late, not refused, as it would be if they were closed at once.
func boundedListener(ln net.Listener) net.Listener {
	return httplimit.Listener(ln)
}
