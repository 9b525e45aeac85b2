package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/reseller"
)

// This file is the order's steps: each performs the work of the step the
// order is in and records the next one (next), or returns an error that
// drive records as a failed try (fatalError: the order fails).

// steps maps each step an order may be in to its work.
var steps = map[store.Step]func(*orderRun, context.Context) error{
	store.StepNew:        (*orderRun).stepNew,
	store.StepSubmitted:  (*orderRun).stepSubmitted,
	store.StepPublishing: (*orderRun).stepPublishing,
	store.StepPublished:  (*orderRun).stepPublished,
	store.StepVisible:    (*orderRun).stepVisible,
	store.StepRechecked:  (*orderRun).stepRechecked,
	store.StepIssued:     (*orderRun).stepIssued,
	store.StepDeployed:   (*orderRun).stepDeployed,
	store.StepReloaded:   (*orderRun).stepReloaded,
}

// advance performs the current step's work and records the next step.
func (r *orderRun) advance(ctx context.Context) error {
	step, ok := steps[r.o.Step]
	if !ok {
		return fmt.Errorf("order %s in unknown step %q", r.o.UniqueID, r.o.Step)
	}
	return step(r, ctx)
}

// stepNew submits the reissue: the paid call, under the order's unique_id.
func (r *orderRun) stepNew(ctx context.Context) error {
	d, cc, o := r.d, r.cc, r.o
	// Before the paid call: what would fail only after it (a web root
	// dcvd cannot write, a deploy directory it cannot use) is refused
	// now, while refusing costs nothing. Not fatal: the order keeps its
	// unique_id and backs off until the admin mends it.
	if err := d.preflight(ctx, cc); err != nil {
		return err
	}
	// An order that waited (a backoff, a daemon stopped) past the end of
	// its service, or whose service's end dcvd has not asked lately: the
	// reseller would refuse it.
	if err := d.checkServiceBeforeReissue(ctx, cc, o); err != nil {
		return &fatalError{err}
	}
	req := reseller.ReissueRequest{
		UniqueID: o.UniqueID, ServiceID: o.ServiceID, DomainDCV: o.DomainDCV, CSR: o.CSR,
		ContactEmail: cc.ContactEmail, Organization: cc.Organization, NotifyURL: d.notifyURL(o),
	}
	res, err := d.apiClient().Reissue(ctx, req)
	if err != nil {
		var de *reseller.DecodeError
		if reseller.Retryable(err) || errors.As(err, &de) {
			// The CA may have processed it: retry with the same unique_id.
			return err
		}
		return &fatalError{d.serviceExpired(ctx, cc, o, err)}
	}
	plan, err := reseller.ValidateInstructions(o.DomainDCV, res.DCV)
	if err != nil {
		o.Cost = res.Cost
		return fatal("the CA's DCV instructions were refused, nothing was published: %w", err)
	}
	for _, w := range plan.Warnings {
		r.log.Warn("DCV instruction repaired or ignored", zap.String("warning", w))
	}
	o.Instructions, o.Cost = plan.Instructions, res.Cost
	r.log.Info("reissue accepted", zap.Float64("cost", res.Cost), zap.String("status", res.Status))
	d.metrics.Charge(o.Cert, res.Cost)
	for _, in := range o.Instructions {
		if in.Email != nil {
			r.log.Warn("e-mail validation: the CA writes to the approver; approve it there", zap.String("domain", in.Domain), zap.String("approver", in.Email.Address))
			d.alertEmailApproval(o, in.Domain, in.Email.Address)
		}
	}
	return r.next(ctx, store.StepSubmitted)
}

// stepSubmitted plans the DNS records of the CNAME instructions.
func (r *orderRun) stepSubmitted(ctx context.Context) error {
	var cnames []reseller.CNAMEInstruction
	for _, in := range r.o.Instructions {
		if in.CNAME != nil {
			cnames = append(cnames, *in.CNAME)
		}
	}
	if len(cnames) > 0 {
		p, err := r.d.dnsFor(r.cc)
		if err != nil {
			return &fatalError{err}
		}
		if r.o.DNSRecords, err = p.Plan(ctx, cnames); err != nil {
			return err
		}
	}
	return r.next(ctx, store.StepPublishing)
}

