// Package store keeps what dcvd must not lose: each certificate's orders
// (with the unique_id persisted before the paid call is sent), the live
// certificates, the attempt history with its costs, the services' end
// dates, and in a cluster the leases, nodes and file acknowledgements.
//
// [Store] is the contract the daemon works through: a [Reader] (what
// status, the CLI and metrics read) and a [Writer] (what the state machine
// writes), as certmagic separates its Storage from its Locker.
// [SQLiteStore] (one host, the default) and [PostgresStore] (a cluster of
// nodes) implement it, and [PostgresStore] also implements [ClusterStore].
// Both read through one implementation (reader.go) over a small dialect
// (dialect.go: placeholders, collation, JSON access, one query plan); each
// keeps its own opening, migration, transactions and writes.
// The records themselves ([Order], [Certificate], [Attempt]) are defined
// here because they are what is stored; the daemon gives them meaning.
package store
