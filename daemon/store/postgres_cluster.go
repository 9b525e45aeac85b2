package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds PostgresStore's ClusterStore methods. Their tables are
// postgresClusterMigrations'. Every time they compare or record is the
// database's: clock_timestamp(), the time at which the statement runs (not
// now(), the start of the transaction, which a lock wait would make stale).
// Durations travel as whole microseconds (PostgreSQL's resolution), turned
// into an interval in SQL.

// clusterChannel is the LISTEN/NOTIFY channel of ClusterEvents in the
// schema public. Channels are the database's, not a schema's: a store in
// another schema (another cluster on the same database, or a test) has a
// channel of its own, channelFor's, so that clusters never hear each other.
const clusterChannel = "dcvd"

// channelFor is the channel of the store whose tables are in schema: the
// same on every node of a cluster, and at most PostgreSQL's 63 bytes.
func channelFor(schema string) string {
	if schema == "" || schema == "public" {
		return clusterChannel
	}
	sum := sha256.Sum256([]byte(schema))
	return clusterChannel + "_" + hex.EncodeToString(sum[:8])
}

// checkTTL refuses a lease duration that would make a lease that is expired
// as soon as it is granted (or earlier): one under PostgreSQL's resolution.
func checkTTL(ttl time.Duration) error {
	if ttl.Microseconds() <= 0 {
		return fmt.Errorf("lease duration %v is less than a microsecond", ttl)
	}
	return nil
}

// AcquireLease implements ClusterStore.
//
// It is one upsert: ON CONFLICT DO UPDATE locks the existing row and only
// then evaluates its WHERE, on the row's latest version, so that of
// concurrent acquisitions the first one to lock the row decides and the
// others see its result. The row stays locked when the WHERE refuses, so
// the holder read afterwards for the error is the one that refused.
func (s *PostgresStore) AcquireLease(ctx context.Context, cert, holder string, ttl time.Duration) (Lease, error) {
	switch {
	case cert == "":
		return Lease{}, errors.New("acquire lease: no certificate name")
	case holder == "":
		return Lease{}, fmt.Errorf("acquire lease of %q: no holder", cert)
	}
	if err := checkTTL(ttl); err != nil {
		return Lease{}, fmt.Errorf("acquire lease of %q for %s: %w", cert, holder, err)
	}
	l := Lease{Cert: cert, Holder: holder}
	var held *Lease
	err := s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `INSERT INTO leases AS l (cert, holder, token, expires)
			VALUES ($1, $2, 1, clock_timestamp() + $3::bigint * interval '1 microsecond')
			ON CONFLICT (cert) DO UPDATE SET
				holder = excluded.holder, token = l.token + 1,
				expires = clock_timestamp() + $3::bigint * interval '1 microsecond',
				released = FALSE
			WHERE l.expires <= clock_timestamp() OR l.holder = excluded.holder
			RETURNING token, expires`, cert, holder, ttl.Microseconds()).Scan(&l.Token, &l.Expires)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		cur, err := readLease(ctx, tx, cert)
		if err != nil {
			return fmt.Errorf("read the lease held: %w", err)
		}
		held = &cur.Lease
		return fmt.Errorf("held by %s with token %d until %s: %w",
			cur.Holder, cur.Token, cur.Expires.Format(time.RFC3339Nano), ErrLeaseHeld)
	})
	if err != nil {
		if held != nil {
			return *held, fmt.Errorf("acquire lease of %q for %s: %w", cert, holder, err)
		}
		return Lease{}, fmt.Errorf("acquire lease of %q for %s: %w", cert, holder, err)
	}
	l.Expires = l.Expires.UTC()
	return l, nil
}

// RenewLease implements ClusterStore. An UPDATE that waits for a
// concurrent acquisition evaluates its WHERE again on the row that
// acquisition left, so it never renews a lease taken meanwhile.
func (s *PostgresStore) RenewLease(ctx context.Context, l Lease, ttl time.Duration) (Lease, error) {
	if err := checkTTL(ttl); err != nil {
		return Lease{}, fmt.Errorf("renew lease of %q (token %d): %w", l.Cert, l.Token, err)
	}
	var expires time.Time
	err := s.pool.QueryRow(ctx, `UPDATE leases
		SET expires = clock_timestamp() + $4::bigint * interval '1 microsecond'
		WHERE cert = $1 AND holder = $2 AND token = $3 AND expires > clock_timestamp()
		RETURNING expires`, l.Cert, l.Holder, l.Token, ttl.Microseconds()).Scan(&expires)
	if errors.Is(err, pgx.ErrNoRows) {
		err = leaseLost(ctx, s.pool, l)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("renew lease of %q (token %d): %w", l.Cert, l.Token, err)
	}
	l.Expires = expires.UTC()
	return l, nil
}

// ReleaseLease implements ClusterStore.
func (s *PostgresStore) ReleaseLease(ctx context.Context, l Lease) error {
	_, err := s.pool.Exec(ctx, `UPDATE leases SET expires = clock_timestamp(), released = TRUE
		WHERE cert = $1 AND holder = $2 AND token = $3 AND expires > clock_timestamp()`,
		l.Cert, l.Holder, l.Token)
	if err != nil {
		return fmt.Errorf("release lease of %q (token %d): %w", l.Cert, l.Token, err)
	}
	return nil
}

