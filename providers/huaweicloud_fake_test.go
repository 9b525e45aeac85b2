package providers_test

import (
	"crypto/hmac"
	"encoding/hex"
	"encoding/json"
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
)

// hwSet is a record set as the fake keeps it.
type hwSet struct {
	ID      string
	Name    string // FQDN with its trailing dot
	Type    string
	TTL     int
	Records []string
	Default bool // SOA and NS, made with the zone, cannot be deleted
	Version int  // bumped by every write, so a rewrite is seen
}

type hwZone struct {
	id, name string // name with its trailing dot
	sets     []*hwSet
}

// fakeHuawei is a Huawei Cloud DNS API holding public zones in memory. A
// request that deny refuses is answered 403.
type fakeHuawei struct {
	fakeServer
	zones  []*hwZone
	nextID int
	writes []string
	// setLimit and zoneLimit are the page sizes applied when a request
	// asks for none (500 on the real API).
	setLimit, zoneLimit int
	// now is the API's clock, for the signature's date.
	now func() time.Time
	// before, when set, runs (under the lock) before each request is
	// served: a test changes the zone between two requests with it.
	before func(r apiRequest)
}

// newFakeHuawei starts a fake holding zones, each with its SOA and NS sets
// and the records of fakeUnrelated, and points http.DefaultClient at it.
func newFakeHuawei(t *testing.T, zones ...string) *fakeHuawei {
	t.Helper()
	f := &fakeHuawei{setLimit: 500, zoneLimit: 500, now: time.Now}
	for _, name := range zones {
		f.addZone(name)
	}
	f.startAsDefaultClient(t, "fake huaweicloud", hwHost, f)
	return f
}

func (f *fakeHuawei) newID() string {
	f.nextID++
	return fmt.Sprintf("ff8080825b8fc86c01%014x", f.nextID) // 32 hex digits, as the API's
}

func (f *fakeHuawei) addZone(name string) *hwZone {
	name = strings.TrimSuffix(name, ".")
	z := &hwZone{id: f.newID(), name: name + "."}
	f.zones = append(f.zones, z)
	z.sets = append(z.sets,
		&hwSet{ID: f.newID(), Name: z.name, Type: "SOA", TTL: 300, Default: true,
			Records: []string{"ns1.huaweicloud-dns.com. hostmaster.huaweicloud.com. (1 7200 900 1209600 300)"}},
		&hwSet{ID: f.newID(), Name: z.name, Type: "NS", TTL: 172800, Default: true,
			Records: []string{"ns1.huaweicloud-dns.com.", "ns1.huaweicloud-dns.cn."}})
	for _, s := range fakeUnrelated(name) {
		f.seed(z, s.Name, s.Type, s.TTL, s.Value)
	}
	return z
}

// seed adds a record set; TXT values are quoted, as the API shows them.
func (f *fakeHuawei) seed(z *hwZone, name, typ string, ttl int, values ...string) *hwSet {
	s := &hwSet{ID: f.newID(), Name: strings.TrimSuffix(name, ".") + ".", Type: typ, TTL: ttl}
	for _, v := range values {
		if typ == "TXT" {
			v = `"` + v + `"`
		}
		s.Records = append(s.Records, v)
	}
	z.sets = append(z.sets, s)
	return s
}

func (f *fakeHuawei) zone(name string) *hwZone {
	return find(f.zones, func(z *hwZone) bool { return strings.EqualFold(z.name, strings.TrimSuffix(name, ".")+".") })
}

func (f *fakeHuawei) zoneByID(id string) *hwZone {
	return find(f.zones, func(z *hwZone) bool { return z.id == id })
}

// set returns the record set at name (FQDN, no dot) and typ, or nil.
func (f *fakeHuawei) set(name, typ string) *hwSet {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, z := range f.zones {
		for _, s := range z.sets {
			if s.Name == name+"." && s.Type == typ {
				c := *s
				return &c
			}
		}
	}
	return nil
}

// snapshot lists every record set with its ID and version, so that a set
// deleted and recreated, or rewritten with the same values, shows.
func (f *fakeHuawei) snapshot() []string {
	return f.lines(func(emit func(string, ...any)) {
		for _, z := range f.zones {
			for _, s := range z.sets {
				emit("%s %s %s %d %s id=%s v%d", z.name, s.Name, s.Type, s.TTL, strings.Join(s.Records, ","), s.ID, s.Version)
			}
		}
	})
}

