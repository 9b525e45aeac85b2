package store

import (
	"math"
	"time"

	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// Step is where an order stands. Each step is persisted before the side
// effect of the next one, so that after a crash an order resumes from its
// step by repeating only work that is safe to repeat.
type Step string

// The steps of an order, in order.
const (
	// StepNew: intent persisted — unique_id, key file, CSR. The reissue
	// may or may not have reached the CA; it is (re)sent with the same
	// unique_id, which the CA charges once.
	StepNew Step = "new"
	// StepSubmitted: the CA accepted the reissue; its DCV instructions are
	// validated and stored.
	StepSubmitted Step = "submitted"
	// StepPublishing: the DNS records are planned (zones known) and stored,
	// so that they can be removed even if publishing is interrupted.
	StepPublishing Step = "publishing"
	// StepPublished: every record and file is written.
	StepPublished Step = "published"
	// StepVisible: every record answers on every authoritative nameserver
	// and every file is served; only now may the CA be asked to look.
	StepVisible Step = "visible"
	// StepRechecked: update-dcv sent; waiting for the certificate.
	StepRechecked Step = "rechecked"
	// StepIssued: the certificate arrived, was verified and is stored.
	StepIssued Step = "issued"
	// StepDeployed: the files are in the deploy directory.
	StepDeployed Step = "deployed"
	// StepReloaded: the reload command succeeded.
	StepReloaded Step = "reloaded"
	// StepDone: DCV cleaned up, history recorded. Terminal.
	StepDone Step = "done"
	// StepFailed: given up (the CA refused the reissue, or its instructions
	// were refused); DCV cleaned up. Terminal. A later attempt uses a new
	// unique_id.
	StepFailed Step = "failed"
)

// Terminal reports whether no more work is due on an order in step s.
func (s Step) Terminal() bool { return s == StepDone || s == StepFailed }

// Order is one reissue of one certificate, as persisted.
type Order struct {
	UniqueID  string
	Cert      string // the [[certificate]] name
	ServiceID string
	Step      Step
	// Names are the certificate's names (sorted) and DomainDCV how each is
	// validated, as sent.
	Names     []string
	DomainDCV map[string]reseller.Method
	KeyType   string
	// KeyFile is the private key's file (0600), written before the CSR is
	// sent; "" in cluster mode, where KeySealed holds the key.
	KeyFile string
	// KeySealed is the private key sealed with [store] encryption_key
	// (cluster mode, where every node must be able to deploy it and
	// another node may resume the order), stored before the CSR is sent;
	// KeyFile is then "". "" when KeyFile holds the key.
	KeySealed string
	CSR       string
	// CallbackToken is the unguessable part of this order's notify_url.
	CallbackToken string
	// AllowDomainRemoval records the admin's confirmation that dropping
	// names of the live certificate (which revokes it) is intended.
	AllowDomainRemoval bool

	Instructions []reseller.Instruction
	DNSRecords   []providers.Record
	Files        []httpchallenge.Written
	// Cost is what the reissue charged, as the CA reported it.
	Cost float64

	// The certificate, once issued and verified.
	CertPEM   string // leaf
	ChainPEM  string // issuer chain
	Serial    string // lower-case hex
	NotBefore time.Time
	NotAfter  time.Time

	// Attempts counts failed tries of the current step; NextAttempt is
	// when the next try is due (backoff), LastError why the last failed.
	Attempts    int
	NextAttempt time.Time
	LastError   string

	Created time.Time
	Updated time.Time
}

// Certificate is the live (deployed) certificate of a configured name.
type Certificate struct {
	Name      string
	Serial    string
	Names     []string // the names it covers (SANs), sorted
	NotBefore time.Time
	NotAfter  time.Time
	CertPEM   string
	ChainPEM  string
	// KeyFile is the private key's file, "" in cluster mode.
	KeyFile string
	// KeySealed is the private key sealed with [store] encryption_key, in
	// cluster mode (KeyFile is then ""): every node deploys it from the
	// store. "" when KeyFile holds the key.
	KeySealed string
	// UniqueID of the order that produced it ("" when adopted from an
	// existing deploy directory).
	UniqueID   string
	DeployedAt time.Time
}

// Attempt is one entry of a certificate's history: an order that ended.
type Attempt struct {
	Cert     string
	UniqueID string
	Started  time.Time
	Finished time.Time
	Outcome  Step // StepDone or StepFailed
	Cost     float64
	Serial   string
	Error    string
}

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
