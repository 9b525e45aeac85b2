// Package e2e holds dcvd's cross-package end-to-end tests: they drive real
// servers (nginx started by scripts/nginx.sh) together with the sandbox CA
// and the reseller client, proving that the pieces agree with each other
// and with the software admins actually run. It has no non-test code.
//
// The tests skip with a reason when their server's variables are not set
// (scripts/nginx.sh start DIR; set -a; . DIR/env; set +a), and fail instead
// when DCVD_TEST_REQUIRE_SERVERS is set, as CI sets it.
package e2e