// view is f as checkRepublishThenCleanup sees it: the writes are the lines of takeWrites.
func (f *fakeHuawei) view() fakeView[string] {
	return fakeView[string]{takeWrites: f.takeWrites, describe: func(w []string) []string { return w }, snapshot: f.snapshot}
}

func (f *fakeHuawei) takeWrites() []string { return takeAll(&f.mu, &f.writes) }

// hwEscape is the signer's escaping: everything but A-Z a-z 0-9 - _ . ~.
func hwEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// verifySDKHMAC checks r's SDK-HMAC-SHA256 signature as the API gateway
// does: the canonical request (method, URI with a trailing slash, sorted
// escaped query, the signed headers, the body's hash) and the string to
// sign (algorithm, X-Sdk-Date, hash of the canonical request), HMAC'd with
// the secret. It returns the signed headers.
func verifySDKHMAC(r *http.Request, body []byte, accessKey, secret string, now time.Time) ([]string, error) {
	fields, err := authFields(r, "SDK-HMAC-SHA256")
	if err != nil {
		return nil, err
	}
	if fields["Access"] != accessKey {
		return nil, fmt.Errorf("Access %q, want the AK %s", fields["Access"], accessKey)
	}
	signed := strings.Split(fields["SignedHeaders"], ";")
	if !slices.IsSorted(signed) || !slices.Contains(signed, "x-sdk-date") || slices.Contains(signed, "authorization") {
		return nil, fmt.Errorf("SignedHeaders %q: want sorted, with x-sdk-date, without authorization", fields["SignedHeaders"])
	}
	date := r.Header.Get("X-Sdk-Date")
	at, err := time.Parse("20060102T150405Z", date)
	if err != nil {
		return nil, fmt.Errorf("X-Sdk-Date %q: %v", date, err)
	}
	if d := now.Sub(at); d > 15*time.Minute || d < -15*time.Minute {
		return nil, fmt.Errorf("X-Sdk-Date %s is %v off the API's clock", date, d)
	}
	var uri []string
	for _, seg := range strings.Split(r.URL.Path, "/") {
		uri = append(uri, hwEscape(seg))
	}
	canonURI := strings.Join(uri, "/")
	if !strings.HasSuffix(canonURI, "/") {
		canonURI += "/"
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("query %q: %v", r.URL.RawQuery, err)
	}
	var query []string
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range q {
			if !yield(k) {
				return
			}
		}
	}) {
		vs := slices.Clone(q[k])
		sort.Strings(vs)
		for _, v := range vs {
			query = append(query, hwEscape(k)+"="+hwEscape(v))
		}
	}
	var headers strings.Builder
	for _, h := range signed {
		vs := slices.Clone(r.Header.Values(h))
		if h == "host" {
			vs = []string{r.Host}
		}
		sort.Strings(vs)
		for _, v := range vs {
			headers.WriteString(h + ":" + strings.TrimSpace(v) + "\n")
		}
	}
	payload := sha256Hex(body)
	if h := r.Header.Get("X-Sdk-Content-Sha256"); h != "" && h != payload {
		return nil, fmt.Errorf("X-Sdk-Content-Sha256 %s is not the body's hash %s", h, payload)
	}
	canonical := r.Method + "\n" + canonURI + "\n" + strings.Join(query, "&") + "\n" + headers.String() + "\n" + fields["SignedHeaders"] + "\n" + payload
	if want := hex.EncodeToString(hmacSHA256([]byte(secret), "SDK-HMAC-SHA256\n"+date+"\n"+sha256Hex([]byte(canonical)))); !hmac.Equal([]byte(want), []byte(fields["Signature"])) {
		return nil, errors.New("signature does not match the request signed with the test's secret")
	}
	return signed, nil
}

func (f *fakeHuawei) reply(w http.ResponseWriter, status int, body any) {
	f.writeJSON(w, status, "application/json", body)
}

func (f *fakeHuawei) fail(w http.ResponseWriter, status int, code, msg string) {
	f.reply(w, status, map[string]string{"code": code, "message": msg})
}

