package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// This file holds what the writes of both drivers share: the checks made
// before touching the database, and the statements whose text is the same
// for both but for the placeholders (written with ?, rebound by the
// dialect). How each write runs (its transaction, locks, retries and, in a
// cluster, its fence) is the driver's own.

// knownSteps are the values of Step PutOrder accepts: an order whose step the
// state machine does not know could never be resumed.
var knownSteps = map[Step]bool{
	StepNew: true, StepSubmitted: true, StepPublishing: true, StepPublished: true,
	StepVisible: true, StepRechecked: true, StepIssued: true, StepDeployed: true,
	StepReloaded: true, StepDone: true, StepFailed: true,
}

// checkedOrderData checks what PutOrder refuses whatever the database holds, and
// encodes the order's structured fields.
func checkedOrderData(o *Order) (string, error) {
	switch {
	case o == nil:
		return "", errors.New("put order: nil order")
	case o.UniqueID == "":
		return "", fmt.Errorf("put order of %q: no unique_id", o.Cert)
	case o.Cert == "":
		return "", fmt.Errorf("put order %s: no certificate name", o.UniqueID)
	case !knownSteps[o.Step]:
		return "", fmt.Errorf("put order %s of %q: unknown step %q", o.UniqueID, o.Cert, o.Step)
	}
	data, err := encodeOrderData(o)
	if err != nil {
		return "", fmt.Errorf("put order %s of %q: %w", o.UniqueID, o.Cert, err)
	}
	return data, nil
}

// checkStoredOrder refuses an update of the stored order (cert, step,
// created as stored) that PutOrder must not make, and returns its Created.
func checkStoredOrder(o *Order, cert, step, createdText string) (time.Time, error) {
	if cert != o.Cert {
		return time.Time{}, fmt.Errorf("it belongs to certificate %q", cert)
	}
	if Step(step).Terminal() && !o.Step.Terminal() {
		return time.Time{}, fmt.Errorf("it is %s, and a finished order is never resumed", step)
	}
	return parseTime(createdText)
}

