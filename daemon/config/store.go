package config

// This file reads the [store] section: SQLite in daemon.state_dir, or a
// PostgreSQL database shared by the nodes of a cluster, with the
// connection string and the key sealing the private keys (both secrets,
// in any of their three forms).

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dcvd/dcvd/internal/section"
)

// cfgStoreKeys are the keys of [store].
var cfgStoreKeys = []string{"driver", "dsn", "dsn_file", "dsn_env", "node", "lease", "encryption_key",
	"encryption_key_file", "encryption_key_env"}

// cfgStoreKeyHelp says how to make an encryption key, in every message
// about a missing or malformed one.
const cfgStoreKeyHelp = "32 random bytes written as base64 or as 64 hex digits; make one with `openssl rand -base64 32`"

// store reads the [store] section. With SQLite (the default) every key but
// driver is refused: they would silently do nothing, and a file meant for
// a cluster node that lost its driver line must not run alone.
func (l *loader) store(raw map[string]any) StoreConfig {
	st := StoreConfig{Driver: StoreDriverSQLite, Lease: DefaultStoreLease}
	s := l.openSection(raw, "store", cfgStoreKeys...)
	if s == nil {
		return st
	}
	defer l.done(s)
	if d, ok := s.String("driver"); ok {
		if d != StoreDriverSQLite && d != StoreDriverPostgres {
			s.Fail("driver", "%q is neither %q nor %q", d, StoreDriverSQLite, StoreDriverPostgres)
			return st
		}
		st.Driver = d
	} else if s.Has("driver") {
		return st
	}
	if st.Driver == StoreDriverSQLite {
		for _, k := range s.Keys() {
			if k != "driver" && slices.Contains(cfgStoreKeys, k) {
				s.Fail(k, "only with driver = %q (with %q, the state is in %s)", StoreDriverPostgres, StoreDriverSQLite, filepath.Join(l.stateDir, "dcvd.db"))
			}
		}
		return st
	}

	st.DSN = storeDSN(s)
	st.Node = l.storeNode(s)
	if s.Duration("lease", &st.Lease) {
		switch {
		case st.Lease < MinStoreLease:
			s.Fail("lease", "must be at least %s (a shorter lease could run out between two renewals under a slow database), got %s", MinStoreLease, st.Lease)
		case st.Lease > MaxStoreLease:
			s.Fail("lease", "must be at most %s (when a node dies, its certificates wait that long for another), got %s", MaxStoreLease, st.Lease)
		}
	}
	st.EncryptionKey = storeKey(s)
	return st
}

// storeDSN reads dsn, dsn_file or dsn_env and checks that it parses as
// OpenPostgres will parse it. Messages never quote it nor the parser's
// reason: both may hold the password.
func storeDSN(s *section.Section) string {
	dsn, used, set := s.Secret("dsn")
	if !set {
		s.Fail("dsn", "required with driver = %q: set dsn_file (a file holding the connection string, which usually holds a password), dsn_env (an environment variable holding it) or dsn", StoreDriverPostgres)
		return ""
	}
	if dsn == "" {
		return "" // reported by Secret
	}
	if dsn = strings.TrimSpace(dsn); dsn == "" {
		s.Fail(used, "the connection string is blank")
		return ""
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if _, err := url.Parse(dsn); err != nil {
			s.Fail(used, "the postgres:// URL does not parse (not shown: it may hold a password); percent-encode the user name's and password's special characters (@ as %%40, : as %%3A, / as %%2F, ? as %%3F, # as %%23, %% as %%25)")
			return ""
		}
	}
	if _, err := pgxpool.ParseConfig(dsn); err != nil {
		s.Fail(used, "not a PostgreSQL connection string that parses: a postgres://USER:PASSWORD@HOST:PORT/DBNAME URL or key=value pairs such as \"host=db1 dbname=dcvd user=dcvd\", with valid sslmode, port, pool_* and file parameters (the reason is not shown: it may quote the password; psql tells it)")
		return ""
	}
	if used == "dsn" && cfgDSNHasPassword(dsn) {
		s.Warn(used, "a secret written in the config file (the connection string holds a password); prefer dsn_file or dsn_env")
	}
	return dsn
}