// ServeHTTP implements the calls the provider makes, and refuses others.
func (f *fakeHuawei) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := f.receive(r)
	if err != nil {
		f.fail(w, http.StatusBadRequest, "APIGW.0201", err.Error())
		return
	}
	if _, err := verifySDKHMAC(r, req.Body, hwKey, hwSecret, f.now()); err != nil {
		f.t.Errorf("fake huaweicloud: %s: %v", req, err)
		f.fail(w, http.StatusUnauthorized, "APIGW.0301", "Incorrect IAM authentication information: "+err.Error())
		return
	}
	if f.refused(req) {
		f.fail(w, http.StatusForbidden, "DNS.0030", "Policy doesn't allow dns:recordset:* to be performed (SK "+hwSecret+")")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.before != nil {
		f.before(req)
	}
	parts := strings.Split(strings.TrimPrefix(req.Path, "/v2/"), "/")
	if !strings.HasPrefix(req.Path, "/v2/") || parts[0] != "zones" {
		f.unexpected(w, req)
		return
	}
	if (req.Method == http.MethodGet || req.Method == http.MethodDelete) && len(req.Body) > 0 {
		f.t.Errorf("fake huaweicloud: %s has a body %q", req, req.Body)
	}
	switch {
	case len(parts) == 1 && req.Method == http.MethodGet:
		f.listZones(w, req)
		return
	case len(parts) < 3 || parts[2] != "recordsets":
		f.unexpected(w, req)
		return
	}
	z := f.zoneByID(parts[1])
	if z == nil {
		f.fail(w, http.StatusNotFound, "DNS.0101", "The zone does not exist.")
		return
	}
	switch {
	case len(parts) == 3 && req.Method == http.MethodGet:
		f.listSets(w, req, z)
	case len(parts) == 3 && req.Method == http.MethodPost && len(req.Query) == 0:
		f.createSet(w, req, z)
	case len(parts) == 4 && req.Method == http.MethodPut && len(req.Query) == 0:
		f.updateSet(w, req, z, parts[3])
	case len(parts) == 4 && req.Method == http.MethodDelete && len(req.Query) == 0:
		f.deleteSet(w, z, parts[3])
	default:
		f.unexpected(w, req)
	}
}

func (f *fakeHuawei) unexpected(w http.ResponseWriter, req apiRequest) {
	f.t.Errorf("fake huaweicloud: unexpected request %s", req)
	f.fail(w, http.StatusNotFound, "APIGW.0101", "The API does not exist or has not been published in the environment.")
}

// page applies limit, offset and marker (the ID after which to start) to
// n items identified by id, answering the range or an error message.
func page(q url.Values, n, defLimit int, id func(int) string) (start, end int, msg string) {
	for k := range q {
		if !slices.Contains([]string{"name", "type", "search_mode", "limit", "offset", "marker"}, k) {
			return 0, 0, "unsupported parameter " + k // none the provider should send
		}
	}
	limit := defLimit
	if v := q.Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l < 0 || l > 500 {
			return 0, 0, "limit must be 0 to 500"
		}
		if l > 0 {
			limit = l
		}
	}
	if v := q.Get("offset"); v != "" {
		o, err := strconv.Atoi(v)
		if err != nil || o < 0 {
			return 0, 0, "offset must be 0 or more"
		}
		start = min(o, n)
	}
	if m := q.Get("marker"); m != "" {
		i := 0
		for i < n && id(i) != m {
			i++
		}
		if i == n {
			return 0, 0, "marker not found"
		}
		start = i + 1
	}
	return start, min(start+limit, n), ""
}

// match applies name (like by default, or equal) to an FQDN.
func match(q url.Values, name string) bool {
	want := strings.ToLower(strings.TrimSuffix(q.Get("name"), "."))
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if want == "" {
		return true
	}
	if q.Get("search_mode") == "equal" {
		return name == want
	}
	return strings.Contains(name, want)
}

func (f *fakeHuawei) links(req apiRequest, next string, more bool) map[string]string {
	self := "https://" + hwHost + req.Path
	if len(req.Query) > 0 {
		self += "?" + req.Query.Encode()
	}
	l := map[string]string{"self": self}
	if more {
		q := url.Values{}
		for k, v := range req.Query {
			q[k] = v
		}
		q.Del("offset")
		q.Set("marker", next)
		l["next"] = "https://" + hwHost + req.Path + "?" + q.Encode()
	}
	return l
}

