package reseller

import (
	"encoding/json"
	"math"
	"testing"
	"time"
)

// The expected strings below were written by hand from the rules of the
// reference (reseller-api.md, "Authentication"), and the expected signatures
// computed outside Go with
//
//	printf '%s' "$STRING" | openssl dgst -sha256 -hmac "$SECRET" -binary | base64
//
// Never regenerate them with the code under test.

const (
	vectorSecret = "s3cr3t-K3y/+="
	vectorPath   = "/api/v1/certificate/reissue"
	vectorCSR    = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB+ab/cd==\n-----END CERTIFICATE REQUEST-----"

	vectorStringToSign = "/api/v1/certificate/reissue?" +
		"accessKeyId=AKID" +
		"&contact_email=a+b%7Ec%40x.com" +
		"&cost=4208.01" +
		"&csr=-----BEGIN+CERTIFICATE+REQUEST-----%0AMIIB%2Bab%2Fcd%3D%3D%0A-----END+CERTIFICATE+REQUEST-----" +
		"&domain_dcv%5B%2A.example.com%5D=dns" +
		"&domain_dcv%5Bexample2.com%5D=http" +
		"&domain_dcv%5Bsub.example4.com%5D=admin%40example4.com" +
		"&nonce=0123456789abcdef0123456789abcdef" +
		"&renew=0" +
		"&service_id=o91bZ" +
		"&timestamp=2024-05-06T07%3A08%3A09Z" +
		"&unique_id=azgZqJGX"
	vectorSign = "vLIirvZzgCfbaN6KYP9pZXiRy55dGNZq+fhvIyFyF4Y="
)

// The canonical vectors: values as a caller may hold them (a CSR ending in
// a newline, surrounding spaces and tabs, empty and whitespace-only values,
// a nil, booleans, floats, a list of 12) and the string the server signs
// after its middleware trimmed the strings and dropped the empty ones
// (reseller-api.md, "What the server sees"), written out by hand: no %0A
// after …REQUEST-----, renew=1, the whitespace-only values absent, floats
// as PHP's http_build_query prints them with precision 14, the list in
// numeric order (k[9] before k[10]). Signatures by openssl as above; PHP
// 8.2's http_build_query over the trimmed input gives the same strings.
const (
	canonicalReissueStringToSign = "/api/v1/certificate/reissue?" +
		"accessKeyId=AKID" +
		"&contact_email=a+b%7Ec%40x.com" +
		"&cost=4208.01" +
		"&csr=-----BEGIN+CERTIFICATE+REQUEST-----%0AMIIB%2Bab%2Fcd%3D%3D%0A-----END+CERTIFICATE+REQUEST-----" +
		"&domain_dcv%5B%2A.example.com%5D=dns" +
		"&domain_dcv%5Bexample2.com%5D=http" +
		"&nonce=0123456789abcdef0123456789abcdef" +
		"&renew=1" +
		"&service_id=o91bZ" +
		"&timestamp=2024-05-06T07%3A08%3A09Z" +
		"&unique_id=azgZqJGX"
	canonicalReissueSign = "aKJ3ln+0l8iNQoqGKdv6LUv6mqe5aWs+1KecDVnxx1Y="

	canonicalNumbersStringToSign = "/api/v1/certificate/create?" +
		"accessKeyId=AKID" +
		"&big=1000000" +
		"&cost=4208.01" +
		"&e13=10000000000000" +
		"&e14=1.0E%2B14" +
		"&half_even=10000000000000" +
		"&huge=1.0E%2B15" +
		"&l%5B0%5D=a&l%5B1%5D=b&l%5B2%5D=c&l%5B3%5D=d&l%5B4%5D=e&l%5B5%5D=f" +
		"&l%5B6%5D=g&l%5B7%5D=h&l%5B8%5D=i&l%5B9%5D=j&l%5B10%5D=k&l%5B11%5D=l" +
		"&neg0=0" +
		"&nonce=0123456789abcdef0123456789abcdef" +
		"&off=0" +
		"&on=1" +
		"&small=0.0001" +
		"&sum=0.3" +
		"&timestamp=2024-05-06T07%3A08%3A09Z" +
		"&tiny=1.0E-5"
	canonicalNumbersSign = "9tRrNXSjtugaa5I/fb63p4G9UJ3sVMGMAYi5emcMMuk="
)

