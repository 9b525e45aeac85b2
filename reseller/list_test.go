package reseller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDecodeServicePage(t *testing.T) {
	// 2026-11-30 00:00:00 in UTC+8, the API's zone.
	end := time.Date(2026, 11, 29, 16, 0, 0, 0, time.UTC)
	full := Service{
		ID: "17", ServiceID: "o91bZ", Status: StatusIssued,
		DomainDCV:   map[string]Method{"example.com": MethodDNS, "www.example.com": MethodHTTP},
		ProductName: "Sectigo DV", Period: "1 Year",
		CreatedAt:        time.Date(2025, 11, 29, 16, 0, 0, 0, time.UTC),
		CertExpiresAt:    time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC),
		ServiceExpiresAt: end,
	}
	const fullItem = `{"id":17,"service_id":"o91bZ","status":"Issued","domain_dcv":{"example.com":"dns","www.example.com":"HTTP"},
		"product_name":"Sectigo DV","period":"1 Year","created_at":"2025-11-30 00:00:00",
		"cert_expires_at":"2026-06-01T00:00:00Z","service_expires_at":"2026-11-30 00:00:00"}`

	tests := []struct {
		name    string
		data    string
		want    ServicePage
		wantErr string
	}{
		{
			name: "paginator",
			data: `{"current_page":1,"last_page":3,"per_page":15,"total":31,"data":[` + fullItem + `]}`,
			want: ServicePage{CurrentPage: 1, LastPage: 3, PerPage: 15, Total: 31, Items: []Service{full}},
		},
		{
			name: "numbers as strings",
			data: `{"current_page":"2","last_page":"3","per_page":"15","total":"31",
				"data":[{"id":"17","service_id":42,"period":12,"service_expires_at":"1795968000"}]}`,
			want: ServicePage{CurrentPage: 2, LastPage: 3, PerPage: 15, Total: 31,
				Items: []Service{{ID: "17", ServiceID: "42", Period: "12", ServiceExpiresAt: end}}},
		},
		{
			name: "nulls",
			data: `{"current_page":1,"last_page":1,"per_page":null,"total":null,"data":[{"id":null,"service_id":"s",
				"status":null,"domain_dcv":null,"product_name":null,"period":null,"created_at":null,
				"cert_expires_at":null,"service_expires_at":null}]}`,
			want: ServicePage{CurrentPage: 1, LastPage: 1, Items: []Service{{ServiceID: "s"}}},
		},
		{
			name: "missing fields and empty strings",
			data: `{"data":[{"service_id":"s","domain_dcv":"","cert_expires_at":"","service_expires_at":"0000-00-00 00:00:00"}]}`,
			want: ServicePage{Items: []Service{{ServiceID: "s"}}},
		},
		{
			name: "null data",
			data: `{"current_page":1,"last_page":1,"per_page":15,"total":0,"data":null}`,
			want: ServicePage{CurrentPage: 1, LastPage: 1, PerPage: 15},
		},
		{
			name: "domain_dcv as an array of entries",
			data: `{"data":[{"service_id":"s","domain_dcv":[
				{"domain":"a.example","method":"dns"},
				{"domain_name":"b.example","dcv_method":"https"},
				{"domain":"c.example","type":"email","email":"admin@c.example"},
				{"domain":"d.example","type":"DNS"},
				"e.example"]}]}`,
			want: ServicePage{Items: []Service{{ServiceID: "s", DomainDCV: map[string]Method{
				"a.example": MethodDNS, "b.example": MethodHTTPS, "c.example": "admin@c.example", "d.example": MethodDNS, "e.example": "",
			}}}},
		},
		{
			name: "domain_dcv as a map of objects",
			data: `{"data":[{"service_id":"s","domain_dcv":{"a.example":{"method":"http"},"b.example":{"type":"email","address":"admin@b.example"},"c.example":null}}]}`,
			want: ServicePage{Items: []Service{{ServiceID: "s", DomainDCV: map[string]Method{
				"a.example": MethodHTTP, "b.example": "admin@b.example", "c.example": "",
			}}}},
		},
		{
			name: "times: date alone, RFC 3339 with offset, unix seconds",
			data: `{"data":[{"service_id":"s","created_at":"2025-11-30","cert_expires_at":"2026-06-01T08:00:00+08:00","service_expires_at":1795968000}]}`,
			want: ServicePage{Items: []Service{{ServiceID: "s",
				CreatedAt:        time.Date(2025, 11, 29, 16, 0, 0, 0, time.UTC),
				CertExpiresAt:    time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC),
				ServiceExpiresAt: end,
			}}},
		},
		{
			name: "data keyed by index, as PHP encodes a filtered array",
			data: `{"current_page":1,"last_page":1,"data":{"10":{"service_id":"c"},"9":{"service_id":"b"},"0":{"service_id":"a"}}}`,
			want: ServicePage{CurrentPage: 1, LastPage: 1, Items: []Service{{ServiceID: "a"}, {ServiceID: "b"}, {ServiceID: "c"}}},
		},
		{
			name: "entries alone, without pagination",
			data: `[{"service_id":"a"},{"service_id":"b"}]`,
			want: ServicePage{CurrentPage: 1, LastPage: 1, PerPage: 2, Total: 2, Items: []Service{{ServiceID: "a"}, {ServiceID: "b"}}},
		},
		{
			name: "counters under meta",
			data: `{"data":[{"service_id":"a"}],"meta":{"current_page":2,"last_page":2,"per_page":1,"total":2}}`,
			want: ServicePage{CurrentPage: 2, LastPage: 2, PerPage: 1, Total: 2, Items: []Service{{ServiceID: "a"}}},
		},
		{name: "domain_dcv is a number", data: `{"data":[{"domain_dcv":3}]}`, wantErr: "domain_dcv"},
		{name: "domain_dcv entry is an array", data: `{"data":[{"domain_dcv":[[1]]}]}`, wantErr: "domain_dcv"},
		{name: "current_page is not whole", data: `{"current_page":"1.5"}`, wantErr: "whole number"},
		{name: "total is negative", data: `{"total":-1}`, wantErr: "whole number"},
		{name: "a time that is not one", data: `{"data":[{"service_expires_at":"soon"}]}`, wantErr: "unrecognised time"},
		{name: "data is a string", data: `{"data":"none"}`, wantErr: "neither"},
		{name: "page is a string", data: `"page"`, wantErr: "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p ServicePage
			err := json.Unmarshal([]byte(tt.data), &p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decoded %s into %+v, err %v; want an error containing %q", tt.data, p, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !equalPages(p, tt.want) {
				t.Errorf("got  %+v\nwant %+v", p, tt.want)
			}
		})
	}
}

