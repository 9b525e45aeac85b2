package store

// storeMigrations are the schema changes, in order, shared by the SQLite and
// PostgreSQL stores: the database's version is the number applied
// (schema_migrations holds one row per version). Each is applied in one
// transaction with its version row. Never edit one that shipped: append a new
// one. A change of the JSON in orders.data that older code could not read (it
// refuses unknown fields) needs a new version too, so that older code refuses
// the database as a whole, not order by order.
//
// The SQL is kept portable: TEXT columns, DOUBLE PRECISION rather than REAL
// (which is single precision in PostgreSQL), times as fixed-width UTC text
// (see formatTime: it keeps nanoseconds, which PostgreSQL's timestamptz would
// round to microseconds, and sorts as the times do), JSON in TEXT, partial
// indexes (both have them). What cannot be portable comes from the dialect.
var storeMigrations = []func(d sqlDialect) []string{
	// 1: the initial schema.
	func(d sqlDialect) []string {
		return []string{
			`CREATE TABLE certificates (
			name        TEXT NOT NULL PRIMARY KEY,
			serial      TEXT NOT NULL,
			names       TEXT NOT NULL,
			not_before  TEXT NOT NULL,
			not_after   TEXT NOT NULL,
			cert_pem    TEXT NOT NULL,
			chain_pem   TEXT NOT NULL,
			key_file    TEXT NOT NULL,
			unique_id   TEXT NOT NULL,
			deployed_at TEXT NOT NULL
		)`,
			// callback_token is NULL, not '', when the order has
			// none: NULLs never collide in a UNIQUE column.
			`CREATE TABLE orders (
			unique_id      TEXT NOT NULL PRIMARY KEY,
			cert           TEXT NOT NULL,
			service_id     TEXT NOT NULL,
			step           TEXT NOT NULL,
			callback_token TEXT UNIQUE,
			data           TEXT NOT NULL,
			created        TEXT NOT NULL,
			updated        TEXT NOT NULL
		)`,
			`CREATE INDEX orders_cert_step ON orders (cert, step)`,
			// The database itself refuses a second order in flight
			// for one certificate, whichever process or code path
			// writes it. PostgresStore.PutOrder relies on the name.
			`CREATE UNIQUE INDEX orders_one_active ON orders (cert)
			WHERE step <> 'done' AND step <> 'failed'`,
			`CREATE TABLE attempts (
			id        ` + d.autoID + `,
			cert      TEXT NOT NULL,
			unique_id TEXT UNIQUE,
			started   TEXT NOT NULL,
			finished  TEXT NOT NULL,
			outcome   TEXT NOT NULL,
			cost      DOUBLE PRECISION NOT NULL,
			serial    TEXT NOT NULL,
			error     TEXT NOT NULL
		)`,
			`CREATE INDEX attempts_cert ON attempts (cert, id)`,
		}
	},
	// 2: cluster mode's sealed private keys. The live certificate's is a
	// column; the order's is the field key_sealed of orders.data, which
	// older code would refuse order by order: this version makes it
	// refuse the database instead.
	func(sqlDialect) []string {
		return []string{
			`ALTER TABLE certificates ADD COLUMN key_sealed TEXT NOT NULL DEFAULT ''`,
		}
	},
	// 3: history retention (Store.PruneHistory). pruned_costs holds, per
	// certificate, the summed cost of the attempts deleted, so that
	// TotalCost still counts every charge. orders_ended lets the ended
	// orders of each certificate be ranked by age from the index alone:
	// in SQLite a row's updated lies after its data, and reaching it
	// through the table would read every order's bulk.
	func(sqlDialect) []string {
		return []string{
			`CREATE TABLE pruned_costs (
			cert TEXT NOT NULL PRIMARY KEY,
			cost DOUBLE PRECISION NOT NULL
		)`,
			`CREATE INDEX orders_ended ON orders (cert, step, updated, unique_id)
			WHERE step = 'done' OR step = 'failed'`,
		}
	},
	// 4: services and the end of their paid period (Store.Services):
	// what the reseller said, when it was asked, and which alert was
	// announced last, so that a restart does not announce it again.
	func(sqlDialect) []string {
		return []string{
			`CREATE TABLE services (
			service_id   TEXT NOT NULL PRIMARY KEY,
			cert         TEXT NOT NULL,
			status       TEXT NOT NULL,
			expires      TEXT NOT NULL,
			checked      TEXT NOT NULL,
			alerted_days INTEGER NOT NULL
		)`,
		}
	},
	// 5: orders.data's dns_records carry the provider's record id
	// (providers.Record.ID, deleted by it on cleanup: a big alidns zone
	// hides a record from a listing). Older code refuses the unknown
	// field order by order; this version makes it refuse the database.
	// Nothing in the tables changes.
	func(sqlDialect) []string {
		return nil
	},
}
