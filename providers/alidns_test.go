package providers_test

import (
	"context"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// The real github.com/libdns/alidns provider (v1.0.7) against a fake
// Alibaba Cloud DNS RPC API (version 2015-01-09, ACS3-HMAC-SHA256
// signatures, parameters in a form body, the action in x-acs-action). The
// provider has a constant URL and uses http.DefaultClient, so these tests
// swap http.DefaultClient.Transport: they are process-global and must not
// run in parallel. What the provider does, read from its source and checked
// here request by request:
//   - GetRecords: DescribeDomainRecords with DomainName only. It asks for
//     no page, so it sees the first 20 records of the zone (the API's
//     default page size);
//   - SetRecords: for each record, DescribeDomainRecords searching
//     RRKeyWord/TypeKeyWord/ValueKeyWord (SearchMode COMBINATION), then
//     DescribeDomains (the zone's edition), then AddDomainRecord (none
//     found) or DeleteDomainRecord + AddDomainRecord (found at the same RR):
//     one HTTP write per new record, so dcvd's one SetRecords call per zone
//     is contiguous writes per zone; the TTL is raised to 600 s unless the
//     zone is on an enterprise edition;
//   - DeleteRecords of records read by GetRecords: DescribeDomains, then
//     DeleteDomainRecord by RecordId, per record.

const (
	aliHost   = "alidns.aliyuncs.com"
	aliKey    = "LTAI5tFAKEdcvdKEY0001"
	aliSecret = "ali-secret-3f9b2c7e1d5a8"
)

// aliRecord is a DNS record as the API shows it.
type aliRecord struct {
	RecordID   string `json:"RecordId"`
	DomainName string `json:"DomainName"`
	RR         string `json:"RR"`
	Type       string `json:"Type"`
	Value      string `json:"Value"`
	TTL        int    `json:"TTL"`
	Line       string `json:"Line"`
	Status     string `json:"Status"`
	Locked     bool   `json:"Locked"`
}

type aliDomain struct {
	name, edition string
	records       []aliRecord // oldest first; listed newest first
}

// fakeAlidns is an Alibaba Cloud DNS API holding domains in memory. It
// checks the signature of every request with the test's key. A request
// that deny refuses is answered Forbidden.
type fakeAlidns struct {
	fakeServer
	domains []*aliDomain
	nextID  int
}

// newFakeAlidns starts a fake holding domains on the free edition, and
// points http.DefaultClient at it until the test ends.
func newFakeAlidns(t *testing.T, domains ...string) *fakeAlidns {
	t.Helper()
	f := &fakeAlidns{}
	for _, name := range domains {
		d := &aliDomain{name: strings.TrimSuffix(name, "."), edition: "mianfei"}
		for _, s := range fakeUnrelated(d.name) {
			f.add(d, s)
		}
		f.domains = append(f.domains, d)
	}
	f.startAsDefaultClient(t, "fake alidns", aliHost, f)
	return f
}

func (f *fakeAlidns) add(d *aliDomain, s seedRR) aliRecord {
	f.nextID++
	rr := strings.TrimSuffix(strings.TrimSuffix(s.Name, d.name), ".")
	if rr == "" {
		rr = "@"
	}
	rec := aliRecord{RecordID: strconv.Itoa(1000000 + f.nextID), DomainName: d.name, RR: rr, Type: s.Type,
		Value: s.Value, TTL: s.TTL, Line: "default", Status: "ENABLE"}
	d.records = append(d.records, rec)
	return rec
}

func (f *fakeAlidns) domain(name string) *aliDomain {
	return find(f.domains, func(d *aliDomain) bool { return strings.EqualFold(d.name, name) })
}

// recordID returns the ID of the CNAME at name (FQDN), or "".
func (f *fakeAlidns) recordID(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range f.domains {
		for _, r := range d.records {
			if r.Type == "CNAME" && r.RR+"."+d.name == name {
				return r.RecordID
			}
		}
	}
	return ""
}

func (f *fakeAlidns) snapshot() []string {
	return f.lines(func(emit func(string, ...any)) {
		for _, d := range f.domains {
			for _, r := range d.records {
				emit("%s %s %d %s %s", d.name, r.RR, r.TTL, r.Type, r.Value)
			}
		}
	})
}

// view is f as checkRepublishThenCleanup sees it: the writes are its write actions.
func (f *fakeAlidns) view() fakeView[apiRequest] {
	return fakeView[apiRequest]{takeWrites: logWrites(&f.log, isAliWrite), describe: aliActions, snapshot: f.snapshot}
}

// verifyACS3 checks r's ACS3-HMAC-SHA256 signature as Alibaba Cloud does.
func verifyACS3(r *http.Request, body []byte, accessKey, secret string) error {
	fields, err := authFields(r, "ACS3-HMAC-SHA256")
	if err != nil {
		return err
	}
	if fields["Credential"] != accessKey {
		return fmt.Errorf("credential %q, want the key ID %s", fields["Credential"], accessKey)
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	for _, h := range []string{"host", "x-acs-action", "x-acs-content-sha256", "x-acs-date", "x-acs-signature-nonce", "x-acs-version"} {
		if !slices.Contains(signed, h) {
			return fmt.Errorf("SignedHeaders %q lack %s", fields["SignedHeaders"], h)
		}
	}
	payload := sha256Hex(body)
	if h := r.Header.Get("X-Acs-Content-Sha256"); h != payload {
		return fmt.Errorf("x-acs-content-sha256 %s is not the body's hash %s", h, payload)
	}
	var headers strings.Builder
	for _, h := range signed {
		v := r.Header.Get(h)
		if h == "host" {
			v = r.Host
		}
		headers.WriteString(h + ":" + strings.TrimSpace(v) + "\n")
	}
	canonical := r.Method + "\n" + r.URL.EscapedPath() + "\n" + r.URL.RawQuery + "\n" + headers.String() + "\n" + fields["SignedHeaders"] + "\n" + payload
	if want := hex.EncodeToString(hmacSHA256([]byte(secret), "ACS3-HMAC-SHA256\n"+sha256Hex([]byte(canonical)))); !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return errors.New("signature does not match the request signed with the test's secret")
	}
	return nil
}

func (f *fakeAlidns) reply(w http.ResponseWriter, status int, body map[string]any) {
	body["RequestId"] = "FAKE-REQUEST-ID"
	f.writeJSON(w, status, "application/json;charset=utf-8", body)
}

func (f *fakeAlidns) fail(w http.ResponseWriter, status int, code, msg string) {
	f.reply(w, status, map[string]any{"HostId": aliHost, "Code": code, "Message": msg,
		"Recommend": "https://api.aliyun.com/troubleshoot?q=" + code + "&product=Alidns"})
}

// ServeHTTP implements the actions the provider uses.
func (f *fakeAlidns) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := f.receive(r)
	if err != nil {
		f.fail(w, http.StatusBadRequest, "InvalidParameter", err.Error())
		return
	}
	if err := verifyACS3(r, req.Body, aliKey, aliSecret); err != nil {
		f.t.Errorf("fake alidns: %s: %v", aliAction(req), err)
		f.fail(w, http.StatusBadRequest, "SignatureDoesNotMatch", err.Error())
		return
	}
	if req.Method != http.MethodPost || req.Path != "/" || r.Header.Get("X-Acs-Version") != "2015-01-09" ||
		r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		f.t.Errorf("fake alidns: %s %s, version %q, Content-Type %q; want a form POST to / for version 2015-01-09",
			req.Method, req.Path, r.Header.Get("X-Acs-Version"), r.Header.Get("Content-Type"))
	}
	if f.refused(req) {
		f.fail(w, http.StatusForbidden, "Forbidden.RAM", "User not authorized to operate on the specified resource (AccessKeySecret "+aliSecret+")")
		return
	}
	p, err := url.ParseQuery(string(req.Body))
	if err != nil {
		f.fail(w, http.StatusBadRequest, "InvalidParameter", "malformed form body")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch action := r.Header.Get("X-Acs-Action"); action {
	case "DescribeDomains":
		f.describeDomains(w, p)
	case "DescribeDomainRecords":
		f.describeRecords(w, p)
	case "DescribeSubDomainRecords":
		f.describeSubDomain(w, p)
	case "DescribeDomainRecordInfo":
		f.describeRecordInfo(w, p)
	case "AddDomainRecord":
		f.addRecord(w, p)
	case "UpdateDomainRecord", "DeleteDomainRecord":
		f.changeRecord(w, action, p)
	default:
		f.fail(w, http.StatusNotFound, "InvalidAction.NotFound", "Specified api is not found, please check your url and method.")
	}
}

