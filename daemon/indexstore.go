package daemon

import (
	"context"

	"github.com/dcvd/dcvd/daemon/renewal"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file holds the writes of a daemon that is its store's only writer
// (no cluster): they go through indexingStore, which keeps the renewal
// index (renewal.Index) equal to the store, so that a sweep reads only the
// certificates the index finds due. In a cluster other nodes write the
// store too: there is no index, and every sweep reads the store.

// indexingStore is the daemon's store, whose writes of renewal inputs
// (PutCertificate, AddAttempt) also update the index. The other writes
// change no input of the renewal decision and pass through: PutOrder
// (orders in flight are read from the store at each sweep), PruneHistory
// (it never deletes the newest store.KeptAttempts attempts, all the index
// holds) and PutService.
type indexingStore struct {
	store.Store
	idx *renewal.Index
}

// PutCertificate writes c, then records it in the index. After an error,
// whose outcome may be unknown (a failed commit), the index reads the
// certificate again at the next sweep.
func (s indexingStore) PutCertificate(ctx context.Context, c *store.Certificate) error {
	err := s.Store.PutCertificate(ctx, c)
	switch {
	case c == nil:
	case err != nil:
		s.idx.MarkStale(c.Name)
	default:
		s.idx.Put(c)
	}
	return err
}

// AddAttempt writes a, then reads back the history the index keeps: an
// attempt whose unique_id is recorded already replaces it in its place,
// which only the store knows.
func (s indexingStore) AddAttempt(ctx context.Context, a store.Attempt) error {
	if err := s.Store.AddAttempt(ctx, a); err != nil {
		s.idx.MarkStale(a.Cert)
		return err
	}
	history, err := s.Store.Attempts(ctx, a.Cert, store.KeptAttempts)
	if err != nil {
		s.idx.MarkStale(a.Cert)
		return nil // written; the index reads it again at the next sweep
	}
	s.idx.SetHistory(a.Cert, history)
	return nil
}

// writeStore is what the daemon writes through: the indexing store when
// there is an index.
func (d *Daemon) writeStore() store.Store {
	if d.writes == nil {
		return d.store
	}
	return d.writes
}
