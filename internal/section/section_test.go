package section

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"
)

// The secrets the tests put in sections; no message may quote them.
const (
	inlineSecret = "inline-S3CRET"
	fileSecret   = "file-S3CRET"
	envSecret    = "env-S3CRET"
)

func testOptions() Options {
	return Options{
		ReadFile: func(path string) ([]byte, error) {
			switch path {
			case "/secret":
				return []byte(fileSecret + "\r\n\n"), nil
			case "/empty":
				return []byte("\n"), nil
			}
			return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
		},
		LookupEnv: func(name string) (string, bool) {
			switch name {
			case "SECRET":
				return envSecret, true
			case "EMPTY":
				return "", true
			}
			return "", false
		},
	}
}

// messages renders a section's problems, checking that each is a *Error
// whose Error() is Key + ": " + Reason.
func messages(t *testing.T, s *Section) []string {
	t.Helper()
	var out []string
	for _, err := range s.Errors() {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%v is a %T, not a *Error", err, err)
		}
		if e.Error() != e.Key+": "+e.Reason {
			t.Errorf("Error() = %q; want Key: Reason", e.Error())
		}
		out = append(out, err.Error())
	}
	return out
}

func TestSecret(t *testing.T) {
	for _, tc := range []struct {
		name  string
		m     map[string]any
		opts  Options
		value string
		used  string
		set   bool
		errs  []string
		warns []string
	}{
		{name: "none", m: map[string]any{}},
		// Not warned about: that is the caller's (WarnInlineSecret).
		{name: "inline", m: map[string]any{"token": inlineSecret}, value: inlineSecret, used: "token", set: true},
		{name: "file, trailing line breaks dropped", m: map[string]any{"token_file": "/secret"}, value: fileSecret, used: "token_file", set: true},
		{name: "env", m: map[string]any{"token_env": "SECRET"}, value: envSecret, used: "token_env", set: true},
		{name: "inline and env", m: map[string]any{"token": inlineSecret, "token_env": "SECRET"}, set: true,
			errs: []string{"dns.cf.token: set more than once (dns.cf.token, dns.cf.token_env): keep one"}},
		{name: "all three, in form order", m: map[string]any{"token": "x", "token_file": "/secret", "token_env": "SECRET"}, set: true,
			errs: []string{"dns.cf.token: set more than once (dns.cf.token, dns.cf.token_file, dns.cf.token_env): keep one"}},
		{name: "inline empty", m: map[string]any{"token": ""}, used: "token", set: true,
			errs: []string{"dns.cf.token: must not be empty"}},
		{name: "inline not a string", m: map[string]any{"token": int64(42)}, used: "token", set: true,
			errs: []string{"dns.cf.token: must be a string"}},
		{name: "inline not a string, type named", m: map[string]any{"token": int64(42)}, opts: Options{NameTypes: true}, used: "token", set: true,
			errs: []string{"dns.cf.token: must be a string, not an integer"}},
		{name: "file path empty", m: map[string]any{"token_file": ""}, used: "token_file", set: true,
			errs: []string{"dns.cf.token_file: must be a file path"}},
		{name: "file path not a string", m: map[string]any{"token_file": true}, used: "token_file", set: true,
			errs: []string{"dns.cf.token_file: must be a string"}},
		{name: "file unreadable", m: map[string]any{"token_file": "/nope"}, used: "token_file", set: true,
			errs: []string{"dns.cf.token_file: cannot read the secret: open /nope: file does not exist"}},
		{name: "file empty", m: map[string]any{"token_file": "/empty"}, used: "token_file", set: true,
			errs: []string{"dns.cf.token_file: file /empty is empty"}},
		{name: "env name empty", m: map[string]any{"token_env": ""}, used: "token_env", set: true,
			errs: []string{"dns.cf.token_env: must be the name of an environment variable"}},
		{name: "env unset", m: map[string]any{"token_env": "UNSET"}, used: "token_env", set: true,
			errs: []string{"dns.cf.token_env: environment variable UNSET is not set"}},
		{name: "env empty", m: map[string]any{"token_env": "EMPTY"}, used: "token_env", set: true,
			errs: []string{"dns.cf.token_env: environment variable EMPTY is not set"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions()
			opts.NameTypes = tc.opts.NameTypes
			s := New("dns.cf", tc.m, opts)
			value, used, set := s.Secret("token")
			if value != tc.value || used != tc.used || set != tc.set {
				t.Errorf("Secret = %q, %q, %v; want %q, %q, %v", value, used, set, tc.value, tc.used, tc.set)
			}
			if got := messages(t, s); !slices.Equal(got, tc.errs) {
				t.Errorf("errors %q, want %q", got, tc.errs)
			}
			if got := s.Warnings(); !slices.Equal(got, tc.warns) {
				t.Errorf("warnings %q, want %q", got, tc.warns)
			}
			if s.Failed() != (len(tc.errs) > 0) {
				t.Errorf("Failed() = %v with errors %q", s.Failed(), tc.errs)
			}
			for _, msg := range append(messages(t, s), s.Warnings()...) {
				for _, secret := range []string{inlineSecret, fileSecret, envSecret} {
					if strings.Contains(msg, secret) {
						t.Errorf("%q quotes a secret", msg)
					}
				}
			}
		})
	}
}

