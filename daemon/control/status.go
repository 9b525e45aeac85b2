package control

import (
	"time"

	"github.com/dcvd/dcvd/daemon/store"
)

// CertStatus is what "dcvd status" shows of one certificate.
type CertStatus struct {
	Name          string       `json:"name"`
	Names         []string     `json:"names"`
	Serial        string       `json:"serial,omitempty"`
	NotAfter      *time.Time   `json:"not_after,omitempty"`
	NextRenewal   time.Time    `json:"next_renewal"`
	RenewalReason string       `json:"renewal_reason"`
	Order         *OrderStatus `json:"order,omitempty"`
	// LastError is the error of the order in flight, else of the last
	// attempt when it failed.
	LastError string  `json:"last_error,omitempty"`
	TotalCost float64 `json:"total_cost"`
	// Service is the configured service (the reseller's order) and what
	// the reseller last said of its paid period.
	Service *ServiceStatus `json:"service,omitempty"`
	// Lease and Nodes are shown in a cluster: which node drives the
	// certificate's orders, and what each node's deploy directory holds.
	Lease *LeaseStatus `json:"lease,omitempty"`
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// ServiceStatus is a certificate's service: the order it is reissued
// under, and the end of its paid period, after which no reissue renews it.
type ServiceStatus struct {
	ServiceID string `json:"service_id"`
	// Status is the reseller's status of the service ("" until asked).
	Status string `json:"status,omitempty"`
	// Expires is the end of the paid period; absent while unknown.
	Expires *time.Time `json:"expires,omitempty"`
	// DaysLeft is the whole days until Expires (negative once ended).
	DaysLeft *int `json:"days_left,omitempty"`
	// Ended says the period is over: no reissue is sent for it.
	Ended bool `json:"ended,omitempty"`
	// Checked is when the reseller was last asked; absent when never.
	Checked *time.Time `json:"checked,omitempty"`
	// Warning says what the admin must do: buy a renewal before the
	// next renewal, or since the service has ended.
	Warning string `json:"warning,omitempty"`
}

// LeaseStatus is the lease on a certificate's orders in a cluster.
type LeaseStatus struct {
	Holder  string    `json:"holder"`
	Token   int64     `json:"token"`
	Expires time.Time `json:"expires"`
	// Current is false for a lease that expired or was released: nobody
	// drives the certificate now.
	Current bool `json:"current"`
}

// NodeStatus is what one node of a cluster serves for a certificate.
type NodeStatus struct {
	Node string `json:"node"`
	// Serial is the certificate in the node's deploy directory, "" when
	// it holds none.
	Serial  string    `json:"serial"`
	Updated time.Time `json:"updated"`
	// Error is why the last deployment on the node failed.
	Error string `json:"error,omitempty"`
	// Alive says the node reported itself within the lease duration.
	Alive bool `json:"alive"`
}

// OrderStatus is the order in flight of a certificate.
type OrderStatus struct {
	UniqueID string     `json:"unique_id"`
	Step     store.Step `json:"step"`
	// Attempts counts the failed tries of the current step, LastError
	// says why the last one failed, and NextAttempt is when the next try
	// (or, while the CA works, the next look) is due.
	Attempts    int        `json:"attempts,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	// Backoff says that the order waits out the backoff of failed tries
	// (see InBackoff): nothing tries it before NextAttempt, which may be a
	// day away, unless the admin runs Hint.
	Backoff bool `json:"backoff,omitempty"`
	// Hint is the command that has the order tried now, while in
	// backoff: "dcvd retry NAME".
	Hint    string    `json:"hint,omitempty"`
	Cost    float64   `json:"cost"`
	Created time.Time `json:"created"`
}

// RetryHow says what Retry did to have the order tried now.
type RetryHow string

const (
	// RetryWoken: a driver of this process was at work on the order; it
	// was woken and tries it at once (or, if it was in the middle of a
	// step, right after that step).
	RetryWoken RetryHow = "woken"
	// RetryStarted: no driver of this process was at work on the order;
	// its next attempt was recorded as due now and a driver started on it
	// (the control socket's retry, in a running daemon).
	RetryStarted RetryHow = "started"
	// RetryRecorded: nobody drives the order here; its next attempt was
	// recorded as due now, so that the next driver to take it up (dcvd
	// run when it starts, dcvd reissue --wait, another node of a cluster,
	// which is told at once) tries it without waiting.
	RetryRecorded RetryHow = "recorded"
	// RetryElsewhere: another node of the cluster holds the
	// certificate's lease and drives the order; it tries it at its own
	// next attempt. Nothing was changed: only the lease holder may write
	// the order.
	RetryElsewhere RetryHow = "elsewhere"
)

// RetryResult is what Retry did.
type RetryResult struct {
	// Order is the order in flight as it stood when Retry looked at it
	// (with RetryRecorded and RetryStarted, NextAttempt is the time it was
	// made due). It is Retry's own copy.
	Order *store.Order
	How   RetryHow
	// Holder is the node that drives the order, with RetryElsewhere.
	Holder string
}
