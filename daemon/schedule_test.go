package daemon

import (
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/renewal"
)

// TestBackoffs: retries of a step and new orders after failures back off
// monotonically, capped at a day, never below a few seconds.
func TestBackoffs(t *testing.T) {
	prev := time.Duration(0)
	for n := 1; n <= 100; n++ {
		b := retryBackoff(n)
		if b < prev {
			t.Errorf("retryBackoff(%d) = %s < retryBackoff(%d) = %s", n, b, n-1, prev)
		}
		if b > 24*time.Hour || b < 5*time.Second {
			t.Errorf("retryBackoff(%d) = %s outside [5s, 24h]", n, b)
		}
		prev = b
	}
	if retryBackoff(100) != 24*time.Hour {
		t.Errorf("retryBackoff does not reach its cap: %s", retryBackoff(100))
	}
	if b := retryBackoff(0); b < 5*time.Second {
		t.Errorf("retryBackoff(0) = %s: a hot loop", b)
	}
	// Summed over the first ten retries, the wait spans days, not minutes.
	var total time.Duration
	for n := 1; n <= 10; n++ {
		total += retryBackoff(n)
	}
	if total < 24*time.Hour {
		t.Errorf("ten retries span only %s", total)
	}

	want := []time.Duration{time.Hour, 2 * time.Hour, 4 * time.Hour, 8 * time.Hour, 16 * time.Hour, 24 * time.Hour, 24 * time.Hour}
	for i, w := range want {
		if got := renewal.FailureBackoff(i + 1); got != w {
			t.Errorf("failureBackoff(%d) = %s, want %s", i+1, got, w)
		}
	}
	for n := 7; n <= 1000; n++ {
		if got := renewal.FailureBackoff(n); got != 24*time.Hour {
			t.Fatalf("failureBackoff(%d) = %s, want 24h", n, got)
		}
	}
}
