package config

// This file holds the kinds of value the config reads that package
// section has no reader for, because only the config has them: required
// strings with a hint, listener and peer addresses, http(s) URLs, request
// rates and alert days. They are built on section's primitives and report
// through the section, so that their problems are re-filed like the rest.

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/dcvd/dcvd/internal/section"
)

// unknown reports every key of s that is not in known, listing them: the
// message of every section the config reads itself.
func unknown(s *section.Section, known ...string) {
	s.Unknown(func(k string) bool { return slices.Contains(known, k) },
		" (known here: "+strings.Join(known, ", ")+")")
}

// required returns the non-empty string at k, reporting it when absent or
// empty; what says what belongs there.
func required(s *section.Section, k, what string) (string, bool) {
	if !s.Has(k) {
		s.Fail(k, "required: %s", what)
		return "", false
	}
	v, ok := s.String(k)
	if !ok {
		return "", false
	}
	if strings.TrimSpace(v) == "" {
		s.Fail(k, "must not be empty: %s", what)
		return "", false
	}
	return v, true
}

// hostPort reads a "host:port" address at k; listeners may use port 0
// (any free port, for tests).
func hostPort(s *section.Section, k string, listener bool) (string, bool) {
	v, ok := s.String(k)
	if !ok {
		return "", false
	}
	if err := cfgCheckHostPort(v, listener); err != nil {
		s.Fail(k, "%v", err)
		return "", false
	}
	return v, true
}

// cfgCheckHostPort checks a "host:port" address; a peer's (not a
// listener's) needs a host and a port other than 0.
func cfgCheckHostPort(addr string, listener bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not \"host:port\"", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (p == 0 && !listener) {
		return fmt.Errorf("%q: port must be a number from 1 to 65535", addr)
	}
	if !listener && host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	return nil
}

// httpURL reads an absolute http(s) URL at k: one the reseller client or
// the CA can use as it is.
func httpURL(s *section.Section, k string) (string, bool) {
	v, ok := s.String(k)
	if !ok {
		return "", false
	}
	u, err := url.Parse(v)
	switch {
	case section.HasSpaceOrControl(v):
		// url.Parse takes a space in the path; the CA or the client would
		// then fail on it after the config was accepted.
		s.Fail(k, "contains a space or a control character: percent-encode it (a space is %%20)")
	case err != nil:
		s.Fail(k, "not a valid URL")
	case u.User != nil:
		// Not echoed: the user info may hold a password.
		s.Fail(k, "must not contain user info")
	case u.Scheme != "http" && u.Scheme != "https":
		s.Fail(k, "%q is not an absolute http or https URL", v)
	case u.Hostname() == "":
		s.Fail(k, "%q has no host", v)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		s.Fail(k, "%q must not have a query or fragment", v)
	default:
		return v, true
	}
	return "", false
}

// requestRate reads a rate in requests per second at k: an integer or a
// float, 0 or more (0, like an absent key, means no limit).
func requestRate(s *section.Section, k string) float64 {
	v, present := s.Value(k)
	if !present {
		return 0
	}
	var r float64
	switch n := v.(type) {
	case int64:
		r = float64(n)
	case float64:
		r = n
	default:
		s.Fail(k, "must be a number of requests per second such as 20 or 0.5, not %s", section.TypeName(v))
		return 0
	}
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		s.Fail(k, "must be a finite number of requests per second (0 or leaving the key out means no limit), got %v", r)
		return 0
	case r < 0:
		s.Fail(k, "must not be negative (0 or leaving the key out means no limit), got %v", r)
		return 0
	}
	return r
}

// alertDays reads the list of whole days at k (1 to max), most distant
// first and without repeats; ok is false when k is absent or refused (the
// refusal is recorded).
func alertDays(s *section.Section, k string, max int64, example string) (days []int, ok bool) {
	v, present := s.Value(k)
	if !present {
		return nil, false
	}
	list, isList := v.([]any)
	for _, e := range list {
		n, isInt := e.(int64)
		if !isInt || n < 1 || n > max {
			isList = false
			break
		}
		days = append(days, int(n))
	}
	if !isList {
		s.Fail(k, "must be a list of whole days from 1 to %d, such as %s", max, example)
		return nil, false
	}
	slices.SortFunc(days, func(a, b int) int { return b - a })
	return slices.Compact(days), true
}
