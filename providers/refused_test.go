package providers_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/dcvd/dcvd/providers"
)

// TestErrorsKeepTheSecretOut: an API that refuses dcvd (its key, or its
// writes) and quotes the secret in its refusal, as a careless API might:
// Publish fails with an error that says why and carries no secret, and the
// zone is as it was. One table for the fakes whose deny refuses a request
// (Tencent Cloud's errors have their own test, TestTencentcloudAPIErrors).
func TestErrorsKeepTheSecretOut(t *testing.T) {
	type refusal struct {
		name    string
		deny    func(apiRequest) bool
		wantErr []string
	}
	all := func(apiRequest) bool { return true }
	for _, p := range []struct {
		provider string // the section's name
		secret   string
		// start starts the fake holding example.com; it returns the fake's
		// core, its snapshot, and a DNS configured for the zone.
		start    func(t *testing.T) (*fakeServer, func() []string, func() *providers.DNS)
		refusals []refusal
	}{
		{
			provider: "cf", secret: cfToken,
			start: func(t *testing.T) (*fakeServer, func() []string, func() *providers.DNS) {
				f := newFakeCloudflare(t, "example.com")
				return &f.fakeServer, f.snapshot, func() *providers.DNS {
					return newDNS(t, "cf", cfSection(t, map[string]any{"zone": "example.com"}), providers.Options{HTTPClient: f.client()})
				}
			},
			refusals: []refusal{
				{"token rejected", all, []string{"read zone example.com.", "403", "Authentication error"}},
				{"writes forbidden", isCloudflareWrite, []string{"publish 2 record(s) in zone example.com.", "403", "Authentication error"}},
			},
		},
		{
			provider: "r53", secret: r53Secret,
			start: func(t *testing.T) (*fakeServer, func() []string, func() *providers.DNS) {
				f := newFakeRoute53(t, "example.com")
				route53Env(t, f)
				return &f.fakeServer, f.snapshot, func() *providers.DNS {
					return newDNS(t, "r53", r53SectionFor(t, map[string]any{"zone": "example.com"}), providers.Options{})
				}
			},
			refusals: []refusal{
				{"access denied", all, []string{"read zone example.com.", "AccessDenied", "403"}},
				{"changes denied", isR53Change, []string{"publish 2 record(s) in zone example.com.", "AccessDenied", "403"}},
			},
		},
		{
			provider: "ali", secret: aliSecret,
			start: func(t *testing.T) (*fakeServer, func() []string, func() *providers.DNS) {
				f := newFakeAlidns(t, "example.com")
				return &f.fakeServer, f.snapshot, func() *providers.DNS {
					return newDNS(t, "ali", aliSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
				}
			},
			refusals: []refusal{
				{"key refused", all, []string{"read zone example.com.", "HTTP 403", "User not authorized"}},
				{"writes refused", isAliWrite, []string{"publish 2 record(s) in zone example.com.", "HTTP 403", "User not authorized"}},
			},
		},
		{
			provider: "hw", secret: hwSecret,
			start: func(t *testing.T) (*fakeServer, func() []string, func() *providers.DNS) {
				f := newFakeHuawei(t, "example.com")
				return &f.fakeServer, f.snapshot, func() *providers.DNS {
					return newDNS(t, "hw", hwSection(t, map[string]any{"zone": "example.com"}), providers.Options{})
				}
			},
			refusals: []refusal{
				{"key refused", all, []string{"read zone example.com.", "HTTP 403", "Policy doesn't allow"}},
				{"writes refused", func(r apiRequest) bool { return r.Method != http.MethodGet }, []string{"publish 2 record(s) in zone example.com.", "HTTP 403"}},
			},
		},
	} {
		for _, tt := range p.refusals {
			t.Run(p.provider+"/"+tt.name, func(t *testing.T) {
				f, snapshot, newDNS := p.start(t)
				before := snapshot()
				f.deny = tt.deny
				d := newDNS()
				recs := planDCV(t, d, dcvInstructions("example.com", "www"), wantRecords(p.provider, time.Minute, "example.com", "www"))
				_, err := d.Publish(context.Background(), recs)
				checkRefusedPublish(t, err, p.secret, tt.wantErr, before, snapshot())
			})
		}
	}
}
