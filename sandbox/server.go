package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/reseller"
)

// Defaults applied by New to a Config's zero values.
const (
	DefaultValidity        = 90 * 24 * time.Hour
	DefaultCheckInterval   = time.Minute
	DefaultCADomain        = "sectigo.com"
	DefaultBalance         = 100000.0
	DefaultCallbackBackoff = 2 * time.Second
)

// callbackAttempts is how many times a callback is tried before it is given
// up (the first try and seven retries).
const callbackAttempts = 8

// Config configures a sandbox Server. Only StateDir is required.
type Config struct {
	// StateDir holds the state (state.json, written atomically with mode
	// 0600) and the CA (ca/). Everything survives a restart on the same
	// directory.
	StateDir string

	// Ephemeral keeps the orders, ledger and nonces in memory only (the CA
	// is still kept in StateDir): for benchmarks of the client, where
	// writing the whole state on every request would measure the sandbox.
	// A restart forgets everything but the CA.
	Ephemeral bool

	// AccessKeyID and AccessKeySecret are the account's key pair. An empty
	// value is generated on first start and persisted; a given value
	// replaces the persisted one.
	AccessKeyID, AccessKeySecret string

	// Products and Services are the initial catalogue. Products replace
	// persisted products of the same ID; services already in the state are
	// kept as they are (with their orders and paid domains). When both are
	// empty and the state has no product yet, DefaultProducts and
	// DefaultServices are used.
	Products []Product
	Services []Service

	// DNSServer ("host:port") receives the CA's CNAME queries; "" uses the
	// first nameserver of /etc/resolv.conf.
	DNSServer string
	// HTTPAddr and HTTPSAddr ("host:port") are where the CA connects to fetch
	// http and https validation files, whatever the domain; "" connects to
	// the domain itself on port 80 or 443.
	HTTPAddr, HTTPSAddr string
	// NegativeCacheTTL is how long a failed DNS check is remembered: a
	// re-check inside it fails without asking (default 5m; negative
	// disables the cache).
	NegativeCacheTTL time.Duration

	// Validity is the lifetime of issued certificates (default 90 days),
	// cut to the end of the service's paid period.
	Validity time.Duration
	// ServicePeriod is the paid period of a new service, from its
	// creation, when neither Service.Expires nor create's period says
	// otherwise (default DefaultServicePeriod, a year; negative: new
	// services never end). Services already in the state keep theirs.
	ServicePeriod time.Duration
	// CheckInterval is how often Start's loop re-checks pending orders
	// (default 1m); a negative value disables the loop, so that only
	// update-dcv and validate-dcv check.
	CheckInterval time.Duration
	// AutoApproveEmail makes e-mail validations pass at their first check,
	// as if the approver had clicked at once. Otherwise ApproveEmail (or
	// POST /sandbox/approve-email) approves them.
	AutoApproveEmail bool
	// CADomain ends the CNAME targets and validation files (default
	// "sectigo.com").
	CADomain string
	// Balance is the account balance at first start (default 100000; zero
	// means the default, use SetBalance for an empty account). Later starts
	// keep the persisted balance.
	Balance float64
	// TimestampSkew is how far a request's timestamp may be from Now
	// (default reseller.TimestampSkew).
	TimestampSkew time.Duration
	// Faults are injected into /api/v1 requests (none by default).
	Faults Faults
	// CallbackBackoff is the delay before the first callback retry (default
	// 2s); it doubles at each retry, for at most 8 attempts in all.
	CallbackBackoff time.Duration

	// Now is the clock (default time.Now). Timestamps, nonces, the negative
	// DNS cache and certificate validity all follow it.
	Now func() time.Time
	// Logger receives the sandbox's logs (nil: none). The access key secret
	// and request signatures are never logged.
	Logger *zap.Logger
}

// Product is an entry of the catalogue.
type Product struct {
	// ID is the product_id of product/list and certificate/create.
	ID string `json:"product_id"`
	// Name is shown by product/list.
	Name string `json:"name"`
	// Validation is DV, OV, EV or IV (default DV). OV, EV and IV orders
	// require the organisation fields.
	Validation string `json:"validation"`
	// MaxDomains is the most names a certificate of this product may carry.
	MaxDomains int `json:"max_domains"`
	// Wildcard allows wildcard names.
	Wildcard bool `json:"wildcard"`
	// Price is charged by certificate/create.
	Price float64 `json:"price"`
	// ReissuePrice is charged by every reissue.
	ReissuePrice float64 `json:"reissue_price"`
	// DomainPrice is charged for each name that the service has not paid
	// for yet.
	DomainPrice float64 `json:"domain_price"`
}

