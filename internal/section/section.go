// Package section reads one table of dcvd's TOML configuration — a
// [dns.NAME], [notify.NAME], [api] or [[certificate]] section as
// BurntSushi/toml decodes it into a map[string]any — and reports every
// problem at once, each naming the key's full path ("dns.cf.api_token:
// reason").
//
// It exists so that the three readers of such sections (package
// daemon/config, package notify and package providers) share one implementation of what
// they all need and must do alike: secrets given inline, as KEY_file (a
// file holding the secret, such as one in systemd's
// $CREDENTIALS_DIRECTORY) or as KEY_env (an environment variable holding
// it); unknown keys; typed values; and error values that a caller can
// re-file by key with errors.As instead of parsing the message.
//
// A Section is not safe for concurrent use; it is meant to live for the
// reading of one section.
package section

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Error is one problem of a section: Key is the full key path
// ("notify.ops.secret") and Reason says what is wrong. It never quotes a
// secret.
type Error struct {
	Key    string
	Reason string
}

// Error renders "KEY: reason", the form every config message has, so that
// callers which still split messages at ": " keep working.
func (e *Error) Error() string { return e.Key + ": " + e.Reason }

// Options are a Section's outside world and the house style of its
// messages.
type Options struct {
	// ReadFile reads KEY_file secrets; nil means os.ReadFile.
	ReadFile func(string) ([]byte, error)
	// LookupEnv reads KEY_env secrets; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// QuoteKeys renders a key that is not a bare TOML key quoted in key
	// paths (certificate[shop].deploy."a.b"), as package daemon/config's
	// messages do; otherwise keys are appended as they are.
	QuoteKeys bool
	// NameTypes makes a type error name the value's TOML type ("must be a
	// string, not an integer"), as package daemon/config's messages do;
	// otherwise it stops at "must be a string".
	NameTypes bool
}

// Section is one TOML table being read, with the problems and warnings
// found so far. Sections made by Table share them with their parent.
type Section struct {
	path string
	m    map[string]any
	opts Options
	out  *findings
}

// findings are shared by a section and its sub-tables, so that one list
// holds every problem in the order found.
type findings struct {
	errs  []error
	warns []string
}

// New starts reading the table m whose key path is path ("dns.cf",
// "notify.ops", "certificate[3]").
func New(path string, m map[string]any, opts Options) *Section {
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	return &Section{path: path, m: m, opts: opts, out: &findings{}}
}

// Path is the section's key path.
func (s *Section) Path() string { return s.path }

// Key is the full path of key k of this section, for messages.
func (s *Section) Key(k string) string {
	if s.opts.QuoteKeys {
		k = KeyPart(k)
	}
	return s.path + "." + k
}

// Has tells whether k is set.
func (s *Section) Has(k string) bool {
	_, ok := s.m[k]
	return ok
}

// Value is the raw decoded value at k.
func (s *Section) Value(k string) (any, bool) {
	v, ok := s.m[k]
	return v, ok
}

