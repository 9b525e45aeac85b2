package daemon

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/internal/testpki"
)

// callback posts body to the daemon's callback handler and returns the
// response.
func callback(t *testing.T, d *Daemon, method, path, body string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	d.CallbackHandler().ServeHTTP(rec, req)
	return rec.Result()
}

// forgedBody is what an attacker posts: an "issued" order with a
// certificate of their choosing.
func forgedBody(t *testing.T, serviceID, certPEM string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"service_id": serviceID, "status": "issued", "cert_pem": certPEM, "ca_pem": certPEM,
		"not_before": "2026-01-01T00:00:00+08:00", "not_after": "2036-01-01T00:00:00+08:00",
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCallbackRefusals: only a POST with the token of an order in flight
// and a bounded body is accepted, and an accepted callback changes nothing
// in the store and calls nothing by itself.
func TestCallbackRefusals(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	d := h.daemon(h.config(hDomains()), nil)

	const activeToken, doneToken, failedToken = "0123456789abcdef0123456789abcdef0123456789abcdef", "feedfacefeedfacefeedfacefeedfacefeedfacefeedface", "badbadbadbadbadbadbadbadbadbadbadbadbadbadbadbadb"
	active := &store.Order{UniqueID: "dcvd-active", Cert: hCert, ServiceID: hService, Step: store.StepRechecked, Names: []string{"example.com"},
		CallbackToken: activeToken, LastError: "none yet"}
	done := &store.Order{UniqueID: "dcvd-done", Cert: hCert, ServiceID: hService, Step: store.StepDone, Names: []string{"example.com"},
		CallbackToken: doneToken}
	failed := &store.Order{UniqueID: "dcvd-failed", Cert: "other", ServiceID: hService, Step: store.StepFailed, Names: []string{"example.com"},
		CallbackToken: failedToken}
	for _, o := range []*store.Order{done, failed, active} {
		if err := d.store.PutOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	before, err := d.Store().Order(ctx, active.UniqueID)
	if err != nil {
		t.Fatal(err)
	}

	forged := forgedBody(t, hService, testpki.PEM(testpki.NewCA(t, "attacker", time.Now()).Root))
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		want   int
	}{
		{"unknown token", http.MethodPost, "/callback/00000000000000000000000000000000000000000000dead", forged, http.StatusNotFound},
		{"token of a finished order", http.MethodPost, "/callback/" + doneToken, forged, http.StatusNotFound},
		{"token of a failed order", http.MethodPost, "/callback/" + failedToken, forged, http.StatusNotFound},
		{"prefix of a token", http.MethodPost, "/callback/" + activeToken[:20], forged, http.StatusNotFound},
		{"token in upper case", http.MethodPost, "/callback/" + strings.ToUpper(activeToken), forged, http.StatusNotFound},
		{"token with a suffix", http.MethodPost, "/callback/" + activeToken + "0", forged, http.StatusNotFound},
		{"token followed by a path", http.MethodPost, "/callback/" + activeToken + "/x", forged, http.StatusNotFound},
		{"no token", http.MethodPost, "/callback/", forged, http.StatusNotFound},
		{"another path", http.MethodPost, "/" + activeToken, forged, http.StatusNotFound},
		{"GET", http.MethodGet, "/callback/" + activeToken, "", http.StatusMethodNotAllowed},
		{"PUT", http.MethodPut, "/callback/" + activeToken, forged, http.StatusMethodNotAllowed},
		{"oversized body", http.MethodPost, "/callback/" + activeToken, strings.Repeat("x", maxCallbackBody+1), http.StatusRequestEntityTooLarge},
		{"body at the limit", http.MethodPost, "/callback/" + activeToken, strings.Repeat("x", maxCallbackBody), http.StatusOK},
		{"forged certificate", http.MethodPost, "/callback/" + activeToken, forged, http.StatusOK},
		{"garbage body", http.MethodPost, "/callback/" + activeToken, "\x00\xff{", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := callback(t, d, tt.method, tt.path, tt.body)
			if res.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", res.StatusCode, tt.want)
			}
			if tt.want == http.StatusMethodNotAllowed && res.Header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow %q, want POST", res.Header.Get("Allow"))
			}
		})
	}

	// Nothing changed: the order row, the live certificate, the CA.
	after, err := d.Store().Order(ctx, active.UniqueID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Errorf("a callback changed the order:\nbefore %+v\nafter  %+v", before, after)
	}
	if _, err := d.Store().Certificate(ctx, hCert); err == nil {
		t.Errorf("a callback created a live certificate")
	}
	if n := h.events.count("api "); n != 0 {
		t.Errorf("callbacks with no driver made %d API call(s)", n)
	}
	if files := h.deployed(); len(files) != 0 {
		t.Errorf("callbacks deployed files: %v", files)
	}
}

