package reseller

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// The expected texts below follow PHP's rules as the reference states them
// ("What the server sees"): php_gcvt with precision 14 for floats, PHP's
// trim set, json_decode's reading of numbers and keys, ksort's order. PHP
// 8.2 prints the same for every float here (http_build_query(['k' => $f])).

func TestPHPFloat(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{1e6, "1000000"},
		{1234567, "1234567"},
		{4208.01, "4208.01"},
		{-4208.01, "-4208.01"},
		{0.1 + 0.2, "0.3"}, // 0.30000000000000004 to 14 digits
		{0.5, "0.5"},
		{100, "100"},
		{123.456, "123.456"},
		{0.001, "0.001"},
		{0.0001, "0.0001"}, // decpt -3: still fixed
		{1e-5, "1.0E-5"},   // decpt -4: exponential, a lone digit gets .0
		{-1e-5, "-1.0E-5"},
		{1.5e-7, "1.5E-7"},
		{0.00012345678901234567, "0.00012345678901235"}, // 14 significant digits, rounded
		{1e13, "10000000000000"},                        // 14 digits before the point
		{1e14, "1.0E+14"},                               // 15: exponential
		{1e15, "1.0E+15"},
		{99999999999999.99, "1.0E+14"}, // rounds up to 15 digits before the point
		{1.2345e20, "1.2345E+20"},
		{1e25, "1.0E+25"},
		{1e100, "1.0E+100"},
		{123456789012345678, "1.2345678901235E+17"},
		{10000000000000.5, "10000000000000"}, // a tie: to even
		{10000000000001.5, "10000000000002"},
		{5e-324, "4.9406564584125E-324"},
		{math.MaxFloat64, "1.7976931348623E+308"},
		{0, "0"},
		{math.Copysign(0, -1), "0"}, // PHP prints -0, but reads a JSON -0 as the integer 0
	}
	for _, tt := range tests {
		got, err := phpFloat(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("phpFloat(%v) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if got, err := phpFloat(bad); err == nil || !strings.Contains(err.Error(), "finite") {
			t.Errorf("phpFloat(%v) = %q, %v; want an error saying it is not finite", bad, got, err)
		}
	}
}

