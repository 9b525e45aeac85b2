package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// This file holds the fenced view of a PostgresStore (ClusterStore.Fenced):
// the writes of a lease holder, refused once the lease is lost.

// Fenced implements ClusterStore.
func (s *PostgresStore) Fenced(l Lease) Store { return &fencedStore{reader: s.reader, s: s, lease: l} }

// fencedStore is the Store of PostgresStore.Fenced. Its reads are the
// store's reader; its writes delegate to the store rather than embed it,
// so that it is only a Store: what it returns cannot be used
// as the ClusterStore (or Closed) behind it.
type fencedStore struct {
	// reader gives the reads: the store's own.
	reader
	s     *PostgresStore
	lease Lease
}

var _ Store = (*fencedStore)(nil)

// fence locks the lease row FOR SHARE, if l is current, for the rest of the
// write's transaction: an acquisition (which locks it FOR UPDATE) waits for
// the write to commit, and a write that waited for an acquisition reads the
// row the acquisition left, whose holder or token no longer match. A write
// is thus either before a takeover or refused.
func (f *fencedStore) fence(ctx context.Context, tx pgx.Tx) error {
	l := f.lease
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM leases
		WHERE cert = $1 AND holder = $2 AND token = $3 AND expires > clock_timestamp()
		FOR SHARE`, l.Cert, l.Holder, l.Token).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		err = leaseLost(ctx, tx, l)
	}
	if err != nil {
		return fmt.Errorf("lease of %q (token %d of %s): %w", l.Cert, l.Token, l.Holder, err)
	}
	return nil
}

// otherCert refuses a write for a certificate the lease is not on.
func (f *fencedStore) otherCert(cert string) error {
	if cert == f.lease.Cert {
		return nil
	}
	return fmt.Errorf("the lease held is on %q, not %q", f.lease.Cert, cert)
}

// PutOrder implements Writer, fenced.
func (f *fencedStore) PutOrder(ctx context.Context, o *Order) error {
	if o != nil {
		if err := f.otherCert(o.Cert); err != nil {
			return fmt.Errorf("put order %s of %q: %w", o.UniqueID, o.Cert, err)
		}
	}
	return f.s.putOrder(ctx, o, f.fence)
}

// PutCertificate implements Writer, fenced.
func (f *fencedStore) PutCertificate(ctx context.Context, c *Certificate) error {
	if c != nil {
		if err := f.otherCert(c.Name); err != nil {
			return fmt.Errorf("put certificate %q: %w", c.Name, err)
		}
	}
	return f.s.putCertificate(ctx, c, f.fence)
}

// AddAttempt implements Writer, fenced.
func (f *fencedStore) AddAttempt(ctx context.Context, a Attempt) error {
	if err := f.otherCert(a.Cert); err != nil {
		return fmt.Errorf("add attempt %s of %q: %w", a.UniqueID, a.Cert, err)
	}
	return f.s.addAttempt(ctx, a, f.fence)
}

// PruneHistory implements Writer: the store's own, unfenced. It deletes
// only ended history, which no lease holder writes, and it is not one
// certificate's.
func (f *fencedStore) PruneHistory(ctx context.Context, p HistoryPolicy) (Pruned, error) {
	return f.s.PruneHistory(ctx, p)
}

// PutService implements Writer: the store's own (see PostgresStore.PutService).
func (f *fencedStore) PutService(ctx context.Context, sv Service) error {
	return f.s.PutService(ctx, sv)
}

// Close implements Store: it does nothing, the store behind stays open.
func (f *fencedStore) Close() error { return nil }
