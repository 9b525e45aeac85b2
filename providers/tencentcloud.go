package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/libdns/libdns"
	"github.com/libdns/tencentcloud"
)

// TencentCloud is github.com/libdns/tencentcloud (v1.4.3) with its record
// methods rewritten, because the upstream ones are not exact (found by the
// fake in tencentcloud_fake_test.go):
//   - it never reads Response.Error, and the API answers its errors with
//     HTTP 200: a refused DeleteRecord or ModifyRecord reads as success and
//     a refused list as an empty zone (client.go);
//   - GetRecords sends no Limit or Offset, so it sees the API's default
//     page of 100 records, and dcvd cannot find its own records in a bigger
//     zone;
//   - its SetRecords and DeleteRecords act on the first record found at a
//     name, so a multi-value RRset is not handled as libdns says.
//
// It keeps the upstream's config keys (the embedded struct's fields), its
// signer (tencentcloud.SignRequest) and http.DefaultClient. It always uses
// the global endpoint, the only host SignRequest signs for; the region key
// is refused by checkTencentCloud. Like upstream it works on the default
// line (默认) only: records on other lines are neither seen nor changed.
type TencentCloud struct {
	tencentcloud.Provider
}

const (
	tcEndpoint = "https://dnspod.tencentcloudapi.com"
	tcVersion  = "2021-03-23"
	// tcDefaultLine is the line dcvd reads and writes, as upstream does.
	tcDefaultLine = "默认"
	// tcPageLimit is the largest page DescribeRecordList serves.
	tcPageLimit = 3000
	// tcNoRecords is DescribeRecordList's answer to an empty result.
	tcNoRecords = "ResourceNotFound.NoDataOfRecord"
)

// checkTencentCloud refuses the region key: upstream sends to
// dnspod.<region>.tencentcloudapi.com but signs for the global host, so
// every request fails the signature check, and DNSPod is a global service.
func checkTencentCloud(p Provider) error {
	if t, ok := p.(*TencentCloud); ok && t.Region != "" {
		return fmt.Errorf("region: DNSPod is a global service at dnspod.tencentcloudapi.com; " +
			"with a region, libdns/tencentcloud sends to dnspod.<region>.tencentcloudapi.com but signs " +
			"for the global host, so every request would be refused: remove the region key")
	}
	return nil
}

// tcAPIError is an error the API answered in Response.Error.
type tcAPIError struct {
	Action, Code, Message string
}

func (e *tcAPIError) Error() string {
	return fmt.Sprintf("tencentcloud: %s: %s: %s", e.Action, e.Code, e.Message)
}

type tcRecordJSON struct {
	RecordID uint64 `json:"RecordId"`
	Name     string `json:"Name"`
	Type     string `json:"Type"`
	Value    string `json:"Value"`
	Line     string `json:"Line"`
	TTL      int64  `json:"TTL"`
	MX       int64  `json:"MX"`
}

type tcResponseJSON struct {
	Response struct {
		Error *struct {
			Code    string `json:"Code"`
			Message string `json:"Message"`
		} `json:"Error"`
		RequestID       string `json:"RequestId"`
		RecordID        uint64 `json:"RecordId"`
		RecordCountInfo *struct {
			TotalCount int `json:"TotalCount"`
		} `json:"RecordCountInfo"`
		RecordList []tcRecordJSON `json:"RecordList"`
	} `json:"Response"`
}

