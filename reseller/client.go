package reseller

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultTimeout bounds one API call (connect, send, wait, read) when
// Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// DefaultUserAgent is sent when Config.UserAgent is empty.
const DefaultUserAgent = "dcvd"

// Config configures a Client.
type Config struct {
	// BaseURL is the API root, e.g. https://api.example/api/v1. There is no
	// default: production and sandbox must be chosen explicitly.
	BaseURL     string
	AccessKeyID string
	// AccessKeySecret signs requests. It never leaves the process: it is not
	// sent, logged, or put in errors.
	AccessKeySecret string
	// HTTPClient sends the requests. Nil means a client with connect and
	// TLS handshake timeouts that does not follow redirects (a redirect
	// would carry the signed query to wherever the server points).
	HTTPClient *http.Client
	// Timeout bounds each call; zero means DefaultTimeout.
	Timeout time.Duration
	// MaxReplyBytes bounds a reply body; zero means DefaultMaxReplyBytes.
	MaxReplyBytes int64
	// UserAgent is sent with every request; empty means DefaultUserAgent.
	UserAgent string
	// Now is the clock for the timestamp parameter; nil means time.Now.
	Now func() time.Time
	// Nonce makes the nonce parameter; nil means 32 random hex characters.
	// It must be safe for concurrent use.
	Nonce func() string
	// Observe, when set, is told the outcome and duration of every call
	// that was sent (for metrics). It must be safe for concurrent use.
	Observe func(op string, d time.Duration, err error)
	// MaxRequestsPerSecond, when positive, paces the requests: every
	// request, a retried one included, waits for its turn so that no more
	// than this many leave per second, evenly spaced (see
	// NewRateLimiter). Zero means no limit; negative, NaN or infinite
	// values are refused by New. It is the [api] max_requests_per_second
	// of the configuration: a mass reissue must stay under the reseller's
	// rate rather than be answered with HTTP 429.
	MaxRequestsPerSecond float64
	// Limiter, when set, paces the requests instead: for a limiter shared
	// by several clients, or a test's. It excludes MaxRequestsPerSecond.
	Limiter Limiter
	// DebugStringToSign, when set, is given the string to sign of every
	// request before it is sent, with the call's op: what to compare with
	// the server's when it refuses a signature. The string holds no secret
	// (nor the signature), but it does hold every parameter of the
	// request, the CSR included: set it only for debug logging (the
	// daemon's log_level = "debug"), never put it in errors. It must be
	// safe for concurrent use.
	DebugStringToSign func(op, stringToSign string)
}

// String describes the configuration without the secret, so that printing a
// Config cannot leak it.
func (c Config) String() string {
	return fmt.Sprintf("reseller.Config{BaseURL: %q, AccessKeyID: %q, AccessKeySecret: [redacted]}", c.BaseURL, c.AccessKeyID)
}

// GoString is String, so that %#v does not print the secret either.
func (c Config) GoString() string { return c.String() }

// Client calls the reseller API. It is safe for concurrent use.
type Client struct {
	base     url.URL // scheme, host and path without a trailing slash
	keyID    string
	secret   string
	hc       *http.Client
	timeout  time.Duration
	maxReply int64
	ua       string
	now      func() time.Time
	nonce    func() string
	observe  func(op string, d time.Duration, err error)
	limiter  Limiter // nil: no limit
	rate     float64 // Config.MaxRequestsPerSecond, shown by String
	debugSTS func(op, stringToSign string)
}

// String describes the client without the secret.
func (c *Client) String() string {
	if c.rate > 0 {
		return fmt.Sprintf("reseller.Client{BaseURL: %q, AccessKeyID: %q, MaxRequestsPerSecond: %v}", c.base.String(), c.keyID, c.rate)
	}
	return fmt.Sprintf("reseller.Client{BaseURL: %q, AccessKeyID: %q}", c.base.String(), c.keyID)
}

// GoString is String, so that %#v does not print the secret either.
func (c *Client) GoString() string { return c.String() }

