package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file holds PostgresStore's writes. Each may be fenced (see
// PostgresStore.Fenced): the fence then runs first in the write's
// transaction and vetoes it when the lease is no longer current.

// postgresRetries bounds how often PutOrder runs its transaction again after
// losing a race to another transaction (see PutOrder).
const postgresRetries = 3

// fenceFunc runs first in the transaction of a fenced write and vetoes it
// by returning an error (see PostgresStore.Fenced).
type fenceFunc func(ctx context.Context, tx pgx.Tx) error

// write runs fn on the pool, a statement on its own; with a fence, in a
// transaction after the fence.
func (s *PostgresStore) write(ctx context.Context, fence fenceFunc, fn func(q pgQuerier) error) error {
	if fence == nil {
		return fn(s.pool)
	}
	return s.fencedTx(ctx, fence, func(tx pgx.Tx) error { return fn(tx) })
}

// fencedTx runs fn in a transaction, after the fence if there is one.
func (s *PostgresStore) fencedTx(ctx context.Context, fence fenceFunc, fn func(tx pgx.Tx) error) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		if fence != nil {
			if err := fence(ctx, tx); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

// PutCertificate implements Writer.
func (s *PostgresStore) PutCertificate(ctx context.Context, c *Certificate) error {
	return s.putCertificate(ctx, c, nil)
}

// putCertificate is PutCertificate, fenced when fence is not nil.
func (s *PostgresStore) putCertificate(ctx context.Context, c *Certificate, fence fenceFunc) error {
	args, err := certificateArgs(c)
	if err != nil {
		return err
	}
	err = s.write(ctx, fence, func(q pgQuerier) error {
		_, err := q.Exec(ctx, s.d.rebind(putCertificateSQL), args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("put certificate %q: %w", c.Name, err)
	}
	return nil
}

// PutOrder implements Writer.
//
// Unlike SQLite's, PostgreSQL's transactions run side by side (READ
// COMMITTED), so the checks PutOrder makes before writing can be overtaken
// by another process. The stored row is locked (FOR UPDATE) for the whole
// transaction, so that a concurrent write of the same order waits and the
// checks see its result; a concurrent insert that the checks could not see
// yet makes the write fail on a unique index (orders_one_active, the
// callback token, the primary key), and the transaction is run again, when
// the checks see the row that won and refuse with the usual error.
func (s *PostgresStore) PutOrder(ctx context.Context, o *Order) error {
	return s.putOrder(ctx, o, nil)
}

// putOrder is PutOrder, fenced when fence is not nil: the fence runs first
// in every try's transaction.
func (s *PostgresStore) putOrder(ctx context.Context, o *Order, fence fenceFunc) error {
	data, err := checkedOrderData(o)
	if err != nil {
		return err
	}
	var now, created time.Time
	for try := 0; ; try++ {
		now = s.now().UTC()
		err = s.fencedTx(ctx, fence, func(tx pgx.Tx) error {
			var err error
			created, err = putOrderTx(ctx, pgxExecer{tx}, s.d, o, data, now)
			return err
		})
		if err == nil || try >= postgresRetries || !lostRace(err) {
			break
		}
	}
	if err != nil {
		if constraintOf(err) == "orders_one_active" {
			// Still losing after the retries (a writer that is not
			// PutOrder keeps inserting): the database said it all.
			err = fmt.Errorf("another order is in flight: %w", ErrActiveOrder)
		}
		return fmt.Errorf("put order %s of %q (step %s): %w", o.UniqueID, o.Cert, o.Step, err)
	}
	o.Created, o.Updated = created, now
	return nil
}

// lostRace reports whether err is PostgreSQL refusing a transaction because
// another one got there first: a unique violation, a serialization failure
// or a deadlock. Running the transaction again then gives the right answer.
func lostRace(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "23505", "40001", "40P01":
		return true
	}
	return false
}

// constraintOf returns the name of the constraint err violates, or "".
func constraintOf(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.ConstraintName
	}
	return ""
}

// AddAttempt implements Writer.
func (s *PostgresStore) AddAttempt(ctx context.Context, a Attempt) error {
	return s.addAttempt(ctx, a, nil)
}

// addAttempt is AddAttempt, fenced when fence is not nil.
func (s *PostgresStore) addAttempt(ctx context.Context, a Attempt, fence fenceFunc) error {
	if err := checkAttempt(a); err != nil {
		return err
	}
	var tag pgconn.CommandTag
	err := s.write(ctx, fence, func(q pgQuerier) error {
		var err error
		tag, err = q.Exec(ctx, s.d.rebind(addAttemptSQL), attemptArgs(a)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("add attempt %s of %q: %w", a.UniqueID, a.Cert, err)
	}
	if tag.RowsAffected() != 1 {
		return attemptOfOtherCert(a)
	}
	return nil
}

// postgresPruneLock is the key of the advisory lock a PruneHistory
// transaction tries to take: while one process prunes a table, the others
// skip it rather than wait for, or deadlock with, its row locks. The
// deletes are harmless when run twice (a deleted row is not deleted, nor
// its cost carried, again); the lock only spares the work.
const postgresPruneLock int64 = 0x6463766400000003

// PruneHistory implements Writer. Each table is one statement in a
// transaction that first tries the prune lock; a process that does not get
// it deletes nothing (another one is at it). The attempts are deleted and
// their costs carried in one statement: RETURNING gives the rows this
// statement deleted, so a row another process deleted first is not
// carried twice.
func (s *PostgresStore) PruneHistory(ctx context.Context, p HistoryPolicy) (Pruned, error) {
	perCert, before, limit := p.bounds()
	var out Pruned
	err := s.prune(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `WITH doomed AS (
				DELETE FROM attempts WHERE id IN (
					SELECT id FROM (
						SELECT id, finished, ROW_NUMBER() OVER (PARTITION BY cert ORDER BY id DESC) AS n
						FROM attempts) AS ranked
					WHERE n > $1 AND (n > $2 OR finished COLLATE "C" < $3) ORDER BY id LIMIT $4)
				RETURNING cert, cost
			), carried AS (
				INSERT INTO pruned_costs (cert, cost)
				SELECT cert, SUM(cost) FROM doomed GROUP BY cert
				ON CONFLICT (cert) DO UPDATE SET cost = pruned_costs.cost + excluded.cost
			)
			SELECT count(*) FROM doomed`, KeptAttempts, perCert, before, limit).Scan(&out.Attempts)
	})
	if err != nil {
		return Pruned{}, fmt.Errorf("prune the attempts: %w", err)
	}
	err = s.prune(ctx, func(tx pgx.Tx) error {
		// The step again in the outer WHERE: it is checked on the row
		// as it is when deleted, whatever the selection read.
		tag, err := tx.Exec(ctx, `DELETE FROM orders WHERE unique_id IN (
				SELECT unique_id FROM (
					SELECT unique_id, step, updated,
						ROW_NUMBER() OVER (PARTITION BY cert
							ORDER BY updated COLLATE "C" DESC, unique_id COLLATE "C" DESC) AS n,
						ROW_NUMBER() OVER (PARTITION BY cert, step
							ORDER BY updated COLLATE "C" DESC, unique_id COLLATE "C" DESC) AS k
					FROM orders WHERE step = 'done' OR step = 'failed') AS ranked
				WHERE (n > $1 OR updated COLLATE "C" < $2) AND NOT (step = 'done' AND k <= $3)
					AND unique_id NOT IN (SELECT unique_id FROM certificates)
				ORDER BY unique_id LIMIT $4)
			AND (step = 'done' OR step = 'failed')`, perCert, before, KeptGenerations, limit)
		out.Orders = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return out, fmt.Errorf("prune the orders: %w", err)
	}
	return out, nil
}

// prune runs fn in a transaction if it gets the prune lock; without it,
// it does nothing.
func (s *PostgresStore) prune(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.tx(ctx, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, postgresPruneLock).Scan(&got); err != nil {
			return fmt.Errorf("try the prune lock: %w", err)
		}
		if !got {
			return nil
		}
		return fn(tx)
	})
}

// PutService implements Writer. A service is the account's, not one
// certificate's: its row is written without a lease (every node may learn
// of an end date, and they agree).
func (s *PostgresStore) PutService(ctx context.Context, sv Service) error {
	if err := checkService(sv); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, s.d.rebind(putServiceSQL), serviceArgs(sv)...)
	if err != nil {
		return fmt.Errorf("put service %s: %w", sv.ServiceID, err)
	}
	return nil
}
