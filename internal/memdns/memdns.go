// Package memdns is a small authoritative DNS server that keeps its zones in
// memory and is also a libdns provider, for the demo, tests and benchmarks:
// records published through libdns are answered over UDP and TCP at once.
package memdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// Server is a small authoritative DNS server that keeps its zones in
// memory. The demo and tests point the sandbox's DCV checks at it, and
// publish records into it through the libdns interfaces, exactly as dcvd
// publishes through a real provider; queries over UDP and TCP then see what
// was published. It is not a general DNS server: no recursion, no DNSSEC,
// no delegation below its zones.
//
// A Server is safe for concurrent use.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu    sync.Mutex
	zones map[string][]libdns.RR // zone FQDN (lower case, trailing dot) → records with zone-relative names
}

// Compile-time checks that Server is a libdns provider.
var (
	_ libdns.RecordGetter   = (*Server)(nil)
	_ libdns.RecordAppender = (*Server)(nil)
	_ libdns.RecordSetter   = (*Server)(nil)
	_ libdns.RecordDeleter  = (*Server)(nil)
	_ libdns.ZoneLister     = (*Server)(nil)
)

// Start listens on addr ("127.0.0.1:0" picks a free port) for UDP
// and TCP on the same port and serves the given zones, each starting with
// an SOA and an NS record at its apex.
func Start(addr string, zones ...string) (*Server, error) {
	s := &Server{zones: make(map[string][]libdns.RR)}
	for _, z := range zones {
		s.AddZone(z)
	}
	// Bind TCP first and reuse its port for UDP, retrying if that UDP port
	// happens to be taken.
	var lastErr error
	for range 10 {
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("memdns: listen tcp %s: %w", addr, err)
		}
		pc, err := net.ListenPacket("udp", tl.Addr().String())
		if err != nil {
			tl.Close()
			lastErr = err
			continue
		}
		s.addr = tl.Addr().String()
		h := dns.HandlerFunc(s.serveDNS)
		s.tcp = &dns.Server{Listener: tl, Handler: h}
		s.udp = &dns.Server{PacketConn: pc, Handler: h}
		started := make(chan struct{}, 2)
		s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
		s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
		go s.tcp.ActivateAndServe()
		go s.udp.ActivateAndServe()
		<-started
		<-started
		return s, nil
	}
	return nil, fmt.Errorf("memdns: listen udp beside tcp: %w", lastErr)
}

// Addr is the "host:port" the server answers on (UDP and TCP).
func (s *Server) Addr() string { return s.addr }

// Close stops the server.
func (s *Server) Close() error {
	return errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
}

// AddZone makes the server authoritative for zone (idempotent).
func (s *Server) AddZone(zone string) {
	zone = canonicalZone(zone)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.zones[zone]; ok {
		return
	}
	s.zones[zone] = []libdns.RR{
		{Name: "@", TTL: time.Hour, Type: "SOA", Data: "ns1." + zone + " hostmaster." + zone + " 1 3600 600 86400 60"},
		{Name: "@", TTL: time.Hour, Type: "NS", Data: "ns1." + zone},
	}
}

// ListZones lists the zones served.
func (s *Server) ListZones(ctx context.Context) ([]libdns.Zone, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]libdns.Zone, 0, len(s.zones))
	for z := range s.zones {
		out = append(out, libdns.Zone{Name: z})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// GetRecords returns every record of zone.
func (s *Server) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rrs, ok := s.zones[canonicalZone(zone)]
	if !ok {
		return nil, fmt.Errorf("memdns: zone %q is not served here", zone)
	}
	return toRecords(rrs), nil
}

// AppendRecords adds records to zone.
func (s *Server) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return s.change(zone, recs, func(rrs []libdns.RR, in []libdns.RR) []libdns.RR {
		for _, r := range in {
			if !containsRR(rrs, r) {
				rrs = append(rrs, r)
			}
		}
		return rrs
	})
}

// SetRecords makes the given records the whole RRset at each (name, type)
// they name, as libdns specifies.
func (s *Server) SetRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return s.change(zone, recs, func(rrs []libdns.RR, in []libdns.RR) []libdns.RR {
		kept := rrs[:0:0]
		for _, old := range rrs {
			replaced := false
			for _, r := range in {
				if strings.EqualFold(old.Name, r.Name) && old.Type == r.Type {
					replaced = true
					break
				}
			}
			if !replaced {
				kept = append(kept, old)
			}
		}
		return append(kept, in...)
	})
}