// cfgDSNHasPassword tells whether a connection string carries a password,
// erring towards yes: one that does not (peer or certificate
// authentication, a password file) is no secret to warn about.
func cfgDSNHasPassword(dsn string) bool {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, ok := u.User.Password(); ok {
			return true
		}
		return u.Query().Has("password")
	}
	return strings.Contains(strings.ToLower(dsn), "password")
}

// storeNode reads node, defaulting to the host name.
func (l *loader) storeNode(s *section.Section) string {
	if s.Has("node") {
		n, ok := s.String("node")
		if !ok {
			return ""
		}
		if n == "" || len(n) > MaxStoreNodeLen || strings.IndexFunc(n, func(r rune) bool { return !cfgNodeChar(r) }) >= 0 {
			s.Fail("node", "%q must be 1 to %d characters of A-Z, a-z, 0-9, '.', '_' and '-'", n, MaxStoreNodeLen)
			return ""
		}
		return n
	}
	h, err := l.opts.Hostname()
	if err != nil {
		s.Fail("node", "cannot default to the host name (%v): set store.node, a name unique among the nodes ([A-Za-z0-9._-], at most %d characters)", err, MaxStoreNodeLen)
		return ""
	}
	n := cfgNodeFromHostname(h)
	if n == "" {
		s.Fail("node", "the host name %q leaves no usable node name: set store.node, a name unique among the nodes ([A-Za-z0-9._-], at most %d characters)", h, MaxStoreNodeLen)
	}
	return n
}

// cfgNodeFromHostname makes a node name of a host name: its first label
// (nodes are told apart by it, and web1.example.com reads as web1), with
// the characters a node name may not hold dropped, at most
// MaxStoreNodeLen long.
func cfgNodeFromHostname(h string) string {
	h, _, _ = strings.Cut(h, ".")
	h = strings.Map(func(r rune) rune {
		if cfgNodeChar(r) {
			return r
		}
		return -1
	}, h)
	if len(h) > MaxStoreNodeLen {
		h = h[:MaxStoreNodeLen]
	}
	return h
}

// cfgNodeChar tells the characters of a node name: those that need no
// quoting in a log line, a file name or a shell.
func cfgNodeChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-'
}

// storeKey reads the encryption key: encryption_key, encryption_key_file
// or encryption_key_env. No message quotes it.
func storeKey(s *section.Section) []byte {
	v, used, set := s.Secret("encryption_key")
	if !set {
		s.Fail("encryption_key", "required with driver = %q, to seal the private keys kept in the database (the same key on every node): set encryption_key_file (a file holding %s), encryption_key_env or encryption_key", StoreDriverPostgres, cfgStoreKeyHelp)
		return nil
	}
	if v == "" {
		return nil // reported by Secret
	}
	key, err := cfgDecodeStoreKey(v)
	if err != nil {
		s.Fail(used, "%v: must be %s", err, cfgStoreKeyHelp)
		return nil
	}
	if used == "encryption_key" {
		s.WarnInlineSecret(used)
	}
	return key
}

// cfgDecodeStoreKey decodes an encryption key written as 64 hex digits or
// as standard base64, padded or not, around whitespace (a file's trailing
// newline). Errors say what is wrong with it without quoting it.
func cfgDecodeStoreKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("the key is empty")
	}
	isHex := strings.IndexFunc(s, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F')
	}) < 0
	if isHex {
		// Checked before base64, whose alphabet holds the hex digits, so
		// that `openssl rand -hex 16` is told as hex of the wrong length
		// rather than taken as base64 (a base64 key of hex digits alone
		// is a 1-in-10^20 chance).
		if len(s) != 2*StoreEncryptionKeySize {
			return nil, fmt.Errorf("the key is %d hex digits, not %d", len(s), 2*StoreEncryptionKeySize)
		}
		return hex.DecodeString(s)
	}
	enc := base64.RawStdEncoding
	if strings.HasSuffix(s, "=") {
		enc = base64.StdEncoding
	}
	key, err := enc.DecodeString(s)
	if err != nil {
		return nil, errors.New("the key is neither base64 nor hex")
	}
	if len(key) != StoreEncryptionKeySize {
		return nil, fmt.Errorf("the key is %d bytes once decoded from base64, not %d", len(key), StoreEncryptionKeySize)
	}
	return key, nil
}
