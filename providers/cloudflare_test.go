package providers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/providers"
)

// The real github.com/libdns/cloudflare provider against a fake Cloudflare
// API v4. What the provider does, read from its source (v0.2.2) and checked
// here request by request:
//   - zone ID: GET /zones?name=ZONE (ZONE with its trailing dot), once per
//     zone per provider value; with zone_token set, that request (only) is
//     sent with the zone token;
//   - GetRecords: GET /zones/ID/dns_records?page=N&per_page=100;
//   - SetRecords: for each record, GET .../dns_records?name=FQDN&type=T,
//     then POST .../dns_records (new) or PATCH .../dns_records/RID
//     (existing): one HTTP write per record, so dcvd's batching is one
//     SetRecords call per zone, and the writes of one zone are contiguous;
//   - DeleteRecords: for each record, GET ...?content.exact=V&name=FQDN&type=T,
//     then DELETE .../dns_records/RID;
//   - ListZones: GET /zones, first page only (Cloudflare pages zones by 20).

const (
	cfHost    = "api.cloudflare.com"
	cfToken   = "cf-api-token-6f1d8e0b2a"
	cfZoneTok = "cf-zone-token-93c2aa71d4"
	cfPrefix  = "/client/v4"
)

// cfRecord is a DNS record as the fake Cloudflare keeps it.
type cfRecord struct {
	ID      string `json:"id"`
	ZoneID  string `json:"zone_id"`
	Zone    string `json:"zone_name"`
	Name    string `json:"name"`
	Type    string `json:"type"`
	Content string `json:"content"`
	TTL     int    `json:"ttl"`
	Proxied bool   `json:"proxied"`
}

type cfFakeZone struct {
	id, name string
	records  []cfRecord
}

// fakeCloudflare is a Cloudflare API v4 holding zones in memory. It checks
// the host and the bearer token of every request.
// A request that deny refuses is answered 403 with a message that quotes
// the token it was sent.
type fakeCloudflare struct {
	fakeServer
	zones  []*cfFakeZone
	nextID int
}

// newFakeCloudflare starts a fake holding zones, each with the unrelated
// records of fakeUnrelated.
func newFakeCloudflare(t *testing.T, zones ...string) *fakeCloudflare {
	t.Helper()
	f := &fakeCloudflare{}
	for _, z := range zones {
		z = strings.TrimSuffix(z, ".")
		zone := &cfFakeZone{id: f.newID(), name: z}
		f.zones = append(f.zones, zone)
		for _, s := range fakeUnrelated(z) {
			f.add(zone, s)
		}
	}
	f.start(t, "fake Cloudflare", cfHost, f)
	return f
}

func (f *fakeCloudflare) newID() string {
	f.nextID++
	return fmt.Sprintf("%032x", 0xcf000000+f.nextID)
}

func (f *fakeCloudflare) add(z *cfFakeZone, s seedRR) cfRecord {
	rec := cfRecord{ID: f.newID(), ZoneID: z.id, Zone: z.name, Name: s.Name, Type: s.Type, Content: s.Value, TTL: s.TTL}
	if s.Type == "TXT" {
		rec.Content = `"` + s.Value + `"`
	}
	z.records = append(z.records, rec)
	return rec
}

// zoneID returns the ID of the zone named name.
func (f *fakeCloudflare) zoneID(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, z := range f.zones {
		if z.name == strings.TrimSuffix(name, ".") {
			return z.id
		}
	}
	f.t.Fatalf("fake Cloudflare has no zone %s", name)
	return ""
}

// recordID returns the ID of the CNAME at name, or "".
func (f *fakeCloudflare) recordID(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, z := range f.zones {
		for _, r := range z.records {
			if r.Name == name && r.Type == "CNAME" {
				return r.ID
			}
		}
	}
	return ""
}

// snapshot lists every record of every zone, one sorted line each.
func (f *fakeCloudflare) snapshot() []string {
	return f.lines(func(emit func(string, ...any)) {
		for _, z := range f.zones {
			for _, r := range z.records {
				emit("%s %s %d %s %s proxied=%v", z.name, r.Name, r.TTL, r.Type, r.Content, r.Proxied)
			}
		}
	})
}