// Leases implements ClusterStore.
func (s *PostgresStore) Leases(ctx context.Context) ([]Lease, error) {
	rows, err := s.pool.Query(ctx, `SELECT cert, holder, token, expires, released
		FROM leases ORDER BY cert COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("read leases: %w", err)
	}
	defer rows.Close()
	rs, err := collectRows(rows, "read leases", scanLease)
	if err != nil {
		return nil, err
	}
	out := make([]Lease, len(rs))
	for i, r := range rs {
		out[i] = r.Lease
	}
	return out, nil
}

// leaseRow is a row of leases.
type leaseRow struct {
	Lease
	released bool
}

func scanLease(row scanner) (leaseRow, error) {
	var r leaseRow
	if err := row.Scan(&r.Cert, &r.Holder, &r.Token, &r.Expires, &r.released); err != nil {
		return leaseRow{}, err
	}
	r.Expires = r.Expires.UTC()
	return r, nil
}

// readLease reads cert's lease row; the error wraps pgx.ErrNoRows if there
// is none.
func readLease(ctx context.Context, q pgQuerier, cert string) (leaseRow, error) {
	return scanLease(q.QueryRow(ctx, `SELECT cert, holder, token, expires, released
		FROM leases WHERE cert = $1`, cert))
}

// leaseLost returns an error wrapping ErrLeaseLost that says why l is not
// current, as far as the lease row tells now (it is read for the message
// only: the decision was the caller's statement).
func leaseLost(ctx context.Context, q pgQuerier, l Lease) error {
	cur, err := readLease(ctx, q, l.Cert)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("it was never acquired: %w", ErrLeaseLost)
	case err != nil:
		return fmt.Errorf("%w (reading why: %w)", ErrLeaseLost, err)
	case cur.Holder != l.Holder || cur.Token != l.Token:
		return fmt.Errorf("taken by %s with token %d: %w", cur.Holder, cur.Token, ErrLeaseLost)
	case cur.released:
		return fmt.Errorf("released at %s: %w", cur.Expires.Format(time.RFC3339Nano), ErrLeaseLost)
	default:
		return fmt.Errorf("expired at %s: %w", cur.Expires.Format(time.RFC3339Nano), ErrLeaseLost)
	}
}

// Heartbeat implements ClusterStore. Inserting first (and doing nothing on
// a conflict) rather than reading first makes two first heartbeats of one
// name serialize on the primary key: the second sees the first's row.
func (s *PostgresStore) Heartbeat(ctx context.Context, n Node) (*Node, error) {
	switch {
	case n.Name == "":
		return nil, errors.New("heartbeat: no node name")
	case n.Instance == "":
		return nil, fmt.Errorf("heartbeat of node %s: no instance", n.Name)
	}
	started := n.Started.UTC()
	var prev *Node
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO nodes (name, instance, version, started, heartbeat)
			VALUES ($1, $2, $3, $4, clock_timestamp())
			ON CONFLICT (name) DO NOTHING`, n.Name, n.Instance, n.Version, started)
		if err != nil || tag.RowsAffected() == 1 {
			return err
		}
		p, err := scanNode(tx.QueryRow(ctx, `SELECT name, instance, version, started, heartbeat, FALSE
			FROM nodes WHERE name = $1 FOR UPDATE`, n.Name))
		if err != nil {
			return fmt.Errorf("read the previous heartbeat: %w", err)
		}
		prev = &p
		_, err = tx.Exec(ctx, `UPDATE nodes SET instance = $2, version = $3, started = $4, heartbeat = clock_timestamp()
			WHERE name = $1`, n.Name, n.Instance, n.Version, started)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("heartbeat of node %s: %w", n.Name, err)
	}
	return prev, nil
}

