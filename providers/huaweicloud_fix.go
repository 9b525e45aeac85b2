package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/libdns/huaweicloud"
	"github.com/libdns/libdns"
)

// HuaweiCloud is github.com/libdns/huaweicloud (v1.0.1) with the three
// methods dcvd relies on rewritten, because the upstream ones are not exact
// (found by the fake in huaweicloud_fake_test.go):
//   - GetRecords reads one page of record sets (client.go GetRecords sends
//     no limit/offset; the API returns at most 500), so in a bigger zone
//     dcvd does not see its own record and Cleanup leaves it behind;
//   - DeleteRecords deletes the whole record set at the name and type
//     whatever the value (client.go GetRecordId returns the set's ID even
//     when no value matched), so it can delete a record that was changed
//     since it was read, or the other values of a multi-value set;
//   - SetRecords takes any error of its lookup (a 5xx, a timeout, two sets)
//     for "no record" and creates one (provider.go SetRecords).
//
// It keeps the upstream's config keys (the embedded struct's fields), its
// endpoint, its signer and http.DefaultClient; AppendRecords is upstream's.
type HuaweiCloud struct {
	huaweicloud.Provider
}

// huaweiPageLimit is the API's largest page of zones or record sets.
const huaweiPageLimit = 500

type hwZoneJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type hwSetJSON struct {
	ID      string   `json:"id,omitempty"`
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	TTL     int      `json:"ttl,omitempty"`
	Records []string `json:"records"`
}

type hwListJSON struct {
	Zones      []hwZoneJSON `json:"zones"`
	RecordSets []hwSetJSON  `json:"recordsets"`
	Metadata   struct {
		TotalCount int `json:"total_count"`
	} `json:"metadata"`
}

func (p *HuaweiCloud) endpoint() string {
	region := p.RegionId
	if region == "" {
		region = "cn-south-1" // upstream's default
	}
	return "https://dns." + region + ".myhuaweicloud.com/v2"
}

// call sends one signed request and decodes the answer into out.
func (p *HuaweiCloud) call(ctx context.Context, method, path string, query url.Values, body, out any) error {
	if p.AccessKeyId == "" || p.SecretAccessKey == "" {
		return fmt.Errorf("huaweicloud: credentials missing")
	}
	u := p.endpoint() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		// The API documents Content-Type as required for a body; set
		// before signing, so it is signed too.
		req.Header.Set("Content-Type", "application/json")
	}
	signer := huaweicloud.Signer{Key: p.AccessKeyId, Secret: p.SecretAccessKey}
	if err := signer.Sign(req); err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// zoneID finds the zone by its exact name.
func (p *HuaweiCloud) zoneID(ctx context.Context, zone string) (string, error) {
	name := strings.TrimSuffix(zone, ".")
	var resp hwListJSON
	if err := p.call(ctx, http.MethodGet, "/zones", url.Values{"name": {name}, "search_mode": {"equal"}}, nil, &resp); err != nil {
		return "", err
	}
	var ids []string
	for _, z := range resp.Zones {
		if strings.EqualFold(strings.TrimSuffix(z.Name, "."), name) {
			ids = append(ids, z.ID)
		}
	}
	if len(ids) != 1 {
		return "", fmt.Errorf("huaweicloud: %d zones named %s", len(ids), name)
	}
	return ids[0], nil
}

// recordSets reads every page of the zone's record sets matching filter.
func (p *HuaweiCloud) recordSets(ctx context.Context, zoneID string, filter url.Values) ([]hwSetJSON, error) {
	var out []hwSetJSON
	for offset := 0; ; {
		q := url.Values{"limit": {strconv.Itoa(huaweiPageLimit)}, "offset": {strconv.Itoa(offset)}}
		for k, v := range filter {
			q[k] = v
		}
		var resp hwListJSON
		if err := p.call(ctx, http.MethodGet, "/zones/"+zoneID+"/recordsets", q, nil, &resp); err != nil {
			return nil, err
		}
		out = append(out, resp.RecordSets...)
		offset += len(resp.RecordSets)
		if len(resp.RecordSets) == 0 || offset >= resp.Metadata.TotalCount {
			return out, nil
		}
	}
}

// lookup returns the record sets at exactly name (zone-relative) and typ.
func (p *HuaweiCloud) lookup(ctx context.Context, zoneID, zone, name, typ string) ([]hwSetJSON, error) {
	fqdn := libdns.AbsoluteName(name, zone)
	filter := url.Values{"name": {fqdn}, "search_mode": {"equal"}}
	if typ != "" {
		filter.Set("type", typ)
	}
	sets, err := p.recordSets(ctx, zoneID, filter)
	if err != nil {
		return nil, err
	}
	var out []hwSetJSON
	for _, s := range sets {
		if strings.EqualFold(strings.TrimSuffix(s.Name, "."), strings.TrimSuffix(fqdn, ".")) && (typ == "" || strings.EqualFold(s.Type, typ)) {
			out = append(out, s)
		}
	}
	return out, nil
}

