package sandbox

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
	"sync"
	"time"
	"unicode"

	"github.com/miekg/dns"
)

const (
	chkDefaultNegativeTTL = 5 * time.Minute
	chkDefaultTimeout     = 10 * time.Second
	chkResolvConf         = "/etc/resolv.conf"
	// chkUDPSize is the EDNS0 buffer advertised for UDP queries (the DNS flag
	// day 2020 value): large enough for any sane CNAME answer, small enough
	// not to fragment; a bigger answer comes back truncated and is retried
	// over TCP.
	chkUDPSize = 1232
	// chkMaxBody bounds a validation file; a real one is under 200 bytes.
	chkMaxBody = 64 << 10
	// chkQuoteMax bounds how much of untrusted served text an error quotes.
	chkQuoteMax = 200
)

// checkerConfig configures the CA's DCV checks. Zero values mean defaults.
type checkerConfig struct {
	DNSServer   string        // "host:port" to send CNAME queries to; "" = first nameserver of /etc/resolv.conf
	HTTPAddr    string        // "host:port" to connect to for http:// checks; "" = the domain itself on :80
	HTTPSAddr   string        // same for https:// (TLS, SNI = domain, certificate not verified); "" = domain:443
	NegativeTTL time.Duration // a failed DNS check is cached this long (default 5m; negative: not cached)
	Timeout     time.Duration // per check (default 10s)
	Now         func() time.Time
}

// checker performs the CA's DCV checks, as a real CA does them: a CNAME
// lookup whose failure is remembered for a while (the behaviour that makes
// calling update-dcv too early hurt), and a plain GET of the validation file
// that does not follow redirects. It is safe for concurrent use.
type checker struct {
	cfg         checkerConfig
	httpClient  *http.Client
	httpsClient *http.Client

	mu       sync.Mutex
	negative map[chkNegKey]chkNegEntry
}

type chkNegKey struct{ name, target string }

type chkNegEntry struct {
	until  time.Time
	reason string
}

// newChecker returns a checker for cfg, with defaults filled in.
func newChecker(cfg checkerConfig) *checker {
	if cfg.NegativeTTL == 0 {
		cfg.NegativeTTL = chkDefaultNegativeTTL
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = chkDefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &checker{
		cfg:         cfg,
		httpClient:  chkHTTPClient(cfg.HTTPAddr),
		httpsClient: chkHTTPClient(cfg.HTTPSAddr),
		negative:    make(map[chkNegKey]chkNegEntry),
	}
}

// chkHTTPClient returns a client that connects to addr whatever the URL's
// host (when addr is set), so that the URL, the Host header and the SNI stay
// the domain's while tests and the demo serve it on a local port. A CA does
// not require a trusted certificate on an https DCV URL, hence no
// verification; it does not go through a proxy, hence none from the
// environment; and one connection serves one check.
func chkHTTPClient(addr string) *http.Client {
	dialer := &net.Dialer{}
	dial := dialer.DialContext
	if addr != "" {
		dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		}
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:       nil,
			DialContext: dial,
			TLSClientConfig: &tls.Config{
				// ServerName is left empty: the transport then uses the
				// URL's host, which is the domain, for SNI.
				InsecureSkipVerify: true, //nolint:gosec // DCV over https does not require a trusted certificate.
				MinVersion:         tls.VersionTLS12,
			},
			DisableKeepAlives:  true,
			DisableCompression: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// checkCNAME checks that name has a CNAME pointing to target, asking
// DNSServer directly (UDP, then TCP if the answer is truncated). Names are
// compared case-insensitively, trailing dots ignored.
//
// A failure seen in DNS (NXDOMAIN, no CNAME, another target, an error code,
// no answer in time) is remembered for NegativeTTL: checking the same
// (name, target) again before then fails without asking, as a real CA's
// cache does. Failures that say nothing about the record (the caller's
// context cancelled, no resolver configured) are not remembered.
func (c *checker) checkCNAME(ctx context.Context, name, target string) error {
	name = chkCanonName(name)
	target = chkCanonName(target)
	if name == "" || target == "" {
		return fmt.Errorf("check CNAME %q → %q: empty name or target", name, target)
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return fmt.Errorf("check CNAME %q: not a domain name", name)
	}
	key := chkNegKey{name, target}
	now := c.cfg.Now()
	if reason, until, ok := c.cachedFailure(key, now); ok {
		return fmt.Errorf("check CNAME %s: cached failure, not re-checked until %s (a CA caches negative answers for %s): %s",
			name, until.UTC().Format(time.RFC3339), c.cfg.NegativeTTL, reason)
	}

	server := c.cfg.DNSServer
	if server == "" {
		conf, err := dns.ClientConfigFromFile(chkResolvConf)
		if err != nil {
			return fmt.Errorf("check CNAME %s: read resolver: %w", name, err)
		}
		if len(conf.Servers) == 0 {
			return fmt.Errorf("check CNAME %s: no nameserver in %s", name, chkResolvConf)
		}
		server = net.JoinHostPort(conf.Servers[0], conf.Port)
	}

	qctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	err := c.lookupCNAME(qctx, server, name, target)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("check CNAME %s: %w", name, ctx.Err())
	}
	if c.cfg.NegativeTTL > 0 {
		c.mu.Lock()
		c.pruneLocked(now)
		c.negative[key] = chkNegEntry{until: now.Add(c.cfg.NegativeTTL), reason: err.Error()}
		c.mu.Unlock()
	}
	return fmt.Errorf("check CNAME %s: %w", name, err)
}

func (c *checker) cachedFailure(key chkNegKey, now time.Time) (reason string, until time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.negative[key]
	if !found || !now.Before(e.until) {
		return "", time.Time{}, false
	}
	return e.reason, e.until, true
}

// pruneLocked drops expired entries so that the cache does not grow with
// every name ever checked.
func (c *checker) pruneLocked(now time.Time) {
	for k, e := range c.negative {
		if !now.Before(e.until) {
			delete(c.negative, k)
		}
	}
}

// lookupCNAME asks server for the CNAME of name and compares it with target.
// Both are canonical (lower case, no trailing dot).
func (c *checker) lookupCNAME(ctx context.Context, server, name, target string) error {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeCNAME)
	q.RecursionDesired = true
	q.SetEdns0(chkUDPSize, false)

	reply, err := chkExchange(ctx, "udp", server, q, c.cfg.Timeout)
	if err == nil && reply.Truncated {
		reply, err = chkExchange(ctx, "tcp", server, q, c.cfg.Timeout)
	}
	if err != nil {
		// The connection's deadline is the context's, and may fire a moment
		// before the context itself reports it.
		var ne net.Error
		if ctx.Err() != nil || (errors.As(err, &ne) && ne.Timeout()) {
			return fmt.Errorf("no answer from %s within %s: %w", server, c.cfg.Timeout, err)
		}
		return fmt.Errorf("query %s: %w", server, err)
	}
	switch reply.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return fmt.Errorf("NXDOMAIN: %s does not exist (want a CNAME to %s)", name, target)
	default:
		return fmt.Errorf("%s answered %s (want a CNAME to %s)", server, chkRcodeName(reply.Rcode), target)
	}
	var seen []string
	var others []string
	for _, rr := range reply.Answer {
		cn, ok := rr.(*dns.CNAME)
		if !ok || chkCanonName(rr.Header().Name) != name {
			others = append(others, dns.TypeToString[rr.Header().Rrtype])
			continue
		}
		got := chkCanonName(cn.Target)
		if got == target {
			return nil
		}
		seen = append(seen, got)
	}
	if len(seen) > 0 {
		return fmt.Errorf("%s is a CNAME to %s, want %s", name, strings.Join(seen, ", "), target)
	}
	if len(others) > 0 {
		return fmt.Errorf("no CNAME for %s (the answer has only %s records; want a CNAME to %s)", name, strings.Join(others, ", "), target)
	}
	return fmt.Errorf("no CNAME for %s (empty answer; want a CNAME to %s)", name, target)
}

