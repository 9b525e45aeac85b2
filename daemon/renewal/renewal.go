// Package renewal decides when a certificate is due for renewal: at a
// point before its expiry (renew_before), spread by a jitter fixed per
// certificate so that certificates issued together are not all reissued
// in the same minute; at once when the configured names changed; and,
// after failed orders, not before a backoff. It reads nothing and does
// nothing: the daemon gives it the live certificate and its history.
//
// Index (index.go) keeps those inputs of every certificate in memory,
// ordered by when each is next due, so that the daemon's renewal check
// looks only at the certificates that are due; the daemon keeps it equal
// to its store.
package renewal

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// maxJitter bounds how much earlier than its renew_before point a
// certificate may be renewed, so that many certificates issued together
// are not all reissued in the same minute.
const maxJitter = 12 * time.Hour

// Due says when a certificate is due and why.
type Due struct {
	At     time.Time
	Reason string
}

// Next decides when the certificate cc is due: when renew_before
// (default: a third of the lifetime) remains of the live certificate, less
// a jitter fixed by the name and serial; at once when there is no live
// certificate; and, after failed attempts, not before their backoff ends.
func Next(cc *config.CertConfig, live *store.Certificate, history []store.Attempt, now time.Time) Due {
	r := Due{At: now, Reason: "no live certificate"}
	if live != nil && !live.NotAfter.IsZero() {
		before := cc.RenewBefore
		if before <= 0 {
			before = live.NotAfter.Sub(live.NotBefore) / 3
		}
		at := live.NotAfter.Add(-before).Add(-jitter(cc.Name, live.Serial, before))
		r = Due{At: at, Reason: fmt.Sprintf("%s before expiry (%s)", config.FormatDuration(before), live.NotAfter.UTC().Format(time.RFC3339))}
		if missing := MissingNames(cc, live); len(missing) > 0 {
			r = Due{At: now, Reason: "the configured names changed: " + strings.Join(missing, ", ") + " not covered"}
		}
	}
	// Consecutive failed attempts (newest first) push the next try back.
	failures := 0
	for _, a := range history {
		if a.Outcome != store.StepFailed {
			break
		}
		failures++
	}
	if failures > 0 {
		retry := history[0].Finished.Add(FailureBackoff(failures))
		if retry.After(r.At) {
			r = Due{At: retry, Reason: fmt.Sprintf("%d failed attempt(s); retrying after a backoff", failures)}
		}
	}
	return r
}

// FailureBackoff spaces whole new orders after failed ones: an hour, then
// doubling, at most a day.
func FailureBackoff(failures int) time.Duration {
	d := time.Hour << min(failures-1, 5)
	return min(d, 24*time.Hour)
}

// jitter is a fixed fraction (from the name and serial) of a tenth of the
// renewal window, at most maxJitter.
func jitter(name, serial string, window time.Duration) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(name + "\x00" + serial))
	span := min(window/10, maxJitter)
	if span <= 0 {
		return 0
	}
	return time.Duration(h.Sum64() % uint64(span))
}

// MissingNames are the configured names of cc that live does not cover.
func MissingNames(cc *config.CertConfig, live *store.Certificate) []string {
	have := map[string]bool{}
	for _, n := range live.Names {
		have[n] = true
	}
	var missing []string
	for _, n := range cc.Names() {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	return missing
}
