package config

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/BurntSushi/toml"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/notify"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// Defaults of the [daemon] section.
const (
	DefaultStateDir      = "/var/lib/dcvd"
	DefaultSchedule      = "17 */6 * * *"
	DefaultMaxConcurrent = 4
	DefaultPollInterval  = 10 * time.Second
	DefaultLogFormat     = "console"
	DefaultLogLevel      = "info"
)

// cfgMaxPollInterval is where the detail polling backs off to; a first poll
// slower than that would make the backoff pointless.
const cfgMaxPollInterval = 5 * time.Minute

// cfgMaxRenewBefore is the longest lifetime a publicly trusted certificate
// may have (398 days): renewing earlier than that would renew constantly.
const cfgMaxRenewBefore = 398 * 24 * time.Hour

// Config is the whole configuration file, checked and with defaults applied.
type Config struct {
	// Path is the file it was loaded from.
	Path   string
	API    APIConfig
	Daemon DaemonConfig
	// Store is where the state lives: SQLite in daemon.state_dir, or a
	// PostgreSQL database shared by the nodes of a cluster.
	Store StoreConfig
	// DNS holds every configured [dns.NAME] section by NAME.
	DNS map[string]*providers.DNS
	// Certificates are the [[certificate]] entries, in file order.
	Certificates []CertConfig
	// Notify are the [notify.NAME] channels, by name order.
	Notify []notify.Configured
	// Include are the include patterns of the main file, made absolute
	// (relative ones are relative to its directory); Fragments the files
	// they matched, in the order read.
	Include   []string
	Fragments []string
	// CertFile names the included file each certificate came from, by
	// certificate name; a certificate of the main file is not in it. Kept
	// out of CertConfig so that moving a certificate into a fragment does
	// not count as a change on reload.
	CertFile map[string]string
}

// APIConfig is the [api] section: how to reach and authenticate to the
// reseller.
type APIConfig struct {
	BaseURL     string
	AccessKeyID string
	// AccessKeySecret is the secret itself, whichever way it was given. It
	// is never put in an error or a log line.
	AccessKeySecret string
	Timeout         time.Duration
	// CARootsFile, when set, is a PEM bundle that issued chains must verify
	// to (instead of the system roots): for private CAs and the sandbox.
	CARootsFile string
	// MaxRequestsPerSecond caps the requests sent to the reseller, retries
	// included (reseller.Config.MaxRequestsPerSecond); 0 means no cap. A
	// mass reissue (dcvd reissue --all) otherwise sends as fast as
	// daemon.max_concurrent allows, and a reseller that counts requests
	// answers HTTP 429 and slows every order down.
	MaxRequestsPerSecond float64
}

// String describes the section without the secret, so that printing it
// cannot leak the secret.
func (a APIConfig) String() string {
	return fmt.Sprintf("api{base_url=%s access_key_id=%s timeout=%s ca_roots_file=%q max_requests_per_second=%v}",
		a.BaseURL, a.AccessKeyID, a.Timeout, a.CARootsFile, a.MaxRequestsPerSecond)
}

// GoString is String, so that %#v does not print the secret either.
func (a APIConfig) GoString() string { return a.String() }

// CARoots reads CARootsFile. It returns nil and no error when CARootsFile
// is not set, meaning the system roots.
func (a APIConfig) CARoots() (*x509.CertPool, error) {
	if a.CARootsFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(a.CARootsFile)
	if err != nil {
		return nil, fmt.Errorf("read CA roots: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA roots %s: certificate %d: %w", a.CARootsFile, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("CA roots %s: no PEM certificate in the file", a.CARootsFile)
	}
	return pool, nil
}

// DaemonConfig is the [daemon] section.
type DaemonConfig struct {
	// StateDir holds the SQLite database and the private keys.
	StateDir string
	// Schedule is a standard 5-field cron expression (or a descriptor such
	// as "@hourly") for the renewal checks.
	Schedule string
	// CallbackListen is where the CA's callbacks arrive ("host:port"), and
	// CallbackURL the public base URL that reaches it (no trailing slash).
	// Both or neither are set.
	CallbackListen string
	CallbackURL    string
	// HTTPListen, when set, is the "host:port" of a listener inside the
	// daemon that serves pending HTTP validation files (it may equal
	// CallbackListen: one listener then serves both).
	HTTPListen    string
	LogFormat     string // "console" or "json"
	LogLevel      string // "debug", "info", "warn" or "error"
	MaxConcurrent int
	// PollInterval is the first wait between detail polls of an order;
	// it backs off to 5 minutes.
	PollInterval time.Duration
	// MetricsListen, when set, is the "host:port" serving /metrics
	// (Prometheus) and /healthz.
	MetricsListen string
	// ExpiryAlertDays are the days before expiry at which a certificate
	// without a successful renewal raises an alert, each once, most
	// distant first.
	ExpiryAlertDays []int
	// ServiceAlertDays are the days before its service (the paid period
	// of the order) ends at which a certificate raises an alert, each
	// once, most distant first: after the end no reissue can renew it.
	ServiceAlertDays []int
	// HistoryRetention is how long the history of ended orders (attempts
	// and order rows) is kept; HistoryPerCertificate how many of a
	// certificate's attempts at most. The keys of failed and superseded
	// orders go at the next housekeeping pass whatever these say; the
	// live certificate, its key and the previous generation's are always
	// kept.
	HistoryRetention      time.Duration
	HistoryPerCertificate int
}

// Drivers of the [store] section.
const (
	// StoreDriverSQLite keeps the state in daemon.state_dir/dcvd.db, for
	// one dcvd alone.
	StoreDriverSQLite = "sqlite"
	// StoreDriverPostgres keeps it in a PostgreSQL database that several
	// dcvd processes (the nodes of a cluster) share.
	StoreDriverPostgres = "postgres"
)

// Defaults and bounds of the [store] section.
const (
	// DefaultStoreLease is how long a node's lease on a certificate lasts
	// without renewal.
	DefaultStoreLease = time.Minute
	// MinStoreLease leaves the renewals of a lease time for a database
	// round trip or two.
	MinStoreLease = 2 * time.Second
	// MaxStoreLease bounds how long the certificates of a node that died
	// wait for another node to take them over.
	MaxStoreLease = time.Hour
	// StoreEncryptionKeySize is the size in bytes of store.encryption_key,
	// an AES-256 key.
	StoreEncryptionKeySize = 32
	// MaxStoreNodeLen bounds store.node, which is stored, logged and shown
	// by "dcvd status".
	MaxStoreNodeLen = 63
)

// StoreConfig is the [store] section: where the state (orders, live
// certificates, attempts) is kept, and, with PostgreSQL, how this process
// takes part in a cluster.
type StoreConfig struct {
	// Driver is StoreDriverSQLite (the default) or StoreDriverPostgres.
	Driver string
	// DSN is the PostgreSQL connection string (a postgres:// URL or libpq
	// key=value pairs), whichever way it was given; "" with SQLite. It
	// usually holds a password: it is never put in an error or a log
	// line, and String does not print it.
	DSN string
	// Node names this process among the nodes sharing the database: it
	// holds leases, heartbeats and reports what its deploy directories
	// hold under that name. 1 to MaxStoreNodeLen characters of
	// [A-Za-z0-9._-]; by default the host name up to its first dot. ""
	// with SQLite.
	Node string
	// Lease is how long this node's lease on a certificate lasts without
	// renewal: how long its certificates wait for another node to take
	// them over when it dies, measured on the database's clock.
	// DefaultStoreLease unless set; from MinStoreLease to MaxStoreLease.
	Lease time.Duration
	// EncryptionKey is the StoreEncryptionKeySize-byte AES-256 key that
	// seals the private keys kept in the database; nil with SQLite. Every
	// node of a cluster needs the same one. It is never printed.
	EncryptionKey []byte
}

// String describes the section without the DSN and the key, so that
// printing it cannot leak either.
func (s StoreConfig) String() string {
	set := func(b bool) string {
		if b {
			return "(set)"
		}
		return "(none)"
	}
	return fmt.Sprintf("store{driver=%s node=%s lease=%s dsn=%s encryption_key=%s}",
		s.Driver, s.Node, s.Lease, set(s.DSN != ""), set(len(s.EncryptionKey) > 0))
}

// GoString is String, so that %#v does not print the secrets either.
func (s StoreConfig) GoString() string { return s.String() }

// Defaults and bounds of the history kept ([daemon] history_retention,
// history_per_certificate): a year and a month covers a yearly
// certificate's previous renewal; 100 attempts a good many failures.
const (
	DefaultHistoryRetention      = 400 * 24 * time.Hour
	MinHistoryRetention          = 24 * time.Hour
	DefaultHistoryPerCertificate = 100
	MaxHistoryPerCertificate     = 100000
)

// DefaultExpiryAlertDays escalate as expiry nears.
var DefaultExpiryAlertDays = []int{14, 7, 3, 1}

// DefaultServiceAlertDays leave time to buy a renewal: a purchase may need
// an approval, a budget or a new order's validation.
var DefaultServiceAlertDays = []int{60, 30, 14, 7}

// CertConfig is one [[certificate]].
type CertConfig struct {
	Name      string
	ServiceID string
	KeyType   string
	ReuseKey  bool
	// DNS names the [dns.NAME] section that publishes the dns-validated
	// names.
	DNS string
	// Webroots are the document roots that serve the http/https-validated
	// names (every one of them gets each file).
	Webroots []httpchallenge.Webroot
	// Standalone is the "host:port" dcvd listens on while a file is
	// pending, for hosts with no web server.
	Standalone string
	// HTTPConnect is where the self-check connects instead of resolving
	// the name ("host:port").
	HTTPConnect string
	// RenewBefore is how long before expiry to renew; zero means when a
	// third of the lifetime remains.
	RenewBefore  time.Duration
	ContactEmail string
	// Domains maps each normalized name to its DCV method.
	Domains map[string]reseller.Method
	// Organization holds the company data of OV/EV/IV certificates; nil
	// when not configured.
	Organization *reseller.Organization
	Deploy       deploy.Spec
}

// Names returns the certificate's names, sorted.
func (c CertConfig) Names() []string {
	names := make([]string, 0, len(c.Domains))
	for n := range c.Domains {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// LoadOptions are the process's outside world, replaceable in tests.
type LoadOptions struct {
	// LookupEnv reads the *_env keys; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// ReadFile reads the secret files (*_file keys); nil means os.ReadFile.
	// The configuration file itself is always read with os.ReadFile.
	ReadFile func(string) ([]byte, error)
	// Hostname gives store.node its default; nil means os.Hostname.
	Hostname func() (string, error)
	// Providers is given to providers.New for every [dns.NAME] section;
	// its LookupEnv and ReadFile default to the ones above.
	Providers providers.Options
	// SkipIncludes loads the main file alone: the include patterns are
	// kept in Config.Include but no file is read ("dcvd import" reaches
	// the API even while a fragment it wrote waits to be completed).
	SkipIncludes bool
}

// ConfigError is one problem of a configuration: the key concerned, such
// as certificate[shop].deploy.dir, and what is wrong with it.
type ConfigError struct {
	// File is the included file (config include) the key is in; "" for
	// the main configuration file, which the caller names.
	File   string
	Key    string
	Reason string
}

// Error renders "KEY: reason", or "FILE: KEY: reason" for a key of an
// included file (KEY is left out when the problem is the file's own, such
// as a syntax error).
func (e *ConfigError) Error() string {
	msg := e.Reason
	if e.Key != "" {
		msg = e.Key + ": " + msg
	}
	if e.File != "" {
		msg = e.File + ": " + msg
	}
	return msg
}

// LoadConfig reads, checks and completes the configuration at path. It
// reports every problem at once: the error joins one *ConfigError per
// problem (unknown keys, wrong types, missing or invalid values, DCV rules),
// sorted by key; a TOML syntax error alone is reported with its line. The
// warnings say what is allowed but unwise, each as "KEY: reason". On error
// the config is nil. Secrets never appear in errors or warnings.
func LoadConfig(path string, opts LoadOptions) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	return parseConfig(path, data, opts)
}

// tomlQuoted matches the text the TOML parser's messages quote from the
// file ("expected value but found \"abc\" instead", "invalid float: '1e'").
var tomlQuoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'[^']*'`)

func parseConfig(path string, data []byte, opts LoadOptions) (*Config, []string, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// The parser quotes what it could not read, which may be a
			// secret typed without quotes: the line and column say where.
			return nil, nil, fmt.Errorf("config %s: line %d, column %d: %s", path, pe.Position.Line, pe.Position.Col,
				tomlQuoted.ReplaceAllString(pe.Message, "(not shown)"))
		}
		return nil, nil, fmt.Errorf("config %s: syntax error (not shown: it may quote a secret)", path)
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	opts.ReadFile = credentialsReadFile(opts.LookupEnv, opts.ReadFile)
	if opts.Hostname == nil {
		opts.Hostname = os.Hostname
	}
	if opts.Providers.LookupEnv == nil {
		opts.Providers.LookupEnv = opts.LookupEnv
	}
	if opts.Providers.ReadFile == nil {
		opts.Providers.ReadFile = opts.ReadFile
	}
	l := &loader{opts: opts}
	l.include(path, raw)
	cfg := l.load(path, raw)
	SortErrors(l.errs)
	sort.Strings(l.warns)
	if len(l.errs) > 0 {
		return nil, l.warns, errors.Join(l.errs...)
	}
	return cfg, l.warns, nil
}