// Service is a purchased certificate: what reissues are made against.
type Service struct {
	// ID is the service_id that reissues name.
	ID string `json:"service_id"`
	// ProductID is the product the service was bought as.
	ProductID string `json:"product_id"`
	// MaxDomains caps the names of the service's certificates (0: the
	// product's).
	MaxDomains int `json:"max_domains"`
	// Domains are the names already paid for: adding them costs nothing.
	Domains []string `json:"domains"`
	// Expires is the end of the paid period: no reissue after it, and no
	// certificate valid beyond it. Zero means Config.ServicePeriod from the
	// service's creation. A non-zero value also replaces the end of a
	// service already in the state, so that editing the catalogue and
	// restarting moves the end.
	Expires time.Time `json:"service_expires_at,omitzero"`
}

// Charge is one entry of the ledger.
type Charge struct {
	UniqueID  string    `json:"unique_id"`  // the request's unique_id: one charge at most per value
	ServiceID string    `json:"service_id"` // the service charged for
	Op        string    `json:"op"`         // "create" or "reissue"
	Amount    float64   `json:"amount"`     // what was taken from the balance
	Time      time.Time `json:"time"`       // when
}

// Revocation records a certificate revoked because a reissue dropped some of
// its names.
type Revocation struct {
	ServiceID string    `json:"service_id"` // the service whose certificate it was
	Serial    string    `json:"serial"`     // the certificate's serial number, lower-case hex
	Reason    string    `json:"reason"`     // which reissue dropped which names
	UniqueID  string    `json:"unique_id"`  // the reissue that caused it
	Time      time.Time `json:"time"`       // when
}

// DefaultProducts is the catalogue used when a Config gives none: one
// multi-domain DV product with wildcards, whose reissues cost nothing but
// whose new names cost 10 each.
func DefaultProducts() []Product {
	return []Product{{
		ID:           "sectigo-dv-multi",
		Name:         "Sectigo DV multi-domain (sandbox)",
		Validation:   "DV",
		MaxDomains:   100,
		Wildcard:     true,
		Price:        100,
		ReissuePrice: 0,
		DomainPrice:  10,
	}}
}

// DefaultServices is the service used when a Config gives none: "demo", of
// the default product.
func DefaultServices() []Service {
	return []Service{{ID: "demo", ProductID: "sectigo-dv-multi"}}
}

// Server is a sandbox reseller CA. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	log     *zap.Logger
	ca      *authority
	checker *checker
	faults  *faultInjector
	cb      *http.Client
	path    string // state file

	// ctx is cancelled by Close; background work (the re-check loop and
	// callbacks) runs under it and is tracked by wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	startOnce sync.Once
	closeOnce sync.Once

	mu     sync.Mutex // guards st and closed; never held across network I/O
	st     *state
	closed bool
}

// New opens (or creates) the sandbox in cfg.StateDir: its state, its CA and
// its access key pair.
func New(cfg Config) (*Server, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("sandbox: Config.StateDir is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Validity == 0 {
		cfg.Validity = DefaultValidity
	}
	if cfg.Validity < 0 {
		return nil, fmt.Errorf("sandbox: Validity %s is negative", cfg.Validity)
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.CADomain == "" {
		cfg.CADomain = DefaultCADomain
	}
	if cfg.Balance == 0 {
		cfg.Balance = DefaultBalance
	}
	if cfg.TimestampSkew <= 0 {
		cfg.TimestampSkew = reseller.TimestampSkew
	}
	if cfg.CallbackBackoff <= 0 {
		cfg.CallbackBackoff = DefaultCallbackBackoff
	}
	if err := cfg.Faults.validate(); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: create state directory: %w", err)
	}

	st, existed, err := loadState(statePath(cfg.StateDir))
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if !existed {
		st.Balance = roundMoney(cfg.Balance)
	}
	if err := applyCatalogue(st, cfg.Products, cfg.Services, cfg.Now(), servicePeriod(cfg.ServicePeriod)); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if cfg.AccessKeyID != "" {
		st.AccessKeyID = cfg.AccessKeyID
	}
	if cfg.AccessKeySecret != "" {
		st.AccessKeySecret = cfg.AccessKeySecret
	}
	if st.AccessKeyID == "" {
		if st.AccessKeyID, err = randomString(upperAlnum, 16); err != nil {
			return nil, fmt.Errorf("sandbox: generate access key id: %w", err)
		}
		st.AccessKeyID = "AKSB" + st.AccessKeyID
	}
	if st.AccessKeySecret == "" {
		if st.AccessKeySecret, err = randomString(mixedAlnum, 40); err != nil {
			return nil, fmt.Errorf("sandbox: generate access key secret: %w", err)
		}
	}

	ca, err := loadOrCreateAuthority(cfg.StateDir, cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg,
		log: cfg.Logger.Named("sandbox"),
		ca:  ca,
		checker: newChecker(checkerConfig{
			DNSServer:   cfg.DNSServer,
			HTTPAddr:    cfg.HTTPAddr,
			HTTPSAddr:   cfg.HTTPSAddr,
			NegativeTTL: cfg.NegativeCacheTTL,
			Now:         cfg.Now,
		}),
		faults: newFaultInjector(cfg.Faults),
		cb:     &http.Client{Timeout: 10 * time.Second},
		path:   statePath(cfg.StateDir),
		ctx:    ctx,
		cancel: cancel,
		st:     st,
	}
	s.mu.Lock()
	err = s.saveLocked()
	s.mu.Unlock()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	s.log.Info("sandbox ready",
		zap.String("state_dir", cfg.StateDir),
		zap.String("access_key_id", st.AccessKeyID),
		zap.Int("services", len(st.Services)),
		zap.Int("orders", len(st.Orders)))
	return s, nil
}