func TestPHPNumber(t *testing.T) {
	tests := []struct{ in, want string }{
		{"12", "12"},
		{"-7", "-7"},
		{"-0", "0"}, // an integer literal: json_decode gives int 0
		{"-0.0", "0"},
		{"1e6", "1000000"}, // a float literal, printed without exponent
		{"1000000.0", "1000000"},
		{"100.50", "100.5"},
		{"1.0E-5", "1.0E-5"},
		{"1.0E+15", "1.0E+15"},
		{"9223372036854775807", "9223372036854775807"},
		{"18446744073709551615", "1.844674407371E+19"}, // beyond int64: json_decode makes a float
	}
	for _, tt := range tests {
		got, err := phpNumber(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("phpNumber(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "abc", `"1"`, "+1", "01", " 1", "0x1A", "1e400", "1.", "NaN"} {
		if got, err := phpNumber(bad); err == nil {
			t.Errorf("phpNumber(%q) = %q, want an error", bad, got)
		}
	}
}

// Which strings PHP 8.2 turns into integer array keys, and which it finds
// numeric (is_numeric), checked with php -r.
func TestPHPKeys(t *testing.T) {
	tests := []struct {
		in              string
		intKey, numeric bool
	}{
		{"0", true, true},
		{"10", true, true},
		{"-5", true, true},
		{"9223372036854775807", true, true},
		{"-9223372036854775808", true, true},
		{"9223372036854775808", false, true},
		{"-9223372036854775809", false, true},
		{"-0", false, true},
		{"007", false, true},
		{"00", false, true},
		{"-01", false, true},
		{"+5", false, true},
		{" 5", false, true},
		{"5 ", false, true},
		{"\t5", false, true},
		{"5\n", false, true},
		{"5\x0b", false, true},
		{"\f5", false, true},
		{"1.5", false, true},
		{"1.", false, true},
		{".5", false, true},
		{"-.5", false, true},
		{"+.5e-2", false, true},
		{"1e3", false, true},
		{"1E-3", false, true},
		{"1e+3", false, true},
		{"1e400", false, true},
		{"", false, false},
		{" ", false, false},
		{".", false, false},
		{"-", false, false},
		{"--5", false, false},
		{"- 5", false, false},
		{"1e", false, false},
		{"0x1A", false, false},
		{"1_000", false, false},
		{"12abc", false, false},
		{"5\x00", false, false},
		{"inf", false, false},
		{"NAN", false, false},
		{"١", false, false}, // Arabic-Indic digit one
		{"1.2.3.4", false, false},
		{"example.com", false, false},
	}
	for _, tt := range tests {
		i, isInt := phpIntKey(tt.in)
		if isInt != tt.intKey {
			t.Errorf("phpIntKey(%q) = %t, want %t", tt.in, isInt, tt.intKey)
		} else if isInt && strconv.FormatInt(i, 10) != tt.in {
			t.Errorf("phpIntKey(%q) = %d", tt.in, i)
		}
		if got := isPHPNumeric(tt.in); got != tt.numeric {
			t.Errorf("isPHPNumeric(%q) = %t, want %t", tt.in, got, tt.numeric)
		}
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]any
		want map[string]any
	}{
		{
			name: "strings trimmed with PHP's set, empty ones and nils gone",
			in:   map[string]any{"csr": "-----END CERTIFICATE REQUEST-----\n", "a": " \tx\r\n", "b": "\x00\x0b", "c": "", "d": nil, "e": "\u00a0"},
			want: map[string]any{"csr": "-----END CERTIFICATE REQUEST-----", "a": "x", "e": "\u00a0"},
		},
		{
			name: "booleans and numbers as json.Number holding PHP's text",
			in:   map[string]any{"t": true, "f": false, "i": -3, "u": uint16(7), "x": 1e-5, "y": float32(1.5), "n": json.Number("1e6"), "z": json.Number("")},
			want: map[string]any{"t": json.Number("1"), "f": json.Number("0"), "i": json.Number("-3"), "u": json.Number("7"), "x": json.Number("1.0E-5"), "y": json.Number("1.5"), "n": json.Number("1000000")},
		},
		{
			name: "nested maps: emptied ones gone, map[string]string read",
			in: map[string]any{
				"domain_dcv": map[string]string{"a.example": " dns\n", "b.example": " "},
				"gone":       map[string]any{"x": "", "y": map[string]any{"z": nil}},
				"empty":      map[string]any{},
			},
			want: map[string]any{"domain_dcv": map[string]any{"a.example": "dns"}},
		},
		{
			name: "lists: whole, emptied, and with holes keeping their indexes",
			in:   map[string]any{"l": []string{"a", " b "}, "gone": []any{" ", nil}, "holes": []any{"x", "", "y", nil}, "none": []any{}},
			want: map[string]any{"l": []any{"a", "b"}, "holes": map[string]any{"0": "x", "2": "y"}},
		},
		{
			name: "nothing left",
			in:   map[string]any{"a": "   "},
			want: map[string]any{},
		},
		{
			name: "nil",
			in:   nil,
			want: map[string]any{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonical(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Canonical:\n got %#v\nwant %#v", got, tt.want)
			}
			again, err := Canonical(got)
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("Canonical is not idempotent: %#v, %v", again, err)
			}
		})
	}
}

