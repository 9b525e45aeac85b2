package providers_test

import (
	"context"
	"crypto/hmac"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/providers"
)

// The real github.com/libdns/route53 provider (v1.6.2, AWS SDK for Go v2)
// against a fake Route 53 REST-XML API, reached through
// AWS_ENDPOINT_URL_ROUTE_53. What the provider does, read from its source
// and checked here request by request:
//   - every GetRecords, SetRecords and DeleteRecords call first resolves the
//     zone: GET /2013-04-01/hostedzonesbyname?dnsname=ZONE.&maxitems=1 (no
//     cache);
//   - GetRecords: GET /2013-04-01/hostedzone/ID/rrset?maxitems=1000;
//   - SetRecords: one POST /2013-04-01/hostedzone/ID/rrset per (name, type)
//     with a single UPSERT change, without reading first. So dcvd's one
//     SetRecords call per zone is N ChangeResourceRecordSets requests for
//     N names, contiguous per zone, not one request per zone;
//   - DeleteRecords: per (name, type), a full listing, then one POST with a
//     single DELETE change carrying the set's current TTL and values;
//   - with wait_for_route53_sync, each change is followed by
//     GET /2013-04-01/change/ID until it is INSYNC.
// Tests here use t.Setenv, so none of them runs in parallel.

const (
	r53Key    = "AKIAFAKEDCVDTEST0001"
	r53Secret = "r53/secret+access-key-7c1e5a9d3b"
	r53XMLNS  = "https://route53.amazonaws.com/doc/2013-04-01/"
	r53Region = "us-east-1"
)

// r53Set is a resource record set, as the API's XML has it.
type r53Set struct {
	Name   string   `xml:"Name"`
	Type   string   `xml:"Type"`
	TTL    int64    `xml:"TTL"`
	Values []string `xml:"ResourceRecords>ResourceRecord>Value"`
}

type r53Zone struct {
	id, name string // name: FQDN with trailing dot
	sets     []r53Set
}

// fakeRoute53 is a Route 53 API holding hosted zones in memory. It checks
// the SigV4 signature of every request with the test's key. A request
// that deny refuses is answered AccessDenied.
type fakeRoute53 struct {
	fakeServer
	zones   []*r53Zone
	changes []string // IDs of submitted changes
}

// r53SortKey sorts names as Route 53 lists them: labels reversed.
func r53SortKey(name string) string {
	labels := strings.Split(strings.TrimSuffix(strings.ToLower(name), "."), ".")
	slices.Reverse(labels)
	return strings.Join(labels, ".")
}

func newFakeRoute53(t *testing.T, zones ...string) *fakeRoute53 {
	t.Helper()
	f := &fakeRoute53{}
	for i, z := range zones {
		z = strings.TrimSuffix(z, ".") + "."
		zone := &r53Zone{id: fmt.Sprintf("Z%04dFAKE%s", i+1, strings.ToUpper(strings.ReplaceAll(strings.TrimSuffix(z, "."), ".", ""))), name: z}
		zone.sets = []r53Set{
			{Name: z, Type: "NS", TTL: 172800, Values: []string{"ns-1.awsdns-01.org.", "ns-2.awsdns-02.co.uk."}},
			{Name: z, Type: "SOA", TTL: 900, Values: []string{"ns-1.awsdns-01.org. awsdns-hostmaster.amazon.com. 1 7200 900 1209600 86400"}},
		}
		for _, s := range fakeUnrelated(z) {
			f.add(zone, s)
		}
		f.zones = append(f.zones, zone)
	}
	// The SDK reaches the fake at its own URL: no Host to check.
	f.start(t, "fake Route 53", "", f)
	return f
}

func (f *fakeRoute53) add(z *r53Zone, s seedRR) {
	v := s.Value
	if s.Type == "TXT" {
		v = `"` + v + `"`
	}
	if s.Type == "CNAME" {
		v += "."
	}
	z.sets = append(z.sets, r53Set{Name: strings.TrimSuffix(s.Name, ".") + ".", Type: s.Type, TTL: int64(s.TTL), Values: []string{v}})
}