// applyCatalogue merges the configured catalogue into the state: products
// are replaced, services are only added (but for a configured end, which
// replaces theirs). New services start at now and last period (0: no end)
// unless they have their own end.
func applyCatalogue(st *state, products []Product, services []Service, now time.Time, period time.Duration) error {
	if len(products) == 0 && len(services) == 0 && len(st.Products) == 0 {
		products, services = DefaultProducts(), DefaultServices()
	}
	for _, p := range products {
		if p.ID == "" {
			return errors.New("a product has no ID")
		}
		if p.MaxDomains < 1 {
			return fmt.Errorf("product %s: MaxDomains %d, want at least 1", p.ID, p.MaxDomains)
		}
		if p.Price < 0 || p.ReissuePrice < 0 || p.DomainPrice < 0 {
			return fmt.Errorf("product %s: negative price", p.ID)
		}
		p.Validation = strings.ToUpper(p.Validation)
		switch p.Validation {
		case "":
			p.Validation = "DV"
		case "DV", "OV", "EV", "IV":
		default:
			return fmt.Errorf("product %s: validation %q is not DV, OV, EV or IV", p.ID, p.Validation)
		}
		st.Products[p.ID] = p
	}
	for _, sv := range services {
		if sv.ID == "" {
			return errors.New("a service has no ID")
		}
		p, ok := st.Products[sv.ProductID]
		if !ok {
			return fmt.Errorf("service %s: unknown product %q", sv.ID, sv.ProductID)
		}
		if old, ok := st.Services[sv.ID]; ok {
			if !sv.Expires.IsZero() {
				old.Ends = sv.Expires.Truncate(time.Second)
			}
			continue
		}
		maxDomains := sv.MaxDomains
		if maxDomains == 0 {
			maxDomains = p.MaxDomains
		}
		if maxDomains < 0 {
			return fmt.Errorf("service %s: MaxDomains %d is negative", sv.ID, sv.MaxDomains)
		}
		paid := make([]string, 0, len(sv.Domains))
		for _, d := range sv.Domains {
			n, err := normalizeName(d)
			if err != nil {
				return fmt.Errorf("service %s: paid domain: %w", sv.ID, err)
			}
			paid = append(paid, n.name)
		}
		svs := &serviceState{
			ID:         sv.ID,
			ProductID:  sv.ProductID,
			MaxDomains: maxDomains,
			Paid:       sortedUnique(paid),
		}
		if !sv.Expires.IsZero() {
			startService(st, svs, now, 0, 0)
			svs.Ends = sv.Expires.Truncate(time.Second)
		} else {
			startService(st, svs, now, 0, period)
		}
		st.Services[sv.ID] = svs
	}
	return nil
}

// Handler serves the API under /api/v1/ and the control endpoints under
// /sandbox/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(apiPrefix+"/", s.serveAPI)
	s.registerControl(mux)
	return mux
}

// Start runs the background re-check of pending orders every CheckInterval
// until ctx is done or Close is called. Calling it again does nothing.
func (s *Server) Start(ctx context.Context) {
	if s.cfg.CheckInterval < 0 {
		return
	}
	s.startOnce.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return
		}
		s.wg.Add(1)
		go s.recheckLoop(ctx)
	})
}

func (s *Server) recheckLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range s.pendingServices() {
			cctx, cancel := context.WithCancel(s.ctx)
			stop := context.AfterFunc(ctx, cancel)
			if err := s.checkService(cctx, id); err != nil {
				s.log.Warn("background re-check failed", zap.String("service_id", id), zap.Error(err))
			}
			stop()
			cancel()
		}
	}
}