// view is f as checkRepublishThenCleanup sees it: the writes are its non-GET requests.
func (f *fakeCloudflare) view() fakeView[apiRequest] {
	return fakeView[apiRequest]{takeWrites: logWrites(&f.log, isCloudflareWrite), describe: requestLines, snapshot: f.snapshot}
}

type cfError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type cfResultInfo struct {
	Page       int `json:"page"`
	PerPage    int `json:"per_page"`
	Count      int `json:"count"`
	TotalCount int `json:"total_count"`
	TotalPages int `json:"total_pages"`
}

// reply writes Cloudflare's response envelope.
func (f *fakeCloudflare) reply(w http.ResponseWriter, status int, result any, info *cfResultInfo, errs ...cfError) {
	body := map[string]any{
		"success":  len(errs) == 0,
		"errors":   append([]cfError{}, errs...),
		"messages": []any{},
		"result":   result,
	}
	if info != nil {
		body["result_info"] = info
	}
	f.writeJSON(w, status, "application/json", body)
}

// cfPage cuts list to the page the query asks for.
func cfPage[T any](q map[string][]string, list []T, defaultSize, maxSize int) ([]T, *cfResultInfo, error) {
	get := func(key string, def int) (int, error) {
		v := ""
		if vs := q[key]; len(vs) > 0 {
			v = vs[0]
		}
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("invalid %s %q", key, v)
		}
		return n, nil
	}
	num, err := get("page", 1)
	if err != nil {
		return nil, nil, err
	}
	size, err := get("per_page", defaultSize)
	if err != nil {
		return nil, nil, err
	}
	size = min(size, maxSize)
	start := min((num-1)*size, len(list))
	end := min(start+size, len(list))
	out := list[start:end]
	return out, &cfResultInfo{Page: num, PerPage: size, Count: len(out), TotalCount: len(list), TotalPages: (len(list) + size - 1) / size}, nil
}

// ServeHTTP implements the part of the API that the provider uses.
func (f *fakeCloudflare) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := f.receive(r)
	if err != nil {
		f.reply(w, http.StatusBadRequest, nil, nil, cfError{6003, "Invalid request body"})
		return
	}
	path, ok := strings.CutPrefix(req.Path, cfPrefix+"/")
	parts := strings.Split(path, "/")
	auth := r.Header.Get("Authorization")
	zoneLookup := req.Method == http.MethodGet && path == "zones"
	if f.refused(req) {
		f.reply(w, http.StatusForbidden, nil, nil, cfError{10000, "Authentication error: " + auth + " is not allowed to " + req.Method + " " + req.Path})
		return
	}
	if auth != "Bearer "+cfToken && (!zoneLookup || auth != "Bearer "+cfZoneTok) {
		f.t.Errorf("fake Cloudflare: request %s with Authorization %q, want the API token", req, auth)
		f.reply(w, http.StatusForbidden, nil, nil, cfError{10000, "Authentication error"})
		return
	}
	if !ok {
		f.reply(w, http.StatusNotFound, nil, nil, cfError{7000, "No route for that URI"})
		return
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	var zone *cfFakeZone
	if len(parts) >= 2 && parts[0] == "zones" {
		for _, z := range f.zones {
			if z.id == parts[1] {
				zone = z
			}
		}
		if zone == nil {
			f.reply(w, http.StatusNotFound, nil, nil, cfError{7003, "Could not route to /" + path + ", perhaps your object identifier is invalid?"})
			return
		}
	}
	switch {
	case zoneLookup:
		f.listZones(w, req)
	case len(parts) == 3 && parts[2] == "dns_records" && req.Method == http.MethodGet:
		f.listRecords(w, req, zone)
	case len(parts) == 3 && parts[2] == "dns_records" && req.Method == http.MethodPost:
		f.createRecord(w, req, zone)
	case len(parts) == 4 && parts[2] == "dns_records" && (req.Method == http.MethodPatch || req.Method == http.MethodDelete):
		i := slices.IndexFunc(zone.records, func(rec cfRecord) bool { return rec.ID == parts[3] })
		if i < 0 {
			f.reply(w, http.StatusNotFound, nil, nil, cfError{81044, "Record does not exist."})
			return
		}
		if req.Method == http.MethodDelete {
			zone.records = slices.Delete(zone.records, i, i+1)
			f.reply(w, http.StatusOK, map[string]string{"id": parts[3]}, nil)
			return
		}
		f.patchRecord(w, req, zone, i)
	default:
		f.reply(w, http.StatusMethodNotAllowed, nil, nil, cfError{10405, "Method not allowed for this route"})
	}
}

