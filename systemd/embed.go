// Package systemd holds the unit files scripts/install.sh installs, and
// gives dcvd the shipped dcvd.service, against which "dcvd check-config
// --as-service" checks a configuration when no unit is installed.
package systemd

import _ "embed"

// Unit is the shipped dcvd.service, as installed with the default prefix.
//
//go:embed dcvd.service
var Unit string

// ReloadPathUnit is the shipped dcvd-reload-nginx.path.
//
//go:embed dcvd-reload-nginx.path
var ReloadPathUnit string
