package providers

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/dcvd/dcvd/internal/memdns"
)

// serveDNS serves h over UDP and TCP on the same addr ("ip:0" picks a free
// port) until the test ends, and returns the address.
func serveDNS(t testing.TB, addr string, h dns.Handler) (string, error) {
	t.Helper()
	var lastErr error
	for range 10 {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return "", err
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			lastErr = err
			if strings.HasSuffix(addr, ":0") {
				continue
			}
			return "", err
		}
		started := make(chan struct{}, 2)
		udp := &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
		tcp := &dns.Server{Listener: l, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
		go udp.ActivateAndServe()
		go tcp.ActivateAndServe()
		<-started
		<-started
		t.Cleanup(func() {
			udp.Shutdown()
			tcp.Shutdown()
		})
		return pc.LocalAddr().String(), nil
	}
	return "", lastErr
}

// logEntry is one query a proxy forwarded and what the backend answered.
type logEntry struct {
	network string
	name    string // lower case, no trailing dot
	qtype   uint16
	rcode   int
	cname   string // target of the CNAME answer, lower case, no trailing dot
}

// queryLog records the queries of a forwarding proxy, so tests can tell
// what a server was asked and what it answered, in order.
type queryLog struct {
	mu      sync.Mutex
	entries []logEntry
}

func (l *queryLog) add(e logEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, e)
}

// cnameQueries returns the CNAME queries for name, in order.
func (l *queryLog) cnameQueries(name string) []logEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logEntry
	for _, e := range l.entries {
		if e.name == name && e.qtype == dns.TypeCNAME {
			out = append(out, e)
		}
	}
	return out
}

// proxy forwards every query to backend over the same transport and logs it.
func (l *queryLog) proxy(backend string) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		network := w.LocalAddr().Network()
		c := &dns.Client{Net: network, Timeout: 2 * time.Second}
		r, _, err := c.Exchange(req, backend)
		if err != nil || r == nil {
			r = new(dns.Msg)
			r.SetRcode(req, dns.RcodeServerFailure)
		}
		e := logEntry{network: network, rcode: r.Rcode}
		if len(req.Question) == 1 {
			e.name = strings.ToLower(strings.TrimSuffix(req.Question[0].Name, "."))
			e.qtype = req.Question[0].Qtype
		}
		for _, rr := range r.Answer {
			if cn, ok := rr.(*dns.CNAME); ok {
				e.cname = strings.ToLower(strings.TrimSuffix(cn.Target, "."))
			}
		}
		l.add(e)
		w.WriteMsg(r)
	})
}

// authServer is an authoritative server of the tests: a memdns server
// behind a logging proxy that listens on the address the code under test
// asks.
type authServer struct {
	mem  *memdns.Server
	addr string // the proxy's "ip:port"
	log  *queryLog
}

// startAuthPair starts two servers for example.com on 127.0.0.2:P and
// 127.0.0.3:P, whose NS records ns1 and ns2 point at them.
func startAuthPair(t testing.TB) (a, b *authServer, port int) {
	t.Helper()
	ctx := context.Background()
	start := func(ip string) *authServer {
		mem, err := memdns.Start(ip+":0", "example.com")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mem.Close() })
		if _, err := mem.AppendRecords(ctx, "example.com.", []libdns.Record{
			libdns.NS{Name: "@", Target: "ns2.example.com."},
			libdns.Address{Name: "ns1", IP: netip.MustParseAddr("127.0.0.2")},
			libdns.Address{Name: "ns2", IP: netip.MustParseAddr("127.0.0.3")},
		}); err != nil {
			t.Fatal(err)
		}
		return &authServer{mem: mem, log: new(queryLog)}
	}
	a, b = start("127.0.0.2"), start("127.0.0.3")
	var err error
	for range 10 {
		if a.addr, err = serveDNS(t, "127.0.0.2:0", a.log.proxy(a.mem.Addr())); err != nil {
			t.Fatal(err)
		}
		_, p, _ := net.SplitHostPort(a.addr)
		if b.addr, err = serveDNS(t, "127.0.0.3:"+p, b.log.proxy(b.mem.Addr())); err == nil {
			port, _ = strconv.Atoi(p)
			return a, b, port
		}
		// The port is taken on 127.0.0.3: the first proxy stays idle
		// until cleanup, and the pair is tried on another port.
	}
	t.Fatalf("no port free on both 127.0.0.2 and 127.0.0.3: %v", err)
	return nil, nil, 0
}