// Close stops the background loop and the callbacks (retries are abandoned,
// requests in flight cancelled) and waits for them to return.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		s.wg.Wait()
	})
	return nil
}

// AccessKey returns the account's access key pair.
func (s *Server) AccessKey() (id, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.AccessKeyID, s.st.AccessKeySecret
}

// Ledger returns every charge, oldest first.
func (s *Server) Ledger() []Charge {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Charge(nil), s.st.Ledger...)
}

// Revocations returns every revocation, oldest first.
func (s *Server) Revocations() []Revocation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Revocation(nil), s.st.Revocations...)
}

// Balance returns the account balance.
func (s *Server) Balance() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Balance
}

// SetBalance sets the account balance (tests use it to empty or top up the
// account).
func (s *Server) SetBalance(amount float64) error {
	if math.IsNaN(amount) || math.IsInf(amount, 0) {
		return fmt.Errorf("sandbox: set balance: %v is not a number", amount)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.Balance = roundMoney(amount)
	if err := s.saveLocked(); err != nil {
		return fmt.Errorf("sandbox: set balance: %w", err)
	}
	return nil
}

// SetFaults replaces the injected faults, so that a test can break the API
// for one phase only. The random sequence restarts from f.Seed.
func (s *Server) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("sandbox: %w", err)
	}
	s.faults.set(f)
	return nil
}

// Services returns the services, sorted by ID, with the names they have
// paid for.
func (s *Server) Services() []Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Service, 0, len(s.st.Services))
	for _, sv := range s.st.Services {
		out = append(out, Service{
			ID:         sv.ID,
			ProductID:  sv.ProductID,
			MaxDomains: sv.MaxDomains,
			Domains:    append([]string(nil), sv.Paid...),
			Expires:    sv.Ends,
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// RootPEM returns the CA's root certificate, PEM-encoded: what clients of the
// sandbox must trust.
func (s *Server) RootPEM() string { return s.ca.rootPEM() }

// RootPath is the file holding the root certificate (inside StateDir), for
// clients that are given a path to trust.
func (s *Server) RootPath() string {
	return filepath.Join(s.cfg.StateDir, caSubdir, caRootCertFile)
}

// RootPool returns a new pool holding the CA's root certificate.
func (s *Server) RootPool() *x509.CertPool { return s.ca.rootPool() }

// ApproveEmail approves the e-mail validation of domain in the pending order
// of service serviceID, as the approver's click would; the order is issued
// at once if that was its last pending validation.
func (s *Server) ApproveEmail(serviceID, domain string) error {
	n, err := normalizeName(domain)
	if err != nil {
		return fmt.Errorf("sandbox: approve e-mail: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.st.Services[serviceID]
	if !ok {
		return fmt.Errorf("sandbox: approve e-mail for %s: no service %q", n.name, serviceID)
	}
	o := s.st.Orders[sv.Current]
	if o == nil || o.Status != statusPending {
		return fmt.Errorf("sandbox: approve e-mail for %s: service %s has no pending order", n.name, serviceID)
	}
	d, ok := o.DCV[n.name]
	if !ok {
		return fmt.Errorf("sandbox: approve e-mail for %s: not a domain of service %s's pending order (unique_id %s)", n.name, serviceID, o.UniqueID)
	}
	if !isEmailMethod(d.Method) {
		return fmt.Errorf("sandbox: approve e-mail for %s: it is validated by %s, not by e-mail", n.name, d.Method)
	}
	d.Approved = true
	d.Status = dcvValid
	d.Message = ""
	d.CheckedAt = s.cfg.Now()
	s.log.Info("e-mail validation approved", zap.String("service_id", serviceID), zap.String("domain", n.name), zap.String("approver", d.Method))
	issueErr := s.maybeIssueLocked(o)
	if err := s.saveLocked(); err != nil {
		return fmt.Errorf("sandbox: approve e-mail for %s: %w", n.name, err)
	}
	if issueErr != nil {
		return fmt.Errorf("sandbox: approve e-mail for %s: %w", n.name, issueErr)
	}
	return nil
}

// roundMoney rounds to cents, so that repeated float arithmetic on prices
// does not drift.
func roundMoney(v float64) float64 { return math.Round(v*100) / 100 }

const (
	upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	lowerAlnum = "abcdefghijklmnopqrstuvwxyz0123456789"
	mixedAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	digits     = "0123456789"
)

// randomString returns n characters drawn uniformly from alphabet.
func randomString(alphabet string, n int) (string, error) {
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b), nil
}

func sortedUnique(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	j := 0
	for i, v := range out {
		if i > 0 && v == out[j-1] {
			continue
		}
		out[j] = v
		j++
	}
	return out[:j]
}