// New checks cfg and returns a client.
func New(cfg Config) (*Client, error) {
	if strings.TrimSpace(cfg.BaseURL) == "" {
		return nil, errors.New("reseller: Config.BaseURL is empty")
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil {
		return nil, errors.New("reseller: Config.BaseURL is not a valid URL")
	}
	switch {
	case u.User != nil:
		// Not echoed: the user info may hold a password.
		return nil, errors.New("reseller: Config.BaseURL must not contain user info (credentials go in AccessKeyID/AccessKeySecret)")
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("reseller: Config.BaseURL %q is not an absolute http or https URL", cfg.BaseURL)
	case u.Host == "":
		return nil, fmt.Errorf("reseller: Config.BaseURL %q has no host", cfg.BaseURL)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("reseller: Config.BaseURL %q must not have a query or fragment (the signed query is built per call)", cfg.BaseURL)
	}
	// The key id is sent and signed trimmed, as the server reads it (see
	// Canonical): a key id pasted with a trailing newline still works.
	keyID := trimPHP(cfg.AccessKeyID)
	if strings.TrimSpace(keyID) == "" {
		return nil, errors.New("reseller: Config.AccessKeyID is empty")
	}
	if !utf8.ValidString(keyID) {
		return nil, errors.New("reseller: Config.AccessKeyID is not valid UTF-8")
	}
	if cfg.AccessKeySecret == "" {
		return nil, errors.New("reseller: Config.AccessKeySecret is empty")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("reseller: Config.Timeout %s is negative", cfg.Timeout)
	}
	if cfg.MaxReplyBytes < 0 {
		return nil, fmt.Errorf("reseller: Config.MaxReplyBytes %d is negative", cfg.MaxReplyBytes)
	}
	if err := checkRate(cfg.MaxRequestsPerSecond); err != nil {
		return nil, fmt.Errorf("reseller: Config.MaxRequestsPerSecond: %w", err)
	}
	if cfg.Limiter != nil && cfg.MaxRequestsPerSecond != 0 {
		return nil, errors.New("reseller: set Config.Limiter or Config.MaxRequestsPerSecond, not both")
	}
	c := &Client{
		base:     url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimRight(u.Path, "/")},
		keyID:    keyID,
		secret:   cfg.AccessKeySecret,
		hc:       cfg.HTTPClient,
		timeout:  cfg.Timeout,
		maxReply: cfg.MaxReplyBytes,
		ua:       cfg.UserAgent,
		now:      cfg.Now,
		nonce:    cfg.Nonce,
		observe:  cfg.Observe,
		limiter:  cfg.Limiter,
		debugSTS: cfg.DebugStringToSign,
	}
	if cfg.MaxRequestsPerSecond > 0 {
		c.limiter = newRateLimiter(cfg.MaxRequestsPerSecond, time.Now, realTimer)
		c.rate = cfg.MaxRequestsPerSecond
	}
	if c.hc == nil {
		c.hc = defaultHTTPClient()
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.maxReply == 0 {
		c.maxReply = DefaultMaxReplyBytes
	}
	if c.ua == "" {
		c.ua = DefaultUserAgent
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.nonce == nil {
		c.nonce = randomNonce
	}
	return c, nil
}

// CloseIdleConnections closes the idle keep-alive connections of the
// client's transport, as when the client is replaced or its user stops:
// otherwise they linger until the server or the idle timeout closes them.
// Requests in progress are not affected.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

func defaultHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 10 * time.Second
	tr.IdleConnTimeout = 90 * time.Second
	// A mass reissue keeps many requests to the one API host in flight:
	// with the default of 2 idle connections per host, most would be
	// closed after their reply and the next request would pay a new TCP
	// and TLS handshake.
	tr.MaxIdleConnsPerHost = 64
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func randomNonce() string {
	var b [16]byte
	rand.Read(b[:]) // never fails: crypto/rand aborts the program instead
	return hex.EncodeToString(b[:])
}

// Reissue reissues the certificate of req.ServiceID. A request without
// UniqueID or ServiceID, or with neither DomainDCV nor CSR, is refused
// locally and nothing is sent. When the reply is lost (Retryable), retry with
// the same req: a new UniqueID could be charged again.
func (c *Client) Reissue(ctx context.Context, req ReissueRequest) (*Order, error) {
	const op = "reissue"
	switch {
	case strings.TrimSpace(req.UniqueID) == "":
		return nil, errors.New("reseller reissue: unique_id is empty; nothing was sent (it is the reseller's guard against charging twice)")
	case strings.TrimSpace(req.ServiceID) == "":
		return nil, errors.New("reseller reissue: service_id is empty; nothing was sent")
	case len(req.DomainDCV) == 0 && req.CSR == "":
		return nil, errors.New("reseller reissue: neither domain_dcv nor csr is given; nothing was sent")
	}
	return c.postOrder(ctx, op, PathReissue, req.DomainDCV, req.Params())
}

// Create places an order. A request without UniqueID or ProductID is refused
// locally and nothing is sent. When the reply is lost (Retryable), retry with
// the same req: a new UniqueID could be charged again.
func (c *Client) Create(ctx context.Context, req CreateRequest) (*Order, error) {
	const op = "create"
	switch {
	case strings.TrimSpace(req.UniqueID) == "":
		return nil, errors.New("reseller create: unique_id is empty; nothing was sent (it is the reseller's guard against charging twice)")
	case strings.TrimSpace(req.ProductID) == "":
		return nil, errors.New("reseller create: product_id is empty; nothing was sent")
	}
	return c.postOrder(ctx, op, PathCreate, req.DomainDCV, req.Params())
}

// postOrder checks domainDCV, then posts params to path and decodes the
// order in the reply. A bad domainDCV is refused locally, as op, and
// nothing is sent.
func (c *Client) postOrder(ctx context.Context, op, path string, domainDCV map[string]Method, params map[string]any) (*Order, error) {
	if err := checkDomainDCV(domainDCV); err != nil {
		return nil, fmt.Errorf("reseller %s: %w; nothing was sent", op, err)
	}
	var o Order
	if err := c.Do(ctx, op, http.MethodPost, path, nil, params, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// UpdateDCV sets the DCV method of each domain of serviceID, which also makes
// the CA check again. Call it only once every record or file is in place: a
// CA that finds nothing caches the negative answer for minutes.
func (c *Client) UpdateDCV(ctx context.Context, serviceID string, domainDCV map[string]Method) error {
	if strings.TrimSpace(serviceID) == "" {
		return errors.New("reseller update-dcv: service_id is empty; nothing was sent")
	}
	if len(domainDCV) == 0 {
		return errors.New("reseller update-dcv: domain_dcv is empty; nothing was sent")
	}
	if err := checkDomainDCV(domainDCV); err != nil {
		return fmt.Errorf("reseller update-dcv: %w; nothing was sent", err)
	}
	body := map[string]any{"service_id": serviceID, "domain_dcv": copyDomainDCV(domainDCV)}
	return c.Do(ctx, "update-dcv", http.MethodPost, PathUpdateDCV, nil, body, nil)
}

// ValidateDCV asks the reseller to check the DCV of serviceID and returns
// the order with per-domain statuses.
func (c *Client) ValidateDCV(ctx context.Context, serviceID string) (*Order, error) {
	if strings.TrimSpace(serviceID) == "" {
		return nil, errors.New("reseller validate-dcv: service_id is empty; nothing was sent")
	}
	var o Order
	if err := c.Do(ctx, "validate-dcv", http.MethodPost, PathValidateDCV, nil, map[string]any{"service_id": serviceID}, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// Detail returns the order serviceID: status, DCV instructions and, once
// issued, the certificate (untrusted until verified).
func (c *Client) Detail(ctx context.Context, serviceID string) (*Order, error) {
	if strings.TrimSpace(serviceID) == "" {
		return nil, errors.New("reseller detail: service_id is empty; nothing was sent")
	}
	var o Order
	if err := c.Do(ctx, "detail", http.MethodGet, PathDetail, url.Values{"service_id": {serviceID}}, nil, &o); err != nil {
		return nil, err
	}
	return &o, nil
}

// Products returns the products the account may order.
func (c *Client) Products(ctx context.Context) ([]Product, error) {
	var l productList
	if err := c.Do(ctx, "product list", http.MethodGet, PathProductList, nil, nil, &l); err != nil {
		return nil, err
	}
	return l, nil
}

// checkDomainDCV refuses empty domains and methods: dropped silently as
// empty parameters, they would leave a domain out of the request, and a
// reissue that leaves out a domain of the issued certificate revokes it.
func checkDomainDCV(m map[string]Method) error {
	for d, meth := range m {
		if strings.TrimSpace(d) == "" {
			return errors.New("domain_dcv has an empty domain")
		}
		if strings.TrimSpace(meth) == "" {
			return fmt.Errorf("domain_dcv[%s] has no method", sanitizeReplyText(d, 100))
		}
	}
	return nil
}

// Do sends one signed request and decodes the reply envelope. op names the
// call in errors; path is relative to the base URL. query holds business
// parameters for the query string (one value each), body those for the JSON
// body (POST). Both are put in their canonical form (see Canonical) before
// anything is signed, and that form is what is sent: strings trimmed, empty
// strings and nils dropped, booleans as 1/0, numbers as PHP prints them.
// Parameters that cannot be sent as they would be signed (invalid UTF-8,
// NaN …) are refused with an error naming them, and nothing is sent. When
// out is not nil, the reply must carry data, which is decoded into out.
//
// With a rate limit (Config.MaxRequestsPerSecond or Config.Limiter), Do
// first waits for its turn; when ctx ends during that wait, nothing is sent
// and the error wraps ctx's error.
//
// Errors are *APIError, *TransportError or *DecodeError, or a plain error
// when the request cannot be built or ctx ended before its turn (nothing
// was sent).
func (c *Client) Do(ctx context.Context, op, method, path string, query url.Values, body map[string]any, out any) (err error) {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("reseller %s: path %q does not start with /", op, path)
	}
	// Query and body are canonicalised together: the server signs their
	// union, and PHP's ksort orders its keys as one level.
	params := make(map[string]any, len(query)+len(body)+3)
	for k, vs := range query {
		if isAuthParam(k) {
			return fmt.Errorf("reseller %s: parameter %q is reserved for authentication", op, k)
		}
		if len(vs) != 1 {
			return fmt.Errorf("reseller %s: query parameter %q must have exactly one value, has %d", op, k, len(vs))
		}
		params[k] = vs[0]
	}
	for k, v := range body {
		if isAuthParam(k) {
			return fmt.Errorf("reseller %s: parameter %q is reserved for authentication", op, k)
		}
		if _, dup := query[k]; dup {
			return fmt.Errorf("reseller %s: parameter %q is both in the query and in the body", op, k)
		}
		params[k] = v
	}
	signed, err := Canonical(params)
	if err != nil {
		return fmt.Errorf("reseller %s: %w; nothing was sent", op, err)
	}
	q := make(url.Values, len(query)+4)
	bodyParams := make(map[string]any, len(body))
	for k, v := range signed {
		if _, inQuery := query[k]; inQuery {
			q.Set(k, v.(string)) // a string stays a string
		} else {
			bodyParams[k] = v
		}
	}
	if len(bodyParams) > 0 && (method == http.MethodGet || method == http.MethodHead) {
		return fmt.Errorf("reseller %s: a %s request has no body for parameters", op, method)
	}
	var reqBody io.Reader
	if method != http.MethodGet && method != http.MethodHead {
		b, err := json.Marshal(bodyParams)
		if err != nil {
			return fmt.Errorf("reseller %s: encoding the body: %w", op, err)
		}
		reqBody = bytes.NewReader(b)
	}

	// The turn is waited for before the request is signed, so that its
	// timestamp is that of its sending, and before the call's timeout
	// starts: a wait for the turn is not the server's slowness.
	if c.limiter != nil {
		if err := c.limiter.Wait(ctx); err != nil {
			return fmt.Errorf("reseller %s: not sent: the caller gave up while waiting for its turn under the rate limit: %w", op, err)
		}
	}
	nonce, ts := c.nonce(), FormatTimestamp(c.now())
	if nonce == "" || trimPHP(nonce) != nonce || !utf8.ValidString(nonce) {
		return fmt.Errorf("reseller %s: Config.Nonce returned %q, which the server would not read as sent; nothing was sent", op, nonce)
	}
	// The authentication parameters keep the form canonical: their values
	// are trimmed (the key id by New, the nonce just above), and their
	// names begin with a letter, after the text of any integer key, so
	// that they cannot upset PHP's key order (see checkKeyOrder).
	signed[ParamAccessKeyID] = c.keyID
	signed[ParamNonce] = nonce
	signed[ParamTimestamp] = ts

	u := c.base // a copy: the client is shared between goroutines
	u.Path += path
	toSign := stringToSign(u.Path, signed)
	if c.debugSTS != nil {
		c.debugSTS(op, toSign)
	}
	sign := Sign(c.secret, toSign)
	q.Set(ParamAccessKeyID, c.keyID)
	q.Set(ParamNonce, nonce)
	q.Set(ParamTimestamp, ts)
	q.Set(ParamSign, sign)

	callCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// The URL is given without its query, so that an error from building the
	// request cannot carry the signature.
	req, err := http.NewRequestWithContext(callCtx, method, u.String(), reqBody)
	if err != nil {
		return fmt.Errorf("reseller %s: building the request: %w", op, err)
	}
	req.URL.RawQuery = q.Encode()
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	if c.observe != nil {
		start := time.Now()
		defer func() { c.observe(op, time.Since(start), err) }()
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(ctx, callCtx, op, sign, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, c.maxReply+1))
	if err != nil {
		return c.transportError(ctx, callCtx, op, sign, fmt.Errorf("reading the reply: %w", err))
	}
	return c.decodeReply(op, resp, raw, sign, out)
}

func isAuthParam(k string) bool {
	return k == ParamAccessKeyID || k == ParamNonce || k == ParamTimestamp || k == ParamSign
}

func (c *Client) transportError(ctx, callCtx context.Context, op, sign string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		// url.Error quotes the full URL, signed query included.
		err = ue.Err
	}
	te := &TransportError{Op: op, callerDone: ctx.Err() != nil}
	if !te.callerDone && callCtx.Err() != nil {
		err = fmt.Errorf("no reply within %s: %w", c.timeout, err)
	}
	te.Err = c.scrubError(err, sign)
	return te
}

// replyEnvelope is the reply wrapper of every call. Fields are kept raw because
// the API family is loose with types.
type replyEnvelope struct {
	Success   json.RawMessage `json:"success"`
	Message   json.RawMessage `json:"message"`
	ErrorCode json.RawMessage `json:"error_code"`
	Errors    json.RawMessage `json:"errors"`
	Data      json.RawMessage `json:"data"`
}

func (c *Client) decodeReply(op string, resp *http.Response, raw []byte, sign string, out any) error {
	status := resp.StatusCode
	if status < 200 || status > 299 {
		return c.apiError(op, resp, raw, sign)
	}
	fail := func(err error) error {
		return &DecodeError{Op: op, StatusCode: status, Err: c.scrubError(err, sign), Snippet: sanitizeReplyText(c.scrub(string(raw), sign), maxSnippetBytes)}
	}
	if int64(len(raw)) > c.maxReply {
		return fail(fmt.Errorf("the reply exceeds the limit of %d bytes", c.maxReply))
	}
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '{' {
		return fail(errors.New("the reply is not a JSON object"))
	}
	var env replyEnvelope
	if err := json.Unmarshal(t, &env); err != nil {
		return fail(fmt.Errorf("the reply is not valid JSON: %w", err))
	}
	// One page of the family's docs (the certificate list) shows a
	// {"code": 0} envelope instead: accepted wherever it comes.
	ok, err := parseSuccessOrCode(env.Success, t)
	if err != nil {
		return fail(err)
	}
	if !ok {
		ae := &APIError{Op: op, StatusCode: status}
		c.fillAPIError(ae, &env, sign)
		if ae.Message == "" {
			ae.Message = "success is false"
		}
		return ae
	}
	if out == nil {
		return nil
	}
	data := bytes.TrimSpace(env.Data)
	if len(data) == 0 || string(data) == "null" {
		return fail(errors.New("the reply carries no data"))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fail(fmt.Errorf("data: %w", err))
	}
	return nil
}

// parseSuccess accepts the envelope's success as the API family sends it:
// true/false, 1/0, or those as strings. Anything else, or its absence, means
// the reply is not what it seems to be.
func parseSuccess(raw json.RawMessage) (bool, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" {
		return false, errors.New("the reply has no success field")
	}
	switch strings.ToLower(s) {
	case "true", "1", `"1"`, `"true"`:
		return true, nil
	case "false", "0", `"0"`, `"false"`:
		return false, nil
	}
	return false, fmt.Errorf("success is %s, not a boolean", sanitizeReplyText(s, 40))
}

func (c *Client) apiError(op string, resp *http.Response, raw []byte, sign string) error {
	ae := &APIError{Op: op, StatusCode: resp.StatusCode}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		ae.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), c.now())
	}
	// A body over the limit was cut and will not parse: the status says
	// enough, and a proxy's huge error page must stay retryable.
	var env replyEnvelope
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] == '{' && json.Unmarshal(t, &env) == nil {
		c.fillAPIError(ae, &env, sign)
	}
	if ae.Message == "" {
		ae.Message = http.StatusText(resp.StatusCode)
	}
	if ae.Message == "" {
		ae.Message = "unknown HTTP status"
	}
	return ae
}

