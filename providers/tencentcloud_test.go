package providers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libdns/libdns"

	"github.com/dcvd/dcvd/providers"
)

// providers.TencentCloud (the registry's "tencentcloud": the config of
// github.com/libdns/tencentcloud v1.4.3 with dcvd's own record methods,
// providers/tencentcloud.go) against a fake Tencent Cloud DNSPod API 3.0
// (version 2021-03-23, TC3-HMAC-SHA256 signatures, a JSON body POSTed to /,
// the action in X-TC-Action, errors as HTTP 200 with Response.Error). The
// provider has a constant URL and uses http.DefaultClient, so these tests
// swap http.DefaultClient.Transport: they are process-global and must not
// run in parallel (nor beside the alidns tests, which do the same). What
// the provider does, checked here request by request:
//   - GetRecords: DescribeRecordList with Domain, RecordLine=默认,
//     Limit=3000 and Offset, page after page until TotalCount (upstream
//     sends no Limit or Offset and so sees the first 100 records only);
//   - SetRecords: for each name and type, DescribeRecordList with
//     Subdomain, RecordType, RecordLine=默认 (paged the same way), then a
//     ModifyRecord of a listed RecordId, or a CreateRecord, per record that
//     is not already as given, and a DeleteRecord of each one left over:
//     one HTTP write per record, so dcvd's one SetRecords call per zone is
//     a contiguous run of writes per zone (the API has no batch write);
//   - DeleteRecords: for each record, the same DescribeRecordList, then a
//     DeleteRecord by RecordId of each listed record whose name, type and
//     value (and TTL, when given) are the record's.
//
// Every request is signed by upstream's tencentcloud.SignRequest, whose
// host is always dnspod.tencentcloudapi.com, and sent there; the region key
// is refused. Every Response.Error is an error naming the API's code and
// message (with the secret taken out), except ResourceNotFound.NoDataOfRecord
// from a list, which is an empty list. Upstream read no Response.Error: a
// refused list read as an empty zone and a refused ModifyRecord or
// DeleteRecord as success.

const (
	tcHost      = "dnspod.tencentcloudapi.com"
	tcSecretID  = "AKIDfakeDcvdTencentID0001"
	tcSecretKey = "tc-secret-7Qm2xR9vK4pL8sWz"
	tcLine      = "默认"
	// tcDefaultLimit and tcMaxLimit are DescribeRecordList's page size
	// when Limit is not given, and the largest Limit it accepts.
	tcDefaultLimit = 100
	tcMaxLimit     = 3000
)

// tcAction is a request's action and parameters, for comparisons.
func tcAction(r apiRequest) string {
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.UseNumber()
	var p map[string]any
	err := dec.Decode(&p)
	return actionLine(r.Header.Get("X-TC-Action"), p, err, func(v any) string { return fmt.Sprint(v) })
}

func tcActions(reqs []apiRequest) []string { return describeEach(reqs, tcAction) }

var isTcWrite = actionIn("X-TC-Action", "CreateRecord", "ModifyRecord", "DeleteRecord")

// tcSection is the [dns.tc] section: the SecretId inline (not a secret),
// the SecretKey from a file.
func tcSection(t *testing.T, extra map[string]any) map[string]any {
	return secretSection(t, map[string]any{"provider": "tencentcloud", "secret_id": tcSecretID}, "secret_key_file", tcSecretKey, extra)
}

// checkTcAuth checks that every request names the SecretId and is signed,
// and that the SecretKey appears nowhere in any request (the signature
// verified by the fake is the only use of it).
func checkTcAuth(t *testing.T, reqs []apiRequest) {
	t.Helper()
	checkSignedBy(t, reqs, tcAction, "TC3-HMAC-SHA256 Credential="+tcSecretID+"/", ", Signature=", tcSecretKey)
}

// The requests the provider sends, as tcAction shows them.
func tcList(zone string) string {
	return tcListPage(zone, 0)
}

// tcListPage is the request for the page of the zone listing at offset.
func tcListPage(zone string, offset int) string {
	return fmt.Sprintf("DescribeRecordList Domain=%s Limit=3000 Offset=%d RecordLine=%s", strings.TrimSuffix(zone, "."), offset, tcLine)
}

func tcFind(zone, name string) string {
	zone = strings.TrimSuffix(zone, ".")
	return fmt.Sprintf("DescribeRecordList Domain=%s Limit=3000 Offset=0 RecordLine=%s RecordType=CNAME Subdomain=%s",
		zone, tcLine, strings.TrimSuffix(name, "."+zone))
}

