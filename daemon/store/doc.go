// Package store keeps what dcvd must not lose: each certificate's orders
// (with the unique_id persisted before the paid call is sent), the live
// certificates, the attempt history with its costs, the services' end
// dates, and in a cluster the leases, nodes and file acknowledgements.
//
// [Store] is the contract the daemon's state machine writes through;
// [SQLiteStore] (one host, the default) and [PostgresStore] (a cluster of
// nodes) implement it, and [PostgresStore] also implements [ClusterStore].
// The records themselves ([Order], [Certificate], [Attempt]) are defined
// here because they are what is stored; the daemon gives them meaning.
package store