// Nodes implements ClusterStore.
func (s *PostgresStore) Nodes(ctx context.Context, within time.Duration) ([]Node, error) {
	// A negative within would put the bound in the future, where no
	// heartbeat is: none alive, as documented, either way.
	rows, err := s.pool.Query(ctx, `SELECT name, instance, version, started, heartbeat,
			heartbeat > clock_timestamp() - $1::bigint * interval '1 microsecond'
		FROM nodes ORDER BY name COLLATE "C"`, max(within.Microseconds(), 0))
	if err != nil {
		return nil, fmt.Errorf("read nodes: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read nodes", scanNode)
}

func scanNode(row scanner) (Node, error) {
	var n Node
	if err := row.Scan(&n.Name, &n.Instance, &n.Version, &n.Started, &n.Heartbeat, &n.Alive); err != nil {
		return Node{}, err
	}
	n.Started, n.Heartbeat = n.Started.UTC(), n.Heartbeat.UTC()
	return n, nil
}

// PutNodeCert implements ClusterStore.
func (s *PostgresStore) PutNodeCert(ctx context.Context, nc NodeCert) error {
	switch {
	case nc.Node == "":
		return fmt.Errorf("put deployment of %q: no node name", nc.Cert)
	case nc.Cert == "":
		return fmt.Errorf("put deployment of node %s: no certificate name", nc.Node)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO node_certificates (node, cert, serial, updated, error)
		VALUES ($1, $2, $3, clock_timestamp(), $4)
		ON CONFLICT (node, cert) DO UPDATE SET
			serial = excluded.serial, updated = excluded.updated, error = excluded.error`,
		nc.Node, nc.Cert, nc.Serial, nc.Error)
	if err != nil {
		return fmt.Errorf("put deployment of %q on node %s: %w", nc.Cert, nc.Node, err)
	}
	return nil
}

// NodeCerts implements ClusterStore.
func (s *PostgresStore) NodeCerts(ctx context.Context) ([]NodeCert, error) {
	rows, err := s.pool.Query(ctx, `SELECT node, cert, serial, updated, error
		FROM node_certificates ORDER BY cert COLLATE "C", node COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("read deployments: %w", err)
	}
	defer rows.Close()
	return collectRows(rows, "read deployments", func(row scanner) (NodeCert, error) {
		var nc NodeCert
		if err := row.Scan(&nc.Node, &nc.Cert, &nc.Serial, &nc.Updated, &nc.Error); err != nil {
			return NodeCert{}, err
		}
		nc.Updated = nc.Updated.UTC()
		return nc, nil
	})
}

// AckFiles implements ClusterStore.
func (s *PostgresStore) AckFiles(ctx context.Context, uniqueID, node string) error {
	switch {
	case uniqueID == "":
		return fmt.Errorf("acknowledge files of node %s: no unique_id", node)
	case node == "":
		return fmt.Errorf("acknowledge files of order %s: no node name", uniqueID)
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO dcv_acks (unique_id, node, written)
		VALUES ($1, $2, clock_timestamp())
		ON CONFLICT (unique_id, node) DO UPDATE SET written = excluded.written`, uniqueID, node)
	if err != nil {
		return fmt.Errorf("acknowledge files of order %s on node %s: %w", uniqueID, node, err)
	}
	return nil
}

// FileAcks implements ClusterStore.
func (s *PostgresStore) FileAcks(ctx context.Context, uniqueID string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT node FROM dcv_acks WHERE unique_id = $1 ORDER BY node COLLATE "C"`, uniqueID)
	if err != nil {
		return nil, fmt.Errorf("read acknowledgements of order %s: %w", uniqueID, err)
	}
	defer rows.Close()
	return collectRows(rows, fmt.Sprintf("read acknowledgements of order %s", uniqueID), func(row scanner) (string, error) {
		var node string
		err := row.Scan(&node)
		return node, err
	})
}

// eventPayload is the JSON of a ClusterEvent on the channel: fixed names,
// as between processes of different versions.
type eventPayload struct {
	Kind     string `json:"kind"`
	Cert     string `json:"cert"`
	UniqueID string `json:"unique_id,omitempty"`
}

// knownEvents are the kinds of ClusterEvent this code sends and delivers.
var knownEvents = map[string]bool{EventOrder: true, EventCertificate: true, EventCallback: true}

// Notify implements ClusterStore. pg_notify outside a transaction is sent
// at once.
func (s *PostgresStore) Notify(ctx context.Context, ev ClusterEvent) error {
	if !knownEvents[ev.Kind] {
		return fmt.Errorf("notify %q of %q: unknown kind of event", ev.Kind, ev.Cert)
	}
	b, err := json.Marshal(eventPayload(ev))
	if err != nil {
		return fmt.Errorf("notify %s of %q: %w", ev.Kind, ev.Cert, err)
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel, string(b)); err != nil {
		return fmt.Errorf("notify %s of %q: %w", ev.Kind, ev.Cert, err)
	}
	return nil
}

// decodeEvent decodes a notification's payload; ok is false for one that
// is malformed or of an unknown kind. Unknown fields are allowed (unlike
// the store's data): a newer dcvd may add some, and an event is only a
// wake-up.
func decodeEvent(payload string) (ev ClusterEvent, ok bool) {
	var p eventPayload
	if err := json.Unmarshal([]byte(payload), &p); err != nil || !knownEvents[p.Kind] {
		return ClusterEvent{}, false
	}
	return ClusterEvent(p), true
}

// Listen implements ClusterStore. The connection is taken from the pool
// (so it is made as the pool's are, and Listen fails once the store is
// closed) and then hijacked: it leaves the pool for good, which neither
// counts it nor hands it to another caller, and Listen closes it.
func (s *PostgresStore) Listen(ctx context.Context, fn func(ClusterEvent)) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("listen for cluster events on %s: %w", s.where, err)
	}
	conn := pc.Hijack()
	defer func() {
		// The connection may be mid-wait; closing it under a
		// context of its own sends Terminate, or gives up quickly.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = conn.Close(cctx)
		cancel()
	}()
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("listen for cluster events on %s: %w", s.where, err)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("listen for cluster events on %s: %w", s.where, err)
		}
		if n.Channel != s.channel {
			continue
		}
		if ev, ok := decodeEvent(n.Payload); ok {
			fn(ev)
		}
	}
}
