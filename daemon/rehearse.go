package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// This file is "dcvd reissue --dry-run": a rehearsal of a reissue that
// does everything the real run does up to the paid call, and everything
// after it that dcvd controls, with stand-ins for what only the CA can
// give: a signed read of the order instead of the reissue, a probe CNAME
// instead of the CA's record, a probe file instead of the CA's file. It
// costs nothing and leaves nothing behind: no order, no key, nothing in the
// state, every probe removed.

// Rehearsal step names, in the order Rehearse runs them. A DNS or HTTP
// step is followed by what it concerns ("dns publish", "http fetch
// www.example.com").
const (
	RehearsePlan        = "plan"
	RehearseCredentials = "api credentials"
	RehearseService     = "service"
	RehearsePreflight   = "pre-flight"
	RehearseDNS         = "dns"
	RehearseHTTP        = "http"
)

// RehearsalStep is one check of a rehearsal.
type RehearsalStep struct {
	Name     string
	Duration time.Duration
	// Detail says what was found, whatever the outcome.
	Detail string
	// Err is why the real run would fail at this step; nil when it would
	// get past it.
	Err error
	// Skipped: not checked, because a step it rests on failed (Detail
	// says which).
	Skipped bool
}

// Rehearsal is what Rehearse found for one certificate.
type Rehearsal struct {
	Cert string
	// Plan is the reissue the real run would send (see Daemon.Plan); an
	// order in flight when it has a UniqueID. Nil when the plan itself
	// was refused.
	Plan  *store.Order
	Steps []RehearsalStep
}

// Failed returns the steps that failed.
func (r *Rehearsal) Failed() []RehearsalStep {
	var out []RehearsalStep
	for _, s := range r.Steps {
		if s.Err != nil {
			out = append(out, s)
		}
	}
	return out
}

// Err names the first failed step and its reason (and how many more
// failed), or is nil when the real run would get past every step dcvd
// controls.
func (r *Rehearsal) Err() error {
	failed := r.Failed()
	if len(failed) == 0 {
		return nil
	}
	more := ""
	if len(failed) > 1 {
		more = fmt.Sprintf(" (and %d more failed step(s) above)", len(failed)-1)
	}
	return fmt.Errorf("certificate %s: the rehearsal failed at step %q%s: %w", r.Cert, failed[0].Name, more, failed[0].Err)
}

// RehearseOptions say what the real run would be asked.
type RehearseOptions struct {
	// AllowDomainRemoval: the reissue confirms that it drops names of the
	// live certificate.
	AllowDomainRemoval bool
}

// Rehearse rehearses the reissue of the certificate name: the plan, the
// API credentials and the order (a signed detail read), the host's
// pre-flight check, the DNS provider (a probe CNAME in each zone, waited
// for on every authoritative nameserver, removed) and the web roots (a
// probe file written and fetched as the CA fetches, removed). Every check
// runs even when an earlier one failed, so that one rehearsal shows every
// problem. The error is for a name that is not configured; what would fail
// is in the Rehearsal (see Rehearsal.Err).
//
// It creates no order and no key, writes nothing to the state, and sends
// nothing that costs money: the detail call is a read.
func (d *Daemon) Rehearse(ctx context.Context, name string, opt RehearseOptions) (*Rehearsal, error) {
	cc, err := d.certConfig(name)
	if err != nil {
		return nil, err
	}
	r := &Rehearsal{Cert: cc.Name}
	add := func(s RehearsalStep) { r.Steps = append(r.Steps, s) }
	timed := func(name string, f func() (string, error)) {
		start := time.Now()
		detail, err := f()
		add(RehearsalStep{Name: name, Duration: time.Since(start), Detail: detail, Err: err})
	}

	timed(RehearsePlan, func() (string, error) {
		o, err := d.Plan(ctx, cc.Name, opt.AllowDomainRemoval)
		if err != nil {
			return "", err
		}
		r.Plan = o
		if o.UniqueID != "" {
			return fmt.Sprintf("order %s is in flight at step %s: the real run resumes it (the CA charges a unique_id once)", o.UniqueID, o.Step), nil
		}
		return "a new order: " + fmt.Sprintf("%d name(s)", len(o.Names)), nil
	})
	d.rehearseService(ctx, cc, opt, add)
	timed(RehearsePreflight, func() (string, error) {
		if err := d.preflight(ctx, cc); err != nil {
			return "", err
		}
		return "web roots writable, deploy directory usable, state and key directories private, reload program found", nil
	})
	d.rehearseDNS(ctx, cc, add)
	d.rehearseHTTP(ctx, cc, add)
	return r, nil
}

