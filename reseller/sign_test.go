package reseller

import (
	"encoding/json"
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
			name:   "numbers as fmt.Sprint prints them",
			params: map[string]any{"i": 42, "neg": -7, "u": uint8(3), "f": 0.5, "big": int64(1) << 40},
			want:   "/p?big=1099511627776&f=0.5&i=42&neg=-7&u=3",
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
