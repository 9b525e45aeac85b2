// Package sandbox is a local certificate reseller CA for tests and demos,
// as Pebble is for ACME: it speaks the reseller API that dcvd drives (the
// same paths under /api/v1, the same signed requests, the same envelope),
// and it behaves like the real CA, including the parts that hurt:
//
//   - every request must be signed with the account's access key, with a
//     fresh nonce and a timestamp within the tolerated skew;
//   - a reissue costs money, once per unique_id: a replayed unique_id returns
//     the same order and charges nothing, and an account without enough
//     balance is refused;
//   - a reissue that drops a name of the issued certificate revokes it;
//   - domain control is checked for real, against a DNS server and a web
//     server, and a failed DNS check is cached negatively, so that calling
//     update-dcv before the record is in place stalls issuance;
//   - faults can be injected: server errors before or after the request was
//     processed (the reply is lost although the reissue happened), rate
//     limiting, truncated replies, reset connections and latency.
//
// A Server is created with New, mounted with Handler, and started with Start
// for its background re-checks. Its state (services, orders, ledger,
// revocations, nonces, the access key pair and the CA) lives in a state
// directory and survives restarts. Unsigned control endpoints under
// /sandbox/ let tests and the demo read the ledger and the revocations,
// fetch the root certificate and approve e-mail validations; the same is
// available in Go through the Server's methods.
//
// The sandbox plays the independent CA: it checks domains and DCV methods
// with its own rules (rules.go), and uses package reseller only for wire
// types, signing and endpoint paths.
package sandbox
