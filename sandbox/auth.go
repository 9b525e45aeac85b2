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
// and the JSON body, as they are signed.
type params map[string]any

// readParams reads the query and the JSON body of r. Body numbers stay
// json.Numbers, so that they are signed exactly as the client wrote them.
func readParams(w http.ResponseWriter, r *http.Request) (params, *apiError) {
	p := params{}
	for k, vs := range r.URL.Query() {
		if k == reseller.ParamSign {
			continue
		}
		if len(vs) > 1 {
			return nil, refusal(http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("query parameter %q is given %d times", k, len(vs)))
		}
		p[k] = vs[0]
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, refusal(http.StatusRequestEntityTooLarge, CodeInvalidRequest, fmt.Sprintf("request body larger than %d bytes", maxRequestBody))
		}
		return nil, refusal(http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("read request body: %v", err))
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
	for k, v := range m {
		p[k] = v
	}
	return p, nil
}

// authenticate checks the request's signature, timestamp and nonce, and
// records the nonce. It never puts the secret or the sign parameter in an
// error or a log.
func (s *Server) authenticate(r *http.Request, p params) *apiError {
	sign := r.URL.Query().Get(reseller.ParamSign)
	if bodySign, ok := p[reseller.ParamSign].(string); ok {
		// The SDKs send sign in the query; one that puts it in the body is
		// accepted, and sign is never part of what is signed.
		delete(p, reseller.ParamSign)
		if sign == "" {
			sign = bodySign
		}
	}
	keyID, _ := p[reseller.ParamAccessKeyID].(string)
	nonce, _ := p[reseller.ParamNonce].(string)
	ts, _ := p[reseller.ParamTimestamp].(string)
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
			"missing authentication parameter(s) in the query: "+strings.Join(missing, ", "))
	}

	s.mu.Lock()
	id, secret := s.st.AccessKeyID, s.st.AccessKeySecret
	s.mu.Unlock()
	if keyID != id {
		return refusal(http.StatusUnauthorized, CodeUnknownAccessKey, fmt.Sprintf("unknown access key id %q", keyID))
	}
	toSign := reseller.StringToSign(r.URL.Path, p)
	if !reseller.SignatureEqual(reseller.Sign(secret, toSign), sign) {
		return refusal(http.StatusUnauthorized, CodeSignatureInvalid,
			"the signature does not match the request; the string to sign was "+truncate(toSign, 300))
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