func publishCNAME(t testing.TB, s *authServer, name, target string) {
	t.Helper()
	rel := libdns.RelativeName(name+".", "example.com.")
	if _, err := s.mem.SetRecords(context.Background(), "example.com.", []libdns.Record{
		libdns.CNAME{Name: rel, Target: target + "."},
	}); err != nil {
		t.Error(err)
	}
}

func TestPropagationServersDiscovery(t *testing.T) {
	a, b, port := startAuthPair(t)
	ctx := context.Background()
	for _, zone := range []string{"v6.test", "lame.test", "twice.test"} {
		a.mem.AddZone(zone)
	}
	if _, err := a.mem.AppendRecords(ctx, "v6.test.", []libdns.Record{
		libdns.Address{Name: "ns1", IP: netip.MustParseAddr("::1")},
		libdns.Address{Name: "ns1", IP: netip.MustParseAddr("127.0.0.9")},
	}); err != nil {
		t.Fatal(err)
	}
	// Two NS names with one address: the server is asked once.
	if _, err := a.mem.AppendRecords(ctx, "twice.test.", []libdns.Record{
		libdns.NS{Name: "@", Target: "ns2.twice.test."},
		libdns.Address{Name: "ns1", IP: netip.MustParseAddr("127.0.0.9")},
		libdns.Address{Name: "ns2", IP: netip.MustParseAddr("127.0.0.9")},
	}); err != nil {
		t.Fatal(err)
	}
	p := strconv.Itoa(port)

	tests := []struct {
		name    string
		prop    Propagation
		zone    string
		want    []string
		wantErr []string
	}{
		{name: "both servers", zone: "Example.COM",
			prop: Propagation{Resolvers: []string{a.addr}, Port: port},
			want: []string{"127.0.0.2:" + p, "127.0.0.3:" + p}},
		{name: "resolver order, second answers", zone: "example.com.",
			prop: Propagation{Resolvers: []string{deadAddr(t), b.addr}, Port: port},
			want: []string{"127.0.0.2:" + p, "127.0.0.3:" + p}},
		{name: "ipv6 bracketed", zone: "v6.test",
			prop: Propagation{Resolvers: []string{a.addr}, Port: port},
			want: []string{"127.0.0.9:" + p, "[::1]:" + p}},
		{name: "default port", zone: "v6.test",
			prop: Propagation{Resolvers: []string{a.addr}},
			want: []string{"127.0.0.9:53", "[::1]:53"}},
		{name: "deduplicated", zone: "twice.test",
			prop: Propagation{Resolvers: []string{a.addr}, Port: port},
			want: []string{"127.0.0.9:" + p}},
		{name: "explicit nameservers", zone: "example.com",
			prop: Propagation{Nameservers: []string{"127.0.0.3:" + p, "127.0.0.2", "127.0.0.3:" + p}, Resolvers: []string{deadAddr(t)}, Port: port},
			want: []string{"127.0.0.3:" + p, "127.0.0.2:" + p}},
		{name: "NS host without address", zone: "lame.test",
			prop:    Propagation{Resolvers: []string{a.addr}, Port: port},
			wantErr: []string{"no authoritative nameserver found for zone lame.test.", "ns1.lame.test."}},
		{name: "zone unknown to the resolver", zone: "other.org",
			prop:    Propagation{Resolvers: []string{a.addr}, Port: port},
			wantErr: []string{"other.org.", a.addr, "REFUSED"}},
		{name: "no resolver answers", zone: "example.com",
			prop:    Propagation{Resolvers: []string{deadAddr(t)}, Port: port},
			wantErr: []string{"find nameservers of zone example.com."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.prop.Servers(ctx, tt.zone)
			if checkWantErr(t, err, tt.wantErr, "Servers = %v, want an error", got) {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Servers = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPropagationWaitAllServersHaveIt(t *testing.T) {
	a, b, port := startAuthPair(t)
	const name, target = "_both.example.com", "x.sectigo.com"
	publishCNAME(t, a, name, target)
	publishCNAME(t, b, name, target)
	p := Propagation{Resolvers: []string{a.addr}, Port: port, Interval: 50 * time.Millisecond, Timeout: 10 * time.Second}
	// The target is compared without case or trailing dot.
	rec := Record{Zone: "example.com.", Name: name, Target: "X.Sectigo.com."}
	if err := p.Wait(context.Background(), "example.com.", []Record{rec, rec}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*authServer{a, b} {
		q := s.log.cnameQueries(name)
		if len(q) != 1 || q[0].cname != target {
			t.Errorf("%s was asked %d time(s) for %s (%+v), want once with the answer %s", s.addr, len(q), name, q, target)
		}
	}
}

func TestPropagationWaitsForLaggingServer(t *testing.T) {
	a, b, port := startAuthPair(t)
	const name, target = "_lag.example.com", "y.sectigo.com"
	publishCNAME(t, a, name, target)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Publish only once the lagging server has said it has no record,
		// so that the test proves Wait asked again rather than being lucky.
		for len(b.log.cnameQueries(name)) == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		publishCNAME(t, b, name, target)
	}()
	p := Propagation{Resolvers: []string{a.addr}, Port: port, Interval: 50 * time.Millisecond, MaxInterval: 100 * time.Millisecond, Timeout: 30 * time.Second}
	err := p.Wait(context.Background(), "example.com", []Record{{Zone: "example.com.", Name: name, Target: target}})
	<-done
	if err != nil {
		t.Fatal(err)
	}

	qb := b.log.cnameQueries(name)
	if len(qb) < 2 {
		t.Fatalf("lagging server asked %d time(s), want at least twice: %+v", len(qb), qb)
	}
	if qb[0].rcode != dns.RcodeNameError {
		t.Errorf("first answer of the lagging server: rcode %s, want NXDOMAIN", dns.RcodeToString[qb[0].rcode])
	}
	last := qb[len(qb)-1]
	if last.cname != target {
		t.Errorf("Wait returned before the lagging server answered %s; last answer %+v", target, last)
	}
	for _, e := range qb[:len(qb)-1] {
		if e.cname == target {
			t.Errorf("the lagging server was asked again after answering correctly: %+v", qb)
		}
	}
	if qa := a.log.cnameQueries(name); len(qa) != 1 {
		t.Errorf("server that had the record from the start was asked %d times, want once", len(qa))
	}
}

func TestPropagationTimeoutNamesLaggingServers(t *testing.T) {
	a, b, port := startAuthPair(t)
	p := strconv.Itoa(port)
	first, second := "127.0.0.2:"+p, "127.0.0.3:"+p
	dead := deadAddr(t)
	ctx := context.Background()
	tests := []struct {
		name    string
		setup   func(t *testing.T)
		zone    string
		records []Record
		servers []string // Nameservers; nil: discover
		want    []string
		notWant []string
	}{
		{
			name:    "second never gets it",
			setup:   func(t *testing.T) { publishCNAME(t, a, "_never.example.com", "x.sectigo.com") },
			zone:    "example.com.",
			records: []Record{{Name: "_never.example.com", Target: "x.sectigo.com"}},
			want: []string{
				"propagation of 1 record(s) in zone example.com. not complete after 700ms: ",
				second + " answered NXDOMAIN for _never.example.com (want CNAME x.sectigo.com)",
			},
			notWant: []string{first},
		},
		{
			name: "wrong target on one",
			setup: func(t *testing.T) {
				publishCNAME(t, a, "_wrong.example.com", "x.sectigo.com")
				publishCNAME(t, b, "_wrong.example.com", "stale.sectigo.com")
			},
			zone:    "example.com.",
			records: []Record{{Name: "_wrong.example.com", Target: "x.sectigo.com"}},
			want:    []string{second + " answered CNAME stale.sectigo.com for _wrong.example.com (want CNAME x.sectigo.com)"},
			notWant: []string{first},
		},
		{
			name: "nodata and two records",
			setup: func(t *testing.T) {
				publishCNAME(t, a, "_one.example.com", "one.sectigo.com")
				publishCNAME(t, b, "_one.example.com", "one.sectigo.com")
				if _, err := a.mem.SetRecords(ctx, "example.com.", []libdns.Record{libdns.TXT{Name: "_two", Text: "not a cname"}}); err != nil {
					t.Fatal(err)
				}
			},
			zone: "example.com.",
			records: []Record{
				{Name: "_one.example.com", Target: "one.sectigo.com"},
				{Name: "_two.example.com", Target: "two.sectigo.com"},
			},
			want: []string{
				"propagation of 2 record(s)",
				first + " answered NODATA for _two.example.com (want CNAME two.sectigo.com)",
				second + " answered NXDOMAIN for _two.example.com",
			},
			notWant: []string{"_one.example.com"},
		},
		{
			name:    "refused",
			setup:   func(t *testing.T) {},
			zone:    "other.org.",
			servers: []string{first},
			records: []Record{{Name: "_x.other.org", Target: "x.sectigo.com"}},
			want:    []string{first + " answered REFUSED for _x.other.org"},
		},
		{
			name:    "nothing listening",
			setup:   func(t *testing.T) {},
			zone:    "example.com.",
			servers: []string{dead},
			records: []Record{{Name: "_dead.example.com", Target: "x.sectigo.com"}},
			want:    []string{dead + " failed: "},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each case waits for its whole timeout
			tt.setup(t)
			prop := Propagation{
				Resolvers:   []string{a.addr},
				Nameservers: tt.servers,
				Port:        port,
				Timeout:     700 * time.Millisecond,
				Interval:    50 * time.Millisecond,
				MaxInterval: 200 * time.Millisecond,
			}
			err := prop.Wait(ctx, tt.zone, tt.records)
			if err == nil {
				t.Fatal("Wait succeeded, want a timeout")
			}
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				t.Errorf("a timeout of Wait's own wraps a context error: %v", err)
			}
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q\ndoes not contain %q", err, s)
				}
			}
			for _, s := range tt.notWant {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q\ncontains %q", err, s)
				}
			}
		})
	}
}