func (f *fakeAlidns) describeDomains(w http.ResponseWriter, p url.Values) {
	type domainJSON struct {
		DomainName  string `json:"DomainName"`
		DomainID    string `json:"DomainId"`
		VersionCode string `json:"VersionCode"`
		RecordCount int    `json:"RecordCount"`
	}
	list := []domainJSON{}
	for _, d := range f.domains {
		kw := strings.ToLower(p.Get("KeyWord"))
		if p.Get("SearchMode") == "EXACT" && kw != d.name || !strings.Contains(d.name, kw) {
			continue
		}
		list = append(list, domainJSON{DomainName: d.name, DomainID: "dom-" + d.name, VersionCode: d.edition, RecordCount: len(d.records)})
	}
	f.reply(w, http.StatusOK, map[string]any{"TotalCount": len(list), "PageNumber": 1, "PageSize": 20, "Domains": map[string]any{"Domain": list}})
}

func (f *fakeAlidns) describeRecords(w http.ResponseWriter, p url.Values) {
	mode := p.Get("SearchMode")
	contains := func(s, sub string) bool { return strings.Contains(strings.ToLower(s), strings.ToLower(sub)) }
	f.describeList(w, p, func(*aliDomain) bool { return true }, func(_ *aliDomain, r aliRecord) bool {
		switch mode {
		case "ADVANCED", "COMBINATION":
			// Keyword searches match anywhere in the RR and the value
			// (%keyword%); the type must match whole.
			if kw := p.Get("RRKeyWord"); kw != "" && !contains(r.RR, kw) {
				return false
			}
			if kw := p.Get("TypeKeyWord"); kw != "" && !strings.EqualFold(r.Type, kw) {
				return false
			}
			if kw := p.Get("ValueKeyWord"); kw != "" && !contains(r.Value, kw) {
				return false
			}
		case "EXACT":
			if kw := p.Get("KeyWord"); kw != "" && !strings.EqualFold(r.RR, kw) && !strings.EqualFold(r.Value, kw) {
				return false
			}
		default: // LIKE
			if kw := p.Get("KeyWord"); kw != "" && !contains(r.RR, kw) && !contains(r.Value, kw) {
				return false
			}
		}
		return true
	})
}

