package providers

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"

	"github.com/dcvd/dcvd/internal/memdns"
)

// recordsOnly is a provider that cannot list its zones. Its record methods
// are never called by the zone finder.
type recordsOnly struct{}

func (recordsOnly) GetRecords(context.Context, string) ([]libdns.Record, error) {
	return nil, errors.New("recordsOnly: GetRecords is not expected in zone tests")
}

func (recordsOnly) SetRecords(context.Context, string, []libdns.Record) ([]libdns.Record, error) {
	return nil, errors.New("recordsOnly: SetRecords is not expected in zone tests")
}

func (recordsOnly) DeleteRecords(context.Context, string, []libdns.Record) ([]libdns.Record, error) {
	return nil, errors.New("recordsOnly: DeleteRecords is not expected in zone tests")
}

// lister is a provider that lists zones, and counts how often it is asked.
type lister struct {
	recordsOnly
	zones []string
	err   error
	calls atomic.Int32
}

func (l *lister) ListZones(context.Context) ([]libdns.Zone, error) {
	l.calls.Add(1)
	if l.err != nil {
		return nil, l.err
	}
	out := make([]libdns.Zone, 0, len(l.zones))
	for _, z := range l.zones {
		out = append(out, libdns.Zone{Name: z})
	}
	return out, nil
}

// startResolver starts a memdns server for zones that stands in for a
// recursive resolver: it answers its zones authoritatively, which is all
// the SOA walk needs.
func startResolver(t *testing.T, zones ...string) *memdns.Server {
	t.Helper()
	srv, err := memdns.Start("127.0.0.1:0", zones...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func TestZoneForExplicit(t *testing.T) {
	tests := []struct {
		explicit, name, want, wantErr string
	}{
		{explicit: "Example.COM", name: "_x.sub.example.com", want: "example.com."},
		{explicit: "example.com.", name: "Example.com.", want: "example.com."},
		{explicit: "sub.example.com", name: "_x.example.com", wantErr: "_x.example.com is not in the configured zone sub.example.com."},
		{explicit: "ample.com", name: "_x.example.com", wantErr: "_x.example.com is not in the configured zone ample.com."},
		{explicit: "example.com", name: "_x.example.org", wantErr: "_x.example.org is not in the configured zone example.com."},
		{explicit: "example.com", name: "", wantErr: "not a domain name"},
	}
	for _, tt := range tests {
		t.Run(tt.explicit+"/"+tt.name, func(t *testing.T) {
			// The lister must not be asked: the configured zone wins.
			l := &lister{zones: []string{"sub.example.com."}}
			z := newZoneFinder(tt.explicit, l, []string{deadAddr(t)}, time.Second)
			got, err := z.zoneFor(context.Background(), tt.name)
			if checkZoneFor(t, got, err, tt.wantErr, tt.want) {
				return
			}
			if n := l.calls.Load(); n != 0 {
				t.Errorf("ListZones called %d times despite an explicit zone", n)
			}
		})
	}
}

func TestZoneForProviderZones(t *testing.T) {
	resolver := startResolver(t, "example.net")
	zones := []string{"Example.com", "sub.example.com.", "other.org.", "xample.net."}
	tests := []struct {
		name      string
		zones     []string
		listErr   error
		resolvers []string // nil: a dead address
		want      string
		wantErr   []string
	}{
		{name: "_x.sub.example.com", zones: zones, want: "sub.example.com."},
		{name: "_x.deep.sub.example.com", zones: zones, want: "sub.example.com."},
		{name: "_x.example.com", zones: zones, want: "example.com."},
		{name: "example.com", zones: zones, want: "example.com."},
		{name: "_x.example.net", zones: zones, wantErr: []string{"none of the provider's zones holds _x.example.net", "sub.example.com."}},
		{name: "_x.example.net", zones: nil, wantErr: []string{"zones: none"}},
		// A provider that cannot list zones falls back to DNS.
		{name: "_x.example.net", listErr: errors.New("403 forbidden"), resolvers: []string{resolver.Addr()}, want: "example.net."},
		{name: "_x.example.org", listErr: errors.New("403 forbidden"),
			wantErr: []string{"could not list its zones (403 forbidden)", "SOA lookup: SOA _x.example.org"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v", tt.name, tt.listErr), func(t *testing.T) {
			resolvers := tt.resolvers
			if resolvers == nil {
				resolvers = []string{deadAddr(t)}
			}
			l := &lister{zones: tt.zones, err: tt.listErr}
			z := newZoneFinder("", l, resolvers, 2*time.Second)
			got, err := z.zoneFor(context.Background(), tt.name)
			if checkWantErr(t, err, tt.wantErr, "zoneFor = %q, want an error", got) {
				return
			}
			if got != tt.want {
				t.Fatalf("zoneFor = %q, want %q", got, tt.want)
			}
		})
	}
}

// checkZoneFor checks zoneFor's result: with wantErr, an error containing
// it, and it reports true (there is no zone to check); without, want.
func checkZoneFor(t *testing.T, got string, err error, wantErr, want string) bool {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("zoneFor = %q, %v; want error %q", got, err, wantErr)
		}
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("zoneFor = %q, want %q", got, want)
	}
	return false
}

