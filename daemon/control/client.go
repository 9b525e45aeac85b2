package control

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/dcvd/dcvd/daemon/store"
)

// Client talks to a running daemon over its control socket. It is
// safe for concurrent use.
type Client struct {
	path string
	hc   *http.Client
}

// Error is an error the daemon answered with.
type Error struct {
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
func (e *Error) Error() string { return e.Message }

// Dial connects to the daemon's control socket at path. When no
// daemon answers there (no socket, or a socket nobody listens on) the error
// wraps ErrNoDaemon at once; any other failure, such as a socket the
// caller may not use, is an error of its own.
func Dial(path string) (*Client, error) {
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
	return &Client{path: path, hc: &http.Client{Transport: tr}}, nil
}

// Path is the socket the client talks to.
func (c *Client) Path() string { return c.path }

// Close releases the client's idle connection.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

// maxReply bounds a reply of the daemon.
const maxReply = 16 << 20

func (c *Client) call(ctx context.Context, method, path string, query url.Values, out any) error {
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
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
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
		return &Error{Status: resp.StatusCode, Code: e.Code, Message: e.Error}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("daemon on %s: %s %s: bad reply: %w", c.path, method, path, err)
	}
	return nil
}

// Status returns what the daemon's Status does, for its configuration.
func (c *Client) Status(ctx context.Context) ([]CertStatus, error) {
	var sts []CertStatus
	if err := c.call(ctx, http.MethodGet, "/status", nil, &sts); err != nil {
		return nil, err
	}
	return sts, nil
}

// Reissue has the daemon reissue name now, or finds its order in flight,
// and returns at once with the order as it stands: the daemon drives it.
// The order holds no key path, CSR or callback token.
func (c *Client) Reissue(ctx context.Context, name string, allowDomainRemoval bool) (*store.Order, error) {
	q := url.Values{"name": {name}}
	if allowDomainRemoval {
		q.Set("allow_domain_removal", "1")
	}
	var j Order
	if err := c.call(ctx, http.MethodPost, "/reissue", q, &j); err != nil {
		return nil, err
	}
	return j.Store(), nil
}

// Retry has the daemon try the order in flight of name now (see
// Daemon.Retry, and the control server's retry, which starts a driver when
// the daemon has none on it). The order holds no key path, CSR or callback
// token. A certificate without an order in flight is a *Error with
// Code CodeNoOrder.
func (c *Client) Retry(ctx context.Context, name string) (*RetryResult, error) {
	var j RetryReply
	if err := c.call(ctx, http.MethodPost, "/retry", url.Values{"name": {name}}, &j); err != nil {
		return nil, err
	}
	return &RetryResult{Order: j.Order.Store(), How: j.How, Holder: j.Holder}, nil
}

// Redeploy has the daemon install the live certificate of name again and
// reload, unless an order is at work on it.
func (c *Client) Redeploy(ctx context.Context, name string) error {
	var out struct{}
	return c.call(ctx, http.MethodPost, "/redeploy", url.Values{"name": {name}}, &out)
}

// Order returns the order uniqueID as it stands (without key path, CSR or
// callback token).
func (c *Client) Order(ctx context.Context, uniqueID string) (*store.Order, error) {
	var j Order
	if err := c.call(ctx, http.MethodGet, "/order", url.Values{"unique_id": {uniqueID}}, &j); err != nil {
		return nil, err
	}
	return j.Store(), nil
}

// Wait polls the daemon's status every poll until the order uniqueID of
// certificate name is no longer in flight, and returns it as it ended.
// progress, when set, is called with each step the order is seen at.
// When ctx ends first, the order is returned as last seen, with ctx's
// error; the daemon carries it on.
func (c *Client) Wait(ctx context.Context, name, uniqueID string, poll time.Duration, progress func(store.Step)) (*store.Order, error) {
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
func (c *Client) Follow(ctx context.Context, name, uniqueID string, poll time.Duration, observe func(*OrderStatus) error) (*store.Order, error) {
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
func (c *Client) lastSeen(uniqueID string, err error) (*store.Order, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lastSeenWait)
	defer cancel()
	o, oerr := c.Order(ctx, uniqueID)
	if oerr != nil {
		return nil, err
	}
	return o, err
}