func (f *fakeRoute53) zoneID(name string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, z := range f.zones {
		if z.name == strings.TrimSuffix(name, ".")+"." {
			return z.id
		}
	}
	f.t.Fatalf("fake Route 53 has no zone %s", name)
	return ""
}

func (f *fakeRoute53) snapshot() []string {
	return f.lines(func(emit func(string, ...any)) {
		for _, z := range f.zones {
			for _, s := range z.sets {
				vals := slices.Clone(s.Values)
				sort.Strings(vals)
				emit("%s %s %d %s %s", z.id, s.Name, s.TTL, s.Type, strings.Join(vals, " | "))
			}
		}
	})
}

// view is f as checkRepublishThenCleanup sees it: the writes are its ChangeResourceRecordSets requests.
func (f *fakeRoute53) view() fakeView[apiRequest] {
	return fakeView[apiRequest]{takeWrites: logWrites(&f.log, isR53Change), describe: requestLines, snapshot: f.snapshot}
}

// route53Env points the AWS SDK at the fake and away from anything on the
// machine: no profile, no shared files, no instance metadata.
func route53Env(t *testing.T, f *fakeRoute53) {
	for _, k := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
		"AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_USE_FIPS_ENDPOINT",
		"AWS_USE_DUALSTACK_ENDPOINT"} {
		t.Setenv(k, "") // restores the variable after the test
		os.Unsetenv(k)
	}
	dir := t.TempDir()
	for _, name := range []string{"config", "credentials"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", r53Region)
	t.Setenv("AWS_ENDPOINT_URL_ROUTE_53", f.srv.URL)
}

// r53SectionFor is the [dns.r53] section: the key ID inline (not a
// secret), the secret access key from a file.
func r53SectionFor(t *testing.T, extra map[string]any) map[string]any {
	return secretSection(t, map[string]any{"provider": "route53", "access_key_id": r53Key}, "secret_access_key_file", r53Secret, extra)
}

