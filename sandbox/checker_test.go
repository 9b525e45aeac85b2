package sandbox

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// chkDNS is an authoritative-looking DNS server on 127.0.0.1 (UDP and TCP on
// one port) whose records a test changes while it runs.
type chkDNS struct {
	addr string

	mu       sync.Mutex
	cnames   map[string]string // lower-case FQDN → target
	aOnly    map[string]bool   // names that have an A record and no CNAME
	servfail map[string]bool
	tc       map[string]bool // UDP answers carry TC and no records
	big      map[string]bool // answers so large that UDP must truncate them
	queries  map[string]int  // "udp"/"tcp" → count
}

func chkStartDNS(t *testing.T) *chkDNS {
	t.Helper()
	d := &chkDNS{
		cnames: map[string]string{}, aOnly: map[string]bool{}, servfail: map[string]bool{},
		tc: map[string]bool{}, big: map[string]bool{}, queries: map[string]int{},
	}
	var pc net.PacketConn
	var l net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if attempt == 10 {
			t.Fatalf("no port free for both UDP and TCP: %v", err)
		}
	}
	d.addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { d.serve(w, r, "udp") })},
		{Listener: l, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) { d.serve(w, r, "tcp") })},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan error, 1)
		go func() { done <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-done:
			t.Fatalf("DNS server: %v", err)
		}
		t.Cleanup(func() {
			srv.Shutdown()
			<-done
		})
	}
	return d
}

func (d *chkDNS) set(name, target string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cnames[dns.CanonicalName(name)] = target
}

func (d *chkDNS) count(proto string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[proto]
}

func (d *chkDNS) total() int { return d.count("udp") + d.count("tcp") }

