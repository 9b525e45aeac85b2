package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/dcvd/dcvd/internal/fsutil"
)

// stateFileName is the state file inside Config.StateDir.
const stateFileName = "state.json"

// stateVersion is written into the state file so that a later format can
// recognise (and refuse or migrate) an older one.
const stateVersion = 1

// Order and DCV statuses used by the sandbox.
const (
	statusPending   = "pending"
	statusIssued    = "issued"
	statusRevoked   = "revoked"
	statusCancelled = "cancelled" // superseded by a later reissue before it was issued
	statusExpired   = "expired"   // its validations passed after the service had ended: never issued

	dcvPending = "pending"
	dcvValid   = "valid"
)

// state is everything the sandbox remembers. It is guarded by Server.mu and
// written whole after every change.
type state struct {
	Version         int                      `json:"version"`
	AccessKeyID     string                   `json:"access_key_id"`
	AccessKeySecret string                   `json:"access_key_secret"`
	Balance         float64                  `json:"balance"`
	Products        map[string]Product       `json:"products"`
	Services        map[string]*serviceState `json:"services"`
	// Orders are keyed by unique_id: the key of idempotency.
	Orders      map[string]*orderState `json:"orders"`
	Ledger      []Charge               `json:"ledger"`
	Revocations []Revocation           `json:"revocations"`
	// Nonces maps each nonce seen to when it was seen, so that a replayed
	// request is refused even after a restart.
	Nonces map[string]time.Time `json:"nonces"`
}

// serviceState is a purchased certificate and what the CA remembers of it.
//
// Number, Created, Ends and Period came with the certificate list and the
// services' paid periods. A state file written before them loads with every
// service numbered in service_id order, no creation time and no end (the
// services never end, as before): an end is set on such a service with
// SetServiceEnd, POST /sandbox/service-end or a configured Service.Expires.
type serviceState struct {
	ID         string   `json:"id"`
	ProductID  string   `json:"product_id"`
	MaxDomains int      `json:"max_domains"`
	Paid       []string `json:"paid_domains"` // sorted
	// Number is the service's id in the certificate list, in order of
	// creation.
	Number  int       `json:"number,omitempty"`
	Created time.Time `json:"created,omitzero"`
	// Ends is the end of the paid period (zero: none): no reissue at or
	// after it, and no certificate valid beyond it.
	Ends time.Time `json:"ends,omitzero"`
	// Period describes the paid period in the list ("1 Year"); empty when
	// unknown.
	Period  string `json:"period,omitempty"`
	LastCSR string `json:"last_csr,omitempty"`
	// Domains and LastMethods are the names of the latest order (CN first)
	// and how each was validated: a reissue without domain_dcv reuses them.
	Domains     []string          `json:"domains,omitempty"`
	LastMethods map[string]string `json:"last_methods,omitempty"`
	// Organization holds the company fields of OV/EV/IV orders.
	Organization map[string]string `json:"organization,omitempty"`
	// OrgLocked is set once a certificate was issued: the company data
	// cannot change any more.
	OrgLocked bool `json:"org_locked,omitempty"`
	// Current is the unique_id of the latest order: what detail shows.
	Current string `json:"current,omitempty"`
	// Issued is the certificate in force (issued, not revoked), if any.
	Issued *issuedCert `json:"issued,omitempty"`
}

// issuedCert is a certificate in force.
type issuedCert struct {
	UniqueID  string    `json:"unique_id"` // the order that issued it
	Serial    string    `json:"serial"`
	Names     []string  `json:"names"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
}

// orderState is one create or reissue.
type orderState struct {
	UniqueID  string  `json:"unique_id"`
	ServiceID string  `json:"service_id"`
	Op        string  `json:"op"` // "create" or "reissue"
	CAID      string  `json:"caid"`
	Cost      float64 `json:"cost"`
	Status    string  `json:"status"`
	CSR       string  `json:"csr"`
	// Domains are the certificate's names, CN first.
	Domains []string             `json:"domains"`
	DCV     map[string]*dcvState `json:"dcv"`
	// UniqueValue is the per-order random part of the DCV values; Values
	// are those values, fixed when the order was placed.
	UniqueValue  string    `json:"unique_value"`
	Values       dcvValues `json:"values"`
	NotifyURL    string    `json:"notify_url,omitempty"`
	ContactEmail string    `json:"contact_email,omitempty"`
	// Fingerprint identifies the request's business parameters, so that a
	// replayed unique_id with a different body can be told in the log.
	Fingerprint string    `json:"fingerprint"`
	CertPEM     string    `json:"cert_pem,omitempty"`
	CAPEM       string    `json:"ca_pem,omitempty"`
	Serial      string    `json:"serial,omitempty"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Created     time.Time `json:"created"`
}

// dcvState is the validation of one name of an order.
type dcvState struct {
	// Method is dns, http, https or the approver's e-mail address.
	Method string `json:"method"`
	Status string `json:"status"`
	// Message says why the last check failed (empty when valid or not yet
	// checked).
	Message   string    `json:"message,omitempty"`
	CheckedAt time.Time `json:"checked_at"`
	Approved  bool      `json:"approved,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, stateFileName) }

func newState() *state {
	return &state{
		Version:  stateVersion,
		Products: map[string]Product{},
		Services: map[string]*serviceState{},
		Orders:   map[string]*orderState{},
		Nonces:   map[string]time.Time{},
	}
}

// loadState reads the state file; a missing file is a fresh state
// (existed false).
func loadState(path string) (st *state, existed bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return newState(), false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read state: %w", err)
	}
	st = newState()
	if err := json.Unmarshal(data, st); err != nil {
		return nil, false, fmt.Errorf("state file %s is corrupt (%w); move it away to start afresh", path, err)
	}
	if st.Version != stateVersion {
		return nil, false, fmt.Errorf("state file %s has version %d, this sandbox reads version %d", path, st.Version, stateVersion)
	}
	// A state written with empty maps or lists decodes them as nil.
	if st.Products == nil {
		st.Products = map[string]Product{}
	}
	if st.Services == nil {
		st.Services = map[string]*serviceState{}
	}
	if st.Orders == nil {
		st.Orders = map[string]*orderState{}
	}
	if st.Nonces == nil {
		st.Nonces = map[string]time.Time{}
	}
	for id, o := range st.Orders {
		if o == nil || o.DCV == nil {
			return nil, false, fmt.Errorf("state file %s: order %q is incomplete", path, id)
		}
	}
	for id, sv := range st.Services {
		if sv == nil {
			return nil, false, fmt.Errorf("state file %s: service %q is incomplete", path, id)
		}
	}
	numberServices(st)
	return st, true, nil
}

// saveLocked writes the state. The caller holds s.mu, so that two saves
// never interleave and the file always holds one consistent state.
func (s *Server) saveLocked() error {
	s.pruneNoncesLocked()
	if s.cfg.Ephemeral {
		return nil
	}
	data, err := json.MarshalIndent(s.st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := fsutil.WriteFileAtomic(s.path, data, 0o600); err != nil {
		return fmt.Errorf("write state %s: %w", s.path, err)
	}
	return nil
}

// pruneNoncesLocked forgets nonces that can no longer be replayed: a request
// is accepted while its timestamp is within the skew of the server's clock,
// and a client's clock may itself be off by the skew, so a nonce is kept for
// twice the skew after it was seen.
func (s *Server) pruneNoncesLocked() {
	cutoff := s.cfg.Now().Add(-2 * s.cfg.TimestampSkew)
	for n, seen := range s.st.Nonces {
		if seen.Before(cutoff) {
			delete(s.st.Nonces, n)
		}
	}
}
