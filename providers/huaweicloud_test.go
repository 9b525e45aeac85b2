package providers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/libdns/huaweicloud"
	"github.com/libdns/libdns"

	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// The registered "huaweicloud" provider, providers.HuaweiCloud (the
// wrapper of huaweicloud_fix.go over github.com/libdns/huaweicloud v1.0.1),
// against a fake Huawei Cloud DNS API v2 (https://dns.REGION.myhuaweicloud.com/v2,
// AK/SK "SDK-HMAC-SHA256" signatures). Neither has an endpoint or client
// field (only region_id, which picks the host); both use http.DefaultClient,
// so these tests swap http.DefaultClient.Transport: they are process-global
// and must not run in parallel. What the wrapper sends, checked here request
// by request:
//   - every request is signed with upstream's signer over the headers it has
//     when signed: X-Sdk-Date and, for a request with a JSON body (POST,
//     PUT), Content-Type: application/json, set before signing; GET and
//     DELETE carry no Content-Type. The canonical URI gets a trailing
//     slash, the query is sorted and re-escaped and sent as signed;
//   - zone ID: GET /v2/zones?name=ZONE&search_mode=equal (ZONE without its
//     trailing dot), once at the start of each GetRecords, SetRecords or
//     DeleteRecords call;
//   - record sets are read page by page: GET /v2/zones/ID/recordsets?
//     limit=500&offset=N (plus name=FQDN.&search_mode=equal&type=T for a
//     lookup), until total_count is read;
//   - GetRecords: zone ID, then every page of the zone's record sets;
//   - SetRecords: zone ID, then for each name and type a lookup, then PUT
//     .../recordsets/RSID (one set found, values or TTL differ; no "id" in
//     the body), nothing (already so) or POST .../recordsets (none found);
//     a failed lookup is an error. One HTTP write per record, so dcvd's one
//     SetRecords call per zone is contiguous writes per zone (the API's
//     batch calls, v2.1, are unused);
//   - DeleteRecords: zone ID, then for each record the same lookup and a
//     DELETE .../recordsets/RSID of a set holding only matching values (a
//     PUT without them when it holds others too).
//
// The "upstream" subcases build huaweicloud.Provider itself (hwUpstream) to
// show the defects the wrapper fixes: upstream signs over X-Sdk-Date only
// and sends no Content-Type, looks the zone ID up before every request,
// reads one page of record sets (no limit, offset or marker), takes any
// lookup error for "no record set" and POSTs, sends "id" in PUT bodies and
// deletes the whole record set whatever its values.
//
// The fake keeps record sets as the API does (a name and type with several
// values), pages both lists (limit/offset/marker, with total_count and a
// next link), and logs every write.

const (
	hwHost   = "dns.cn-south-1.myhuaweicloud.com"
	hwKey    = "HWFAKEDCVDAK0000001Q"
	hwSecret = "hw-secret-5b8e1f0c3a7d9"
)

// hwSection is the [dns.hw] section: the AK inline (not a secret), the SK
// from a file.
func hwSection(t *testing.T, extra map[string]any) map[string]any {
	return secretSection(t, map[string]any{"provider": "huaweicloud", "access_key_id": hwKey}, "secret_access_key_file", hwSecret, extra)
}

// checkHwAuth checks that every request is signed with the AK (the fake
// has recomputed each signature), over X-Sdk-Date and, for a request with
// a body, the Content-Type: application/json it sends (what the wrapper
// signs), and that the SK is nowhere.
func checkHwAuth(t *testing.T, reqs []apiRequest) {
	t.Helper()
	for _, r := range reqs {
		signed, wantCT := "x-sdk-date", ""
		if len(r.Body) > 0 {
			signed, wantCT = "content-type;x-sdk-date", "application/json"
		}
		a := r.Header.Get("Authorization")
		if !strings.HasPrefix(a, "SDK-HMAC-SHA256 Access="+hwKey+", SignedHeaders="+signed+", Signature=") {
			t.Errorf("%s: Authorization %q: want AK %s over %s", r, a, hwKey, signed)
		}
		if ct := r.Header.Get("Content-Type"); ct != wantCT {
			t.Errorf("%s: Content-Type %q, want %q", r, ct, wantCT)
		}
	}
	assertNoSecret(t, reqs, hwSecret, "")
}

