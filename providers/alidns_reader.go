package providers

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/libdns/alidns"
	"github.com/libdns/libdns"
)

// recordReader reads chosen records of a zone, for providers whose
// GetRecords does not see the whole zone. Publish and Cleanup then read
// only the names they work on, and the records they return carry the
// provider's IDs, so that DeleteRecords removes exactly those records.
type recordReader interface {
	// atName returns the records at name (FQDN without trailing dot) in
	// zone, of every type.
	atName(ctx context.Context, zone, name string) ([]libdns.Record, error)
	// byID returns the record with this ID if it still exists in zone; a
	// record that is gone (or was never this account's) is (nil, nil).
	byID(ctx context.Context, zone, id string) (libdns.Record, error)
}

// readerFor returns the recordReader of providers that need one, else nil.
func readerFor(p Provider) recordReader {
	if a, ok := p.(*alidns.Provider); ok {
		return aliReader{cred: a.CredentialInfo}
	}
	return nil
}

// recordID returns the provider's ID of a record a provider returned, or ""
// when the provider gives none dcvd knows how to use.
func recordID(r libdns.Record) string {
	if a, ok := r.(alidns.DomainRecord); ok {
		return a.ID
	}
	return ""
}

// aliReader reads Alibaba Cloud DNS records itself. libdns/alidns v1.0.7
// cannot be used for it: its GetRecords asks for no page and so sees only
// the newest 20 records of a zone, and its DeleteRecords, given a record
// without an ID, deletes the first hit of a substring search of names and
// values, which may be another record. The queries here are exact (a
// subdomain, a record ID) and paged; dcvd filters their answers again.
type aliReader struct {
	cred alidns.CredentialInfo
}

const (
	aliAPI     = "https://alidns.aliyuncs.com/"
	aliVersion = "2015-01-09"
	// aliPageSize is the largest page DescribeSubDomainRecords serves.
	aliPageSize = 500
	// aliMaxPages bounds the pages read for one name: a name holds a few
	// records, so more means the API is not paging as documented.
	aliMaxPages = 20
)

// aliRecordJSON is a record as DescribeSubDomainRecords and
// DescribeDomainRecordInfo show it.
type aliRecordJSON struct {
	RecordID   string `json:"RecordId"`
	DomainName string `json:"DomainName"`
	RR         string `json:"RR"`
	Type       string `json:"Type"`
	Value      string `json:"Value"`
	TTL        int64  `json:"TTL"`
	Priority   int64  `json:"Priority"`
}

func (r aliRecordJSON) libdns() libdns.Record {
	return alidns.DomainRecord{Type: r.Type, Name: r.RR, Value: r.Value, TTL: uint32(r.TTL), Priority: uint32(r.Priority), ID: r.RecordID}
}

// aliError is the API's answer to a refused request.
type aliError struct {
	Status        int
	Code, Message string
}

func (e *aliError) Error() string {
	return fmt.Sprintf("HTTP %d: %s: %s", e.Status, e.Code, e.Message)
}

// gone reports whether the API said the record does not exist (or is not
// this account's, which it does not tell apart).
func (e *aliError) gone() bool {
	return e.Code == "DomainRecordNotBelongToUser" || strings.Contains(e.Code, "NotFound") || strings.Contains(e.Code, "NoExist")
}

func (a aliReader) atName(ctx context.Context, zone, name string) ([]libdns.Record, error) {
	domain := strings.TrimSuffix(zone, ".")
	var out []libdns.Record
	for page := 1; page <= aliMaxPages; page++ {
		var resp struct {
			TotalCount    int `json:"TotalCount"`
			DomainRecords struct {
				Record []aliRecordJSON `json:"Record"`
			} `json:"DomainRecords"`
		}
		err := a.call(ctx, "DescribeSubDomainRecords", url.Values{
			"DomainName": {domain},
			"SubDomain":  {name},
			"PageNumber": {strconv.Itoa(page)},
			"PageSize":   {strconv.Itoa(aliPageSize)},
		}, &resp)
		if err != nil {
			return nil, err
		}
		for _, r := range resp.DomainRecords.Record {
			// The query is exact; this guards against an API that
			// widens it.
			if strings.EqualFold(r.DomainName, domain) && sameName(r.RR, name, zone) {
				out = append(out, r.libdns())
			}
		}
		if len(resp.DomainRecords.Record) == 0 || page*aliPageSize >= resp.TotalCount {
			return out, nil
		}
	}
	return nil, fmt.Errorf("DescribeSubDomainRecords %s: more than %d pages", name, aliMaxPages)
}

func (a aliReader) byID(ctx context.Context, zone, id string) (libdns.Record, error) {
	var r aliRecordJSON
	err := a.call(ctx, "DescribeDomainRecordInfo", url.Values{"RecordId": {id}}, &r)
	var ae *aliError
	if errors.As(err, &ae) && ae.gone() {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !strings.EqualFold(r.DomainName, strings.TrimSuffix(zone, ".")) || r.RecordID != id {
		// The ID now names a record of another zone: not ours here.
		return nil, nil
	}
	return r.libdns(), nil
}

// call sends one RPC action signed with ACS3-HMAC-SHA256, as
// libdns/alidns does (parameters in a form body), through
// http.DefaultClient, which the provider also uses.
func (a aliReader) call(ctx context.Context, action string, params url.Values, out any) error {
	if a.cred.AccessKeyID == "" || a.cred.AccessKeySecret == "" {
		return errors.New("alidns: empty access_key_id or access_key_secret")
	}
	body := params.Encode()
	sum := sha256.Sum256([]byte(body))
	payload := hex.EncodeToString(sum[:])
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	u, _ := url.Parse(aliAPI)
	headers := map[string]string{
		"content-type":          "application/x-www-form-urlencoded",
		"host":                  u.Host,
		"x-acs-action":          action,
		"x-acs-content-sha256":  payload,
		"x-acs-date":            time.Now().UTC().Format(time.RFC3339),
		"x-acs-signature-nonce": hex.EncodeToString(nonce),
		"x-acs-version":         aliVersion,
	}
	if a.cred.SecurityToken != "" {
		headers["x-acs-security-token"] = a.cred.SecurityToken
	}
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	sort.Strings(names)
	var canon strings.Builder
	for _, k := range names {
		canon.WriteString(k + ":" + headers[k] + "\n")
	}
	signed := strings.Join(names, ";")
	creq := http.MethodPost + "\n" + u.Path + "\n\n" + canon.String() + "\n" + signed + "\n" + payload
	csum := sha256.Sum256([]byte(creq))
	mac := hmac.New(sha256.New, []byte(a.cred.AccessKeySecret))
	mac.Write([]byte("ACS3-HMAC-SHA256\n" + hex.EncodeToString(csum[:])))

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, aliAPI, strings.NewReader(body))
	if err != nil {
		return err
	}
	for k, v := range headers {
		if k != "host" {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "ACS3-HMAC-SHA256 Credential="+a.cred.AccessKeyID+",SignedHeaders="+signed+
		",Signature="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", action, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Code, Message string }
		_ = json.Unmarshal(raw, &e)
		return fmt.Errorf("%s: %w", action, &aliError{Status: resp.StatusCode, Code: e.Code, Message: e.Message})
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s: decode answer: %w", action, err)
	}
	return nil
}
