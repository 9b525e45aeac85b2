package reseller

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// This file holds the wire types: what the API sends and receives, decoded
// tolerantly because the API family drifts (numbers sent as strings, nulls,
// dcv as a map or as an array, two names for the certificate fields).
// Nothing here is validated beyond its shape; DCV instructions must pass
// ValidateInstructions before anything is published.

// Method is how one domain is validated: MethodDNS, MethodHTTP, MethodHTTPS,
// or an approver e-mail address.
type Method = string

// The non-e-mail DCV methods of domain_dcv.
const (
	MethodDNS   Method = "dns"
	MethodHTTP  Method = "http"
	MethodHTTPS Method = "https"
)

// Order status values. No authoritative table is public; these are the
// values the API family uses. Unknown values are kept as they come.
const (
	StatusPending   = "pending"
	StatusIssuing   = "issuing"
	StatusValid     = "valid"
	StatusIssued    = "issued"
	StatusCancelled = "cancelled"
	StatusRefunded  = "refunded"
	StatusRevoked   = "revoked"
	StatusExpired   = "expired"
)

// Order is the data of a reissue, create or detail reply.
type Order struct {
	ServiceID string `json:"service_id"`
	CAID      string `json:"caid"`
	Status    string `json:"status"`
	// Cost is what this request charged (reissue/create); zero in a detail.
	Cost float64 `json:"cost"`
	// CertPEM is the issued certificate (leaf first; some replies append the
	// chain). Empty until issued. Untrusted until verified.
	CertPEM string `json:"cert_pem"`
	// CAPEM is the issuer chain. Empty until issued.
	CAPEM     string    `json:"ca_pem"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// ServiceExpiresAt is the end of the service's paid period, after
	// which no reissue is possible (a renewal must be bought). Zero when
	// the reply does not say: the documented reply has no such field, the
	// list and some of the family's replies do.
	ServiceExpiresAt time.Time `json:"service_expires_at"`
	// DCV holds the raw per-domain instructions, sorted by domain.
	DCV []DCVEntry `json:"dcv"`
}

// DCVEntry is one domain's DCV instruction as the API sent it. None of its
// fields are trusted; see ValidateInstructions.
type DCVEntry struct {
	// Domain is the name being validated: the dcv map's key, or the entry's
	// own domain field in the array form.
	Domain         string     `json:"domain"`
	Type           string     `json:"type"`
	Subdomain      string     `json:"subdomain"`
	TopLevelDomain string     `json:"topleveldomain"`
	Status         string     `json:"status"`
	DNS            *DNSRecord `json:"dns,omitempty"`
	// HTTP is the file to serve. HTTPS entries carry it under "https" or,
	// as in the documentation's example, under "http".
	HTTP  *HTTPFile      `json:"http,omitempty"`
	Email *EmailApprover `json:"email,omitempty"`
}

// DNSRecord is the CNAME the CA wants to see.
type DNSRecord struct {
	Type     string `json:"type"`
	Hostname string `json:"hostname"`
	Fullname string `json:"fullname"`
	Value    string `json:"value"`
}

// HTTPFile is the file the CA will fetch.
type HTTPFile struct {
	Filename     string `json:"filename"`
	Filecontent  string `json:"filecontent"`
	Filepath     string `json:"filepath"`
	Filefullpath string `json:"filefullpath"`
	URL          string `json:"url"`
}

// EmailApprover is the approver mailbox the CA writes to.
type EmailApprover struct {
	Address   string   `json:"address"`
	Available []string `json:"available"`
}

// Product is one entry of the product list.
type Product struct {
	ID         string  `json:"product_id"`
	Name       string  `json:"name"`
	CA         string  `json:"ca"`
	Validation string  `json:"validation"` // DV, OV, EV, IV
	MaxDomains int     `json:"max_domains"`
	Wildcard   bool    `json:"wildcard"`
	Price      float64 `json:"price"`
}

// Organization holds the company fields required for OV, EV and IV
// certificates. An OV certificate's company data cannot change once issued.
type Organization struct {
	Organization           string
	OrganizationUnit       string
	RegisteredAddressLine1 string
	SerialNo               string
	Country                string
	State                  string
	City                   string
	PostalCode             string
	OrganizationPhone      string
	DateOfIncorporation    string
	ContactName            string
	ContactTitle           string
	ContactPhone           string
}

func (o *Organization) addTo(p map[string]any) {
	if o == nil {
		return
	}
	for k, v := range map[string]string{
		"organization":             o.Organization,
		"organization_unit":        o.OrganizationUnit,
		"registered_address_line1": o.RegisteredAddressLine1,
		"serial_no":                o.SerialNo,
		"country":                  o.Country,
		"state":                    o.State,
		"city":                     o.City,
		"postal_code":              o.PostalCode,
		"organization_phone":       o.OrganizationPhone,
		"date_of_incorporation":    o.DateOfIncorporation,
		"contact_name":             o.ContactName,
		"contact_title":            o.ContactTitle,
		"contact_phone":            o.ContactPhone,
	} {
		if v != "" {
			p[k] = v
		}
	}
}

// ReissueRequest is the body of POST /certificate/reissue.
type ReissueRequest struct {
	// UniqueID is the reseller's guard against charging twice: the same
	// value must be sent again when a reply is lost, and never reused for a
	// different reissue.
	UniqueID  string
	ServiceID string
	// DomainDCV maps every domain of the new certificate to its method.
	// Domains of the issued certificate missing here get it revoked.
	DomainDCV    map[string]Method
	CSR          string
	ContactEmail string
	Renew        bool
	Organization *Organization
	NotifyURL    string
}

// Params returns the request's parameters as they are signed and sent.
func (r ReissueRequest) Params() map[string]any {
	p := map[string]any{
		"unique_id":  r.UniqueID,
		"service_id": r.ServiceID,
	}
	if r.Renew {
		p["renew"] = 1
	} else {
		p["renew"] = 0
	}
	addOrderParams(p, r.DomainDCV, r.CSR, r.ContactEmail, r.NotifyURL, r.Organization)
	return p
}

// CreateRequest is the body of POST /certificate/create (place an order).
type CreateRequest struct {
	UniqueID     string
	ProductID    string
	Period       int // months; 0 leaves it to the reseller
	DomainDCV    map[string]Method
	CSR          string
	ContactEmail string
	Organization *Organization
	NotifyURL    string
}

// Params returns the request's parameters as they are signed and sent.
func (r CreateRequest) Params() map[string]any {
	p := map[string]any{
		"unique_id":  r.UniqueID,
		"product_id": r.ProductID,
	}
	if r.Period > 0 {
		p["period"] = r.Period
	}
	addOrderParams(p, r.DomainDCV, r.CSR, r.ContactEmail, r.NotifyURL, r.Organization)
	return p
}

// addOrderParams sets the parameters that reissue and create share, each
// only when given.
func addOrderParams(p map[string]any, domainDCV map[string]Method, csr, contactEmail, notifyURL string, org *Organization) {
	if len(domainDCV) > 0 {
		p["domain_dcv"] = copyDomainDCV(domainDCV)
	}
	setIf(p, "csr", csr)
	setIf(p, "contact_email", contactEmail)
	setIf(p, "notify_url", notifyURL)
	org.addTo(p)
}

func copyDomainDCV(m map[string]Method) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func setIf(p map[string]any, k, v string) {
	if v != "" {
		p[k] = v
	}
}

// UnmarshalJSON decodes an order, tolerating the API family's drift.
func (o *Order) UnmarshalJSON(b []byte) error {
	var raw struct {
		ServiceID  flexString      `json:"service_id"`
		CAID       flexString      `json:"caid"`
		Status     flexString      `json:"status"`
		Cost       flexFloat       `json:"cost"`
		CertPEM    flexString      `json:"cert_pem"`
		CAPEM      flexString      `json:"ca_pem"`
		IssuedCert flexString      `json:"issued_cert"`
		IssuerCert flexString      `json:"issuer_cert"`
		NotBefore  flexTime        `json:"not_before"`
		NotAfter   flexTime        `json:"not_after"`
		ServiceEnd flexTime        `json:"service_expires_at"`
		DCV        json.RawMessage `json:"dcv"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	dcv, err := decodeDCV(raw.DCV)
	if err != nil {
		return fmt.Errorf("dcv: %w", err)
	}
	*o = Order{
		ServiceID: string(raw.ServiceID),
		CAID:      string(raw.CAID),
		Status:    strings.ToLower(strings.TrimSpace(string(raw.Status))),
		Cost:      float64(raw.Cost),
		CertPEM:   firstNonEmpty(string(raw.CertPEM), string(raw.IssuedCert)),
		CAPEM:     firstNonEmpty(string(raw.CAPEM), string(raw.IssuerCert)),
		NotBefore: time.Time(raw.NotBefore),
		NotAfter:  time.Time(raw.NotAfter),
		DCV:       dcv,
	}
	o.ServiceExpiresAt = time.Time(raw.ServiceEnd)
	return nil
}