// chkExchange sends q over network and reads the reply, giving up when ctx
// is done (miekg/dns only honours the context's deadline, not its
// cancellation).
func chkExchange(ctx context.Context, network, server string, q *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	// Timeout replaces miekg/dns's 2s defaults; the context's deadline,
	// which is earlier, is what really applies.
	client := &dns.Client{Net: network, UDPSize: chkUDPSize, Timeout: timeout}
	conn, err := client.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	reply, _, err := client.ExchangeWithConnContext(ctx, q, conn)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", network, err)
	}
	return reply, nil
}

func chkRcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprintf("rcode %d", rcode)
}

func chkCanonName(s string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
}

// checkFile fetches scheme://host+path once and checks that it serves
// content. A redirect is a failure (a CA does not follow it to a host that
// was not validated), as is any status other than 200, a body over 64 KiB,
// or other content; trailing whitespace is ignored on both sides because
// editors and servers add newlines.
func (c *checker) checkFile(ctx context.Context, scheme, host, path, content string) error {
	var client *http.Client
	switch scheme {
	case "http":
		client = c.httpClient
	case "https":
		client = c.httpsClient
	default:
		return fmt.Errorf("check file: scheme %q is neither http nor https", scheme)
	}
	if host == "" || strings.ContainsAny(host, "/?#@ ") {
		return fmt.Errorf("check file: bad host %q", host)
	}
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("check file: path %q does not start with /", path)
	}
	urlHost := host
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		urlHost = "[" + host + "]"
	}
	u := &url.URL{Scheme: scheme, Host: urlHost, Path: path}
	target := u.String()

	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("check file %s: %w", target, err)
	}
	req.Header.Set("User-Agent", "dcvd-sandbox-dcv-checker")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("check file %s: %w", target, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		loc := resp.Header.Get("Location")
		if loc == "" {
			return fmt.Errorf("check file %s: status %s without a Location (redirects are not followed)", target, resp.Status)
		}
		return fmt.Errorf("check file %s: status %s redirects to Location %q; redirects are not followed, serve the file at this URL",
			target, resp.Status, chkTruncate(loc))
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("check file %s: status %s, want 200 OK", target, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, chkMaxBody+1))
	if err != nil {
		return fmt.Errorf("check file %s: read body: %w", target, err)
	}
	if len(body) > chkMaxBody {
		return fmt.Errorf("check file %s: body is larger than %d KiB", target, chkMaxBody>>10)
	}
	got := strings.TrimRightFunc(string(body), unicode.IsSpace)
	want := strings.TrimRightFunc(content, unicode.IsSpace)
	if got != want {
		return fmt.Errorf("check file %s: served %q, want %q", target, chkTruncate(got), want)
	}
	return nil
}

// chkTruncate shortens untrusted text before it goes into an error.
func chkTruncate(s string) string {
	if len(s) <= chkQuoteMax {
		return s
	}
	return s[:chkQuoteMax] + "…"
}