// GetRecords lists every record of the zone, page by page.
func (p *HuaweiCloud) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	id, err := p.zoneID(ctx, zone)
	if err != nil {
		return nil, err
	}
	sets, err := p.recordSets(ctx, id, nil)
	if err != nil {
		return nil, err
	}
	var out []libdns.Record
	for _, s := range sets {
		for _, v := range s.Records {
			rec, err := hwLibdns(s, v, zone)
			if err != nil {
				return nil, err
			}
			out = append(out, rec)
		}
	}
	return out, nil
}

// SetRecords makes the given records the whole record set at each name
// and type: one PUT of an existing set (none when it is already so), or
// one POST of a new one. A failed lookup is an error, not "no record".
func (p *HuaweiCloud) SetRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	id, err := p.zoneID(ctx, zone)
	if err != nil {
		return nil, err
	}
	type key struct{ name, typ string }
	var order []key
	groups := map[key][]libdns.RR{}
	for _, r := range records {
		rr := r.RR()
		k := key{libdns.AbsoluteName(rr.Name, zone), rr.Type}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], rr)
	}
	for _, k := range order {
		rrs := groups[k]
		want := hwSetJSON{Name: k.name, Type: k.typ, TTL: max(1, int(rrs[0].TTL/time.Second))}
		for _, rr := range rrs {
			want.Records = append(want.Records, hwValue(rr.Type, rr.Data))
		}
		sets, err := p.lookup(ctx, id, zone, k.name, k.typ)
		if err != nil {
			return nil, err
		}
		switch len(sets) {
		case 0:
			if err := p.call(ctx, http.MethodPost, "/zones/"+id+"/recordsets", nil, want, nil); err != nil {
				return nil, err
			}
		case 1:
			if sets[0].TTL == want.TTL && sameValues(k.typ, sets[0].Records, want.Records) {
				continue
			}
			if err := p.call(ctx, http.MethodPut, "/zones/"+id+"/recordsets/"+sets[0].ID, nil, want, nil); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("huaweicloud: %d record sets at %s %s (lines or weights); not changing them", len(sets), k.name, k.typ)
		}
	}
	return records, nil
}

// DeleteRecords removes exactly the given values: a record set holding
// only those is deleted, one holding others too is rewritten without
// them, and a value that is not there (any more) is ignored. An empty TTL
// or Data matches any.
func (p *HuaweiCloud) DeleteRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	id, err := p.zoneID(ctx, zone)
	if err != nil {
		return nil, err
	}
	var deleted []libdns.Record
	for _, r := range records {
		rr := r.RR()
		sets, err := p.lookup(ctx, id, zone, rr.Name, rr.Type)
		if err != nil {
			return deleted, err
		}
		for _, s := range sets {
			if rr.TTL != 0 && int(rr.TTL/time.Second) != s.TTL {
				continue
			}
			var keep []string
			for _, v := range s.Records {
				if rr.Data != "" && !sameValues(s.Type, []string{v}, []string{hwValue(s.Type, rr.Data)}) {
					keep = append(keep, v)
				}
			}
			if len(keep) == len(s.Records) {
				continue
			}
			if len(keep) == 0 {
				err = p.call(ctx, http.MethodDelete, "/zones/"+id+"/recordsets/"+s.ID, nil, nil, nil)
			} else {
				err = p.call(ctx, http.MethodPut, "/zones/"+id+"/recordsets/"+s.ID, nil,
					hwSetJSON{Name: s.Name, Type: s.Type, TTL: s.TTL, Records: keep}, nil)
			}
			if err != nil {
				return deleted, err
			}
			deleted = append(deleted, r)
		}
	}
	return deleted, nil
}

// hwValue is a record's value as the API holds it: TXT quoted, as
// upstream's hwRecord writes it.
func hwValue(typ, data string) string {
	if typ == "TXT" && !strings.HasPrefix(data, `"`) {
		return `"` + data + `"`
	}
	return data
}

// sameValues compares two value lists as DNS does: order-free, and for
// host names without case or the trailing dot.
func sameValues(typ string, a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	norm := func(v string) string {
		if typ == "TXT" {
			return v
		}
		return strings.ToLower(strings.TrimSuffix(v, "."))
	}
	seen := map[string]int{}
	for _, v := range a {
		seen[norm(v)]++
	}
	for _, v := range b {
		if seen[norm(v)] == 0 {
			return false
		}
		seen[norm(v)]--
	}
	return true
}

// hwLibdns converts one value of a set as upstream's libdnsRecord does.
func hwLibdns(s hwSetJSON, value, zone string) (libdns.Record, error) {
	if s.Type == "TXT" {
		value = strings.Trim(value, `"`)
	}
	rec, err := libdns.RR{
		Name: libdns.RelativeName(s.Name, zone),
		TTL:  time.Duration(s.TTL) * time.Second,
		Type: s.Type,
		Data: value,
	}.Parse()
	if err != nil {
		return nil, fmt.Errorf("huaweicloud: record set %s %s: %v", s.Name, s.Type, err)
	}
	return rec, nil
}