func (c *Client) fillAPIError(ae *APIError, env *replyEnvelope, sign string) {
	ae.Message = sanitizeReplyText(c.scrub(looseString(env.Message), sign), maxMessageBytes)
	ae.Code = sanitizeReplyText(c.scrub(looseString(env.ErrorCode), sign), 100)
	var fields map[string]json.RawMessage
	if json.Unmarshal(env.Errors, &fields) != nil || len(fields) == 0 {
		return
	}
	ae.FieldErrors = make(map[string][]string, len(fields))
	for f, v := range fields {
		var msgs []string
		var list []json.RawMessage
		if json.Unmarshal(v, &list) == nil {
			for _, m := range list {
				msgs = append(msgs, sanitizeReplyText(c.scrub(looseString(m), sign), maxSnippetBytes))
			}
		} else {
			msgs = []string{sanitizeReplyText(c.scrub(looseString(v), sign), maxSnippetBytes)}
		}
		ae.FieldErrors[sanitizeReplyText(c.scrub(f, sign), 100)] = msgs
	}
}

// looseString renders a JSON value as text: a string as itself, null as "",
// anything else as its JSON.
func looseString(raw json.RawMessage) string {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || string(t) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(t, &s) == nil {
		return s
	}
	var b bytes.Buffer
	if json.Compact(&b, t) == nil {
		return b.String()
	}
	return string(t)
}