// hwRequests is each request's line and, for writes, its body.
func hwRequests(reqs []apiRequest) []string {
	return describeEach(reqs, func(r apiRequest) string {
		if len(r.Body) > 0 {
			return r.String() + " " + string(r.Body)
		}
		return r.String()
	})
}

// hwLookup is the wrapper's lookup of r's CNAME set in zone zid: the
// first (and here only) page, by exact name and type.
func hwLookup(zid string, r providers.Record) string {
	return fmt.Sprintf("GET /v2/zones/%s/recordsets?limit=500&name=%s.&offset=0&search_mode=equal&type=CNAME", zid, r.Name)
}

// hwPublishRequests is what SetRecords sends, after its zone ID, for a
// record that does not exist yet in zone zid.
func hwPublishRequests(zid string, ttl int, r providers.Record) []string {
	return []string{
		hwLookup(zid, r),
		fmt.Sprintf(`POST /v2/zones/%s/recordsets {"name":"%s.","type":"CNAME","ttl":%d,"records":["%s."]}`, zid, r.Name, ttl, r.Target),
	}
}

// without returns snap without the lines of the DCV records recs.
func without(snap []string, recs []providers.Record) []string {
	return slices.DeleteFunc(slices.Clone(snap), func(line string) bool {
		for _, r := range recs {
			if strings.Contains(line, " "+r.Name+". CNAME ") {
				return true
			}
		}
		return false
	})
}