// describeList answers a list action: the records of the domain named
// DomainName (which valid must accept) that keep accepts, newest first,
// the page that PageNumber and PageSize ask for.
func (f *fakeAlidns) describeList(w http.ResponseWriter, p url.Values, valid func(*aliDomain) bool, keep func(*aliDomain, aliRecord) bool) {
	d := f.domain(p.Get("DomainName"))
	if d == nil || !valid(d) {
		f.fail(w, http.StatusBadRequest, "InvalidDomainName.NoExist", "The specified domain name does not exist.")
		return
	}
	num, size, ok := aliPage(p)
	if !ok {
		f.fail(w, http.StatusBadRequest, "InvalidParameter", "PageNumber or PageSize out of range")
		return
	}
	var list []aliRecord
	for i := len(d.records) - 1; i >= 0; i-- { // newest first
		if keep(d, d.records[i]) {
			list = append(list, d.records[i])
		}
	}
	start := min((num-1)*size, len(list))
	out := append([]aliRecord{}, list[start:min(start+size, len(list))]...)
	f.reply(w, http.StatusOK, map[string]any{"TotalCount": len(list), "PageNumber": num, "PageSize": size, "DomainRecords": map[string]any{"Record": out}})
}

// aliPage reads PageNumber and PageSize as the API does: 1 and 20 by
// default, at most 500 a page.
func aliPage(p url.Values) (num, size int, ok bool) {
	num, size = 1, 20
	if v := p.Get("PageNumber"); v != "" {
		num, _ = strconv.Atoi(v)
	}
	if v := p.Get("PageSize"); v != "" {
		size, _ = strconv.Atoi(v)
	}
	return num, size, num >= 1 && size >= 1 && size <= 500
}