// MarshalJSON encodes an order in the documented shape (dcv as a map,
// cert_pem/ca_pem, nulls for what is not there yet), so that an Order
// can be stored or passed on in the form it came in. service_expires_at,
// not in the documented shape, is written only when known.
func (o Order) MarshalJSON() ([]byte, error) {
	dcv := make(map[string]DCVEntry, len(o.DCV))
	for _, e := range o.DCV {
		e2 := e
		e2.Domain = ""
		dcv[e.Domain] = e2
	}
	return json.Marshal(struct {
		Cost      float64 `json:"cost"`
		ServiceID string  `json:"service_id"`
		CAID      string  `json:"caid"`
		Status    string  `json:"status"`
		CertPEM   *string `json:"cert_pem"`
		CAPEM     *string `json:"ca_pem"`
		NotBefore *string `json:"not_before"`
		NotAfter  *string `json:"not_after"`
		// ServiceEnd is service_expires_at.
		ServiceEnd *string             `json:"service_expires_at,omitempty"`
		DCV        map[string]DCVEntry `json:"dcv"`
	}{o.Cost, o.ServiceID, o.CAID, o.Status, nullable(o.CertPEM), nullable(o.CAPEM),
		nullableTime(o.NotBefore), nullableTime(o.NotAfter), nullableTime(o.ServiceExpiresAt), dcv})
}