// rehearseService checks the credentials and the order with a signed
// detail read: the service exists, is not cancelled, refunded, revoked or
// ended, and the reissue would not drop a name of its live certificate
// unless that is allowed (the CA revokes a certificate whose names a
// reissue replaces). What it learns is not recorded: a rehearsal writes
// nothing to the state.
func (d *Daemon) rehearseService(ctx context.Context, cc *config.CertConfig, opt RehearseOptions, add func(RehearsalStep)) {
	api := d.apiClient()
	if api == nil {
		add(RehearsalStep{Name: RehearseCredentials, Err: errors.New("no API client: [api] is not configured")})
		add(RehearsalStep{Name: RehearseService, Skipped: true, Detail: "not checked: no API client"})
		return
	}
	start := time.Now()
	o, err := api.Detail(ctx, cc.ServiceID)
	took := time.Since(start)
	var ae *reseller.APIError
	switch {
	case err == nil:
		add(RehearsalStep{Name: RehearseCredentials, Duration: took, Detail: "the signed detail call of service " + cc.ServiceID + " was answered"})
	case errors.As(err, &ae) && ae.CredentialsRefused():
		add(RehearsalStep{Name: RehearseCredentials, Duration: took,
			Err: fmt.Errorf("the reseller refused the credentials (check api.access_key_id and the secret): %w", err)})
		add(RehearsalStep{Name: RehearseService, Skipped: true, Detail: "not checked: the credentials were refused"})
		return
	case errors.As(err, &ae):
		// Signed and understood: the credentials hold, the order does
		// not.
		add(RehearsalStep{Name: RehearseCredentials, Detail: "the signed request was accepted"})
		add(RehearsalStep{Name: RehearseService, Duration: took,
			Err: fmt.Errorf("the reseller has no usable service %q (check service_id in [[certificate]] %q): %w", cc.ServiceID, cc.Name, err)})
		return
	default:
		add(RehearsalStep{Name: RehearseCredentials, Duration: took, Err: fmt.Errorf("the reseller's API could not be asked: %w", err)})
		add(RehearsalStep{Name: RehearseService, Skipped: true, Detail: "not checked: the API did not answer"})
		return
	}

	start = time.Now()
	detail, err := d.judgeService(ctx, cc, opt, o)
	add(RehearsalStep{Name: RehearseService, Duration: time.Since(start) + took, Detail: detail, Err: err})
}

// judgeService is the service step's verdict on the detail o of cc's
// service.
func (d *Daemon) judgeService(ctx context.Context, cc *config.CertConfig, opt RehearseOptions, o *reseller.Order) (string, error) {
	var notes []string
	status := o.Status
	if status == "" {
		status = "not stated"
	}
	notes = append(notes, "status "+status)
	switch o.Status {
	case reseller.StatusCancelled, reseller.StatusRefunded, reseller.StatusRevoked, reseller.StatusExpired:
		return strings.Join(notes, "; "), fmt.Errorf("service %s is %s: the reseller would refuse a reissue", cc.ServiceID, o.Status)
	}

	// The end: the reseller's word now, else what the state recorded.
	end := o.ServiceExpiresAt
	if end.IsZero() {
		if all, err := d.store.Services(ctx); err == nil {
			for _, s := range all {
				if s.ServiceID == cc.ServiceID {
					end = s.Expires
				}
			}
		}
	}
	now := d.now()
	switch {
	case end.IsZero():
		notes = append(notes, "end of the paid period not stated")
	case !end.After(now):
		return strings.Join(notes, "; "), &ServiceEndedError{Cert: cc.Name, ServiceID: cc.ServiceID, Ended: end}
	default:
		notes = append(notes, fmt.Sprintf("paid until %s (%d days left)", end.UTC().Format("2006-01-02"), int(end.Sub(now).Hours()/24)))
	}

	// The names of the certificate the CA holds for the order: those the
	// configuration drops are revoked by the reissue.
	if o.CertPEM == "" {
		notes = append(notes, "no certificate issued yet")
		return strings.Join(notes, "; "), nil
	}
	leaves, err := certs.ParsePEM(o.CertPEM)
	if err != nil || len(leaves) == 0 {
		notes = append(notes, "its certificate could not be read, names not compared")
		return strings.Join(notes, "; "), nil
	}
	live := certs.LeafNames(leaves[0])
	var dropped, added []string
	for _, n := range live {
		if _, ok := cc.Domains[n]; !ok {
			dropped = append(dropped, n)
		}
	}
	for _, n := range cc.Names() {
		if !slices.Contains(live, n) {
			added = append(added, n)
		}
	}
	if len(added) > 0 {
		notes = append(notes, "adds "+strings.Join(added, ", "))
	}
	if len(dropped) > 0 {
		if !opt.AllowDomainRemoval {
			return strings.Join(notes, "; "), &DomainRemovalError{Cert: cc.Name, Serial: certs.SerialHex(leaves[0]), Dropped: dropped}
		}
		notes = append(notes, "drops "+strings.Join(dropped, ", ")+" (allowed: the CA revokes the current certificate)")
	}
	if len(added) == 0 && len(dropped) == 0 {
		notes = append(notes, "the CA's certificate has the configured names")
	}
	return strings.Join(notes, "; "), nil
}

