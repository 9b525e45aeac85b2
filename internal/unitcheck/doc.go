// Package unitcheck holds no code, only the tests of what installs and
// runs dcvd as a service: the units in systemd/ and scripts/install.sh.
//
// Its tests run systemd-analyze on the units (the sandbox of dcvd.service
// must rate 2.0 or better with "systemd-analyze security --offline=yes",
// and every unit must pass "systemd-analyze verify" without a warning), and
// install.sh into a staging directory (DESTDIR) to check each file, its
// mode, that a second run changes nothing and that an existing
// configuration is never overwritten. Without systemd-analyze the analyze
// tests skip, unless DCVD_TEST_REQUIRE_SERVERS is set (as in CI): then they
// fail.
package unitcheck