func (d *chkDNS) serve(w dns.ResponseWriter, r *dns.Msg, proto string) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := dns.CanonicalName(q.Name)

	d.mu.Lock()
	d.queries[proto]++
	target, hasCNAME := d.cnames[name]
	aOnly, servfail, tc, big := d.aOnly[name], d.servfail[name], d.tc[name], d.big[name]
	d.mu.Unlock()

	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
	}
	switch {
	case servfail:
		m.Rcode = dns.RcodeServerFailure
	case tc && proto == "udp":
		m.Truncated = true
	case hasCNAME:
		if big {
			// Filler first so that truncation drops the CNAME.
			for i := 0; i < 40; i++ {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: []string{strings.Repeat("x", 100)}})
			}
		}
		m.Answer = append(m.Answer, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(target)})
	case aOnly:
		m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.IPv4(192, 0, 2, 1)})
	default:
		m.Rcode = dns.RcodeNameError
	}
	if proto == "udp" {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

func chkErrContains(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", wants)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

const (
	chkName   = "_b6520984c38ff740ebcff7ce2fa82ce0.example.com"
	chkTarget = "5f41498bbcb0bcffe8f31702662a72d3.72037a7d9305979b64a371f9e88173db.20221122.sandbox.test"
)

func TestCheckerCNAME(t *testing.T) {
	d := chkStartDNS(t)
	d.set(chkName, chkTarget)
	d.set("_mixed.Example.COM.", strings.ToUpper(chkTarget)+".")
	d.set("_other.example.com", "wrong.target.test")
	d.set("_tc.example.com", chkTarget)
	d.set("_big.example.com", chkTarget)
	d.mu.Lock()
	d.aOnly["_a.example.com."] = true
	d.servfail["_servfail.example.com."] = true
	d.tc["_tc.example.com."] = true
	d.big["_big.example.com."] = true
	d.mu.Unlock()

	for _, tc := range []struct {
		name, qname, target string
		wants               []string // nil: success
		wantTCP             bool
	}{
		{"correct", chkName, chkTarget, nil, false},
		{"case and trailing dots ignored", "_MIXED.example.com.", chkTarget + ".", nil, false},
		{"NXDOMAIN", "_missing.example.com", chkTarget, []string{"NXDOMAIN", "_missing.example.com"}, false},
		{"no CNAME", "_a.example.com", chkTarget, []string{"no CNAME", "A records"}, false},
		{"wrong target", "_other.example.com", chkTarget, []string{"_other.example.com", "wrong.target.test", chkTarget}, false},
		{"SERVFAIL", "_servfail.example.com", chkTarget, []string{"SERVFAIL"}, false},
		{"TC flag: retried over TCP", "_tc.example.com", chkTarget, nil, true},
		{"big answer truncated: retried over TCP", "_big.example.com", chkTarget, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newChecker(checkerConfig{DNSServer: d.addr, Timeout: 5 * time.Second})
			tcpBefore := d.count("tcp")
			err := c.checkCNAME(context.Background(), tc.qname, tc.target)
			if tc.wants == nil {
				if err != nil {
					t.Fatalf("checkCNAME: %v", err)
				}
			} else {
				chkErrContains(t, err, tc.wants...)
			}
			if usedTCP := d.count("tcp") > tcpBefore; usedTCP != tc.wantTCP {
				t.Errorf("used TCP: %v, want %v", usedTCP, tc.wantTCP)
			}
		})
	}
}

func TestCheckerCNAMENegativeCache(t *testing.T) {
	d := chkStartDNS(t)
	clock := &sbClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	c := newChecker(checkerConfig{DNSServer: d.addr, NegativeTTL: 5 * time.Minute, Timeout: 5 * time.Second, Now: clock.Now})
	ctx := context.Background()

	chkErrContains(t, c.checkCNAME(ctx, chkName, chkTarget), "NXDOMAIN")
	asked := d.total()

	// The record appears, but the CA already looked.
	d.set(chkName, chkTarget)
	clock.Advance(4 * time.Minute)
	chkErrContains(t, c.checkCNAME(ctx, chkName, chkTarget), "cached", "2026-03-01T12:05:00Z", "NXDOMAIN")
	if d.total() != asked {
		t.Error("a cached failure asked the DNS server again")
	}

	// Another target for the same name is another check.
	if err := c.checkCNAME(ctx, chkName, "other.target.test"); err == nil || strings.Contains(err.Error(), "cached") {
		t.Errorf("check of another target: %v, want a fresh failure", err)
	}

	clock.Advance(time.Minute)
	if err := c.checkCNAME(ctx, chkName, chkTarget); err != nil {
		t.Fatalf("after NegativeTTL: %v", err)
	}
	// Success is not cached: removing the record is seen at once.
	d.set(chkName, "moved.target.test")
	chkErrContains(t, c.checkCNAME(ctx, chkName, chkTarget), "moved.target.test")
}

func TestCheckerCNAMETimeout(t *testing.T) {
	// A UDP socket that never answers.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	clock := &sbClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	c := newChecker(checkerConfig{DNSServer: pc.LocalAddr().String(), Timeout: 200 * time.Millisecond, Now: clock.Now})
	chkErrContains(t, c.checkCNAME(context.Background(), chkName, chkTarget), "no answer", pc.LocalAddr().String())
	// A timeout is a failure the CA saw: cached too.
	chkErrContains(t, c.checkCNAME(context.Background(), chkName, chkTarget), "cached")
}

func TestCheckerCNAMECallerCancelIsNotCached(t *testing.T) {
	d := chkStartDNS(t)
	c := newChecker(checkerConfig{DNSServer: d.addr, Timeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.checkCNAME(ctx, chkName, chkTarget); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled check: %v, want context.Canceled", err)
	}
	d.set(chkName, chkTarget)
	if err := c.checkCNAME(context.Background(), chkName, chkTarget); err != nil {
		t.Fatalf("check after a cancelled one: %v", err)
	}
}

func TestCheckerCNAMEBadInput(t *testing.T) {
	c := newChecker(checkerConfig{DNSServer: "127.0.0.1:1"})
	for _, tc := range [][2]string{{"", chkTarget}, {chkName, ""}, {"a..b", chkTarget}} {
		if err := c.checkCNAME(context.Background(), tc[0], tc[1]); err == nil {
			t.Errorf("checkCNAME(%q, %q) succeeded", tc[0], tc[1])
		}
	}
}

// chkWeb serves validation files and records what it was asked.
type chkWeb struct {
	mu    sync.Mutex
	hosts []string
	snis  []string
	hits  map[string]int
}

func (w *chkWeb) record(r *http.Request) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.hosts = append(w.hosts, r.Host)
	if r.TLS != nil {
		w.snis = append(w.snis, r.TLS.ServerName)
	}
	w.hits[r.URL.Path]++
}

func (w *chkWeb) last() (host, sni string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.hosts) > 0 {
		host = w.hosts[len(w.hosts)-1]
	}
	if len(w.snis) > 0 {
		sni = w.snis[len(w.snis)-1]
	}
	return host, sni
}