// Canonical refuses what cannot be sent as it would be signed, naming the
// parameter (escaped: a name may hold any bytes).
func TestCanonicalErrors(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]any
		want string
	}{
		{"invalid UTF-8 in a value", map[string]any{"contact_email": "a\xff@x.com"}, `parameter "contact_email": invalid UTF-8`},
		{"invalid UTF-8 in a nested name", map[string]any{"domain_dcv": map[string]string{"ex\xff.com": "dns"}}, `parameter "domain_dcv[ex\xff.com]": invalid UTF-8 in the name`},
		{"invalid UTF-8 in a list", map[string]any{"l": []any{"ok", "b\xc3"}}, `parameter "l[1]": invalid UTF-8`},
		{"a name that could forge the message", map[string]any{"a\"\n": "\xff"}, `parameter "a\"\n": invalid UTF-8`},
		{"NaN", map[string]any{"f": math.NaN()}, `parameter "f": NaN is not a finite number`},
		{"infinity", map[string]any{"m": map[string]any{"f": math.Inf(-1)}}, `parameter "m[f]": -Inf is not a finite number`},
		{"beyond int64", map[string]any{"u": uint64(math.MaxUint64)}, `parameter "u": 18446744073709551615 is beyond PHP's integer range`},
		{"not a number", map[string]any{"n": json.Number("abc")}, `parameter "n": "abc" is not a number`},
		{"unsupported type", map[string]any{"s": struct{}{}}, `parameter "s": unsupported type struct {}`},
		{"numeric-string name", map[string]any{"m": map[string]any{"1.5": "x"}}, `parameter "m[1.5]": the name is a numeric string`},
		// PHP 8.2 sorts [9, 10, "1a"] as given but [10, 9, "1a"] as
		// ["1a", 9, 10]: no order can be signed.
		{"keys PHP cannot order", map[string]any{"m": map[string]any{"9": "a", "10": "b", "1a": "c"}}, `parameters at "m": integer keys and the key "1a" have no order`},
		{"keys PHP cannot order at the top", map[string]any{"2": "a", "10": "b", "1x": "c"}, `parameters at the top level: integer keys and the key "1x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonical(tt.in)
			if err == nil {
				t.Fatalf("Canonical = %#v, want an error", got)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// Integer and string keys together sign in one order when there is one:
// integers by value, all below the letters.
func TestCanonicalMixedKeysOrder(t *testing.T) {
	p := map[string]any{"m": map[string]any{"10": "a", "9": "b", "x": "c", "B": "d", "-5": "e", "2": "f", "*": "g"}}
	const want = "/p?m%5B%2A%5D=g&m%5B-5%5D=e&m%5B2%5D=f&m%5B9%5D=b&m%5B10%5D=a&m%5BB%5D=d&m%5Bx%5D=c"
	if got := StringToSign("/p", p); got != want {
		t.Errorf("StringToSign:\n got %s\nwant %s", got, want)
	}
}

// What is sent is what the server reads: the canonical form, encoded as
// JSON and decoded as the server does, is still canonical (trimming and
// dropping change nothing) and signs to the same string.
func TestCanonicalSurvivesJSON(t *testing.T) {
	for _, p := range []map[string]any{
		withAuth(canonicalReissueParams()),
		withAuth(canonicalNumbersParams()),
		{"holes": []any{"x", nil, "y"}, "deep": map[string]any{"l": []any{map[string]any{"k": " v "}}}},
	} {
		checkJSONRoundTrip(t, p)
	}
}

func checkJSONRoundTrip(t *testing.T, p map[string]any) {
	t.Helper()
	c, err := Canonical(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatalf("json.Marshal(%#v): %v", c, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var seen map[string]any
	if err := dec.Decode(&seen); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	if len(c) == 0 && len(seen) == 0 {
		return
	}
	if !reflect.DeepEqual(seen, c) {
		t.Fatalf("the server reads\n%#v\nnot the signed\n%#v", seen, c)
	}
	again, err := Canonical(seen)
	if err != nil || !reflect.DeepEqual(again, seen) {
		t.Fatalf("what the server reads is not canonical: %#v, %v", again, err)
	}
	if a, b := StringToSign("/p", p), stringToSign("/p", c); a != b {
		t.Fatalf("StringToSign of the input %s, of its canonical form %s", a, b)
	}
}

// FuzzCanonical: whatever a JSON body holds, Canonical either refuses it or
// gives a form that is idempotent, survives a JSON round trip (the bytes
// sent are what was signed) and holds no string PHP's trim would change.
func FuzzCanonical(f *testing.F) {
	f.Add(`{"csr":"-----BEGIN\nX\n-----END\n","renew":true,"cost":4208.01,"l":["a","",null,"b"]}`)
	f.Add(`{"domain_dcv":{"*.example.com":" dns ","10":"x","9":"y"},"n":1e-5,"big":1e15,"neg":-0.0}`)
	f.Add(`{"m":{"9":1,"10":2,"1a":3},"k":{"1.5":"x"},"e":{},"z":[]}`)
	f.Add(`{"a":"\u0000\u000b x \t","b":18446744073709551615,"c":-0}`)
	f.Fuzz(func(t *testing.T, body string) {
		dec := json.NewDecoder(strings.NewReader(body))
		dec.UseNumber()
		var p map[string]any
		if dec.Decode(&p) != nil {
			return
		}
		c, err := Canonical(p)
		if err != nil {
			if StringToSign("/p", p) != "" {
				t.Fatalf("StringToSign signs what Canonical refuses (%v)", err)
			}
			return
		}
		checkTrimmed(t, "", c)
		checkJSONRoundTrip(t, p)
	})
}

func checkTrimmed(t *testing.T, path string, v any) {
	t.Helper()
	switch v := v.(type) {
	case string:
		if v == "" || trimPHP(v) != v {
			t.Fatalf("%s: %q is not trimmed", path, v)
		}
	case json.Number:
		if s, err := phpNumber(string(v)); err != nil || s != string(v) {
			t.Fatalf("%s: number %q reads back as %q, %v", path, v, s, err)
		}
	case map[string]any:
		if len(v) == 0 && path != "" {
			t.Fatalf("%s: an empty map is kept", path)
		}
		for k, e := range v {
			checkTrimmed(t, joinKey(path, k), e)
		}
	case []any:
		if len(v) == 0 {
			t.Fatalf("%s: an empty list is kept", path)
		}
		for i, e := range v {
			checkTrimmed(t, joinKey(path, strconv.Itoa(i)), e)
		}
	default:
		t.Fatalf("%s: %T in the canonical form", path, v)
	}
}

// FuzzPHPFloat: the text of a float is a fixed point of PHP's reading
// (json_decode then http_build_query prints it again), and within 14
// digits of the float.
func FuzzPHPFloat(f *testing.F) {
	for _, v := range []float64{1e6, 4208.01, 0.1 + 0.2, 1e-5, 1e15, 1e14, 10000000000000.5, 5e-324, math.MaxFloat64, -0.0} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v float64) {
		s, err := phpFloat(v)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if err == nil {
				t.Fatalf("phpFloat(%v) = %q", v, s)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if back, err := phpNumber(s); err != nil || back != s {
			t.Fatalf("phpFloat(%v) = %q, which reads back as %q, %v", v, s, back, err)
		}
		got, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatal(err)
		}
		if v != 0 && math.Abs(got-v) > math.Abs(v)*1e-13 {
			t.Fatalf("phpFloat(%v) = %q, too far", v, s)
		}
	})
}

// Client.Do signs and sends the canonical form: the hand vectors' strings
// (given to DebugStringToSign) and openssl signatures, and a body of
// exactly the signed values, byte for byte.
func TestDoSendsTheCanonicalForm(t *testing.T) {
	tests := []struct {
		name, op, path string
		params         map[string]any
		stringToSign   string
		sign           string
		body           string
	}{
		{
			name: "reissue", op: "reissue", path: PathReissue, params: canonicalReissueParams(),
			stringToSign: canonicalReissueStringToSign, sign: canonicalReissueSign,
			body: `{"contact_email":"a b~c@x.com","cost":4208.01,` +
				`"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB+ab/cd==\n-----END CERTIFICATE REQUEST-----",` +
				`"domain_dcv":{"*.example.com":"dns","example2.com":"http"},"renew":1,"service_id":"o91bZ","unique_id":"azgZqJGX"}`,
		},
		{
			name: "numbers", op: "create", path: PathCreate, params: canonicalNumbersParams(),
			stringToSign: canonicalNumbersStringToSign, sign: canonicalNumbersSign,
			body: `{"big":1000000,"cost":4208.01,"e13":10000000000000,"e14":1.0E+14,"half_even":10000000000000,"huge":1.0E+15,` +
				`"l":["a","b","c","d","e","f","g","h","i","j","k","l"],"neg0":0,"off":0,"on":1,"small":0.0001,"sum":0.3,"tiny":1.0E-5}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			var query url.Values
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ = io.ReadAll(r.Body)
				query = r.URL.Query()
				writeJSON(w, 200, `{"success":true}`)
			}))
			defer srv.Close()
			type call struct{ op, s string }
			var debug []call
			c := newAPIClient(t, srv.URL+"/api/v1", func(cfg *Config) {
				cfg.AccessKeySecret = vectorSecret
				cfg.DebugStringToSign = func(op, s string) { debug = append(debug, call{op, s}) }
			})
			if err := c.Do(context.Background(), tt.op, http.MethodPost, tt.path, nil, tt.params, nil); err != nil {
				t.Fatal(err)
			}
			if got := query.Get(ParamSign); got != tt.sign {
				t.Errorf("sign = %s, want the openssl-computed %s", got, tt.sign)
			}
			if string(body) != tt.body {
				t.Errorf("body:\n got %s\nwant %s", body, tt.body)
			}
			if len(debug) != 1 || debug[0] != (call{tt.op, tt.stringToSign}) {
				t.Errorf("DebugStringToSign got %q, want once (%q, %s)", debug, tt.op, tt.stringToSign)
			}
		})
	}
}

