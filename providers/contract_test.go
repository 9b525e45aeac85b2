package providers_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"

	"github.com/dcvd/dcvd/providers"
)

// The provider contract: one set of cases that every request-checking fake
// runs, through contractFake. Adding a fake for another provider is one
// constructor of a contractAdapter (at the end of this file) and an entry
// in contractProviders; the fake's own test file keeps the
// request-by-request checks that are the provider's alone.
//
// Some fakes swap http.DefaultClient.Transport and route53's sets
// environment variables (both process-global), so no case runs in parallel.

// contractRR is one record of a fake zone, normalized across fakes: names
// are FQDNs without the trailing dot, CNAME targets without it, TXT values
// unquoted. ID is the API's record ID (with a version where the fake keeps
// one), so that a record deleted and made again, or rewritten, shows as a
// change; Route 53 has no record IDs.
type contractRR struct {
	Zone, Name, Type string
	TTL              int
	Value, ID        string
}

func (r contractRR) String() string {
	return fmt.Sprintf("%s %s %d %s %s id=%s", r.Zone, r.Name, r.TTL, r.Type, r.Value, r.ID)
}

// contractFake is what a fake provides to the contract cases.
type contractFake interface {
	// DNS builds a providers.DNS as a config section does, with the
	// fake's credentials and the given keys ("zone", "resolvers") added.
	// Each call is a fresh one, as after a restart.
	DNS(t *testing.T, extra map[string]any) *providers.DNS
	// Seed adds records to a zone of the fake, bypassing the API.
	Seed(zone string, rrs ...seedRR)
	// Snapshot is every record of every zone of the fake.
	Snapshot() []contractRR
	// Writes counts the write requests the fake has received so far.
	Writes() int
	// ZonePage makes the fake's zone list as short a page as it can and
	// returns its size.
	ZonePage() int
}

// contractProvider is one faked provider in the contract.
type contractProvider struct {
	name string // the section name, as in Record.Provider
	// newFake starts the fake with zones, each holding fakeUnrelated.
	newFake func(t *testing.T, zones ...string) contractFake
	// ttl is what the API keeps for dcvd's 60 s records.
	ttl int
	// batch: the API writes a zone's records in one request; else one
	// write request per record.
	batch bool
	// listIncomplete, when not "", says why the provider's zone list alone
	// cannot find a zone past its first page.
	listIncomplete string
}

var contractProviders = []contractProvider{
	{name: "cf", ttl: 60, newFake: newCfContract,
		listIncomplete: "libdns/cloudflare v0.2.2 ListZones reads the first page (20 zones) only; dcvd finds such a zone by an SOA lookup (the \"with DNS\" variant)"},
	{name: "r53", ttl: 60, newFake: newR53Contract},
	// alidns raises TTLs below 600 s to 600 s on the free edition.
	{name: "ali", ttl: 600, newFake: newAliContract},
	{name: "tc", ttl: 60, newFake: newTcContract},
	{name: "hw", ttl: 60, newFake: newHwContract},
}

func TestProviderContract(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, p contractProvider)
	}{
		{"publish", contractPublish},
		{"republish", contractRepublish},
		{"shared record", contractSharedRecord},
		{"cleanup after restart", contractCleanupAfterRestart},
		{"look-alike names", contractLookAlikes},
		{"look-alike names/DCV name holds other types", contractOtherTypes},
		{"500-record zone", contractBigZone},
		{"zone list past first page/zone configured", contractZoneConfigured},
		{"zone list past first page/with DNS", func(t *testing.T, p contractProvider) { contractZoneList(t, p, true) }},
		{"zone list past first page/list alone", func(t *testing.T, p contractProvider) { contractZoneList(t, p, false) }},
	}
	for _, p := range contractProviders {
		t.Run(p.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, p) })
			}
		})
	}
}

const contractZone = "example.com"

// wantContractZone checks that f's zones are still want after what
// ("a republish"), which should have changed nothing.
func wantContractZone(t *testing.T, f contractFake, want []string, what string) {
	t.Helper()
	if after := contractSnapshot(f); !slices.Equal(after, want) {
		t.Errorf("zone changed by %s:\n%s\nwant:\n%s", what, strings.Join(after, "\n"), strings.Join(want, "\n"))
	}
}

// contractSnapshot is f's snapshot as sorted lines.
func contractSnapshot(f contractFake) []string {
	var out []string
	for _, r := range f.Snapshot() {
		out = append(out, r.String())
	}
	sort.Strings(out)
	return out
}

