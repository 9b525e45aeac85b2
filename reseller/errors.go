package reseller

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Limits on what an error carries from an untrusted reply, so that a hostile
// or broken server cannot flood logs through error messages.
const (
	maxSnippetBytes    = 200
	maxMessageBytes    = 500
	maxFieldErrorsShow = 10
	// maxRetryAfter caps the server's Retry-After: a caller that sleeps for
	// the figure must not be stalled for days by a broken proxy.
	maxRetryAfter = 24 * time.Hour
)

// APIError means the server answered and refused the request (or failed on
// its side): an HTTP status other than 2xx, or a 2xx reply whose envelope says
// success: false.
type APIError struct {
	// Op is the call: "reissue", "update-dcv", "validate-dcv", "detail",
	// "product list" or "create".
	Op         string
	StatusCode int
	// Code is the envelope's error_code, e.g. INSUFFICIENT_BALANCE.
	Code string
	// Message is the server's message, or the HTTP status text when the
	// reply is not JSON (a proxy's HTML page).
	Message string
	// FieldErrors holds per-field validation errors (HTTP 422).
	FieldErrors map[string][]string
	// RetryAfter is the server's Retry-After on 429 and 503, zero if absent.
	RetryAfter time.Duration
}

// Error describes the refusal, e.g.
// "reseller reissue: refused (HTTP 422, INVALID): message; csr: must be a CSR".
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("reseller ")
	b.WriteString(e.Op)
	if e.StatusCode >= 500 {
		b.WriteString(": failed (HTTP ")
	} else {
		b.WriteString(": refused (HTTP ")
	}
	b.WriteString(strconv.Itoa(e.StatusCode))
	if e.Code != "" {
		b.WriteString(", ")
		b.WriteString(e.Code)
	}
	b.WriteString(")")
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	fields := make([]string, 0, len(e.FieldErrors))
	for f := range e.FieldErrors {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	for i, f := range fields {
		if i == maxFieldErrorsShow {
			fmt.Fprintf(&b, "; and %d more fields", len(fields)-i)
			break
		}
		msgs := e.FieldErrors[f]
		if len(msgs) > maxFieldErrorsShow {
			// A hostile reply may carry a field with thousands of
			// messages: the error stays bounded.
			msgs = append(msgs[:maxFieldErrorsShow:maxFieldErrorsShow], fmt.Sprintf("and %d more", len(msgs)-maxFieldErrorsShow))
		}
		fmt.Fprintf(&b, "; %s: %s", f, strings.Join(msgs, ", "))
	}
	// A server that already says what to check (the sandbox does) is
	// not repeated.
	if e.CredentialsRefused() && !strings.Contains(e.Message, credentialsHint) {
		b.WriteString("; " + credentialsHint)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// credentialsHint ends the text of an APIError whose request the server
// refused for its credentials or its signature. The configuration's names
// are given because that is where the admin must look; the string to sign
// is not (it holds the CSR and every parameter): the client gives it to
// Config.DebugStringToSign, for debug logs only.
const credentialsHint = "check access_key_secret / access_key_id"

// CredentialsRefused reports whether the server refused the request's
// credentials or signature: HTTP 401, or an error code or message about the
// signature or the access key (the API family may send those with HTTP 200
// and success false). Refusals of the timestamp or the nonce are not: the
// clock or a replay is to blame then, not the key pair.
func (e *APIError) CredentialsRefused() bool {
	if strings.Contains(e.Message, "untrimmed") {
		// The sandbox found the signature made with the right key over
		// the values as sent, untrimmed: the client is to blame, not the
		// key pair.
		return false
	}
	words := strings.FieldsFunc(strings.ToUpper(e.Code), func(r rune) bool {
		return !('A' <= r && r <= 'Z' || '0' <= r && r <= '9')
	})
	for i, w := range words {
		switch w {
		case "TIMESTAMP", "NONCE":
			return false
		case "SIGN", "SIGNATURE", "SECRET", "ACCESSKEY", "ACCESSKEYID", "APPKEY":
			return true
		case "ACCESS":
			if i+1 < len(words) && words[i+1] == "KEY" {
				return true
			}
		}
	}
	msg := strings.ToLower(e.Message)
	if strings.Contains(msg, "signature") || strings.Contains(e.Message, "签名") { // "signature" in Chinese
		return true
	}
	return e.StatusCode == http.StatusUnauthorized && !strings.Contains(msg, "timestamp") && !strings.Contains(msg, "nonce")
}

// TransportError means the request got no HTTP reply: the connection could
// not be made or broke, the call timed out, or the caller's context ended.
// The server may or may not have acted on the request.
type TransportError struct {
	Op  string
	Err error
	// callerDone is set when the caller's own context ended: the caller gave
	// up, so retrying on its behalf would be wrong.
	callerDone bool
}

// Error describes the failure.
func (e *TransportError) Error() string {
	return fmt.Sprintf("reseller %s: no reply: %v", e.Op, e.Err)
}

// Unwrap returns the underlying network or context error.
func (e *TransportError) Unwrap() error { return e.Err }

// DecodeError means a reply arrived but cannot be understood: not JSON, the
// wrong shape, no usable success field on a 2xx, or larger than the limit.
type DecodeError struct {
	Op         string
	StatusCode int
	Err        error
	// Snippet is the start of the reply body, at most 200 bytes, with
	// non-printable characters escaped.
	Snippet string
}

// Error describes what could not be decoded and shows the start of the body.
func (e *DecodeError) Error() string {
	s := fmt.Sprintf("reseller %s: cannot understand the reply (HTTP %d): %v", e.Op, e.StatusCode, e.Err)
	if e.Snippet != "" {
		s += `; body starts "` + e.Snippet + `"`
	}
	return s
}

// Unwrap returns the underlying decoding error.
func (e *DecodeError) Unwrap() error { return e.Err }

// Retryable reports whether err is worth retrying: no reply arrived (unless
// the caller's own context ended), the server failed (HTTP 5xx), or it asked
// to slow down (HTTP 429). Refusals, undecodable replies and local errors are
// not retryable: sending the same request again would give the same answer.
//
// This matters most for reissue and create. When no reply arrived, the
// reseller may have acted on the request and charged for it, so the request
// must be retried with the SAME unique_id (never a new one): the reseller
// recognises the repeat and does not charge twice.
func Retryable(err error) bool {
	var te *TransportError
	if errors.As(err, &te) {
		return !te.callerDone
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.StatusCode >= 500 || ae.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// RetryAfter returns how long the server asked to wait before retrying, or
// zero when err carries no such request.
func RetryAfter(err error) time.Duration {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	return 0
}

// parseRetryAfter reads a Retry-After header: delay seconds or an HTTP-date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// sanitizeReplyText renders untrusted text for an error message: at most limit
// bytes, valid UTF-8, with control and other non-printable characters, quotes
// and backslashes escaped as in a Go string literal, so that a reply cannot
// forge log lines or terminal escapes.
func sanitizeReplyText(s string, limit int) string {
	const more = "..."
	var b strings.Builder
	cut := 0 // length of the output at the last rune that leaves room for more
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var piece string
		switch {
		case r == utf8.RuneError && size == 1:
			piece = fmt.Sprintf(`\x%02x`, s[i])
		case r == '"' || r == '\\':
			piece = `\` + string(r)
		case unicode.IsPrint(r):
			piece = s[i : i+size]
		default:
			q := strconv.QuoteRune(r)
			piece = q[1 : len(q)-1]
		}
		if b.Len()+len(piece) > limit {
			return b.String()[:cut] + more
		}
		b.WriteString(piece)
		if b.Len() <= limit-len(more) {
			cut = b.Len()
		}
		i += size
	}
	return b.String()
}