// MarshalJSON leaves the domain out when it is empty (the map form keys
// entries by domain).
func (e DCVEntry) MarshalJSON() ([]byte, error) {
	type plain DCVEntry
	return json.Marshal(struct {
		Domain string `json:"domain,omitempty"`
		plain
	}{e.Domain, plain(e)})
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullableTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.In(beijing).Format(time.RFC3339)
	return &s
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// decodeDCV accepts the map form ({"example.com": {...}}), the array form
// ([{"domain": "example.com", ...}]), null and the empty string.
func decodeDCV(b json.RawMessage) ([]DCVEntry, error) {
	var out []DCVEntry
	_, err := eachDomainEntry(b, func(domain string, v json.RawMessage) error {
		e, err := decodeDCVEntry(v)
		if err != nil {
			return err
		}
		e.Domain = domain
		out = append(out, e)
		return nil
	}, func(v json.RawMessage) error {
		e, err := decodeDCVEntry(v)
		if err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out, nil
}

// eachDomainEntry reads a per-domain field in either of the forms the API
// sends: a map keyed by domain, whose members go to inMap, or an array,
// whose elements go to inList. null, "" and nothing hold no entries and
// report false. An error from inMap or inList is returned naming the
// member's domain or the element's index.
func eachDomainEntry(b json.RawMessage, inMap func(domain string, v json.RawMessage) error, inList func(v json.RawMessage) error) (bool, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" || string(b) == `""` {
		return false, nil
	}
	switch b[0] {
	case '{':
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return false, err
		}
		for domain, v := range m {
			if err := inMap(domain, v); err != nil {
				return false, fmt.Errorf("%q: %w", clipUntrusted(domain), err)
			}
		}
	case '[':
		var list []json.RawMessage
		if err := json.Unmarshal(b, &list); err != nil {
			return false, err
		}
		for i, v := range list {
			if err := inList(v); err != nil {
				return false, fmt.Errorf("entry %d: %w", i, err)
			}
		}
	default:
		return false, errors.New("neither a map nor an array")
	}
	return true, nil
}

func decodeDCVEntry(b json.RawMessage) (DCVEntry, error) {
	var raw struct {
		Domain         flexString     `json:"domain"`
		DomainName     flexString     `json:"domain_name"`
		Type           flexString     `json:"type"`
		Method         flexString     `json:"method"`
		Subdomain      flexString     `json:"subdomain"`
		TopLevelDomain flexString     `json:"topleveldomain"`
		Status         flexString     `json:"status"`
		DNS            *flexDNS       `json:"dns"`
		HTTP           *flexHTTP      `json:"http"`
		HTTPS          *flexHTTP      `json:"https"`
		Email          *EmailApprover `json:"email"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return DCVEntry{}, err
	}
	e := DCVEntry{
		Domain:         firstNonEmpty(string(raw.Domain), string(raw.DomainName)),
		Type:           strings.ToLower(firstNonEmpty(string(raw.Type), string(raw.Method))),
		Subdomain:      string(raw.Subdomain),
		TopLevelDomain: string(raw.TopLevelDomain),
		Status:         strings.ToLower(string(raw.Status)),
		Email:          raw.Email,
	}
	if raw.DNS != nil {
		e.DNS = &DNSRecord{string(raw.DNS.Type), string(raw.DNS.Hostname), string(raw.DNS.Fullname), string(raw.DNS.Value)}
	}
	if h := raw.HTTPS; h != nil && raw.HTTP == nil {
		raw.HTTP = h
	}
	if h := raw.HTTP; h != nil {
		e.HTTP = &HTTPFile{string(h.Filename), string(h.Filecontent), string(h.Filepath), string(h.Filefullpath), string(h.URL)}
	}
	return e, nil
}

type flexDNS struct {
	Type     flexString `json:"type"`
	Hostname flexString `json:"hostname"`
	Fullname flexString `json:"fullname"`
	Value    flexString `json:"value"`
}

type flexHTTP struct {
	Filename     flexString `json:"filename"`
	Filecontent  flexString `json:"filecontent"`
	Filepath     flexString `json:"filepath"`
	Filefullpath flexString `json:"filefullpath"`
	URL          flexString `json:"url"`
}

// UnmarshalJSON decodes a product, accepting numbers sent as strings.
func (p *Product) UnmarshalJSON(b []byte) error {
	var raw struct {
		ID         flexString `json:"product_id"`
		AltID      flexString `json:"id"`
		Name       flexString `json:"name"`
		CA         flexString `json:"ca"`
		Validation flexString `json:"validation"`
		MaxDomains flexFloat  `json:"max_domains"`
		Wildcard   flexBool   `json:"wildcard"`
		Price      flexFloat  `json:"price"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*p = Product{
		ID:         firstNonEmpty(string(raw.ID), string(raw.AltID)),
		Name:       string(raw.Name),
		CA:         string(raw.CA),
		Validation: string(raw.Validation),
		MaxDomains: int(raw.MaxDomains),
		Wildcard:   bool(raw.Wildcard),
		Price:      float64(raw.Price),
	}
	return nil
}

// flexString accepts a string, a number (kept as written), a boolean or null.
type flexString string

func (s *flexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		*s = ""
	case len(b) > 0 && b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = flexString(v)
	case string(b) == "true" || string(b) == "false":
		*s = flexString(b)
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("want a string, got %q", clipUntrusted(string(b)))
		}
		*s = flexString(n.String())
	}
	return nil
}

