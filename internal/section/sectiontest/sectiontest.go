// Package sectiontest checks, for the tests of the packages that parse
// configuration sections, that their errors are *section.Error values.
package sectiontest

import (
	"errors"
	"slices"
	"testing"

	"github.com/dcvd/dcvd/internal/section"
)

// Keys returns the sorted keys of errs, and fails the test unless each is
// (or wraps) a *section.Error whose message is "Key: Reason", so that
// package daemon can re-file it by key with errors.As rather than by
// splitting messages.
func Keys(t testing.TB, errs []error) []string {
	t.Helper()
	var keys []string
	for _, e := range errs {
		var se *section.Error
		if !errors.As(e, &se) {
			t.Fatalf("%v is a %T, not a *section.Error", e, e)
		}
		if e.Error() != se.Key+": "+se.Reason {
			t.Errorf("%q is not Key: Reason (%+v)", e, se)
		}
		keys = append(keys, se.Key)
	}
	slices.Sort(keys)
	return keys
}
