package reseller

import "time"

// This file gathers, in one place, what dcvd and its sandbox decided where
// the API's public documentation says nothing (see the project's
// reseller-api reference). When a real account shows otherwise, change it here.

// Endpoint paths, relative to the base URL (which ends in /api/v1). Only
// reissue and update-dcv are documented; the others come from the public
// SDKs of the same API family.
const (
	PathProductList = "/product/list"
	PathCreate      = "/certificate/create"
	PathReissue     = "/certificate/reissue"
	PathUpdateDCV   = "/certificate/update-dcv"
	PathValidateDCV = "/certificate/validate-dcv"
	PathDetail      = "/certificate/detail"
	PathList        = "/certificate/list"
)

// Decisions on behaviour the documentation leaves open.
const (
	// RecheckWithUpdateDCV: after every record or file is verified in place,
	// dcvd calls update-dcv with the same domain_dcv (the documented
	// re-check trigger), then polls detail. It never calls update-dcv
	// earlier: a CA that finds nothing caches the negative answer.
	RecheckWithUpdateDCV = true

	// CallbackIsOnlyAHint: a POST to notify_url only makes dcvd fetch the
	// detail through the signed API at once. Certificate data carried by a
	// callback is never used, because anyone can POST to that URL.
	CallbackIsOnlyAHint = true

	// ValidateDCVTakesServiceID: validate-dcv is sent {service_id} and
	// answers with an order (per-domain dcv statuses), like detail.
	ValidateDCVTakesServiceID = true
)

// CodeServiceExpired is the error_code of a reissue refused because the
// service's paid period has ended (a renewal must be bought and its new
// service_id used). Decision: no public code is known; the sandbox sends
// this one, and dcvd also recognises the refusal by its message and never
// sends a reissue past the service_expires_at it knows of.
const CodeServiceExpired = "SERVICE_EXPIRED"

// TimestampSkew is how far a request's timestamp may be from the server's
// clock before the sandbox refuses it. The family's servers tolerate skew
// but publish no figure.
const TimestampSkew = 5 * time.Minute

// DefaultMaxReplyBytes bounds a reply body. An order with a few hundred
// domains and a certificate chain is far below it.
const DefaultMaxReplyBytes = 4 << 20
