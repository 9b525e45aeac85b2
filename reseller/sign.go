package reseller

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Names of the authentication parameters that travel in the query string.
const (
	ParamAccessKeyID = "accessKeyId"
	ParamNonce       = "nonce"
	ParamTimestamp   = "timestamp"
	ParamSign        = "sign"
)

// TimestampLayout is the layout of the timestamp parameter: Beijing wall-clock
// time followed by a literal "Z". The Z is a quirk of the API family and does
// not mean UTC.
const TimestampLayout = "2006-01-02T15:04:05Z"

// beijing is UTC+8 without daylight saving. A fixed zone needs no tz database,
// so signing works on minimal hosts and in scratch containers.
var beijing = time.FixedZone("UTC+8", 8*60*60)

// FormatTimestamp renders t as the API's timestamp parameter.
func FormatTimestamp(t time.Time) string {
	return t.In(beijing).Format(TimestampLayout)
}

// ParseTimestamp reads a timestamp parameter written by FormatTimestamp.
func ParseTimestamp(s string) (time.Time, error) {
	t, err := time.ParseInLocation(TimestampLayout, s, beijing)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q is not in the form %s (UTC+8): %w", s, TimestampLayout, err)
	}
	return t, nil
}

// StringToSign builds the message that is signed for a request to urlPath
// with the given parameters (the union of query and body parameters,
// including accessKeyId, nonce and timestamp but not sign).
//
// Values may be strings, integers, floats, json.Number-like fmt.Stringers,
// nested map[string]string or map[string]any (flattened PHP-style as
// key[sub]), and []string or []any (flattened as key[0], key[1] …). Empty
// strings and nils are dropped. Keys are sorted in byte order at every level,
// and a nested map's pairs stand at its parent key's place. Each pair is
// encoded as PHP's urlencode does, so that the result is byte-identical to
// what the API family's PHP, Node.js, Go and Python SDKs produce.
func StringToSign(urlPath string, params map[string]any) string {
	var b strings.Builder
	b.WriteString(urlPath)
	b.WriteByte('?')
	first := true
	appendPairs(&b, &first, "", params)
	return b.String()
}

// Sign returns the base64 (standard, padded) HMAC-SHA256 of stringToSign
// keyed with the access key secret.
func Sign(secret, stringToSign string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(stringToSign))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// SignatureEqual compares two signatures in constant time.
func SignatureEqual(a, b string) bool {
	return hmac.Equal([]byte(a), []byte(b))
}

func appendPairs(b *strings.Builder, first *bool, prefix string, params map[string]any) {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys) // byte order: Go compares strings bytewise
	for _, k := range keys {
		appendValue(b, first, joinKey(prefix, k), params[k])
	}
}

func joinKey(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "[" + k + "]"
}

func appendValue(b *strings.Builder, first *bool, key string, v any) {
	switch v := v.(type) {
	case nil:
		return
	case map[string]any:
		appendPairs(b, first, key, v)
		return
	case map[string]string:
		m := make(map[string]any, len(v))
		for k, s := range v {
			m[k] = s
		}
		appendPairs(b, first, key, m)
		return
	case []any:
		for i, e := range v {
			appendValue(b, first, joinKey(key, strconv.Itoa(i)), e)
		}
		return
	case []string:
		for i, e := range v {
			appendValue(b, first, joinKey(key, strconv.Itoa(i)), e)
		}
		return
	}
	s := paramString(v)
	if s == "" {
		return
	}
	if !*first {
		b.WriteByte('&')
	}
	*first = false
	b.WriteString(URLEncode(key))
	b.WriteByte('=')
	b.WriteString(URLEncode(s))
}

// paramString renders a scalar parameter the way the SDKs do: numbers as
// fmt.Sprint prints them, booleans as PHP's http_build_query does (1 and 0).
func paramString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case bool:
		if v {
			return "1"
		}
		return "0"
	case fmt.Stringer:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}

// URLEncode encodes s as PHP's urlencode does: A-Z a-z 0-9 - _ . are kept,
// a space becomes +, every other byte becomes %XX with upper-case hex.
func URLEncode(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) * 3 / 2)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
			b.WriteByte(c)
		case c == ' ':
			b.WriteByte('+')
		default:
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}