func tcCreate(zone string, ttl int, r providers.Record) string {
	zone = strings.TrimSuffix(zone, ".")
	return fmt.Sprintf("CreateRecord Domain=%s RecordLine=%s RecordType=CNAME SubDomain=%s TTL=%d Value=%s.",
		zone, tcLine, strings.TrimSuffix(r.Name, "."+zone), ttl, r.Target)
}

func tcDelete(zone string, id uint64) string {
	return fmt.Sprintf("DeleteRecord Domain=%s RecordId=%d", strings.TrimSuffix(zone, "."), id)
}

func TestTencentcloudPublishOneZone(t *testing.T) {
	ctx := context.Background()
	f := newFakeTencent(t, "example.com", "example.com.cn")
	f.seedLookAlikes("example.com")
	before := f.snapshot()
	d := newDNS(t, "tc", tcSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	recs := planOneZone(t, d, "tc", &f.fakeServer, tcActions)

	// One SetRecords call; the provider makes it a lookup and a
	// CreateRecord per record, with dcvd's TTL (60 s) as given.
	mustPublish(t, d, recs, 1)
	reqs := f.log.take()
	checkTcAuth(t, reqs)
	want := []string{tcList("example.com")}
	for _, r := range recs {
		want = append(want, tcFind("example.com", r.Name), tcCreate("example.com", 60, r))
	}
	checkLines(t, t.Fatalf, "Publish requests", tcActions(reqs), want)
	published := f.snapshot()
	var added []string
	for _, line := range published {
		if !slices.Contains(before, line) {
			added = append(added, line)
		}
	}
	var wantAdded []string
	ids := map[uint64]bool{}
	for _, r := range recs {
		got := f.cnameIDs(r.Name)
		if len(got) != 1 {
			t.Fatalf("%s has %d default-line CNAMEs after Publish, want 1", r.Name, len(got))
		}
		ids[got[0]] = true
		wantAdded = append(wantAdded, fmt.Sprintf("example.com %d %s %s 60 CNAME %s.", got[0], strings.TrimSuffix(r.Name, ".example.com"), tcLine, r.Target))
	}
	sort.Strings(wantAdded)
	if len(published) != len(before)+len(recs) || !slices.Equal(added, wantAdded) {
		t.Errorf("zones after Publish:\n%s\nwant those before plus:\n%s", strings.Join(published, "\n"), strings.Join(wantAdded, "\n"))
	}

	// Republishing reads the zone once and writes nothing.
	mustRepublish(t, d, recs)
	if got := tcActions(f.log.take()); !slices.Equal(got, []string{tcList("example.com")}) {
		t.Errorf("second Publish requests %q, want only %q", got, tcList("example.com"))
	}

	// Cleanup after a restart, by a new DNS from the same config: the
	// records are found again by name and value, and deleted by ID.
	d2 := newDNS(t, "tc", tcSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	if err := d2.Cleanup(ctx, recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	reqs = f.log.take()
	checkTcAuth(t, reqs)
	want = []string{tcList("example.com")}
	for _, r := range recs { // listed by ID: in the order they were created
		want = append(want, tcFind("example.com", r.Name), tcDelete("example.com", f.idIn(published, r)))
	}
	checkLines(t, t.Errorf, "Cleanup requests", tcActions(reqs), want)
	checkAsBefore(t, "zones after Cleanup", before, f.snapshot())
	checkSecondCleanup(t, d2, recs, f.view())
	if len(ids) != len(recs) {
		t.Errorf("published IDs %v are not one per record", ids)
	}
}

func TestTencentcloudPublishTwoZones(t *testing.T) {
	ctx := context.Background()
	f := newFakeTencent(t, "example.com", "example.com.cn", "example.org")
	f.seedLookAlikes("example.com")
	before := f.snapshot()
	// The provider cannot list zones: the SOA walk finds them, and must
	// tell example.com from example.com.cn.
	d := newDNS(t, "tc", tcSection(t, map[string]any{"resolvers": []any{zoneResolver(t, "example.com", "example.com.cn", "example.org")}}), providers.Options{})
	recs := planTwoZones(t, d, "tc", "shop", "mail")
	f.log.take()

	mustPublish(t, d, recs, 2)
	reqs := f.log.take()
	checkTcAuth(t, reqs)
	// One SetRecords per zone: the API has no batch write, so each zone's
	// writes are one contiguous run of one request per record.
	var wantActions []string
	for _, zone := range []string{"example.com.", "example.org."} {
		wantActions = append(wantActions, tcList(zone))
		for _, r := range inZoneOrder(recs) {
			if r.Zone == zone {
				wantActions = append(wantActions, tcFind(zone, r.Name), tcCreate(zone, 60, r))
			}
		}
	}
	checkLines(t, t.Fatalf, "Publish requests", tcActions(reqs), wantActions)

	checkRepublishThenCleanup(t, ctx, d, recs, f.view(), before, nil)
}

// TestTencentcloudReplacesOnlyItsOwnStaleRecord: a stale CNAME at a DCV
// name (an earlier order's target) is modified in place, by its own ID;
// the look-alikes, including a CNAME at the same name on another line,
// keep their IDs and values.
func TestTencentcloudReplacesOnlyItsOwnStaleRecord(t *testing.T) {
	ctx := context.Background()
	f := newFakeTencent(t, "example.com", "example.com.cn")
	f.seedLookAlikes("example.com")
	f.mu.Lock()
	stale := f.add(f.domain("example.com"), seedRR{Name: dcvLabel + ".www.example.com", Type: "CNAME", TTL: 600, Value: "stale.dcv-target.example"}, tcLine)
	f.mu.Unlock()
	before := f.snapshot()
	d := newDNS(t, "tc", tcSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	recs := planDCV(t, d, dcvInstructions("example.com", "www"), wantRecords("tc", time.Minute, "example.com", "www"))
	mustPublish(t, d, recs, 1)
	www := recs[1]
	writes := tcActions(filterRequests(f.log.take(), isTcWrite))
	wantWrites := []string{
		tcCreate("example.com", 60, recs[0]),
		fmt.Sprintf("ModifyRecord Domain=example.com RecordId=%d RecordLine=%s RecordType=CNAME SubDomain=%s.www TTL=60 Value=%s.",
			stale.RecordID, tcLine, dcvLabel, www.Target),
	}
	if !slices.Equal(writes, wantWrites) {
		t.Fatalf("writes:\n%s\nwant:\n%s", strings.Join(writes, "\n"), strings.Join(wantWrites, "\n"))
	}
	after := f.snapshot()
	for _, line := range before {
		if !strings.Contains(line, " "+strconv.FormatUint(stale.RecordID, 10)+" ") && !slices.Contains(after, line) {
			t.Errorf("record changed by Publish: %s", line)
		}
	}

	if err := d.Cleanup(ctx, recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	after = f.snapshot()
	for _, line := range before {
		if !strings.Contains(line, " "+strconv.FormatUint(stale.RecordID, 10)+" ") && !slices.Contains(after, line) {
			t.Errorf("record changed by Cleanup: %s", line)
		}
	}
	if len(after) != len(before)-1 {
		t.Errorf("zones after Cleanup:\n%s\nwant those before less the stale record", strings.Join(after, "\n"))
	}
}

// TestTencentcloudRefusesNameWithOtherTypes: where a DCV name already holds
// a TXT or an A record, dcvd publishes nothing, writes nothing and leaves
// the zone as it was.
func TestTencentcloudRefusesNameWithOtherTypes(t *testing.T) {
	for _, typ := range []seedRR{{Type: "TXT", Value: "other-validation"}, {Type: "A", Value: "192.0.2.7"}} {
		t.Run(typ.Type, func(t *testing.T) {
			f := newFakeTencent(t, "example.com", "example.com.cn")
			f.seedLookAlikes("example.com")
			f.mu.Lock()
			f.add(f.domain("example.com"), seedRR{Name: dcvLabel + ".www.example.com", Type: typ.Type, TTL: 600, Value: typ.Value}, tcLine)
			f.mu.Unlock()
			before := f.snapshot()
			d := newDNS(t, "tc", tcSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
			recs := planDCV(t, d, dcvInstructions("example.com", "www"), wantRecords("tc", time.Minute, "example.com", "www"))
			_, err := d.Publish(context.Background(), recs)
			if err == nil || !strings.Contains(err.Error(), "already has a "+typ.Type+" record") {
				t.Errorf("Publish error %v, want a refusal naming the %s record", err, typ.Type)
			}
			if writes := filterRequests(f.log.take(), isTcWrite); len(writes) != 0 {
				t.Errorf("refused Publish wrote: %q", tcActions(writes))
			}
			if err := d.Cleanup(context.Background(), recs); err != nil {
				t.Errorf("Cleanup: %v", err)
			}
			if after := f.snapshot(); !slices.Equal(after, before) {
				t.Errorf("zone changed:\n%s\nwant as before:\n%s", strings.Join(after, "\n"), strings.Join(before, "\n"))
			}
		})
	}
}

// TestTencentcloudBigZone: in a zone of more records than one page of
// DescribeRecordList (3000), dcvd's records are listed after the others, on
// the second page. The listing is paged (Limit=3000, Offset until
// TotalCount), so republishing writes nothing and Cleanup removes exactly
// what was published. Upstream listed the first 100 records only: it
// rewrote the records on every publish and left them behind on Cleanup.
func TestTencentcloudBigZone(t *testing.T) {
	ctx := context.Background()
	f := newFakeTencent(t, "example.com")
	f.mu.Lock()
	d0 := f.domain("example.com")
	// A hosting company's zone: one ACME TXT per customer host. They sort
	// before _c0ffee by name and by creation, whichever order the API uses.
	for i := range tcMaxLimit + 50 {
		f.add(d0, seedRR{Name: fmt.Sprintf("_acme-challenge.host%04d.example.com", i), Type: "TXT", TTL: 600, Value: "token"}, tcLine)
	}
	f.mu.Unlock()
	before := f.snapshot()
	list := []string{tcListPage("example.com", 0), tcListPage("example.com", tcMaxLimit)}
	d := newDNS(t, "tc", tcSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	recs := planDCV(t, d, dcvInstructions("example.com", "www"), wantRecords("tc", time.Minute, "example.com", "www"))
	f.log.take()

	mustPublish(t, d, recs, 1)
	reqs := f.log.take()
	checkTcAuth(t, reqs)
	want := slices.Clone(list)
	for _, r := range recs {
		want = append(want, tcFind("example.com", r.Name), tcCreate("example.com", 60, r))
	}
	checkLines(t, t.Fatalf, "Publish requests", tcActions(reqs), want)
	published := f.snapshot()
	if len(published) != len(before)+len(recs) {
		t.Fatalf("zone has %d records after Publish, want %d", len(published), len(before)+len(recs))
	}

	// The records are on the second page: republishing sees them.
	mustRepublish(t, d, recs)
	if got := tcActions(f.log.take()); !slices.Equal(got, list) {
		t.Errorf("second Publish requests:\n%s\nwant only the two pages of the listing", strings.Join(got, "\n"))
	}

	if err := d.Cleanup(ctx, recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	want = slices.Clone(list)
	for _, r := range recs {
		want = append(want, tcFind("example.com", r.Name), tcDelete("example.com", f.idIn(published, r)))
	}
	if got := tcActions(f.log.take()); !slices.Equal(got, want) {
		t.Errorf("Cleanup requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if after := f.snapshot(); !slices.Equal(after, before) {
		t.Errorf("zone after Cleanup has %d records, want the %d before, unchanged", len(after), len(before))
	}
	checkSecondCleanup(t, d, recs, f.view())
}

// TestTencentcloudAPIErrors: the API answers its errors with HTTP 200 and
// Response.Error. Each one is an error of Publish or Cleanup naming the
// action, the API's code and its message, without the secret the fake's
// refusals quote; the zone is left as it was. Upstream read none of them.
func TestTencentcloudAPIErrors(t *testing.T) {
	ctx := context.Background()
	wantAPIError := func(t *testing.T, op string, err error, action string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s succeeded against a refused %s", op, action)
		}
		msg := err.Error()
		for _, s := range []string{action, "UnauthorizedOperation", "you are not authorized to perform operation (dnspod:" + action + ")"} {
			if !strings.Contains(msg, s) {
				t.Errorf("%s error %q does not name %q", op, msg, s)
			}
		}
		if strings.Contains(msg, tcSecretKey) {
			t.Errorf("%s error carries the secret key: %q", op, msg)
		}
	}
	t.Run("DeleteRecord refused", func(t *testing.T) {
		f := newFakeTencent(t, "example.com")
		before := f.snapshot()
		d := newDNS(t, "tc", tcSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
		recs := planDCV(t, d, dcvInstructions("example.com", "www"), wantRecords("tc", time.Minute, "example.com", "www"))
		if _, err := d.Publish(ctx, recs); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		published := f.snapshot()
		f.deny = tcActionIs("DeleteRecord")
		wantAPIError(t, "Cleanup", d.Cleanup(ctx, recs), "DeleteRecord")
		if after := f.snapshot(); !slices.Equal(after, published) {
			t.Errorf("records deleted against a refusal:\n%s", strings.Join(after, "\n"))
		}
		// Once allowed, Cleanup finishes the job.
		f.deny = nil
		if err := d.Cleanup(ctx, recs); err != nil {
			t.Fatalf("Cleanup once allowed: %v", err)
		}
		checkAsBefore(t, "zone after Cleanup", before, f.snapshot())
	})
	// A refused write is reported, nothing counts as set, and the zone is
	// as it was: a stale record to modify, or none to create.
	for _, tt := range []struct {
		action string
		stale  bool
	}{{"ModifyRecord", true}, {"CreateRecord", false}} {
		t.Run(tt.action+" refused", func(t *testing.T) {
			f := newFakeTencent(t, "example.com")
			if tt.stale {
				f.mu.Lock()
				f.add(f.domain("example.com"), seedRR{Name: dcvLabel + ".example.com", Type: "CNAME", TTL: 600, Value: "stale.dcv-target.example"}, tcLine)
				f.mu.Unlock()
			}
			before := f.snapshot()
			d := newDNS(t, "tc", tcSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
			recs := planDCV(t, d, dcvInstructions("example.com"), wantRecords("tc", time.Minute, "example.com"))
			f.deny = tcActionIs(tt.action)
			rep, err := d.Publish(ctx, recs)
			wantAPIError(t, "Publish", err, tt.action)
			if len(rep.Set) != 0 {
				t.Errorf("Publish report %+v; want nothing reported as set", rep)
			}
			if after := f.snapshot(); !slices.Equal(after, before) {
				t.Errorf("zone changed against a refusal:\n%s", strings.Join(after, "\n"))
			}
		})
	}
	t.Run("every action refused", func(t *testing.T) {
		f := newFakeTencent(t, "example.com")
		d := newDNS(t, "tc", tcSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
		recs := planDCV(t, d, dcvInstructions("example.com"), wantRecords("tc", time.Minute, "example.com"))
		if _, err := d.Publish(ctx, recs); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		published := f.snapshot()
		f.log.take()
		f.deny = func(apiRequest) bool { return true }
		// A refused list is an error, not an empty zone.
		wantAPIError(t, "Cleanup", d.Cleanup(ctx, recs), "DescribeRecordList")
		_, err := d.Publish(ctx, []providers.Record{{Provider: "tc", Zone: "example.com.", Name: dcvLabel + ".new.example.com", Target: "new.dcv-target.example", TTL: time.Minute}})
		wantAPIError(t, "Publish", err, "DescribeRecordList")
		if after := f.snapshot(); !slices.Equal(after, published) {
			t.Errorf("zone changed against a refusal:\n%s", strings.Join(after, "\n"))
		}
		reqs := f.log.take()
		if writes := filterRequests(reqs, isTcWrite); len(writes) != 0 {
			t.Errorf("wrote after a refused read: %q", tcActions(writes))
		}
		checkTcAuth(t, reqs)
	})
}

// TestTencentcloudRefusesRegion: with region set, upstream sent to
// dnspod.<region>.tencentcloudapi.com but signed for
// dnspod.tencentcloudapi.com, so every request failed the signature check.
// DNSPod is global: the key is refused when the config is read, with a
// reason, before any request. The provider itself only ever uses the
// global endpoint, for which it signs.
func TestTencentcloudRefusesRegion(t *testing.T) {
	f := newFakeTencent(t, "example.com")
	_, _, err := providers.New("tc", tcSection(t, map[string]any{"zone": "example.com", "region": "ap-guangzhou"}), providers.Options{})
	if err == nil {
		t.Fatal("New accepted the region key")
	}
	for _, s := range []string{"dns.tc.region", "global", "dnspod.tencentcloudapi.com"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("New error %q does not say %q", err, s)
		}
	}
	if reqs := f.log.take(); len(reqs) != 0 {
		t.Errorf("New with a region asked the API: %q", requestLines(reqs))
	}

	// Set by hand past the check, the region changes nothing: the
	// requests go to the global host, signed for it (the fake checks both).
	p := &providers.TencentCloud{}
	p.SecretId, p.SecretKey, p.Region = tcSecretID, tcSecretKey, "ap-guangzhou"
	recs, err := p.GetRecords(context.Background(), "example.com.")
	if err != nil {
		t.Fatalf("GetRecords: %v", err)
	}
	if want := len(fakeUnrelated("example.com")); len(recs) != want {
		t.Errorf("GetRecords returned %d records, want %d", len(recs), want)
	}
	reqs := f.log.take()
	if len(reqs) != 1 || reqs[0].Host != tcHost {
		t.Errorf("requests %q, want one to %s", requestLines(reqs), tcHost)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.badSignatures != 0 {
		t.Errorf("%d requests failed the signature check", f.badSignatures)
	}
}

// TestTencentcloudLibdnsSemantics: SetRecords makes the given records the
// whole RRset at their name and type (keeping what is already right,
// modifying in place, deleting what is left over), and DeleteRecords
// deletes by ID exactly the records that match, with empty Data as a
// wildcard, ignoring those not there; records at look-alike names stay.
func TestTencentcloudLibdnsSemantics(t *testing.T) {
	ctx := context.Background()
	f := newFakeTencent(t, "example.com")
	f.mu.Lock()
	d := f.domain("example.com")
	a := f.add(d, seedRR{Name: "multi.example.com", Type: "TXT", TTL: 600, Value: "a"}, tcLine)
	b := f.add(d, seedRR{Name: "multi.example.com", Type: "TXT", TTL: 600, Value: "b"}, tcLine)
	f.add(d, seedRR{Name: "multix.example.com", Type: "TXT", TTL: 600, Value: "a"}, tcLine)
	f.add(d, seedRR{Name: "x.multi.example.com", Type: "TXT", TTL: 600, Value: "b"}, tcLine)
	f.mu.Unlock()
	others := func() []string {
		return append(f.tcAt("example.com", "multix", "TXT"), f.tcAt("example.com", "x.multi", "TXT")...)
	}
	othersBefore := others()
	p := &providers.TencentCloud{}
	p.SecretId, p.SecretKey = tcSecretID, tcSecretKey
	txt := func(text string) libdns.Record {
		return libdns.TXT{Name: "multi", TTL: 600 * time.Second, Text: text}
	}

	if _, err := p.SetRecords(ctx, "example.com.", []libdns.Record{txt("b"), txt("c")}); err != nil {
		t.Fatalf("SetRecords b, c: %v", err)
	}
	if got, want := f.tcAt("example.com", "multi", "TXT"), []string{fmt.Sprintf("%d c", a.RecordID), fmt.Sprintf("%d b", b.RecordID)}; !slices.Equal(got, want) {
		t.Errorf("after SetRecords b, c: %q, want %q (b kept, a modified into c)", got, want)
	}
	if _, err := p.SetRecords(ctx, "example.com.", []libdns.Record{txt("c")}); err != nil {
		t.Fatalf("SetRecords c: %v", err)
	}
	if got, want := f.tcAt("example.com", "multi", "TXT"), []string{fmt.Sprintf("%d c", a.RecordID)}; !slices.Equal(got, want) {
		t.Errorf("after SetRecords c: %q, want %q", got, want)
	}
	checkTcAuth(t, f.log.take())

	deleted, err := p.DeleteRecords(ctx, "example.com.", []libdns.Record{txt("nothere"), libdns.RR{Name: "gone", Type: "TXT"}})
	if err != nil || len(deleted) != 0 {
		t.Errorf("DeleteRecords of absent records = %v, %v; want none deleted, no error", deleted, err)
	}
	deleted, err = p.DeleteRecords(ctx, "example.com.", []libdns.Record{libdns.RR{Name: "multi", Type: "TXT"}})
	if err != nil || len(deleted) != 1 || deleted[0].RR().Data != "c" {
		t.Errorf("DeleteRecords multi TXT (any value) = %v, %v; want c deleted", deleted, err)
	}
	if got := f.tcAt("example.com", "multi", "TXT"); len(got) != 0 {
		t.Errorf("after DeleteRecords: %q left", got)
	}
	for _, r := range filterRequests(f.log.take(), isTcWrite) {
		if act := tcAction(r); !strings.HasPrefix(act, "DeleteRecord ") || !strings.Contains(act, fmt.Sprintf(" RecordId=%d", a.RecordID)) {
			t.Errorf("DeleteRecords wrote %s; want only DeleteRecord of %d", act, a.RecordID)
		}
	}
	if got := others(); !slices.Equal(got, othersBefore) {
		t.Errorf("look-alike records changed: %q, were %q", got, othersBefore)
	}
}
