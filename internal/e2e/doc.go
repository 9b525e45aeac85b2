// Package e2e holds dcvd's cross-package end-to-end tests. They drive the
// real dcvd binary and packages together with the sandbox CA and the
// servers admins actually run: BIND9 (scripts/dns-servers.sh) for DNS
// validation, nginx (scripts/nginx.sh) for HTTP validation and for serving
// the deployed certificate over TLS. The crash tests kill dcvd with SIGKILL
// after each step of an order (a binary built with -tags crashtest) and
// check that a restart finishes with one charge, the same key and complete
// files; they need no outside server. The cluster tests run three "dcvd
// run" processes on one PostgreSQL each test starts for itself
// (scripts/postgres.sh start, pause, resume): one charge and identical
// deployments on every node, a lease holder killed mid-order, the database
// stopped mid-order. The fault suite runs reissues against a sandbox that
// fails most API requests, and kills a daemon of 50 certificates with
// SIGKILL 20 times. It has no non-test code.
//
// Tests that need a server skip with a reason when its variables are not
// set (scripts/…sh start DIR; set -a; . DIR/env; set +a), and fail instead
// when DCVD_TEST_REQUIRE_SERVERS is set, as CI sets it.
package e2e