// redact removes the credentials from s: the API's error messages may
// quote what it was sent.
func (p *TencentCloud) redact(s string) string {
	for _, sec := range []string{p.SecretKey, p.SessionToken} {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

// call sends one action, signed by upstream's signer, and decodes the
// answer. An error in Response.Error is returned as a *tcAPIError.
func (p *TencentCloud) call(ctx context.Context, action string, params map[string]any) (*tcResponseJSON, error) {
	if p.SecretId == "" || p.SecretKey == "" {
		return nil, errors.New("tencentcloud: secret_id and secret_key are required")
	}
	body, err := json.Marshal(params)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tcEndpoint, strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-TC-Version", tcVersion)
	tencentcloud.SignRequest(p.SecretId, p.SecretKey, p.SessionToken, req, action, string(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tencentcloud: %s: %s", action, p.redact(err.Error()))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("tencentcloud: %s: read answer: %v", action, err)
	}
	if resp.StatusCode != http.StatusOK {
		snippet := strings.TrimSpace(string(data))
		if len(snippet) > 300 {
			snippet = snippet[:300] + "…"
		}
		return nil, fmt.Errorf("tencentcloud: %s: HTTP %d: %s", action, resp.StatusCode, p.redact(snippet))
	}
	var out tcResponseJSON
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("tencentcloud: %s: undecodable answer: %v", action, err)
	}
	if e := out.Response.Error; e != nil {
		return nil, &tcAPIError{Action: action, Code: e.Code, Message: p.redact(e.Message)}
	}
	return &out, nil
}

// list reads every page of the zone's default-line records that match
// filter (Subdomain, RecordType). An empty result is an empty list.
func (p *TencentCloud) list(ctx context.Context, zone string, filter map[string]any) ([]tcRecordJSON, error) {
	var out []tcRecordJSON
	for offset := 0; ; {
		params := map[string]any{
			"Domain":     tcDomain(zone),
			"RecordLine": tcDefaultLine,
			"Limit":      tcPageLimit,
			"Offset":     offset,
		}
		for k, v := range filter {
			params[k] = v
		}
		resp, err := p.call(ctx, "DescribeRecordList", params)
		var apiErr *tcAPIError
		if errors.As(err, &apiErr) && apiErr.Code == tcNoRecords {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		page := resp.Response.RecordList
		out = append(out, page...)
		offset += len(page)
		if len(page) == 0 || resp.Response.RecordCountInfo == nil || offset >= resp.Response.RecordCountInfo.TotalCount {
			return out, nil
		}
	}
}

// lookup returns the default-line records at exactly sub (as tcSubdomain
// gives it) and, when typ is not empty, of type typ.
func (p *TencentCloud) lookup(ctx context.Context, zone, sub, typ string) ([]tcRecordJSON, error) {
	filter := map[string]any{"Subdomain": sub}
	if typ != "" {
		filter["RecordType"] = typ
	}
	recs, err := p.list(ctx, zone, filter)
	if err != nil {
		return nil, err
	}
	var out []tcRecordJSON
	for _, r := range recs {
		if strings.EqualFold(r.Name, sub) && (typ == "" || strings.EqualFold(r.Type, typ)) && r.Line == tcDefaultLine {
			out = append(out, r)
		}
	}
	return out, nil
}

// GetRecords lists every default-line record of the zone, page by page.
func (p *TencentCloud) GetRecords(ctx context.Context, zone string) ([]libdns.Record, error) {
	recs, err := p.list(ctx, zone, nil)
	if err != nil {
		return nil, err
	}
	out := make([]libdns.Record, 0, len(recs))
	for _, r := range recs {
		out = append(out, tcLibdns(r))
	}
	return out, nil
}

// AppendRecords creates each record; it returns those created before an
// error.
func (p *TencentCloud) AppendRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	var created []libdns.Record
	for _, r := range records {
		if _, err := p.write(ctx, zone, 0, r.RR()); err != nil {
			return created, err
		}
		created = append(created, r)
	}
	return created, nil
}

// SetRecords makes the given records the only default-line records at
// each of their (name, type) pairs: a record already there with the same
// value and TTL is left alone, others are modified in place (by ID) or
// created, and the records left over are deleted by ID. A failed lookup is
// an error, never "no record". Not atomic: the API has no batch write.
func (p *TencentCloud) SetRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	type key struct{ name, typ string }
	var order []key
	groups := map[key][]libdns.Record{}
	for _, r := range records {
		rr := r.RR()
		k := key{strings.ToLower(tcSubdomain(rr.Name, zone)), strings.ToUpper(rr.Type)}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	var set []libdns.Record
	for _, k := range order {
		existing, err := p.lookup(ctx, zone, k.name, k.typ)
		if err != nil {
			return set, err
		}
		var pending []libdns.Record
		for _, r := range groups[k] {
			rr := r.RR()
			i := -1
			for j, e := range existing {
				if tcSameValue(e, rr) && (rr.TTL == 0 || tcTTL(rr) == e.TTL) {
					i = j
					break
				}
			}
			if i >= 0 {
				existing = append(existing[:i], existing[i+1:]...)
				set = append(set, r)
				continue
			}
			pending = append(pending, r)
		}
		for _, r := range pending {
			var id uint64
			if len(existing) > 0 {
				id, existing = existing[0].RecordID, existing[1:]
			}
			if _, err := p.write(ctx, zone, id, r.RR()); err != nil {
				return set, err
			}
			set = append(set, r)
		}
		for _, e := range existing {
			if err := p.deleteID(ctx, zone, e.RecordID); err != nil {
				return set, err
			}
		}
	}
	return set, nil
}

// DeleteRecords deletes, by ID, every default-line record that exactly
// matches one given (an empty Type, TTL or Data matches any) and returns
// those it deleted. Records not in the zone are ignored.
func (p *TencentCloud) DeleteRecords(ctx context.Context, zone string, records []libdns.Record) ([]libdns.Record, error) {
	var deleted []libdns.Record
	gone := map[uint64]bool{}
	for _, r := range records {
		rr := r.RR()
		if rr.Name == "" {
			return deleted, errors.New("tencentcloud: DeleteRecords: a record without a name")
		}
		found, err := p.lookup(ctx, zone, tcSubdomain(rr.Name, zone), rr.Type)
		if err != nil {
			return deleted, err
		}
		for _, e := range found {
			if gone[e.RecordID] || (rr.Data != "" && !tcSameValue(e, rr)) || (rr.TTL != 0 && tcTTL(rr) != e.TTL) {
				continue
			}
			if err := p.deleteID(ctx, zone, e.RecordID); err != nil {
				return deleted, err
			}
			gone[e.RecordID] = true
			deleted = append(deleted, tcLibdns(e))
		}
	}
	return deleted, nil
}

// write creates rr (id 0) or modifies record id to be rr, on the default
// line, and returns the record's ID.
func (p *TencentCloud) write(ctx context.Context, zone string, id uint64, rr libdns.RR) (uint64, error) {
	params := map[string]any{
		"Domain":     tcDomain(zone),
		"SubDomain":  tcSubdomain(rr.Name, zone),
		"RecordType": rr.Type,
		"RecordLine": tcDefaultLine,
		"Value":      rr.Data,
	}
	if rr.Type == "MX" {
		prio, host, ok := strings.Cut(strings.TrimSpace(rr.Data), " ")
		n, err := strconv.ParseUint(prio, 10, 16)
		if !ok || err != nil {
			return 0, fmt.Errorf("tencentcloud: MX record %s: data %q is not \"priority host\"", rr.Name, rr.Data)
		}
		params["MX"], params["Value"] = n, strings.TrimSpace(host)
	}
	if rr.TTL != 0 {
		params["TTL"] = tcTTL(rr)
	}
	action := "CreateRecord"
	if id != 0 {
		action = "ModifyRecord"
		params["RecordId"] = id
	}
	resp, err := p.call(ctx, action, params)
	if err != nil {
		return 0, err
	}
	if resp.Response.RecordID == 0 {
		return 0, fmt.Errorf("tencentcloud: %s: the answer names no RecordId", action)
	}
	return resp.Response.RecordID, nil
}

// deleteID deletes one record by its ID. A record that is already gone is
// not an error.
func (p *TencentCloud) deleteID(ctx context.Context, zone string, id uint64) error {
	_, err := p.call(ctx, "DeleteRecord", map[string]any{"Domain": tcDomain(zone), "RecordId": id})
	var apiErr *tcAPIError
	if errors.As(err, &apiErr) && apiErr.Code == tcNoRecords {
		return nil
	}
	return err
}

func tcDomain(zone string) string {
	return strings.TrimSuffix(zone, ".")
}

// tcSubdomain is a record's name (zone-relative, as libdns has it, or an
// FQDN with its final dot) as the API writes it: "@" for the apex.
func tcSubdomain(name, zone string) string {
	if abs, ok := strings.CutSuffix(name, "."); ok {
		z := strings.TrimSuffix(zone, ".")
		if strings.EqualFold(abs, z) {
			return "@"
		}
		if len(abs) > len(z)+1 && strings.EqualFold(abs[len(abs)-len(z)-1:], "."+z) {
			return abs[:len(abs)-len(z)-1]
		}
		return name // not in the zone: the API refuses it
	}
	if name == "" {
		return "@"
	}
	return name
}

func tcTTL(rr libdns.RR) int64 {
	return max(1, int64(rr.TTL/time.Second))
}

// tcValue is a record's data as libdns writes it.
func tcValue(r tcRecordJSON) string {
	if r.Type == "MX" {
		return strconv.FormatInt(r.MX, 10) + " " + r.Value
	}
	return r.Value
}

// tcSameValue compares a listed record's value with rr's data: host names
// without case or the final dot, other values exactly.
func tcSameValue(e tcRecordJSON, rr libdns.RR) bool {
	a, b := tcValue(e), rr.Data
	switch strings.ToUpper(e.Type) {
	case "CNAME", "NS", "MX", "PTR", "SRV":
		return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(strings.TrimSpace(b), "."))
	}
	return a == b
}

// tcLibdns converts a listed record; a value libdns cannot parse is kept
// as an opaque RR rather than failing the whole listing.
func tcLibdns(r tcRecordJSON) libdns.Record {
	rr := libdns.RR{Name: r.Name, Type: r.Type, Data: tcValue(r), TTL: time.Duration(r.TTL) * time.Second}
	if rec, err := rr.Parse(); err == nil {
		return rec
	}
	return rr
}

var (
	_ libdns.RecordGetter   = (*TencentCloud)(nil)
	_ libdns.RecordAppender = (*TencentCloud)(nil)
	_ libdns.RecordSetter   = (*TencentCloud)(nil)
	_ libdns.RecordDeleter  = (*TencentCloud)(nil)
)
