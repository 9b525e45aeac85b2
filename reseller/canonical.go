package reseller

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds the canonical form of a request's parameters: the
// parameters as a server of the API family sees them, which is therefore
// what dcvd signs AND sends (reseller-api.md, "What the server sees").
//
// The family's servers are PHP applications. Before the application reads a
// request, the framework's input middleware trims every string (TrimStrings)
// and turns empty strings into null (ConvertEmptyStringsToNull); the server
// then recomputes the signature over that input with http_build_query and a
// recursive ksort. A value signed as the client had it rather than as the
// server sees it — a CSR ending in "\n" is the everyday case — fails the
// signature check. So the one canonical form below is used for both: the
// JSON body and the query carry exactly the values that were signed.

// phpTrimSet is what PHP's trim() removes by default: space, \t, \n, \r,
// \0 and \x0B. Other Unicode spaces (U+00A0, U+3000 …) are kept, as PHP
// keeps them.
const phpTrimSet = " \t\n\r\x00\x0b"

func trimPHP(s string) string { return strings.Trim(s, phpTrimSet) }

// Canonical returns params in their canonical form, the form that is
// signed and sent, or an error naming the first parameter that cannot be
// sent (nothing must be sent then):
//
//   - strings are trimmed as PHP's trim does; a string empty after trimming
//     and a nil are left out, as the server would see null and
//     http_build_query skips nulls; a nested map or list whose values all
//     vanish is left out too (http_build_query leaves out empty arrays);
//   - booleans become the integers 1 and 0 (json.Number "1" and "0"), as
//     http_build_query writes them;
//   - integers are written in decimal, floats as PHP prints them with
//     precision 14 (see phpFloat: 1000000, 4208.01, 0.3 for 0.1+0.2,
//     1.0E-5, 1.0E+15); both become a json.Number holding that text, which
//     PHP's json_decode reads back to a value it prints the same way;
//     a json.Number is read as json_decode would read it (an integer
//     literal as an integer, anything else as a float) and rewritten so;
//     NaN and infinities are refused;
//   - strings and keys must be valid UTF-8: invalid bytes cannot survive
//     a JSON body (they become U+FFFD), so the server would sign other
//     bytes than the client;
//   - keys are kept as they are (the middleware trims values, not keys);
//     keys that PHP's ksort cannot order the way the signer does are
//     refused (see checkKeyOrder).
//
// Values may be strings, booleans, Go integers and floats, json.Number,
// map[string]any, map[string]string, []any and []string, nested at will.
// The result holds strings, json.Numbers, map[string]any and []any only; a
// list from which elements were left out becomes a map from the remaining
// indexes ("0", "2" …), so that the elements keep the indexes they are
// signed with (k[0], k[2]) when the server decodes the JSON object back
// into a PHP array. Canonical(Canonical(p)) equals Canonical(p).
func Canonical(params map[string]any) (map[string]any, error) {
	return canonicalizer{trim: true}.root(params)
}

// canonicalizer builds the canonical form. trim is false only for
// UntrimmedStringToSign, which models a client that does not trim.
type canonicalizer struct{ trim bool }

func (c canonicalizer) root(params map[string]any) (map[string]any, error) {
	out, err := c.object("", params)
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = map[string]any{}
	}
	return out, nil
}

// object canonicalises a map at path ("" for the top level). It returns
// nil when nothing is left.
func (c canonicalizer) object(path string, m map[string]any) (map[string]any, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first error is the same on every run
	var out map[string]any
	for _, k := range keys {
		p := joinKey(path, k)
		if !utf8.ValidString(k) {
			return nil, paramError(p, "invalid UTF-8 in the name")
		}
		if _, isInt := phpIntKey(k); !isInt && isPHPNumeric(k) {
			// PHP 8 compares numeric strings ("1.5", "007", " 7") with
			// each other and with integer keys as numbers, ties and all;
			// reproducing that order exactly is not worth it for names
			// no request has.
			return nil, paramError(p, "the name is a numeric string, which the server's ksort orders as a number: use a plain name or a canonical integer")
		}
		v, keep, err := c.value(p, m[k])
		if err != nil {
			return nil, err
		}
		if !keep {
			continue
		}
		if out == nil {
			out = make(map[string]any, len(m))
		}
		out[k] = v
	}
	if out == nil {
		return nil, nil
	}
	if err := checkKeyOrder(path, out); err != nil {
		return nil, err
	}
	return out, nil
}