// canonicalReissueParams are the business parameters of the canonical
// reissue vector, untrimmed, as a caller holds them.
func canonicalReissueParams() map[string]any {
	return map[string]any{
		"unique_id":     "  azgZqJGX\t",
		"service_id":    "o91bZ",
		"csr":           vectorCSR + "\n", // as pem.EncodeToMemory writes it
		"contact_email": " a b~c@x.com \n",
		"notify_url":    "   ", // whitespace only: absent
		"organization":  "",    // empty: absent
		"city":          nil,   // nil: absent
		"renew":         true,
		"cost":          4208.01,
		"domain_dcv": map[string]any{
			"*.example.com":     "dns",
			"example2.com":      " http\n",
			"empty.example.com": " \t", // whitespace only: absent
		},
	}
}

// canonicalNumbersParams are the business parameters of the numbers
// vector.
func canonicalNumbersParams() map[string]any {
	return map[string]any{
		"big":       1e6,
		"huge":      1e15,
		"e14":       1e14, // 15 digits before the point: exponential
		"e13":       1e13,
		"tiny":      1e-5,
		"small":     0.0001,
		"cost":      4208.01,
		"sum":       0.1 + 0.2,
		"neg0":      math.Copysign(0, -1),
		"half_even": 10000000000000.5, // a tie at 14 digits: to even
		"on":        true,
		"off":       false,
		"l":         []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"},
	}
}

func withAuth(p map[string]any) map[string]any {
	p["accessKeyId"] = "AKID"
	p["nonce"] = "0123456789abcdef0123456789abcdef"
	p["timestamp"] = "2024-05-06T07:08:09Z"
	return p
}

func TestStringToSignCanonicalVectors(t *testing.T) {
	tests := []struct {
		name, path string
		params     map[string]any
		want, sign string
	}{
		{"reissue: trimmed, empty values absent, booleans", vectorPath, withAuth(canonicalReissueParams()), canonicalReissueStringToSign, canonicalReissueSign},
		{"numbers and a list of 12", "/api/v1/certificate/create", withAuth(canonicalNumbersParams()), canonicalNumbersStringToSign, canonicalNumbersSign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := StringToSign(tt.path, tt.params)
			if got != tt.want {
				t.Fatalf("StringToSign:\n got %s\nwant %s", got, tt.want)
			}
			if s := Sign(vectorSecret, got); s != tt.sign {
				t.Errorf("Sign = %s, want the openssl-computed %s", s, tt.sign)
			}
		})
	}
}

// UntrimmedStringToSign signs strings as given, which is what a client that
// does not trim does (the sandbox's diagnosis): only "" and nil are left
// out.
func TestUntrimmedStringToSign(t *testing.T) {
	p := map[string]any{"csr": "A\n", "b": " ", "c": "", "d": nil, "e": map[string]any{"f": "\tg"}, "n": 1e6}
	if got, want := UntrimmedStringToSign("/p", p), "/p?b=+&csr=A%0A&e%5Bf%5D=%09g&n=1000000"; got != want {
		t.Errorf("UntrimmedStringToSign:\n got %s\nwant %s", got, want)
	}
	if got, want := StringToSign("/p", p), "/p?csr=A&e%5Bf%5D=g&n=1000000"; got != want {
		t.Errorf("StringToSign:\n got %s\nwant %s", got, want)
	}
}

// StringToSign cannot sign what cannot be sent: it returns "", which no
// request's string to sign equals (it always begins with the path and ?).
func TestStringToSignRefusesWhatCanonicalRefuses(t *testing.T) {
	for _, p := range []map[string]any{
		{"a": "ex\xff"},
		{"a": math.NaN()},
		{"a": struct{}{}},
	} {
		if got := StringToSign("/p", p); got != "" {
			t.Errorf("StringToSign(%#v) = %q, want \"\"", p, got)
		}
	}
}

