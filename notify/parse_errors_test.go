package notify

import (
	"slices"
	"testing"

	"github.com/dcvd/dcvd/internal/section/sectiontest"
)

// Parse's errors are *section.Error values, so that package daemon can
// re-file them by key with errors.As rather than by splitting messages;
// the messages themselves stay "notify.NAME.key: reason".
func TestParseErrorsAreSectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		section map[string]any
		keys    []string
	}{
		{"section name", map[string]any{"type": "webhook"}, []string{"notify.a b."}},
		{"missing type", map[string]any{}, []string{"notify.ops.type"}},
		{"several problems", map[string]any{"type": "webhook", "secrt": "x", "secret_file": "/nope", "level": 1},
			[]string{"notify.ops.level", "notify.ops.secret_file", "notify.ops.secrt", "notify.ops.url"}},
		{"secret of two lines", map[string]any{"type": "webhook", "url": "https://x.example/", "secret_file": "/two-lines"},
			[]string{"notify.ops.secret_file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "ops"
			if tc.name == "section name" {
				name = "a b"
			}
			_, _, errs := Parse(name, tc.section, testEnv, testReadFile)
			keys := sectiontest.Keys(t, errs)
			if !slices.Equal(keys, tc.keys) {
				t.Errorf("keys %q, want %q", keys, tc.keys)
			}
		})
	}
}