// describeSubDomain answers DescribeSubDomainRecords: the records whose
// full name is SubDomain exactly (of the Type given, if any), newest first,
// paged.
func (f *fakeAlidns) describeSubDomain(w http.ResponseWriter, p url.Values) {
	sub := strings.ToLower(p.Get("SubDomain"))
	if sub == "" {
		f.fail(w, http.StatusBadRequest, "MissingSubDomain", "SubDomain is mandatory for this action.")
		return
	}
	valid := func(d *aliDomain) bool { return strings.HasSuffix(sub, "."+d.name) || sub == d.name }
	f.describeList(w, p, valid, func(d *aliDomain, r aliRecord) bool {
		full := r.RR + "." + d.name
		if r.RR == "@" {
			full = d.name
		}
		t := p.Get("Type")
		return strings.EqualFold(full, sub) && (t == "" || strings.EqualFold(r.Type, t))
	})
}

// describeRecordInfo answers DescribeDomainRecordInfo: one record by ID,
// its fields at the top level of the answer.
func (f *fakeAlidns) describeRecordInfo(w http.ResponseWriter, p url.Values) {
	id := p.Get("RecordId")
	for _, d := range f.domains {
		for _, r := range d.records {
			if r.RecordID == id {
				f.reply(w, http.StatusOK, map[string]any{"RecordId": r.RecordID, "DomainName": r.DomainName, "DomainId": "dom-" + d.name,
					"RR": r.RR, "Type": r.Type, "Value": r.Value, "TTL": r.TTL, "Line": r.Line, "Status": r.Status, "Locked": r.Locked})
				return
			}
		}
	}
	f.fail(w, http.StatusBadRequest, "DomainRecordNotBelongToUser", "The DNS record does not exist or does not belong to you.")
}

// conflict says why a record cannot be added next to the records of d.
func (d *aliDomain) conflict(rec aliRecord, except string) (code, msg string) {
	for _, e := range d.records {
		if e.RecordID == except || !strings.EqualFold(e.RR, rec.RR) {
			continue
		}
		if e.Type == rec.Type && e.Value == rec.Value {
			return "DomainRecordDuplicate", "The DNS record already exists."
		}
		if e.Type == "CNAME" || rec.Type == "CNAME" {
			return "DomainRecordConflict", "The DNS record conflicts with other records."
		}
	}
	return "", ""
}

func (f *fakeAlidns) addRecord(w http.ResponseWriter, p url.Values) {
	d := f.domain(p.Get("DomainName"))
	if d == nil {
		f.fail(w, http.StatusBadRequest, "InvalidDomainName.NoExist", "The specified domain name does not exist.")
		return
	}
	ttl, err := strconv.Atoi(p.Get("TTL"))
	if p.Get("RR") == "" || p.Get("Type") == "" || p.Get("Value") == "" || err != nil {
		f.fail(w, http.StatusBadRequest, "MissingParameter", "RR, Type, Value and TTL are required")
		return
	}
	f.nextID++
	rec := aliRecord{RecordID: strconv.Itoa(1000000 + f.nextID), DomainName: d.name, RR: p.Get("RR"), Type: p.Get("Type"),
		Value: p.Get("Value"), TTL: ttl, Line: "default", Status: "ENABLE"}
	if code, msg := d.conflict(rec, ""); code != "" {
		f.fail(w, http.StatusBadRequest, code, msg)
		return
	}
	d.records = append(d.records, rec)
	f.reply(w, http.StatusOK, map[string]any{"RecordId": rec.RecordID})
}

func (f *fakeAlidns) changeRecord(w http.ResponseWriter, action string, p url.Values) {
	id := p.Get("RecordId")
	for _, d := range f.domains {
		i := slices.IndexFunc(d.records, func(r aliRecord) bool { return r.RecordID == id })
		if i < 0 {
			continue
		}
		if action == "DeleteDomainRecord" {
			d.records = slices.Delete(d.records, i, i+1)
			f.reply(w, http.StatusOK, map[string]any{"RecordId": id})
			return
		}
		rec := d.records[i]
		rec.RR, rec.Type, rec.Value = p.Get("RR"), p.Get("Type"), p.Get("Value")
		if ttl, err := strconv.Atoi(p.Get("TTL")); err == nil {
			rec.TTL = ttl
		}
		if code, msg := d.conflict(rec, id); code != "" {
			f.fail(w, http.StatusBadRequest, code, msg)
			return
		}
		if rec == d.records[i] {
			f.fail(w, http.StatusBadRequest, "DomainRecordDuplicate", "The DNS record already exists.")
			return
		}
		d.records[i] = rec
		f.reply(w, http.StatusOK, map[string]any{"RecordId": id})
		return
	}
	f.fail(w, http.StatusBadRequest, "DomainRecordNotBelongToUser", "The DNS record does not exist or does not belong to you.")
}

