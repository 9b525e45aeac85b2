package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Service is what dcvd knows of a service: the reseller's order behind a
// configured certificate, with its paid period. Within the period the
// certificate is reissued as often as its lifetime needs; after it, no
// reissue renews it and the admin must buy a renewal (a new service_id).
type Service struct {
	ServiceID string
	// Cert is the certificate configured with this service when it was
	// last checked.
	Cert string
	// Status is the reseller's status of the service, as it said.
	Status string
	// Expires is the end of the paid period; zero when the reseller did
	// not say.
	Expires time.Time
	// Checked is when the reseller was last asked.
	Checked time.Time
	// AlertedDays is the most urgent of daemon.service_alert_days already
	// announced for this Expires, 0 when the end itself was announced,
	// and NoServiceAlert when nothing was: each threshold is announced
	// once, across restarts.
	AlertedDays int
}

// NoServiceAlert is Service.AlertedDays when no alert was announced.
const NoServiceAlert = math.MaxInt32

// Ended reports whether the service's paid period is over at now.
func (s *Service) Ended(now time.Time) bool {
	return s != nil && !s.Expires.IsZero() && !now.Before(s.Expires)
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

// putServiceSQL is PutService's statement for both drivers, which differ
// only in their placeholders (given for serviceColumns, in order).
func putServiceSQL(placeholders string) string {
	return `INSERT INTO services (` + serviceColumns + `) VALUES (` + placeholders + `)
		ON CONFLICT (service_id) DO UPDATE SET
			cert = excluded.cert, status = excluded.status, expires = excluded.expires,
			checked = excluded.checked, alerted_days = excluded.alerted_days`
}

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

// Services implements Store.
func (s *SQLiteStore) Services(ctx context.Context) ([]Service, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+serviceColumns+` FROM services ORDER BY service_id`)
	if err != nil {
		return nil, fmt.Errorf("read the services: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read the services", scanService)
}

// PutService implements Store.
func (s *SQLiteStore) PutService(ctx context.Context, sv Service) error {
	if err := checkService(sv); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, putServiceSQL("?, ?, ?, ?, ?, ?"), serviceArgs(sv)...)
	if err != nil {
		return fmt.Errorf("put service %s: %w", sv.ServiceID, err)
	}
	return nil
}

// Services implements Store.
func (s *PostgresStore) Services(ctx context.Context) ([]Service, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+serviceColumns+` FROM services ORDER BY service_id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("read the services: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read the services", scanService)
}

// PutService implements Store. A service is the account's, not one
// certificate's: its row is written without a lease (every node may learn
// of an end date, and they agree).
func (s *PostgresStore) PutService(ctx context.Context, sv Service) error {
	if err := checkService(sv); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, putServiceSQL("$1, $2, $3, $4, $5, $6"), serviceArgs(sv)...)
	if err != nil {
		return fmt.Errorf("put service %s: %w", sv.ServiceID, err)
	}
	return nil
}

// Services implements Store: the store's own.
func (f *fencedStore) Services(ctx context.Context) ([]Service, error) { return f.s.Services(ctx) }

// PutService implements Store: the store's own (see PostgresStore.PutService).
func (f *fencedStore) PutService(ctx context.Context, sv Service) error {
	return f.s.PutService(ctx, sv)
}
