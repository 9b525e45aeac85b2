package reseller

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// loadSeedOrder decodes testdata/reissue-response.json: the response example
// of the reissue page (reissue-api.zh.txt) with its // comments stripped.
func loadSeedOrder(t *testing.T) Order {
	t.Helper()
	b, err := os.ReadFile("testdata/reissue-response.json")
	if err != nil {
		t.Fatal(err)
	}
	var env struct {
		Success bool            `json:"success"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("the seed example is not valid JSON: %v", err)
	}
	if !env.Success || env.Message != "OK" {
		t.Fatalf("seed envelope: success=%v message=%q", env.Success, env.Message)
	}
	var o Order
	if err := json.Unmarshal(env.Data, &o); err != nil {
		t.Fatalf("decoding the seed order: %v", err)
	}
	return o
}

func findEntry(t *testing.T, o Order, domain string) DCVEntry {
	t.Helper()
	for _, e := range o.DCV {
		if e.Domain == domain {
			return e
		}
	}
	t.Fatalf("no dcv entry for %q in %+v", domain, o.DCV)
	return DCVEntry{}
}

func TestDecodeSeedResponse(t *testing.T) {
	o := loadSeedOrder(t)
	if o.ServiceID != "o91bZ" || o.CAID != "358174513" || o.Status != StatusPending {
		t.Errorf("order header = %q %q %q", o.ServiceID, o.CAID, o.Status)
	}
	if o.Cost != 4208.01 {
		t.Errorf("Cost = %v, want 4208.01", o.Cost)
	}
	if o.CertPEM != "" || o.CAPEM != "" || !o.NotBefore.IsZero() || !o.NotAfter.IsZero() {
		t.Errorf("nulls did not decode to zero values: %q %q %v %v", o.CertPEM, o.CAPEM, o.NotBefore, o.NotAfter)
	}
	var domains []string
	for _, e := range o.DCV {
		domains = append(domains, e.Domain)
	}
	wantDomains := []string{"*.example.com", "*.example5.com", "example2.com", "example3.com", "sub.example4.com"}
	if !reflect.DeepEqual(domains, wantDomains) {
		t.Errorf("domains = %q, want %q (sorted)", domains, wantDomains)
	}

	dns := findEntry(t, o, "*.example.com")
	wantDNS := DNSRecord{
		Type:     "cname",
		Hostname: "_310dcbbf4cce62f762a2aaa148d556bd",
		Fullname: "_310dcbbf4cce62f762a2aaa148d556bd.example.com",
		Value:    "698d51a19d8a121ce581499d7b701668.bcbe3365e6ac95ea2c0343a2395834dd.20221122.comodoca.com",
	}
	if dns.Type != MethodDNS || dns.Subdomain != "*" || dns.TopLevelDomain != "example.com" || dns.Status != StatusValid {
		t.Errorf("dns entry header = %+v", dns)
	}
	if dns.DNS == nil || *dns.DNS != wantDNS {
		t.Errorf("dns record = %+v, want %+v", dns.DNS, wantDNS)
	}
	if dns.HTTP != nil || dns.Email != nil {
		t.Errorf("dns entry has http or email parts: %+v", dns)
	}

	// The documentation's own flaw is kept as sent: ValidateInstructions,
	// not the decoder, refuses it.
	if e := findEntry(t, o, "*.example5.com"); e.TopLevelDomain != "example.com" || e.DNS == nil ||
		!strings.HasSuffix(e.DNS.Fullname, ".example.com") {
		t.Errorf("*.example5.com entry = %+v", e)
	}

	wantFile := HTTPFile{
		Filename:     "310dcbbf4cce62f762a2aaa148d556bd.txt",
		Filecontent:  "698d51a19d8a121ce581499d7b70166820221122\n20221122\ncomodoca.com",
		Filepath:     ".well-known/pki-validation/",
		Filefullpath: ".well-known/pki-validation/310dcbbf4cce62f762a2aaa148d556bd.txt",
		URL:          "http://example2.com/.well-known/pki-validation/310dcbbf4cce62f762a2aaa148d556bd.txt",
	}
	h := findEntry(t, o, "example2.com")
	if h.Type != MethodHTTP || h.Status != StatusPending || h.HTTP == nil || *h.HTTP != wantFile {
		t.Errorf("example2.com = %+v / %+v, want file %+v", h, h.HTTP, wantFile)
	}

	// example3.com was asked as https; the example says type "http" but
	// gives an https URL.
	hs := findEntry(t, o, "example3.com")
	wantFile.URL = "https://example3.com/.well-known/pki-validation/310dcbbf4cce62f762a2aaa148d556bd.txt"
	if hs.Type != MethodHTTP || hs.HTTP == nil || *hs.HTTP != wantFile {
		t.Errorf("example3.com = %+v / %+v, want file %+v", hs, hs.HTTP, wantFile)
	}

	m := findEntry(t, o, "sub.example4.com")
	if m.Type != "email" || m.Subdomain != "email" || m.TopLevelDomain != "example4.com" || m.Email == nil {
		t.Fatalf("sub.example4.com = %+v", m)
	}
	if m.Email.Address != "admin@example4.com" || len(m.Email.Available) != 10 ||
		m.Email.Available[0] != "admin@example4.com" || m.Email.Available[9] != "hostmaster@sub.example4.com" {
		t.Errorf("email approver = %+v", m.Email)
	}
}

func TestDecodeOrderDrift(t *testing.T) {
	at := time.Date(2025, 1, 1, 19, 4, 5, 0, time.UTC) // 2025-01-02 03:04:05 in UTC+8
	tests := []struct {
		name    string
		data    string
		wantErr bool
		check   func(t *testing.T, o Order)
	}{
		{
			name: "dcv as an array with domain fields",
			data: `{"service_id":"s1","dcv":[
				{"domain":"b.example","type":"http","http":{"filename":"f.txt","url":"http://b.example/f.txt"}},
				{"domain":"a.example","type":"DNS","dns":{"type":"cname","hostname":"_x","fullname":"_x.a.example","value":"v"}}]}`,
			check: func(t *testing.T, o Order) {
				if len(o.DCV) != 2 || o.DCV[0].Domain != "a.example" || o.DCV[1].Domain != "b.example" {
					t.Fatalf("dcv = %+v", o.DCV)
				}
				if o.DCV[0].Type != MethodDNS || o.DCV[0].DNS == nil || o.DCV[0].DNS.Fullname != "_x.a.example" {
					t.Errorf("a.example = %+v", o.DCV[0])
				}
				if o.DCV[1].HTTP == nil || o.DCV[1].HTTP.Filename != "f.txt" {
					t.Errorf("b.example = %+v", o.DCV[1])
				}
			},
		},
		{
			name: "https entry under an https key",
			data: `{"dcv":{"c.example":{"type":"https","https":{"filename":"g.txt","url":"https://c.example/g.txt"}}}}`,
			check: func(t *testing.T, o Order) {
				if len(o.DCV) != 1 || o.DCV[0].Type != MethodHTTPS || o.DCV[0].HTTP == nil || o.DCV[0].HTTP.URL != "https://c.example/g.txt" {
					t.Errorf("dcv = %+v", o.DCV)
				}
			},
		},
		{
			name: "issued_cert and issuer_cert",
			data: `{"status":"issued","issued_cert":"LEAF","issuer_cert":"CHAIN"}`,
			check: func(t *testing.T, o Order) {
				if o.CertPEM != "LEAF" || o.CAPEM != "CHAIN" || o.Status != StatusIssued {
					t.Errorf("order = %+v", o)
				}
			},
		},
		{
			name: "numbers as strings and ids as numbers",
			data: `{"cost":"12.5","caid":358174513,"service_id":42}`,
			check: func(t *testing.T, o Order) {
				if o.Cost != 12.5 || o.CAID != "358174513" || o.ServiceID != "42" {
					t.Errorf("order = %+v", o)
				}
			},
		},
		{
			name: "not_after in UTC+8 wall-clock form",
			data: `{"not_after":"2025-01-02 03:04:05"}`,
			check: func(t *testing.T, o Order) {
				if !o.NotAfter.Equal(at) {
					t.Errorf("NotAfter = %s, want %s", o.NotAfter.UTC(), at)
				}
			},
		},
		{
			name: "not_after in RFC 3339",
			data: `{"not_after":"2025-01-02T03:04:05+08:00","not_before":"2024-01-01T00:00:00Z"}`,
			check: func(t *testing.T, o Order) {
				if !o.NotAfter.Equal(at) || !o.NotBefore.Equal(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) {
					t.Errorf("NotBefore, NotAfter = %s, %s", o.NotBefore.UTC(), o.NotAfter.UTC())
				}
			},
		},
		{
			name: "not_after in unix seconds, number and string",
			data: `{"not_after":1735758245,"not_before":"1735758245"}`,
			check: func(t *testing.T, o Order) {
				if !o.NotAfter.Equal(at) || !o.NotBefore.Equal(at) {
					t.Errorf("NotBefore, NotAfter = %s, %s", o.NotBefore.UTC(), o.NotAfter.UTC())
				}
			},
		},
		{
			name: "service_expires_at in each layout",
			data: `{"service_expires_at":"2025-01-02 03:04:05"}`,
			check: func(t *testing.T, o Order) {
				if !o.ServiceExpiresAt.Equal(at) {
					t.Errorf("ServiceExpiresAt = %s, want %s", o.ServiceExpiresAt.UTC(), at)
				}
				for _, v := range []string{`"2025-01-02T03:04:05+08:00"`, `1735758245`, `"1735758245"`} {
					var o2 Order
					if err := json.Unmarshal([]byte(`{"service_expires_at":`+v+`}`), &o2); err != nil || !o2.ServiceExpiresAt.Equal(at) {
						t.Errorf("service_expires_at %s: %s, %v", v, o2.ServiceExpiresAt.UTC(), err)
					}
				}
				var day Order
				if err := json.Unmarshal([]byte(`{"service_expires_at":"2025-01-02"}`), &day); err != nil ||
					!day.ServiceExpiresAt.Equal(time.Date(2025, 1, 1, 16, 0, 0, 0, time.UTC)) {
					t.Errorf("a date alone: %s, %v", day.ServiceExpiresAt.UTC(), err)
				}
			},
		},
		{
			name: "service_expires_at absent, null or empty",
			data: `{"service_id":"s"}`,
			check: func(t *testing.T, o Order) {
				for _, v := range []string{`null`, `""`, `"0000-00-00 00:00:00"`} {
					var o2 Order
					if err := json.Unmarshal([]byte(`{"service_expires_at":`+v+`}`), &o2); err != nil || !o2.ServiceExpiresAt.IsZero() {
						t.Errorf("service_expires_at %s: %s, %v", v, o2.ServiceExpiresAt, err)
					}
				}
				if !o.ServiceExpiresAt.IsZero() {
					t.Errorf("absent: %s", o.ServiceExpiresAt)
				}
			},
		},
		{name: "service_expires_at is not a time", data: `{"service_expires_at":"next year"}`, wantErr: true},
		{
			name: "null dcv and null everything",
			data: `{"service_id":null,"cost":null,"dcv":null,"not_after":null,"service_expires_at":null}`,
			check: func(t *testing.T, o Order) {
				if !reflect.DeepEqual(o, Order{}) {
					t.Errorf("order = %+v, want the zero order", o)
				}
			},
		},
		{name: "dcv is a string", data: `{"dcv":"x"}`, wantErr: true},
		{name: "dcv entry is a string", data: `{"dcv":{"a.example":"dns"}}`, wantErr: true},
		{name: "cost is not a number", data: `{"cost":"cheap"}`, wantErr: true},
		{name: "not_after is not a time", data: `{"not_after":"soon"}`, wantErr: true},
		{name: "status is an object", data: `{"status":{"a":1}}`, wantErr: true},
		{name: "order is an array", data: `[]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o Order
			err := json.Unmarshal([]byte(tt.data), &o)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("decoded %s into %+v, want an error", tt.data, o)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

func TestOrderJSONRoundTrip(t *testing.T) {
	issued := loadSeedOrder(t)
	issued.Status = StatusIssued
	issued.CertPEM = "-----BEGIN CERTIFICATE-----\nLEAF\n-----END CERTIFICATE-----\n"
	issued.CAPEM = "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
	issued.NotBefore = time.Date(2024, 5, 6, 0, 0, 0, 0, time.UTC)
	issued.NotAfter = time.Date(2025, 5, 6, 23, 59, 59, 0, time.UTC)
	issued.ServiceExpiresAt = time.Date(2026, 5, 6, 0, 0, 0, 0, time.UTC)

	for name, in := range map[string]Order{"seed": loadSeedOrder(t), "issued": issued, "zero": {}} {
		t.Run(name, func(t *testing.T) {
			b, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			var out Order
			if err := json.Unmarshal(b, &out); err != nil {
				t.Fatalf("decoding %s: %v", b, err)
			}
			if !out.NotBefore.Equal(in.NotBefore) || !out.NotAfter.Equal(in.NotAfter) || !out.ServiceExpiresAt.Equal(in.ServiceExpiresAt) {
				t.Errorf("times changed: %v %v %v -> %v %v %v", in.NotBefore, in.NotAfter, in.ServiceExpiresAt,
					out.NotBefore, out.NotAfter, out.ServiceExpiresAt)
			}
			// Times compare by instant above; the rest must be identical.
			in.NotBefore, in.NotAfter, out.NotBefore, out.NotAfter = time.Time{}, time.Time{}, time.Time{}, time.Time{}
			in.ServiceExpiresAt, out.ServiceExpiresAt = time.Time{}, time.Time{}
			if !reflect.DeepEqual(in, out) {
				t.Errorf("round trip changed the order:\n in %+v\nout %+v\njson %s", in, out, b)
			}
		})
	}

	// The documented shape: nulls for what is not there yet, dcv as a map.
	b, err := json.Marshal(Order{ServiceID: "s", DCV: []DCVEntry{{Domain: "a.example", Type: MethodDNS}}})
	if err != nil {
		t.Fatal(err)
	}
	var shape map[string]json.RawMessage
	if err := json.Unmarshal(b, &shape); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cert_pem", "ca_pem", "not_before", "not_after"} {
		if string(shape[k]) != "null" {
			t.Errorf("%s = %s, want null", k, shape[k])
		}
	}
	if _, ok := shape["service_expires_at"]; ok {
		t.Errorf("service_expires_at = %s for an order without it, want it left out (not in the documented shape)", shape["service_expires_at"])
	}
	if !strings.HasPrefix(string(shape["dcv"]), `{"a.example":`) {
		t.Errorf("dcv = %s, want a map keyed by domain", shape["dcv"])
	}
}

func TestDecodeProductList(t *testing.T) {
	want := []Product{{ID: "p1", Name: "DV SSL", CA: "sectigo", Validation: "DV", MaxDomains: 250, Wildcard: true, Price: 9.5}}
	item := `{"product_id":"p1","name":"DV SSL","ca":"sectigo","validation":"DV","max_domains":"250","wildcard":1,"price":"9.5"}`
	tests := []struct {
		name    string
		data    string
		want    []Product
		wantErr bool
	}{
		{name: "array", data: `[` + item + `]`, want: want},
		{name: "under list", data: `{"list":[` + item + `],"total":1}`, want: want},
		{name: "under items", data: `{"items":[` + item + `]}`, want: want},
		{name: "under data", data: `{"data":[` + item + `]}`, want: want},
		{name: "under products", data: `{"products":[` + item + `]}`, want: want},
		{name: "id instead of product_id", data: `[{"id":7,"name":"x"}]`, want: []Product{{ID: "7", Name: "x"}}},
		{name: "empty array", data: `[]`, want: []Product{}},
		{name: "object without a list", data: `{"total":0}`, wantErr: true},
		{name: "list is a string", data: `{"list":"none"}`, wantErr: true},
		{name: "a string", data: `"x"`, wantErr: true},
		{name: "bad price", data: `[{"price":"free"}]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got productList
			err := json.Unmarshal([]byte(tt.data), &got)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("decoded %s into %+v, want an error", tt.data, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual([]Product(got), tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}