// aliAction is a request's action and parameters, for comparisons.
func aliAction(r apiRequest) string {
	p, err := url.ParseQuery(string(r.Body))
	return actionLine(r.Header.Get("X-Acs-Action"), p, err, func(vs []string) string { return strings.Join(vs, ",") })
}

func aliActions(reqs []apiRequest) []string { return describeEach(reqs, aliAction) }

var isAliWrite = actionIn("X-Acs-Action", "AddDomainRecord", "UpdateDomainRecord", "DeleteDomainRecord")

// aliSection is the [dns.ali] section: the key ID inline (not a secret),
// the secret from a file.
func aliSection(t *testing.T, extra map[string]any) map[string]any {
	return secretSection(t, map[string]any{"provider": "alidns", "access_key_id": aliKey}, "access_key_secret_file", aliSecret, extra)
}

// checkAliAuth checks that every request names the key ID and is signed,
// and that the secret appears nowhere in any request.
func checkAliAuth(t *testing.T, reqs []apiRequest) {
	t.Helper()
	checkSignedBy(t, reqs, aliAction, "ACS3-HMAC-SHA256 Credential="+aliKey+",", ",Signature=", aliSecret)
}

// aliLookups are the reads with which dcvd finds what the names of recs
// hold: one exact query per name.
func aliLookups(recs []providers.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprintf("DescribeSubDomainRecords DomainName=%s PageNumber=1 PageSize=500 SubDomain=%s", strings.TrimSuffix(r.Zone, "."), r.Name))
	}
	return out
}

// aliPublishActions is what AppendRecords sends for each new record of
// zone. dcvd does not use alidns's SetRecords (Kind.SetUnsafe): it finds
// the record to replace by a substring search and can rewrite another one.
func aliPublishActions(zone string, ttl int, r providers.Record) []string {
	zone = strings.TrimSuffix(zone, ".")
	rr := strings.TrimSuffix(r.Name, "."+zone)
	return []string{
		fmt.Sprintf("DescribeDomains KeyWord=%s SearchMode=EXACT", zone),
		fmt.Sprintf("AddDomainRecord DomainName=%s RR=%s TTL=%d Type=CNAME Value=%s.", zone, rr, ttl, r.Target),
	}
}