// value canonicalises one value at path; keep is false when it is left out.
func (c canonicalizer) value(path string, v any) (_ any, keep bool, _ error) {
	switch v := v.(type) {
	case nil:
		return nil, false, nil
	case string:
		if !utf8.ValidString(v) {
			return nil, false, paramError(path, "invalid UTF-8")
		}
		if c.trim {
			v = trimPHP(v)
		}
		return v, v != "", nil
	case bool:
		if v {
			return json.Number("1"), true, nil
		}
		return json.Number("0"), true, nil
	case json.Number:
		if v == "" {
			return nil, false, nil
		}
		s, err := phpNumber(string(v))
		if err != nil {
			return nil, false, paramError(path, "%v", err)
		}
		return json.Number(s), true, nil
	case int:
		return intNumber(int64(v)), true, nil
	case int8:
		return intNumber(int64(v)), true, nil
	case int16:
		return intNumber(int64(v)), true, nil
	case int32:
		return intNumber(int64(v)), true, nil
	case int64:
		return intNumber(v), true, nil
	case uint:
		return uintNumber(path, uint64(v))
	case uint8:
		return uintNumber(path, uint64(v))
	case uint16:
		return uintNumber(path, uint64(v))
	case uint32:
		return uintNumber(path, uint64(v))
	case uint64:
		return uintNumber(path, v)
	case float32:
		return floatNumber(path, float64(v))
	case float64:
		return floatNumber(path, v)
	case map[string]any:
		m, err := c.object(path, v)
		return m, m != nil, err
	case map[string]string:
		m := make(map[string]any, len(v))
		for k, s := range v {
			m[k] = s
		}
		o, err := c.object(path, m)
		return o, o != nil, err
	case []any:
		return c.list(path, v)
	case []string:
		l := make([]any, len(v))
		for i, s := range v {
			l[i] = s
		}
		return c.list(path, l)
	}
	return nil, false, paramError(path, "unsupported type %T", v)
}

// list canonicalises a list: a []any when every element is kept, else a
// map from the kept elements' indexes, so that they keep their indexes.
func (c canonicalizer) list(path string, l []any) (any, bool, error) {
	out := make([]any, len(l))
	kept := 0
	for i, e := range l {
		v, keep, err := c.value(joinKey(path, strconv.Itoa(i)), e)
		if err != nil {
			return nil, false, err
		}
		if keep {
			out[i] = v
			kept++
		}
	}
	switch kept {
	case 0:
		return nil, false, nil
	case len(l):
		return out, true, nil
	}
	m := make(map[string]any, kept)
	for i, v := range out {
		if v != nil {
			m[strconv.Itoa(i)] = v
		}
	}
	return m, true, nil
}

func intNumber(i int64) json.Number { return json.Number(strconv.FormatInt(i, 10)) }

func uintNumber(path string, u uint64) (any, bool, error) {
	if u > math.MaxInt64 {
		// PHP would read it as a float and sign 1.844674407371E+19: the
		// integer would silently lose its last digits.
		return nil, false, paramError(path, "%d is beyond PHP's integer range", u)
	}
	return intNumber(int64(u)), true, nil
}

func floatNumber(path string, f float64) (any, bool, error) {
	s, err := phpFloat(f)
	if err != nil {
		return nil, false, paramError(path, "%v", err)
	}
	return json.Number(s), true, nil
}

// phpPrecision is PHP's default precision ini setting, which
// http_build_query uses for floats.
const phpPrecision = 14

