package config

// This file holds how the config reports its problems: one ConfigError
// per problem, naming its file and key, sorted so that a run's report
// reads in file order.

import (
	"errors"
	"sort"
	"strconv"
	"strings"
)

// ConfigError is one problem of a configuration: the key concerned, such
// as certificate[shop].deploy.dir, and what is wrong with it.
type ConfigError struct {
	// File is the included file (config include) the key is in; "" for
	// the main configuration file, which the caller names.
	File   string
	Key    string
	Reason string
}

// Error renders "KEY: reason", or "FILE: KEY: reason" for a key of an
// included file (KEY is left out when the problem is the file's own, such
// as a syntax error).
func (e *ConfigError) Error() string {
	msg := e.Reason
	if e.Key != "" {
		msg = e.Key + ": " + msg
	}
	if e.File != "" {
		msg = e.File + ": " + msg
	}
	return msg
}

// SortErrors sorts ConfigErrors by file (the main file's first), key,
// then reason.
func SortErrors(errs []error) {
	sortKey := func(e error) (string, string, string) {
		var ce *ConfigError
		if errors.As(e, &ce) {
			return ce.File, ce.Key, ce.Reason
		}
		return "", e.Error(), ""
	}
	sort.SliceStable(errs, func(i, j int) bool {
		fi, ki, ri := sortKey(errs[i])
		fj, kj, rj := sortKey(errs[j])
		if fi != fj {
			return fi < fj
		}
		if ki != kj {
			return ki < kj
		}
		return ri < rj
	})
}

// QuoteList renders names as a quoted, comma-separated list, or "none".
func QuoteList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}