// checkWantErr checks a call's error against wantErr. With wantErr, err
// must contain each of its strings (a nil err fails the test with noErr and
// its args), and it reports true: there is no result to check. Without, err
// must be nil.
func checkWantErr(t *testing.T, err error, wantErr []string, noErr string, args ...any) bool {
	t.Helper()
	if len(wantErr) > 0 {
		if err == nil {
			t.Fatalf(noErr, args...)
		}
		for _, s := range wantErr {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not contain %q", err, s)
			}
		}
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}

func TestZoneForListsZonesOnce(t *testing.T) {
	l := &lister{zones: []string{"example.com.", "example.org."}}
	z := newZoneFinder("", l, nil, time.Second)
	for _, name := range []string{"_a.example.com", "_b.example.com", "_a.example.org", "_a.example.com"} {
		if _, err := z.zoneFor(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.calls.Load(); n != 1 {
		t.Fatalf("ListZones called %d times, want once", n)
	}
}

func TestZoneForSOAWalk(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		zones   []string
		setup   func(t *testing.T, srv *memdns.Server)
		lookup  string
		want    string
		wantErr []string
	}{
		{name: "nxdomain below the zone", zones: []string{"example.com"}, lookup: "_x.sub.example.com", want: "example.com."},
		{name: "delegated zone", zones: []string{"example.com", "sub.example.com"}, lookup: "_x.sub.example.com", want: "sub.example.com."},
		{name: "apex", zones: []string{"example.com"}, lookup: "Example.COM.", want: "example.com."},
		{name: "nodata", zones: []string{"example.com"}, lookup: "www.example.com", want: "example.com.",
			setup: func(t *testing.T, srv *memdns.Server) {
				add(t, srv, "example.com.", libdns.Address{Name: "www", IP: netip.MustParseAddr("127.0.0.1")})
			}},
		{name: "alias", zones: []string{"example.com", "other.org"}, lookup: "_c.example.com", want: "example.com.",
			setup: func(t *testing.T, srv *memdns.Server) {
				// The alias's target is elsewhere: its zone must not be taken.
				add(t, srv, "example.com.", libdns.CNAME{Name: "_c", Target: "x.other.org."})
			}},
		{name: "public suffix zone is not used", zones: []string{"com"}, lookup: "_x.example.com",
			wantErr: []string{"no zone found for _x.example.com", "up to example.com", "resolvers asked: RESOLVER"}},
		{name: "nothing served", zones: []string{"other.org"}, lookup: "_x.example.com",
			wantErr: []string{"SOA lookup: SOA _x.example.com: RESOLVER answered REFUSED"}},
		{name: "not a name", zones: []string{"example.com"}, lookup: "a..b", wantErr: []string{`"a..b" is not a domain name`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startResolver(t, tt.zones...)
			if tt.setup != nil {
				tt.setup(t, srv)
			}
			z := newZoneFinder("", recordsOnly{}, []string{srv.Addr()}, 5*time.Second)
			got, err := z.zoneFor(ctx, tt.lookup)
			wantErr := slices.Clone(tt.wantErr)
			for i := range wantErr {
				wantErr[i] = strings.ReplaceAll(wantErr[i], "RESOLVER", srv.Addr())
			}
			if checkWantErr(t, err, wantErr, "zoneFor = %q, want an error", got) {
				return
			}
			if got != tt.want {
				t.Fatalf("zoneFor = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestZoneForSOAWalkScripted answers as a recursive resolver would, which
// memdns cannot: negative answers without an SOA, and aliases whose
// target's zone is a parent of the name.
func TestZoneForSOAWalkScripted(t *testing.T) {
	soa := func(zone string) dns.RR {
		rr, err := dns.NewRR(zone + " 60 IN SOA ns1." + zone + " hostmaster." + zone + " 1 3600 600 86400 60")
		if err != nil {
			t.Fatal(err)
		}
		return rr
	}
	cname := func(name, target string) dns.RR {
		rr, err := dns.NewRR(name + " 60 IN CNAME " + target)
		if err != nil {
			t.Fatal(err)
		}
		return rr
	}
	type reply struct {
		rcode      int
		answer, ns []dns.RR
	}
	tests := []struct {
		name    string
		lookup  string
		script  map[string]reply // by question name; others: REFUSED
		want    string
		wantErr string
	}{
		{name: "negative answers without SOA walk up", lookup: "_x.a.example.com",
			script: map[string]reply{
				"_x.a.example.com.": {rcode: dns.RcodeNameError},
				"a.example.com.":    {rcode: dns.RcodeNameError},
				"example.com.":      {answer: []dns.RR{soa("example.com.")}},
			},
			want: "example.com."},
		{name: "alias into the parent zone", lookup: "_c.sub.example.com",
			script: map[string]reply{
				// The resolver followed the alias to example.com, where the
				// target does not exist: that SOA is not the name's zone.
				"_c.sub.example.com.": {rcode: dns.RcodeNameError, answer: []dns.RR{cname("_c.sub.example.com.", "gone.example.com.")}, ns: []dns.RR{soa("example.com.")}},
				"sub.example.com.":    {answer: []dns.RR{soa("sub.example.com.")}},
			},
			want: "sub.example.com."},
		{name: "SOA of another name in the answer", lookup: "_x.example.com",
			script: map[string]reply{
				"_x.example.com.": {answer: []dns.RR{soa("evil.example.")}},
				"example.com.":    {rcode: dns.RcodeNameError, ns: []dns.RR{soa("evil.example.")}},
			},
			wantErr: "no zone found for _x.example.com"},
		{name: "SERVFAIL stops the walk", lookup: "_x.sub.example.com",
			script: map[string]reply{
				"_x.sub.example.com.": {rcode: dns.RcodeServerFailure},
				"sub.example.com.":    {answer: []dns.RR{soa("sub.example.com.")}},
				"example.com.":        {answer: []dns.RR{soa("example.com.")}},
			},
			wantErr: "answered SERVFAIL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var notRecursive atomic.Int32
			addr, err := serveDNS(t, "127.0.0.1:0", dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
				m := new(dns.Msg)
				m.SetReply(req)
				m.RecursionAvailable = true
				if !req.RecursionDesired {
					notRecursive.Add(1)
				}
				if r, ok := tt.script[strings.ToLower(req.Question[0].Name)]; ok && req.Question[0].Qtype == dns.TypeSOA {
					m.Rcode, m.Answer, m.Ns = r.rcode, r.answer, r.ns
				} else {
					m.Rcode = dns.RcodeRefused
				}
				w.WriteMsg(m)
			}))
			if err != nil {
				t.Fatal(err)
			}
			z := newZoneFinder("", recordsOnly{}, []string{addr}, 5*time.Second)
			got, err := z.zoneFor(context.Background(), tt.lookup)
			if n := notRecursive.Load(); n > 0 {
				t.Errorf("%d resolver queries without RD", n)
			}
			checkZoneFor(t, got, err, tt.wantErr, tt.want)
		})
	}
}

func TestZoneForCaches(t *testing.T) {
	srv := startResolver(t, "example.com")
	z := newZoneFinder("", recordsOnly{}, []string{srv.Addr()}, 2*time.Second)
	ctx := context.Background()
	if got, err := z.zoneFor(ctx, "_x.example.com"); err != nil || got != "example.com." {
		t.Fatalf("zoneFor = %q, %v", got, err)
	}
	srv.Close()
	// With the resolver gone, only the cache can answer.
	if got, err := z.zoneFor(ctx, "_X.example.com."); err != nil || got != "example.com." {
		t.Fatalf("cached zoneFor = %q, %v; want example.com. from the cache", got, err)
	}
	if got, err := z.zoneFor(ctx, "_y.example.com"); err == nil {
		t.Fatalf("zoneFor of an uncached name with the resolver gone = %q, want an error", got)
	}
}

func TestZoneForConcurrent(t *testing.T) {
	srv := startResolver(t, "example.com", "sub.example.com")
	z := newZoneFinder("", recordsOnly{}, []string{srv.Addr()}, 5*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name, want := fmt.Sprintf("_%d.example.com", i%4), "example.com."
			if i%2 == 1 {
				name, want = fmt.Sprintf("_%d.sub.example.com", i%4), "sub.example.com."
			}
			got, err := z.zoneFor(context.Background(), name)
			if err == nil && got != want {
				err = fmt.Errorf("zoneFor(%s) = %q, want %q", name, got, want)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestZoneForHonoursContext(t *testing.T) {
	srv := startResolver(t, "example.com")
	z := newZoneFinder("", recordsOnly{}, []string{srv.Addr()}, 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := z.zoneFor(ctx, "_x.example.com"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want one wrapping context.Canceled", err)
	}
}

func add(t *testing.T, srv *memdns.Server, zone string, recs ...libdns.Record) {
	t.Helper()
	if _, err := srv.AppendRecords(context.Background(), zone, recs); err != nil {
		t.Fatal(err)
	}
}

// TestZoneForListMaybeCut: a list of zoneListPage zones or more may be the
// first page of a longer one, so DNS is asked whether a zone below the
// listed one holds the name; a shorter list is complete and trusted.
func TestZoneForListMaybeCut(t *testing.T) {
	resolver := startResolver(t, "example.com", "sub.example.com", "example.org")
	page := []string{"example.com.", "example.org."}
	for i := len(page); i < zoneListPage; i++ {
		page = append(page, fmt.Sprintf("filler%02d.net.", i))
	}
	tests := []struct {
		desc      string
		zones     []string
		resolvers []string // nil: a dead address
		name      string
		want      string
	}{
		{"full page, DNS knows a child zone", page, []string{resolver.Addr()}, "_x.www.sub.example.com", "sub.example.com."},
		{"full page, DNS agrees", page, []string{resolver.Addr()}, "_x.www.example.org", "example.org."},
		{"full page, DNS unreachable", page, nil, "_x.www.sub.example.com", "example.com."},
		{"short list is complete", page[:5], []string{resolver.Addr()}, "_x.www.sub.example.com", "example.com."},
		{"full page lists the child", append(slices.Clone(page), "sub.example.com."), nil, "_x.sub.example.com", "sub.example.com."},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			resolvers := tt.resolvers
			if resolvers == nil {
				resolvers = []string{deadAddr(t)}
			}
			z := newZoneFinder("", &lister{zones: tt.zones}, resolvers, 2*time.Second)
			got, err := z.zoneFor(context.Background(), tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("zoneFor(%s) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}
