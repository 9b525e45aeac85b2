package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/testpki"
	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

// These tests drive the sandbox with the real reseller.Client, so that the
// client's signatures and the sandbox's checks are proven to agree, and the
// sandbox's refusals arrive as the client's typed errors.

func startSandbox(t *testing.T, faults sandbox.Faults) (*sandbox.Server, string) {
	t.Helper()
	sb, err := sandbox.New(sandbox.Config{StateDir: t.TempDir(), CheckInterval: -1, Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(sb.Handler())
	t.Cleanup(func() { ts.Close(); sb.Close() })
	return sb, ts.URL + "/api/v1"
}

func newClient(t *testing.T, base, id, secret string, now func() time.Time) *reseller.Client {
	t.Helper()
	c, err := reseller.New(reseller.Config{BaseURL: base, AccessKeyID: id, AccessKeySecret: secret, Now: now, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testCSR(t *testing.T, names ...string) string {
	t.Helper()
	return testpki.CSR(t, testpki.Key(t), names...)
}

func TestClientRefusals(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Faults{})
	id, secret := sb.AccessKey()
	ctx := context.Background()

	tests := []struct {
		name     string
		client   *reseller.Client
		status   int
		wantCode string
	}{
		{"wrong secret", newClient(t, base, id, secret+"x", nil), 401, sandbox.CodeSignatureInvalid},
		{"unknown key", newClient(t, base, "AKUNKNOWN", secret, nil), 401, sandbox.CodeUnknownAccessKey},
		{"clock an hour slow", newClient(t, base, id, secret, func() time.Time { return time.Now().Add(-time.Hour) }), 401, sandbox.CodeTimestampExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.client.Detail(ctx, "demo")
			var apiErr *reseller.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %v (%T) is not an *APIError", err, err)
			}
			if apiErr.StatusCode != tt.status || apiErr.Code != tt.wantCode || apiErr.Op != "detail" {
				t.Fatalf("got HTTP %d %s op %q, want HTTP %d %s op detail", apiErr.StatusCode, apiErr.Code, apiErr.Op, tt.status, tt.wantCode)
			}
			if reseller.Retryable(err) {
				t.Error("an authentication refusal is marked retryable")
			}
		})
	}

	good := newClient(t, base, id, secret, nil)
	if _, err := good.Detail(ctx, "demo"); err != nil {
		t.Fatalf("a correctly signed request was refused: %v", err)
	}
	_, err := good.Reissue(ctx, reseller.ReissueRequest{
		UniqueID: "u-wild", ServiceID: "demo",
		DomainDCV: map[string]reseller.Method{"*.example.com": reseller.MethodHTTP},
		CSR:       testCSR(t, "*.example.com"),
	})
	var apiErr *reseller.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 422 || len(apiErr.FieldErrors) == 0 {
		t.Fatalf("wildcard with http: got %v, want a 422 with field errors", err)
	}
	if n := len(sb.Ledger()); n != 0 {
		t.Fatalf("refused requests charged %d times", n)
	}
}

// TestClientRetriesThroughFaults retries reissues with their own unique_id
// through injected server errors, lost replies and resets, as dcvd must:
// every order ends up charged exactly once.
func TestClientRetriesThroughFaults(t *testing.T) {
	sb, base := startSandbox(t, sandbox.Faults{ErrorRate: 0.3, ResetRate: 0.2, MalformedRate: 0.2, Seed: 7})
	id, secret := sb.AccessKey()
	c := newClient(t, base, id, secret, nil)
	ctx := context.Background()
	domains := map[string]reseller.Method{"example.com": reseller.MethodDNS, "www.example.com": reseller.MethodHTTP}
	csr := testCSR(t, "example.com", "www.example.com")

	failures := 0
	for i := range 10 {
		req := reseller.ReissueRequest{UniqueID: fmt.Sprintf("u-faults-%d", i), ServiceID: "demo", DomainDCV: domains, CSR: csr}
		var order *reseller.Order
		for attempt := 0; attempt < 50 && order == nil; attempt++ {
			o, err := c.Reissue(ctx, req)
			if err == nil {
				order = o
				break
			}
			failures++
			var de *reseller.DecodeError
			if !reseller.Retryable(err) && !errors.As(err, &de) {
				t.Fatalf("%s attempt %d: %v is neither retryable nor a lost reply", req.UniqueID, attempt, err)
			}
		}
		if order == nil {
			t.Fatalf("%s: no reply got through in 50 attempts", req.UniqueID)
		}
		if _, err := reseller.ValidateInstructions(domains, order.DCV); err != nil {
			t.Fatalf("%s: the sandbox's own instructions fail validation: %v", req.UniqueID, err)
		}
	}
	if failures == 0 {
		t.Fatal("no fault was injected; the test proves nothing")
	}
	charges := map[string]int{}
	for _, ch := range sb.Ledger() {
		charges[ch.UniqueID]++
	}
	if len(charges) != 10 {
		t.Fatalf("%d unique_ids charged, want 10: %v", len(charges), charges)
	}
	for uid, n := range charges {
		if n != 1 {
			t.Errorf("%s charged %d times (after %d failed attempts in all)", uid, n, failures)
		}
	}
}
