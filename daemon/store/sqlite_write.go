package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// This file holds SQLiteStore's writes. Every transaction takes the write
// lock at BEGIN (_txlock=immediate), so that the checks a write makes
// before it writes cannot be overtaken by another process.

// PutCertificate implements Writer.
func (s *SQLiteStore) PutCertificate(ctx context.Context, c *Certificate) error {
	args, err := certificateArgs(c)
	if err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, putCertificateSQL, args...); err != nil {
		return fmt.Errorf("put certificate %q: %w", c.Name, err)
	}
	return nil
}

// PutOrder implements Writer. Its transaction holds the write lock from
// its start, so that nothing changes between its checks and its write.
func (s *SQLiteStore) PutOrder(ctx context.Context, o *Order) error {
	data, err := checkedOrderData(o)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	var created time.Time
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		created, err = putOrderTx(ctx, sqlExecer{tx}, sqliteDialect, o, data, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("put order %s of %q (step %s): %w", o.UniqueID, o.Cert, o.Step, err)
	}
	o.Created, o.Updated = created, now
	return nil
}

// AddAttempt implements Writer.
func (s *SQLiteStore) AddAttempt(ctx context.Context, a Attempt) error {
	if err := checkAttempt(a); err != nil {
		return err
	}
	res, err := s.db.ExecContext(ctx, addAttemptSQL, attemptArgs(a)...)
	if err != nil {
		return fmt.Errorf("add attempt %s of %q: %w", a.UniqueID, a.Cert, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("add attempt %s of %q: %w", a.UniqueID, a.Cert, err)
	}
	if n != 1 {
		return attemptOfOtherCert(a)
	}
	return nil
}

// PruneHistory implements Writer. Each table's doomed rows are selected
// first, then deleted by key in the same transaction, which holds the
// write lock from its start (_txlock=immediate): nothing changes between
// the two, and the costs carried are exactly those of the rows deleted.
func (s *SQLiteStore) PruneHistory(ctx context.Context, p HistoryPolicy) (Pruned, error) {
	perCert, before, limit := p.bounds()
	var out Pruned
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// An attempt's rank is beyond k when its id is below that of its
		// certificate's k-th newest (none when there are fewer): looked up
		// in the index attempts_cert, as RecentAttempts does, rather than
		// numbering every attempt with ROW_NUMBER, which sorts them all.
		list, err := selectDoomed[int64](ctx, tx, `SELECT a.id
			FROM (SELECT cert,
					(SELECT id FROM attempts AS b WHERE b.cert = g.cert ORDER BY id DESC LIMIT 1 OFFSET ?) AS kept,
					(SELECT id FROM attempts AS b WHERE b.cert = g.cert ORDER BY id DESC LIMIT 1 OFFSET ?) AS counted
				FROM attempts AS g GROUP BY cert) AS c
			JOIN attempts AS a ON a.cert = c.cert AND a.id < c.kept
			WHERE a.id < c.counted OR a.finished < ?
			ORDER BY a.id LIMIT ?`,
			KeptAttempts-1, perCert-1, before, limit)
		if err != nil || list == "" {
			return err
		}
		// SQLite wants a WHERE in an upsert's SELECT (its parser
		// could take ON CONFLICT for a join's ON otherwise).
		if _, err := tx.ExecContext(ctx, `INSERT INTO pruned_costs (cert, cost)
			SELECT cert, SUM(cost) FROM attempts WHERE id IN (SELECT value FROM json_each(?)) GROUP BY cert
			ON CONFLICT (cert) DO UPDATE SET cost = pruned_costs.cost + excluded.cost`, list); err != nil {
			return fmt.Errorf("carry the costs over: %w", err)
		}
		out.Attempts, err = execCount(ctx, tx, `DELETE FROM attempts WHERE id IN (SELECT value FROM json_each(?))`, list)
		return err
	})
	if err != nil {
		return Pruned{}, fmt.Errorf("prune the attempts: %w", err)
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		list, err := selectDoomed[string](ctx, tx, `SELECT unique_id FROM (
				SELECT unique_id, step, updated,
					ROW_NUMBER() OVER (PARTITION BY cert ORDER BY updated DESC, unique_id DESC) AS n,
					ROW_NUMBER() OVER (PARTITION BY cert, step ORDER BY updated DESC, unique_id DESC) AS k
				FROM orders WHERE step = 'done' OR step = 'failed') AS ranked
			WHERE (n > ? OR updated < ?) AND NOT (step = 'done' AND k <= ?)
				AND unique_id NOT IN (SELECT unique_id FROM certificates)
			ORDER BY unique_id LIMIT ?`,
			perCert, before, KeptGenerations, limit)
		if err != nil || list == "" {
			return err
		}
		// The step again: an order in flight is never deleted, whatever
		// the selection said.
		out.Orders, err = execCount(ctx, tx, `DELETE FROM orders WHERE unique_id IN (SELECT value FROM json_each(?))
			AND (step = 'done' OR step = 'failed')`, list)
		return err
	})
	if err != nil {
		return out, fmt.Errorf("prune the orders: %w", err)
	}
	return out, nil
}

// selectDoomed reads the one column of the rows a prune selected, as a
// JSON list (for json_each); it is "" when the prune selected none.
func selectDoomed[T any](ctx context.Context, tx *sql.Tx, q string, args ...any) (string, error) {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	doomed, err := collectRows(rows, "select the rows to delete", func(r scanner) (T, error) {
		var v T
		err := r.Scan(&v)
		return v, err
	})
	if err != nil || len(doomed) == 0 {
		return "", err
	}
	list, err := json.Marshal(doomed)
	return string(list), err
}

// execCount runs q in tx and says how many rows it changed.
func execCount(ctx context.Context, tx *sql.Tx, q string, args ...any) (int, error) {
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// PutService implements Writer.
func (s *SQLiteStore) PutService(ctx context.Context, sv Service) error {
	if err := checkService(sv); err != nil {
		return err
	}
	if _, err := s.db.ExecContext(ctx, putServiceSQL, serviceArgs(sv)...); err != nil {
		return fmt.Errorf("put service %s: %w", sv.ServiceID, err)
	}
	return nil
}

// sqlExecer is the execer of the shared write steps over a transaction.
type sqlExecer struct{ tx *sql.Tx }

func (e sqlExecer) queryRow(ctx context.Context, q string, args ...any) scanner {
	return e.tx.QueryRowContext(ctx, q, args...)
}

func (e sqlExecer) exec(ctx context.Context, q string, args ...any) error {
	_, err := e.tx.ExecContext(ctx, q, args...)
	return err
}
