// Package providers publishes DNS DCV records (CNAMEs) through libdns
// providers, checks that every authoritative nameserver of the zone answers
// with them, and removes exactly what was published.
//
// The package is empty in this build: the provider registry, zone
// resolution, batched publishing and the propagation check are built by the
// DNS DCV issue. It may use package reseller's DCV types and never imports
// daemon.
package providers
