package sandbox

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/reseller"
)

// maxRequestBody bounds a request body. A reissue with a few hundred names
// and a CSR is far below it.
const maxRequestBody = 1 << 20

// maxNonceLen bounds a nonce, so that the persisted nonce table cannot be
// bloated by a client.
const maxNonceLen = 128

// params are a request's parameters: the union of the query (without sign)
// and the JSON body, as the API family's PHP servers see them after their
// input middleware (reseller-api.md, "What the server sees"): strings
// trimmed, empty strings and nulls gone, booleans as 1/0, numbers as PHP
// prints them (reseller.Canonical). The signature is checked over them, and
// the endpoints work on them: a CSR arrives without its final newline.
type params map[string]any

// readParams reads the query and the JSON body of r and returns them in
// their canonical form. Parameters the server could not sign as the client
// did (invalid UTF-8 in the query, numeric-string names …) are refused.
//
// The body read is put back into r.Body, so that authenticate can read the
// raw values again to explain a refused signature.
func readParams(w http.ResponseWriter, r *http.Request) (params, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, refusal(http.StatusRequestEntityTooLarge, CodeInvalidRequest, fmt.Sprintf("request body larger than %d bytes", maxRequestBody))
		}
		return nil, refusal(http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("read request body: %v", err))
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	raw, aerr := rawParams(r.URL.Query(), body)
	if aerr != nil {
		return nil, aerr
	}
	p, err := reseller.Canonical(raw)
	if err != nil {
		return nil, refusal(http.StatusBadRequest, CodeInvalidRequest, err.Error())
	}
	return params(p), nil
}