// DeleteRecords deletes exact matches; an empty TTL, Type or Data in the
// input matches any value, as libdns specifies.
func (s *Server) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	var deleted []libdns.RR
	_, err := s.change(zone, recs, func(rrs []libdns.RR, in []libdns.RR) []libdns.RR {
		kept := rrs[:0:0]
		for _, old := range rrs {
			match := false
			for _, r := range in {
				if strings.EqualFold(old.Name, r.Name) &&
					(r.Type == "" || r.Type == old.Type) &&
					(r.TTL == 0 || r.TTL == old.TTL) &&
					(r.Data == "" || strings.EqualFold(dns.Fqdn(r.Data), dns.Fqdn(old.Data)) || r.Data == old.Data) {
					match = true
					break
				}
			}
			if match {
				deleted = append(deleted, old)
			} else {
				kept = append(kept, old)
			}
		}
		return kept
	})
	return toRecords(deleted), err
}

func (s *Server) change(zone string, recs []libdns.Record, apply func(rrs, in []libdns.RR) []libdns.RR) ([]libdns.Record, error) {
	in := make([]libdns.RR, 0, len(recs))
	for _, r := range recs {
		rr := r.RR()
		if rr.Name == "" {
			return nil, fmt.Errorf("memdns: record without a name")
		}
		rr.Name = strings.ToLower(rr.Name)
		in = append(in, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	z := canonicalZone(zone)
	rrs, ok := s.zones[z]
	if !ok {
		return nil, fmt.Errorf("memdns: zone %q is not served here", zone)
	}
	s.zones[z] = apply(rrs, in)
	return toRecords(in), nil
}

func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)

	s.mu.Lock()
	zone, rrs := s.findZone(name)
	var answer, soa []dns.RR
	nameExists := false
	for _, r := range rrs {
		owner := strings.ToLower(libdns.AbsoluteName(r.Name, zone))
		if r.Type == "SOA" && r.Name == "@" {
			soa = append(soa, toDNS(zone, r)...)
		}
		if owner != name {
			continue
		}
		nameExists = true
		if r.Type == dns.TypeToString[q.Qtype] || r.Type == "CNAME" || q.Qtype == dns.TypeANY {
			answer = append(answer, toDNS(zone, r)...)
		}
	}
	s.mu.Unlock()

	switch {
	case zone == "":
		m.Authoritative = false
		m.Rcode = dns.RcodeRefused
	case len(answer) > 0:
		m.Answer = answer
	case !nameExists:
		m.Rcode = dns.RcodeNameError
		m.Ns = soa
	default:
		m.Ns = soa
	}
	if w.LocalAddr().Network() == "udp" {
		m.Truncate(udpSize(req))
	}
	w.WriteMsg(m)
}

// findZone returns the longest zone that contains name. The caller holds mu.
func (s *Server) findZone(name string) (string, []libdns.RR) {
	best := ""
	for z := range s.zones {
		if dns.IsSubDomain(z, name) && len(z) > len(best) {
			best = z
		}
	}
	return best, s.zones[best]
}

func udpSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		return int(opt.UDPSize())
	}
	return dns.MinMsgSize
}

func toDNS(zone string, r libdns.RR) []dns.RR {
	owner := libdns.AbsoluteName(r.Name, zone)
	data := r.Data
	if r.Type == "TXT" {
		data = `"` + strings.ReplaceAll(strings.ReplaceAll(data, `\`, `\\`), `"`, `\"`) + `"`
	}
	rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", dns.Fqdn(owner), int(r.TTL.Seconds()), r.Type, data))
	if err != nil || rr == nil {
		return nil
	}
	return []dns.RR{rr}
}

func toRecords(rrs []libdns.RR) []libdns.Record {
	out := make([]libdns.Record, 0, len(rrs))
	for _, r := range rrs {
		if rec, err := r.Parse(); err == nil {
			out = append(out, rec)
		} else {
			out = append(out, r)
		}
	}
	return out
}

func containsRR(rrs []libdns.RR, r libdns.RR) bool {
	for _, o := range rrs {
		if strings.EqualFold(o.Name, r.Name) && o.Type == r.Type && o.Data == r.Data {
			return true
		}
	}
	return false
}

func canonicalZone(zone string) string {
	return strings.ToLower(dns.Fqdn(zone))
}
