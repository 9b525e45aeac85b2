package httpchallenge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/dcvd/dcvd/internal/httplimit"
	"github.com/dcvd/dcvd/reseller"
)

// Responder serves validation files from memory, for hosts with no web
// server or that proxy /.well-known/pki-validation/ to dcvd. It is an
// http.Handler, safe for concurrent use.
//
// It answers only GET and HEAD of reseller.PKIValidationPath + name for a
// Host (port ignored, case-insensitive) that has that file: 200 text/plain
// with the exact content. A method other than GET or HEAD on a served file
// gets 405; anything else 404, so that it can sit on a listener the internet
// reaches without serving anything but pending DCV files.
type Responder struct {
	mu    sync.RWMutex
	files map[fileKey]string // content by host and file name
}

// fileKey identifies a served file.
type fileKey struct {
	host string // normalizeHost form
	name string
}

// NewResponder returns a Responder serving nothing.
func NewResponder() *Responder {
	return &Responder{files: make(map[fileKey]string)}
}

// Add serves f.Content at f.Path for Host f.Host, replacing what was served
// there. An f whose name or path is not a plain file under
// reseller.PKIValidationPath, or with no host, is ignored: no request could
// reach it (Standalone.Add reports it as an error).
func (r *Responder) Add(f reseller.FileInstruction) {
	k, err := keyOf(f)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.files[k] = f.Content
	r.mu.Unlock()
}

// Remove stops serving f, only while what is served at its host and path is
// still f.Content: the CA names a file after the CSR, so the cleanup of an
// older order must not withdraw the file of a newer one for the same CSR.
func (r *Responder) Remove(f reseller.FileInstruction) {
	k, err := keyOf(f)
	if err != nil {
		return
	}
	r.mu.Lock()
	if c, ok := r.files[k]; ok && c == f.Content {
		delete(r.files, k)
	}
	r.mu.Unlock()
}

// Pending returns the number of files being served.
func (r *Responder) Pending() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.files)
}

// ServeHTTP serves a pending file; see Responder.
func (r *Responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	name, ok := strings.CutPrefix(req.URL.Path, reseller.PKIValidationPath)
	if !ok || reseller.CheckDCVFileName(name) != nil {
		http.NotFound(w, req)
		return
	}
	r.mu.RLock()
	content, ok := r.files[fileKey{normalizeHost(req.Host), name}]
	r.mu.RUnlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, http.StatusText(http.StatusMethodNotAllowed), http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(content)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		io.WriteString(w, content)
	}
}

// keyOf returns where f is served, or why it could never be.
func keyOf(f reseller.FileInstruction) (fileKey, error) {
	if err := reseller.CheckDCVFileName(f.FileName); err != nil {
		return fileKey{}, fmt.Errorf("file name %s: %w", printable(f.FileName), err)
	}
	if f.Path != reseller.PKIValidationPath+f.FileName {
		return fileKey{}, fmt.Errorf("path %s is not %s", printable(f.Path), reseller.PKIValidationPath+f.FileName)
	}
	host := normalizeHost(f.Host)
	if host == "" {
		return fileKey{}, errors.New("no host")
	}
	return fileKey{host, f.FileName}, nil
}

// normalizeHost reduces a Host header or an instruction's host to the form
// they are compared in: no port, no brackets, no trailing dot, lower case,
// an IP address in its canonical form.
func normalizeHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	if a, err := netip.ParseAddr(h); err == nil {
		return a.WithZone("").String()
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// Standalone runs a Responder on its own listener (standalone =
// "0.0.0.0:80") only while files are pending, so that the port is open only
// during a validation. It serves plain HTTP.
type Standalone struct {
	addr string
	r    *Responder

	mu     sync.Mutex
	closed bool
	ln     net.Listener // nil when not listening
	srv    *http.Server
	done   chan struct{} // closed when srv.Serve has returned
}

// NewStandalone returns a Standalone that will listen on addr and serve
// files through r (a new Responder when r is nil). It listens only while r
// has pending files; add and remove them through the Standalone.
func NewStandalone(addr string, r *Responder) *Standalone {
	if r == nil {
		r = NewResponder()
	}
	return &Standalone{addr: addr, r: r}
}

// Add serves f, and starts listening if it was not: the error says when the
// port cannot be bound, and f is then not added.
func (s *Standalone) Add(ctx context.Context, f reseller.FileInstruction) error {
	if _, err := keyOf(f); err != nil {
		return fmt.Errorf("serve %s on %s: %w", printable(f.URL), s.addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("serve %s on %s: the standalone responder is closed", f.URL, s.addr)
	}
	if s.ln != nil && s.serveEnded() {
		s.stop() // Serve failed; listen again
	}
	if s.ln == nil {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", s.addr)
		if err != nil {
			return fmt.Errorf("serve %s: listen on %s: %w", f.URL, s.addr, err)
		}
		s.start(ln)
	}
	s.r.Add(f)
	return nil
}

// Remove stops serving f, and stops listening when no file is pending.
func (s *Standalone) Remove(f reseller.FileInstruction) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.r.Remove(f)
	if s.r.Pending() > 0 || s.ln == nil {
		return nil
	}
	if err := s.stop(); err != nil {
		return fmt.Errorf("stop listening on %s: %w", s.addr, err)
	}
	return nil
}

// Addr returns the bound address while listening, "" otherwise. With a
// port 0 in addr it tells which port was picked.
func (s *Standalone) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops listening, whatever is pending, and makes later Adds fail.
func (s *Standalone) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.ln == nil {
		return nil
	}
	if err := s.stop(); err != nil {
		return fmt.Errorf("stop listening on %s: %w", s.addr, err)
	}
	return nil
}

// start serves on ln, with the bounds of every dcvd listener the internet
// reaches (internal/httplimit): at most 16 KiB of headers, a few seconds
// for each request, at most 256 connections at once, the others waiting in
// the kernel's backlog. A DCV fetch is one small request.
func (s *Standalone) start(ln net.Listener) {
	srv := httplimit.NewServer(s.r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(httplimit.Listener(ln)) // returns when stop closes the server
	}()
	s.ln, s.srv, s.done = ln, srv, done
}

// serveEnded reports whether Serve has returned on its own.
func (s *Standalone) serveEnded() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// stop closes the listener and the connections, and waits for Serve to
// return, so that the port is free when it returns. s.mu is held.
func (s *Standalone) stop() error {
	err := s.srv.Close()
	<-s.done
	s.ln, s.srv, s.done = nil, nil, nil
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