func TestPropagationExplicitNameserversSkipDiscovery(t *testing.T) {
	a, b, port := startAuthPair(t)
	const name, target = "_explicit.example.com", "z.sectigo.com"
	publishCNAME(t, a, name, target)
	publishCNAME(t, b, name, target)
	recs := []Record{{Name: name, Target: target}}
	dead := []string{deadAddr(t)}

	p := Propagation{Nameservers: []string{a.addr, b.addr}, Resolvers: dead, Port: port, Interval: 50 * time.Millisecond, Timeout: 5 * time.Second}
	if err := p.Wait(context.Background(), "example.com.", recs); err != nil {
		t.Fatal(err)
	}
	// The same check with discovery must fail on the dead resolver,
	// otherwise the first half proves nothing.
	p.Nameservers = nil
	err := p.Wait(context.Background(), "example.com.", recs)
	if err == nil || !strings.Contains(err.Error(), "find nameservers of zone example.com.") {
		t.Fatalf("discovery through a dead resolver: err = %v, want a discovery error", err)
	}
}

func TestPropagationTCPFallbackOnTruncation(t *testing.T) {
	const name, target = "_tc.example.com.", "t.sectigo.com."
	var tcpQueries atomic.Int32
	addr, err := serveDNS(t, "127.0.0.1:0", dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		if w.LocalAddr().Network() == "udp" {
			m.Truncated = true // the answer does not fit: ask over TCP
		} else {
			tcpQueries.Add(1)
			if req.RecursionDesired {
				m.Rcode = dns.RcodeRefused // authoritative servers must be asked with RD=0
			} else {
				rr, _ := dns.NewRR(name + " 60 IN CNAME " + target)
				m.Answer = []dns.RR{rr}
			}
		}
		w.WriteMsg(m)
	}))
	if err != nil {
		t.Fatal(err)
	}
	p := Propagation{Nameservers: []string{addr}, Interval: 50 * time.Millisecond, Timeout: 5 * time.Second}
	if err := p.Wait(context.Background(), "example.com", []Record{{Name: "_tc.example.com", Target: "t.sectigo.com"}}); err != nil {
		t.Fatal(err)
	}
	if tcpQueries.Load() == 0 {
		t.Fatal("no query over TCP")
	}
}

