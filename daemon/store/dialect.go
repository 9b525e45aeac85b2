package store

import (
	"math"
	"strconv"
	"strings"
)

// sqlDialect holds what truly differs between the SQL of the two drivers:
// everything else (the schema in storeMigrations, the reads in reader.go,
// the shared statements in write.go) is written once, in SQLite's spelling
// with ? placeholders, and rebound for PostgreSQL.
type sqlDialect struct {
	// name names the dialect in tests and errors.
	name string

	// autoID is the column definition of a primary key the database
	// numbers itself, in insertion order.
	autoID string

	// numbered says the placeholders are $1, $2, … (PostgreSQL) rather
	// than ? (SQLite): see rebind.
	numbered bool

	// collate follows a text column in ORDER BY so that it sorts by
	// bytes: SQLite's default (BINARY) already does, PostgreSQL's
	// follows the database's locale unless told COLLATE "C". The times
	// are fixed-width text (formatTime), so sorting them by bytes is
	// sorting them by time.
	collate string

	// lockRow follows a SELECT of one row that a transaction reads to
	// write it: " FOR UPDATE" where transactions run side by side
	// (PostgreSQL, READ COMMITTED), "" where a write transaction holds
	// the database's write lock from its start (SQLite, _txlock=immediate).
	lockRow string

	// jsonText returns the expression of the text of the top-level key
	// of the JSON held (as text) in column, NULL when the key is absent.
	jsonText func(column, key string) string

	// recentAttempts returns the query of Reader.RecentAttempts for a
	// limit > 0 and its arguments: the rows are id, then attemptColumns,
	// in any order. It is the one read whose plan differs, not only its
	// spelling: each database gets the query it runs fastest.
	recentAttempts func(limit int) (query string, args []any)
}

var (
	// sqliteDialect: an INTEGER PRIMARY KEY is SQLite's rowid, which it
	// numbers itself.
	sqliteDialect = sqlDialect{
		name:     "sqlite",
		autoID:   "INTEGER PRIMARY KEY",
		numbered: false,
		collate:  "",
		lockRow:  "",
		jsonText: func(column, key string) string {
			return "json_extract(" + column + ", '$." + key + "')"
		},
		recentAttempts: recentAttemptsByIndex,
	}
	// postgresDialect: PostgreSQL has no rowid; ALWAYS refuses an id
	// written by hand, so that nothing can break the numbering.
	postgresDialect = sqlDialect{
		name:     "postgres",
		autoID:   "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
		numbered: true,
		collate:  ` COLLATE "C"`,
		lockRow:  " FOR UPDATE",
		jsonText: func(column, key string) string {
			return column + "::json ->> '" + key + "'"
		},
		recentAttempts: recentAttemptsRanked,
	}
)

// bytewise returns column as an ORDER BY term that sorts by bytes.
func (d sqlDialect) bytewise(column string) string { return column + d.collate }

// rebind returns q with its ? placeholders in the dialect's style: as
// they are for SQLite, $1, $2, … in order for PostgreSQL. A ? within a
// quoted string literal is left alone.
func (d sqlDialect) rebind(q string) string {
	if !d.numbered || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 16)
	n, quoted := 0, false
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case c == '\'':
			quoted = !quoted
			b.WriteByte(c)
		case c == '?' && !quoted:
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// recentAttemptsByIndex is SQLite's RecentAttempts query. The limit is
// applied in SQL, so that a long history is not read to be thrown away:
// for each certificate (one pass over the index attempts_cert) the id of
// its limit-th newest attempt is looked up in that index, and only the
// attempts from that id on are read. With the pure-Go SQLite this costs a
// third of what ROW_NUMBER() OVER (PARTITION BY cert ORDER BY id DESC)
// does, which sorts every attempt; and less than reading the whole table
// when the histories are longer than the limit (see
// BenchmarkSweep/10k-long-history).
func recentAttemptsByIndex(limit int) (string, []any) {
	return `SELECT a.id, a.cert, a.unique_id, a.started, a.finished, a.outcome, a.cost, a.serial, a.error
			FROM (SELECT cert, (SELECT id FROM attempts AS b WHERE b.cert = g.cert
					ORDER BY id DESC LIMIT 1 OFFSET ?) AS first
				FROM attempts AS g GROUP BY cert) AS c
			JOIN attempts AS a ON a.cert = c.cert AND a.id >= COALESCE(c.first, ?)`,
		[]any{limit - 1, int64(math.MinInt64)}
}

// recentAttemptsRanked is PostgreSQL's RecentAttempts query: the database
// keeps limit per certificate (ROW_NUMBER), so that a long history does
// not cross the network.
func recentAttemptsRanked(limit int) (string, []any) {
	return `SELECT id, ` + attemptColumns + ` FROM (
				SELECT id, ` + attemptColumns + `, ROW_NUMBER() OVER (PARTITION BY cert ORDER BY id DESC) AS n
				FROM attempts) AS recent
			WHERE n <= ?`,
		[]any{limit}
}