// notDCV is snap without the CNAMEs at the names of recs.
func notDCV(snap []contractRR, recs []providers.Record) []string {
	var out []string
	for _, r := range snap {
		if r.Type == "CNAME" && slices.ContainsFunc(recs, func(rec providers.Record) bool { return rec.Name == r.Name }) {
			continue
		}
		out = append(out, r.String())
	}
	sort.Strings(out)
	return out
}

// checkPublished checks that the zones hold exactly what they held before
// and the CNAMEs of recs, each once, with their targets and the API's TTL.
func checkPublished(t *testing.T, p contractProvider, f contractFake, before []string, recs []providers.Record) {
	t.Helper()
	snap := f.Snapshot()
	if got := notDCV(snap, recs); !slices.Equal(got, before) {
		t.Errorf("records other than dcvd's changed:\n%s\nwant as before:\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	for _, r := range recs {
		var at []contractRR
		for _, s := range snap {
			if s.Name == r.Name && s.Type == "CNAME" {
				at = append(at, s)
			}
		}
		if len(at) != 1 || at[0].Value != r.Target || at[0].TTL != p.ttl || at[0].Zone != strings.TrimSuffix(r.Zone, ".") {
			t.Errorf("CNAMEs at %s: %v; want one, in zone %s, to %s, TTL %d", r.Name, at, r.Zone, r.Target, p.ttl)
		}
	}
}

// wantWrites is the number of write requests publishing (or removing) n
// records of one zone takes.
func (p contractProvider) wantWrites(n int) int {
	if p.batch && n > 0 {
		return 1
	}
	return n
}

// contractPublishOnce plans and publishes the DCV records of zone (apex,
// wildcard, www, shop) with d and checks the result; it returns the
// records as Publish left them (with IDs) and the snapshot before.
func contractPublishOnce(t *testing.T, p contractProvider, f contractFake, d *providers.DNS, zone string) ([]providers.Record, []string) {
	t.Helper()
	before := contractSnapshot(f)
	recs := planDCV(t, d, dcvInstructions(zone, "www", "shop"), wantRecords(p.name, time.Minute, zone, "www", "shop"))
	w0 := f.Writes()
	rep, err := d.Publish(context.Background(), recs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	checkReport(t, rep, recs, nil, 1)
	if n := f.Writes() - w0; n != p.wantWrites(len(recs)) {
		t.Errorf("Publish made %d write requests, want %d", n, p.wantWrites(len(recs)))
	}
	checkPublished(t, p, f, before, recs)
	return recs, before
}

func contractPublish(t *testing.T, p contractProvider) {
	f := p.newFake(t, contractZone)
	d := f.DNS(t, map[string]any{"zone": contractZone})
	contractPublishOnce(t, p, f, d, contractZone)
}

func contractRepublish(t *testing.T, p contractProvider) {
	f := p.newFake(t, contractZone)
	d := f.DNS(t, map[string]any{"zone": contractZone})
	recs, _ := contractPublishOnce(t, p, f, d, contractZone)
	published := contractSnapshot(f)
	for _, d := range []*providers.DNS{d, f.DNS(t, map[string]any{"zone": contractZone})} {
		w0 := f.Writes()
		rep, err := d.Publish(context.Background(), recs)
		if err != nil {
			t.Fatalf("republish: %v", err)
		}
		checkReport(t, rep, nil, recs, 0)
		if n := f.Writes() - w0; n != 0 {
			t.Errorf("republish made %d write requests, want none", n)
		}
		wantContractZone(t, f, published, "a republish")
	}
}

// contractSharedRecord: example.com and *.example.com need the same record;
// it is planned, written and listed once.
func contractSharedRecord(t *testing.T, p contractProvider) {
	f := p.newFake(t, contractZone)
	d := f.DNS(t, map[string]any{"zone": contractZone})
	in := dcvInstructions(contractZone) // the apex record, for example.com and *.example.com
	if len(in) != 2 || in[0] != in[1] {
		t.Fatalf("test setup: %v is not one record asked twice", in)
	}
	before := contractSnapshot(f)
	recs := planDCV(t, d, in, wantRecords(p.name, time.Minute, contractZone))
	if len(recs) != 1 {
		t.Fatalf("Plan made %d records of one shared record", len(recs))
	}
	w0 := f.Writes()
	rep, err := d.Publish(context.Background(), recs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	checkReport(t, rep, recs, nil, 1)
	if n := f.Writes() - w0; n != p.wantWrites(1) {
		t.Errorf("Publish of one shared record made %d write requests, want %d", n, p.wantWrites(1))
	}
	checkPublished(t, p, f, before, recs)
}

func contractCleanupAfterRestart(t *testing.T, p contractProvider) {
	f := p.newFake(t, contractZone)
	recs, before := contractPublishOnce(t, p, f, f.DNS(t, map[string]any{"zone": contractZone}), contractZone)
	contractCleanup(t, p, f, f.DNS(t, map[string]any{"zone": contractZone}), recs, before)
}

// contractCleanup removes recs with d (not the DNS that published them)
// and checks that the zones are as before, and that a second Cleanup
// writes nothing.
func contractCleanup(t *testing.T, p contractProvider, f contractFake, d *providers.DNS, recs []providers.Record, before []string) {
	t.Helper()
	w0 := f.Writes()
	if err := d.Cleanup(context.Background(), recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if n := f.Writes() - w0; n != p.wantWrites(len(recs)) {
		t.Errorf("Cleanup made %d write requests, want %d", n, p.wantWrites(len(recs)))
	}
	if after := contractSnapshot(f); !slices.Equal(after, before) {
		t.Errorf("zones after Cleanup:\n%s\nwant as before Publish:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
	}
	w0 = f.Writes()
	if err := d.Cleanup(context.Background(), recs); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	if n := f.Writes() - w0; n != 0 {
		t.Errorf("second Cleanup made %d write requests, want none", n)
	}
}

// contractLookAlikes seeds records that a search by substring, by value or
// by type, or a mix-up of zones, would take for dcvd's: the same names in
// zone.cn (another zone whose name extends this one), x_ names holding
// the same targets, _c0ffee names dcvd does not publish, and other types at
// look-alike names. The zone is not configured: the zone of each name is
// found as without a zone key (the provider's list, else DNS), so that
// example.com.cn is a candidate.
func contractLookAlikes(t *testing.T, p contractProvider) {
	cn := contractZone + ".cn"
	f := p.newFake(t, contractZone, cn)
	apex := dcvLabel + "." + contractZone
	www := dcvLabel + ".www." + contractZone
	f.Seed(cn,
		seedRR{Name: apex + ".cn", Type: "CNAME", TTL: 600, Value: dcvTarget(apex)},
		seedRR{Name: www + ".cn", Type: "CNAME", TTL: 600, Value: dcvTarget(www)},
		seedRR{Name: dcvLabel + ".shop." + cn, Type: "TXT", TTL: 600, Value: "shop-cn-token"},
		seedRR{Name: dcvLabel + ".mail." + cn, Type: "A", TTL: 600, Value: "192.0.2.41"},
	)
	f.Seed(contractZone,
		seedRR{Name: "x" + apex, Type: "CNAME", TTL: 600, Value: dcvTarget(apex)},
		seedRR{Name: "x" + www, Type: "TXT", TTL: 600, Value: dcvTarget(www)},
		seedRR{Name: "x" + dcvLabel + ".shop." + contractZone, Type: "A", TTL: 600, Value: "192.0.2.42"},
		seedRR{Name: dcvLabel + ".wwwx." + contractZone, Type: "CNAME", TTL: 600, Value: dcvTarget(www)},
		seedRR{Name: dcvLabel + ".mail." + contractZone, Type: "TXT", TTL: 600, Value: dcvTarget(apex)},
		seedRR{Name: dcvLabel + ".ftp." + contractZone, Type: "A", TTL: 600, Value: "192.0.2.53"},
	)
	resolvers := []any{zoneResolver(t, contractZone, cn)}
	recs, before := contractPublishOnce(t, p, f, f.DNS(t, map[string]any{"resolvers": resolvers}), contractZone)
	contractCleanup(t, p, f, f.DNS(t, map[string]any{"resolvers": resolvers}), recs, before)
}

// contractOtherTypes: where a DCV name already holds a TXT or an A record,
// Publish refuses (a CNAME write could delete them) and writes nothing.
func contractOtherTypes(t *testing.T, p contractProvider) {
	for _, typ := range []seedRR{
		{Type: "TXT", TTL: 600, Value: "someone-elses-token"},
		{Type: "A", TTL: 600, Value: "192.0.2.60"},
	} {
		t.Run(typ.Type, func(t *testing.T) {
			f := p.newFake(t, contractZone)
			typ.Name = dcvLabel + ".www." + contractZone
			f.Seed(contractZone, typ)
			before := contractSnapshot(f)
			d := f.DNS(t, map[string]any{"zone": contractZone})
			recs := planDCV(t, d, dcvInstructions(contractZone, "www", "shop"), wantRecords(p.name, time.Minute, contractZone, "www", "shop"))
			w0 := f.Writes()
			if _, err := d.Publish(context.Background(), recs); err == nil || !strings.Contains(err.Error(), "already has a "+typ.Type+" record") {
				t.Errorf("Publish over a %s at %s: error %v, want a refusal", typ.Type, typ.Name, err)
			}
			if n := f.Writes() - w0; n != 0 {
				t.Errorf("refused Publish made %d write requests", n)
			}
			wantContractZone(t, f, before, "a refused Publish")
		})
	}
}

// contractBigZone: dcvd's records among 500 others (hosts, and CNAMEs to
// dcvd's targets at other names), then 30 more added after Publish: a
// republish and a Cleanup after a restart find exactly dcvd's records,
// past any first page of the zone.
func contractBigZone(t *testing.T, p contractProvider) {
	f := p.newFake(t, contractZone)
	var seed []seedRR
	for i := range 500 - len(f.Snapshot()) {
		if i%25 == 0 {
			name := fmt.Sprintf("%s.h%03d.%s", dcvLabel, i, contractZone)
			seed = append(seed, seedRR{Name: name, Type: "CNAME", TTL: 600, Value: dcvTarget(dcvLabel + "." + contractZone)})
			continue
		}
		seed = append(seed, seedRR{Name: fmt.Sprintf("h%03d.%s", i, contractZone), Type: "A", TTL: 600, Value: fmt.Sprintf("198.51.100.%d", i%250+1)})
	}
	f.Seed(contractZone, seed...)
	if n := len(f.Snapshot()); n < 500 {
		t.Fatalf("test setup: zone holds %d records, want 500", n)
	}
	recs, _ := contractPublishOnce(t, p, f, f.DNS(t, map[string]any{"zone": contractZone}), contractZone)
	// While the validation is pending the zone's owner adds 30 records,
	// so that dcvd's are no longer the newest.
	seed = nil
	for i := range 30 {
		seed = append(seed, seedRR{Name: fmt.Sprintf("new%02d.%s", i, contractZone), Type: "A", TTL: 600, Value: fmt.Sprintf("203.0.113.%d", i+1)})
	}
	f.Seed(contractZone, seed...)
	// What Cleanup must leave: everything but dcvd's records, untouched.
	before := notDCV(f.Snapshot(), recs)
	if n := len(before); n < 530 {
		t.Fatalf("test setup: %d records besides dcvd's, want 530", n)
	}
	// A retry after a restart finds every record.
	w0 := f.Writes()
	rep, err := f.DNS(t, map[string]any{"zone": contractZone}).Publish(context.Background(), recs)
	if err != nil {
		t.Fatalf("republish: %v", err)
	}
	checkReport(t, rep, nil, recs, 0)
	if n := f.Writes() - w0; n != 0 {
		t.Errorf("republish in a 500-record zone made %d write requests, want none", n)
	}
	contractCleanup(t, p, f, f.DNS(t, map[string]any{"zone": contractZone}), recs, before)
}

// contractZoneList: the target zone is on the last page of the provider's
// zone list, no zone is configured. withDNS, the resolvers serve every zone
// (as DNS does); else they serve none, so the provider's list alone must
// find the zone.
func contractZoneList(t *testing.T, p contractProvider, withDNS bool) {
	probe := p.newFake(t)
	if _, ok := probe.DNS(t, nil).Provider.(interface {
		ListZones(context.Context) ([]libdns.Zone, error)
	}); !ok {
		t.Skipf("%s's provider does not list zones: dcvd finds zones by SOA lookup only, there is no list to page", p.name)
	}
	if !withDNS && p.listIncomplete != "" {
		t.Skip(p.listIncomplete)
	}
	f, zones, target := contractManyZones(t, p)
	resolvers := []any{zoneResolver(t)}
	if withDNS {
		resolvers = []any{zoneResolver(t, zones...)}
	}
	recs, before := contractPublishOnce(t, p, f, f.DNS(t, map[string]any{"resolvers": resolvers}), target)
	contractCleanup(t, p, f, f.DNS(t, map[string]any{"resolvers": resolvers}), recs, before)
}

// contractManyZones starts a fake holding more than three pages of zones,
// the target last.
func contractManyZones(t *testing.T, p contractProvider) (contractFake, []string, string) {
	size := p.newFake(t).ZonePage()
	var zones []string
	for i := range 3*size + 1 {
		zones = append(zones, fmt.Sprintf("customer%03d.com", i))
	}
	f := p.newFake(t, zones...)
	if got := f.ZonePage(); got != size {
		t.Fatalf("test setup: zone page %d, then %d", size, got)
	}
	return f, zones, zones[len(zones)-1]
}

// contractZoneConfigured: with the zone configured, a provider that turns
// the zone's name into an ID (Cloudflare, Route 53, Huawei Cloud) finds it
// on an account whose zones fill more than three pages.
func contractZoneConfigured(t *testing.T, p contractProvider) {
	f, _, target := contractManyZones(t, p)
	recs, before := contractPublishOnce(t, p, f, f.DNS(t, map[string]any{"zone": target}), target)
	contractCleanup(t, p, f, f.DNS(t, map[string]any{"zone": target}), recs, before)
}

// contractName is name (relative to zone, "@" for the apex) as an FQDN.
func contractName(rel, zone string) string {
	if rel == "@" || rel == "" {
		return zone
	}
	return rel + "." + zone
}

// contractValue normalizes a record's value as the API shows it.
func contractValue(typ, v string) string {
	if typ == "TXT" {
		return strings.Trim(v, `"`)
	}
	return strings.TrimSuffix(v, ".")
}

// withDot is a seeded value as an API that shows CNAME targets absolute
// keeps it.
func withDot(s seedRR) seedRR {
	if s.Type == "CNAME" && !strings.HasSuffix(s.Value, ".") {
		s.Value += "."
	}
	return s
}

// contractAdapter is a fake as the contract cases see it. Each fake's
// constructor below fills in what is its own.
type contractAdapter struct {
	core    *fakeServer
	name    string // the section name
	section func(t *testing.T, extra map[string]any) map[string]any
	client  func() *http.Client // for providers.Options; nil for none
	isWrite func(apiRequest) bool
	// seeder returns what adds a record to the zone named name (without
	// its trailing dot), or nil when the fake has no such zone. It and
	// records run under the fake's lock.
	seeder  func(name string) func(seedRR)
	records func() []contractRR
	// zonePage makes the fake's zone list as short a page as it can.
	zonePage func() int
	writes   int
}

func (c *contractAdapter) DNS(t *testing.T, extra map[string]any) *providers.DNS {
	var opts providers.Options
	if c.client != nil {
		opts.HTTPClient = c.client()
	}
	return newDNS(t, c.name, c.section(t, extra), opts)
}

func (c *contractAdapter) Seed(zone string, rrs ...seedRR) {
	c.core.mu.Lock()
	defer c.core.mu.Unlock()
	add := c.seeder(zone)
	if add == nil {
		c.core.t.Fatalf("%s has no zone %s", c.core.name, zone)
	}
	for _, s := range rrs {
		add(s)
	}
}

func (c *contractAdapter) Snapshot() []contractRR {
	c.core.mu.Lock()
	defer c.core.mu.Unlock()
	return c.records()
}

func (c *contractAdapter) Writes() int {
	c.writes += len(filterRequests(c.core.log.take(), c.isWrite))
	return c.writes
}

func (c *contractAdapter) ZonePage() int { return c.zonePage() }

// pageOf is a zonePage of a fixed size.
func pageOf(n int) func() int { return func() int { return n } }

func newCfContract(t *testing.T, zones ...string) contractFake {
	f := newFakeCloudflare(t, zones...)
	return &contractAdapter{core: &f.fakeServer, name: "cf", section: cfSection, client: f.client, isWrite: isCloudflareWrite,
		seeder: func(name string) func(seedRR) {
			z := find(f.zones, func(z *cfFakeZone) bool { return z.name == name })
			if z == nil {
				return nil
			}
			return func(s seedRR) { f.add(z, s) }
		},
		records: func() (out []contractRR) {
			for _, z := range f.zones {
				for _, r := range z.records {
					out = append(out, contractRR{Zone: z.name, Name: r.Name, Type: r.Type, TTL: r.TTL,
						Value: contractValue(r.Type, r.Content), ID: fmt.Sprintf("%s proxied=%v", r.ID, r.Proxied)})
				}
			}
			return out
		},
		// Cloudflare's default page of zones, which the provider keeps.
		zonePage: pageOf(20),
	}
}

// newR53Contract: the snapshot has one entry per value of each record set;
// Route 53 has no IDs.
func newR53Contract(t *testing.T, zones ...string) contractFake {
	f := newFakeRoute53(t, zones...)
	route53Env(t, f)
	return &contractAdapter{core: &f.fakeServer, name: "r53", section: r53SectionFor, isWrite: isR53Change,
		seeder: func(name string) func(seedRR) {
			z := find(f.zones, func(z *r53Zone) bool { return z.name == name+"." })
			if z == nil {
				return nil
			}
			return func(s seedRR) { f.add(z, s) }
		},
		records: func() (out []contractRR) {
			for _, z := range f.zones {
				for _, s := range z.sets {
					for _, v := range s.Values {
						out = append(out, contractRR{Zone: strings.TrimSuffix(z.name, "."), Name: strings.TrimSuffix(s.Name, "."),
							Type: s.Type, TTL: int(s.TTL), Value: contractValue(s.Type, v)})
					}
				}
			}
			return out
		},
		zonePage: pageOf(100),
	}
}

func newAliContract(t *testing.T, zones ...string) contractFake {
	f := newFakeAlidns(t, zones...)
	return &contractAdapter{core: &f.fakeServer, name: "ali", section: aliSection, isWrite: isAliWrite,
		seeder: func(name string) func(seedRR) {
			d := f.domain(name)
			if d == nil {
				return nil
			}
			return func(s seedRR) { f.add(d, withDot(s)) }
		},
		records: func() (out []contractRR) {
			for _, d := range f.domains {
				for _, r := range d.records {
					out = append(out, contractRR{Zone: d.name, Name: contractName(r.RR, d.name), Type: r.Type, TTL: r.TTL,
						Value: contractValue(r.Type, r.Value), ID: r.RecordID + " " + r.Line + " " + r.Status})
				}
			}
			return out
		},
		zonePage: pageOf(20),
	}
}

func newTcContract(t *testing.T, zones ...string) contractFake {
	f := newFakeTencent(t, zones...)
	return &contractAdapter{core: &f.fakeServer, name: "tc", section: tcSection, isWrite: isTcWrite,
		seeder: func(name string) func(seedRR) {
			d := f.domain(name)
			if d == nil {
				return nil
			}
			return func(s seedRR) { f.add(d, s, tcLine) }
		},
		records: func() (out []contractRR) {
			for _, d := range f.domains {
				for _, r := range d.records {
					out = append(out, contractRR{Zone: d.name, Name: contractName(r.Name, d.name), Type: r.Type, TTL: int(r.TTL),
						Value: contractValue(r.Type, r.Value), ID: fmt.Sprintf("%d %s %s", r.RecordID, r.Line, r.Status)})
				}
			}
			return out
		},
		zonePage: pageOf(20),
	}
}

// newHwContract: the snapshot has one entry per value of each record set,
// with the set's ID and version; the fake lists 5 zones a page.
func newHwContract(t *testing.T, zones ...string) contractFake {
	f := newFakeHuawei(t, zones...)
	return &contractAdapter{core: &f.fakeServer, name: "hw", section: hwSection,
		isWrite: func(r apiRequest) bool { return r.Method != "GET" },
		seeder: func(name string) func(seedRR) {
			z := f.zone(name)
			if z == nil {
				return nil
			}
			return func(s seedRR) {
				s = withDot(s)
				f.seed(z, s.Name, s.Type, s.TTL, s.Value)
			}
		},
		records: func() (out []contractRR) {
			for _, z := range f.zones {
				for _, s := range z.sets {
					for _, v := range s.Records {
						out = append(out, contractRR{Zone: strings.TrimSuffix(z.name, "."), Name: strings.TrimSuffix(s.Name, "."),
							Type: s.Type, TTL: s.TTL, Value: contractValue(s.Type, v), ID: fmt.Sprintf("%s v%d", s.ID, s.Version)})
					}
				}
			}
			return out
		},
		zonePage: func() int {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.zoneLimit = 5
			return f.zoneLimit
		},
	}
}
