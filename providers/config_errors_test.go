package providers_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/dcvd/dcvd/internal/section/sectiontest"
	"github.com/dcvd/dcvd/providers"
)

// New's error unwraps to one *section.Error per problem, so that package
// daemon can re-file them by key with errors.As rather than by splitting
// messages; the messages themselves stay "dns.NAME.key: reason".
func TestNewErrorsAreSectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		section map[string]any
		keys    []string
	}{
		{"missing provider", map[string]any{}, []string{"dns.x.provider"}},
		{"several problems", map[string]any{
			"provider":               "alidns",
			"access_key_secret_file": filepath.Join(t.TempDir(), "absent"),
			"colour":                 "blue",
			"ttl":                    "abc",
		}, []string{"dns.x.access_key_id", "dns.x.access_key_secret_file", "dns.x.colour", "dns.x.ttl"}},
		// A provider's own Check names a key too.
		{"check", map[string]any{"provider": "tencentcloud", "secret_id_env": "ID", "secret_key_env": "KEY", "region": "ap-guangzhou"},
			[]string{"dns.x.region"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := testEnv(map[string]string{"ID": "id", "KEY": "key"})
			_, _, err := providers.New("x", tc.section, providers.Options{LookupEnv: env})
			joined, ok := err.(interface{ Unwrap() []error })
			if !ok {
				t.Fatalf("error %v (%T) does not unwrap to a list", err, err)
			}
			keys := sectiontest.Keys(t, joined.Unwrap())
			if !slices.Equal(keys, tc.keys) {
				t.Errorf("keys %q, want %q", keys, tc.keys)
			}
		})
	}
}
