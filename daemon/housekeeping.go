package daemon

import (
	"context"
	"errors"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/keyfiles"
	"github.com/dcvd/dcvd/daemon/store"
)

// Housekeeping deletes what dcvd keeps and no longer needs: the private
// keys of ended orders (failed ones, and superseded generations), and the
// history beyond [daemon] history_retention and history_per_certificate.
// What the daemon may still need is never deleted: see keyfiles.RemoveEnded
// and Store.PruneHistory.

// housekeepingInterval is the least time between two housekeeping passes:
// history only grows by the orders that end, and a key waits an hour at
// most.
const housekeepingInterval = time.Hour

// housekeepingBudget bounds one pass; what is left is done by the next.
// The history's deletes go in batches of DefaultPruneLimit rows, each a
// short transaction, so that orders at work wait for the database a few
// milliseconds at a time.
const housekeepingBudget = time.Minute

// maxPruneBatches bounds the batches of one pass, whatever the budget:
// 100 batches of 1,000 rows per table are a first pass over a history of
// 100,000 attempts.
const maxPruneBatches = 100

// housekeepIfDue runs housekeep if the last pass, at *last (the zero time
// for none), was housekeepingInterval ago or more, and records the time of
// this one. Run calls it after each sweep.
func (d *Daemon) housekeepIfDue(ctx context.Context, last *time.Time) {
	now := time.Now()
	if !last.IsZero() && now.Sub(*last) < housekeepingInterval {
		return
	}
	*last = now
	d.housekeep(ctx)
}

// housekeep deletes the key files of ended orders (removeEndedKeys; not in
// a cluster, whose keys are sealed in the database and go with their
// orders' rows) and prunes the history (pruneHistory), within
// housekeepingBudget. It logs what it deleted, and its errors as warnings:
// what it could not do waits for the next pass. With nothing to delete it
// costs a listing of the key directories and a few queries.
//
// In a cluster every node prunes the shared history: the deletes are
// harmless when run by several nodes at once (see Store.PruneHistory), and
// PostgreSQL lets one at a time do the work.
func (d *Daemon) housekeep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, housekeepingBudget)
	defer cancel()
	start := time.Now()
	keys := 0
	if d.cluster == nil {
		n, err := d.removeEndedKeys(ctx)
		keys = n
		if err != nil && !errors.Is(err, context.Canceled) {
			d.log.Warn("housekeeping: removing the keys of ended orders", zap.Int("removed", n), zap.Error(err))
		}
	}
	pruned, err := d.pruneHistory(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		d.log.Warn("housekeeping: deleting old history", zap.Int("attempts", pruned.Attempts),
			zap.Int("orders", pruned.Orders), zap.Error(err))
	}
	// What the pass read (every live certificate, every key file) is
	// garbage now, for an hour: handed back to the system as the sweep's
	// is, so that an idle daemon's memory stays what it uses.
	defer debug.FreeOSMemory()
	if keys == 0 && pruned == (store.Pruned{}) {
		d.log.Debug("housekeeping: nothing to delete", zap.Duration("took", time.Since(start)))
		return
	}
	d.log.Info("housekeeping: deleted what is no longer needed", zap.Int("keys", keys),
		zap.Int("attempts", pruned.Attempts), zap.Int("orders", pruned.Orders), zap.Duration("took", time.Since(start)))
}

// historyPolicy is what [daemon] history_retention and
// history_per_certificate allow to delete now; their defaults when unset
// (a Config built by hand).
func (d *Daemon) historyPolicy() store.HistoryPolicy {
	cfg := d.config().Daemon
	retention := cfg.HistoryRetention
	if retention <= 0 {
		retention = config.DefaultHistoryRetention
	}
	per := cfg.HistoryPerCertificate
	if per <= 0 {
		per = config.DefaultHistoryPerCertificate
	}
	return store.HistoryPolicy{Before: d.now().Add(-retention), PerCertificate: per, Limit: store.DefaultPruneLimit}
}

// pruneHistory deletes the history historyPolicy allows, a batch at a time
// until none is full, ctx ends, or maxPruneBatches were deleted.
func (d *Daemon) pruneHistory(ctx context.Context) (store.Pruned, error) {
	p := d.historyPolicy()
	var total store.Pruned
	for range maxPruneBatches {
		n, err := d.writeStore().PruneHistory(ctx, p)
		total.Attempts += n.Attempts
		total.Orders += n.Orders
		if err != nil {
			return total, err
		}
		if n.Attempts < p.Limit && n.Orders < p.Limit {
			break
		}
	}
	return total, nil
}

// orphanKeyAge is how old a key file must be before removeOrphanKeys
// takes it for abandoned.
const orphanKeyAge = keyfiles.OrphanAge

// removeOrphanKeys deletes the key files of orders never recorded (see
// keyfiles.RemoveOrphans).
func (d *Daemon) removeOrphanKeys(ctx context.Context) {
	keyfiles.RemoveOrphans(ctx, d.store, d.config().Daemon.StateDir, d.log)
}

// removeEndedKeys deletes the key files of ended orders that nothing needs
// any more (see keyfiles.RemoveEnded).
func (d *Daemon) removeEndedKeys(ctx context.Context) (int, error) {
	return keyfiles.RemoveEnded(ctx, d.store, d.config().Daemon.StateDir, d.log)
}

// listKeyFiles lists the key files under the state directory.
func (d *Daemon) listKeyFiles() []keyfiles.File { return keyfiles.List(d.config().Daemon.StateDir) }