// equalPages compares pages with times by instant.
func equalPages(a, b ServicePage) bool {
	if len(a.Items) != len(b.Items) {
		return false
	}
	for i := range a.Items {
		x, y := a.Items[i], b.Items[i]
		if !x.CreatedAt.Equal(y.CreatedAt) || !x.CertExpiresAt.Equal(y.CertExpiresAt) || !x.ServiceExpiresAt.Equal(y.ServiceExpiresAt) {
			return false
		}
		x.CreatedAt, x.CertExpiresAt, x.ServiceExpiresAt = time.Time{}, time.Time{}, time.Time{}
		y.CreatedAt, y.CertExpiresAt, y.ServiceExpiresAt = time.Time{}, time.Time{}, time.Time{}
		if len(x.DomainDCV) == 0 && len(y.DomainDCV) == 0 {
			x.DomainDCV, y.DomainDCV = nil, nil
		}
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	a.Items, b.Items = nil, nil
	return reflect.DeepEqual(a, b)
}

func TestServiceDomainsSorted(t *testing.T) {
	s := Service{DomainDCV: map[string]Method{"b.example": MethodDNS, "a.example": MethodHTTP, "*.a.example": MethodDNS}}
	if got, want := s.Domains(), []string{"*.a.example", "a.example", "b.example"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Domains() = %v, want %v", got, want)
	}
	if got := (Service{}).Domains(); got == nil || len(got) != 0 {
		t.Errorf("Domains() of no domains = %#v, want empty", got)
	}
}

func TestListSendsSignedQuery(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		writeJSON(w, 200, `{"success":true,"message":"OK","data":{"current_page":2,"last_page":2,"per_page":5,"total":6,"data":[{"service_id":"s6"}]}}`)
	})
	c := newAPIClient(t, api.srv.URL+"/api/v1", nil)
	p, err := c.List(context.Background(), ListOptions{Page: 2, PageSize: 5, Status: StatusExpiring, Keyword: " example.com "})
	if err != nil {
		t.Fatal(err)
	}
	if p.CurrentPage != 2 || len(p.Items) != 1 || p.Items[0].ServiceID != "s6" {
		t.Errorf("page %+v", p)
	}
	seen := api.last()
	if seen.Method != http.MethodGet || seen.Path != "/api/v1"+PathList || seen.Body != nil {
		t.Errorf("sent %s %s with body %v", seen.Method, seen.Path, seen.Body)
	}
	for k, want := range map[string]string{"page": "2", "page_size": "5", "status": "expiring", "keyword": "example.com"} {
		if got := seen.Query.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}

	// Zero options are left out: the server's defaults apply.
	if _, err := c.List(context.Background(), ListOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"page", "page_size", "status", "keyword"} {
		if _, ok := api.last().Query[k]; ok {
			t.Errorf("zero option %s sent", k)
		}
	}

	n := api.requests()
	for _, opt := range []ListOptions{{Page: -1}, {PageSize: -5}} {
		if _, err := c.List(context.Background(), opt); err == nil || !strings.Contains(err.Error(), "nothing was sent") {
			t.Errorf("%+v: %v", opt, err)
		}
	}
	if api.requests() != n {
		t.Error("a negative page was sent")
	}
}