func TestPropagationStopsWhenContextEnds(t *testing.T) {
	a, b, port := startAuthPair(t)
	const name = "_cancel.example.com"
	publishCNAME(t, a, name, "x.sectigo.com")

	// A server that reads queries and never answers: cancelling must also
	// interrupt a query in flight.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var silentGot atomic.Int32
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			silentGot.Add(1)
		}
	}()

	tests := []struct {
		name    string
		servers []string
		asked   func() bool // true once the lagging server has been asked
		want    string
	}{
		// After the second query the first answer has surely arrived.
		{name: "between rounds", asked: func() bool { return len(b.log.cnameQueries(name)) > 1 },
			want: b.addr + " answered NXDOMAIN for " + name},
		{name: "query in flight", servers: []string{pc.LocalAddr().String()}, asked: func() bool { return silentGot.Load() > 0 },
			want: pc.LocalAddr().String() + " "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				for !tt.asked() {
					time.Sleep(5 * time.Millisecond)
				}
				cancel()
			}()
			p := Propagation{Resolvers: []string{a.addr}, Nameservers: tt.servers, Port: port, Interval: 20 * time.Millisecond, Timeout: time.Minute}
			err := p.Wait(ctx, "example.com.", []Record{{Name: name, Target: "x.sectigo.com"}})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want one wrapping context.Canceled", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}

	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		p := Propagation{Resolvers: []string{a.addr}, Port: port}
		if err := p.Wait(ctx, "example.com.", []Record{{Name: name, Target: "x.sectigo.com"}}); !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want one wrapping context.Canceled", err)
		}
	})
}

