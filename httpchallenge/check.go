package httpchallenge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

// defaultCheckTimeout is the time a Checker gives one fetch when its
// Timeout is not set.
const defaultCheckTimeout = 10 * time.Second

// maxCheckBody is how much of a response body a Checker reads. A DCV file is
// at most reseller.MaxDCVFileContentLen bytes; anything much longer is a
// page, not the file.
const maxCheckBody = 64 << 10

// Checker fetches the URL the CA will fetch and compares the body, so that
// the CA is asked to look only once the file is really served: a CA that
// finds nothing caches that for minutes.
type Checker struct {
	// Connect, when set, is the "host:port" to connect to instead of
	// resolving the name (for a load balancer, a local web server, tests).
	// The Host header (and SNI for https) is still the validated name.
	Connect string
	// Timeout bounds one fetch, connection included; 0 means 10
	// seconds.
	Timeout time.Duration
}

// Check fetches f.URL as the CA will: GET, no redirect followed, no proxy
// from the environment, the certificate of an https server not verified
// (the CA does not verify it either). It returns nil when the server answers
// 200 with f.Content; trailing whitespace may differ, as CAs tolerate that.
// Otherwise the error says what was served: the status, a redirect's target,
// or the content that differs.
func (c Checker) Check(ctx context.Context, f reseller.FileInstruction) error {
	u, err := url.Parse(f.URL)
	if err != nil {
		return fmt.Errorf("check %s: %w", printable(f.URL), err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("check %s: not an http or https URL with a host", printable(f.URL))
	}
	where := u.String()
	if c.Connect != "" {
		where += " via " + c.Connect
	}

	timeout := c.Timeout
	if timeout <= 0 {
		timeout = defaultCheckTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var dialer net.Dialer
	tr := &http.Transport{
		Proxy: nil, // a proxy would fetch from somewhere the CA does not
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if c.Connect != "" {
				addr = c.Connect
			}
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{
			// The CA fetches DCV files without verifying the certificate
			// (there is often none yet); a self-check that verified it
			// would fail where the CA succeeds.
			InsecureSkipVerify: true, //nolint:gosec // see above
			ServerName:         u.Hostname(),
		},
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("check %s: %w", where, err)
	}
	req.Header.Set("User-Agent", "dcvd-self-check")
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			return fmt.Errorf("%s: no answer within %v: %w", where, timeout, err)
		}
		return fmt.Errorf("%s: %w", where, err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fmt.Errorf("%s: HTTP %d %s (redirects are not followed: the CA follows none)", where, resp.StatusCode, redirectTarget(resp))
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%s: HTTP %d %s", where, resp.StatusCode, http.StatusText(resp.StatusCode))
	}

	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCheckBody+1))
	if err != nil {
		return fmt.Errorf("%s: HTTP 200, reading the body: %w", where, err)
	}
	if len(body) > maxCheckBody {
		return fmt.Errorf("%s: content differs (served more than %d KiB, want %d bytes %s)", where, maxCheckBody>>10, len(f.Content), excerpt(f.Content))
	}
	const space = " \t\r\n"
	if strings.TrimRight(string(body), space) != strings.TrimRight(f.Content, space) {
		return fmt.Errorf("%s: content differs (served %d bytes %s, want %d bytes %s)", where, len(body), excerpt(string(body)), len(f.Content), excerpt(f.Content))
	}
	return nil
}

// redirectTarget describes where a redirect leads, resolved against the
// request URL.
func redirectTarget(resp *http.Response) string {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "redirect without a Location"
	}
	if u, err := resp.Location(); err == nil {
		loc = u.String()
	}
	return "redirect to " + printable(loc)
}

// excerpt quotes the start of a body for a message: bodies are untrusted and
// may be long or binary.
func excerpt(s string) string {
	const max = 100
	if len(s) > max {
		return fmt.Sprintf("%q…", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
