package reseller

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// This file holds the certificate list (GET /certificate/list): the services
// of the account, each with the end of its paid period. Only the API
// family's documentation describes it (see the reference, "Certificate
// list"); its replies are decoded as tolerantly as the other wire types.

// StatusExpiring is the list filter for certificates that expire within 30
// days. The other filters are StatusIssuing, StatusIssued and StatusExpired.
const StatusExpiring = "expiring"

// ListOptions selects a page of the certificate list. Zero values are left
// out of the request, so that the server's defaults apply (page 1, 15 per
// page, every status, no keyword).
type ListOptions struct {
	Page, PageSize int
	// Status filters by StatusIssuing, StatusIssued, StatusExpiring or
	// StatusExpired.
	Status string
	// Keyword filters by a part of a domain or of the service_id.
	Keyword string
}

// Service is one entry of the certificate list: a purchased certificate and
// its paid period.
type Service struct {
	// ID is the list's own id of the entry (sent as a number or a string).
	ID        string
	ServiceID string
	// Status is the entry's status, lower-cased (pending, issued, …).
	Status string
	// DomainDCV maps each domain of the service to its DCV method; the
	// method is empty when the reply lists the domain alone.
	DomainDCV   map[string]Method
	ProductName string
	// Period is the paid period as the reply writes it, e.g. "1 Year".
	Period    string
	CreatedAt time.Time
	// CertExpiresAt is the not_after of the certificate in force; zero when
	// none is issued.
	CertExpiresAt time.Time
	// ServiceExpiresAt is the end of the paid period: no reissue after it.
	// Zero when the reply does not say.
	ServiceExpiresAt time.Time
}

