// Package daemon is dcvd's per-certificate state machine: it decides when a
// certificate is due, generates the key and CSR, submits the reissue through
// package reseller, has providers and httpchallenge publish the DCV records
// and files, asks the CA to re-check, waits for the certificate (polling or
// on a callback), verifies and deploys it, and schedules the next run. It
// owns the state store and the deployer, and is the only package that uses
// all the others.
//
// The package is empty in this build: the state machine is built by the
// daemon issue, on top of reseller and sandbox. Until then "dcvd demo" walks
// the same steps once, in cmd/dcvd.
package daemon