// A reissue with the CSR as dcvd makes it (ending in a newline) sends it
// trimmed, and a query value is trimmed too; the fake server checks that
// what it got is canonical and signed.
func TestReissueAndDetailSendTrimmedValues(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ seenRequest) {
		writeJSON(w, 200, `{"success":true,"data":{"service_id":"o91bZ"}}`)
	})
	c := newAPIClient(t, api.srv.URL+"/api/v1", nil)
	ctx := context.Background()
	_, err := c.Reissue(ctx, ReissueRequest{UniqueID: "u1 ", ServiceID: "o91bZ", CSR: vectorCSR + "\n", Renew: true,
		DomainDCV: map[string]Method{"a.example": "dns"}, ContactEmail: "\ta@example.com", NotifyURL: " "})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"unique_id": "u1", "service_id": "o91bZ", "csr": vectorCSR, "renew": json.Number("1"),
		"domain_dcv": map[string]any{"a.example": "dns"}, "contact_email": "a@example.com"}
	if got := api.last().Body; !reflect.DeepEqual(got, want) {
		t.Errorf("body = %#v\nwant %#v", got, want)
	}
	if _, err := c.Detail(ctx, " o91bZ\n"); err != nil {
		t.Fatal(err)
	}
	if got := api.last().Query.Get("service_id"); got != "o91bZ" {
		t.Errorf("query service_id = %q", got)
	}
	if err := c.Do(ctx, "x", http.MethodGet, "/x", url.Values{"blank": {" \t"}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if q := api.last().Query; q.Has("blank") {
		t.Errorf("a blank query value was sent: %v", q)
	}
}

// Invalid UTF-8 is refused before anything is sent, with an error naming
// the parameter; DebugStringToSign is not called for a request not sent.
func TestInvalidUTF8IsNeverSent(t *testing.T) {
	api := newSucceedingAPI(t)
	debugged := 0
	c := newAPIClient(t, api.srv.URL, func(cfg *Config) { cfg.DebugStringToSign = func(string, string) { debugged++ } })
	ctx := context.Background()
	dcv := map[string]Method{"a.example": "dns"}
	tests := []refusedCall{
		{"in a value", func() error {
			_, err := c.Reissue(ctx, ReissueRequest{UniqueID: "u", ServiceID: "s", DomainDCV: dcv, ContactEmail: "a\xff@x.com"})
			return err
		}, `reseller reissue: parameter "contact_email": invalid UTF-8; nothing was sent`},
		{"in a domain", func() error {
			return c.UpdateDCV(ctx, "s", map[string]Method{"ex\xff.com": "dns"})
		}, `parameter "domain_dcv[ex\xff.com]": invalid UTF-8 in the name`},
		{"in a method", func() error {
			return c.UpdateDCV(ctx, "s", map[string]Method{"a.example": "admin@a.example\xc3"})
		}, `parameter "domain_dcv[a.example]": invalid UTF-8`},
		{"in the query", func() error {
			_, err := c.Detail(ctx, "s\xff")
			return err
		}, `reseller detail: parameter "service_id": invalid UTF-8`},
		{"a float that is not finite", func() error {
			return c.Do(ctx, "x", http.MethodPost, "/x", nil, map[string]any{"cost": math.Inf(1)}, nil)
		}, `parameter "cost": +Inf is not a finite number`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if n := api.requests(); n != 0 {
		t.Errorf("%d requests reached the server", n)
	}
	if debugged != 0 {
		t.Errorf("DebugStringToSign was called %d times for requests never sent", debugged)
	}
}