func (f *fakeCloudflare) listZones(w http.ResponseWriter, req apiRequest) {
	type zoneJSON struct {
		ID          string    `json:"id"`
		Name        string    `json:"name"`
		Status      string    `json:"status"`
		Paused      bool      `json:"paused"`
		Type        string    `json:"type"`
		NameServers []string  `json:"name_servers"`
		CreatedOn   time.Time `json:"created_on"`
		ModifiedOn  time.Time `json:"modified_on"`
		ActivatedOn time.Time `json:"activated_on"`
		Account     struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"account"`
		Permissions []string `json:"permissions"`
	}
	var list []zoneJSON
	name, filtered := req.Query["name"]
	for _, z := range f.zones {
		// The provider sends the zone with libdns's trailing dot.
		if filtered && !strings.EqualFold(strings.TrimSuffix(name[0], "."), z.name) {
			continue
		}
		zj := zoneJSON{ID: z.id, Name: z.name, Status: "active", Type: "full",
			NameServers: []string{"ada.ns.cloudflare.com", "bob.ns.cloudflare.com"},
			CreatedOn:   time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), Permissions: []string{"#dns_records:edit"}}
		zj.ModifiedOn, zj.ActivatedOn = zj.CreatedOn, zj.CreatedOn
		zj.Account.ID, zj.Account.Name = "acc0123", "test account"
		list = append(list, zj)
	}
	out, info, err := cfPage(req.Query, list, 20, 50)
	if err != nil {
		f.reply(w, http.StatusBadRequest, nil, nil, cfError{1001, err.Error()})
		return
	}
	f.reply(w, http.StatusOK, append([]zoneJSON{}, out...), info)
}

func (f *fakeCloudflare) listRecords(w http.ResponseWriter, req apiRequest, z *cfFakeZone) {
	q := req.Query
	var list []cfRecord
	for _, r := range z.records {
		if v := q.Get("type"); v != "" && v != r.Type {
			continue
		}
		if v := q.Get("name"); v != "" && !strings.EqualFold(v, r.Name) {
			continue
		}
		if v := q.Get("content.exact"); v != "" && v != r.Content {
			continue
		}
		if v := q.Get("content.contains"); v != "" && !strings.Contains(r.Content, v) {
			continue
		}
		list = append(list, r)
	}
	out, info, err := cfPage(q, list, 100, 5000)
	if err != nil {
		f.reply(w, http.StatusBadRequest, nil, nil, cfError{1001, err.Error()})
		return
	}
	f.reply(w, http.StatusOK, append([]cfRecord{}, out...), info)
}

// fqdn turns the name of a request into the FQDN Cloudflare stores: it
// takes names relative to the zone, as the provider sends them.
func (z *cfFakeZone) fqdn(name string) string {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	switch {
	case name == "@" || name == z.name:
		return z.name
	case strings.HasSuffix(name, "."+z.name):
		return name
	default:
		return name + "." + z.name
	}
}

// cfWrite is the body of a POST or PATCH as the fake reads it.
type cfWrite struct {
	Type    *string `json:"type"`
	Name    *string `json:"name"`
	Content *string `json:"content"`
	TTL     *int    `json:"ttl"`
	Proxied *bool   `json:"proxied"`
}

func (f *fakeCloudflare) createRecord(w http.ResponseWriter, req apiRequest, z *cfFakeZone) {
	var in cfWrite
	if err := json.Unmarshal(req.Body, &in); err != nil || in.Type == nil || in.Name == nil || in.Content == nil {
		f.reply(w, http.StatusBadRequest, nil, nil, cfError{9207, "Request body is invalid: type, name and content are required"})
		return
	}
	rec := cfRecord{ID: f.newID(), ZoneID: z.id, Zone: z.name, Name: z.fqdn(*in.Name), Type: *in.Type, Content: *in.Content, TTL: 1}
	if in.TTL != nil {
		rec.TTL = *in.TTL
	}
	if rec.TTL != 1 && (rec.TTL < 60 || rec.TTL > 86400) {
		f.reply(w, http.StatusBadRequest, nil, nil, cfError{9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic."})
		return
	}
	if in.Proxied != nil {
		rec.Proxied = *in.Proxied
	}
	for _, e := range z.records {
		if e.Name != rec.Name {
			continue
		}
		if e.Type == rec.Type && e.Content == rec.Content {
			f.reply(w, http.StatusBadRequest, nil, nil, cfError{81058, "An identical record already exists."})
			return
		}
		if e.Type == "CNAME" || rec.Type == "CNAME" {
			f.reply(w, http.StatusBadRequest, nil, nil, cfError{81053, "An A, AAAA, or CNAME record with that host already exists."})
			return
		}
	}
	z.records = append(z.records, rec)
	f.reply(w, http.StatusOK, rec, nil)
}

func (f *fakeCloudflare) patchRecord(w http.ResponseWriter, req apiRequest, z *cfFakeZone, i int) {
	var in cfWrite
	if err := json.Unmarshal(req.Body, &in); err != nil {
		f.reply(w, http.StatusBadRequest, nil, nil, cfError{9207, "Request body is invalid."})
		return
	}
	rec := &z.records[i]
	if in.Type != nil && *in.Type != "" {
		rec.Type = *in.Type
	}
	if in.Name != nil && *in.Name != "" {
		rec.Name = z.fqdn(*in.Name)
	}
	if in.Content != nil && *in.Content != "" {
		rec.Content = *in.Content
	}
	if in.TTL != nil && *in.TTL != 0 {
		rec.TTL = *in.TTL
	}
	if in.Proxied != nil {
		rec.Proxied = *in.Proxied
	}
	f.reply(w, http.StatusOK, *rec, nil)
}

// cfSection is the [dns.cf] section: the token from a file.
func cfSection(t *testing.T, extra map[string]any) map[string]any {
	return secretSection(t, map[string]any{"provider": "cloudflare"}, "api_token_file", cfToken, extra)
}

// checkCloudflareWrite checks a POST or PATCH body: exactly the record,
// relative name, target without the trailing dot, the section's TTL, not
// proxied.
func checkCloudflareWrite(t *testing.T, req apiRequest, zone string, want providers.Record) {
	t.Helper()
	var body map[string]any
	if err := json.Unmarshal(req.Body, &body); err != nil {
		t.Errorf("%s: body is not JSON: %v: %s", req, err, req.Body)
		return
	}
	rel := strings.TrimSuffix(want.Name, "."+strings.TrimSuffix(zone, "."))
	if body["type"] != "CNAME" || body["name"] != rel || body["content"] != want.Target || body["ttl"] != want.TTL.Seconds() {
		t.Errorf("%s: body %s; want type CNAME, name %q, content %q, ttl %v", req, req.Body, rel, want.Target, want.TTL.Seconds())
	}
	if p, ok := body["proxied"]; ok && p != false {
		t.Errorf("%s: asks for a proxied record: %s", req, req.Body)
	}
	if _, ok := body["id"]; ok {
		t.Errorf("%s: body names a record ID: %s", req, req.Body)
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q, want application/json", req, ct)
	}
}

func isCloudflareWrite(r apiRequest) bool { return r.Method != http.MethodGet }

// checkOneZoneListing checks that the requests since the last take are one
// listing of the zones, as Plan makes without a configured zone.
func (f *fakeCloudflare) checkOneZoneListing(t *testing.T) {
	t.Helper()
	if got := requestLines(f.log.take()); !slices.Equal(got, []string{"GET /client/v4/zones"}) {
		t.Errorf("Plan requests %q, want one zone listing", got)
	}
}

// takePublishWrites returns the writes among the requests since the last
// take, which must be one per record, and those requests.
func (f *fakeCloudflare) takePublishWrites(t *testing.T, recs []providers.Record) (writes, reqs []apiRequest) {
	t.Helper()
	reqs = f.log.take()
	writes = filterRequests(reqs, isCloudflareWrite)
	if len(writes) != len(recs) {
		t.Fatalf("Publish made %d writes, want one per record (%d): %q", len(writes), len(recs), requestLines(reqs))
	}
	return writes, reqs
}

func TestCloudflarePublishOneZone(t *testing.T) {
	ctx := context.Background()
	f := newFakeCloudflare(t, "example.com")
	before := f.snapshot()
	d := newDNS(t, "cf", cfSection(t, map[string]any{"zone": "example.com"}), providers.Options{HTTPClient: f.client()})

	recs := planOneZone(t, d, "cf", &f.fakeServer, requestLines)

	// (1) One SetRecords call for the zone; the provider makes it one
	// lookup and one POST per record, each record written once.
	mustPublish(t, d, recs, 1)
	reqs := f.log.take()
	zid := f.zoneID("example.com")
	want := []string{
		"GET /client/v4/zones?name=example.com.",
		"GET /client/v4/zones/" + zid + "/dns_records?page=1&per_page=100",
	}
	for _, r := range recs {
		want = append(want,
			"GET /client/v4/zones/"+zid+"/dns_records?name="+r.Name+"&type=CNAME",
			"POST /client/v4/zones/"+zid+"/dns_records")
	}
	checkLines(t, t.Fatalf, "Publish requests", requestLines(reqs), want)
	writes := filterRequests(reqs, isCloudflareWrite)
	for i, w := range writes {
		checkCloudflareWrite(t, w, "example.com", recs[i])
	}
	for _, r := range reqs {
		if got := r.Header.Get("Authorization"); got != "Bearer "+cfToken {
			t.Errorf("%s: Authorization %q, want the token from the file (newline trimmed)", r, got)
		}
	}
	assertNoSecret(t, reqs, cfToken, "Authorization")
	published := f.snapshot()
	wantPublished := slices.Clone(before)
	for _, r := range recs {
		wantPublished = append(wantPublished, fmt.Sprintf("example.com %s 60 CNAME %s proxied=false", r.Name, r.Target))
	}
	sort.Strings(wantPublished)
	if !slices.Equal(published, wantPublished) {
		t.Errorf("zone after Publish:\n%s\nwant:\n%s", strings.Join(published, "\n"), strings.Join(wantPublished, "\n"))
	}
	ids := map[string]bool{}
	for _, r := range recs {
		ids[f.recordID(r.Name)] = true
	}

	// (2) Again: everything is correct, nothing is written.
	mustRepublish(t, d, recs)
	if got := requestLines(f.log.take()); !slices.Equal(got, want[1:2]) {
		t.Errorf("second Publish requests %q, want only the listing %q", got, want[1:2])
	}

	// (4) Cleanup after a restart: a new DNS from the same config removes
	// exactly the published records, by their IDs.
	d2 := newDNS(t, "cf", cfSection(t, map[string]any{"zone": "example.com"}), providers.Options{HTTPClient: f.client()})
	if err := d2.Cleanup(ctx, recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	reqs = f.log.take()
	deletes := filterRequests(reqs, isCloudflareWrite)
	if len(deletes) != len(recs) {
		t.Errorf("Cleanup made %d writes, want %d DELETEs: %q", len(deletes), len(recs), requestLines(reqs))
	}
	for _, del := range deletes {
		id := del.Path[strings.LastIndexByte(del.Path, '/')+1:]
		if del.Method != http.MethodDelete || del.Path != cfPrefix+"/zones/"+zid+"/dns_records/"+id || !ids[id] {
			t.Errorf("Cleanup sent %s; want DELETEs of the published records %v", del, ids)
		}
		delete(ids, id)
	}
	for _, r := range filterRequests(reqs, func(r apiRequest) bool { return r.Query.Has("content.exact") }) {
		if !slices.ContainsFunc(recs, func(rec providers.Record) bool {
			return r.Query.Get("name") == rec.Name && r.Query.Get("content.exact") == rec.Target && r.Query.Get("type") == "CNAME"
		}) {
			t.Errorf("Cleanup looked up %s, which is not a published record", r)
		}
	}
	checkAsBefore(t, "zone after Cleanup", before, f.snapshot())
	checkSecondCleanup(t, d2, recs, f.view())
}

func TestCloudflarePublishTwoZones(t *testing.T) {
	ctx := context.Background()
	f := newFakeCloudflare(t, "example.com", "example.org", "example.net")
	before := f.snapshot()
	d := newDNS(t, "cf", cfSection(t, nil), providers.Options{HTTPClient: f.client()})

	// Without a configured zone, the provider's zone list says where each
	// name belongs.
	recs := planTwoZones(t, d, "cf", "shop")
	f.checkOneZoneListing(t)

	mustPublish(t, d, recs, 2)
	writes, reqs := f.takePublishWrites(t, recs)
	// One SetRecords per zone: each zone's writes form one run.
	var zoneOfWrite []string
	for i, w := range writes {
		r := inZoneOrder(recs)[i]
		if w.Method != http.MethodPost || w.Path != cfPrefix+"/zones/"+f.zoneID(r.Zone)+"/dns_records" {
			t.Errorf("write %d: %s, want a POST to zone %s for %s", i, w, r.Zone, r.Name)
		}
		checkCloudflareWrite(t, w, r.Zone, r)
		zoneOfWrite = append(zoneOfWrite, r.Zone)
	}
	if interleaved(zoneOfWrite) {
		t.Errorf("writes alternate between zones: %q", zoneOfWrite)
	}
	lookups := filterRequests(reqs, func(r apiRequest) bool { return r.Path == cfPrefix+"/zones" })
	if got := requestLines(lookups); !slices.Equal(got, []string{"GET /client/v4/zones?name=example.com.", "GET /client/v4/zones?name=example.org."}) {
		t.Errorf("zone lookups %q, want one per zone", got)
	}

	checkRepublishThenCleanup(t, ctx, d, recs, f.view(), before, func(deletes []apiRequest) {
		var zoneOfDelete []string
		for _, del := range deletes {
			if del.Method != http.MethodDelete {
				t.Errorf("Cleanup sent %s", del)
			}
			zoneOfDelete = append(zoneOfDelete, strings.Split(del.Path, "/")[4])
		}
		if len(zoneOfDelete) != len(recs) || interleaved(zoneOfDelete) {
			t.Errorf("Cleanup deleted in zones %q; want %d deletes, one run per zone", zoneOfDelete, len(recs))
		}
	})
}

func TestCloudflareReplacesStaleTarget(t *testing.T) {
	f := newFakeCloudflare(t, "example.com")
	stale := f.add(f.zones[0], seedRR{Name: dcvLabel + ".example.com", Type: "CNAME", TTL: 300, Value: "stale.dcv-target.example"})
	d := newDNS(t, "cf", cfSection(t, map[string]any{"zone": "example.com"}), providers.Options{HTTPClient: f.client()})
	recs := planDCV(t, d, dcvInstructions("example.com"), wantRecords("cf", time.Minute, "example.com"))

	mustPublish(t, d, recs, 1)
	writes := filterRequests(f.log.take(), isCloudflareWrite)
	if len(writes) != 1 || writes[0].Method != http.MethodPatch || writes[0].Path != cfPrefix+"/zones/"+stale.ZoneID+"/dns_records/"+stale.ID {
		t.Fatalf("Publish over a stale target wrote %q; want one PATCH of record %s", requestLines(writes), stale.ID)
	}
	checkCloudflareWrite(t, writes[0], "example.com", recs[0])
	if id := f.recordID(recs[0].Name); id != stale.ID {
		t.Errorf("record %s has ID %s after the update, want %s (updated in place)", recs[0].Name, id, stale.ID)
	}
}

func TestCloudflareZoneTokenOnlyForZoneLookup(t *testing.T) {
	ctx := context.Background()
	f := newFakeCloudflare(t, "example.com")
	d := newDNS(t, "cf", cfSection(t, map[string]any{"zone": "example.com", "zone_token_file": secretFile(t, cfZoneTok)}),
		providers.Options{HTTPClient: f.client()})
	recs := planDCV(t, d, dcvInstructions("example.com"), wantRecords("cf", time.Minute, "example.com"))
	if _, err := d.Publish(ctx, recs); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	reqs := f.log.take()
	if len(reqs) == 0 {
		t.Fatal("no requests")
	}
	for _, r := range reqs {
		want := "Bearer " + cfToken
		if r.Path == cfPrefix+"/zones" {
			want = "Bearer " + cfZoneTok
		}
		if got := r.Header.Get("Authorization"); got != want {
			t.Errorf("%s: Authorization %q, want %q", r, got, want)
		}
	}
}

// TestCloudflareSixtyZones: on an account with 60 zones the provider's
// ListZones sees the first 20 only. dcvd still finds the zone of each name,
// by an SOA lookup, whether the zone is simply past the first page or is a
// delegated child of a zone on the first page (where the list alone would
// choose the parent); publish and cleanup then work in that zone.
func TestCloudflareSixtyZones(t *testing.T) {
	for _, tt := range []struct {
		name   string
		zones  func(i int) string // the account's zone i of 60
		target string             // the zone published to: index 45
	}{
		{
			name:   "past the first page",
			zones:  func(i int) string { return fmt.Sprintf("customer%02d.com", i) },
			target: "customer45.com",
		},
		{
			name: "child of a zone on the first page",
			zones: func(i int) string {
				switch i {
				case 3:
					return "example.com"
				case 45:
					return "shop.example.com"
				}
				return fmt.Sprintf("customer%02d.com", i)
			},
			target: "shop.example.com",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			var zones []string
			for i := range 60 {
				zones = append(zones, tt.zones(i))
			}
			if zones[45] != tt.target {
				t.Fatalf("test setup: zone 45 is %s", zones[45])
			}
			f := newFakeCloudflare(t, zones...)
			before := f.snapshot()
			d := newDNS(t, "cf", cfSection(t, map[string]any{"resolvers": []any{zoneResolver(t, zones...)}}), providers.Options{HTTPClient: f.client()})

			recs := planDCV(t, d, dcvInstructions(tt.target, "www"), wantRecords("cf", time.Minute, tt.target, "www"))
			f.checkOneZoneListing(t)
			mustPublish(t, d, recs, 1)
			writes, _ := f.takePublishWrites(t, recs)
			for i, w := range writes {
				if w.Method != http.MethodPost || w.Path != cfPrefix+"/zones/"+f.zoneID(tt.target)+"/dns_records" {
					t.Errorf("write %s, want a POST to zone %s", w, tt.target)
				}
				checkCloudflareWrite(t, w, tt.target, recs[i])
			}

			// Cleanup after a restart: a new DNS finds the zone again.
			d = newDNS(t, "cf", cfSection(t, map[string]any{"resolvers": []any{zoneResolver(t, zones...)}}), providers.Options{HTTPClient: f.client()})
			if err := d.Cleanup(ctx, recs); err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
			deletes := filterRequests(f.log.take(), isCloudflareWrite)
			if len(deletes) != len(recs) {
				t.Errorf("Cleanup made %d writes, want %d deletes", len(deletes), len(recs))
			}
			if after := f.snapshot(); !slices.Equal(after, before) {
				t.Errorf("zones after Cleanup differ from before:\n%s", strings.Join(after, "\n"))
			}
		})
	}
}