// credentialsReadFile lets secret file paths name systemd's credentials
// directory ("${CREDENTIALS_DIRECTORY}/api-secret"), so that secrets can be
// passed with LoadCredential= and never sit in a file dcvd's user can read
// outside the service.
func credentialsReadFile(lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) func(string) ([]byte, error) {
	return func(p string) ([]byte, error) {
		if !strings.Contains(p, "$CREDENTIALS_DIRECTORY") && !strings.Contains(p, "${CREDENTIALS_DIRECTORY}") {
			return readFile(p)
		}
		dir, ok := lookupEnv("CREDENTIALS_DIRECTORY")
		if !ok || dir == "" {
			return nil, fmt.Errorf("%s names $CREDENTIALS_DIRECTORY, which is not set (it is set by systemd for a unit with LoadCredential=)", p)
		}
		return readFile(strings.NewReplacer("${CREDENTIALS_DIRECTORY}", dir, "$CREDENTIALS_DIRECTORY", dir).Replace(p))
	}
}

// ParseDuration parses a duration in Go's syntax ("90m", "1h30m") that may
// also use "d" for days of 24 hours ("30d", "1d12h", "1.5d").
func ParseDuration(s string) (time.Duration, error) {
	bad := func() error {
		return fmt.Errorf("invalid duration %q: use numbers with units (ns, us, ms, s, m, h, d) such as \"90s\", \"720h\" or \"30d\"", s)
	}
	rest := s
	neg := false
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	if rest == "0" {
		return 0, nil
	}
	if rest == "" {
		return 0, bad()
	}
	isNum := func(c byte) bool { return c == '.' || ('0' <= c && c <= '9') }
	var total time.Duration
	for rest != "" {
		i := 0
		for i < len(rest) && isNum(rest[i]) {
			i++
		}
		j := i
		for j < len(rest) && !isNum(rest[j]) {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		if num == "" || unit == "" {
			return 0, bad()
		}
		var d time.Duration
		if unit == "d" {
			h, err := time.ParseDuration(num + "h")
			if err != nil {
				return 0, bad()
			}
			if h > math.MaxInt64/24 {
				return 0, fmt.Errorf("invalid duration %q: too long", s)
			}
			d = 24 * h
		} else {
			var err error
			if d, err = time.ParseDuration(num + unit); err != nil {
				return 0, bad()
			}
		}
		if total > math.MaxInt64-d {
			return 0, fmt.Errorf("invalid duration %q: too long", s)
		}
		total += d
	}
	if neg {
		total = -total
	}
	return total, nil
}

// loader collects the problems of one configuration file.
type loader struct {
	opts  LoadOptions
	errs  []error
	warns []string
	// stateDir is daemon.state_dir, where SQLite keeps the state.
	stateDir string
	// httpListen is daemon.http_listen, which certificates may rely on.
	httpListen     string
	callbackListen string
	// dnsSections are the [dns.NAME] names present in the file (configured
	// or not), and dnsUsed those a certificate names.
	dnsSections map[string]bool
	dnsUsed     map[string]bool

	// file is the included file being read, "" for the main one: every
	// problem and warning names it (see config_include.go).
	file string
	// includes holds the include patterns, the fragments read and where
	// each merged certificate and [dns.NAME] came from.
	includes includeState
}

func (l *loader) fail(key, format string, args ...any) {
	l.errs = append(l.errs, &ConfigError{File: l.file, Key: key, Reason: fmt.Sprintf(format, args...)})
}

func (l *loader) warn(key, format string, args ...any) {
	l.addWarns(key + ": " + fmt.Sprintf(format, args...))
}

// addWarns records warnings made elsewhere (providers, notify), naming the
// included file being read.
func (l *loader) addWarns(warns ...string) {
	for _, w := range warns {
		if l.file != "" {
			w = l.file + ": " + w
		}
		l.warns = append(l.warns, w)
	}
}

var cfgTopLevel = []string{"api", "certificate", "daemon", "dns", "include", "notify", "store"}

func (l *loader) load(path string, raw map[string]any) *Config {
	cfg := &Config{Path: path, DNS: map[string]*providers.DNS{}}
	for _, k := range cfgSortedKeys(raw) {
		if !slices.Contains(cfgTopLevel, k) {
			l.fail(cfgKeyPart(k), "unknown section or key (known: %s)", strings.Join(cfgTopLevel, ", "))
		}
	}
	cfg.API = l.api(raw)
	cfg.Daemon = l.daemon(raw)
	l.stateDir = cfg.Daemon.StateDir
	cfg.Store = l.store(raw)
	l.dnsSections = map[string]bool{}
	l.dnsUsed = map[string]bool{}
	rawDNS := l.dnsTables(raw)
	cfg.Certificates = l.certificates(raw)
	cfg.Notify = l.notify(raw)
	for _, name := range cfgSortedKeys(rawDNS) {
		l.file = l.includes.dnsFile[name]
		d, warns, err := providers.New(name, rawDNS[name], l.opts.Providers)
		l.addWarns(warns...)
		if err != nil {
			l.providerErrors(name, err)
		} else {
			cfg.DNS[name] = d
			if !l.dnsUsed[name] {
				l.warn("dns."+cfgKeyPart(name), "not used by any certificate")
			}
		}
		l.file = ""
	}
	l.includes.complete(cfg)
	return cfg
}

// notify configures the [notify.NAME] channels with package notify, whose
// "notify.NAME.key: reason" errors are re-filed as ConfigErrors.
func (l *loader) notify(raw map[string]any) []notify.Configured {
	v, ok := raw["notify"]
	if !ok {
		return nil
	}
	tables, ok := v.(map[string]any)
	if !ok {
		l.fail("notify", "must be tables such as [notify.ops], not %s", cfgTypeName(v))
		return nil
	}
	var out []notify.Configured
	for _, name := range cfgSortedKeys(tables) {
		sec, ok := tables[name].(map[string]any)
		if !ok {
			l.fail("notify."+cfgKeyPart(name), "must be a table [notify.%s], not %s", name, cfgTypeName(tables[name]))
			continue
		}
		c, warns, errs := notify.Parse(name, sec, l.opts.LookupEnv, l.opts.ReadFile)
		l.addWarns(warns...)
		for _, e := range errs {
			key, reason, found := strings.Cut(e.Error(), ": ")
			if !found {
				key, reason = "notify."+cfgKeyPart(name), e.Error()
			}
			l.fail(key, "%s", reason)
		}
		if len(errs) == 0 {
			out = append(out, c)
		}
	}
	return out
}

// providerErrors re-files the joined "dns.NAME.key: reason" errors of
// providers.New as ConfigErrors, so that they sort with the others.
func (l *loader) providerErrors(name string, err error) {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		msg := e.Error()
		if i := strings.Index(msg, ": "); i > 0 && strings.HasPrefix(msg, "dns.") {
			l.fail(msg[:i], "%s", msg[i+2:])
		} else {
			l.fail("dns."+cfgKeyPart(name), "%s", msg)
		}
	}
}