// verifySigV4 checks r's AWS Signature Version 4 as AWS does, with the
// signed headers that the Authorization header names.
func verifySigV4(r *http.Request, body []byte, accessKey, secret, region, service string) error {
	fields, err := authFields(r, "AWS4-HMAC-SHA256")
	if err != nil {
		return err
	}
	cred := strings.Split(fields["Credential"], "/")
	if len(cred) != 5 || cred[0] != accessKey || cred[2] != region || cred[3] != service || cred[4] != "aws4_request" {
		return fmt.Errorf("credential %q, want %s/DATE/%s/%s/aws4_request", fields["Credential"], accessKey, region, service)
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if !strings.HasPrefix(amzDate, cred[1]) {
		return fmt.Errorf("X-Amz-Date %q does not match the credential date %s", amzDate, cred[1])
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	if !slices.Contains(signed, "host") || !slices.Contains(signed, "x-amz-date") {
		return fmt.Errorf("SignedHeaders %q lack host or x-amz-date", fields["SignedHeaders"])
	}
	var headers strings.Builder
	for _, h := range signed {
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			v = strconv.FormatInt(r.ContentLength, 10)
		default:
			vals := r.Header.Values(h)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		headers.WriteString(h + ":" + v + "\n")
	}
	escape := func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }
	var query []string
	for k, vs := range r.URL.Query() {
		for _, v := range vs {
			query = append(query, escape(k)+"="+escape(v))
		}
	}
	sort.Strings(query)
	payload := sha256Hex(body)
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != payload {
		return fmt.Errorf("X-Amz-Content-Sha256 %s is not the body's hash %s", h, payload)
	}
	canonical := strings.Join([]string{r.Method, r.URL.EscapedPath(), strings.Join(query, "&"), headers.String(), fields["SignedHeaders"], payload}, "\n")
	scope := strings.Join(cred[1:], "/")
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + sha256Hex([]byte(canonical))
	key := hmacSHA256([]byte("AWS4"+secret), cred[1])
	key = hmacSHA256(key, region)
	key = hmacSHA256(key, service)
	key = hmacSHA256(key, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return errors.New("signature does not match the request signed with the test's secret")
	}
	return nil
}

// r53Error is Route 53's error document.
type r53Error struct {
	XMLName   xml.Name `xml:"https://route53.amazonaws.com/doc/2013-04-01/ ErrorResponse"`
	Type      string   `xml:"Error>Type"`
	Code      string   `xml:"Error>Code"`
	Message   string   `xml:"Error>Message"`
	RequestID string   `xml:"RequestId"`
}

// r53InvalidChangeBatch is the error document of a refused change batch.
type r53InvalidChangeBatch struct {
	XMLName   xml.Name `xml:"https://route53.amazonaws.com/doc/2013-04-01/ InvalidChangeBatch"`
	Messages  []string `xml:"Messages>Message"`
	RequestID string   `xml:"RequestId"`
}

type r53ChangeInfo struct {
	ID          string `xml:"Id"`
	Status      string `xml:"Status"`
	SubmittedAt string `xml:"SubmittedAt"`
}

// r53ChangeRequest is the body of ChangeResourceRecordSets.
type r53ChangeRequest struct {
	XMLName xml.Name
	Comment string      `xml:"ChangeBatch>Comment"`
	Changes []r53Change `xml:"ChangeBatch>Changes>Change"`
}

type r53Change struct {
	Action string `xml:"Action"`
	Set    r53Set `xml:"ResourceRecordSet"`
}

func (f *fakeRoute53) write(w http.ResponseWriter, status int, v any) {
	out, err := xml.Marshal(v)
	if err != nil {
		f.t.Errorf("fake Route 53: marshal %T: %v", v, err)
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", "fake-request-id")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	w.Write(out)
}

func (f *fakeRoute53) fail(w http.ResponseWriter, status int, code, msg string) {
	f.write(w, status, r53Error{Type: "Sender", Code: code, Message: msg, RequestID: "fake-request-id"})
}

// ServeHTTP implements the four operations the provider uses.
func (f *fakeRoute53) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := f.receive(r)
	if err != nil {
		f.fail(w, http.StatusBadRequest, "InvalidInput", err.Error())
		return
	}
	if err := verifySigV4(r, req.Body, r53Key, r53Secret, r53Region, "route53"); err != nil {
		f.t.Errorf("fake Route 53: %s: %v", req, err)
		f.fail(w, http.StatusForbidden, "SignatureDoesNotMatch", err.Error())
		return
	}
	if f.refused(req) {
		f.fail(w, http.StatusForbidden, "AccessDenied", "User: arn:aws:iam::123456789012:user/dcvd with secret "+r53Secret+
			" is not authorized to perform this action on "+req.Path)
		return
	}
	parts := strings.Split(strings.TrimPrefix(req.Path, "/2013-04-01/"), "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case req.Method == http.MethodGet && req.Path == "/2013-04-01/hostedzonesbyname":
		f.listZones(w, req)
	case len(parts) == 3 && parts[0] == "hostedzone" && parts[2] == "rrset":
		i := slices.IndexFunc(f.zones, func(z *r53Zone) bool { return z.id == parts[1] })
		if i < 0 {
			f.fail(w, http.StatusNotFound, "NoSuchHostedZone", "No hosted zone found with ID: "+parts[1])
			return
		}
		switch req.Method {
		case http.MethodGet:
			f.listSets(w, req, f.zones[i])
		case http.MethodPost:
			f.change(w, req, f.zones[i])
		default:
			f.fail(w, http.StatusMethodNotAllowed, "InvalidInput", "method not allowed")
		}
	case req.Method == http.MethodGet && len(parts) == 2 && parts[0] == "change":
		if !slices.Contains(f.changes, parts[1]) {
			f.fail(w, http.StatusNotFound, "NoSuchChange", "A change with the specified change ID does not exist.")
			return
		}
		f.write(w, http.StatusOK, struct {
			XMLName    xml.Name      `xml:"https://route53.amazonaws.com/doc/2013-04-01/ GetChangeResponse"`
			ChangeInfo r53ChangeInfo `xml:"ChangeInfo"`
		}{ChangeInfo: r53ChangeInfo{ID: "/change/" + parts[1], Status: "INSYNC", SubmittedAt: "2024-01-02T03:04:05.000Z"}})
	default:
		f.fail(w, http.StatusNotFound, "InvalidInput", "no such operation: "+req.String())
	}
}

// maxItems reads a list's maxitems as Route 53 does: the page size, at most
// (and by default) most; echo is the MaxItems the answer shows. It answers
// an invalid one itself and returns false.
func (f *fakeRoute53) maxItems(w http.ResponseWriter, req apiRequest, most int, echo *string) (int, bool) {
	*echo = strconv.Itoa(most)
	v := req.Query.Get("maxitems")
	if v == "" {
		return most, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		f.fail(w, http.StatusBadRequest, "InvalidInput", "maxitems must be a positive integer")
		return 0, false
	}
	*echo = v
	return min(n, most), true
}

func (f *fakeRoute53) listZones(w http.ResponseWriter, req apiRequest) {
	type hostedZone struct {
		ID              string `xml:"Id"`
		Name            string `xml:"Name"`
		CallerReference string `xml:"CallerReference"`
		PrivateZone     bool   `xml:"Config>PrivateZone"`
		Count           int    `xml:"ResourceRecordSetCount"`
	}
	resp := struct {
		XMLName          xml.Name     `xml:"https://route53.amazonaws.com/doc/2013-04-01/ ListHostedZonesByNameResponse"`
		Zones            []hostedZone `xml:"HostedZones>HostedZone"`
		DNSName          string       `xml:"DNSName,omitempty"`
		IsTruncated      bool         `xml:"IsTruncated"`
		NextDNSName      string       `xml:"NextDNSName,omitempty"`
		NextHostedZoneID string       `xml:"NextHostedZoneId,omitempty"`
		MaxItems         string       `xml:"MaxItems"`
	}{DNSName: req.Query.Get("dnsname")}
	limit, ok := f.maxItems(w, req, 100, &resp.MaxItems)
	if !ok {
		return
	}
	zones := slices.Clone(f.zones)
	sort.Slice(zones, func(i, j int) bool { return r53SortKey(zones[i].name) < r53SortKey(zones[j].name) })
	start := r53SortKey(req.Query.Get("dnsname"))
	for _, z := range zones {
		if r53SortKey(z.name) < start {
			continue
		}
		if len(resp.Zones) == limit {
			resp.IsTruncated, resp.NextDNSName, resp.NextHostedZoneID = true, z.name, z.id
			break
		}
		resp.Zones = append(resp.Zones, hostedZone{ID: "/hostedzone/" + z.id, Name: z.name, CallerReference: "ref-" + z.id, Count: len(z.sets)})
	}
	f.write(w, http.StatusOK, resp)
}

func (f *fakeRoute53) listSets(w http.ResponseWriter, req apiRequest, z *r53Zone) {
	resp := struct {
		XMLName        xml.Name `xml:"https://route53.amazonaws.com/doc/2013-04-01/ ListResourceRecordSetsResponse"`
		Sets           []r53Set `xml:"ResourceRecordSets>ResourceRecordSet"`
		IsTruncated    bool     `xml:"IsTruncated"`
		NextRecordName string   `xml:"NextRecordName,omitempty"`
		NextRecordType string   `xml:"NextRecordType,omitempty"`
		MaxItems       string   `xml:"MaxItems"`
	}{}
	// Route 53 returns at most 300 sets a page, whatever maxitems says.
	limit, ok := f.maxItems(w, req, 300, &resp.MaxItems)
	if !ok {
		return
	}
	sets := slices.Clone(z.sets)
	sort.Slice(sets, func(i, j int) bool {
		if ki, kj := r53SortKey(sets[i].Name), r53SortKey(sets[j].Name); ki != kj {
			return ki < kj
		}
		return sets[i].Type < sets[j].Type
	})
	startName, startType := req.Query.Get("name"), req.Query.Get("type")
	for _, s := range sets {
		if startName != "" {
			k, sk := r53SortKey(s.Name), r53SortKey(startName)
			if k < sk || (k == sk && startType != "" && s.Type < startType) {
				continue
			}
		}
		if len(resp.Sets) == limit {
			resp.IsTruncated, resp.NextRecordName, resp.NextRecordType = true, s.Name, s.Type
			break
		}
		resp.Sets = append(resp.Sets, s)
	}
	f.write(w, http.StatusOK, resp)
}

// change applies a change batch atomically, with Route 53's rules.
func (f *fakeRoute53) change(w http.ResponseWriter, req apiRequest, z *r53Zone) {
	var in r53ChangeRequest
	if err := xml.Unmarshal(req.Body, &in); err != nil || in.XMLName.Space != r53XMLNS || in.XMLName.Local != "ChangeResourceRecordSetsRequest" {
		f.fail(w, http.StatusBadRequest, "InvalidInput", fmt.Sprintf("malformed ChangeResourceRecordSetsRequest (%v, root %v)", err, in.XMLName))
		return
	}
	if len(in.Changes) == 0 {
		f.fail(w, http.StatusBadRequest, "InvalidInput", "a change batch needs at least one change")
		return
	}
	sets := slices.Clone(z.sets)
	var problems []string
	for _, c := range in.Changes {
		s := c.Set
		s.Name = strings.ToLower(strings.TrimSuffix(s.Name, ".")) + "."
		if s.Name != z.name && !strings.HasSuffix(s.Name, "."+z.name) {
			problems = append(problems, fmt.Sprintf("RRSet with DNS name %s is not permitted in zone %s", s.Name, z.name))
			continue
		}
		if len(s.Values) == 0 {
			problems = append(problems, fmt.Sprintf("Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and ResourceRecords]] for %s", s.Name))
			continue
		}
		at := slices.IndexFunc(sets, func(e r53Set) bool { return e.Name == s.Name && e.Type == s.Type })
		conflict := slices.ContainsFunc(sets, func(e r53Set) bool {
			return e.Name == s.Name && e.Type != s.Type && (e.Type == "CNAME" || s.Type == "CNAME")
		})
		desc := fmt.Sprintf("[name='%s', type='%s']", s.Name, s.Type)
		switch c.Action {
		case "CREATE", "UPSERT":
			switch {
			case conflict:
				problems = append(problems, fmt.Sprintf("RRSet of type %s with DNS name %s is not permitted as it conflicts with other records with the same DNS name in zone %s", s.Type, s.Name, z.name))
			case at >= 0 && c.Action == "CREATE":
				problems = append(problems, "Tried to create resource record set "+desc+" but it already exists")
			case at >= 0:
				sets[at] = s
			default:
				sets = append(sets, s)
			}
		case "DELETE":
			switch {
			case at < 0:
				problems = append(problems, "Tried to delete resource record set "+desc+" but it was not found")
			case sets[at].TTL != s.TTL || !r53SameValues(sets[at].Values, s.Values):
				problems = append(problems, "Tried to delete resource record set "+desc+" but the values provided do not match the current values")
			default:
				sets = slices.Delete(sets, at, at+1)
			}
		default:
			problems = append(problems, "unknown action "+c.Action)
		}
	}
	if len(problems) > 0 {
		f.write(w, http.StatusBadRequest, r53InvalidChangeBatch{Messages: problems, RequestID: "fake-request-id"})
		return
	}
	z.sets = sets
	id := fmt.Sprintf("C%08dFAKE", len(f.changes)+1)
	f.changes = append(f.changes, id)
	f.write(w, http.StatusOK, struct {
		XMLName    xml.Name      `xml:"https://route53.amazonaws.com/doc/2013-04-01/ ChangeResourceRecordSetsResponse"`
		ChangeInfo r53ChangeInfo `xml:"ChangeInfo"`
	}{ChangeInfo: r53ChangeInfo{ID: "/change/" + id, Status: "PENDING", SubmittedAt: time.Now().UTC().Format("2006-01-02T15:04:05.000Z")}})
}

func r53SameValues(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}

// r53Changes decodes the changes of ChangeResourceRecordSets requests.
func r53Changes(t *testing.T, req apiRequest) []r53Change {
	t.Helper()
	var in r53ChangeRequest
	if err := xml.Unmarshal(req.Body, &in); err != nil {
		t.Fatalf("%s: body is not a change batch: %v", req, err)
	}
	return in.Changes
}

func isR53Change(r apiRequest) bool { return r.Method == http.MethodPost }

// checkR53Writes checks that writes are exactly one request per record, each
// with one change: action on the record's name, CNAME, the section's TTL
// and the target as an absolute name. It returns the change requests' zones.
func checkR53Writes(t *testing.T, f *fakeRoute53, writes []apiRequest, action string, recs []providers.Record) []string {
	t.Helper()
	if len(writes) != len(recs) {
		t.Fatalf("%d ChangeResourceRecordSets requests, want one per record (%d): %q", len(writes), len(recs), requestLines(writes))
	}
	seen := map[string]bool{}
	var zones []string
	for _, w := range writes {
		changes := r53Changes(t, w)
		if len(changes) != 1 {
			t.Errorf("%s carries %d changes, want 1: %s", w, len(changes), w.Body)
			continue
		}
		c := changes[0]
		i := slices.IndexFunc(recs, func(r providers.Record) bool { return r.Name+"." == c.Set.Name })
		if i < 0 || seen[c.Set.Name] {
			t.Errorf("%s changes %s: not a record to change, or changed twice", w, c.Set.Name)
			continue
		}
		seen[c.Set.Name] = true
		r := recs[i]
		if c.Action != action || c.Set.Type != "CNAME" || c.Set.TTL != int64(r.TTL.Seconds()) || !slices.Equal(c.Set.Values, []string{r.Target + "."}) {
			t.Errorf("%s: change %+v; want %s of CNAME %s TTL %d value %s.", w, c, action, r.Name, int64(r.TTL.Seconds()), r.Target)
		}
		if want := "/2013-04-01/hostedzone/" + f.zoneID(r.Zone) + "/rrset"; w.Path != want {
			t.Errorf("%s: change for %s sent to %s, want %s", w, r.Name, w.Path, want)
		}
		if ct := w.Header.Get("Content-Type"); ct != "application/xml" {
			t.Errorf("%s: Content-Type %q, want application/xml", w, ct)
		}
		zones = append(zones, r.Zone)
	}
	return zones
}

// checkR53Auth checks that every request is signed with the key ID, and
// that the secret appears nowhere in any request.
func checkR53Auth(t *testing.T, reqs []apiRequest) {
	t.Helper()
	checkSignedBy(t, reqs, apiRequest.String, "AWS4-HMAC-SHA256 Credential="+r53Key+"/", "/"+r53Region+"/route53/aws4_request", r53Secret)
}

func TestRoute53PublishOneZone(t *testing.T) {
	ctx := context.Background()
	f := newFakeRoute53(t, "example.com", "example.org")
	route53Env(t, f)
	before := f.snapshot()
	section := r53SectionFor(t, map[string]any{"zone": "example.com", "wait_for_route53_sync": true})
	d := newDNS(t, "r53", section, providers.Options{})
	recs := planDCV(t, d, dcvInstructions("example.com", "www", "shop"), wantRecords("r53", time.Minute, "example.com", "www", "shop"))

	mustPublish(t, d, recs, 1)
	reqs := f.log.take()
	checkR53Auth(t, reqs)
	zid := f.zoneID("example.com")
	lookup := "GET /2013-04-01/hostedzonesbyname?dnsname=example.com.&maxitems=1"
	list := "GET /2013-04-01/hostedzone/" + zid + "/rrset?maxitems=1000"
	if got := requestLines(reqs); len(got) < 3 || !slices.Equal(got[:3], []string{lookup, list, lookup}) {
		t.Fatalf("Publish requests %q; want zone lookup, listing, zone lookup, then the changes", got)
	}
	// One SetRecords call; the provider sends one change request per name,
	// each followed by the wait for INSYNC.
	rest := reqs[3:]
	if len(rest) != 2*len(recs) {
		t.Fatalf("after the lookups, %d requests, want a change and its status per record: %q", len(rest), requestLines(rest))
	}
	var writes []apiRequest
	for i := 0; i < len(rest); i += 2 {
		w, status := rest[i], rest[i+1]
		writes = append(writes, w)
		if w.Method != http.MethodPost || status.String() != fmt.Sprintf("GET /2013-04-01/change/C%08dFAKE", i/2+1) {
			t.Errorf("requests %s then %s; want a change, then GetChange of its ID", w, status)
		}
	}
	checkR53Writes(t, f, writes, "UPSERT", recs)
	published := f.snapshot()
	wantPublished := slices.Clone(before)
	for _, r := range recs {
		wantPublished = append(wantPublished, fmt.Sprintf("%s %s. 60 CNAME %s.", zid, r.Name, r.Target))
	}
	sort.Strings(wantPublished)
	if !slices.Equal(published, wantPublished) {
		t.Errorf("zones after Publish:\n%s\nwant:\n%s", strings.Join(published, "\n"), strings.Join(wantPublished, "\n"))
	}

	mustRepublish(t, d, recs)
	if got := requestLines(f.log.take()); !slices.Equal(got, []string{lookup, list}) {
		t.Errorf("second Publish requests %q, want only %q", got, []string{lookup, list})
	}

	// Cleanup after a restart, by a new DNS from the same config.
	d2 := newDNS(t, "r53", section, providers.Options{})
	if err := d2.Cleanup(ctx, recs); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	reqs = f.log.take()
	checkR53Auth(t, reqs)
	checkR53Writes(t, f, filterRequests(reqs, isR53Change), "DELETE", recs)
	checkAsBefore(t, "zones after Cleanup", before, f.snapshot())
	checkSecondCleanup(t, d2, recs, f.view())
}

func TestRoute53PublishTwoZones(t *testing.T) {
	ctx := context.Background()
	f := newFakeRoute53(t, "example.com", "example.org", "example.net")
	route53Env(t, f)
	before := f.snapshot()
	// Route 53's provider cannot list zones: the SOA walk finds them.
	section := r53SectionFor(t, map[string]any{"resolvers": []any{zoneResolver(t, "example.com", "example.org")}})
	d := newDNS(t, "r53", section, providers.Options{})
	recs := planTwoZones(t, d, "r53", "shop", "mail")
	if reqs := f.log.take(); len(reqs) != 0 {
		t.Errorf("Plan asked Route 53: %q", requestLines(reqs))
	}

	mustPublish(t, d, recs, 2)
	reqs := f.log.take()
	checkR53Auth(t, reqs)
	// The provider does not batch: one SetRecords call per zone becomes one
	// single-change request per record, all of a zone's in one run.
	zones := checkR53Writes(t, f, filterRequests(reqs, isR53Change), "UPSERT", recs)
	if interleaved(zones) {
		t.Errorf("changes alternate between zones: %q", zones)
	}
	if n := len(filterRequests(reqs, func(r apiRequest) bool { return strings.HasPrefix(r.Path, "/2013-04-01/change/") })); n != 0 {
		t.Errorf("%d GetChange requests without wait_for_route53_sync", n)
	}

	checkRepublishThenCleanup(t, ctx, d, recs, f.view(), before, func(deletes []apiRequest) {
		if zones := checkR53Writes(t, f, deletes, "DELETE", recs); interleaved(zones) {
			t.Errorf("deletes alternate between zones: %q", zones)
		}
	})
}

func TestRoute53ReplacesStaleTarget(t *testing.T) {
	f := newFakeRoute53(t, "example.com")
	route53Env(t, f)
	f.add(f.zones[0], seedRR{Name: dcvLabel + ".example.com", Type: "CNAME", TTL: 300, Value: "stale.dcv-target.example"})
	d := newDNS(t, "r53", r53SectionFor(t, map[string]any{"zone": "example.com"}), providers.Options{})
	recs := planDCV(t, d, dcvInstructions("example.com"), wantRecords("r53", time.Minute, "example.com"))
	mustPublish(t, d, recs, 1)
	checkR53Writes(t, f, filterRequests(f.log.take(), isR53Change), "UPSERT", recs)
	want := fmt.Sprintf("%s %s. 60 CNAME %s.", f.zoneID("example.com"), recs[0].Name, recs[0].Target)
	if got := f.snapshot(); !slices.Contains(got, want) || slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, "stale.") }) {
		t.Errorf("zone after Publish:\n%s\nwant %q in place of the stale record", strings.Join(got, "\n"), want)
	}
}