// hwList answers a list request: the items of list (each with its ID and
// JSON) that match its name and the keep filter, the page it asks for,
// under key, with total_count and the links.
func hwList[T any](f *fakeHuawei, w http.ResponseWriter, req apiRequest, key string, list []T, defLimit int,
	keep func(T) bool, id func(T) string, toJSON func(T) map[string]any) {
	if m := req.Query.Get("search_mode"); m != "" && m != "like" && m != "equal" {
		f.fail(w, http.StatusBadRequest, "DNS.0303", "search_mode must be like or equal")
		return
	}
	list = slices.DeleteFunc(slices.Clone(list), func(x T) bool { return !keep(x) })
	start, end, msg := page(req.Query, len(list), defLimit, func(i int) string { return id(list[i]) })
	if msg != "" {
		f.t.Errorf("fake huaweicloud: %s: %s", req, msg)
		f.fail(w, http.StatusBadRequest, "DNS.0303", msg)
		return
	}
	out := []map[string]any{}
	for _, x := range list[start:end] {
		out = append(out, toJSON(x))
	}
	next := ""
	if end > start {
		next = id(list[end-1])
	}
	f.reply(w, http.StatusOK, map[string]any{key: out, "metadata": map[string]int{"total_count": len(list)},
		"links": f.links(req, next, end < len(list))})
}

func (f *fakeHuawei) listZones(w http.ResponseWriter, req apiRequest) {
	hwList(f, w, req, "zones", f.zones, f.zoneLimit,
		func(z *hwZone) bool { return match(req.Query, z.name) },
		func(z *hwZone) string { return z.id },
		func(z *hwZone) map[string]any {
			return map[string]any{"id": z.id, "name": z.name, "zone_type": "public", "status": "ACTIVE",
				"ttl": 300, "email": "hostmaster@example.com", "record_num": len(z.sets), "description": ""}
		})
}

func (z *hwZone) setJSON(s *hwSet, status string) map[string]any {
	return map[string]any{"id": s.ID, "name": s.Name, "type": s.Type, "ttl": s.TTL, "records": s.Records,
		"status": status, "default": s.Default, "zone_id": z.id, "zone_name": z.name, "description": ""}
}

// listSets lists z's sets oldest first: the API does not sort unless asked.
func (f *fakeHuawei) listSets(w http.ResponseWriter, req apiRequest, z *hwZone) {
	hwList(f, w, req, "recordsets", z.sets, f.setLimit,
		func(s *hwSet) bool {
			return match(req.Query, s.Name) && (req.Query.Get("type") == "" || req.Query.Get("type") == s.Type)
		},
		func(s *hwSet) string { return s.ID },
		func(s *hwSet) map[string]any { return z.setJSON(s, "ACTIVE") })
}

// hwBody is a create or update request's body. ID is not a documented
// field of either: upstream's UpdateRecord sends it (equal to the path's);
// the wrapper does not.
type hwBody struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	TTL         *int     `json:"ttl"`
	Records     []string `json:"records"`
	Description string   `json:"description"`
}

