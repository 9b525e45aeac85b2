package config

// This file holds the types a loaded configuration is made of, their
// defaults and bounds, and the methods the daemon calls on them. Reading
// them is load.go's business and the sections' files'.

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sort"
	"time"

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