// stepPublishing publishes the DNS records and the validation files.
func (r *orderRun) stepPublishing(ctx context.Context) error {
	if len(r.o.DNSRecords) > 0 {
		p, err := r.d.dnsFor(r.cc)
		if err != nil {
			return &fatalError{err}
		}
		rep, err := p.Publish(ctx, r.o.DNSRecords)
		if err != nil {
			return err
		}
		r.log.Info("DNS records published", zap.Int("set", len(rep.Set)), zap.Int("unchanged", len(rep.Unchanged)), zap.Int("write_calls", rep.Calls))
	}
	if err := r.d.writeFiles(ctx, r.cc, r.o); err != nil {
		return err
	}
	return r.next(ctx, store.StepPublished)
}

// stepPublished proves every record and file visible, as the CA will
// look for them.
func (r *orderRun) stepPublished(ctx context.Context) error {
	d, cc, o := r.d, r.cc, r.o
	start := d.now()
	var p dnsPublisher
	if len(o.DNSRecords) > 0 {
		var err error
		if p, err = d.dnsFor(cc); err != nil {
			return &fatalError{err}
		}
	}
	// A retry publishes again first: a provider may have dropped the
	// write or someone deleted a record. Publish writes only what is
	// missing; the step and its backoff stay as they are.
	if o.Attempts > 0 {
		if p != nil {
			if _, err := p.Publish(ctx, o.DNSRecords); err != nil {
				return err
			}
		}
		if err := d.writeFiles(ctx, cc, o); err != nil {
			return err
		}
	}
	if p != nil {
		if err := p.WaitVisible(ctx, o.DNSRecords); err != nil {
			return err
		}
		d.metrics.ObservePropagation(cc.DNS, d.now().Sub(start))
	}
	// In a cluster the self-check may reach any node: first every node
	// must have written the files.
	if err := d.files.WaitAcks(ctx, o); err != nil {
		return err
	}
	checker := httpchallenge.Checker{Connect: cc.HTTPConnect}
	for _, in := range o.Instructions {
		if in.File != nil {
			if err := checker.Check(ctx, *in.File); err != nil {
				return fmt.Errorf("self-check of %s: %w", in.Domain, err)
			}
		}
	}
	r.log.Info("every record and file is visible", zap.Duration("took", d.now().Sub(start)))
	return r.next(ctx, store.StepVisible)
}

// stepVisible asks the CA to look: only now, since a CA that looks too
// early caches its failure.
func (r *orderRun) stepVisible(ctx context.Context) error {
	if err := r.d.apiClient().UpdateDCV(ctx, r.o.ServiceID, r.o.DomainDCV); err != nil {
		return err
	}
	r.log.Info("re-check requested")
	r.o.NextAttempt = r.d.now().Add(min(r.poll, 2*time.Second))
	return r.next(ctx, store.StepRechecked)
}

// stepRechecked polls for the certificate, and verifies it once issued.
func (r *orderRun) stepRechecked(ctx context.Context) error {
	d, o := r.d, r.o
	res, err := d.apiClient().Detail(ctx, o.ServiceID)
	if err != nil {
		return err
	}
	switch res.Status {
	case reseller.StatusCancelled, reseller.StatusRefunded, reseller.StatusRevoked:
		return fatal("the CA reports the order %s", res.Status)
	}
	if res.CertPEM == "" {
		o.NextAttempt = d.now().Add(r.poll)
		r.log.Info("no certificate yet", zap.String("status", res.Status), zap.Duration("next_poll", r.poll))
		r.poll = min(r.poll*3/2, 5*time.Minute)
		if err := r.st.PutOrder(ctx, o); err != nil {
			return err
		}
		return errWaiting
	}
	key, _, err := d.orderKey(o)
	if err != nil {
		return &fatalError{err}
	}
	got, err := certs.Verify(res.CertPEM, res.CAPEM, key, o.Names, d.rootPool(), d.now())
	if err != nil {
		return fatal("the issued certificate was refused, nothing was deployed: %w", err)
	}
	o.CertPEM, o.ChainPEM = got.LeafPEM, got.ChainPEM
	o.Serial, o.NotBefore, o.NotAfter = certs.SerialHex(got.Leaf), got.Leaf.NotBefore, got.Leaf.NotAfter
	r.log.Info("certificate issued and verified", zap.String("serial", o.Serial), zap.String("not_after", o.NotAfter.UTC().Format(time.RFC3339)))
	return r.next(ctx, store.StepIssued)
}