// Resolve is for callers that read a form's value themselves: a
// non-string path or variable name comes in as "".
func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		form, v, value, err string
	}{
		{"token", inlineSecret, inlineSecret, ""},
		{"token", "", "", "x.token: must not be empty"},
		{"token_file", "/secret", fileSecret, ""},
		{"token_file", "", "", "x.token_file: must be a file path"},
		{"token_file", "/empty", "", "x.token_file: file /empty is empty"},
		{"token_env", "SECRET", envSecret, ""},
		{"token_env", "", "", "x.token_env: must be the name of an environment variable"},
		{"token_env", "UNSET", "", "x.token_env: environment variable UNSET is not set"},
	} {
		s := New("x", nil, testOptions())
		value, ok := s.Resolve("token", tc.form, tc.v)
		var got string
		if err := s.Err(); err != nil {
			got = err.Error()
		}
		if value != tc.value || ok != (tc.err == "") || got != tc.err {
			t.Errorf("Resolve(%q, %q) = %q, %v, error %q; want %q, error %q", tc.form, tc.v, value, ok, got, tc.value, tc.err)
		}
		if len(s.Warnings()) > 0 {
			t.Errorf("Resolve(%q) warned %q: warning is the caller's", tc.form, s.Warnings())
		}
	}
}

func TestFormsAndDuplicate(t *testing.T) {
	s := New("notify.ops", map[string]any{"k_env": "E", "k": "v", "other": 1}, Options{})
	if got := s.Forms("k"); !slices.Equal(got, []string{"k", "k_env"}) {
		t.Errorf("Forms = %q", got)
	}
	if got := s.Forms("absent"); got != nil {
		t.Errorf("Forms(absent) = %q", got)
	}
	s.FailDuplicate("k", []string{"k_env", "k"})
	want := "notify.ops.k: set more than once (notify.ops.k_env, notify.ops.k): keep one"
	if got := s.Err(); got == nil || got.Error() != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

func TestUnknown(t *testing.T) {
	s := New("api", map[string]any{"b": 1, "a": 1, "zz": 1, "c": 1}, Options{})
	known := []string{"a", "c"}
	s.Unknown(func(k string) bool { return slices.Contains(known, k) }, " (known here: a, c)")
	want := []string{"api.b: unknown key (known here: a, c)", "api.zz: unknown key (known here: a, c)"}
	if got := messages(t, s); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q (sorted)", got, want)
	}
}

func TestKeys(t *testing.T) {
	for _, tc := range []struct {
		quote bool
		k     string
		want  string
	}{
		{false, "token", "certificate[shop].token"},
		{false, "a.b", "certificate[shop].a.b"},
		{false, "", "certificate[shop]."},
		{true, "token", "certificate[shop].token"},
		{true, "a-b_9", "certificate[shop].a-b_9"},
		{true, "a.b", `certificate[shop]."a.b"`},
		{true, "", `certificate[shop].""`},
	} {
		s := New("certificate[shop]", nil, Options{QuoteKeys: tc.quote})
		if got := s.Key(tc.k); got != tc.want {
			t.Errorf("QuoteKeys %v: Key(%q) = %q, want %q", tc.quote, tc.k, got, tc.want)
		}
	}
}