func (f *fakeHuawei) body(w http.ResponseWriter, req apiRequest, z *hwZone) (hwBody, bool) {
	var b hwBody
	dec := json.NewDecoder(strings.NewReader(string(req.Body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		f.t.Errorf("fake huaweicloud: %s: body %s: %v", req, req.Body, err)
		f.fail(w, http.StatusBadRequest, "DNS.0303", "invalid body")
		return b, false
	}
	name := strings.ToLower(b.Name)
	if !strings.HasSuffix(name, ".") || (name != z.name && !strings.HasSuffix(name, "."+z.name)) ||
		!slices.Contains([]string{"A", "AAAA", "CNAME", "MX", "TXT", "SRV", "NS", "CAA"}, b.Type) ||
		len(b.Records) == 0 || b.TTL != nil && (*b.TTL < 1 || *b.TTL > 2147483647) {
		f.t.Errorf("fake huaweicloud: %s: bad record set %s", req, req.Body)
		f.fail(w, http.StatusBadRequest, "DNS.0303", "invalid record set")
		return b, false
	}
	if b.Type == "CNAME" && len(b.Records) != 1 {
		f.fail(w, http.StatusBadRequest, "DNS.0308", "A CNAME record set holds one value.")
		return b, false
	}
	return b, true
}

// conflict says why a set name/type cannot be added next to z's sets.
func (z *hwZone) conflict(name, typ, except string) string {
	for _, s := range z.sets {
		if s.ID == except || !strings.EqualFold(s.Name, name) {
			continue
		}
		if s.Type == typ {
			return "The record set already exists."
		}
		if s.Type == "CNAME" || typ == "CNAME" {
			return "The CNAME record set conflicts with other record sets."
		}
	}
	return ""
}

func (f *fakeHuawei) createSet(w http.ResponseWriter, req apiRequest, z *hwZone) {
	b, ok := f.body(w, req, z)
	if !ok {
		return
	}
	if b.ID != "" {
		f.t.Errorf("fake huaweicloud: %s: create with an id", req)
	}
	if msg := z.conflict(b.Name, b.Type, ""); msg != "" {
		f.fail(w, http.StatusBadRequest, "DNS.0312", msg)
		return
	}
	ttl := 300
	if b.TTL != nil {
		ttl = *b.TTL
	}
	s := &hwSet{ID: f.newID(), Name: strings.ToLower(b.Name), Type: b.Type, TTL: ttl, Records: b.Records}
	z.sets = append(z.sets, s)
	f.writes = append(f.writes, fmt.Sprintf("POST %s %s %d %s", s.Name, s.Type, s.TTL, strings.Join(s.Records, ",")))
	f.reply(w, http.StatusAccepted, z.setJSON(s, "PENDING_CREATE"))
}

func (f *fakeHuawei) updateSet(w http.ResponseWriter, req apiRequest, z *hwZone, id string) {
	i := slices.IndexFunc(z.sets, func(s *hwSet) bool { return s.ID == id })
	if i < 0 {
		f.fail(w, http.StatusNotFound, "DNS.0313", "The record set does not exist.")
		return
	}
	b, ok := f.body(w, req, z)
	if !ok {
		return
	}
	s := z.sets[i]
	if b.ID != "" && b.ID != id || !strings.EqualFold(b.Name, s.Name) || b.Type != s.Type {
		f.t.Errorf("fake huaweicloud: %s renames or retypes %s %s: %s", req, s.Name, s.Type, req.Body)
		f.fail(w, http.StatusBadRequest, "DNS.0303", "name and type cannot change")
		return
	}
	if b.TTL != nil {
		s.TTL = *b.TTL
	}
	s.Records = b.Records
	s.Version++
	f.writes = append(f.writes, fmt.Sprintf("PUT %s %s %s %d %s", s.ID, s.Name, s.Type, s.TTL, strings.Join(s.Records, ",")))
	f.reply(w, http.StatusAccepted, z.setJSON(s, "PENDING_UPDATE"))
}

func (f *fakeHuawei) deleteSet(w http.ResponseWriter, z *hwZone, id string) {
	i := slices.IndexFunc(z.sets, func(s *hwSet) bool { return s.ID == id })
	if i < 0 {
		f.fail(w, http.StatusNotFound, "DNS.0313", "The record set does not exist.")
		return
	}
	s := z.sets[i]
	if s.Default {
		f.fail(w, http.StatusBadRequest, "DNS.0316", "The default record set cannot be deleted.")
		return
	}
	z.sets = slices.Delete(z.sets, i, i+1)
	f.writes = append(f.writes, fmt.Sprintf("DELETE %s %s %s %s", s.ID, s.Name, s.Type, strings.Join(s.Records, ",")))
	f.reply(w, http.StatusAccepted, z.setJSON(s, "PENDING_DELETE"))
}

// hwLookAlikes seeds zone (example.com) and the account with records that
// look like the DCV records of dcvInstructions(zone, "www", "shop") but are
// not theirs: another zone whose name extends this one, a name with a
// prefix, the same value at other names, a multi-value TXT holding the
// apex target, and a multi-value A set.
func (f *fakeHuawei) hwLookAlikes(zone string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	z := f.zone(zone)
	apexTarget := dcvTarget(dcvLabel+"."+zone) + "."
	cn := f.zone(zone + ".cn")
	if cn == nil {
		cn = f.addZone(zone + ".cn")
	}
	f.seed(cn, dcvLabel+"."+zone+".cn", "CNAME", 60, apexTarget)
	f.seed(cn, dcvLabel+".www."+zone+".cn", "CNAME", 60, dcvTarget(dcvLabel+".www."+zone)+".")
	f.seed(z, "x"+dcvLabel+"."+zone, "CNAME", 60, apexTarget)
	f.seed(z, dcvLabel+".old."+zone, "CNAME", 60, apexTarget)
	f.seed(z, dcvLabel+".mail."+zone, "TXT", 60, strings.TrimSuffix(apexTarget, "."), "v=other")
	f.seed(z, dcvLabel+".mail."+zone, "A", 60, "192.0.2.20", "192.0.2.21")
	f.seed(z, "shop."+zone, "A", 300, "192.0.2.30", "192.0.2.31")
}