// Domains returns the service's domains, sorted.
func (s Service) Domains() []string {
	out := make([]string, 0, len(s.DomainDCV))
	for d := range s.DomainDCV {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// ServicePage is one page of the certificate list.
type ServicePage struct {
	CurrentPage, LastPage, PerPage, Total int
	Items                                 []Service
}

// List returns one page of the certificate list. A negative page or page
// size is refused locally and nothing is sent.
func (c *Client) List(ctx context.Context, opt ListOptions) (*ServicePage, error) {
	if opt.Page < 0 || opt.PageSize < 0 {
		return nil, fmt.Errorf("reseller list: page %d, page_size %d: negative; nothing was sent", opt.Page, opt.PageSize)
	}
	q := url.Values{}
	if opt.Page > 0 {
		q.Set("page", strconv.Itoa(opt.Page))
	}
	if opt.PageSize > 0 {
		q.Set("page_size", strconv.Itoa(opt.PageSize))
	}
	if s := strings.TrimSpace(opt.Status); s != "" {
		q.Set("status", s)
	}
	if k := strings.TrimSpace(opt.Keyword); k != "" {
		q.Set("keyword", k)
	}
	var p ServicePage
	if err := c.Do(ctx, "list", http.MethodGet, PathList, q, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ListAll pages through the whole certificate list (filtered by status, ""
// for all), ListAllPageSize entries a page, and returns every service once,
// in the order listed. An entry repeated on a later page (the list shifted
// while it was read) is kept at its first place.
//
// A misbehaving server cannot make it loop: it stops with an error after
// MaxListPages pages, on a page other than the one asked for, on an empty
// page before the last, and on a page that brings no service not seen yet
// (a server that ignores page and answers page 1 again).
func (c *Client) ListAll(ctx context.Context, status string) ([]Service, error) {
	var out []Service
	seen := map[string]bool{}
	for page := 1; ; page++ {
		if page > MaxListPages {
			return nil, fmt.Errorf("reseller list: stopped after %d pages: the list does not end", MaxListPages)
		}
		p, err := c.List(ctx, ListOptions{Page: page, PageSize: ListAllPageSize, Status: status})
		if err != nil {
			return nil, fmt.Errorf("reading page %d of the certificate list: %w", page, err)
		}
		cur := p.CurrentPage
		if cur == 0 {
			cur = page // a reply without current_page is taken to be the page asked for
		}
		if cur != page {
			return nil, fmt.Errorf("reseller list: asked for page %d, got page %d; stopped (the server seems to ignore page)", page, cur)
		}
		last := p.LastPage
		if last == 0 && p.Total > 0 && p.PerPage > 0 {
			last = (p.Total + p.PerPage - 1) / p.PerPage
		}
		if last > MaxListPages {
			return nil, fmt.Errorf("reseller list: the list has %d pages, more than the %d read at most", last, MaxListPages)
		}
		fresh := 0
		for _, s := range p.Items {
			key := s.ServiceID
			if key == "" && s.ID != "" {
				key = "id:" + s.ID
			}
			if key == "" || seen[key] {
				continue // nothing to know the entry by, or already listed
			}
			seen[key] = true
			out = append(out, s)
			fresh++
		}
		switch {
		case last > 0 && cur >= last:
			return out, nil
		case len(p.Items) == 0 && last > 0:
			return nil, fmt.Errorf("reseller list: page %d of %d is empty; stopped", page, last)
		case len(p.Items) == 0:
			return out, nil // no last_page nor total: an empty page ends the list
		case fresh == 0:
			return nil, fmt.Errorf("reseller list: page %d brings no service not already listed; stopped (the server seems to ignore page)", page)
		case last == 0 && len(p.Items) < cmp.Or(p.PerPage, ListAllPageSize):
			return out, nil // no last_page nor total: a short page is the last
		}
	}
}

// ListAllPageSize is the page size ListAll asks for: the sandbox's maximum,
// and the fewest requests for an account with many services.
const ListAllPageSize = 100

// MaxListPages bounds ListAll: 100,000 services at ListAllPageSize.
const MaxListPages = 1000

// UnmarshalJSON decodes a list entry, tolerating the API family's drift:
// numbers as strings or numbers, nulls, domain_dcv as a map or as an array
// of entries, times in the layouts flexTime reads.
func (s *Service) UnmarshalJSON(b []byte) error {
	var raw struct {
		ID               flexString      `json:"id"`
		ServiceID        flexString      `json:"service_id"`
		Status           flexString      `json:"status"`
		DomainDCV        json.RawMessage `json:"domain_dcv"`
		ProductName      flexString      `json:"product_name"`
		Period           flexString      `json:"period"`
		CreatedAt        flexTime        `json:"created_at"`
		CertExpiresAt    flexTime        `json:"cert_expires_at"`
		ServiceExpiresAt flexTime        `json:"service_expires_at"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	dcv, err := decodeDomainDCV(raw.DomainDCV)
	if err != nil {
		return fmt.Errorf("domain_dcv: %w", err)
	}
	*s = Service{
		ID:               strings.TrimSpace(string(raw.ID)),
		ServiceID:        strings.TrimSpace(string(raw.ServiceID)),
		Status:           strings.ToLower(strings.TrimSpace(string(raw.Status))),
		DomainDCV:        dcv,
		ProductName:      string(raw.ProductName),
		Period:           strings.TrimSpace(string(raw.Period)),
		CreatedAt:        time.Time(raw.CreatedAt),
		CertExpiresAt:    time.Time(raw.CertExpiresAt),
		ServiceExpiresAt: time.Time(raw.ServiceExpiresAt),
	}
	return nil
}

// decodeDomainDCV accepts a map from domain to method (the method a string,
// or an object with a method or type), an array of entries (objects with a
// domain and a method, or bare domain names), null and "". Methods are
// lower-cased as the request's are.
func decodeDomainDCV(b json.RawMessage) (map[string]Method, error) {
	out := map[string]Method{}
	add := func(domain, method string) {
		if d := strings.TrimSpace(domain); d != "" {
			out[d] = strings.ToLower(strings.TrimSpace(method))
		}
	}
	ok, err := eachDomainEntry(b, func(domain string, v json.RawMessage) error {
		meth, err := decodeDCVMethod(v)
		if err != nil {
			return err
		}
		add(domain, meth)
		return nil
	}, func(v json.RawMessage) error {
		v = bytes.TrimSpace(v)
		if len(v) > 0 && v[0] != '{' {
			var d flexString
			if err := d.UnmarshalJSON(v); err != nil {
				return err
			}
			add(string(d), "")
			return nil
		}
		var e struct {
			Domain     flexString `json:"domain"`
			DomainName flexString `json:"domain_name"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		meth, err := decodeDCVMethod(v)
		if err != nil {
			return err
		}
		add(firstNonEmpty(string(e.Domain), string(e.DomainName)), meth)
		return nil
	})
	if err != nil || !ok {
		return nil, err
	}
	return out, nil
}

// decodeDCVMethod reads one domain's method: a string (or null), or an
// object carrying it as method, dcv_method or type (an e-mail entry may name
// its approver as email or address instead).
func decodeDCVMethod(b json.RawMessage) (string, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return flexText(b)
	}
	var e struct {
		Method    flexString `json:"method"`
		DCVMethod flexString `json:"dcv_method"`
		Type      flexString `json:"type"`
		Email     flexString `json:"email"`
		Address   flexString `json:"address"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		return "", err
	}
	m := firstNonEmpty(firstNonEmpty(string(e.Method), string(e.DCVMethod)), string(e.Type))
	if strings.EqualFold(strings.TrimSpace(m), "email") || m == "" {
		// An e-mail method is the approver's address, as in a request.
		if a := firstNonEmpty(string(e.Email), string(e.Address)); a != "" {
			return a, nil
		}
	}
	return m, nil
}

// UnmarshalJSON decodes the list's paginator: current_page, last_page,
// per_page, total and the entries in data. It also accepts the entries
// alone (a list without pagination: one page), the counters under meta (as
// Laravel's API resources write them), and data as an object keyed by
// index (PHP's json_encode of an array whose keys are not 0…n-1).
func (p *ServicePage) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '[' {
		var items []Service
		if err := json.Unmarshal(b, &items); err != nil {
			return err
		}
		*p = ServicePage{CurrentPage: 1, LastPage: 1, PerPage: len(items), Total: len(items), Items: items}
		return nil
	}
	type counters struct {
		CurrentPage flexInt `json:"current_page"`
		LastPage    flexInt `json:"last_page"`
		PerPage     flexInt `json:"per_page"`
		Total       flexInt `json:"total"`
	}
	var raw struct {
		counters
		Meta *counters       `json:"meta"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	c := raw.counters
	if c == (counters{}) && raw.Meta != nil {
		c = *raw.Meta
	}
	items, err := decodeListItems(raw.Data)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	*p = ServicePage{
		CurrentPage: int(c.CurrentPage),
		LastPage:    int(c.LastPage),
		PerPage:     int(c.PerPage),
		Total:       int(c.Total),
		Items:       items,
	}
	return nil
}

func decodeListItems(b json.RawMessage) ([]Service, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" || string(b) == `""` {
		return nil, nil
	}
	switch b[0] {
	case '[':
		var items []Service
		if err := json.Unmarshal(b, &items); err != nil {
			return nil, err
		}
		return items, nil
	case '{':
		var m map[string]Service
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		// Numeric keys in numeric order ("9" before "10"), as PHP kept them.
		sort.Slice(keys, func(i, j int) bool {
			a, errA := strconv.Atoi(keys[i])
			b, errB := strconv.Atoi(keys[j])
			if errA == nil && errB == nil {
				return a < b
			}
			return keys[i] < keys[j]
		})
		items := make([]Service, 0, len(keys))
		for _, k := range keys {
			items = append(items, m[k])
		}
		return items, nil
	default:
		return nil, errors.New("neither an array nor an object")
	}
}

// flexInt accepts a whole number, as a number or a string, "" and null.
type flexInt int

func (n *flexInt) UnmarshalJSON(b []byte) error {
	var f flexFloat
	if err := f.UnmarshalJSON(b); err != nil {
		return err
	}
	v := float64(f)
	if v != math.Trunc(v) || v < 0 || v > math.MaxInt32 {
		return fmt.Errorf("want a whole number from 0 to %d, got %v", math.MaxInt32, v)
	}
	*n = flexInt(v)
	return nil
}

// parseSuccessOrCode reads whether a reply succeeded. The usual envelope
// says so in success; one page of the family's documentation (the
// certificate list) shows {"code": 0, "message": "success", "data": …}
// instead. So when success is absent, code decides: 0 (a number or a
// string) is success, any other number a refusal; a reply with neither is
// refused as before. reply is the whole reply object.
//
// decodeReply (client.go) is to call it in place of parseSuccess.
func parseSuccessOrCode(success json.RawMessage, reply []byte) (bool, error) {
	if len(bytes.TrimSpace(success)) > 0 {
		return parseSuccess(success)
	}
	var env struct {
		Code json.RawMessage `json:"code"`
	}
	if json.Unmarshal(reply, &env) != nil {
		return parseSuccess(success)
	}
	raw := bytes.TrimSpace(env.Code)
	if len(raw) == 0 || string(raw) == "null" {
		return parseSuccess(success) // neither: "the reply has no success field"
	}
	var code flexString
	if err := code.UnmarshalJSON(raw); err != nil {
		return false, fmt.Errorf("code is %s, not a number", sanitizeReplyText(string(raw), 40))
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(code)), 10, 64)
	if err != nil {
		return false, fmt.Errorf("code is %s, not a number", sanitizeReplyText(string(raw), 40))
	}
	return n == 0, nil
}