func TestGetters(t *testing.T) {
	m := map[string]any{
		"s": "str", "b": true, "n": int64(7), "d": "1d12h", "empty": "", "zero": "0s", "neg": "-1s", "bad": "5 parsecs",
		"f": 1.5, "list": []any{"x"}, "t": map[string]any{"inner": int64(1)},
	}
	for _, nameTypes := range []bool{false, true} {
		s := New("daemon", m, Options{NameTypes: nameTypes})
		if v, ok := s.String("s"); v != "str" || !ok {
			t.Errorf("String = %q, %v", v, ok)
		}
		if v, ok := s.Bool("b"); !v || !ok {
			t.Errorf("Bool = %v, %v", v, ok)
		}
		if v, ok := s.Int("n"); v != 7 || !ok {
			t.Errorf("Int = %v, %v", v, ok)
		}
		d := time.Minute
		if !s.Duration("d", &d) || d != 36*time.Hour {
			t.Errorf("Duration = %v", d)
		}
		d = time.Minute
		if s.Duration("empty", &d) || s.Duration("absent", &d) || d != time.Minute {
			t.Errorf("an empty or absent duration changed the default to %v", d)
		}
		if _, ok := s.String("absent"); ok {
			t.Error("String(absent) ok")
		}
		if _, ok := s.Bool("absent"); ok {
			t.Error("Bool(absent) ok")
		}
		if _, ok := s.Int("absent"); ok {
			t.Error("Int(absent) ok")
		}
		if _, ok := s.Table("absent"); ok {
			t.Error("Table(absent) ok")
		}
		if s.Failed() {
			t.Fatalf("errors for good values: %v", s.Err())
		}
		s.String("n")
		s.Bool("s")
		s.Int("f")
		s.Duration("list", &d)
		s.Duration("zero", &d)
		s.Duration("neg", &d)
		s.Duration("bad", &d)
		s.Table("s")
		sub, ok := s.Table("t")
		if !ok || sub.Path() != "daemon.t" {
			t.Fatalf("Table = %v, %v", sub, ok)
		}
		sub.Bool("inner")
		want := []string{
			"daemon.n: must be a string",
			"daemon.s: must be true or false",
			"daemon.f: must be an integer",
			`daemon.list: must be a duration string such as "30s", "720h" or "30d"`,
			`daemon.zero: must be positive, got "0s"`,
			`daemon.neg: must be positive, got "-1s"`,
			`daemon.bad: invalid duration "5 parsecs": use numbers with units (ns, us, ms, s, m, h, d) such as "90s", "720h" or "30d"`,
			"daemon.s: must be a table",
			// A sub-table's problems go to the same list.
			"daemon.t.inner: must be true or false",
		}
		if nameTypes {
			for i, suffix := range []string{", not an integer", ", not a string", ", not a float", ", not an array", "", "", "", ", not a string", ", not an integer"} {
				want[i] += suffix
			}
		}
		if got := messages(t, s); !slices.Equal(got, want) {
			t.Errorf("NameTypes %v: got\n%s\nwant\n%s", nameTypes, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func TestErrAndWarnings(t *testing.T) {
	s := New("store", map[string]any{}, Options{})
	if s.Err() != nil || s.Errors() != nil || s.Warnings() != nil || s.Failed() {
		t.Fatal("a fresh section has findings")
	}
	s.Fail("a", "bad %d", 1)
	s.Fail("b", "worse")
	s.Warn("c", "unwise %s", "thing")
	err := s.Err()
	if err.Error() != "store.a: bad 1\nstore.b: worse" {
		t.Errorf("Err() = %q", err)
	}
	// The lead's re-filing: every problem reachable as a *Error.
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok || len(joined.Unwrap()) != 2 {
		t.Fatalf("Err() does not unwrap to the problems: %T", err)
	}
	var e *Error
	if !errors.As(joined.Unwrap()[1], &e) || e.Key != "store.b" || e.Reason != "worse" {
		t.Errorf("second problem: %+v", e)
	}
	if got := s.Warnings(); !slices.Equal(got, []string{"store.c: unwise thing"}) {
		t.Errorf("Warnings() = %q", got)
	}
	s.WarnInlineSecret("dsn")
	if got := s.Warnings()[1]; got != "store.dsn: a secret written in the config file; prefer dsn_file or dsn_env" {
		t.Errorf("WarnInlineSecret: %q", got)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0": 0, "90s": 90 * time.Second, "1h30m": 90 * time.Minute, "30d": 720 * time.Hour,
		"1d12h": 36 * time.Hour, "1.5d": 36 * time.Hour, "-1d": -24 * time.Hour, "+2m": 2 * time.Minute,
		// The cases of package daemon/config, whose parser this was.
		"720h": 720 * time.Hour, "90m": 90 * time.Minute, "1h30m5s": time.Hour + 30*time.Minute + 5*time.Second,
		"250ms": 250 * time.Millisecond, "-2d": -48 * time.Hour, "+1d": 24 * time.Hour, "2d3d": 5 * 24 * time.Hour,
		"1µs": time.Microsecond,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-", "d", "5", "1x", "1.2.3h", "999999999999d", "200000d200000d",
		"30", "30 d", "30days", "1w", ".d", "1..5d", "d30", "120000000d", "100000d100000d", "1d-2h"} {
		if got, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %s, want an error", in, got)
		} else if !strings.Contains(err.Error(), `"`+in+`"`) {
			t.Errorf("ParseDuration(%q): error %q does not quote the input", in, err)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "127.0.0.1": true, "127.8.9.10": true, "::1": true,
		"example.com": false, "10.0.0.1": false, "::": false, "": false, "localhost.example.com": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestHasSpaceOrControl(t *testing.T) {
	for s, want := range map[string]bool{"https://x/a": false, "https://x/a b": true, "https://x/\t": true, "https://x/\x7f": true, "": false} {
		if got := HasSpaceOrControl(s); got != want {
			t.Errorf("HasSpaceOrControl(%q) = %v", s, got)
		}
	}
}

func TestTypeName(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{"s", "a string"}, {int64(1), "an integer"}, {1.5, "a float"}, {true, "a boolean"}, {time.Time{}, "a date/time"},
		{[]map[string]any{}, "an array of tables"}, {[]any{}, "an array"}, {map[string]any{}, "a table"}, {int32(1), "int32"},
	} {
		if got := TypeName(tc.v); got != tc.want {
			t.Errorf("TypeName(%T) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