func TestParseSuccessOrCode(t *testing.T) {
	tests := []struct {
		reply   string
		want    bool
		wantErr string
	}{
		{reply: `{"success":true,"code":5}`, want: true}, // success wins
		{reply: `{"success":false,"code":0}`, want: false},
		{reply: `{"code":0,"message":"success"}`, want: true},
		{reply: `{"code":"0"}`, want: true},
		{reply: `{"code":1001,"message":"bad sign"}`, want: false},
		{reply: `{"code":"-1"}`, want: false},
		{reply: `{"code":"ok"}`, wantErr: "not a number"},
		{reply: `{"code":{"a":1}}`, wantErr: "not a number"},
		{reply: `{"code":null}`, wantErr: "no success field"},
		{reply: `{"message":"hello"}`, wantErr: "no success field"},
	}
	for _, tt := range tests {
		var env replyEnvelope
		if err := json.Unmarshal([]byte(tt.reply), &env); err != nil {
			t.Fatal(err)
		}
		got, err := parseSuccessOrCode(env.Success, []byte(tt.reply))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s: %v, %v; want an error containing %q", tt.reply, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%s: %v, %v; want %v", tt.reply, got, err, tt.want)
		}
	}
}

// TestListAcceptsBothEnvelopes needs decodeReply (client.go) to call
// parseSuccessOrCode instead of parseSuccess.
func TestListAcceptsBothEnvelopes(t *testing.T) {
	const page = `{"current_page":1,"last_page":1,"per_page":15,"total":1,"data":[{"service_id":"s1","service_expires_at":"2026-11-30 00:00:00"}]}`
	for _, env := range []string{
		`{"success":true,"message":"OK","data":` + page + `}`,
		`{"code":0,"message":"success","data":` + page + `}`,
	} {
		api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) { writeJSON(w, 200, env) })
		p, err := newAPIClient(t, api.srv.URL, nil).List(context.Background(), ListOptions{})
		if err != nil {
			t.Errorf("%s: %v (for the code envelope, decodeReply must call parseSuccessOrCode)", env, err)
			continue
		}
		if len(p.Items) != 1 || p.Items[0].ServiceID != "s1" || p.Items[0].ServiceExpiresAt.IsZero() {
			t.Errorf("%s: %+v", env, p)
		}
	}

	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		writeJSON(w, 200, `{"code":1001,"message":"no such account","data":null}`)
	})
	_, err := newAPIClient(t, api.srv.URL, nil).List(context.Background(), ListOptions{})
	var ae *APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.Message, "no such account") {
		t.Errorf("a non-zero code: %v, want an APIError with the message", err)
	}
}

// pagedAPI serves total services s1…sN, perPage a page, as a paginator;
// tweak may change each page before it is sent.
func pagedAPI(t *testing.T, total, perPage int, tweak func(page int, p map[string]any)) *fakeAPI {
	return newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, seen seenRequest) {
		page, _ := strconv.Atoi(seen.Query.Get("page"))
		if page == 0 {
			page = 1
		}
		items := []map[string]any{}
		for i := (page-1)*perPage + 1; i <= page*perPage && i <= total; i++ {
			items = append(items, map[string]any{"id": i, "service_id": fmt.Sprintf("s%d", i),
				"domain_dcv": map[string]string{fmt.Sprintf("d%d.example", i): "dns"}})
		}
		p := map[string]any{"current_page": page, "last_page": max(1, (total+perPage-1)/perPage),
			"per_page": perPage, "total": total, "data": items}
		if tweak != nil {
			tweak(page, p)
		}
		b, _ := json.Marshal(map[string]any{"success": true, "message": "OK", "data": p})
		writeJSON(w, 200, string(b))
	})
}

func serviceIDs(list []Service) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = s.ServiceID
	}
	return out
}

