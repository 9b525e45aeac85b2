package reseller

import (
	"strings"
	"testing"
)

// A reply with thousands of messages for one field must not make an error
// of megabytes: a hostile server could flood the logs through it.
func TestAPIErrorBoundsMessagesPerField(t *testing.T) {
	msgs := make([]string, 5000)
	for i := range msgs {
		msgs[i] = strings.Repeat("x", 100)
	}
	e := &APIError{Op: "reissue", StatusCode: 422, FieldErrors: map[string][]string{"csr": msgs}}
	got := e.Error()
	if len(got) > 2000 {
		t.Fatalf("error of %d bytes for one field's messages", len(got))
	}
	if !strings.Contains(got, "and 4990 more") {
		t.Fatalf("error %q does not say how many messages were left out", got[:200])
	}
	if len(e.FieldErrors["csr"]) != 5000 {
		t.Fatal("Error changed the messages it was given")
	}
}