// TestForgedCallbackOnlyTriggersSignedDetail: a callback with a valid token
// wakes the order's driver, which fetches the detail through the signed
// API; the certificate in the callback's body is ignored.
func TestForgedCallbackOnlyTriggersSignedDetail(t *testing.T) {
	h := newHarness(t)
	ctx := hCtx(t)
	type waiting struct{ token, uid string }
	rechecked := make(chan waiting, 1)
	d := h.daemon(h.config(hDomains()), func(opts *Options) {
		opts.AfterStep = func(o *store.Order) {
			switch o.Step {
			case store.StepVisible:
				// The re-check's first poll is scheduled half an hour
				// ahead: only a callback can wake the order in time.
				h.clock.set(30 * time.Minute)
			case store.StepRechecked:
				h.clock.set(0)
				rechecked <- waiting{o.CallbackToken, o.UniqueID}
			}
		}
	})

	type result struct {
		o   *store.Order
		err error
	}
	done := make(chan result, 1)
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	go func() {
		o, err := d.Reissue(rctx, hCert, ReissueOptions{Wait: true})
		done <- result{o, err}
	}()

	var w waiting
	select {
	case w = <-rechecked:
	case r := <-done:
		t.Fatalf("the order ended before the re-check: %+v %v", r.o, r.err)
	}
	// The service's end is read before the reissue; after it, nothing
	// polls the detail before the callback.
	if n := h.events.countAfter(evReissue, evDetail); n != 0 {
		t.Fatalf("detail fetched %d time(s) before the callback", n)
	}

	// The attacker's certificate is even for the order's key and names.
	key, _, err := certs.LoadKey(mustOrder(t, d, w.uid).KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rogue := testpki.NewCA(t, "attacker", now)
	forgedLeaf := rogue.Issue(t, key.Public(), testpki.Leaf{Names: mustOrder(t, d, w.uid).Names, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour)})
	forgedPEM := testpki.PEM(forgedLeaf, rogue.Inter)
	res := callback(t, d, http.MethodPost, "/callback/"+w.token, forgedBody(t, hService, forgedPEM))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("callback status %d", res.StatusCode)
	}

	r := <-done
	if r.err != nil {
		t.Fatalf("the order did not complete after the callback: %v", r.err)
	}
	if r.o.Step != store.StepDone {
		t.Fatalf("order in step %s", r.o.Step)
	}
	if n := h.events.count(evDetail); n < 1 {
		t.Errorf("the callback did not lead to a detail fetch")
	}
	if strings.Contains(r.o.CertPEM, strings.TrimSpace(testpki.PEM(forgedLeaf))) || testpki.ParseCert(t, r.o.CertPEM).Equal(forgedLeaf) {
		t.Fatal("the forged certificate from the callback was taken")
	}
	// What was stored and deployed is the sandbox's certificate.
	h.assertDeployedIs(r.o)
	live, err := d.Store().Certificate(ctx, hCert)
	if err != nil || live.CertPEM != r.o.CertPEM {
		t.Errorf("live certificate %v: not the order's", err)
	}

	// The token is dead once the order is finished.
	if res := callback(t, d, http.MethodPost, "/callback/"+w.token, forgedBody(t, hService, forgedPEM)); res.StatusCode != http.StatusNotFound {
		t.Errorf("callback for the finished order: status %d, want 404", res.StatusCode)
	}
}

func mustOrder(t *testing.T, d *Daemon, uid string) *store.Order {
	t.Helper()
	o, err := d.Store().Order(context.Background(), uid)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