func TestAlidnsPublishOneZone(t *testing.T) {
	ctx := context.Background()
	f := newFakeAlidns(t, "example.com", "example.org")
	before := f.snapshot()
	d := newDNS(t, "ali", aliSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	recs := planOneZone(t, d, "ali", &f.fakeServer, aliActions)

	// One AppendRecords call; the provider makes it a zone lookup and an
	// AddDomainRecord per record. The free edition's minimum TTL
	// (600 s) replaces the section's 60 s.
	mustPublish(t, d, recs, 1)
	reqs := f.log.take()
	checkAliAuth(t, reqs)
	// dcvd reads the names it publishes, not the zone's listing (which
	// alidns cuts at 20 records).
	lookups := aliLookups(recs)
	want := slices.Clone(lookups)
	for _, r := range recs {
		want = append(want, aliPublishActions("example.com", 600, r)...)
	}
	checkLines(t, t.Fatalf, "Publish requests", aliActions(reqs), want)
	published := f.snapshot()
	wantPublished := slices.Clone(before)
	for _, r := range recs {
		wantPublished = append(wantPublished, fmt.Sprintf("example.com %s 600 CNAME %s.", strings.TrimSuffix(r.Name, ".example.com"), r.Target))
	}
	sort.Strings(wantPublished)
	if !slices.Equal(published, wantPublished) {
		t.Errorf("zones after Publish:\n%s\nwant:\n%s", strings.Join(published, "\n"), strings.Join(wantPublished, "\n"))
	}
	ids := map[string]bool{}
	for _, r := range recs {
		ids[f.recordID(r.Name)] = true
	}

	mustRepublish(t, d, recs)
	if got := aliActions(f.log.take()); !slices.Equal(got, lookups) {
		t.Errorf("second Publish requests %q, want only %q", got, lookups)
	}

	// Cleanup after a restart, by a new DNS from the same config.
	d2 := newDNS(t, "ali", aliSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	if err := d2.Cleanup(ctx, recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	reqs = f.log.take()
	checkAliAuth(t, reqs)
	deletes := filterRequests(reqs, isAliWrite)
	if len(deletes) != len(recs) {
		t.Errorf("Cleanup made %d writes, want %d: %q", len(deletes), len(recs), aliActions(reqs))
	}
	for _, del := range deletes {
		a := aliAction(del)
		id, ok := strings.CutPrefix(a, "DeleteDomainRecord RecordId=")
		if !ok || !ids[id] {
			t.Errorf("Cleanup sent %q; want DeleteDomainRecord of the published records %v", a, ids)
		}
		delete(ids, id)
	}
	checkAsBefore(t, "zones after Cleanup", before, f.snapshot())
	checkSecondCleanup(t, d2, recs, f.view())
}

func TestAlidnsKeepsTTLOnEnterpriseEdition(t *testing.T) {
	f := newFakeAlidns(t, "example.com")
	f.domains[0].edition = "version_enterprise_basic"
	d := newDNS(t, "ali", aliSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	recs := planDCV(t, d, dcvInstructions("example.com"), wantRecords("ali", time.Minute, "example.com"))
	if _, err := d.Publish(context.Background(), recs); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	writes := aliActions(filterRequests(f.log.take(), isAliWrite))
	if want := aliPublishActions("example.com", 60, recs[0])[1:]; !slices.Equal(writes, want) {
		t.Errorf("writes %q, want %q", writes, want)
	}
}

func TestAlidnsPublishTwoZones(t *testing.T) {
	ctx := context.Background()
	f := newFakeAlidns(t, "example.com", "example.org", "example.net")
	before := f.snapshot()
	// The provider cannot list zones: the SOA walk finds them.
	d := newDNS(t, "ali", aliSection(t, map[string]any{"resolvers": []any{zoneResolver(t, "example.com", "example.org")}}), providers.Options{})
	recs := planTwoZones(t, d, "ali", "shop", "mail")

	mustPublish(t, d, recs, 2)
	reqs := f.log.take()
	checkAliAuth(t, reqs)
	// One AppendRecords per zone: a lookup of each name, then that zone's records.
	var wantActions []string
	for _, zone := range []string{"example.com.", "example.org."} {
		var inZone []providers.Record
		for _, r := range recs {
			if r.Zone == zone {
				inZone = append(inZone, r)
			}
		}
		wantActions = append(wantActions, aliLookups(inZone)...)
		for _, r := range inZoneOrder(recs) {
			if r.Zone == zone {
				wantActions = append(wantActions, aliPublishActions(zone, 600, r)...)
			}
		}
	}
	checkLines(t, t.Fatalf, "Publish requests", aliActions(reqs), wantActions)

	checkRepublishThenCleanup(t, ctx, d, recs, f.view(), before, nil)
}

// TestAlidnsNeverRewritesAnotherRecord is the case that made dcvd stop
// using alidns's SetRecords: a CA may give every name the same target, and
// the provider's substring search then picks the record of another name.
// Publishing the apex record must add it and leave _c0ffee.www alone; a
// stale record at the name itself is replaced by ID.
func TestAlidnsNeverRewritesAnotherRecord(t *testing.T) {
	ctx := context.Background()
	f := newFakeAlidns(t, "example.com")
	d := newDNS(t, "ali", aliSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
	apex := dcvLabel + ".example.com"
	www := dcvLabel + ".www.example.com"
	shared := "same.target.sectigo.com"
	f.mu.Lock()
	wwwRec := f.add(f.domains[0], seedRR{Name: www, Type: "CNAME", Value: shared + ".", TTL: 600})
	stale := f.add(f.domains[0], seedRR{Name: dcvLabel + ".shop.example.com", Type: "CNAME", Value: "stale.sectigo.com.", TTL: 600})
	f.mu.Unlock()

	recs, err := d.Plan(ctx, []reseller.CNAMEInstruction{
		{Name: apex, Target: shared},
		{Name: dcvLabel + ".shop.example.com", Target: "fresh.sectigo.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := d.Publish(ctx, recs)
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if rep.Calls != 2 || len(rep.Set) != 2 {
		t.Errorf("report %+v; want 2 records set with a delete and an append", rep)
	}
	writes := aliActions(filterRequests(f.log.take(), isAliWrite))
	want := []string{
		"DeleteDomainRecord RecordId=" + stale.RecordID,
		"AddDomainRecord DomainName=example.com RR=" + dcvLabel + " TTL=600 Type=CNAME Value=" + shared + ".",
		"AddDomainRecord DomainName=example.com RR=" + dcvLabel + ".shop TTL=600 Type=CNAME Value=fresh.sectigo.com.",
	}
	if !slices.Equal(writes, want) {
		t.Fatalf("writes:\n%s\nwant:\n%s", strings.Join(writes, "\n"), strings.Join(want, "\n"))
	}
	if id := f.recordID(www); id != wwwRec.RecordID {
		t.Errorf("the www record was rewritten: id %q, want %q", id, wwwRec.RecordID)
	}
	snap := strings.Join(f.snapshot(), "\n")
	for _, line := range []string{
		"example.com " + dcvLabel + ".www 600 CNAME " + shared + ".",
		"example.com " + dcvLabel + " 600 CNAME " + shared + ".",
		"example.com " + dcvLabel + ".shop 600 CNAME fresh.sectigo.com.",
	} {
		if !strings.Contains(snap, line) {
			t.Errorf("zone lacks %q:\n%s", line, snap)
		}
	}
	if strings.Contains(snap, "stale.sectigo.com") {
		t.Errorf("stale record kept:\n%s", snap)
	}
}

// seedAliFiller adds n records to domain d, newer than what it holds: hosts,
// and look-alikes of the DCV names of recs (same target, a name that
// contains the DCV name or is contained in it) that a substring search
// would match.
func (f *fakeAlidns) seedAliFiller(d *aliDomain, prefix string, n int, recs []providers.Record) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range n {
		if len(recs) > 0 && i%10 == 0 {
			r := recs[(i/10)%len(recs)]
			f.add(d, seedRR{Name: fmt.Sprintf("%s%dx%s", prefix, i, r.Name), Type: "CNAME", TTL: 600, Value: r.Target + "."})
			continue
		}
		f.add(d, seedRR{Name: fmt.Sprintf("%s%d.%s", prefix, i, d.name), Type: "A", TTL: 600, Value: fmt.Sprintf("198.51.100.%d", i%250+1)})
	}
}

// TestAlidnsBigZone: with 500 records in the zone and 30 more added while
// the validation is pending, so that dcvd's records are far past the 20
// that alidns's GetRecords sees, a republish finds its records unchanged
// and Cleanup (after a restart) deletes exactly them, by ID or, for records
// kept without one, by an exact query of their names. No request reads the
// whole zone, and no other record is deleted, including the look-alikes
// that hold dcvd's targets.
func TestAlidnsBigZone(t *testing.T) {
	for _, tt := range []struct {
		name string
		// keep turns the records Publish left into the ones Cleanup gets.
		keep func(f *fakeAlidns, recs []providers.Record) []providers.Record
		// lookups are the reads Cleanup makes, given the IDs published.
		lookups func(recs []providers.Record) []string
	}{
		{
			name: "by ID",
			keep: func(_ *fakeAlidns, recs []providers.Record) []providers.Record { return recs },
			lookups: func(recs []providers.Record) []string {
				var out []string
				for _, r := range recs {
					out = append(out, "DescribeDomainRecordInfo RecordId="+r.ID)
				}
				return out
			},
		},
		{
			name: "planned before IDs were kept",
			keep: func(_ *fakeAlidns, recs []providers.Record) []providers.Record {
				out := slices.Clone(recs)
				for i := range out {
					out[i].ID = ""
				}
				return out
			},
			lookups: aliLookups,
		},
		{
			// Someone deleted dcvd's records and made them again by
			// hand: the IDs kept name nothing, the names still hold
			// dcvd's records.
			name: "IDs stale",
			keep: func(f *fakeAlidns, recs []providers.Record) []providers.Record {
				f.mu.Lock()
				defer f.mu.Unlock()
				d := f.domains[0]
				for _, r := range recs {
					i := slices.IndexFunc(d.records, func(e aliRecord) bool { return e.RecordID == r.ID })
					d.records = slices.Delete(d.records, i, i+1)
					f.add(d, seedRR{Name: r.Name, Type: "CNAME", TTL: 600, Value: r.Target + "."})
				}
				return recs
			},
			lookups: func(recs []providers.Record) []string {
				var out []string
				for _, r := range recs {
					out = append(out, "DescribeDomainRecordInfo RecordId="+r.ID, aliLookups([]providers.Record{r})[0])
				}
				return out
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFakeAlidns(t, "example.com")
			d := newDNS(t, "ali", aliSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
			recs := planDCV(t, d, dcvInstructions("example.com", "www", "shop"), wantRecords("ali", time.Minute, "example.com", "www", "shop"))
			f.seedAliFiller(f.domains[0], "old", 500-len(f.domains[0].records), recs)
			before := f.snapshot()
			if n := len(before); n != 500 {
				t.Fatalf("zone holds %d records, want 500", n)
			}

			if _, err := d.Publish(ctx, recs); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			for _, r := range recs {
				if id := f.recordID(r.Name); r.ID == "" || r.ID != id {
					t.Errorf("Publish kept ID %q for %s; the API gave %q", r.ID, r.Name, id)
				}
			}
			// The validation is pending; the zone's owner adds 30 more.
			f.seedAliFiller(f.domains[0], "new", 30, recs)
			during := f.snapshot()
			f.log.take()

			// A retry republishes: every record found, nothing written.
			d = newDNS(t, "ali", aliSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
			rep, err := d.Publish(ctx, recs)
			if err != nil {
				t.Fatalf("republish: %v", err)
			}
			checkReport(t, rep, nil, recs, 0)
			if got := aliActions(f.log.take()); !slices.Equal(got, aliLookups(recs)) {
				t.Errorf("republish requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(aliLookups(recs), "\n"))
			}

			kept := tt.keep(f, slices.Clone(recs))
			var wantIDs []string
			for _, r := range kept {
				wantIDs = append(wantIDs, f.recordID(r.Name))
			}
			d = newDNS(t, "ali", aliSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
			if err := d.Cleanup(ctx, kept); err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
			reqs := f.log.take()
			checkAliAuth(t, reqs)
			reads := aliActions(filterRequests(reqs, func(r apiRequest) bool {
				return !isAliWrite(r) && r.Header.Get("X-Acs-Action") != "DescribeDomains"
			}))
			if want := tt.lookups(kept); !slices.Equal(reads, want) {
				t.Errorf("Cleanup reads:\n%s\nwant:\n%s", strings.Join(reads, "\n"), strings.Join(want, "\n"))
			}
			var deleted []string
			for _, w := range filterRequests(reqs, isAliWrite) {
				id, ok := strings.CutPrefix(aliAction(w), "DeleteDomainRecord RecordId=")
				if !ok {
					t.Errorf("Cleanup wrote %q", aliAction(w))
				}
				deleted = append(deleted, id)
			}
			if !slices.Equal(deleted, wantIDs) {
				t.Errorf("Cleanup deleted IDs %q, want exactly dcvd's %q", deleted, wantIDs)
			}
			wantAfter := slices.DeleteFunc(slices.Clone(during), func(line string) bool {
				return strings.HasPrefix(line, "example.com "+dcvLabel+" ") || strings.HasPrefix(line, "example.com "+dcvLabel+".")
			})
			if after := f.snapshot(); !slices.Equal(after, wantAfter) {
				t.Errorf("zone after Cleanup: %d records, want %d (the 530 others, untouched)", len(after), len(wantAfter))
			}
			if len(wantAfter) != 530 {
				t.Errorf("test setup: %d other records, want 530", len(wantAfter))
			}

			// Again: everything is gone, nothing is written.
			checkSecondCleanup(t, d, kept, f.view())
		})
	}
}
