package reseller

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
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
// including accessKeyId, nonce and timestamp but not sign), as the server
// recomputes it (reseller-api.md, "Authentication" and "What the server
// sees"):
//
//   - the parameters are taken in their canonical form (see Canonical):
//     strings trimmed, empty strings and nils left out, booleans as 1 and
//     0, numbers as PHP prints them, so that no caller can sign a value the
//     server will not see;
//   - nested maps and lists are flattened PHP-style, key[sub] and key[0];
//   - keys are sorted as PHP's ksort does, at every level (byte order,
//     but integer keys by value: k[2] before k[10]), and a nested map's
//     pairs stand at its parent key's place;
//   - each pair is enc(key) + "=" + enc(value) with PHP's urlencode (see
//     URLEncode), pairs joined by "&", after urlPath and "?".
//
// The result is byte-identical to what the API family's PHP SDK signs and
// its servers check. When Canonical refuses params (invalid UTF-8, NaN, an
// unsupported type …), StringToSign returns "", which no request's string
// to sign equals: call Canonical first to learn why, as Client.Do does.
func StringToSign(urlPath string, params map[string]any) string {
	c, err := Canonical(params)
	if err != nil {
		return ""
	}
	return stringToSign(urlPath, c)
}

// UntrimmedStringToSign is StringToSign without the trimming: strings are
// signed as given (empty ones and nils are still left out). It is what a
// client that does not trim signs — dcvd before it knew of the servers'
// input middleware signed a CSR as …REQUEST-----%0A — and no server of the
// family accepts it for a value that has surrounding whitespace. It is not
// a way to sign: the sandbox uses it only to tell such a client why its
// signature is refused. It returns "" where StringToSign does.
func UntrimmedStringToSign(urlPath string, params map[string]any) string {
	c, err := canonicalizer{trim: false}.root(params)
	if err != nil {
		return ""
	}
	return stringToSign(urlPath, c)
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
