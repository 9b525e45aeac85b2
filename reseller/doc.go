// Package reseller is a typed client for the certificate reseller's signed
// HTTP API: placing orders, reissuing certificates, setting and re-checking
// domain control validation (DCV), and reading an order's status.
//
// Every request is signed with the access key pair (HMAC-SHA256 over the
// sorted, PHP-urlencoded parameters, see StringToSign), so that the
// signatures are byte-identical to those of the API family's public SDKs.
//
// Replies are decoded tolerantly, because the API family drifts: numbers
// arrive as strings, success as 1 or "true", dcv as a map or an array, and the
// certificate under two different names. Tolerant decoding is not trust:
// nothing the API returns (domain names, record names, file paths, PEM) may be
// acted upon before it is checked. The DCV instructions of an order are
// checked by ValidateInstructions (dcv.go) before anything is published.
//
// Failures come as three types, so that callers can decide what to do:
// *APIError (the server answered and refused), *TransportError (no reply
// arrived) and *DecodeError (a reply arrived but cannot be understood).
// Retryable tells which ones may be retried; a reissue must be retried with
// the same unique_id so that the reseller does not charge twice.
package reseller
