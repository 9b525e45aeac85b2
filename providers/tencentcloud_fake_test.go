package providers_test

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
	"errors"
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

// tcRecord is a DNS record as DescribeRecordList shows it.
type tcRecord struct {
	RecordID uint64 `json:"RecordId"`
	Name     string `json:"Name"`
	Type     string `json:"Type"`
	Value    string `json:"Value"`
	Line     string `json:"Line"`
	LineID   string `json:"LineId"`
	TTL      int64  `json:"TTL"`
	MX       int64  `json:"MX"`
	Status   string `json:"Status"`
}

type tcDomain struct {
	name    string
	records []tcRecord // listed in this order: by RecordId
}

// fakeTencent is a DNSPod API holding domains in memory. It checks the
// signature of every request with the test's key, and the parameters of
// every action against what the API accepts. A request that deny refuses
// is answered as the API does when a CAM policy refuses it (tcActionIs
// makes a deny of one action).
type fakeTencent struct {
	fakeServer
	domains []*tcDomain
	nextID  uint64
	// badSignatures counts requests whose signature did not verify. A test
	// that expects some sets allowBadSignatures; otherwise each one fails
	// the test.
	badSignatures      int
	allowBadSignatures bool
}

// tcActionIs is a deny of action.
func tcActionIs(action string) func(apiRequest) bool { return actionIn("X-TC-Action", action) }

// newFakeTencent starts a fake holding domains, each seeded with records
// dcvd must not touch, and points http.DefaultClient at it until the test
// ends.
func newFakeTencent(t *testing.T, domains ...string) *fakeTencent {
	t.Helper()
	f := &fakeTencent{nextID: 100000}
	for _, name := range domains {
		d := &tcDomain{name: strings.TrimSuffix(name, ".")}
		for _, s := range fakeUnrelated(d.name) {
			f.add(d, s, tcLine)
		}
		f.domains = append(f.domains, d)
	}
	f.startAsDefaultClient(t, "fake tencentcloud", tcHost, f)
	return f
}

// add seeds a record on line. The API shows CNAME values with a final dot.
func (f *fakeTencent) add(d *tcDomain, s seedRR, line string) tcRecord {
	f.nextID++
	name := strings.TrimSuffix(strings.TrimSuffix(s.Name, d.name), ".")
	if name == "" {
		name = "@"
	}
	value := s.Value
	if s.Type == "CNAME" && !strings.HasSuffix(value, ".") {
		value += "."
	}
	rec := tcRecord{RecordID: f.nextID, Name: name, Type: s.Type, Value: value, Line: line, LineID: "0",
		TTL: int64(s.TTL), Status: "ENABLE"}
	d.records = append(d.records, rec)
	return rec
}

func (f *fakeTencent) domain(name string) *tcDomain {
	return find(f.domains, func(d *tcDomain) bool { return d.name == name })
}

// snapshot lists every record of every domain, with its ID, so that a
// record deleted and added again (or modified) shows as a change.
func (f *fakeTencent) snapshot() []string {
	return f.lines(func(emit func(string, ...any)) {
		for _, d := range f.domains {
			for _, r := range d.records {
				emit("%s %d %s %s %d %s %s", d.name, r.RecordID, r.Name, r.Line, r.TTL, r.Type, r.Value)
			}
		}
	})
}

// view is f as checkRepublishThenCleanup sees it: the writes are its write actions.
func (f *fakeTencent) view() fakeView[apiRequest] {
	return fakeView[apiRequest]{takeWrites: logWrites(&f.log, isTcWrite), describe: tcActions, snapshot: f.snapshot}
}

// cnameIDs returns the IDs of the default-line CNAMEs at name (FQDN).
func (f *fakeTencent) cnameIDs(name string) []uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []uint64
	for _, d := range f.domains {
		for _, r := range d.records {
			if r.Type == "CNAME" && r.Line == tcLine && r.Name+"."+d.name == name {
				ids = append(ids, r.RecordID)
			}
		}
	}
	return ids
}

