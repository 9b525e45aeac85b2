// Package scriptsafety holds no code, only the tests that the scripts
// starting test servers (scripts/dns-servers.sh, scripts/nginx.sh,
// scripts/postgres.sh and their scripts/lib-servers.sh) leave alone every
// server they did not start: "bash .ci/run" on a real server must not take
// its sites down (issue 14).
//
// The static test reads the scripts and fails on any way to stop, restart
// or signal someone else's process (systemctl stop/restart/--now, service
// … stop, pkill, killall, …) and on any kill that is not on a pid the
// scripts wrote to their own pid file. It needs nothing and always runs.
//
// The live test starts decoys that look like the distro's servers to ss
// and ps (this test binary, run through symlinks named named, pdns_server,
// nginx and postgres) on the standard ports 53, 80 and 5432, runs each
// script's install, start DIR and stop DIR, and checks that every decoy is
// still alive, still listening and never received a signal (each decoy
// writes any signal it gets to a file). Where a real server already holds
// a standard port, that server is watched instead (same pid, same start
// time, still listening). It needs root (to bind those ports) and ss; it
// skips without them, naming what is missing, except that as root with
// DCVD_TEST_REQUIRE_SERVERS set (as in CI) nothing may be missing: it fails
// instead of skipping.
package scriptsafety