// flexText reads b as a flexString would: the text of a string, number,
// boolean or null.
func flexText(b []byte) (string, error) {
	var s flexString
	err := s.UnmarshalJSON(b)
	return string(s), err
}

// flexFloat accepts a number, a numeric string, "", or null. The number
// must be finite: strconv.ParseFloat also reads "NaN" and "Inf", and a cost
// that is not a number can be neither stored nor summed (an order holding
// one could never record its next step).
type flexFloat float64

func (f *flexFloat) UnmarshalJSON(b []byte) error {
	s, err := flexText(b)
	if err != nil {
		return err
	}
	t := strings.TrimSpace(s)
	if t == "" {
		*f = 0
		return nil
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("want a finite number, got %q", clipUntrusted(t))
	}
	*f = flexFloat(v)
	return nil
}

// flexBool accepts true/false, 0/1 as numbers or strings, "" and null.
type flexBool bool

func (v *flexBool) UnmarshalJSON(b []byte) error {
	s, err := flexText(b)
	if err != nil {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "0", "false", "no":
		*v = false
	case "1", "true", "yes":
		*v = true
	default:
		return fmt.Errorf("want a boolean, got %q", clipUntrusted(s))
	}
	return nil
}

// flexTime accepts RFC 3339, "2006-01-02 15:04:05" (read as UTC+8, the API's
// zone), a date alone, Unix seconds as a number or string, "" and null.
type flexTime time.Time

func (t *flexTime) UnmarshalJSON(b []byte) error {
	s, err := flexText(b)
	if err != nil {
		return err
	}
	v := strings.TrimSpace(s)
	if v == "" || v == "0" || strings.HasPrefix(v, "0000-00-00") {
		*t = flexTime(time.Time{})
		return nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		*t = flexTime(time.Unix(n, 0).UTC())
		return nil
	}
	if p, err := time.Parse(time.RFC3339, v); err == nil {
		*t = flexTime(p)
		return nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02T15:04:05", "2006-01-02"} {
		if p, err := time.ParseInLocation(layout, v, beijing); err == nil {
			*t = flexTime(p)
			return nil
		}
	}
	return fmt.Errorf("unrecognised time %q", clipUntrusted(v))
}
