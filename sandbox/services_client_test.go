package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

// TestClientSeesServiceEnds drives the list, detail and a refused reissue
// with the real reseller.Client: what dcvd will see of a service's end.
func TestClientSeesServiceEnds(t *testing.T) {
	var services []sandbox.Service
	for i := range 150 {
		services = append(services, sandbox.Service{ID: fmt.Sprintf("s%03d", i), ProductID: "sectigo-dv-multi"})
	}
	sb, err := sandbox.New(sandbox.Config{StateDir: t.TempDir(), CheckInterval: -1,
		Products: sandbox.DefaultProducts(), Services: services})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.Close() })
	ts := httptest.NewServer(sb.Handler())
	t.Cleanup(ts.Close)
	base := ts.URL + "/api/v1"
	id, secret := sb.AccessKey()
	c := newClient(t, base, id, secret, nil)
	ctx := context.Background()

	end := time.Now().Add(-time.Minute).Truncate(time.Second)
	if err := sb.SetServiceEnd("s149", end); err != nil {
		t.Fatal(err)
	}
	all, err := c.ListAll(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 150 || all[0].ServiceID != "s000" || !all[149].ServiceExpiresAt.Equal(end) {
		t.Fatalf("listed %d services, the last %+v", len(all), all[len(all)-1])
	}
	if all[0].ServiceExpiresAt.Before(time.Now().Add(364 * 24 * time.Hour)) {
		t.Errorf("a service of the default period ends %s, want in a year", all[0].ServiceExpiresAt)
	}

	o, err := c.Detail(ctx, "s149")
	if err != nil || !o.ServiceExpiresAt.Equal(end) {
		t.Fatalf("detail: %+v, %v", o, err)
	}
	_, err = c.Reissue(ctx, reseller.ReissueRequest{UniqueID: "r1", ServiceID: "s149",
		DomainDCV: map[string]reseller.Method{"a.example.com": reseller.MethodDNS}, CSR: testCSR(t, "a.example.com")})
	var ae *reseller.APIError
	if !errors.As(err, &ae) || ae.Code != reseller.CodeServiceExpired || reseller.Retryable(err) ||
		!strings.Contains(ae.Message, "ended on "+end.In(time.FixedZone("", 8*3600)).Format(time.DateOnly)) {
		t.Errorf("reissue of an ended service: %v", err)
	}
	if len(sb.Ledger()) != 0 {
		t.Errorf("ledger %+v after a refused reissue", sb.Ledger())
	}
}
