// Package dcvfiles publishes the HTTP validation files of orders: into the
// configured web roots, the in-memory responder, and the standalone
// listeners. Local is a single process's publisher; package cluster builds
// a cluster node's on it, since there every node must serve every order's
// files before the CA is asked to look.
package dcvfiles

import (
	"context"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// Publisher is what an order's driver needs to get its validation files
// served and, once the order ends, removed. The daemon picks one in New:
// Local, or a cluster node (*cluster.Node).
type Publisher interface {
	// Publish writes o's files into cc's web roots and serves them. Safe
	// to repeat. Local records what it wrote in o.Files, persisted with
	// the order's next step; a cluster node keeps its own record.
	Publish(ctx context.Context, cc *config.CertConfig, o *store.Order) error
	// Serve puts o's pending files back into the responders, which are in
	// memory: an order resumed after a restart needs them again.
	Serve(ctx context.Context, cc *config.CertConfig, o *store.Order) error
	// WaitAcks returns once whoever may answer the CA's look serves o's
	// files: at once for a single process.
	WaitAcks(ctx context.Context, o *store.Order) error
	// Remove removes o's files: those recorded, and those a crash may
	// have written before they were recorded. Safe to repeat.
	Remove(cc *config.CertConfig, o *store.Order) error
	// Forget drops what is remembered of the files of the order uniqueID,
	// once the order's clean-up succeeded.
	Forget(uniqueID string)
}

// Pending reports whether o's validation files must be served now: its
// step is between publishing and the certificate's arrival, and it has
// files.
func Pending(o *store.Order) bool {
	if !servedStep(o.Step) {
		return false
	}
	for _, in := range o.Instructions {
		if in.File != nil {
			return true
		}
	}
	return false
}

// servedStep reports whether an order in step serves its files.
func servedStep(step store.Step) bool {
	switch step {
	case store.StepPublishing, store.StepPublished, store.StepVisible, store.StepRechecked:
		return true
	}
	return false
}