func TestHuaweicloudPublishOneZone(t *testing.T) {
	ctx := context.Background()
	f := newFakeHuawei(t, "example.com", "example.org")
	f.hwLookAlikes("example.com")
	before := f.snapshot()
	zid := f.zone("example.com").id
	d := newDNS(t, "hw", hwSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	recs := planOneZone(t, d, "hw", &f.fakeServer, requestLines)

	// One SetRecords call; the provider makes it one zone ID, then a
	// lookup and a POST per record, each lookup by exact name and type.
	mustPublish(t, d, recs, 1)
	reqs := f.log.take()
	checkHwAuth(t, reqs)
	list := []string{"GET /v2/zones?name=example.com&search_mode=equal", "GET /v2/zones/" + zid + "/recordsets?limit=500&offset=0"}
	want := append(slices.Clone(list), list[0])
	for _, r := range recs {
		want = append(want, hwPublishRequests(zid, 60, r)...)
	}
	checkLines(t, t.Fatalf, "Publish requests", hwRequests(reqs), want)
	var wantWrites []string
	for _, r := range recs {
		wantWrites = append(wantWrites, fmt.Sprintf("POST %s. CNAME 60 %s.", r.Name, r.Target))
	}
	if got := f.takeWrites(); !slices.Equal(got, wantWrites) {
		t.Errorf("Publish writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantWrites, "\n"))
	}
	published := f.snapshot()
	if others := without(published, recs); !slices.Equal(others, before) {
		t.Errorf("Publish touched other record sets:\n%s\nwant as before:\n%s", strings.Join(others, "\n"), strings.Join(before, "\n"))
	}
	ids := map[string]string{}
	for _, r := range recs {
		s := f.set(r.Name, "CNAME")
		if s == nil || !slices.Equal(s.Records, []string{r.Target + "."}) || s.TTL != 60 {
			t.Fatalf("record set of %s: %+v", r.Name, s)
		}
		ids[s.ID] = r.Name
	}

	// Republish: a listing, nothing written.
	mustRepublish(t, d, recs)
	if got := requestLines(f.log.take()); !slices.Equal(got, list) {
		t.Errorf("second Publish requests %q, want only %q", got, list)
	}
	if w := f.takeWrites(); len(w) != 0 {
		t.Errorf("second Publish wrote %q", w)
	}

	// Cleanup after a restart, by a new DNS from the same config: one
	// DeleteRecords call (one zone ID), then each record set is looked up
	// by exact name and type and deleted by ID.
	d2 := newDNS(t, "hw", hwSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	if err := d2.Cleanup(ctx, recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	reqs = f.log.take()
	checkHwAuth(t, reqs)
	want = append(slices.Clone(list), list[0])
	for _, r := range recs {
		s := ""
		for id, name := range ids {
			if name == r.Name {
				s = id
			}
		}
		want = append(want, hwLookup(zid, r), fmt.Sprintf("DELETE /v2/zones/%s/recordsets/%s", zid, s))
	}
	checkLines(t, t.Errorf, "Cleanup requests", hwRequests(reqs), want)
	writes := f.takeWrites()
	if len(writes) != len(recs) {
		t.Errorf("Cleanup writes %q, want %d deletes", writes, len(recs))
	}
	for _, w := range writes {
		fields := strings.Fields(w)
		if fields[0] != "DELETE" || ids[fields[1]] == "" {
			t.Errorf("Cleanup wrote %q; want DELETE of the published sets %v", w, ids)
		}
	}
	checkAsBefore(t, "zones after Cleanup", before, f.snapshot())
	checkSecondCleanup(t, d2, recs, f.view())
}

func TestHuaweicloudPublishTwoZones(t *testing.T) {
	ctx := context.Background()
	f := newFakeHuawei(t, "example.com", "example.org", "example.net")
	f.hwLookAlikes("example.com")
	before := f.snapshot()
	// The provider cannot list zones: the SOA walk finds them.
	d := newDNS(t, "hw", hwSection(t, map[string]any{"resolvers": []any{zoneResolver(t, "example.com", "example.org")}}), providers.Options{})
	recs := planTwoZones(t, d, "hw", "shop", "mail")

	mustPublish(t, d, recs, 2)
	checkHwAuth(t, f.log.take())
	// One SetRecords call per zone: that zone's writes are contiguous.
	var zones []string
	for _, w := range f.takeWrites() {
		name := strings.Fields(w)[1]
		zones = append(zones, name[strings.Index(name, "example."):])
	}
	if len(zones) != len(recs) || interleaved(zones) {
		t.Errorf("writes by zone %q: want %d, zone by zone", zones, len(recs))
	}

	checkRepublishThenCleanup(t, ctx, d, recs, f.view(), before, nil)
}

// A stale CNAME at the name (an earlier order's) is rewritten in place by
// its ID, with one PUT, and nothing else changes.
func TestHuaweicloudReplacesStaleTarget(t *testing.T) {
	f := newFakeHuawei(t, "example.com")
	f.hwLookAlikes("example.com")
	f.mu.Lock()
	z := f.zone("example.com")
	stale := f.seed(z, dcvLabel+".shop.example.com", "CNAME", 60, "stale.dcv-target.example.")
	f.mu.Unlock()
	before := f.snapshot()
	d := newDNS(t, "hw", hwSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	recs, err := d.Plan(context.Background(), []reseller.CNAMEInstruction{{Name: dcvLabel + ".shop.example.com", Target: "fresh.dcv-target.example"}})
	if err != nil {
		t.Fatal(err)
	}
	mustPublish(t, d, recs, 1)
	reqs := f.log.take()
	checkHwAuth(t, reqs)
	put := filterRequests(reqs, func(r apiRequest) bool { return r.Method != http.MethodGet })
	wantPut := fmt.Sprintf(`PUT /v2/zones/%s/recordsets/%s {"name":"%s.shop.example.com.","type":"CNAME","ttl":60,"records":["fresh.dcv-target.example."]}`,
		z.id, stale.ID, dcvLabel)
	if got := hwRequests(put); !slices.Equal(got, []string{wantPut}) {
		t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(got, "\n"), wantPut)
	}
	after := f.snapshot()
	wantAfter := slices.Clone(before)
	for i, line := range wantAfter {
		if strings.Contains(line, "id="+stale.ID) {
			wantAfter[i] = fmt.Sprintf("example.com. %s.shop.example.com. CNAME 60 fresh.dcv-target.example. id=%s v1", dcvLabel, stale.ID)
		}
	}
	sort.Strings(wantAfter)
	if !slices.Equal(after, wantAfter) {
		t.Errorf("zone after Publish:\n%s\nwant:\n%s", strings.Join(after, "\n"), strings.Join(wantAfter, "\n"))
	}
}

// A TXT or A record set at the DCV name itself: dcvd refuses, and writes
// nothing (a CNAME cannot sit next to them).
func TestHuaweicloudRefusesNameWithOtherTypes(t *testing.T) {
	for _, typ := range []string{"TXT", "A"} {
		t.Run(typ, func(t *testing.T) {
			f := newFakeHuawei(t, "example.com")
			f.mu.Lock()
			values := map[string][]string{"TXT": {"t-example-com.dcv-target.example", "other"}, "A": {"192.0.2.40", "192.0.2.41"}}[typ]
			f.seed(f.zone("example.com"), dcvLabel+".example.com", typ, 60, values...)
			f.mu.Unlock()
			before := f.snapshot()
			d := newDNS(t, "hw", hwSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
			recs := planDCV(t, d, dcvInstructions("example.com"), wantRecords("hw", time.Minute, "example.com"))
			_, err := d.Publish(context.Background(), recs)
			if err == nil || !strings.Contains(err.Error(), "already has a "+typ+" record") {
				t.Errorf("Publish: %v; want a refusal naming the %s record", err, typ)
			}
			if w := f.takeWrites(); len(w) != 0 {
				t.Errorf("Publish wrote %q", w)
			}
			if err := d.Cleanup(context.Background(), recs); err != nil {
				t.Errorf("Cleanup: %v", err)
			}
			if after := f.snapshot(); !slices.Equal(after, before) {
				t.Errorf("zone changed:\n%s\nwant:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
			}
		})
	}
}

// The zone is found among 60 zones listed 5 to a page, and not confused
// with example.com.cn: the provider asks for it by exact name.
func TestHuaweicloudZonePastFirstPage(t *testing.T) {
	f := newFakeHuawei(t)
	f.mu.Lock()
	for i := range 59 {
		f.addZone(fmt.Sprintf("z%02d.example", i))
	}
	f.mu.Unlock()
	f.mu.Lock()
	f.addZone("example.com.cn") // listed before example.com
	f.addZone("example.com")
	f.zoneLimit = 5
	f.mu.Unlock()
	f.hwLookAlikes("example.com")
	before := f.snapshot()
	d := newDNS(t, "hw", hwSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	recs := planDCV(t, d, dcvInstructions("example.com", "www"), wantRecords("hw", time.Minute, "example.com", "www"))
	if _, err := d.Publish(context.Background(), recs); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	for _, r := range recs {
		if f.set(r.Name, "CNAME") == nil {
			t.Errorf("%s not published", r.Name)
		}
	}
	if err := d.Cleanup(context.Background(), recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	checkAsBefore(t, "zones after Cleanup", before, f.snapshot())
}

// hwUpstream is d with its provider, the registered providers.HuaweiCloud,
// replaced by the upstream huaweicloud.Provider it wraps, with the same
// keys: the "upstream" subcases show with it the defects the wrapper fixes.
func hwUpstream(t *testing.T, d *providers.DNS) *providers.DNS {
	t.Helper()
	w, ok := d.Provider.(*providers.HuaweiCloud)
	if !ok {
		t.Fatalf("registered huaweicloud provider is %T, want *providers.HuaweiCloud", d.Provider)
	}
	d.Provider = &huaweicloud.Provider{AccessKeyId: w.AccessKeyId, SecretAccessKey: w.SecretAccessKey, RegionId: w.RegionId}
	return d
}

// hwRegistered checks that d's provider is the registered wrapper, which
// the "fixed" subcases exercise.
func hwRegistered(t *testing.T, d *providers.DNS) *providers.DNS {
	t.Helper()
	if _, ok := d.Provider.(*providers.HuaweiCloud); !ok {
		t.Fatalf("registered huaweicloud provider is %T, want *providers.HuaweiCloud", d.Provider)
	}
	return d
}

// hwDNS is the DNS of the [dns.hw] section for example.com, with the
// registered wrapper (fixed) or the upstream provider as its provider.
func hwDNS(t *testing.T, fixed bool) *providers.DNS {
	t.Helper()
	d := newDNS(t, "hw", hwSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	if fixed {
		return hwRegistered(t, d)
	}
	return hwUpstream(t, d)
}

// TestHuaweicloudBigZone: a zone of 520 record sets, listed by the API's
// default page of 500. Upstream's GetRecords reads one page, so dcvd does
// not see the records it published: republishing rewrites them and Cleanup
// leaves them in the zone (defect shown by the "upstream" case). The
// "fixed" case is providers.HuaweiCloud, which pages.
func TestHuaweicloudBigZone(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		t.Run(map[bool]string{false: "upstream", true: "fixed"}[fixed], func(t *testing.T) {
			ctx := context.Background()
			f := newFakeHuawei(t, "example.com")
			f.mu.Lock()
			for i := range 510 {
				f.seed(f.zone("example.com"), fmt.Sprintf("h%03d.example.com", i), "A", 300, "192.0.2.1")
			}
			f.mu.Unlock()
			f.hwLookAlikes("example.com")
			before := f.snapshot()
			d := hwDNS(t, fixed)
			recs := planDCV(t, d, dcvInstructions("example.com", "www"), wantRecords("hw", time.Minute, "example.com", "www"))
			if _, err := d.Publish(ctx, recs); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if w := f.takeWrites(); len(w) != len(recs) {
				t.Errorf("Publish writes %q, want %d", w, len(recs))
			}
			rep, err := d.Publish(ctx, recs)
			if err != nil {
				t.Fatalf("second Publish: %v", err)
			}
			rewrites := f.takeWrites()
			if err := d.Cleanup(ctx, recs); err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
			after := f.snapshot()
			reqs := f.log.take()
			if fixed {
				checkReport(t, rep, nil, recs, 0)
				if len(rewrites) != 0 {
					t.Errorf("second Publish wrote %q", rewrites)
				}
				if !slices.Equal(after, before) {
					t.Errorf("zone after Cleanup differs from before:\n%s", strings.Join(after[len(after)-10:], "\n"))
				}
				assertNoSecret(t, reqs, hwSecret, "")
				return
			}
			// Upstream: the published records are past the first page.
			if len(rep.Unchanged) != 0 || len(rewrites) != len(recs) {
				t.Errorf("upstream second Publish: report %+v, writes %q; the defect is gone? update this test", rep, rewrites)
			}
			left := 0
			for _, r := range recs {
				if f.set(r.Name, "CNAME") != nil {
					left++
				}
			}
			if left != len(recs) {
				t.Errorf("upstream Cleanup removed %d of %d records past the first page; the defect is gone? update this test", len(recs)-left, len(recs))
			}
			t.Logf("upstream defect: Cleanup left %d DCV record(s) in a zone of %d record sets (GetRecords reads one page of 500)", left, len(before))
		})
	}
}

// TestHuaweicloudDeleteIgnoresValue: upstream DeleteRecords deletes the
// record set at the name and type whatever its values. Shown through
// dcvd: between Cleanup's listing and its delete, the record is changed to
// another target (a newer order, published by another dcvd); upstream
// deletes the new record. And directly: deleting one value of a TXT set
// deletes them all, and a value not in the set deletes the set.
// providers.HuaweiCloud deletes only what matches.
func TestHuaweicloudDeleteIgnoresValue(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		t.Run(map[bool]string{false: "upstream", true: "fixed"}[fixed], func(t *testing.T) {
			ctx := context.Background()
			f := newFakeHuawei(t, "example.com")
			d := hwDNS(t, fixed)
			recs := planDCV(t, d, dcvInstructions("example.com"), wantRecords("hw", time.Minute, "example.com"))
			if _, err := d.Publish(ctx, recs); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			name := recs[0].Name + "."
			changed := false
			f.mu.Lock()
			f.before = func(r apiRequest) {
				if !changed && r.Method == http.MethodGet && r.Query.Get("name") == name {
					for _, s := range f.zone("example.com").sets {
						if s.Name == name && s.Type == "CNAME" {
							s.Records, s.Version, changed = []string{"newer-order.dcv-target.example."}, s.Version+1, true
						}
					}
				}
			}
			f.mu.Unlock()
			if err := d.Cleanup(ctx, recs); err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
			if !changed {
				t.Fatal("the record was not changed between listing and delete")
			}
			s := f.set(recs[0].Name, "CNAME")
			if fixed && s == nil {
				t.Errorf("Cleanup deleted the newer record, which it did not publish")
			}
			if !fixed && s != nil {
				t.Errorf("upstream Cleanup kept the newer record; the defect is gone? update this test")
			}

			// Directly, on a multi-value TXT set.
			f.mu.Lock()
			f.before = nil
			txt := f.seed(f.zone("example.com"), "_multi.example.com", "TXT", 60, "one", "two")
			f.mu.Unlock()
			p := d.Provider.(libdns.RecordDeleter)
			// Upstream's first delete, of a value the set lacks, removes
			// the set already; the fixed one ignores it and then removes
			// "one" alone.
			values := []string{"absent"}
			if fixed {
				values = append(values, "one")
			}
			for _, value := range values {
				if _, err := p.DeleteRecords(ctx, "example.com.", []libdns.Record{libdns.TXT{Name: "_multi", TTL: time.Minute, Text: value}}); err != nil {
					t.Fatalf("DeleteRecords %q: %v", value, err)
				}
			}
			got := f.set("_multi.example.com", "TXT")
			if fixed && (got == nil || !slices.Equal(got.Records, []string{`"two"`})) {
				t.Errorf("after deleting TXT \"one\": %+v; want the set %s holding \"two\"", got, txt.ID)
			}
			if !fixed && got != nil {
				t.Errorf("upstream DeleteRecords of a value not in the set kept the set %+v; the defect is gone? update this test", got)
			}
		})
	}
}

// The fake's paging, driven directly (the wrapper pages by limit and
// offset only): limit and
// offset, then marker as the next link gives it, over zones and sets.
func TestHuaweicloudFakePaging(t *testing.T) {
	f := newFakeHuawei(t, "a.example", "b.example", "c.example")
	zid := f.zone("b.example").id
	get := func(path string, q url.Values) (ids []string, total int, next string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+hwHost+path+"?"+q.Encode(), nil)
		if err := (&huaweicloud.Signer{Key: hwKey, Secret: hwSecret}).Sign(req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Z        []struct{ ID string } `json:"zones"`
			R        []struct{ ID string } `json:"recordsets"`
			Metadata struct {
				TotalCount int `json:"total_count"`
			} `json:"metadata"`
			Links map[string]string `json:"links"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: HTTP %d, %v", path, resp.StatusCode, err)
		}
		for _, x := range append(body.Z, body.R...) {
			ids = append(ids, x.ID)
		}
		return ids, body.Metadata.TotalCount, body.Links["next"]
	}
	all, total, _ := get("/v2/zones/"+zid+"/recordsets", url.Values{})
	if total != 6 || len(all) != 6 { // SOA, NS and fakeUnrelated's four
		t.Fatalf("record sets: %d of %d", len(all), total)
	}
	var paged []string
	q := url.Values{"limit": {"4"}}
	for range 3 {
		ids, _, next := get("/v2/zones/"+zid+"/recordsets", q)
		paged = append(paged, ids...)
		if next == "" {
			break
		}
		u, _ := url.Parse(next)
		q = u.Query()
	}
	if !slices.Equal(paged, all) {
		t.Errorf("paged by marker %q, want %q", paged, all)
	}
	ids, _, _ := get("/v2/zones/"+zid+"/recordsets", url.Values{"limit": {"2"}, "offset": {"5"}})
	if !slices.Equal(ids, all[5:]) {
		t.Errorf("offset 5: %q, want %q", ids, all[5:])
	}
	zones, total, next := get("/v2/zones", url.Values{"limit": {"2"}})
	if total != 3 || len(zones) != 2 || next == "" {
		t.Errorf("zones page: %q of %d, next %q", zones, total, next)
	}
	zones, _, _ = get("/v2/zones", url.Values{"name": {"example"}, "offset": {"2"}})
	if len(zones) != 1 || zones[0] != f.zone("c.example").id {
		t.Errorf("zones like example from offset 2: %q", zones)
	}
}

// TestHuaweicloudSetAfterFailedLookup: upstream SetRecords takes any error
// of its lookup (here a 403) for "no record set" and POSTs a new one, a
// write decided on a read that failed. The API refuses it here (a CNAME
// is there), so the zone survives; providers.HuaweiCloud stops at the
// failed read and writes nothing.
func TestHuaweicloudSetAfterFailedLookup(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		t.Run(map[bool]string{false: "upstream", true: "fixed"}[fixed], func(t *testing.T) {
			f := newFakeHuawei(t, "example.com")
			f.mu.Lock()
			f.seed(f.zone("example.com"), dcvLabel+".example.com", "CNAME", 60, "stale.dcv-target.example.")
			f.mu.Unlock()
			before := f.snapshot()
			f.deny = func(r apiRequest) bool { return r.Query.Get("type") == "CNAME" }
			d := hwDNS(t, fixed)
			recs := planDCV(t, d, dcvInstructions("example.com"), wantRecords("hw", time.Minute, "example.com"))
			if _, err := d.Publish(context.Background(), recs); err == nil {
				t.Error("Publish succeeded")
			}
			posts := filterRequests(f.log.take(), func(r apiRequest) bool { return r.Method != http.MethodGet })
			if fixed && len(posts) != 0 {
				t.Errorf("wrote after a failed lookup: %q", hwRequests(posts))
			}
			if !fixed && len(posts) != 1 {
				t.Errorf("upstream wrote %q after its failed lookup; want the one POST that shows the defect (gone? update this test)", hwRequests(posts))
			}
			if after := f.snapshot(); !slices.Equal(after, before) {
				t.Errorf("zone changed:\n%s", strings.Join(after, "\n"))
			}
		})
	}
}
