// Package daemon is dcvd's per-certificate state machine: it decides when
// each configured certificate is due, and drives one order per certificate
// through its steps — key and CSR generated locally, reissue submitted with
// a unique_id that is persisted first (so a retry never charges twice), DCV
// instructions validated and published through package providers (DNS) and
// package httpchallenge (files), visibility proven, the re-check requested
// only then, the certificate polled for (or fetched at once on a callback),
// verified against the key and the configured names, deployed atomically,
// the reload run (and rolled back if it fails), DCV cleaned up.
//
// Every step is recorded in the Store before the next side effect, and
// every side effect is safe to repeat, so a crash anywhere resumes from the
// recorded step. A reissue that would drop names of the live certificate,
// which the CA answers by revoking it, is refused unless the admin confirms.
//
// The package owns the configuration (config.go), the store (store.go,
// SQLite by default) and the deployer (deploy.go); it is the only package
// that uses reseller, providers and httpchallenge together.
package daemon