// section is one TOML table being read; path is its key path.
type section struct {
	l    *loader
	path string
	m    map[string]any
}

func (s section) key(k string) string { return s.path + "." + cfgKeyPart(k) }

func (s section) has(k string) bool {
	_, ok := s.m[k]
	return ok
}

// unknown reports every key of the table that is not in known.
func (s section) unknown(known ...string) {
	for _, k := range cfgSortedKeys(s.m) {
		if !slices.Contains(known, k) {
			s.l.fail(s.key(k), "unknown key (known here: %s)", strings.Join(known, ", "))
		}
	}
}

// str returns the string at k; ok is false when k is absent or not a
// string (which is reported). The value is never echoed: it may be a
// secret.
func (s section) str(k string) (string, bool) {
	v, present := s.m[k]
	if !present {
		return "", false
	}
	str, ok := v.(string)
	if !ok {
		s.l.fail(s.key(k), "must be a string, not %s", cfgTypeName(v))
		return "", false
	}
	return str, true
}

// required returns the non-empty string at k, reporting it when absent or
// empty; what says what belongs there.
func (s section) required(k, what string) (string, bool) {
	if !s.has(k) {
		s.l.fail(s.key(k), "required: %s", what)
		return "", false
	}
	v, ok := s.str(k)
	if !ok {
		return "", false
	}
	if strings.TrimSpace(v) == "" {
		s.l.fail(s.key(k), "must not be empty: %s", what)
		return "", false
	}
	return v, true
}

func (s section) boolean(k string) (bool, bool) {
	v, present := s.m[k]
	if !present {
		return false, false
	}
	b, ok := v.(bool)
	if !ok {
		s.l.fail(s.key(k), "must be true or false, not %s", cfgTypeName(v))
	}
	return b, ok
}

func (s section) integer(k string) (int64, bool) {
	v, present := s.m[k]
	if !present {
		return 0, false
	}
	n, ok := v.(int64)
	if !ok {
		s.l.fail(s.key(k), "must be an integer, not %s", cfgTypeName(v))
	}
	return n, ok
}

// duration reads a positive duration string at k into *dst, leaving the
// default in place when k is absent or an empty string.
func (s section) duration(k string, dst *time.Duration) bool {
	v, present := s.m[k]
	if !present {
		return false
	}
	str, ok := v.(string)
	if !ok {
		s.l.fail(s.key(k), "must be a duration string such as \"30s\", \"720h\" or \"30d\", not %s", cfgTypeName(v))
		return false
	}
	if str == "" {
		return false
	}
	d, err := ParseDuration(str)
	if err != nil {
		s.l.fail(s.key(k), "%v", err)
		return false
	}
	if d <= 0 {
		s.l.fail(s.key(k), "must be positive, got %q", str)
		return false
	}
	*dst = d
	return true
}

// table returns the sub-table at k.
func (s section) table(k string) (section, bool) {
	v, present := s.m[k]
	if !present {
		return section{}, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		s.l.fail(s.key(k), "must be a table, not %s", cfgTypeName(v))
		return section{}, false
	}
	return section{l: s.l, path: s.key(k), m: m}, true
}

// hostPort reads a "host:port" address at k; listeners may use port 0
// (any free port, for tests).
func (s section) hostPort(k string, listener bool) (string, bool) {
	v, ok := s.str(k)
	if !ok {
		return "", false
	}
	if err := cfgCheckHostPort(v, listener); err != nil {
		s.l.fail(s.key(k), "%v", err)
		return "", false
	}
	return v, true
}

func cfgCheckHostPort(addr string, listener bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not \"host:port\"", addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || (p == 0 && !listener) {
		return fmt.Errorf("%q: port must be a number from 1 to 65535", addr)
	}
	if !listener && host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	return nil
}

// url reads an absolute http(s) URL at k.
func (s section) url(k string) (string, bool) {
	v, ok := s.str(k)
	if !ok {
		return "", false
	}
	u, err := url.Parse(v)
	switch {
	case cfgHasSpaceOrControl(v):
		// url.Parse takes a space in the path; the CA or the client would
		// then fail on it after the config was accepted.
		s.l.fail(s.key(k), "contains a space or a control character: percent-encode it (a space is %%20)")
	case err != nil:
		s.l.fail(s.key(k), "not a valid URL")
	case u.User != nil:
		// Not echoed: the user info may hold a password.
		s.l.fail(s.key(k), "must not contain user info")
	case u.Scheme != "http" && u.Scheme != "https":
		s.l.fail(s.key(k), "%q is not an absolute http or https URL", v)
	case u.Hostname() == "":
		s.l.fail(s.key(k), "%q has no host", v)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		s.l.fail(s.key(k), "%q must not have a query or fragment", v)
	default:
		return v, true
	}
	return "", false
}

var cfgAPIKeys = []string{"base_url", "access_key_id", "access_key_secret", "access_key_secret_file",
	"access_key_secret_env", "timeout", "ca_roots_file", "max_requests_per_second"}

func (l *loader) api(raw map[string]any) APIConfig {
	a := APIConfig{Timeout: reseller.DefaultTimeout}
	v, present := raw["api"]
	if !present {
		l.fail("api", "required section [api] is missing (base_url, access_key_id, access_key_secret_file)")
		return a
	}
	m, ok := v.(map[string]any)
	if !ok {
		l.fail("api", "must be a table [api], not %s", cfgTypeName(v))
		return a
	}
	s := section{l: l, path: "api", m: m}
	s.unknown(cfgAPIKeys...)
	if _, ok := s.required("base_url", "the reseller API's base URL, ending in /api/v1"); ok {
		if u, ok := s.url("base_url"); ok {
			a.BaseURL = u
			if pu, _ := url.Parse(u); pu.Scheme == "http" && !cfgIsLoopback(pu.Hostname()) {
				l.warn(s.key("base_url"), "plain http to a remote host: requests and certificates travel unencrypted")
			}
		}
	}
	if id, ok := s.required("access_key_id", "the access key ID from the reseller's console"); ok {
		a.AccessKeyID = strings.TrimSpace(id)
	}
	a.AccessKeySecret = l.secret(s)
	s.duration("timeout", &a.Timeout)
	if f, ok := s.str("ca_roots_file"); ok {
		if f == "" {
			l.fail(s.key("ca_roots_file"), "must be a file path (or leave the key out to use the system roots)")
		} else {
			a.CARootsFile = f
		}
	}
	a.MaxRequestsPerSecond = s.requestRate("max_requests_per_second")
	return a
}