func vectorParams() map[string]any {
	return map[string]any{
		"accessKeyId": "AKID",
		"nonce":       "0123456789abcdef0123456789abcdef",
		"timestamp":   "2024-05-06T07:08:09Z",
		"unique_id":   "azgZqJGX",
		"service_id":  "o91bZ",
		"renew":       0,
		"cost":        4208.01,
		"domain_dcv": map[string]any{
			"*.example.com":    "dns",
			"example2.com":     "http",
			"sub.example4.com": "admin@example4.com",
		},
		"contact_email": "a b~c@x.com",
		"csr":           vectorCSR,
		"notify_url":    "",  // empty: dropped
		"organization":  nil, // nil: dropped
	}
}

func TestStringToSignVector(t *testing.T) {
	if got := StringToSign(vectorPath, vectorParams()); got != vectorStringToSign {
		t.Fatalf("StringToSign:\n got %s\nwant %s", got, vectorStringToSign)
	}
}

func TestStringToSignVectorTypedVariants(t *testing.T) {
	// The same request, with the value types a caller or a JSON decoder may
	// produce, must sign identically.
	p := vectorParams()
	p["domain_dcv"] = map[string]string{
		"*.example.com":    "dns",
		"example2.com":     "http",
		"sub.example4.com": "admin@example4.com",
	}
	p["renew"] = json.Number("0")
	p["cost"] = json.Number("4208.01")
	if got := StringToSign(vectorPath, p); got != vectorStringToSign {
		t.Fatalf("StringToSign with map[string]string and json.Number:\n got %s\nwant %s", got, vectorStringToSign)
	}
}

func TestSignVector(t *testing.T) {
	tests := []struct {
		name, secret, msg, want string
	}{
		{"reissue vector", vectorSecret, vectorStringToSign, vectorSign},
		// The widely published example value, base64 of
		// f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8.
		{"quick brown fox", "key", "The quick brown fox jumps over the lazy dog", "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sign(tt.secret, tt.msg); got != tt.want {
				t.Errorf("Sign = %s, want %s", got, tt.want)
			}
		})
	}
	if Sign(vectorSecret+"x", vectorStringToSign) == vectorSign {
		t.Error("a different secret gives the same signature")
	}
	if !SignatureEqual(vectorSign, vectorSign) || SignatureEqual(vectorSign, vectorSign[:len(vectorSign)-2]+"A=") {
		t.Error("SignatureEqual does not tell equal from different signatures")
	}
}