func (w *chkWeb) hitsOf(path string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hits[path]
}

const chkPath = "/.well-known/pki-validation/b6520984c38ff740ebcff7ce2fa82ce0.txt"

func chkWebHandler(w *chkWeb) http.Handler {
	mux := http.NewServeMux()
	serve := func(path, body string) {
		mux.HandleFunc(path, func(rw http.ResponseWriter, r *http.Request) {
			w.record(r)
			rw.Write([]byte(body))
		})
	}
	serve(chkPath, "sha\nsandbox.test\nuniq\r\n\n")
	serve("/wrong.txt", "something else")
	serve("/leading-space.txt", " sha\nsandbox.test\nuniq")
	serve("/target.txt", "sha\nsandbox.test\nuniq")
	serve("/big.txt", strings.Repeat("a", 65<<10))
	mux.HandleFunc("/redirect.txt", func(rw http.ResponseWriter, r *http.Request) {
		w.record(r)
		http.Redirect(rw, r, "/target.txt", http.StatusFound)
	})
	mux.HandleFunc("/redirect-away.txt", func(rw http.ResponseWriter, r *http.Request) {
		w.record(r)
		http.Redirect(rw, r, "https://elsewhere.test/target.txt", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/error.txt", func(rw http.ResponseWriter, r *http.Request) {
		w.record(r)
		http.Error(rw, "boom", http.StatusInternalServerError)
	})
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		w.record(r)
		http.NotFound(rw, r)
	})
	return mux
}

func TestCheckerFile(t *testing.T) {
	web := &chkWeb{hits: map[string]int{}}
	srv := httptest.NewServer(chkWebHandler(web))
	defer srv.Close()
	c := newChecker(checkerConfig{HTTPAddr: srv.Listener.Addr().String(), Timeout: 5 * time.Second})
	const content = "sha\nsandbox.test\nuniq"

	for _, tc := range []struct {
		name, host, path, content string
		wants                     []string // nil: success
		wantHost                  string
	}{
		{"served (trailing whitespace ignored)", "www.example.com", chkPath, content, nil, "www.example.com"},
		{"expected content with trailing newline", "www.example.com", chkPath, content + "\n", nil, "www.example.com"},
		{"IPv4 host", "192.0.2.7", chkPath, content, nil, "192.0.2.7"},
		{"IPv6 host", "2001:db8::7", chkPath, content, nil, "[2001:db8::7]"},
		{"404", "www.example.com", "/.well-known/pki-validation/missing.txt", content,
			[]string{"404", "want 200"}, "www.example.com"},
		{"500", "www.example.com", "/error.txt", content, []string{"500"}, "www.example.com"},
		{"wrong content", "www.example.com", "/wrong.txt", content,
			[]string{`served "something else"`, `want "sha\nsandbox.test\nuniq"`}, "www.example.com"},
		{"leading whitespace matters", "www.example.com", "/leading-space.txt", content, []string{"served"}, "www.example.com"},
		{"too big", "www.example.com", "/big.txt", content, []string{"larger than 64 KiB"}, "www.example.com"},
		{"302 to same host", "www.example.com", "/redirect.txt", content,
			[]string{"302", `Location "/target.txt"`, "not followed"}, "www.example.com"},
		{"301 to another host", "www.example.com", "/redirect-away.txt", content,
			[]string{"301", `Location "https://elsewhere.test/target.txt"`}, "www.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.checkFile(context.Background(), "http", tc.host, tc.path, tc.content)
			if tc.wants == nil {
				if err != nil {
					t.Fatalf("checkFile: %v", err)
				}
			} else {
				chkErrContains(t, err, tc.wants...)
			}
			if host, _ := web.last(); host != tc.wantHost {
				t.Errorf("Host header %q, want %q", host, tc.wantHost)
			}
		})
	}
	if n := web.hitsOf("/target.txt"); n != 0 {
		t.Errorf("redirect target fetched %d times; redirects must not be followed", n)
	}
}

