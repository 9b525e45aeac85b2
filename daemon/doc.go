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
// The daemon is the only package that uses reseller, providers and
// httpchallenge together. Its parts are packages of their own, each with
// one job, and none of them imports the daemon:
//
//   - [github.com/dcvd/dcvd/daemon/config] reads and checks the
//     configuration;
//   - [github.com/dcvd/dcvd/daemon/store] keeps the orders, the live
//     certificates and the history (SQLite, or PostgreSQL for a cluster);
//   - [github.com/dcvd/dcvd/daemon/deploy] installs a verified certificate
//     on a deploy.Target, reloads and rolls back;
//   - [github.com/dcvd/dcvd/daemon/certs] makes keys and CSRs and verifies
//     what the CA issued; [github.com/dcvd/dcvd/daemon/keyfiles] deletes
//     the key files nothing needs any more;
//   - [github.com/dcvd/dcvd/daemon/renewal] decides when a certificate is
//     due;
//   - [github.com/dcvd/dcvd/daemon/dcvfiles] publishes HTTP validation
//     files (web roots, the responder, standalone listeners);
//   - [github.com/dcvd/dcvd/daemon/cluster] holds a node's leases, its
//     heartbeat and the cluster's view of DCV files and deployments, and
//     publishes the files on every node;
//   - [github.com/dcvd/dcvd/daemon/control] is the control socket's
//     protocol and client;
//   - [github.com/dcvd/dcvd/daemon/metrics] is the Prometheus exposition.
//
// [github.com/dcvd/dcvd/daemon/reissueall] is the other way round: a
// client of the daemon, the engine of "dcvd reissue --all".
//
// The daemon reports what happens as [Event] values to [Options.OnEvent]
// (renewed, failed, waiting for an e-mail approval, expiring, recovered);
// the dcvd command turns them into notifications with package notify.
package daemon