func TestListAllPages(t *testing.T) {
	api := pagedAPI(t, 5, 2, func(page int, p map[string]any) {
		if page == 2 {
			// The list shifted while it was read: s2 shows again.
			p["data"] = append([]map[string]any{{"service_id": "s2"}}, p["data"].([]map[string]any)...)
		}
	})
	c := newAPIClient(t, api.srv.URL, nil)
	got, err := c.ListAll(context.Background(), StatusIssued)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"s1", "s2", "s3", "s4", "s5"}; !reflect.DeepEqual(serviceIDs(got), want) {
		t.Errorf("services %v, want %v", serviceIDs(got), want)
	}
	if got[2].Domains()[0] != "d3.example" {
		t.Errorf("s3 = %+v", got[2])
	}
	if n := api.requests(); n != 3 {
		t.Errorf("%d requests for 3 pages", n)
	}
	api.mu.Lock()
	for i, seen := range api.seen {
		if seen.Query.Get("page") != strconv.Itoa(i+1) || seen.Query.Get("page_size") != "100" || seen.Query.Get("status") != "issued" {
			t.Errorf("request %d: %v", i+1, seen.Query)
		}
	}
	api.mu.Unlock()
}

func TestListAllStopsOnMisbehaviour(t *testing.T) {
	tests := []struct {
		name     string
		total    int
		tweak    func(page int, p map[string]any)
		wantErr  string
		maxCalls int
	}{
		{
			name:  "the server repeats page 1 forever",
			total: 300,
			tweak: func(page int, p map[string]any) {
				p["current_page"] = 1
				p["data"] = []map[string]any{{"service_id": "s1"}}
			},
			wantErr: "asked for page 2, got page 1", maxCalls: 2,
		},
		{
			name:  "the server repeats page 1 forever without current_page",
			total: 300,
			tweak: func(page int, p map[string]any) {
				delete(p, "current_page")
				p["data"] = []map[string]any{{"service_id": "s1"}}
			},
			wantErr: "page 2 brings no service", maxCalls: 2,
		},
		{
			name:  "an empty page before the last",
			total: 300,
			tweak: func(page int, p map[string]any) {
				if page == 2 {
					p["data"] = []map[string]any{}
				}
			},
			wantErr: "page 2 of 3 is empty", maxCalls: 2,
		},
		{
			name:     "more pages than read at most",
			total:    100 * (MaxListPages + 1),
			wantErr:  "more than the 1000",
			maxCalls: 1,
		},
		{
			name:  "no last page, never ending",
			total: 1,
			tweak: func(page int, p map[string]any) {
				delete(p, "last_page")
				delete(p, "total")
				items := make([]map[string]any, 100)
				for i := range items {
					items[i] = map[string]any{"service_id": fmt.Sprintf("p%d-%d", page, i)}
				}
				p["data"] = items
			},
			wantErr: "stopped after 1000 pages", maxCalls: MaxListPages,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := pagedAPI(t, tt.total, ListAllPageSize, tt.tweak)
			got, err := newAPIClient(t, api.srv.URL, nil).ListAll(context.Background(), "")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %d services, err %v; want an error containing %q", len(got), err, tt.wantErr)
			}
			if n := api.requests(); n > tt.maxCalls {
				t.Errorf("%d requests, want at most %d", n, tt.maxCalls)
			}
		})
	}
}

func TestListAllWithoutCounters(t *testing.T) {
	// No last_page nor total: a short page is the last one.
	api := pagedAPI(t, 150, ListAllPageSize, func(page int, p map[string]any) {
		delete(p, "last_page")
		delete(p, "total")
	})
	got, err := newAPIClient(t, api.srv.URL, nil).ListAll(context.Background(), "")
	if err != nil || len(got) != 150 || api.requests() != 2 {
		t.Fatalf("%d services in %d requests: %v", len(got), api.requests(), err)
	}

	// An empty reply is an empty list.
	empty := pagedAPI(t, 0, ListAllPageSize, nil)
	got, err = newAPIClient(t, empty.srv.URL, nil).ListAll(context.Background(), "")
	if err != nil || len(got) != 0 {
		t.Fatalf("%v, %v", got, err)
	}
}

func TestListAllPassesRefusals(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		writeJSON(w, 200, `{"success":false,"message":"no privilege","error_code":"DO_NOT_HAVE_RIVILEGE"}`)
	})
	_, err := newAPIClient(t, api.srv.URL, nil).ListAll(context.Background(), "")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "DO_NOT_HAVE_RIVILEGE" || !strings.Contains(err.Error(), "page 1") {
		t.Errorf("err %v, want the APIError wrapped with the page", err)
	}
}
