package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Limits of what a receiver's reply may cost us.
const (
	maxReplyBytes   = 64 << 10 // read at most this much of a reply
	maxSnippetBytes = 200      // quote at most this much of it in an error
)

// DefaultTimeout bounds one HTTP request or SMTP session when the section
// sets no timeout.
const DefaultTimeout = 15 * time.Second

// redactor removes secrets from text that leaves the package (errors).
type redactor []string

// newRedactor keeps the non-empty secrets, with the encodings in which they
// travel in URLs, so that each form can be cut out.
func newRedactor(secrets ...string) redactor {
	var r redactor
	for _, s := range secrets {
		if s == "" {
			continue
		}
		r = append(r, s, url.QueryEscape(s), url.PathEscape(s))
	}
	return r
}

func (r redactor) clean(s string) string {
	for _, sec := range r {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return s
}

// sendError is a failure whose message has been checked for secrets. It
// unwraps to the cause (a network or context error), never to an error
// that could print a URL holding a token.
type sendError struct {
	msg   string
	cause error
}

func (e *sendError) Error() string { return e.msg }
func (e *sendError) Unwrap() error { return e.cause }

// failf builds a sendError, cutting every secret out of the message.
func (r redactor) failf(cause error, format string, args ...any) error {
	return &sendError{msg: r.clean(fmt.Sprintf(format, args...)), cause: cause}
}

// newHTTPClient returns a client that follows no redirect (a webhook that
// moved is a configuration error, and a redirect could carry the request's
// token elsewhere) and gives up after timeout.
func newHTTPClient(timeout time.Duration) *http.Client {
	var tr *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = dt.Clone()
	} else {
		tr = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// endpoint describes where a channel posts, for its error messages: the
// scheme and host only, since paths, queries and user info can all hold a
// token.
func endpoint(u *url.URL) string {
	return u.Scheme + "://" + u.Host
}

// httpTarget is what the HTTP channels share: where they post, how, and
// which secrets their errors must not show.
type httpTarget struct {
	name   string // NAME of [notify.NAME]
	typ    string // channel type, for messages
	client *http.Client
	red    redactor
}

// prefix starts every error of the channel.
func (t *httpTarget) prefix() string { return "notify " + t.name + " (" + t.typ + ")" }

// post sends body as JSON to u and returns the reply's body (at most
// maxReplyBytes) when the status is 2xx. Any other status is an error,
// marked permanent when repeating the request cannot help.
func (t *httpTarget) post(ctx context.Context, u *url.URL, header http.Header, body []byte) ([]byte, error) {
	where := endpoint(u)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		// Only a malformed URL gets here, and the URL may hold a token.
		return nil, Permanent(t.red.failf(nil, "%s: POST %s: cannot build the request", t.prefix(), where))
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("User-Agent", "dcvd-notify")
	resp, err := t.client.Do(req)
	if err != nil {
		// *url.Error prints the whole URL; keep only its cause.
		cause := err
		var ue *url.Error
		if errors.As(err, &ue) {
			cause = ue.Err
		}
		return nil, t.red.failf(cause, "%s: POST %s: %v", t.prefix(), where, cause)
	}
	defer resp.Body.Close()
	reply, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return nil, t.red.failf(err, "%s: POST %s: reading the reply: %v", t.prefix(), where, err)
	}
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return reply, nil
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, Permanent(t.red.failf(nil, "%s: POST %s: HTTP %d: redirects are not followed; configure the final URL",
			t.prefix(), where, resp.StatusCode))
	}
	err = t.red.failf(nil, "%s: POST %s: HTTP %d%s", t.prefix(), where, resp.StatusCode, snippet(reply))
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests:
		return nil, err
	}
	if resp.StatusCode < 500 {
		return nil, Permanent(err)
	}
	return nil, err
}

// snippet quotes the start of a reply for an error message, on one line.
// Callers pass the result through a redactor.
func snippet(reply []byte) string {
	s := oneLine(strings.ToValidUTF8(string(reply), ""))
	if s == "" {
		return ""
	}
	return ": " + truncate(s, maxSnippetBytes)
}