// verifyTC3 checks r's TC3-HMAC-SHA256 signature as Tencent Cloud does:
// the canonical request is rebuilt from what was received (method, path,
// query, the signed headers with the Host that was sent, the body's hash),
// and the key derived from the secret, the credential's date and service.
func verifyTC3(r *http.Request, body []byte, secretID, secretKey, service string, now time.Time) error {
	fields, err := authFields(r, "TC3-HMAC-SHA256")
	if err != nil {
		return err
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 4 || cred[0] != secretID || cred[2] != service || cred[3] != "tc3_request" {
		return fmt.Errorf("credential %q, want %s/<date>/%s/tc3_request", fields["Credential"], secretID, service)
	}
	ts, err := strconv.ParseInt(r.Header.Get("X-TC-Timestamp"), 10, 64)
	if err != nil {
		return fmt.Errorf("X-TC-Timestamp %q: %v", r.Header.Get("X-TC-Timestamp"), err)
	}
	// The API refuses a timestamp more than 5 minutes off, and a
	// credential date that is not the timestamp's UTC date.
	if d := now.Sub(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("X-TC-Timestamp %d is %v away from now", ts, d)
	}
	date := cred[1]
	if want := time.Unix(ts, 0).UTC().Format("2006-01-02"); date != want {
		return fmt.Errorf("credential date %s, want the timestamp's %s", date, want)
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	for _, h := range []string{"content-type", "host"} {
		if !slices.Contains(signed, h) {
			return fmt.Errorf("SignedHeaders %q lack %s", fields["SignedHeaders"], h)
		}
	}
	var headers strings.Builder
	for _, h := range signed {
		v := r.Header.Get(h)
		if h == "host" {
			v = r.Host
		}
		headers.WriteString(h + ":" + strings.ToLower(strings.TrimSpace(v)) + "\n")
	}
	canonical := r.Method + "\n" + r.URL.EscapedPath() + "\n" + r.URL.RawQuery + "\n" + headers.String() + "\n" +
		fields["SignedHeaders"] + "\n" + sha256Hex(body)
	toSign := "TC3-HMAC-SHA256\n" + strconv.FormatInt(ts, 10) + "\n" + date + "/" + service + "/tc3_request\n" + sha256Hex([]byte(canonical))
	signing := hmacSHA256(hmacSHA256(hmacSHA256([]byte("TC3"+secretKey), date), service), "tc3_request")
	if want := hex.EncodeToString(hmacSHA256(signing, toSign)); !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return errors.New("signature does not match the request signed with the test's secret")
	}
	return nil
}

// tcParams is an action's JSON body; numbers stay json.Number.
type tcParams map[string]any

func (p tcParams) str(k string) string {
	s, _ := p[k].(string)
	return s
}

// num returns the integer parameter k; ok is false when it is absent or not
// an integer.
func (p tcParams) num(k string) (n int64, present, ok bool) {
	v, present := p[k]
	if !present {
		return 0, false, false
	}
	jn, isNum := v.(json.Number)
	if !isNum {
		return 0, true, false
	}
	n, err := jn.Int64()
	return n, true, err == nil
}

// tcAllowed are the parameters each action takes (from the API reference);
// the API answers UnknownParameter to any other.
var tcAllowed = map[string][]string{
	"DescribeRecordList": {"Domain", "DomainId", "Subdomain", "RecordType", "RecordLine", "RecordLineId", "GroupId", "Keyword", "SortField", "SortType", "Offset", "Limit"},
	"CreateRecord":       {"Domain", "DomainId", "SubDomain", "RecordType", "RecordLine", "RecordLineId", "Value", "MX", "TTL", "Weight", "Status", "Remark"},
	"ModifyRecord":       {"Domain", "DomainId", "SubDomain", "RecordType", "RecordLine", "RecordLineId", "Value", "MX", "TTL", "Weight", "Status", "Remark", "RecordId"},
	"DeleteRecord":       {"Domain", "DomainId", "RecordId"},
}

// tcRequired are the parameters without which each action fails.
var tcRequired = map[string][]string{
	"DescribeRecordList": {"Domain"},
	"CreateRecord":       {"Domain", "RecordType", "RecordLine", "Value"},
	"ModifyRecord":       {"Domain", "RecordType", "RecordLine", "Value", "RecordId"},
	"DeleteRecord":       {"Domain", "RecordId"},
}

func (f *fakeTencent) reply(w http.ResponseWriter, resp map[string]any) {
	resp["RequestId"] = "fake-request-id"
	f.writeJSON(w, http.StatusOK, "application/json", map[string]any{"Response": resp})
}

// fail answers as the API does: HTTP 200 and Response.Error.
func (f *fakeTencent) fail(w http.ResponseWriter, code, msg string) {
	f.reply(w, map[string]any{"Error": map[string]any{"Code": code, "Message": msg}})
}

// ServeHTTP implements the actions the provider uses.
func (f *fakeTencent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := f.receive(r)
	if err != nil {
		f.fail(w, "InvalidParameter", err.Error())
		return
	}
	action := r.Header.Get("X-TC-Action")
	if req.Method != http.MethodPost || req.Path != "/" || len(req.Query) != 0 ||
		r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-TC-Version") != "2021-03-23" {
		f.t.Errorf("fake tencentcloud: %s %s, Content-Type %q, version %q; want a JSON POST to / for version 2021-03-23",
			req.Method, req, r.Header.Get("Content-Type"), r.Header.Get("X-TC-Version"))
	}
	if tok := r.Header.Get("X-TC-Token"); tok != "" {
		f.t.Errorf("fake tencentcloud: %s carries X-TC-Token %q; no session token is configured", action, tok)
	}
	if err := verifyTC3(r, req.Body, tcSecretID, tcSecretKey, "dnspod", time.Now()); err != nil {
		f.mu.Lock()
		f.badSignatures++
		allowed := f.allowBadSignatures
		f.mu.Unlock()
		if !allowed {
			f.t.Errorf("fake tencentcloud: %s to %s: %v", action, req.Host, err)
		}
		f.fail(w, "AuthFailure.SignatureFailure", "The provided credentials could not be validated. Please check your signature is correct.")
		return
	}
	if _, ok := tcAllowed[action]; !ok {
		f.fail(w, "InvalidAction", "The action "+action+" is not found.")
		return
	}
	if f.refused(req) {
		f.fail(w, "UnauthorizedOperation", "you are not authorized to perform operation (dnspod:"+action+") (SecretKey "+tcSecretKey+")")
		return
	}
	dec := json.NewDecoder(bytes.NewReader(req.Body))
	dec.UseNumber()
	var p tcParams
	if err := dec.Decode(&p); err != nil {
		f.fail(w, "InvalidParameter", "malformed JSON body")
		return
	}
	for k := range p {
		if !slices.Contains(tcAllowed[action], k) {
			f.t.Errorf("fake tencentcloud: %s sends unknown parameter %s", action, k)
			f.fail(w, "UnknownParameter", "The parameter `"+k+"` is not recognized")
			return
		}
	}
	for _, k := range tcRequired[action] {
		if _, ok := p[k]; !ok {
			f.fail(w, "MissingParameter", "The request is missing a required parameter `"+k+"`.")
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.domain(p.str("Domain"))
	if d == nil {
		f.fail(w, "ResourceNotFound.NoDataOfDomain", "The domain does not exist.")
		return
	}
	switch action {
	case "DescribeRecordList":
		f.describeRecords(w, d, p)
	case "CreateRecord", "ModifyRecord":
		f.writeRecord(w, d, action, p)
	case "DeleteRecord":
		f.deleteRecord(w, d, p)
	}
}

func (f *fakeTencent) describeRecords(w http.ResponseWriter, d *tcDomain, p tcParams) {
	offset, present, ok := p.num("Offset")
	if present && (!ok || offset < 0) {
		f.fail(w, "InvalidParameter", "Offset must be a non-negative integer")
		return
	}
	limit, present, ok := p.num("Limit")
	if !present {
		limit = tcDefaultLimit
	} else if !ok || limit < 1 || limit > tcMaxLimit {
		f.fail(w, "InvalidParameter", "Limit must be an integer from 1 to 3000")
		return
	}
	var list []tcRecord
	for _, r := range d.records {
		// Subdomain, RecordType and RecordLine select exactly; Keyword
		// searches host and value.
		if s := p.str("Subdomain"); s != "" && !strings.EqualFold(r.Name, s) {
			continue
		}
		if s := p.str("RecordType"); s != "" && r.Type != s {
			continue
		}
		if s := p.str("RecordLine"); s != "" && r.Line != s {
			continue
		}
		if s := strings.ToLower(p.str("Keyword")); s != "" && !strings.Contains(strings.ToLower(r.Name), s) && !strings.Contains(strings.ToLower(r.Value), s) {
			continue
		}
		list = append(list, r)
	}
	// With no match the API answers an error (ErrorOnEmpty defaults to
	// yes), not an empty list.
	if len(list) == 0 {
		f.fail(w, "ResourceNotFound.NoDataOfRecord", "The record list is empty.")
		return
	}
	start := min(int(offset), len(list))
	page := slices.Clone(list[start:min(start+int(limit), len(list))])
	f.reply(w, map[string]any{
		"RecordCountInfo": map[string]any{"SubdomainCount": len(list), "ListCount": len(page), "TotalCount": len(list)},
		"RecordList":      page,
	})
}

func (f *fakeTencent) writeRecord(w http.ResponseWriter, d *tcDomain, action string, p tcParams) {
	ttl, present, ok := p.num("TTL")
	if !present {
		ttl = 600
	} else if !ok || ttl < 1 || ttl > 604800 {
		f.fail(w, "InvalidParameter", "TTL must be an integer from 1 to 604800")
		return
	}
	name := p.str("SubDomain")
	if name == "" {
		name = "@"
	}
	rec := tcRecord{Name: strings.ToLower(name), Type: p.str("RecordType"), Value: p.str("Value"), Line: p.str("RecordLine"),
		LineID: "0", TTL: ttl, Status: "ENABLE"}
	if rec.Type == "CNAME" && !strings.HasSuffix(rec.Value, ".") {
		rec.Value += "."
	}
	if rec.Line != tcLine {
		f.fail(w, "InvalidParameter.LineNotExist", "The line does not exist.")
		return
	}
	i := -1
	if action == "ModifyRecord" {
		id, _, ok := p.num("RecordId")
		i = slices.IndexFunc(d.records, func(r tcRecord) bool { return ok && r.RecordID == uint64(id) })
		if i < 0 {
			f.fail(w, "InvalidParameter.RecordIdInvalid", "The record ID is invalid.")
			return
		}
		rec.RecordID = d.records[i].RecordID
	}
	for j, e := range d.records {
		if j == i || e.Name != rec.Name || e.Line != rec.Line {
			continue
		}
		if e.Type == rec.Type && e.Value == rec.Value {
			f.fail(w, "InvalidParameter.DomainRecordExist", "The record already exists.")
			return
		}
		if e.Type == "CNAME" || rec.Type == "CNAME" {
			f.fail(w, "InvalidParameter.RecordConflict", "The record conflicts with another record (CNAME cannot share a name).")
			return
		}
	}
	if i >= 0 {
		d.records[i] = rec
	} else {
		f.nextID++
		rec.RecordID = f.nextID
		d.records = append(d.records, rec)
	}
	f.reply(w, map[string]any{"RecordId": rec.RecordID})
}

func (f *fakeTencent) deleteRecord(w http.ResponseWriter, d *tcDomain, p tcParams) {
	id, _, ok := p.num("RecordId")
	// An ID is only found among the records of the Domain named.
	i := slices.IndexFunc(d.records, func(r tcRecord) bool { return ok && r.RecordID == uint64(id) })
	if i < 0 {
		f.fail(w, "InvalidParameter.RecordIdInvalid", "The record ID is invalid.")
		return
	}
	d.records = slices.Delete(d.records, i, i+1)
	f.reply(w, map[string]any{})
}

// seedLookAlikes adds to the fake the records that sit next to the DCV
// records of zone and that a search by substring, by value or by type, or
// a mix-up of zones, would touch: x_c0ffee (same target as the apex
// record), _c0ffee.wwwx, TXT and A records at _c0ffee names dcvd does not
// publish, a CNAME at _c0ffee.www on another line, and in zone+".cn" the
// same names as in zone, with the same targets.
func (f *fakeTencent) seedLookAlikes(zone string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	apex := dcvLabel + "." + zone
	d := f.domain(zone)
	f.add(d, seedRR{Name: "x" + apex, Type: "CNAME", TTL: 600, Value: dcvTarget(apex)}, tcLine)
	f.add(d, seedRR{Name: dcvLabel + ".wwwx." + zone, Type: "CNAME", TTL: 600, Value: dcvTarget(dcvLabel + ".www." + zone)}, tcLine)
	f.add(d, seedRR{Name: dcvLabel + ".mail." + zone, Type: "TXT", TTL: 600, Value: "mail-validation-token"}, tcLine)
	f.add(d, seedRR{Name: dcvLabel + ".ftp." + zone, Type: "A", TTL: 600, Value: "192.0.2.53"}, tcLine)
	f.add(d, seedRR{Name: dcvLabel + ".www." + zone, Type: "CNAME", TTL: 600, Value: "telecom.dcv-target.example"}, "电信")
	cn := f.domain(zone + ".cn")
	f.add(cn, seedRR{Name: apex + ".cn", Type: "CNAME", TTL: 600, Value: dcvTarget(apex)}, tcLine)
	f.add(cn, seedRR{Name: dcvLabel + ".www." + zone + ".cn", Type: "CNAME", TTL: 600, Value: dcvTarget(dcvLabel + ".www." + zone)}, tcLine)
	f.add(cn, seedRR{Name: dcvLabel + ".shop." + zone + ".cn", Type: "TXT", TTL: 600, Value: "shop-cn-token"}, tcLine)
}

// idIn returns the ID that snapshot lines shows for r's CNAME on the
// default line.
func (f *fakeTencent) idIn(lines []string, r providers.Record) uint64 {
	zone := strings.TrimSuffix(r.Zone, ".")
	for _, l := range lines {
		fs := strings.Fields(l)
		if len(fs) == 7 && fs[0] == zone && fs[2]+"."+zone == r.Name && fs[3] == tcLine && fs[5] == "CNAME" {
			id, _ := strconv.ParseUint(fs[1], 10, 64)
			return id
		}
	}
	f.t.Fatalf("no CNAME for %s in\n%s", r.Name, strings.Join(lines, "\n"))
	return 0
}

// tcAt returns the default-line records at name (zone-relative) of type
// typ, as "ID value" strings, sorted.
func (f *fakeTencent) tcAt(zone, name, typ string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.domain(zone).records {
		if r.Name == name && r.Type == typ && r.Line == tcLine {
			out = append(out, fmt.Sprintf("%d %s", r.RecordID, r.Value))
		}
	}
	sort.Strings(out)
	return out
}