// requestRate reads a rate in requests per second at k: an integer or a
// float, 0 or more (0, like an absent key, means no limit).
func (s section) requestRate(k string) float64 {
	v, present := s.m[k]
	if !present {
		return 0
	}
	var r float64
	switch n := v.(type) {
	case int64:
		r = float64(n)
	case float64:
		r = n
	default:
		s.l.fail(s.key(k), "must be a number of requests per second such as 20 or 0.5, not %s", cfgTypeName(v))
		return 0
	}
	switch {
	case math.IsNaN(r) || math.IsInf(r, 0):
		s.l.fail(s.key(k), "must be a finite number of requests per second (0 or leaving the key out means no limit), got %v", r)
		return 0
	case r < 0:
		s.l.fail(s.key(k), "must not be negative (0 or leaving the key out means no limit), got %v", r)
		return 0
	}
	return r
}

// secret reads the API secret from exactly one of access_key_secret,
// access_key_secret_file and access_key_secret_env. No message quotes it.
func (l *loader) secret(s section) string {
	v, used, set := l.secretFrom(s, "access_key_secret")
	if !set {
		l.fail(s.key("access_key_secret"), "required: set access_key_secret_file (a file holding the secret), access_key_secret_env (an environment variable holding it) or access_key_secret")
	}
	if used == "access_key_secret" && v != "" {
		l.warn(s.key(used), "a secret written in the config file; prefer access_key_secret_file or access_key_secret_env")
	}
	return v
}