// scrub removes the secret and this request's signature from text that came
// from the server, in the forms a reply may echo them: raw, URL-encoded, and
// with JSON's escaped slashes.
func (c *Client) scrub(s, sign string) string {
	for _, secret := range []string{c.secret, sign} {
		if secret == "" {
			continue
		}
		for _, form := range []string{secret, url.QueryEscape(secret), strings.ReplaceAll(secret, "/", `\/`)} {
			s = strings.ReplaceAll(s, form, "[redacted]")
		}
	}
	return s
}

// scrubError keeps err unless its text holds the secret or the signature.
func (c *Client) scrubError(err error, sign string) error {
	if msg := err.Error(); c.scrub(msg, sign) != msg {
		return errors.New(c.scrub(msg, sign))
	}
	return err
}

// productList decodes the product list's data: an array, or an object
// holding the array under list, items, data or products.
type productList []Product

func (p *productList) UnmarshalJSON(b []byte) error {
	t := bytes.TrimSpace(b)
	if len(t) > 0 && t[0] == '[' {
		var l []Product
		if err := json.Unmarshal(t, &l); err != nil {
			return err
		}
		*p = l
		return nil
	}
	if len(t) == 0 || t[0] != '{' {
		return errors.New("the product list is neither an array nor an object")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(t, &m); err != nil {
		return err
	}
	for _, k := range []string{"list", "items", "data", "products"} {
		v, ok := m[k]
		if !ok {
			continue
		}
		if v := bytes.TrimSpace(v); len(v) == 0 || v[0] != '[' && string(v) != "null" {
			return fmt.Errorf("the product list's %q is not an array", k)
		}
		var l []Product
		if err := json.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		*p = l
		return nil
	}
	return errors.New("the product list object has no list, items, data or products array")
}