// rawParams returns the query (without sign) and the JSON body as the
// client sent them. Body numbers stay json.Numbers.
func rawParams(query url.Values, body []byte) (map[string]any, *apiError) {
	p := map[string]any{}
	for k, vs := range query {
		if k == reseller.ParamSign {
			continue
		}
		if len(vs) > 1 {
			return nil, refusal(http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("query parameter %q is given %d times", k, len(vs)))
		}
		p[k] = vs[0]
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return p, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, refusal(http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("request body is not a JSON object: %v", err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, refusal(http.StatusBadRequest, CodeInvalidRequest, "request body has data after its JSON object")
	}
	// A body parameter wins over a query parameter of the same name, as
	// in Laravel's $request->all().
	for k, v := range m {
		p[k] = v
	}
	return p, nil
}

// authValue returns an authentication parameter as text: the family's
// SDKs send strings, but the PHP SDK puts them in the JSON body, where a
// timestamp or nonce could come as a number.
func (p params) authValue(key string) string {
	switch v := p[key].(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}

// Messages of the signature refusals. Neither quotes the string to sign:
// it holds the CSR and every parameter (the sandbox logs it at debug
// level instead).
const (
	msgSignatureMismatch = "the signature does not match the request: check access_key_secret / access_key_id " +
		"(dcvd-sandbox --log-level debug logs the string it signed)"
	msgSignedUntrimmed = "the signature was computed over untrimmed values (%s); the server signs the trimmed input " +
		"(strings trimmed, empty values dropped), so sign what it will see: see the reseller API reference, section 'What the server sees'"
)

// authenticate checks the request's signature, timestamp and nonce, and
// records the nonce. The authentication parameters may come in the query
// (the Go SDK, dcvd) or in the JSON body (the PHP SDK). It never puts the
// secret, the sign parameter or the string to sign in an error, nor the
// secret or sign in a log.
func (s *Server) authenticate(r *http.Request, p params) *apiError {
	sign := r.URL.Query().Get(reseller.ParamSign)
	if _, ok := p[reseller.ParamSign]; ok {
		// sign is never part of what is signed; a sign in the body is
		// taken when the query has none.
		if sign == "" {
			sign = p.authValue(reseller.ParamSign)
		}
		delete(p, reseller.ParamSign)
	}
	keyID := p.authValue(reseller.ParamAccessKeyID)
	nonce := p.authValue(reseller.ParamNonce)
	ts := p.authValue(reseller.ParamTimestamp)
	var missing []string
	for _, kv := range [][2]string{
		{reseller.ParamAccessKeyID, keyID}, {reseller.ParamNonce, nonce},
		{reseller.ParamTimestamp, ts}, {reseller.ParamSign, sign},
	} {
		if kv[1] == "" {
			missing = append(missing, kv[0])
		}
	}
	if len(missing) > 0 {
		return refusal(http.StatusUnauthorized, CodeMissingParameter,
			"missing authentication parameter(s) (in the query or the JSON body): "+strings.Join(missing, ", "))
	}

	s.mu.Lock()
	id, secret := s.st.AccessKeyID, s.st.AccessKeySecret
	s.mu.Unlock()
	if keyID != id {
		return refusal(http.StatusUnauthorized, CodeUnknownAccessKey, fmt.Sprintf("unknown access key id %q", keyID))
	}
	toSign := reseller.StringToSign(r.URL.Path, p)
	if !reseller.SignatureEqual(reseller.Sign(secret, toSign), sign) {
		s.log.Debug("signature mismatch", zap.String("path", r.URL.Path), zap.String("string_to_sign", toSign))
		if fields := s.signedUntrimmed(r, secret, sign); len(fields) > 0 {
			return refusal(http.StatusUnauthorized, CodeSignatureInvalid, fmt.Sprintf(msgSignedUntrimmed, describeUntrimmed(fields)))
		}
		return refusal(http.StatusUnauthorized, CodeSignatureInvalid, msgSignatureMismatch)
	}

	t, err := reseller.ParseTimestamp(ts)
	if err != nil {
		return refusal(http.StatusUnauthorized, CodeTimestampInvalid, err.Error())
	}
	now := s.cfg.Now()
	if d := t.Sub(now); d > s.cfg.TimestampSkew || d < -s.cfg.TimestampSkew {
		return refusal(http.StatusUnauthorized, CodeTimestampExpired,
			fmt.Sprintf("timestamp %s is %s from the server's clock (%s); at most %s is tolerated",
				ts, d.Round(time.Second), reseller.FormatTimestamp(now), s.cfg.TimestampSkew))
	}

	if len(nonce) > maxNonceLen {
		return refusal(http.StatusUnauthorized, CodeNonceInvalid, fmt.Sprintf("nonce longer than %d characters", maxNonceLen))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if seen, ok := s.st.Nonces[nonce]; ok && now.Sub(seen) < 2*s.cfg.TimestampSkew {
		return refusal(http.StatusUnauthorized, CodeNonceReused,
			fmt.Sprintf("nonce %q was already used at %s; every request needs a new nonce", nonce, reseller.FormatTimestamp(seen)))
	}
	s.st.Nonces[nonce] = now
	if err := s.saveLocked(); err != nil {
		s.log.Error("persist nonce", zap.Error(err))
		return internalError(err)
	}
	return nil
}

// signedUntrimmed tells why a signature that does not match the trimmed
// input was made: when it matches the request's values as sent, untrimmed
// — what dcvd did before it knew of the servers' middleware, for a CSR
// ending in a newline — it returns the names of the values that trimming
// changes (nil otherwise). It reads the raw parameters again from r, whose
// body readParams put back.
func (s *Server) signedUntrimmed(r *http.Request, secret, sign string) []string {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil
	}
	raw, aerr := rawParams(r.URL.Query(), body)
	if aerr != nil {
		return nil
	}
	delete(raw, reseller.ParamSign)
	fields := untrimmedFields("", raw, nil)
	if len(fields) == 0 {
		return nil // nothing to trim: the same string to sign
	}
	if !reseller.SignatureEqual(reseller.Sign(secret, reseller.UntrimmedStringToSign(r.URL.Path, raw)), sign) {
		return nil
	}
	sort.Strings(fields)
	return fields
}

// untrimmedFields appends the paths of the strings in v that PHP's trim
// would change.
func untrimmedFields(path string, v any, out []string) []string {
	switch v := v.(type) {
	case string:
		if strings.Trim(v, " \t\n\r\x00\x0b") != v {
			out = append(out, path)
		}
	case map[string]any:
		for k, e := range v {
			if path != "" {
				k = path + "[" + k + "]"
			}
			out = untrimmedFields(k, e, out)
		}
	case []any:
		for i, e := range v {
			out = untrimmedFields(fmt.Sprintf("%s[%d]", path, i), e, out)
		}
	}
	return out
}

// describeUntrimmed names the untrimmed values for the refusal, a few at
// most, escaped as in a Go string so that a name cannot forge the message
// (without quotes, which a client would escape once more).
func describeUntrimmed(fields []string) string {
	const show = 5
	var b strings.Builder
	for i, f := range fields {
		if i == show {
			fmt.Fprintf(&b, " and %d more", len(fields)-show)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		q := strconv.Quote(truncate(f, 100))
		b.WriteString(q[1 : len(q)-1])
	}
	if len(fields) == 1 {
		b.WriteString(" begins or ends")
	} else {
		b.WriteString(" begin or end")
	}
	b.WriteString(" with whitespace, such as a final newline")
	return b.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// str returns the string parameter key ("" when absent or null). Numbers
// are accepted as written; anything else is a field error.
func (p params) str(key string, fe fieldErrors) string {
	switch v := p[key].(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	default:
		fe.add(key, "must be a string")
		return ""
	}
}

// requiredStr is str, with a field error also when key is absent or empty.
func (p params) requiredStr(key string, fe fieldErrors) string {
	v := p.str(key, fe)
	if v == "" && len(fe[key]) == 0 {
		fe.add(key, "is required")
	}
	return v
}

// present reports whether key was given with a non-empty value.
func (p params) present(key string) bool {
	switch v := p[key].(type) {
	case nil:
		return false
	case string:
		return v != ""
	case map[string]any:
		return len(v) > 0
	default:
		return true
	}
}

// domainDCV returns the domain_dcv parameter: a map from name to method.
func (p params) domainDCV(fe fieldErrors) map[string]string {
	raw, ok := p["domain_dcv"].(map[string]any)
	if !ok {
		if p["domain_dcv"] != nil {
			fe.add("domain_dcv", "must be an object mapping each domain to its validation method")
		}
		return nil
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		m, ok := v.(string)
		if !ok {
			fe.add("domain_dcv", "%s: the method must be a string", k)
			continue
		}
		out[k] = m
	}
	return out
}

// fingerprint identifies a request's business parameters (authentication
// parameters left out), in the canonical form used for signing.
func (p params) fingerprint() string {
	q := make(map[string]any, len(p))
	for k, v := range p {
		switch k {
		case reseller.ParamAccessKeyID, reseller.ParamNonce, reseller.ParamTimestamp, reseller.ParamSign:
		default:
			q[k] = v
		}
	}
	sum := sha256.Sum256([]byte(reseller.StringToSign("", q)))
	return hex.EncodeToString(sum[:16])
}
