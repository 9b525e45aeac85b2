// Package control is how dcvd's commands talk to the running daemon: a
// unix socket (mode 0600: only its owner and root may connect) speaking
// HTTP/1.1 with JSON, so that "dcvd status", "dcvd reissue", "dcvd retry"
// and "dcvd redeploy" act through the daemon's own drivers instead of
// racing them from a second process.
//
//	GET  /status                                  → []CertStatus
//	POST /reissue?name=N[&allow_domain_removal=1] → the order, started or already in flight
//	POST /retry?name=N                            → {"order": …, "how": RetryHow, "holder": node}
//	POST /redeploy?name=N                         → {}
//	GET  /order?unique_id=U                       → the order
//
// Errors are {"error": "...", "code": "..."} with a 4xx or 5xx status;
// code (one of the Code* constants, or absent) tells apart refusals that
// share a status. The package holds the socket's paths and [Listener],
// the wire types and the [Client]; the daemon serves the handlers.
package control

import (
	"errors"
	"time"

	"github.com/dcvd/dcvd/daemon/store"
)

// SocketName is the file name of the control socket.
const SocketName = "dcvd.sock"

// maxSocketPath is the longest path a unix socket can be bound to on Linux
// (sun_path holds 108 bytes with the terminating NUL).
const maxSocketPath = 107

// The codes of the control socket's errors (Error.Code), for a
// client that acts on the kind of refusal: one to fix (an unknown name), one
// to wait out (busy, stopping), one for good (the domain-removal guard).
const (
	// CodeUnknownCertificate: the daemon's configuration has no such
	// [[certificate]] (404).
	CodeUnknownCertificate = "unknown_certificate"
	// CodeNoOrder: the certificate has no order in flight (404).
	CodeNoOrder = "no_order"
	// CodeBusy: a redeploy or an order that is just ending holds the
	// certificate (409); try again in a moment.
	CodeBusy = "busy"
	// CodeLeaseHeld: another node of the cluster drives the
	// certificate (409).
	CodeLeaseHeld = "lease_held"
	// CodeDomainRemoval: the domain-removal guard refused the reissue
	// (409); the admin must confirm it.
	CodeDomainRemoval = "domain_removal"
	// CodeServiceEnded: the certificate's service has ended (409): no
	// reissue renews it until a renewal is bought.
	CodeServiceEnded = "service_ended"
	// CodeStopping: the daemon is stopping (503).
	CodeStopping = "stopping"
)

// ErrNoDaemon says that no daemon answers on a control socket: the file is
// absent, or nothing listens on it any more. Commands then work on the
// state directly.
var ErrNoDaemon = errors.New("no dcvd daemon is running")

// Order is an order as the control socket shows it: what a command
// prints, without the key's path, the CSR or the callback token.
type Order struct {
	UniqueID    string     `json:"unique_id"`
	Cert        string     `json:"cert"`
	Step        store.Step `json:"step"`
	Names       []string   `json:"names,omitempty"`
	Serial      string     `json:"serial,omitempty"`
	NotAfter    *time.Time `json:"not_after,omitempty"`
	Cost        float64    `json:"cost"`
	Attempts    int        `json:"attempts,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	Created     time.Time  `json:"created"`
}

func OrderFrom(o *store.Order) Order {
	j := Order{UniqueID: o.UniqueID, Cert: o.Cert, Step: o.Step, Names: append([]string(nil), o.Names...),
		Serial: o.Serial, Cost: o.Cost, Attempts: o.Attempts, LastError: o.LastError, Created: o.Created}
	if !o.NotAfter.IsZero() {
		t := o.NotAfter
		j.NotAfter = &t
	}
	if !o.NextAttempt.IsZero() {
		t := o.NextAttempt
		j.NextAttempt = &t
	}
	return j
}

func (j Order) Store() *store.Order {
	o := &store.Order{UniqueID: j.UniqueID, Cert: j.Cert, Step: j.Step, Names: j.Names, Serial: j.Serial, Cost: j.Cost,
		Attempts: j.Attempts, LastError: j.LastError, Created: j.Created}
	if j.NotAfter != nil {
		o.NotAfter = *j.NotAfter
	}
	if j.NextAttempt != nil {
		o.NextAttempt = *j.NextAttempt
	}
	return o
}

// RetryReply is the answer to POST /retry.
type RetryReply struct {
	Order  Order    `json:"order"`
	How    RetryHow `json:"how"`
	Holder string   `json:"holder,omitempty"`
}