// phpFloat formats f as PHP's http_build_query does with precision = 14:
// spprintf's "%.*G", that is php_gcvt(f, 14, '.', 'E'). zend_dtoa (mode 2)
// gives at most 14 significant digits, correctly rounded (ties to even),
// trailing zeros stripped; strconv's 'e' format rounds the same way. The
// exponential form is used when php_gcvt's rule
//
//	decpt < 0 ? decpt < -3 : decpt > ndigit
//
// says so, decpt being the position of the decimal point (0.0001 has
// decpt -3, 1e-5 has -4, 1e14 has 15), and is written with one digit
// before the point (".0" when it is alone), a signed exponent without
// leading zeros: 1.0E-5, 1.2345E+20, 1.0E+15.
//
// Negative zero is written "0", not PHP's "-0": dcvd sends the text it
// signs, and PHP's json_decode reads a JSON -0 as the integer 0.
func phpFloat(f float64) (string, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return "", fmt.Errorf("%v is not a finite number", f)
	}
	if f == 0 {
		return "0", nil
	}
	s := strconv.FormatFloat(f, 'e', phpPrecision-1, 64) // -d.ddddddddddddde±dd
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	mant, expText, _ := strings.Cut(s, "e")
	exp, err := strconv.Atoi(expText)
	if err != nil {
		return "", fmt.Errorf("formatting %v: %w", f, err)
	}
	digits := strings.TrimRight(strings.Replace(mant, ".", "", 1), "0") // never empty: f != 0
	decpt := exp + 1

	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	switch {
	case decpt < 0 && decpt < -3, decpt >= 0 && decpt > phpPrecision:
		b.WriteByte(digits[0])
		b.WriteByte('.')
		if len(digits) == 1 {
			b.WriteByte('0')
		} else {
			b.WriteString(digits[1:])
		}
		b.WriteByte('E')
		if e := decpt - 1; e < 0 {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(-e))
		} else {
			b.WriteByte('+')
			b.WriteString(strconv.Itoa(e))
		}
	case decpt <= 0:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", -decpt))
		b.WriteString(digits)
	case len(digits) <= decpt:
		b.WriteString(digits)
		b.WriteString(strings.Repeat("0", decpt-len(digits)))
	default:
		b.WriteString(digits[:decpt])
		b.WriteByte('.')
		b.WriteString(digits[decpt:])
	}
	return b.String(), nil
}

// phpNumber rewrites a JSON number as the server prints it after
// json_decode: an integer literal within PHP's integer range as an
// integer (-0 is 0), anything else as a float (phpFloat).
func phpNumber(n string) (string, error) {
	if n == "" || !(n[0] == '-' || '0' <= n[0] && n[0] <= '9') || !json.Valid([]byte(n)) {
		return "", fmt.Errorf("%q is not a number", n)
	}
	if !strings.ContainsAny(n, ".eE") {
		if i, err := strconv.ParseInt(n, 10, 64); err == nil {
			return strconv.FormatInt(i, 10), nil
		}
		// Beyond int64: json_decode makes it a float.
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil {
		return "", fmt.Errorf("%s is not a finite number", n)
	}
	return phpFloat(f)
}

// phpIntKey reports whether PHP turns the array key k into an integer
// key, and which: a canonical decimal integer within int64 ("0", "10",
// "-5"; not "010", "-0", "+1" or " 1").
func phpIntKey(k string) (int64, bool) {
	d := strings.TrimPrefix(k, "-")
	if d == "" || len(d) > 19 || d[0] == '0' && (len(d) > 1 || len(k) > 1) {
		return 0, false
	}
	for i := 0; i < len(d); i++ {
		if d[i] < '0' || d[i] > '9' {
			return 0, false
		}
	}
	i, err := strconv.ParseInt(k, 10, 64)
	return i, err == nil
}

// isPHPNumeric reports whether PHP 8's is_numeric holds for s: optional
// leading and trailing whitespace (" \t\n\r\v\f"), an optional sign,
// digits with an optional fraction (or a fraction alone), an optional
// exponent.
func isPHPNumeric(s string) bool {
	const ws = " \t\n\r\v\f"
	s = strings.TrimLeft(s, ws)
	s = strings.TrimRight(s, ws)
	if s != "" && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	digits := func() int {
		n := 0
		for n < len(s) && '0' <= s[n] && s[n] <= '9' {
			n++
		}
		s = s[n:]
		return n
	}
	n := digits()
	if s != "" && s[0] == '.' {
		s = s[1:]
		n += digits()
	}
	if n == 0 {
		return false
	}
	if s != "" && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s != "" && (s[0] == '+' || s[0] == '-') {
			s = s[1:]
		}
		if digits() == 0 {
			return false
		}
	}
	return s == ""
}

