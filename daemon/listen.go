package daemon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
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
func (d *Daemon) serveHTTP(ctx context.Context, wg *sync.WaitGroup, addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	wg.Add(2)
	go func() { defer wg.Done(); srv.Serve(ln) }()
	go func() {
		defer wg.Done()
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	return ln.Addr().String(), nil
}
