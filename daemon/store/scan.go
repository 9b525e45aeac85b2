package store

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// This file holds the column lists of the shared tables and how their rows
// are read into records (scanCertificate, scanOrder, scanAttempt, …),
// whichever driver's result set they come from.

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

// rowIter is what both drivers' result sets offer (*sql.Rows, pgx.Rows):
// enough to read a list the same way for both.
type rowIter interface {
	scanner
	Next() bool
	Err() error
}

// collectRows reads every row with scan; what, on error, names the read.
// The caller closes rows.
func collectRows[T any](rows rowIter, what string, scan func(scanner) (T, error)) ([]T, error) {
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

const certColumns = `name, serial, names, not_before, not_after, cert_pem, chain_pem, key_file, unique_id, deployed_at, key_sealed`

// certSummaryColumns are certColumns with the PEMs and the sealed key left
// out (empty), for scanCertificate.
const certSummaryColumns = `name, serial, names, not_before, not_after, '', '', key_file, unique_id, deployed_at, ''`

func scanCertificate(row scanner) (*Certificate, error) {
	var (
		c                            Certificate
		names, nb, na, deployedAt    string
		errNB, errNA, errDep, errNms error
	)
	if err := row.Scan(&c.Name, &c.Serial, &names, &nb, &na, &c.CertPEM, &c.ChainPEM, &c.KeyFile, &c.UniqueID, &deployedAt, &c.KeySealed); err != nil {
		return nil, err
	}
	// A list of strings has no fields to refuse and Unmarshal refuses
	// trailing data: decodeJSON's decoder would cost a sweep ~10% more.
	errNms = json.Unmarshal([]byte(names), &c.Names)
	c.NotBefore, errNB = parseTime(nb)
	c.NotAfter, errNA = parseTime(na)
	c.DeployedAt, errDep = parseTime(deployedAt)
	if err := errors.Join(errNms, errNB, errNA, errDep); err != nil {
		return nil, fmt.Errorf("certificate %q: %w", c.Name, err)
	}
	return &c, nil
}

const orderColumns = `unique_id, cert, service_id, step, COALESCE(callback_token, ''), data, created, updated`

func scanOrder(row scanner) (*Order, error) {
	var (
		o                            Order
		step, data, created, updated string
	)
	if err := row.Scan(&o.UniqueID, &o.Cert, &o.ServiceID, &step, &o.CallbackToken, &data, &created, &updated); err != nil {
		return nil, err
	}
	o.Step = Step(step)
	var errC, errU error
	o.Created, errC = parseTime(created)
	o.Updated, errU = parseTime(updated)
	if err := errors.Join(errC, errU, decodeOrderData(data, &o)); err != nil {
		return nil, fmt.Errorf("order %s: %w", o.UniqueID, err)
	}
	return &o, nil
}

const attemptColumns = `cert, unique_id, started, finished, outcome, cost, serial, error`

// scanAttempt reads a row of attemptColumns.
func scanAttempt(row scanner) (Attempt, error) { return scanAttemptAfter(row) }

// scanAttemptAfter reads a row of the columns scanned into lead, then
// attemptColumns.
func scanAttemptAfter(row scanner, lead ...any) (Attempt, error) {
	var (
		a                  Attempt
		uid                *string // NULL when the attempt has no unique_id
		started, finished  string
		outcome            string
		errStart, errFinis error
	)
	dest := append(lead, &a.Cert, &uid, &started, &finished, &outcome, &a.Cost, &a.Serial, &a.Error)
	if err := row.Scan(dest...); err != nil {
		return Attempt{}, err
	}
	if uid != nil {
		a.UniqueID = *uid
	}
	a.Outcome = Step(outcome)
	a.Started, errStart = parseTime(started)
	a.Finished, errFinis = parseTime(finished)
	if err := errors.Join(errStart, errFinis); err != nil {
		return Attempt{}, fmt.Errorf("attempt %s: %w", a.UniqueID, err)
	}
	return a, nil
}

// rankedAttempt is an attempt and its id, its place in the history.
type rankedAttempt struct {
	id int64
	Attempt
}

// scanRankedAttempt reads a row of id, then attemptColumns.
func scanRankedAttempt(row scanner) (rankedAttempt, error) {
	var r rankedAttempt
	a, err := scanAttemptAfter(row, &r.id)
	r.Attempt = a
	return r, err
}

// attemptsByCert groups attempts, in any order, into a map of slices that
// share no memory, each newest (largest id) first: RecentAttempts' queries
// leave the order to it rather than make the database sort.
func attemptsByCert(rows []rankedAttempt) map[string][]Attempt {
	groups := map[string][]rankedAttempt{}
	for _, r := range rows {
		groups[r.Cert] = append(groups[r.Cert], r)
	}
	m := make(map[string][]Attempt, len(groups))
	for cert, g := range groups {
		slices.SortFunc(g, func(a, b rankedAttempt) int { return cmp.Compare(b.id, a.id) })
		h := make([]Attempt, len(g))
		for i, r := range g {
			h[i] = r.Attempt
		}
		m[cert] = h
	}
	return m
}

// scanGeneration reads a row of Generations' query.
func scanGeneration(row scanner) (*Order, error) {
	var (
		o                      Order
		step, created, updated string
		errC, errU             error
	)
	if err := row.Scan(&o.UniqueID, &o.Cert, &step, &o.KeyFile, &created, &updated); err != nil {
		return nil, err
	}
	o.Step = Step(step)
	o.Created, errC = parseTime(created)
	o.Updated, errU = parseTime(updated)
	if err := errors.Join(errC, errU); err != nil {
		return nil, fmt.Errorf("order %s: %w", o.UniqueID, err)
	}
	return &o, nil
}

// generationsByCert groups orders by certificate, keeping their order.
func generationsByCert(orders []*Order) map[string][]*Order {
	m := map[string][]*Order{}
	for _, o := range orders {
		m[o.Cert] = append(m[o.Cert], o)
	}
	return m
}

const serviceColumns = `service_id, cert, status, expires, checked, alerted_days`

func scanService(row scanner) (Service, error) {
	var (
		s                Service
		expires, checked string
	)
	if err := row.Scan(&s.ServiceID, &s.Cert, &s.Status, &expires, &checked, &s.AlertedDays); err != nil {
		return Service{}, err
	}
	var errE, errC error
	s.Expires, errE = parseTime(expires)
	s.Checked, errC = parseTime(checked)
	if err := errors.Join(errE, errC); err != nil {
		return Service{}, fmt.Errorf("service %s: %w", s.ServiceID, err)
	}
	return s, nil
}