func TestPropagationRecordsChecked(t *testing.T) {
	// No server is reachable: anything but an immediate answer fails.
	p := Propagation{Nameservers: []string{deadAddr(t)}, Timeout: 200 * time.Millisecond}
	tests := []struct {
		name    string
		records []Record
		wantErr string
	}{
		{name: "none", records: nil},
		{name: "conflicting targets", records: []Record{
			{Name: "_a.example.com", Target: "x.sectigo.com"},
			{Name: "_A.example.com.", Target: "y.sectigo.com"},
		}, wantErr: "_a.example.com is expected to point to both x.sectigo.com and y.sectigo.com"},
		{name: "no target", records: []Record{{Name: "_a.example.com"}}, wantErr: "name and target are required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Wait(context.Background(), "example.com.", tt.records)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestPropagationDefaults(t *testing.T) {
	tests := []struct {
		p                              Propagation
		timeout, interval, maxInterval time.Duration
		port                           int
	}{
		{Propagation{}, DefaultPropagationTimeout, DefaultPropagationInterval, DefaultPropagationMax, 53},
		{Propagation{Timeout: time.Second, Interval: time.Millisecond, MaxInterval: 2 * time.Millisecond, Port: 5353},
			time.Second, time.Millisecond, 2 * time.Millisecond, 5353},
		// A maximum below the first interval would shrink the pause.
		{Propagation{Interval: time.Minute, MaxInterval: time.Second}, DefaultPropagationTimeout, time.Minute, time.Minute, 53},
	}
	for i, tt := range tests {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			if got := tt.p.timeout(); got != tt.timeout {
				t.Errorf("timeout = %s, want %s", got, tt.timeout)
			}
			if got := tt.p.interval(); got != tt.interval {
				t.Errorf("interval = %s, want %s", got, tt.interval)
			}
			if got := tt.p.maxInterval(); got != tt.maxInterval {
				t.Errorf("maxInterval = %s, want %s", got, tt.maxInterval)
			}
			if got := tt.p.port(); got != tt.port {
				t.Errorf("port = %d, want %d", got, tt.port)
			}
		})
	}
}

func TestPropagationFastDefaults(t *testing.T) {
	tests := []struct {
		name        string
		p           Propagation
		fast, phase time.Duration
	}{
		{"zero", Propagation{}, DefaultPropagationFastInterval, DefaultPropagationFastPhase},
		// As a [dns.NAME] section configures it by default.
		{"section defaults", Propagation{Interval: DefaultPropagationInterval, MaxInterval: DefaultPropagationMax},
			DefaultPropagationFastInterval, DefaultPropagationFastPhase},
		{"set", Propagation{FastInterval: 100 * time.Millisecond, FastPhase: time.Minute}, 100 * time.Millisecond, time.Minute},
		{"set above the interval", Propagation{FastInterval: time.Second, Interval: 200 * time.Millisecond}, 200 * time.Millisecond, DefaultPropagationFastPhase},
		// Polling slowed down on purpose stays slow.
		{"gentle interval", Propagation{Interval: 5 * time.Second}, 5 * time.Second, DefaultPropagationFastPhase},
		{"gentle interval, fast one set", Propagation{Interval: 5 * time.Second, FastInterval: time.Second}, time.Second, DefaultPropagationFastPhase},
		{"interval below the fast one", Propagation{Interval: 50 * time.Millisecond}, 50 * time.Millisecond, DefaultPropagationFastPhase},
		{"no fast phase", Propagation{FastPhase: -1}, DefaultPropagationFastInterval, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.fastInterval(); got != tt.fast {
				t.Errorf("fastInterval = %s, want %s", got, tt.fast)
			}
			if got := tt.p.fastPhase(); got != tt.phase {
				t.Errorf("fastPhase = %s, want %s", got, tt.phase)
			}
		})
	}
}