// Keys lists the section's keys, sorted, so that messages come in a stable
// order.
func (s *Section) Keys() []string {
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Fail records a problem of key k (a key of this section; "" names the
// section itself, rendered "PATH.").
func (s *Section) Fail(k, format string, args ...any) {
	s.out.errs = append(s.out.errs, &Error{Key: s.Key(k), Reason: fmt.Sprintf(format, args...)})
}

// Warn records a warning about key k, rendered like an Error.
func (s *Section) Warn(k, format string, args ...any) {
	s.out.warns = append(s.out.warns, s.Key(k)+": "+fmt.Sprintf(format, args...))
}

// Failed tells whether any problem was recorded.
func (s *Section) Failed() bool { return len(s.out.errs) > 0 }

// Errors returns the problems in the order found, each a *Error.
func (s *Section) Errors() []error {
	if len(s.out.errs) == 0 {
		return nil
	}
	return append([]error(nil), s.out.errs...)
}

// Err joins the problems with errors.Join, nil when there are none. The
// result unwraps (Unwrap() []error) to one *Error per problem.
func (s *Section) Err() error { return errors.Join(s.out.errs...) }

// Warnings returns the warnings in the order found.
func (s *Section) Warnings() []string {
	if len(s.out.warns) == 0 {
		return nil
	}
	return append([]string(nil), s.out.warns...)
}

// Unknown reports every key that known refuses, in sorted order, as
// "unknown key" followed by detail, which says what the section does
// accept (" (known here: a, b)").
func (s *Section) Unknown(known func(k string) bool, detail string) {
	for _, k := range s.Keys() {
		if !known(k) {
			s.Fail(k, "unknown key%s", detail)
		}
	}
}

// typeError reports that k holds a value of the wrong type; want is what
// it must be ("a string", "true or false").
func (s *Section) typeError(k, want string, v any) {
	if s.opts.NameTypes {
		s.Fail(k, "must be %s, not %s", want, TypeName(v))
		return
	}
	s.Fail(k, "must be %s", want)
}

// String returns the string at k; ok is false when k is absent or not a
// string (reported). The value is never echoed: it may be a secret.
func (s *Section) String(k string) (string, bool) {
	v, present := s.m[k]
	if !present {
		return "", false
	}
	str, ok := v.(string)
	if !ok {
		s.typeError(k, "a string", v)
		return "", false
	}
	return str, true
}

// Bool returns the boolean at k; ok is false when k is absent or not a
// boolean (reported).
func (s *Section) Bool(k string) (bool, bool) {
	v, present := s.m[k]
	if !present {
		return false, false
	}
	b, ok := v.(bool)
	if !ok {
		s.typeError(k, "true or false", v)
	}
	return b, ok
}

// Int returns the integer at k; ok is false when k is absent or not an
// integer (reported).
func (s *Section) Int(k string) (int64, bool) {
	v, present := s.m[k]
	if !present {
		return 0, false
	}
	n, ok := v.(int64)
	if !ok {
		s.typeError(k, "an integer", v)
	}
	return n, ok
}

// Duration reads a positive duration string at k (ParseDuration's syntax,
// days included) into *dst, leaving the default in place when k is absent
// or an empty string. It tells whether *dst was set.
func (s *Section) Duration(k string, dst *time.Duration) bool {
	v, present := s.m[k]
	if !present {
		return false
	}
	str, ok := v.(string)
	if !ok {
		s.typeError(k, `a duration string such as "30s", "720h" or "30d"`, v)
		return false
	}
	if str == "" {
		return false
	}
	d, err := ParseDuration(str)
	if err != nil {
		s.Fail(k, "%v", err)
		return false
	}
	if d <= 0 {
		s.Fail(k, "must be positive, got %q", str)
		return false
	}
	*dst = d
	return true
}

// Table returns the sub-table at k, which shares this section's options,
// problems and warnings; ok is false when k is absent or not a table
// (reported).
func (s *Section) Table(k string) (*Section, bool) {
	v, present := s.m[k]
	if !present {
		return nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		s.typeError(k, "a table", v)
		return nil, false
	}
	return &Section{path: s.Key(k), m: m, opts: s.opts, out: s.out}, true
}

// KeyPart renders one key of a key path as TOML would: bare when it can
// be, quoted otherwise.
func KeyPart(k string) string {
	bare := k != ""
	for _, c := range k {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			bare = false
			break
		}
	}
	if bare {
		return k
	}
	return strconv.Quote(k)
}

// TypeName names the TOML type of a decoded value, for messages that must
// not quote the value itself.
func TypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date/time"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

// HasSpaceOrControl tells whether s holds white space or a control
// character, which no URL written in a config file should: url.Parse
// takes a space in the path, and every request would then fail.
func HasSpaceOrControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
}