// dnsNames are the names of cc validated by DNS.
func dnsNames(cc *config.CertConfig) []string {
	var out []string
	for _, n := range cc.Names() {
		if cc.Domains[n] == reseller.MethodDNS {
			out = append(out, n)
		}
	}
	return out
}

// rehearseDNS publishes a probe CNAME in each zone of cc's DNS-validated
// names, waits until every authoritative nameserver answers it, and
// removes it (providers.DNS.Probe, as "dcvd dns test" does).
func (d *Daemon) rehearseDNS(ctx context.Context, cc *config.CertConfig, add func(RehearsalStep)) {
	names := dnsNames(cc)
	if len(names) == 0 {
		return
	}
	p := d.dnsProvider(cc.DNS)
	if p == nil {
		add(RehearsalStep{Name: RehearseDNS, Err: fmt.Errorf("dns = %q names no configured [dns.%s]", cc.DNS, cc.DNS)})
		return
	}
	p.Probe(ctx, names, func(s providers.ProbeStep) {
		add(RehearsalStep{Name: RehearseDNS + " " + s.Name, Duration: s.Took, Detail: s.Detail, Err: s.Err})
	})
}

// rehearseHTTP writes a probe file where the CA's file would go (every web
// root, or the daemon's standalone responder), fetches it through each
// HTTP-validated name's URL as the CA will (no redirects, through
// http_connect when set), and removes it.
func (d *Daemon) rehearseHTTP(ctx context.Context, cc *config.CertConfig, add func(RehearsalStep)) {
	var names []string
	for _, n := range cc.Names() {
		if m := cc.Domains[n]; m == reseller.MethodHTTP || m == reseller.MethodHTTPS {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return
	}
	var b [12]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	file := "dcvd-rehearsal-" + token + ".txt"
	content := "dcvd rehearsal " + token

	start := time.Now()
	var (
		written []httpchallenge.Written
		where   string
		err     error
	)
	probe := fileProbe(cc.Domains[names[0]], names[0], file, content)
	switch {
	case len(cc.Webroots) > 0:
		written, err = httpchallenge.Write(cc.Webroots, probe)
		var dirs []string
		for _, w := range cc.Webroots {
			dirs = append(dirs, w.Dir)
		}
		where = "into " + strings.Join(dirs, ", ")
	case cc.Standalone != "":
		d.responder.Add(probe)
		err = d.standalone(cc.Standalone).Add(ctx, probe)
		where = "to the responder on " + cc.Standalone
	default:
		err = errors.New("neither webroot nor standalone is configured: the CA's file could not be served")
	}
	add(RehearsalStep{Name: RehearseHTTP + " write", Duration: time.Since(start), Detail: "probe file " + file + " " + where, Err: err})
	if err == nil {
		checker := httpchallenge.Checker{Connect: cc.HTTPConnect}
		for _, n := range names {
			f := fileProbe(cc.Domains[n], n, file, content)
			start := time.Now()
			err := checker.Check(ctx, f)
			add(RehearsalStep{Name: RehearseHTTP + " fetch " + n, Duration: time.Since(start), Detail: f.URL, Err: err})
		}
	}

	// Removed whatever happened, on a context of its own: an interrupted
	// rehearsal leaves nothing behind either.
	start = time.Now()
	var errs []error
	if len(written) > 0 {
		errs = append(errs, httpchallenge.Remove(written))
	}
	if cc.Standalone != "" && len(cc.Webroots) == 0 {
		d.responder.Remove(probe)
		errs = append(errs, d.standalone(cc.Standalone).Remove(probe))
	}
	if len(written) > 0 || (cc.Standalone != "" && len(cc.Webroots) == 0) {
		err := errors.Join(errs...)
		detail := "removed " + file
		if err != nil {
			detail = "remove " + file + " by hand"
		}
		add(RehearsalStep{Name: RehearseHTTP + " cleanup", Duration: time.Since(start), Detail: detail, Err: err})
	}
}

// fileProbe is the file instruction the CA would give name validated by
// method, for the probe file.
func fileProbe(method reseller.Method, name, file, content string) reseller.FileInstruction {
	scheme := "http"
	if method == reseller.MethodHTTPS {
		scheme = "https"
	}
	host := name
	if ip := net.ParseIP(name); ip != nil && ip.To4() == nil {
		host = "[" + name + "]"
	}
	u := url.URL{Scheme: scheme, Host: host, Path: reseller.PKIValidationPath + file}
	return reseller.FileInstruction{Scheme: scheme, Host: name, Path: reseller.PKIValidationPath + file,
		FileName: file, Content: content, URL: u.String()}
}
