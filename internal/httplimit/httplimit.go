// Package httplimit holds the bounds of every HTTP server dcvd runs on a
// TCP port: the daemon's callback listener, its validation responder
// (daemon.http_listen), its metrics listener and the standalone responder of
// package httpchallenge. They are in one place so that the numbers, and the
// reasons for them, are not repeated.
//
// Those ports may face the internet, and no token is needed to open a
// connection and send headers. Without bounds, net/http buffers up to 1 MB
// of headers per connection for as long as the client takes, and accepts
// every connection: 2,000 connections each sending 1 MB of headers without
// ending them took the daemon from 95 MB to over 1 GB. With these bounds a
// connection buffers at most HeaderBytes, at most MaxConns connections are
// open at once, and none lasts longer than its timeouts allow, so that the
// same flood costs about 12 MB, however many connections it opens
// (internal/e2e's TestListenerFlood measures it, and fails above 64 MB).
package httplimit

import (
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// The bounds. What dcvd serves is small: a CA's callback is a POST of a
// few hundred bytes of headers (its body is read only to be dropped, at
// most 64 KiB); a DCV fetch is a GET of a 100-byte file; a Prometheus scrape
// is one GET. Legitimate clients send well under 2 KiB of headers, at once.
const (
	// HeaderBytes is the most a request line and its headers may take:
	// beyond it the request gets 431 and the connection is closed. 16 KiB
	// is eight times what a legitimate client of dcvd sends.
	HeaderBytes = 16 << 10

	// headerSlack is what net/http adds to http.Server.MaxHeaderBytes
	// before it stops reading (its initialReadLimitSize, 4096 bytes of
	// slack for the request line and bufio's buffer).
	headerSlack = 4096

	// MaxHeaderBytes is http.Server.MaxHeaderBytes for HeaderBytes: net/http
	// reads up to MaxHeaderBytes+4096 bytes, so this is what makes the
	// bound really HeaderBytes.
	MaxHeaderBytes = HeaderBytes - headerSlack

	// ReadHeaderTimeout bounds the time from accepting a connection (or
	// the end of the previous request on it) to the end of the headers.
	// A legitimate client sends them in one packet; a slowloris holds a
	// connection slot only this long.
	ReadHeaderTimeout = 5 * time.Second

	// ReadTimeout bounds the reading of a whole request, body included:
	// a callback's body is at most 64 KiB, other requests have none.
	ReadTimeout = 20 * time.Second

	// WriteTimeout bounds a request's handling and reply, from the end of
	// its headers: handlers answer in milliseconds (a callback looks up a
	// token and wakes an order; a scrape of 10,000 certificates' metrics
	// takes well under a second), and a client that stops reading the
	// reply must not hold the connection.
	WriteTimeout = 30 * time.Second

	// IdleTimeout bounds how long a keep-alive connection may wait for
	// its next request: an idle connection still holds a slot and a
	// read buffer.
	IdleTimeout = 30 * time.Second

	// MaxConns is the most connections a listener holds open at once.
	// Each costs up to about HeaderBytes twice over (the buffered line,
	// then the parsed header), 8 KiB of bufio buffers and a goroutine:
	// about 50 KB at the peak, garbage included, so that 256 of them cost
	// about 12 MB (measured by TestListenerFlood). That is far more
	// connections than dcvd needs: the CA posts one callback per order
	// event, and its validators fetch a file or two at a time.
	MaxConns = 256
)

// NewServer returns an http.Server for h with the bounds above. Serve it
// on Listener(ln), which caps the connections.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		MaxHeaderBytes:    MaxHeaderBytes,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
	}
}

// Listener returns ln accepting at most MaxConns connections at once.
//
// When MaxConns connections are open, Listener does not accept the next
// ones: they wait in the kernel's accept queue (listen(2)'s backlog,
// net.core.somaxconn, 4096 by default), which costs the process nothing,
// and are accepted in order as soon as a connection ends, which the
// timeouts above guarantee within seconds. That is better than accepting
// and closing them at once: a CA's callback or validation fetch arriving
// during a flood is served late instead of refused, and a refused DCV
// fetch would fail the validation. Beyond the backlog the kernel drops the
// SYNs and clients retry.
func Listener(ln net.Listener) net.Listener {
	return netutil.LimitListener(ln, MaxConns)
}
