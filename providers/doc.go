// Package providers publishes DNS DCV records through libdns providers.
//
// A [dns.NAME] section of the configuration names a provider type from the
// registry (registry.go: one line per provider) and its keys; New turns it
// into a DNS. For one reissue, Plan resolves each CNAME's zone (the
// configured zone, else the provider's zone list, else an SOA walk) and
// merges names that share a record; the caller persists the plan, then
// Publish writes each zone's records with one SetRecords call, leaving
// correct records alone. WaitVisible asks every authoritative nameserver of
// the zone directly until each answers the record, and Cleanup deletes
// exactly the planned records, also after a restart.
//
// The package uses package reseller's DCV types and never imports daemon.
package providers
