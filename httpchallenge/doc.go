// Package httpchallenge publishes HTTP file DCV: it writes
// .well-known/pki-validation/ files into configured web roots (or serves them
// from a built-in responder), checks that the URL the CA will fetch serves
// them, and removes exactly what it wrote.
//
// The package is empty in this build: it is built by the HTTP DCV issue. It
// may use package reseller's DCV types and never imports daemon.
package httpchallenge