func TestPropagationSchedule(t *testing.T) {
	ns := func(n int) time.Duration { return time.Duration(n) }
	us := func(n int) time.Duration { return time.Duration(n) * time.Microsecond }
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name    string
		p       Propagation
		elapsed []time.Duration // when each round started
		want    []time.Duration // the pause after it
	}{
		{
			name:    "section defaults: fast for two minutes, then steady at 400ms",
			p:       Propagation{Interval: DefaultPropagationInterval, MaxInterval: DefaultPropagationMax},
			elapsed: []time.Duration{0, ms(250), time.Minute, 2*time.Minute - 1, 2 * time.Minute, 2*time.Minute + ms(400), 3 * time.Minute, 4 * time.Minute, 5 * time.Minute, 10 * time.Minute, 20 * time.Minute},
			want:    []time.Duration{ms(250), ms(250), ms(250), ms(250), ms(400), ms(400), ms(400), ms(400), ms(400), ms(400), ms(400)},
		},
		{
			name:    "no steady cap: fast for two minutes, then 500ms growing to 10s",
			p:       Propagation{Interval: DefaultPropagationInterval, MaxInterval: DefaultPropagationMax, SteadyInterval: -1},
			elapsed: []time.Duration{0, ms(250), time.Minute, 2*time.Minute - 1, 2 * time.Minute, 2*time.Minute + ms(500), 3 * time.Minute, 4 * time.Minute, 5 * time.Minute, 6 * time.Minute, 7 * time.Minute, 8 * time.Minute, 9 * time.Minute, 10 * time.Minute},
			want: []time.Duration{ms(250), ms(250), ms(250), ms(250), ms(500), ms(750), ms(1125), us(1687500), us(2531250),
				ns(3796875000), ns(5695312500), ns(8542968750), ms(10000), ms(10000)},
		},
		{
			name:    "steady cap set: the backoff stops at it",
			p:       Propagation{Interval: ms(100), MaxInterval: time.Second, SteadyInterval: ms(300), FastPhase: -1},
			elapsed: []time.Duration{0, ms(100), ms(250), ms(475), ms(775)},
			want:    []time.Duration{ms(100), ms(150), ms(225), ms(300), ms(300)},
		},
		{
			name:    "no fast phase: the backoff from the first round",
			p:       Propagation{Interval: ms(100), MaxInterval: ms(200), FastPhase: -1},
			elapsed: []time.Duration{0, ms(100), ms(250), ms(400)},
			want:    []time.Duration{ms(100), ms(150), ms(200), ms(200)},
		},
		{
			name:    "a gentle interval is kept in the fast phase, and after it",
			p:       Propagation{Interval: 5 * time.Second, MaxInterval: time.Minute, FastPhase: 10 * time.Second},
			elapsed: []time.Duration{0, 5 * time.Second, 10 * time.Second, 15 * time.Second, 20 * time.Second},
			want:    []time.Duration{5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second},
		},
		{
			name:    "harness settings: the interval below the fast one",
			p:       Propagation{Interval: ms(20), MaxInterval: ms(100), FastPhase: ms(100)},
			elapsed: []time.Duration{0, ms(20), ms(100), ms(130), ms(160)},
			want:    []time.Duration{ms(20), ms(20), ms(20), ms(30), ms(45)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.p.schedule()
			for i, e := range tt.elapsed {
				if got := s.next(e); got != tt.want[i] {
					t.Fatalf("round %d (at %s): pause %s, want %s", i, e, got, tt.want[i])
				}
			}
		})
	}
}

func TestPropagationWithPorts(t *testing.T) {
	got := withPorts([]string{"127.0.0.1", " ::1 ", "[::1]", "ns.example.net:5353", "[fe80::1]:54"}, 53)
	want := []string{"127.0.0.1:53", "[::1]:53", "[::1]:53", "ns.example.net:5353", "[fe80::1]:54"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("withPorts = %v, want %v", got, want)
	}
	if got := dedupe([]string{"b", "a", "b"}); !reflect.DeepEqual(got, []string{"b", "a"}) {
		t.Fatalf("dedupe = %v, want the first order kept", got)
	}
}

// deadAddr returns a loopback UDP address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}
