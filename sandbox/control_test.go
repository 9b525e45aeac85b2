package sandbox

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"testing"
)

func TestControlEndpoints(t *testing.T) {
	h := sbStart(t, "", nil)
	get := func(method, path string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, h.ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	data := func(b []byte, v any) {
		t.Helper()
		var env struct {
			Success bool            `json:"success"`
			Data    json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(b, &env); err != nil || !env.Success {
			t.Fatalf("reply %s: %v", b, err)
		}
		if v != nil {
			if err := json.Unmarshal(env.Data, v); err != nil {
				t.Fatalf("data %s: %v", env.Data, err)
			}
		}
	}

	status, body := get(http.MethodGet, "/sandbox/root.pem")
	if b, _ := pem.Decode(body); status != http.StatusOK || b == nil || b.Type != "CERTIFICATE" || string(body) != h.srv.RootPEM() {
		t.Fatalf("root.pem: HTTP %d %q", status, body)
	}

	_, csr := sbCSR(t, "a.example.com")
	h.reissue("c1", "svc", map[string]string{"a.example.com": "admin@example.com", "new.example.com": "admin@example.com"}, csr).mustSucceed(t)
	if status, body := get(http.MethodPost, "/sandbox/approve-email?service_id=svc&domain=nope.example.com"); status != http.StatusBadRequest {
		t.Errorf("approving a name outside the order: HTTP %d %s", status, body)
	}
	for _, d := range []string{"a.example.com", "new.example.com"} {
		_, body := get(http.MethodPost, "/sandbox/approve-email?service_id=svc&domain="+d)
		data(body, nil)
	}
	_, body = get(http.MethodGet, "/sandbox/services")
	var services []struct {
		ID          string   `json:"service_id"`
		Domains     []string `json:"domains"`
		OrderStatus string   `json:"order_status"`
		Serial      string   `json:"serial"`
	}
	data(body, &services)
	found := false
	for _, s := range services {
		if s.ID == "svc" {
			found = true
			if s.OrderStatus != "issued" || s.Serial == "" || len(s.Domains) != 2 {
				t.Errorf("svc: %+v", s)
			}
		}
	}
	if !found || len(services) != len(sbServices) {
		t.Errorf("services %+v", services)
	}

	_, body = get(http.MethodGet, "/sandbox/ledger")
	var ledger []Charge
	data(body, &ledger)
	if len(ledger) != 1 || ledger[0].UniqueID != "c1" || ledger[0].Amount != 11 {
		t.Errorf("ledger %+v", ledger)
	}
	_, body = get(http.MethodGet, "/sandbox/revocations")
	var revs []Revocation
	data(body, &revs)
	if revs == nil || len(revs) != 0 {
		t.Errorf("revocations %s", body)
	}

	_, body = get(http.MethodPost, "/sandbox/balance?set=12.5")
	data(body, nil)
	if h.srv.Balance() != 12.5 {
		t.Errorf("balance %v", h.srv.Balance())
	}
	if status, _ := get(http.MethodPost, "/sandbox/balance?set=lots"); status != http.StatusBadRequest {
		t.Errorf("bad balance: HTTP %d", status)
	}
	if status, _ := get(http.MethodGet, "/sandbox/nothing"); status != http.StatusNotFound {
		t.Errorf("unknown control endpoint: HTTP %d", status)
	}
	if status, _ := get(http.MethodGet, "/sandbox/approve-email"); status == http.StatusOK {
		t.Error("approve-email answered a GET")
	}
}