func TestURLEncode(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"ABCXYZabcxyz0189", "ABCXYZabcxyz0189"},
		{"-_.", "-_."},
		{" ", "+"},
		{"a b", "a+b"},
		{"~", "%7E"},
		{"*", "%2A"},
		{"@", "%40"},
		{"[]", "%5B%5D"},
		{"+/=", "%2B%2F%3D"},
		{"%&?#:;,", "%25%26%3F%23%3A%3B%2C"},
		{"!'()\"<>\\^`{|}$", "%21%27%28%29%22%3C%3E%5C%5E%60%7B%7C%7D%24"},
		{"\n\r\t\x00\x1f\x7f", "%0A%0D%09%00%1F%7F"},
		{"\x80\xff", "%80%FF"},
		{"上海", "%E4%B8%8A%E6%B5%B7"},
		{"é", "%C3%A9"},
		{"😀", "%F0%9F%98%80"},
	}
	for _, tt := range tests {
		if got := URLEncode(tt.in); got != tt.want {
			t.Errorf("URLEncode(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStringToSignRules(t *testing.T) {
	tests := []struct {
		name   string
		params map[string]any
		want   string
	}{
		{
			name:   "empty",
			params: map[string]any{},
			want:   "/p?",
		},
		{
			// Byte order: uppercase before lowercase; a nested map's pairs
			// stand at its parent key's place: "a" < "aB" < "a_b", although
			// the flattened "a[x]" would sort after "aB" ('[' > 'B').
			name: "byte order and nesting",
			params: map[string]any{
				"z":   "5",
				"a_b": "2",
				"aB":  "3",
				"Z":   "4",
				"a":   map[string]any{"y": "1", "X": "0"},
			},
			want: "/p?Z=4&a%5BX%5D=0&a%5By%5D=1&aB=3&a_b=2&z=5",
		},
		{
			name:   "booleans",
			params: map[string]any{"t": true, "f": false},
			want:   "/p?f=0&t=1",
		},
		{
			name:   "numbers as PHP prints them",
			params: map[string]any{"i": 42, "neg": -7, "u": uint8(3), "f": 0.5, "big": int64(1) << 40, "f32": float32(0.25), "m": 1e6},
			want:   "/p?big=1099511627776&f=0.5&f32=0.25&i=42&m=1000000&neg=-7&u=3",
		},
		{
			// PHP's trim set only: U+00A0 and U+3000 stay.
			name:   "trimmed as PHP's trim does",
			params: map[string]any{"a": " \t\n\r\x00\x0bx y\x0b\x00\r\n\t ", "b": "\u00a0z\u3000", "c": "\f"},
			want:   "/p?a=x+y&b=%C2%A0z%E3%80%80&c=%0C",
		},
		{
			name:   "whitespace-only values are absent at every level",
			params: map[string]any{"a": " ", "b": map[string]any{"c": "\n", "d": []string{"\t", ""}}, "e": []any{" ", nil}, "f": "1"},
			want:   "/p?f=1",
		},
		{
			// PHP's json_decode turns "10" and "9" into integer keys, and
			// its ksort orders them by value; other keys in byte order.
			name:   "integer keys by value",
			params: map[string]any{"m": map[string]any{"10": "x", "9": "y", "b": "z", "-5": "w"}},
			want:   "/p?m%5B-5%5D=w&m%5B9%5D=y&m%5B10%5D=x&m%5Bb%5D=z",
		},
		{
			name:   "json.Number as json_decode reads it",
			params: map[string]any{"a": json.Number("1e6"), "b": json.Number("-0"), "c": json.Number("1.0E-5"), "d": json.Number("100.50")},
			want:   "/p?a=1000000&b=0&c=1.0E-5&d=100.5",
		},
		{
			name:   "string slice flattened, empty element dropped at its index",
			params: map[string]any{"l": []string{"x", "", "y"}},
			want:   "/p?l%5B0%5D=x&l%5B2%5D=y",
		},
		{
			name:   "any slice and deep nesting",
			params: map[string]any{"l": []any{"a", nil, map[string]any{"k": "v"}}},
			want:   "/p?l%5B0%5D=a&l%5B2%5D%5Bk%5D=v",
		},
		{
			name:   "empty strings and nils dropped at every level",
			params: map[string]any{"a": "", "b": nil, "c": map[string]any{"d": "", "e": nil}, "f": "1"},
			want:   "/p?f=1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StringToSign("/p", tt.params); got != tt.want {
				t.Errorf("StringToSign:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestFormatTimestamp(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Date(2024, 5, 5, 23, 8, 9, 0, time.UTC), "2024-05-06T07:08:09Z"},
		{time.Date(2024, 12, 31, 16, 0, 0, 0, time.UTC), "2025-01-01T00:00:00Z"},
		// The zone of the input does not matter, only the instant.
		{time.Date(2024, 5, 6, 9, 8, 9, 0, time.FixedZone("CEST", 2*3600)), "2024-05-06T15:08:09Z"},
		// Sub-second parts are cut, not rounded.
		{time.Date(2024, 5, 5, 23, 8, 9, 999_999_999, time.UTC), "2024-05-06T07:08:09Z"},
	}
	for _, tt := range tests {
		if got := FormatTimestamp(tt.in); got != tt.want {
			t.Errorf("FormatTimestamp(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseTimestamp(t *testing.T) {
	want := time.Date(2024, 5, 5, 23, 8, 9, 0, time.UTC)
	got, err := ParseTimestamp("2024-05-06T07:08:09Z")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(want) {
		t.Errorf("ParseTimestamp = %s, want %s (the Z is Beijing time, not UTC)", got.UTC(), want)
	}
	if back := FormatTimestamp(got); back != "2024-05-06T07:08:09Z" {
		t.Errorf("round trip gives %s", back)
	}
	for _, bad := range []string{"", "2024-05-06 07:08:09", "2024-05-06T07:08:09+08:00", "2024-13-06T07:08:09Z", "yesterday"} {
		if _, err := ParseTimestamp(bad); err == nil {
			t.Errorf("ParseTimestamp(%q) succeeded", bad)
		}
	}
}