func TestCheckerFileHTTPS(t *testing.T) {
	web := &chkWeb{hits: map[string]int{}}
	srv := httptest.NewTLSServer(chkWebHandler(web))
	defer srv.Close()
	c := newChecker(checkerConfig{HTTPSAddr: srv.Listener.Addr().String(), Timeout: 5 * time.Second})

	// dcv.test is not in the test server's certificate: a CA does not verify it.
	if err := c.checkFile(context.Background(), "https", "dcv.test", chkPath, "sha\nsandbox.test\nuniq"); err != nil {
		t.Fatalf("checkFile: %v", err)
	}
	if host, sni := web.last(); host != "dcv.test" || sni != "dcv.test" {
		t.Errorf("Host %q, SNI %q; want dcv.test for both", host, sni)
	}
	chkErrContains(t, c.checkFile(context.Background(), "https", "dcv.test", "/wrong.txt", "sha"), "https://dcv.test/wrong.txt", "something else")

	// The http client must not be the https one: an http check with no
	// HTTPAddr does not go to the https server.
	if c.httpClient == c.httpsClient {
		t.Error("http and https share a client")
	}
}

func TestCheckerFileTimeout(t *testing.T) {
	var entered atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		<-r.Context().Done()
	}))
	defer srv.Close()
	c := newChecker(checkerConfig{HTTPAddr: srv.Listener.Addr().String(), Timeout: 200 * time.Millisecond})
	err := c.checkFile(context.Background(), "http", "slow.example.com", chkPath, "x")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want a deadline", err)
	}
	if entered.Load() != 1 {
		t.Errorf("handler entered %d times", entered.Load())
	}
}

func TestCheckerFileBadInput(t *testing.T) {
	c := newChecker(checkerConfig{HTTPAddr: "127.0.0.1:1", HTTPSAddr: "127.0.0.1:1"})
	for _, tc := range []struct{ scheme, host, path string }{
		{"ftp", "example.com", chkPath},
		{"", "example.com", chkPath},
		{"http", "", chkPath},
		{"http", "evil.test/x", chkPath},
		{"http", "user@example.com", chkPath},
		{"http", "example.com", "no-slash.txt"},
	} {
		if err := c.checkFile(context.Background(), tc.scheme, tc.host, tc.path, "x"); err == nil {
			t.Errorf("checkFile(%q, %q, %q) succeeded", tc.scheme, tc.host, tc.path)
		}
	}
}

func TestCheckerHTTPClientIgnoresEnvironmentProxy(t *testing.T) {
	c := newChecker(checkerConfig{})
	for name, cl := range map[string]*http.Client{"http": c.httpClient, "https": c.httpsClient} {
		tr, ok := cl.Transport.(*http.Transport)
		if !ok {
			t.Fatalf("%s transport is %T", name, cl.Transport)
		}
		if tr.Proxy != nil {
			t.Errorf("%s transport uses a proxy", name)
		}
		if cl.CheckRedirect == nil {
			t.Errorf("%s client follows redirects", name)
		}
	}
}