// Statements of PutOrder, once its checks passed: insert a new order, or
// update the stored one (its Cert and Created never change).
const (
	insertOrderSQL = `INSERT INTO orders
		(unique_id, cert, service_id, step, callback_token, data, created, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	updateOrderSQL = `UPDATE orders SET
		service_id = ?, step = ?, callback_token = ?, data = ?, updated = ?
		WHERE unique_id = ?`
)

// execer is what the shared steps of a write need of the transaction
// they run in: sqlExecer (database/sql) and pgxExecer (pgx) adapt the
// drivers'. The statements are in the dialect's spelling already.
type execer interface {
	queryRow(ctx context.Context, q string, args ...any) scanner
	exec(ctx context.Context, q string, args ...any) error
}

// putOrderTx is the body of PutOrder's transaction, for both drivers, once
// checkedOrderData passed: it reads the stored order (locking its row where
// the dialect locks rows), refuses what PutOrder refuses given what is
// stored, and inserts or updates the order with data and the write's time
// now. It returns the order's Created. The unique indexes of the orders
// table are the last guard: where transactions run side by side
// (PostgreSQL), a concurrent insert the checks could not see yet makes the
// write fail on one of them.
func putOrderTx(ctx context.Context, e execer, d sqlDialect, o *Order, data string, now time.Time) (time.Time, error) {
	var token any // NULL when empty: see the orders table
	if o.CallbackToken != "" {
		token = o.CallbackToken
	}
	var (
		cert, step, createdText string
		created                 time.Time
	)
	err := e.queryRow(ctx, d.rebind(`SELECT cert, step, created FROM orders WHERE unique_id = ?`+d.lockRow), o.UniqueID).
		Scan(&cert, &step, &createdText)
	insert := errors.Is(err, sql.ErrNoRows)
	if err != nil && !insert {
		return created, err
	}
	if insert {
		created = now
	} else if created, err = checkStoredOrder(o, cert, step, createdText); err != nil {
		return created, err
	}
	if !o.Step.Terminal() {
		var other string
		err := e.queryRow(ctx, d.rebind(`SELECT unique_id FROM orders
			WHERE cert = ? AND unique_id <> ? AND step <> ? AND step <> ?`),
			o.Cert, o.UniqueID, string(StepDone), string(StepFailed)).Scan(&other)
		if err == nil {
			return created, fmt.Errorf("order %s is in flight: %w", other, ErrActiveOrder)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return created, err
		}
	}
	if token != nil {
		var other string
		err := e.queryRow(ctx, d.rebind(`SELECT unique_id FROM orders WHERE callback_token = ? AND unique_id <> ?`),
			token, o.UniqueID).Scan(&other)
		if err == nil {
			return created, fmt.Errorf("order %s has the same callback token", other)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return created, err
		}
	}
	if insert {
		err = e.exec(ctx, d.rebind(insertOrderSQL),
			o.UniqueID, o.Cert, o.ServiceID, string(o.Step), token, data, formatTime(created), formatTime(now))
	} else {
		err = e.exec(ctx, d.rebind(updateOrderSQL),
			o.ServiceID, string(o.Step), token, data, formatTime(now), o.UniqueID)
	}
	return created, err
}

// putCertificateSQL is PutCertificate's statement, taking certificateArgs.
const putCertificateSQL = `INSERT INTO certificates (` + certColumns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (name) DO UPDATE SET
		serial = excluded.serial, names = excluded.names,
		not_before = excluded.not_before, not_after = excluded.not_after,
		cert_pem = excluded.cert_pem, chain_pem = excluded.chain_pem,
		key_file = excluded.key_file, unique_id = excluded.unique_id,
		deployed_at = excluded.deployed_at, key_sealed = excluded.key_sealed`

// certificateArgs checks c as PutCertificate does and returns the values of
// certColumns for it.
func certificateArgs(c *Certificate) ([]any, error) {
	if c == nil || c.Name == "" {
		return nil, errors.New("put certificate: no name")
	}
	names, err := json.Marshal(c.Names)
	if err != nil {
		return nil, fmt.Errorf("put certificate %q: %w", c.Name, err)
	}
	return []any{c.Name, c.Serial, string(names), formatTime(c.NotBefore), formatTime(c.NotAfter),
		c.CertPEM, c.ChainPEM, c.KeyFile, c.UniqueID, formatTime(c.DeployedAt), c.KeySealed}, nil
}

// addAttemptSQL is AddAttempt's statement, taking the values of
// attemptColumns. The WHERE of DO UPDATE leaves a row of another
// certificate alone; nothing changed then tells the caller so. INSERT … ON
// CONFLICT is atomic in both databases: two processes adding the same
// unique_id at once leave one row.
const addAttemptSQL = `INSERT INTO attempts (` + attemptColumns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (unique_id) DO UPDATE SET
		started = excluded.started, finished = excluded.finished,
		outcome = excluded.outcome, cost = excluded.cost,
		serial = excluded.serial, error = excluded.error
	WHERE attempts.cert = excluded.cert`

// checkAttempt refuses what AddAttempt refuses whatever the database holds.
func checkAttempt(a Attempt) error {
	switch {
	case a.Cert == "":
		return fmt.Errorf("add attempt %s: no certificate name", a.UniqueID)
	case !a.Outcome.Terminal():
		return fmt.Errorf("add attempt %s of %q: outcome %q is not terminal", a.UniqueID, a.Cert, a.Outcome)
	case math.IsNaN(a.Cost) || math.IsInf(a.Cost, 0):
		return fmt.Errorf("add attempt %s of %q: cost %v is not a number", a.UniqueID, a.Cert, a.Cost)
	}
	return nil
}

// attemptArgs are the values of attemptColumns for a.
func attemptArgs(a Attempt) []any {
	var uid any // NULL when empty: see the attempts table
	if a.UniqueID != "" {
		uid = a.UniqueID
	}
	return []any{a.Cert, uid, formatTime(a.Started), formatTime(a.Finished), string(a.Outcome), a.Cost, a.Serial, a.Error}
}

// attemptOfOtherCert is AddAttempt's error when the statement changed no
// row: the unique_id is another certificate's.
func attemptOfOtherCert(a Attempt) error {
	return fmt.Errorf("add attempt %s of %q: that unique_id is recorded for another certificate", a.UniqueID, a.Cert)
}

// putServiceSQL is PutService's statement, taking serviceArgs.
const putServiceSQL = `INSERT INTO services (` + serviceColumns + `) VALUES (?, ?, ?, ?, ?, ?)
	ON CONFLICT (service_id) DO UPDATE SET
		cert = excluded.cert, status = excluded.status, expires = excluded.expires,
		checked = excluded.checked, alerted_days = excluded.alerted_days`

// serviceArgs are the values of serviceColumns for s.
func serviceArgs(s Service) []any {
	return []any{s.ServiceID, s.Cert, s.Status, formatTime(s.Expires), formatTime(s.Checked), s.AlertedDays}
}

func checkService(s Service) error {
	if s.ServiceID == "" {
		return errors.New("put service: no service_id")
	}
	return nil
}

// KeptGenerations is how many of a certificate's newest done orders
// PruneHistory keeps: the live generation and the one before it (the
// deploy directory's previous/), whose keys must stay known.
const KeptGenerations = 2

// bounds returns what the prune queries take from p: the count beyond
// which a certificate's rows go (a count no history reaches when p sets
// none), the age as time text (formatTime: "" when p sets none, and no
// text sorts before ""), and the rows of a table one call deletes.
func (p HistoryPolicy) bounds() (perCert int, before string, limit int) {
	perCert = p.PerCertificate
	if perCert <= 0 {
		perCert = math.MaxInt32
	}
	limit = p.Limit
	if limit <= 0 {
		limit = DefaultPruneLimit
	}
	return perCert, formatTime(p.Before), limit
}