// stepIssued installs the certificate into the deploy directory.
func (r *orderRun) stepIssued(ctx context.Context) error {
	b, err := r.d.bundle(r.o)
	if err != nil {
		return &fatalError{err}
	}
	if err := r.d.target(r.cc).Install(ctx, b); err != nil {
		return err
	}
	r.log.Info("deployed", zap.String("dir", r.cc.Deploy.Dir))
	return r.next(ctx, store.StepDeployed)
}

// stepDeployed reloads the web server, and records the certificate as
// live; a failed reload rolls the files back (rollBack).
func (r *orderRun) stepDeployed(ctx context.Context) error {
	d, cc, o := r.d, r.cc, r.o
	b, err := d.bundle(o)
	if err != nil {
		return &fatalError{err}
	}
	if err := d.target(cc).Reload(ctx, b); err != nil {
		if ctx.Err() != nil {
			// Stopping: the new files stay, and the reload runs again
			// when the order resumes.
			return err
		}
		return r.rollBack(ctx, err)
	}
	live := &store.Certificate{
		Name: o.Cert, Serial: o.Serial, Names: o.Names, NotBefore: o.NotBefore, NotAfter: o.NotAfter,
		CertPEM: o.CertPEM, ChainPEM: o.ChainPEM, KeyFile: o.KeyFile, KeySealed: o.KeySealed, UniqueID: o.UniqueID,
		DeployedAt: d.now(),
	}
	if leaf, err := certs.ParsePEM(o.CertPEM); err == nil {
		live.Names = certs.LeafNames(leaf[0])
	}
	if err := r.st.PutCertificate(ctx, live); err != nil {
		return err
	}
	r.log.Info("reloaded; the new certificate is live", zap.String("serial", o.Serial))
	d.cluster.RecordDeployed(ctx, cc.Name, o.Serial, nil)
	d.updateCertMetrics(ctx, cc)
	return r.next(ctx, store.StepReloaded)
}

// rollBack follows the failed reload err: the previous files go back and
// are reloaded, and the next attempt installs again.
func (r *orderRun) rollBack(ctx context.Context, err error) error {
	t, o := r.d.target(r.cc), r.o
	// Recorded before the files are rolled back: a crash after the
	// rollback must not resume at deployed and take the restored files
	// for the new ones.
	o.Step = store.StepIssued
	if perr := r.st.PutOrder(ctx, o); perr != nil {
		return errors.Join(err, perr)
	}
	if rerr := t.Rollback(ctx); rerr != nil {
		// First deployment: nothing to go back to; the new files stay,
		// and the retry installs them again and reloads.
		return fmt.Errorf("reload failed (%w); no previous files to restore: %v", err, rerr)
	}
	// The reload after the rollback describes what was restored.
	restored, _ := t.Live(ctx)
	restored.Cert = o.Cert
	if rrerr := t.Reload(ctx, restored); rrerr != nil {
		return fmt.Errorf("reload failed (%w); previous files restored, but reloading them failed too: %v", err, rrerr)
	}
	return fmt.Errorf("reload failed, previous files restored and reloaded: %w", err)
}

// stepReloaded cleans up the DCV and ends the order.
func (r *orderRun) stepReloaded(ctx context.Context) error {
	o := r.o
	if err := r.d.cleanup(ctx, r.cc, o); err != nil {
		return err
	}
	// History first: a crash before the order is marked done repeats
	// this step, and AddAttempt replaces its entry for the unique_id.
	if err := r.st.AddAttempt(ctx, store.Attempt{Cert: o.Cert, UniqueID: o.UniqueID, Started: o.Created, Finished: r.d.now(),
		Outcome: store.StepDone, Cost: o.Cost, Serial: o.Serial}); err != nil {
		return err
	}
	if err := r.next(ctx, store.StepDone); err != nil {
		return err
	}
	r.log.Info("order done", zap.Float64("cost", o.Cost))
	r.d.alertRenewed(o)
	return nil
}