// secretFrom reads a secret from exactly one of key (inline), key_file (a
// file, whose trailing newline is dropped; it may name systemd's
// credentials directory) and key_env (an environment variable). used is
// the key it was read from, so that the caller can warn about an inline
// secret and name the key in further checks; set is false when none of
// the three is present, which the caller reports if the secret is
// required. On a problem (reported) the value is "". No message quotes
// the value.
func (l *loader) secretFrom(s section, key string) (value, used string, set bool) {
	var found []string
	for _, k := range []string{key, key + "_file", key + "_env"} {
		if s.has(k) {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 0:
		return "", "", false
	case 1:
	default:
		l.fail(s.key(key), "set more than once (%s.%s): keep one", s.path, strings.Join(found, ", "+s.path+"."))
		return "", "", true
	}
	k := found[0]
	v, ok := s.str(k)
	if !ok {
		return "", k, true
	}
	switch k {
	case key:
		if v == "" {
			l.fail(s.key(k), "must not be empty")
			return "", k, true
		}
		return v, k, true
	case key + "_file":
		if v == "" {
			l.fail(s.key(k), "must be a file path")
			return "", k, true
		}
		b, err := l.opts.ReadFile(v)
		if err != nil {
			l.fail(s.key(k), "cannot read the secret: %v", err)
			return "", k, true
		}
		sec := strings.TrimRight(string(b), "\r\n")
		if sec == "" {
			l.fail(s.key(k), "file %s is empty", v)
		}
		return sec, k, true
	default:
		if v == "" {
			l.fail(s.key(k), "must be the name of an environment variable")
			return "", k, true
		}
		sec, ok := l.opts.LookupEnv(v)
		if !ok || sec == "" {
			l.fail(s.key(k), "environment variable %s is not set", v)
			return "", k, true
		}
		return sec, k, true
	}
}

var cfgDaemonKeys = []string{"state_dir", "schedule", "callback_listen", "callback_url", "http_listen",
	"max_concurrent", "poll_interval", "log_format", "log_level", "metrics_listen", "expiry_alert_days", "service_alert_days",
	"history_retention", "history_per_certificate"}

func (l *loader) daemon(raw map[string]any) DaemonConfig {
	d := DaemonConfig{
		StateDir:         DefaultStateDir,
		Schedule:         DefaultSchedule,
		LogFormat:        DefaultLogFormat,
		LogLevel:         DefaultLogLevel,
		MaxConcurrent:    DefaultMaxConcurrent,
		PollInterval:     DefaultPollInterval,
		ExpiryAlertDays:  slices.Clone(DefaultExpiryAlertDays),
		ServiceAlertDays: slices.Clone(DefaultServiceAlertDays),

		HistoryRetention:      DefaultHistoryRetention,
		HistoryPerCertificate: DefaultHistoryPerCertificate,
	}
	v, present := raw["daemon"]
	if !present {
		return d
	}
	m, ok := v.(map[string]any)
	if !ok {
		l.fail("daemon", "must be a table [daemon], not %s", cfgTypeName(v))
		return d
	}
	s := section{l: l, path: "daemon", m: m}
	s.unknown(cfgDaemonKeys...)
	if dir, ok := s.str("state_dir"); ok {
		if !filepath.IsAbs(dir) {
			l.fail(s.key("state_dir"), "%q must be an absolute path", dir)
		} else {
			d.StateDir = filepath.Clean(dir)
		}
	}
	if sched, ok := s.str("schedule"); ok {
		if _, err := ParseSchedule(sched, time.Now()); err != nil {
			l.fail(s.key("schedule"), "%v", err)
		} else {
			d.Schedule = sched
		}
	}
	if a, ok := s.hostPort("callback_listen", true); ok {
		d.CallbackListen = a
	}
	if u, ok := s.url("callback_url"); ok {
		d.CallbackURL = strings.TrimRight(u, "/")
	}
	switch {
	case s.has("callback_listen") && !s.has("callback_url"):
		l.fail(s.key("callback_url"), "required with daemon.callback_listen: the public URL that reaches that listener (the CA posts to it)")
	case s.has("callback_url") && !s.has("callback_listen"):
		l.fail(s.key("callback_listen"), "required with daemon.callback_url: the \"host:port\" the daemon listens on for callbacks")
	}
	if a, ok := s.hostPort("http_listen", true); ok {
		d.HTTPListen = a
	}
	if n, ok := s.integer("max_concurrent"); ok {
		if n < 1 || n > 1000 {
			l.fail(s.key("max_concurrent"), "must be from 1 to 1000, got %d", n)
		} else {
			d.MaxConcurrent = int(n)
		}
	}
	if s.duration("poll_interval", &d.PollInterval) && d.PollInterval > cfgMaxPollInterval {
		l.fail(s.key("poll_interval"), "must be at most %s (polling backs off to that)", cfgMaxPollInterval)
	}
	if f, ok := s.str("log_format"); ok {
		if f != "console" && f != "json" {
			l.fail(s.key("log_format"), "%q is neither \"console\" nor \"json\"", f)
		} else {
			d.LogFormat = f
		}
	}
	if lv, ok := s.str("log_level"); ok {
		if !slices.Contains([]string{"debug", "info", "warn", "error"}, lv) {
			l.fail(s.key("log_level"), "%q is none of debug, info, warn, error", lv)
		} else {
			d.LogLevel = lv
		}
	}
	if a, ok := s.hostPort("metrics_listen", true); ok {
		d.MetricsListen = a
	}
	for _, ln := range []struct{ key, addr string }{
		{"callback_listen", d.CallbackListen}, {"http_listen", d.HTTPListen}, {"metrics_listen", d.MetricsListen},
	} {
		if ln.addr != "" && cfgAllInterfaces(ln.addr) {
			l.warn(s.key(ln.key), "%q listens on every interface: %s; unless that is what you want, bind it to loopback (%q) or to one address",
				ln.addr, cfgListenerExposes[ln.key], cfgLoopbackAddr(ln.addr))
		}
	}
	if days, ok := s.alertDays("expiry_alert_days", 365, "[14, 7, 3, 1]"); ok {
		d.ExpiryAlertDays = days
	}
	if days, ok := s.alertDays("service_alert_days", 366, "[60, 30, 14, 7]"); ok {
		d.ServiceAlertDays = days
	}
	if s.duration("history_retention", &d.HistoryRetention) && d.HistoryRetention < MinHistoryRetention {
		l.fail(s.key("history_retention"), "must be at least %s, got %s", FormatDuration(MinHistoryRetention), FormatDuration(d.HistoryRetention))
	}
	if n, ok := s.integer("history_per_certificate"); ok {
		if n < 1 || n > MaxHistoryPerCertificate {
			l.fail(s.key("history_per_certificate"), "must be from 1 to %d, got %d", MaxHistoryPerCertificate, n)
		} else {
			d.HistoryPerCertificate = int(n)
		}
	}
	l.httpListen, l.callbackListen = d.HTTPListen, d.CallbackListen
	return d
}

var (
	cfgStoreKeys = []string{"driver", "dsn", "dsn_file", "dsn_env", "node", "lease", "encryption_key",
		"encryption_key_file", "encryption_key_env"}
)

// cfgStoreKeyHelp says how to make an encryption key, in every message
// about a missing or malformed one.
const cfgStoreKeyHelp = "32 random bytes written as base64 or as 64 hex digits; make one with `openssl rand -base64 32`"

// store reads the [store] section. With SQLite (the default) every key but
// driver is refused: they would silently do nothing, and a file meant for
// a cluster node that lost its driver line must not run alone.
func (l *loader) store(raw map[string]any) StoreConfig {
	st := StoreConfig{Driver: StoreDriverSQLite, Lease: DefaultStoreLease}
	v, present := raw["store"]
	if !present {
		return st
	}
	m, ok := v.(map[string]any)
	if !ok {
		l.fail("store", "must be a table [store], not %s", cfgTypeName(v))
		return st
	}
	s := section{l: l, path: "store", m: m}
	s.unknown(cfgStoreKeys...)
	if d, ok := s.str("driver"); ok {
		if d != StoreDriverSQLite && d != StoreDriverPostgres {
			l.fail(s.key("driver"), "%q is neither %q nor %q", d, StoreDriverSQLite, StoreDriverPostgres)
			return st
		}
		st.Driver = d
	} else if s.has("driver") {
		return st
	}
	if st.Driver == StoreDriverSQLite {
		for _, k := range cfgSortedKeys(m) {
			if k != "driver" && slices.Contains(cfgStoreKeys, k) {
				l.fail(s.key(k), "only with driver = %q (with %q, the state is in %s)", StoreDriverPostgres, StoreDriverSQLite, filepath.Join(l.stateDir, "dcvd.db"))
			}
		}
		return st
	}

	st.DSN = l.storeDSN(s)
	st.Node = l.storeNode(s)
	if s.duration("lease", &st.Lease) {
		switch {
		case st.Lease < MinStoreLease:
			l.fail(s.key("lease"), "must be at least %s (a shorter lease could run out between two renewals under a slow database), got %s", MinStoreLease, st.Lease)
		case st.Lease > MaxStoreLease:
			l.fail(s.key("lease"), "must be at most %s (when a node dies, its certificates wait that long for another), got %s", MaxStoreLease, st.Lease)
		}
	}
	st.EncryptionKey = l.storeKey(s)
	return st
}

// storeDSN reads dsn, dsn_file or dsn_env and checks that it parses as
// OpenPostgres will parse it. Messages never quote it nor the parser's
// reason: both may hold the password.
func (l *loader) storeDSN(s section) string {
	dsn, used, set := l.secretFrom(s, "dsn")
	if !set {
		l.fail(s.key("dsn"), "required with driver = %q: set dsn_file (a file holding the connection string, which usually holds a password), dsn_env (an environment variable holding it) or dsn", StoreDriverPostgres)
		return ""
	}
	if dsn == "" {
		return "" // reported by secretFrom
	}
	if dsn = strings.TrimSpace(dsn); dsn == "" {
		l.fail(s.key(used), "the connection string is blank")
		return ""
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if _, err := url.Parse(dsn); err != nil {
			l.fail(s.key(used), "the postgres:// URL does not parse (not shown: it may hold a password); percent-encode the user name's and password's special characters (@ as %%40, : as %%3A, / as %%2F, ? as %%3F, # as %%23, %% as %%25)")
			return ""
		}
	}
	if _, err := pgxpool.ParseConfig(dsn); err != nil {
		l.fail(s.key(used), "not a PostgreSQL connection string that parses: a postgres://USER:PASSWORD@HOST:PORT/DBNAME URL or key=value pairs such as \"host=db1 dbname=dcvd user=dcvd\", with valid sslmode, port, pool_* and file parameters (the reason is not shown: it may quote the password; psql tells it)")
		return ""
	}
	if used == "dsn" && cfgDSNHasPassword(dsn) {
		l.warn(s.key(used), "a secret written in the config file (the connection string holds a password); prefer dsn_file or dsn_env")
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
func (l *loader) storeNode(s section) string {
	if s.has("node") {
		n, ok := s.str("node")
		if !ok {
			return ""
		}
		if n == "" || len(n) > MaxStoreNodeLen || strings.IndexFunc(n, func(r rune) bool { return !cfgNodeChar(r) }) >= 0 {
			l.fail(s.key("node"), "%q must be 1 to %d characters of A-Z, a-z, 0-9, '.', '_' and '-'", n, MaxStoreNodeLen)
			return ""
		}
		return n
	}
	h, err := l.opts.Hostname()
	if err != nil {
		l.fail(s.key("node"), "cannot default to the host name (%v): set store.node, a name unique among the nodes ([A-Za-z0-9._-], at most %d characters)", err, MaxStoreNodeLen)
		return ""
	}
	n := cfgNodeFromHostname(h)
	if n == "" {
		l.fail(s.key("node"), "the host name %q leaves no usable node name: set store.node, a name unique among the nodes ([A-Za-z0-9._-], at most %d characters)", h, MaxStoreNodeLen)
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
func (l *loader) storeKey(s section) []byte {
	v, used, set := l.secretFrom(s, "encryption_key")
	if !set {
		l.fail(s.key("encryption_key"), "required with driver = %q, to seal the private keys kept in the database (the same key on every node): set encryption_key_file (a file holding %s), encryption_key_env or encryption_key", StoreDriverPostgres, cfgStoreKeyHelp)
		return nil
	}
	if v == "" {
		return nil // reported by secretFrom
	}
	key, err := cfgDecodeStoreKey(v)
	if err != nil {
		l.fail(s.key(used), "%v: must be %s", err, cfgStoreKeyHelp)
		return nil
	}
	if used == "encryption_key" {
		l.warn(s.key(used), "a secret written in the config file; prefer encryption_key_file or encryption_key_env")
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

// dnsTables collects the raw [dns.NAME] sections; providers.New checks
// their keys.
func (l *loader) dnsTables(raw map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	v, present := raw["dns"]
	if !present {
		return out
	}
	tables, ok := v.(map[string]any)
	if !ok {
		l.fail("dns", "must be tables such as [dns.main], not %s", cfgTypeName(v))
		return out
	}
	for _, name := range cfgSortedKeys(tables) {
		l.dnsSections[name] = true
		sec, ok := tables[name].(map[string]any)
		if !ok {
			l.file = l.includes.dnsFile[name]
			l.fail("dns."+cfgKeyPart(name), "must be a table [dns.%s], not %s", name, cfgTypeName(tables[name]))
			l.file = ""
			continue
		}
		out[name] = sec
	}
	return out
}

var (
	cfgCertKeys = []string{"name", "service_id", "key_type", "reuse_key", "dns", "webroot", "webroot_owner",
		"webroot_group", "standalone", "http_connect", "renew_before", "contact_email", "domains", "deploy",
		"organization"}
	cfgDeployKeys = []string{"dir", "owner", "group", "mode", "key_mode", "reload", "reload_timeout"}
	cfgKeyTypes   = []string{KeyECDSAP256, KeyECDSAP384, KeyRSA2048, KeyRSA4096}
	cfgNameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
)

// cfgMaxNameLen bounds a certificate's name, which names files and log
// fields.
const cfgMaxNameLen = 64

func (l *loader) certificates(raw map[string]any) []CertConfig {
	v, present := raw["certificate"]
	if !present {
		l.warn("certificate", "no [[certificate]]: the daemon has nothing to renew")
		return nil
	}
	var tables []map[string]any
	switch t := v.(type) {
	case []map[string]any:
		tables = t
	case []any:
		for _, e := range t {
			m, ok := e.(map[string]any)
			if !ok {
				l.fail("certificate", "must be an array of tables [[certificate]], but holds %s", cfgTypeName(e))
				return nil
			}
			tables = append(tables, m)
		}
	default:
		l.fail("certificate", "must be an array of tables: write [[certificate]] (double brackets), one per certificate, not %s", cfgTypeName(v))
		return nil
	}
	var certs []CertConfig
	// Each certificate is known by its key prefix and the file it is in
	// (certAt), so that a clash between two files names both.
	byName := map[string][]certAt{}
	byService := map[string][]certAt{}
	byDir := map[string][]certAt{}
	type served struct {
		at  certAt
		dir string
	}
	var webroots, deploys []served
	for i, m := range tables {
		l.file = l.includes.certFile(i)
		c, prefix, ok := l.certificate(l.includes.certIndex(i), m)
		at := certAt{prefix: prefix, file: l.file, n: l.includes.certIndex(i) + 1}
		l.file = ""
		for _, w := range c.Webroots {
			webroots = append(webroots, served{at, w.Dir})
		}
		if c.Deploy.Dir != "" {
			deploys = append(deploys, served{at, c.Deploy.Dir})
		}
		if c.Name != "" {
			byName[c.Name] = append(byName[c.Name], at)
		}
		if c.ServiceID != "" {
			byService[c.ServiceID] = append(byService[c.ServiceID], at)
		}
		if c.Deploy.Dir != "" {
			byDir[c.Deploy.Dir] = append(byDir[c.Deploy.Dir], at)
		}
		if ok {
			certs = append(certs, c)
		}
	}
	for name, ats := range byName {
		if len(ats) > 1 {
			pos := make([]string, len(ats))
			for i, at := range ats {
				pos[i] = at.position(ats[0].file)
			}
			l.failAt(ats[len(ats)-1], "certificate["+name+"].name", "%q names more than one [[certificate]] (%s): names must be unique", name, strings.Join(pos, ", "))
		}
	}
	for id, ats := range byService {
		if len(ats) > 1 {
			l.failAt(ats[1], ats[1].prefix+".service_id", "service_id %q is also used by %s: two certificates reissuing one order would revoke each other", id, ats[0].describe(ats[1].file))
		}
	}
	for dir, ats := range byDir {
		if len(ats) > 1 {
			l.failAt(ats[1], ats[1].prefix+".deploy.dir", "%s is also the deploy directory of %s: each certificate needs its own", dir, ats[0].describe(ats[1].file))
		}
	}
	// A deploy directory in a web root puts privkey.pem where the web
	// server serves files to anyone: whatever certificate's web root.
	for _, d := range deploys {
		for _, w := range webroots {
			if cfgWithin(w.dir, d.dir) {
				l.failAt(d.at, d.at.prefix+".deploy.dir", "%s is inside the web root %s of %s: the web server would serve privkey.pem to anyone who asks; deploy outside every web root (such as /etc/ssl/dcvd/NAME)",
					d.dir, w.dir, w.at.describe(d.at.file))
				break
			}
		}
	}
	return certs
}

// certificate reads the i-th [[certificate]]; prefix is its key path
// (certificate[NAME], or certificate[#N] when it has no usable name).
func (l *loader) certificate(i int, m map[string]any) (c CertConfig, prefix string, ok bool) {
	before := len(l.errs)
	prefix = fmt.Sprintf("certificate[#%d]", i+1)
	if name, isStr := m["name"].(string); isStr && cfgNameRE.MatchString(name) && len(name) <= cfgMaxNameLen {
		prefix = "certificate[" + name + "]"
		c.Name = name
	}
	s := section{l: l, path: prefix, m: m}
	s.unknown(cfgCertKeys...)
	if name, ok := s.required("name", "a short name for this certificate ([a-z0-9][a-z0-9._-]*)"); ok && c.Name == "" {
		l.fail(s.key("name"), "%q must match [a-z0-9][a-z0-9._-]* and be at most %d characters (it names files and log lines)", name, cfgMaxNameLen)
	}
	if id, ok := s.required("service_id", "the order's service_id from the reseller's console"); ok {
		if strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
			l.fail(s.key("service_id"), "%q must be printable ASCII without spaces", id)
		} else {
			c.ServiceID = id
		}
	}
	c.KeyType = KeyECDSAP256
	if kt, ok := s.str("key_type"); ok {
		if !slices.Contains(cfgKeyTypes, kt) {
			l.fail(s.key("key_type"), "%q is none of %s", kt, strings.Join(cfgKeyTypes, ", "))
		} else {
			c.KeyType = kt
		}
	}
	c.ReuseKey, _ = s.boolean("reuse_key")
	if e, ok := s.str("contact_email"); ok {
		if a, err := mail.ParseAddress(e); err != nil || a.Address != e {
			l.fail(s.key("contact_email"), "%q is not a plain e-mail address", e)
		} else {
			c.ContactEmail = e
		}
	}
	if s.duration("renew_before", &c.RenewBefore) && c.RenewBefore >= cfgMaxRenewBefore {
		l.fail(s.key("renew_before"), "must be shorter than the longest certificate lifetime (398 days), or dcvd would renew on every check")
	}

	// How names are validated.
	l.webroots(s, &c)
	if a, ok := s.hostPort("standalone", true); ok {
		c.Standalone = a
		if a == l.httpListen || a == l.callbackListen {
			l.fail(s.key("standalone"), "%s is already the daemon's own listener (daemon.http_listen or daemon.callback_listen): leave standalone out and the daemon's listener serves the files", a)
		}
	}
	if a, ok := s.hostPort("http_connect", false); ok {
		c.HTTPConnect = a
	}
	if len(c.Webroots) > 0 && c.Standalone != "" {
		l.fail(s.key("standalone"), "set webroot or standalone, not both: with a web server running, standalone could not bind its port")
	}
	if dnsName, ok := s.str("dns"); ok {
		if !l.dnsSections[dnsName] {
			l.fail(s.key("dns"), "no [dns.%s] section in the config (sections: %s)", dnsName, QuoteList(cfgSortedKeys(l.dnsSections)))
		} else {
			c.DNS = dnsName
			l.dnsUsed[dnsName] = true
		}
	}
	c.Domains = l.domains(s)
	var dnsNames, httpNames, httpsNames []string
	for _, n := range c.Names() {
		switch c.Domains[n] {
		case reseller.MethodDNS:
			dnsNames = append(dnsNames, n)
		case reseller.MethodHTTP:
			httpNames = append(httpNames, n)
		case reseller.MethodHTTPS:
			httpNames = append(httpNames, n)
			httpsNames = append(httpsNames, n)
		}
	}
	if len(dnsNames) > 0 && !s.has("dns") {
		l.fail(s.key("dns"), "required by the dns-validated names %s: name a [dns.NAME] section", QuoteList(dnsNames))
	}
	if len(dnsNames) == 0 && c.DNS != "" {
		l.warn(s.key("dns"), "no name of this certificate is validated by dns")
	}
	if len(httpNames) > 0 && !s.has("webroot") && !s.has("standalone") && l.httpListen == "" {
		l.fail(s.key("webroot"), "required by the http/https-validated names %s: set webroot (the document root serving them), standalone (\"host:port\" dcvd listens on while validating) or daemon.http_listen (where the web server proxies /.well-known/pki-validation/)", QuoteList(httpNames))
	}
	if c.Standalone != "" && l.httpListen == "" {
		for _, n := range httpsNames {
			l.fail(s.key("domains")+"."+strconv.Quote(n), "https validation needs a TLS server, and standalone serves plain http: use http, or a webroot")
		}
	}
	if len(httpNames) == 0 {
		for _, k := range []string{"webroot", "standalone", "http_connect"} {
			if s.has(k) {
				l.warn(s.key(k), "no name of this certificate is validated by http or https")
			}
		}
	}

	if d, ok := s.table("deploy"); ok {
		c.Deploy = l.deploy(d)
	} else if !s.has("deploy") {
		l.fail(s.key("deploy"), "required section [certificate.deploy] is missing (at least dir: where cert.pem, chain.pem, fullchain.pem and privkey.pem go)")
	}
	if o, ok := s.table("organization"); ok {
		c.Organization = l.organization(o)
	}
	return c, prefix, len(l.errs) == before
}

// webroots reads webroot (a path or a list of paths), webroot_owner and
// webroot_group.
func (l *loader) webroots(s section, c *CertConfig) {
	owner, _ := s.str("webroot_owner")
	group, _ := s.str("webroot_group")
	v, present := s.m["webroot"]
	if !present {
		for _, k := range []string{"webroot_owner", "webroot_group"} {
			if s.has(k) {
				l.fail(s.key(k), "only meaningful with webroot")
			}
		}
		return
	}
	var dirs []string
	switch t := v.(type) {
	case string:
		dirs = []string{t}
	case []any:
		if len(t) == 0 {
			l.fail(s.key("webroot"), "must list at least one directory")
			return
		}
		for _, e := range t {
			d, ok := e.(string)
			if !ok {
				l.fail(s.key("webroot"), "must be a path or a list of paths, but the list holds %s", cfgTypeName(e))
				return
			}
			dirs = append(dirs, d)
		}
	default:
		l.fail(s.key("webroot"), "must be a path or a list of paths, not %s", cfgTypeName(v))
		return
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			l.fail(s.key("webroot"), "%q must be an absolute path", d)
			continue
		}
		d = filepath.Clean(d)
		if seen[d] {
			l.fail(s.key("webroot"), "%s is listed twice", d)
			continue
		}
		seen[d] = true
		if why := cfgHiddenByUnit(d); why != "" {
			l.warn(s.key("webroot"), "%s %s: the validation files would not reach the web server, and the CA's check would fail after the reissue is paid for", d, why)
		}
		c.Webroots = append(c.Webroots, httpchallenge.Webroot{Dir: d, Owner: owner, Group: group})
	}
}

// domains reads [certificate.domains], validated by the reseller's rules;
// the names of the result are normalized.
func (l *loader) domains(s section) map[string]reseller.Method {
	d, ok := s.table("domains")
	if !ok {
		if !s.has("domains") {
			l.fail(s.key("domains"), "required section [certificate.domains] is missing: name → \"dns\", \"http\", \"https\" or an approver e-mail")
		}
		return nil
	}
	rawDCV := map[string]reseller.Method{}
	for _, name := range cfgSortedKeys(d.m) {
		m, ok := d.m[name].(string)
		if !ok {
			l.fail(d.path+"."+strconv.Quote(name), "must be a string: \"dns\", \"http\", \"https\" or an approver e-mail, not %s", cfgTypeName(d.m[name]))
			continue
		}
		rawDCV[name] = strings.ToLower(strings.TrimSpace(m))
	}
	if len(d.m) == 0 {
		l.fail(d.path, "must list at least one name")
		return nil
	}
	if len(rawDCV) == 0 {
		return nil
	}
	if err := reseller.ValidateDomainDCV(rawDCV); err != nil {
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			var de *reseller.DCVError
			if !errors.As(e, &de) {
				l.fail(d.path, "%v", e)
				continue
			}
			reason := de.Reason
			if de.Field != "" {
				reason = de.Field + ": " + reason
			}
			l.fail(d.path+"."+strconv.Quote(de.Domain), "%s", reason)
		}
	}
	out := make(map[string]reseller.Method, len(rawDCV))
	for name, m := range rawDCV {
		if n, err := reseller.NormalizeDomain(name); err == nil {
			out[n] = m
		}
	}
	return out
}

func (l *loader) deploy(s section) deploy.Spec {
	spec := deploy.Spec{Mode: deploy.DefaultMode, KeyMode: deploy.DefaultKeyMode, ReloadTimeout: deploy.DefaultReloadTimeout}
	s.unknown(cfgDeployKeys...)
	if dir, ok := s.required("dir", "the directory for cert.pem, chain.pem, fullchain.pem and privkey.pem"); ok {
		clean := filepath.Clean(dir)
		if !filepath.IsAbs(dir) {
			l.fail(s.key("dir"), "%q must be an absolute path", dir)
		} else if why := cfgSystemDir(clean, l.stateDir); why != "" {
			l.fail(s.key("dir"), "%s %s", clean, why)
		} else {
			spec.Dir = clean
			if why := cfgHiddenByUnit(clean); why != "" {
				l.warn(s.key("dir"), "%s %s: the web server would not see the files dcvd deploys there", clean, why)
			}
		}
	}
	spec.Owner, _ = s.str("owner")
	spec.Group, _ = s.str("group")
	if m, ok := l.mode(s, "mode"); ok {
		if m&0o002 != 0 {
			// cert.pem is what the web server serves: anyone could swap
			// in a certificate of theirs, or one that does not match the
			// key and takes the site down at the next reload.
			l.fail(s.key("mode"), "%04o lets every user of the host replace the certificate files: use \"0644\", or \"0640\" with group", m)
		} else {
			spec.Mode = m
		}
	}
	if m, ok := l.mode(s, "key_mode"); ok {
		// Install gives privkey.pem exactly this mode. Whoever may write
		// the key may replace it with one of theirs; whoever may read it
		// may impersonate the site. The group may read (a web server that
		// reads keys as its own user), never write.
		switch {
		case m&0o007 != 0:
			l.fail(s.key("key_mode"), "%04o lets every user of the host read or change the private key: use \"0600\", or \"0640\" with group", m)
		case m&0o020 != 0:
			l.fail(s.key("key_mode"), "%04o lets the file's group change the private key: use \"0600\", or \"0640\" for a group that only reads it", m)
		default:
			spec.KeyMode = m
		}
	}
	spec.Reload, _ = s.str("reload")
	s.duration("reload_timeout", &spec.ReloadTimeout)
	return spec
}

// mode reads a file mode written as an octal string ("0640"): a TOML
// integer would be read as decimal, a classic trap.
func (l *loader) mode(s section, k string) (os.FileMode, bool) {
	v, present := s.m[k]
	if !present {
		return 0, false
	}
	str, ok := v.(string)
	if !ok {
		l.fail(s.key(k), "must be a string like \"0640\", not %s", cfgTypeName(v))
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(str, "0o"), 8, 32)
	if err != nil || n > 0o777 {
		l.fail(s.key(k), "%q is not an octal file mode like \"0640\"", str)
		return 0, false
	}
	if n&0o400 == 0 {
		l.fail(s.key(k), "%q does not let the owner read the file", str)
		return 0, false
	}
	return os.FileMode(n), true
}

func (l *loader) organization(s section) *reseller.Organization {
	o := &reseller.Organization{}
	fields := []struct {
		key string
		dst *string
	}{
		{"organization", &o.Organization},
		{"organization_unit", &o.OrganizationUnit},
		{"registered_address_line1", &o.RegisteredAddressLine1},
		{"serial_no", &o.SerialNo},
		{"country", &o.Country},
		{"state", &o.State},
		{"city", &o.City},
		{"postal_code", &o.PostalCode},
		{"organization_phone", &o.OrganizationPhone},
		{"date_of_incorporation", &o.DateOfIncorporation},
		{"contact_name", &o.ContactName},
		{"contact_title", &o.ContactTitle},
		{"contact_phone", &o.ContactPhone},
	}
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.key
	}
	s.unknown(known...)
	set := false
	for _, f := range fields {
		if f.key == "date_of_incorporation" {
			// An unquoted TOML date is what people write; accept it.
			if t, ok := s.m[f.key].(time.Time); ok {
				*f.dst = t.Format(time.DateOnly)
				set = true
				continue
			}
		}
		if v, ok := s.str(f.key); ok {
			*f.dst = strings.TrimSpace(v)
			set = set || *f.dst != ""
		}
	}
	if o.Country != "" {
		if len(o.Country) != 2 || strings.IndexFunc(o.Country, func(r rune) bool { return (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') }) >= 0 {
			l.fail(s.key("country"), "%q is not a two-letter country code such as \"CN\"", o.Country)
		}
		o.Country = strings.ToUpper(o.Country)
	}
	if o.DateOfIncorporation != "" {
		if _, err := time.Parse(time.DateOnly, o.DateOfIncorporation); err != nil {
			l.fail(s.key("date_of_incorporation"), "%q is not a date such as 2019-01-01", o.DateOfIncorporation)
		}
	}
	if !set {
		return nil
	}
	return o
}

// Check makes the checks of "dcvd check-config" that look at the host
// rather than the file, the same ones (HostChecks) the daemon makes before
// every paid reissue: the state directory exists or can be created, is
// writable (a temporary file is created and removed) and writable by no
// one else, and its keys/ is dcvd's alone; ca_roots_file holds
// certificates; for every certificate, each webroot passes
// httpchallenge.Probe (an existing directory, no symlink leading out of
// it, writable: a probe file is really created and removed), its owner and
// group exist, the deploy directory is writable (or can be created), is no
// system directory and in no web root once symlinks are resolved, and the
// reload command's program exists. Each error is a *ConfigError naming its
// key; they are sorted by key.
func (c *Config) Check() []error {
	h := NewHostChecks(true)
	var errs []error
	for _, p := range h.StateProblems(c.Daemon.StateDir) {
		errs = append(errs, p)
	}
	if _, err := c.API.CARoots(); err != nil {
		errs = append(errs, &ConfigError{Key: "api.ca_roots_file", Reason: err.Error()})
	}
	// Every web root, resolved once: a deploy directory may be in another
	// certificate's web root too.
	served := h.Webroots(c.Certificates)
	for i := range c.Certificates {
		for _, p := range h.CertProblems(&c.Certificates[i], served) {
			errs = append(errs, p)
		}
	}
	// A problem of an included certificate names its file, as LoadConfig's
	// do.
	for _, e := range errs {
		var ce *ConfigError
		if errors.As(e, &ce) && ce.File == "" {
			if name, ok := cfgCertOfKey(ce.Key); ok {
				ce.File = c.CertFile[name]
			}
		}
	}
	SortErrors(errs)
	return errs
}

// cfgCheckWritableDir checks that dir is a writable directory, or can be
// created: then its nearest existing parent must be writable.
func cfgCheckWritableDir(dir string) error {
	probe := func(d string) error {
		f, err := os.CreateTemp(d, ".dcvd-check-*")
		if err != nil {
			return err
		}
		name := f.Name()
		f.Close()
		return os.Remove(name)
	}
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		if err := probe(dir); err != nil {
			return fmt.Errorf("%s is not writable: %w", dir, err)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && p != filepath.Dir(p) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s does not exist and cannot be created: %w", dir, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s does not exist and cannot be created: %s is not a directory", dir, p)
		}
		if err := probe(p); err != nil {
			return fmt.Errorf("%s does not exist and cannot be created: %w", dir, err)
		}
		return nil
	}
}

// SortErrors sorts ConfigErrors by file (the main file's first), key,
// then reason.
func SortErrors(errs []error) {
	sortKey := func(e error) (string, string, string) {
		var ce *ConfigError
		if errors.As(e, &ce) {
			return ce.File, ce.Key, ce.Reason
		}
		return "", e.Error(), ""
	}
	sort.SliceStable(errs, func(i, j int) bool {
		fi, ki, ri := sortKey(errs[i])
		fj, kj, rj := sortKey(errs[j])
		if fi != fj {
			return fi < fj
		}
		if ki != kj {
			return ki < kj
		}
		return ri < rj
	})
}

func cfgSortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var cfgBareKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// cfgKeyPart renders one key of a key path as TOML would: bare when it
// can be, quoted otherwise.
func cfgKeyPart(k string) string {
	if cfgBareKeyRE.MatchString(k) {
		return k
	}
	return strconv.Quote(k)
}

// cfgTypeName names the TOML type of a decoded value, for messages that
// must not quote the value itself.
func cfgTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date/time"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprintf("%T", v)
}

// QuoteList renders names as a quoted, comma-separated list, or "none".
func QuoteList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

func cfgIsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// cfgHasSpaceOrControl tells whether s holds white space or a control
// character, which no URL written in a config file should.
func cfgHasSpaceOrControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0
}

// cfgListenerExposes says what each listener of [daemon] serves, for the
// warning about one bound to every interface.
var cfgListenerExposes = map[string]string{
	"callback_listen": "anyone who reaches the port can post callbacks (each only makes dcvd fetch an order's detail, but a reverse proxy in front of callback_url is the usual way in)",
	"http_listen":     "anyone who reaches the port gets the pending validation files (the web server that proxies /.well-known/pki-validation/ to dcvd reaches loopback)",
	"metrics_listen":  "anyone who reaches the port reads /metrics (every certificate's names, expiry, failures and costs) and /healthz",
}

// cfgAllInterfaces tells whether a listener's "host:port" binds every
// interface: no host, 0.0.0.0 or [::].
func cfgAllInterfaces(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// cfgLoopbackAddr is addr bound to loopback instead, as advice.
func cfgLoopbackAddr(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return net.JoinHostPort("::1", port)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// cfgSystemDirs are directories of the operating system or of other
// programs, refused as deploy.dir. A deploy directory is dcvd's own: it
// writes cert.pem, chain.pem, fullchain.pem and privkey.pem there, keeps
// the previous generation in previous/, removes its leftover temporary
// files and locks the directory. In one of these it would overwrite other
// programs' files of those names and put a private key among files other
// users list, and under the systemd unit (ProtectSystem=strict) it fails
// with "read-only file system" only once the reissue is paid for. A
// directory below one of them is fine (/etc/ssl/dcvd/shop, /srv/certs/shop):
// what matters is one directory per certificate. The list is the top of
// the file system hierarchy (hier(7), the FHS) and the shared directories
// where certificates, web content and configuration usually live.
var cfgSystemDirs = map[string]bool{
	"/": true, "/bin": true, "/boot": true, "/dev": true, "/etc": true, "/home": true, "/lib": true, "/lib32": true,
	"/lib64": true, "/libx32": true, "/media": true, "/mnt": true, "/opt": true, "/proc": true, "/root": true,
	"/run": true, "/sbin": true, "/srv": true, "/sys": true, "/tmp": true, "/usr": true, "/var": true,
	// Shared certificate stores: other programs' keys and certificates
	// (ssl-cert-snakeoil, distribution bundles) live there.
	"/etc/ssl": true, "/etc/ssl/certs": true, "/etc/ssl/private": true, "/etc/pki": true, "/etc/pki/tls": true,
	"/etc/pki/tls/certs": true, "/etc/pki/tls/private": true, "/etc/letsencrypt": true,
	// Configuration of dcvd and of the servers it reloads.
	"/etc/dcvd": true, "/etc/nginx": true, "/etc/apache2": true, "/etc/httpd": true, "/etc/systemd": true,
	"/usr/bin": true, "/usr/sbin": true, "/usr/lib": true, "/usr/lib64": true, "/usr/libexec": true,
	"/usr/local": true, "/usr/local/bin": true, "/usr/local/sbin": true, "/usr/local/lib": true, "/usr/share": true,
	"/var/lib": true, "/var/log": true, "/var/tmp": true, "/var/cache": true, "/var/spool": true, "/var/mail": true,
	"/var/run": true, "/var/www": true, "/var/backups": true, "/var/opt": true,
}

// cfgKernelDirs are kernel file systems: nothing below them is a place for
// files.
var cfgKernelDirs = []string{"/proc", "/sys", "/dev"}

// cfgSystemDir says why dir (clean and absolute) cannot be a deploy
// directory, or "" when it can. stateDir is daemon.state_dir.
func cfgSystemDir(dir, stateDir string) string {
	for _, k := range cfgKernelDirs {
		if cfgWithin(k, dir) {
			return "is on a kernel file system (" + k + "): give each certificate a directory of its own, such as /etc/ssl/dcvd/NAME"
		}
	}
	switch {
	case dir == "/run/dcvd" || cfgWithin("/run/dcvd", dir):
		return "is in dcvd's runtime directory, which systemd empties whenever dcvd stops: use a directory that lasts, such as /etc/ssl/dcvd/NAME"
	case stateDir != "" && dir == stateDir:
		return "is daemon.state_dir, dcvd's private state (dcvd.db, keys/): use a directory of its own, such as /etc/ssl/dcvd/NAME"
	case stateDir != "" && cfgWithin(filepath.Join(stateDir, "keys"), dir):
		return "is inside daemon.state_dir/keys, which holds the keys of every order: use a directory of its own, such as /etc/ssl/dcvd/NAME"
	case cfgSystemDirs[dir]:
		return "is a directory of the system or of other programs: dcvd writes cert.pem, chain.pem, fullchain.pem, privkey.pem and previous/ into deploy.dir and treats it as its own; give each certificate a directory of its own, such as " +
			filepath.Join(cfgSuggestParent(dir), "NAME")
	}
	return ""
}

// cfgSuggestParent is where to put per-certificate directories instead of
// dir: below it when it is a place for them, else the shipped default.
func cfgSuggestParent(dir string) string {
	switch dir {
	case "/srv", "/opt", "/var/lib":
		return filepath.Join(dir, "dcvd")
	}
	return "/etc/ssl/dcvd"
}

// cfgHiddenByUnit says how the shipped systemd unit hides path from dcvd
// (PrivateTmp=yes, ProtectHome=yes), or "" when it does not. Only a
// warning: dcvd may run without the unit.
func cfgHiddenByUnit(path string) string {
	for _, d := range []string{"/tmp", "/var/tmp"} {
		if cfgWithin(d, path) {
			return "is in " + d + ", which dcvd.service makes private to dcvd (PrivateTmp=yes)"
		}
	}
	for _, d := range cfgHomeDirs {
		if cfgWithin(d, path) {
			return "is in " + d + ", which dcvd.service hides from dcvd (ProtectHome=yes; a drop-in may set ProtectHome=read-only with ReadWritePaths=" + path + ")"
		}
	}
	return ""
}

// cfgHomeDirs are what ProtectHome=yes hides.
var cfgHomeDirs = []string{"/home", "/root", "/run/user"}

// cfgInHome tells whether path is in one of cfgHomeDirs.
func cfgInHome(path string) bool {
	return slices.ContainsFunc(cfgHomeDirs, func(d string) bool { return cfgWithin(d, path) })
}

// cfgWithin tells whether path is dir or below it; both clean and
// absolute.
func cfgWithin(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// alertDays reads the list of whole days at k (1 to max), most distant
// first and without repeats; ok is false when k is absent or refused (the
// refusal is recorded).
func (s section) alertDays(k string, max int64, example string) (days []int, ok bool) {
	if !s.has(k) {
		return nil, false
	}
	list, isList := s.m[k].([]any)
	for _, e := range list {
		n, isInt := e.(int64)
		if !isInt || n < 1 || n > max {
			isList = false
			break
		}
		days = append(days, int(n))
	}
	if !isList {
		s.l.fail(s.key(k), "must be a list of whole days from 1 to %d, such as %s", max, example)
		return nil, false
	}
	slices.SortFunc(days, func(a, b int) int { return b - a })
	return slices.Compact(days), true
}