// phpKeyCompare orders two keys of one level as PHP 8's ksort does once
// JSON decoding has turned canonical integer strings into integer keys:
// integer keys by value (9 before 10, so k[2] before k[10]), other keys in
// byte order, and an integer key against a string key by the integer's
// decimal text in byte order (PHP 8's int-to-non-numeric-string
// comparison). Numeric non-integer names are refused before this is used.
func phpKeyCompare(a, b string) int {
	ai, aInt := phpIntKey(a)
	bi, bInt := phpIntKey(b)
	if aInt && bInt {
		switch {
		case ai < bi:
			return -1
		case ai > bi:
			return 1
		}
		return 0
	}
	// A canonical integer key's text is the integer's decimal text.
	return strings.Compare(a, b)
}

// checkKeyOrder refuses a level whose keys phpKeyCompare cannot sort
// consistently. Integer keys compare by value among themselves but by text
// with string keys, which is not transitive: 9 < 10 by value, 10 < "1a"
// and "1a" < 9 by text. PHP's ksort then gives an order that depends on
// the keys' arrival (PHP 8.2 sorts [9, 10, "1a"] as given but [10, 9,
// "1a"] as ["1a", 9, 10]), which no signer can know. The order is
// consistent when, for every string key, the integer keys whose text is
// below it are exactly the smallest integer keys by value.
func checkKeyOrder(path string, m map[string]any) error {
	var ints []int64
	var strs []string
	for k := range m {
		if i, ok := phpIntKey(k); ok {
			ints = append(ints, i)
		} else {
			strs = append(strs, k)
		}
	}
	if len(ints) == 0 || len(strs) == 0 {
		return nil
	}
	slices.Sort(ints)
	texts := make([]string, len(ints)) // by value
	for i, n := range ints {
		texts[i] = strconv.FormatInt(n, 10)
	}
	// prefixMax[i]: the greatest text among the i smallest integers;
	// suffixMin[i]: the least text among the others.
	prefixMax := make([]string, len(texts)+1)
	for i, t := range texts {
		prefixMax[i+1] = max(prefixMax[i], t)
	}
	suffixMin := make([]string, len(texts)+1)
	for i := len(texts) - 1; i >= 0; i-- {
		suffixMin[i] = texts[i]
		if i+1 < len(texts) {
			suffixMin[i] = min(suffixMin[i+1], texts[i])
		}
	}
	byText := slices.Clone(texts)
	slices.Sort(byText)
	sort.Strings(strs) // the error names the same key on every run
	for _, s := range strs {
		below, _ := slices.BinarySearch(byText, s) // integer keys whose text sorts before s
		if below > 0 && prefixMax[below] > s || below < len(texts) && suffixMin[below] < s {
			where := "the top level"
			if path != "" {
				where = quotePath(path)
			}
			return fmt.Errorf("parameters at %s: integer keys and the key %s have no order that PHP's ksort keeps (it compares integers by value but an integer and a string as text); rename the key",
				where, quotePath(s))
		}
	}
	return nil
}

// paramError names the parameter at path; the path is escaped, as it may
// hold any bytes.
func paramError(path, format string, args ...any) error {
	return fmt.Errorf("parameter %s: %s", quotePath(path), fmt.Sprintf(format, args...))
}

func quotePath(path string) string {
	return `"` + sanitizeReplyText(path, 200) + `"`
}

// stringToSign builds the string to sign from canonical parameters.
func stringToSign(urlPath string, canonical map[string]any) string {
	var b strings.Builder
	b.WriteString(urlPath)
	b.WriteByte('?')
	first := true
	appendPairs(&b, &first, "", canonical)
	return b.String()
}

// appendPairs writes the pairs of a canonical value at key: a map's in
// PHP's ksort order, applied at every level (a nested map's pairs stand at
// its parent key's place), a list's by index.
func appendPairs(b *strings.Builder, first *bool, key string, v any) {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, phpKeyCompare)
		for _, k := range keys {
			appendPairs(b, first, joinKey(key, k), v[k])
		}
	case []any:
		for i, e := range v {
			appendPairs(b, first, joinKey(key, strconv.Itoa(i)), e)
		}
	case string:
		appendPair(b, first, key, v)
	case json.Number:
		appendPair(b, first, key, string(v))
	}
}

func appendPair(b *strings.Builder, first *bool, key, value string) {
	if !*first {
		b.WriteByte('&')
	}
	*first = false
	b.WriteString(URLEncode(key))
	b.WriteByte('=')
	b.WriteString(URLEncode(value))
}

func joinKey(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "[" + k + "]"
}
