package memdns

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

func TestServerServesWhatIsPublished(t *testing.T) {
	srv, err := Start("127.0.0.1:0", "example.com")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx := context.Background()

	if _, err := srv.SetRecords(ctx, "example.com.", []libdns.Record{
		libdns.CNAME{Name: "_abc", Target: "x.y.sectigo.com."},
		libdns.TXT{Name: "note", Text: `say "hi"`},
	}); err != nil {
		t.Fatal(err)
	}
	// SetRecords replaces the RRset at (name, type).
	if _, err := srv.SetRecords(ctx, "example.com.", []libdns.Record{
		libdns.CNAME{Name: "_ABC", Target: "z.sectigo.com."},
	}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		qtype uint16
		net   string
		rcode int
		want  string // substring of the first answer, "" for none
	}{
		{"_abc.example.com.", dns.TypeCNAME, "udp", dns.RcodeSuccess, "z.sectigo.com."},
		{"_ABC.Example.com.", dns.TypeCNAME, "tcp", dns.RcodeSuccess, "z.sectigo.com."},
		{"_abc.example.com.", dns.TypeA, "udp", dns.RcodeSuccess, "z.sectigo.com."}, // CNAME answers other types
		{"note.example.com.", dns.TypeTXT, "udp", dns.RcodeSuccess, `"say \"hi\""`},
		{"note.example.com.", dns.TypeCNAME, "udp", dns.RcodeSuccess, ""}, // NODATA
		{"missing.example.com.", dns.TypeCNAME, "udp", dns.RcodeNameError, ""},
		{"example.com.", dns.TypeSOA, "udp", dns.RcodeSuccess, "ns1.example.com."},
		{"example.com.", dns.TypeNS, "udp", dns.RcodeSuccess, "ns1.example.com."},
		{"other.org.", dns.TypeA, "udp", dns.RcodeRefused, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s/%s", tt.name, dns.TypeToString[tt.qtype], tt.net), func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(tt.name, tt.qtype)
			c := &dns.Client{Net: tt.net}
			r, _, err := c.Exchange(m, srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tt.rcode {
				t.Fatalf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
			}
			if tt.want == "" {
				if len(r.Answer) != 0 {
					t.Fatalf("unexpected answer %v", r.Answer)
				}
				return
			}
			if len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), tt.want) {
				t.Fatalf("answer = %v, want one containing %q", r.Answer, tt.want)
			}
		})
	}

	// DeleteRecords removes exact matches only.
	if _, err := srv.DeleteRecords(ctx, "example.com.", []libdns.Record{libdns.CNAME{Name: "_abc", Target: "other.sectigo.com."}}); err != nil {
		t.Fatal(err)
	}
	if got := countType(t, srv, "CNAME"); got != 1 {
		t.Fatalf("a delete with other data removed the record: %d CNAMEs left", got)
	}
	if _, err := srv.DeleteRecords(ctx, "example.com.", []libdns.Record{libdns.CNAME{Name: "_abc", Target: "z.sectigo.com"}}); err != nil {
		t.Fatal(err)
	}
	if got := countType(t, srv, "CNAME"); got != 0 {
		t.Fatalf("exact delete left %d CNAMEs", got)
	}
	if _, err := srv.SetRecords(ctx, "other.org.", []libdns.Record{libdns.CNAME{Name: "x", Target: "y."}}); err == nil {
		t.Fatal("a write to a zone not served succeeded")
	}
}

func TestServerTruncatesLargeUDPAnswers(t *testing.T) {
	srv, err := Start("127.0.0.1:0", "example.com")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var recs []libdns.Record
	for i := range 40 {
		recs = append(recs, libdns.TXT{Name: "big", Text: strings.Repeat("x", 60) + fmt.Sprint(i)})
	}
	if _, err := srv.AppendRecords(context.Background(), "example.com", recs); err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetQuestion("big.example.com.", dns.TypeTXT)
	r, _, err := (&dns.Client{Net: "udp"}).Exchange(m, srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated {
		t.Fatalf("a %d-answer UDP reply was not truncated", len(r.Answer))
	}
	r, _, err = (&dns.Client{Net: "tcp"}).Exchange(m, srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 40 {
		t.Fatalf("tcp answer has %d records, want 40", len(r.Answer))
	}
}

func countType(t *testing.T, srv *Server, typ string) int {
	t.Helper()
	recs, err := srv.GetRecords(context.Background(), "example.com.")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range recs {
		if r.RR().Type == typ {
			n++
		}
	}
	return n
}
