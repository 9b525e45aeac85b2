package daemon

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/metrics"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/reseller"
)

// This file is the per-order state machine. advance performs the side
// effect of the order's current step and persists the next step before
// returning; every side effect is safe to repeat, so that an order that was
// interrupted anywhere resumes by running its recorded step again.

// ReissueOptions say how Reissue drives an order.
type ReissueOptions struct {
	// AllowDomainRemoval confirms a reissue that drops names of the live
	// certificate, which the CA answers by revoking it.
	AllowDomainRemoval bool
	// Wait drives the order until it ends, sleeping through backoffs and
	// while the CA works. Otherwise Reissue returns at the first wait, and
	// the running daemon carries the order on.
	Wait bool
	// Retrying, when set, is told of each failed try of a step that will
	// be retried, once the try is recorded. An error it returns stops the
	// drive with that error; the order stays in flight, resumable.
	// dcvd reissue --wait gives up with it on repeated failures that
	// waiting cannot mend.
	Retrying func(o *store.Order, err error) error
}

// errWaiting says the order waits for the CA (NextAttempt is set): not a
// failure.
var errWaiting = errors.New("waiting for the CA")

// fatalError ends an order: retrying the same order cannot help.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

func fatal(format string, args ...any) error {
	return &fatalError{fmt.Errorf(format, args...)}
}

// DomainRemovalError refuses a reissue that would drop names of the live
// certificate without the admin's confirmation.
type DomainRemovalError struct {
	Cert    string
	Serial  string
	Dropped []string
}

func (e *DomainRemovalError) Error() string {
	return fmt.Sprintf("certificate %s: the reissue would drop %s from the live certificate (serial %s), and the CA revokes a certificate whose names a reissue replaces; if that is intended, run: dcvd reissue %s --allow-domain-removal",
		e.Cert, strings.Join(e.Dropped, ", "), e.Serial, e.Cert)
}

// Reissue reissues the certificate name now, or resumes its order in
// flight, and drives the order (see ReissueOptions).
func (d *Daemon) Reissue(ctx context.Context, name string, opt ReissueOptions) (*store.Order, error) {
	cc, err := d.certConfig(name)
	if err != nil {
		return nil, err
	}
	if !d.claim(name) {
		return nil, fmt.Errorf("certificate %s: its order is already being driven", name)
	}
	// In a cluster, the lease first: what is in flight is read under it.
	lctx, release, err := d.lease(ctx, name)
	if err != nil {
		d.release(name)
		return nil, err
	}
	defer release()
	o, err := d.store.ActiveOrder(lctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if o, err = d.newOrder(lctx, cc, opt.AllowDomainRemoval); err != nil {
			d.release(name)
			return nil, err
		}
	case err != nil:
		d.release(name)
		return nil, err
	}
	return o, d.driveClaimed(lctx, cc, o, opt)
}

// Plan says what Reissue would do, without doing it: the names and their
// methods, and whether the domain-removal guard would refuse.
func (d *Daemon) Plan(ctx context.Context, name string, allowDomainRemoval bool) (*store.Order, error) {
	cc, err := d.certConfig(name)
	if err != nil {
		return nil, err
	}
	if o, err := d.store.ActiveOrder(ctx, name); err == nil {
		return o, nil
	}
	if err := d.guardDomainRemoval(ctx, cc, allowDomainRemoval); err != nil {
		return nil, err
	}
	if err := d.guardServiceEnded(cc); err != nil {
		return nil, err
	}
	return &store.Order{Cert: cc.Name, ServiceID: cc.ServiceID, Names: cc.Names(), DomainDCV: cc.Domains, KeyType: cc.KeyType}, nil
}

func (d *Daemon) guardDomainRemoval(ctx context.Context, cc *config.CertConfig, allow bool) error {
	live, err := d.store.Certificate(ctx, cc.Name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var dropped []string
	for _, n := range live.Names {
		if _, kept := cc.Domains[n]; !kept {
			dropped = append(dropped, n)
		}
	}
	if len(dropped) == 0 || allow {
		return nil
	}
	return &DomainRemovalError{Cert: cc.Name, Serial: live.Serial, Dropped: dropped}
}

// newOrder persists the intent of a reissue: unique_id, key, CSR. The key
// is on disk before the order row names it, and both before anything is
// sent.
func (d *Daemon) newOrder(ctx context.Context, cc *config.CertConfig, allowDomainRemoval bool) (*store.Order, error) {
	if err := d.guardDomainRemoval(ctx, cc, allowDomainRemoval); err != nil {
		return nil, err
	}
	if err := d.guardServiceEnded(cc); err != nil {
		return nil, err
	}
	o := &store.Order{
		UniqueID:           "dcvd-" + randomHex(16),
		Cert:               cc.Name,
		ServiceID:          cc.ServiceID,
		Step:               store.StepNew,
		Names:              cc.Names(),
		DomainDCV:          cc.Domains,
		KeyType:            cc.KeyType,
		CallbackToken:      randomHex(24),
		AllowDomainRemoval: allowDomainRemoval,
	}
	log := d.orderLog(o)

	var reused bool
	if cc.ReuseKey {
		if live, err := d.store.Certificate(ctx, cc.Name); err == nil {
			held := &store.Order{Cert: cc.Name, UniqueID: live.UniqueID, KeyFile: live.KeyFile, KeySealed: live.KeySealed}
			// A key is reused only in the form this mode keeps keys in.
			if (d.sealer != nil) == (live.KeySealed != "") && (live.KeyFile != "" || live.KeySealed != "") {
				if _, _, err := d.orderKey(held); err == nil {
					o.KeyFile, o.KeySealed, reused = live.KeyFile, live.KeySealed, true
				}
			}
		}
	}
	if !reused {
		key, err := certs.GenerateKey(cc.KeyType)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
		}
		if d.sealer != nil {
			// Cluster mode: the key lives in the shared database, sealed,
			// so that whichever node finishes the order has it.
			keyPEM, err := certs.EncodeKey(key)
			if err != nil {
				return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
			}
			if o.KeySealed, err = d.sealer.seal(cc.Name, keyPEM); err != nil {
				return nil, err
			}
		} else {
			o.KeyFile = filepath.Join(d.config().Daemon.StateDir, "keys", cc.Name, o.UniqueID+".key")
			if err := certs.WriteKey(o.KeyFile, key); err != nil {
				return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
			}
		}
	}
	key, _, err := d.orderKey(o)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
	}
	if o.CSR, err = certs.NewCSR(key, o.Names); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
	}
	if err := d.storeFor(cc.Name).PutOrder(ctx, o); err != nil {
		return nil, fmt.Errorf("certificate %s: record the order: %w", cc.Name, err)
	}
	log.Info("order created", zap.Strings("names", o.Names), zap.Bool("key_reused", reused), zap.String("key_file", o.KeyFile),
		zap.Bool("key_sealed", o.KeySealed != ""))
	d.metrics.ReissueStarted(cc.Name)
	d.stepped(ctx, o)
	return o, nil
}

// orderKey returns o's private key and its PEM: opened from the database
// in cluster mode, else read from its file.
func (d *Daemon) orderKey(o *store.Order) (crypto.Signer, []byte, error) {
	if o.KeySealed == "" {
		return certs.LoadKey(o.KeyFile)
	}
	if d.sealer == nil {
		return nil, nil, fmt.Errorf("order %s: its key is sealed in the database, and [store] has no encryption key to open it", o.UniqueID)
	}
	keyPEM, err := d.sealer.open(o.Cert, o.KeySealed)
	if err != nil {
		return nil, nil, fmt.Errorf("order %s: %w", o.UniqueID, err)
	}
	key, err := certs.ParseKey(keyPEM, "of order "+o.UniqueID)
	if err != nil {
		return nil, nil, err
	}
	return key, keyPEM, nil
}

// drive advances o until it ends or, unless opt.Wait, until it must wait.
func (d *Daemon) drive(ctx context.Context, cc *config.CertConfig, o *store.Order, opt ReissueOptions) error {
	if !d.claim(o.Cert) {
		return fmt.Errorf("certificate %s: its order %s is already being driven", o.Cert, o.UniqueID)
	}
	return d.driveClaimed(ctx, cc, o, opt)
}

// driveClaimed is drive for a caller that has claimed o.Cert; it releases
// the claim when it returns.
func (d *Daemon) driveClaimed(ctx context.Context, cc *config.CertConfig, o *store.Order, opt ReissueOptions) error {
	wait := opt.Wait
	defer d.release(o.Cert)
	wake, unwake := d.wakeChan(o.UniqueID)
	defer unwake()
	log := d.orderLog(o)
	if err := d.serveFiles(ctx, cc, o); err != nil {
		log.Warn("serving validation files", zap.Error(err))
	}

	poll := d.config().Daemon.PollInterval
	if poll <= 0 {
		poll = 10 * time.Second
	}
	// Steps run under work and waits under ctx: once ctx ends no step
	// starts, and the one at work may finish within the stop grace.
	work, endWork := d.workContext(ctx)
	defer endWork()
	if held := d.leaseLost(o.Cert); held != nil {
		// A lost lease stops the step at once: another node may be
		// driving the order already.
		stop := context.AfterFunc(held, func() {
			var lost *leaseLostError
			if errors.As(context.Cause(held), &lost) {
				endWork()
			}
		})
		defer stop()
	}
	for !o.Step.Terminal() {
		// hint: this try was prompted by a callback before its time. It
		// may find the certificate early, but its failure is no news: it
		// neither counts as an attempt nor moves the backoff.
		hint := false
		if delay := o.NextAttempt.Sub(d.now()); delay > 0 {
			if !wait {
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case why := <-wake:
				if hint = why == wakeCallback; hint {
					log.Info("callback received: checking the order now")
				} else {
					log.Info("retry requested: trying the order now")
				}
			case <-time.After(delay):
			}
		}
		sem := d.semaphore() // a reload may replace it: release this one
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if ctx.Err() != nil {
			// The select picks at random when the slot frees as ctx ends.
			<-sem
			return ctx.Err()
		}
		step := o.Step
		err := d.advance(work, cc, o, &poll)
		<-sem
		switch {
		case err == nil:
			d.recovered(o, step)
		case errors.Is(err, errWaiting):
			d.recovered(o, step)
		case work.Err() != nil:
			return work.Err()
		default:
			var fe *fatalError
			if errors.As(err, &fe) {
				d.fail(work, cc, o, err)
				return fmt.Errorf("certificate %s: order %s failed: %w", o.Cert, o.UniqueID, err)
			}
			if hint {
				log.Info("the check prompted by the callback failed; the backoff stays as it was",
					zap.String("step", string(o.Step)), zap.Time("next_attempt", o.NextAttempt), zap.Error(err))
				continue
			}
			d.metrics.Failure(o.Cert, failureReason(o.Step, err))
			o.Attempts++
			o.LastError = err.Error()
			o.NextAttempt = d.now().Add(failedTryBackoff(o, step, err))
			log.Warn("step failed; will retry", zap.String("step", string(o.Step)), zap.Int("attempt", o.Attempts),
				zap.Time("next_attempt", o.NextAttempt), zap.Error(err))
			if perr := d.storeFor(o.Cert).PutOrder(work, o); perr != nil {
				return errors.Join(err, perr)
			}
			d.alertRetrying(o, step, err)
			if opt.Retrying != nil {
				if rerr := opt.Retrying(o, err); rerr != nil {
					return rerr
				}
			}
			if !wait {
				return fmt.Errorf("certificate %s: %s: %w (will retry at %s)", o.Cert, o.Step, err, o.NextAttempt.Format(time.RFC3339))
			}
		}
	}
	if o.Step == store.StepFailed {
		return fmt.Errorf("certificate %s: order %s failed: %s", o.Cert, o.UniqueID, o.LastError)
	}
	return nil
}

// retryBackoff is the wait before retry n of a failed step: quick at
// first (a provider's hiccup), then spread over days, never a hot loop.
func retryBackoff(n int) time.Duration {
	steps := []time.Duration{10 * time.Second, 30 * time.Second, time.Minute, 5 * time.Minute, 15 * time.Minute,
		time.Hour, 4 * time.Hour, 12 * time.Hour}
	if n-1 < len(steps) {
		return steps[max(n-1, 0)]
	}
	return 24 * time.Hour
}

// reloadBackoffStart is where the backoff of a failed reload starts in
// retryBackoff's steps: at a minute, not 10 s. A reload that failed
// fails again until someone mends the web server's configuration, and
// each try reloads the web server twice (the new files, then the restored
// ones).
const reloadBackoffStart = 3

// failedTryBackoff is how long o waits after try o.Attempts failed in
// step with err: retryBackoff, later for a failed reload, and never sooner
// than a CA that said when to come back (429, 503) asked.
func failedTryBackoff(o *store.Order, step store.Step, err error) time.Duration {
	n := o.Attempts
	if step == store.StepDeployed {
		n += reloadBackoffStart - 1
	}
	wait := retryBackoff(n)
	if ra := reseller.RetryAfter(err); ra > wait {
		wait = ra
	}
	return wait
}

// advance performs the current step's work and records the next step.
func (d *Daemon) advance(ctx context.Context, cc *config.CertConfig, o *store.Order, poll *time.Duration) error {
	log := d.orderLog(o)
	switch o.Step {
	case store.StepNew:
		// Before the paid call: what would fail only after it (a web
		// root dcvd cannot write, a deploy directory it cannot use) is
		// refused now, while refusing costs nothing. Not fatal: the order
		// keeps its unique_id and backs off until the admin mends it.
		if err := d.preflight(ctx, cc); err != nil {
			return err
		}
		// An order that waited (a backoff, a daemon stopped) past the
		// end of its service, or whose service's end dcvd has not asked
		// lately: the reseller would refuse it.
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
			log.Warn("DCV instruction repaired or ignored", zap.String("warning", w))
		}
		o.Instructions, o.Cost = plan.Instructions, res.Cost
		log.Info("reissue accepted", zap.Float64("cost", res.Cost), zap.String("status", res.Status))
		d.metrics.Charge(o.Cert, res.Cost)
		for _, in := range o.Instructions {
			if in.Email != nil {
				log.Warn("e-mail validation: the CA writes to the approver; approve it there", zap.String("domain", in.Domain), zap.String("approver", in.Email.Address))
				d.alertEmailApproval(o, in.Domain, in.Email.Address)
			}
		}
		return d.next(ctx, o, store.StepSubmitted)

	case store.StepSubmitted:
		var cnames []reseller.CNAMEInstruction
		for _, in := range o.Instructions {
			if in.CNAME != nil {
				cnames = append(cnames, *in.CNAME)
			}
		}
		if len(cnames) > 0 {
			p, err := d.dnsFor(cc)
			if err != nil {
				return &fatalError{err}
			}
			if o.DNSRecords, err = p.Plan(ctx, cnames); err != nil {
				return err
			}
		}
		return d.next(ctx, o, store.StepPublishing)

	case store.StepPublishing:
		if len(o.DNSRecords) > 0 {
			p, err := d.dnsFor(cc)
			if err != nil {
				return &fatalError{err}
			}
			rep, err := p.Publish(ctx, o.DNSRecords)
			if err != nil {
				return err
			}
			log.Info("DNS records published", zap.Int("set", len(rep.Set)), zap.Int("unchanged", len(rep.Unchanged)), zap.Int("write_calls", rep.Calls))
		}
		if err := d.writeFiles(ctx, cc, o); err != nil {
			return err
		}
		return d.next(ctx, o, store.StepPublished)

	case store.StepPublished:
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
		// In a cluster the self-check may reach any node: first every
		// node must have written the files.
		if err := d.waitFileAcks(ctx, o); err != nil {
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
		log.Info("every record and file is visible", zap.Duration("took", d.now().Sub(start)))
		return d.next(ctx, o, store.StepVisible)

	case store.StepVisible:
		// Only now: a CA that looks too early caches its failure.
		if err := d.apiClient().UpdateDCV(ctx, o.ServiceID, o.DomainDCV); err != nil {
			return err
		}
		log.Info("re-check requested")
		o.NextAttempt = d.now().Add(min(*poll, 2*time.Second))
		return d.next(ctx, o, store.StepRechecked)

	case store.StepRechecked:
		res, err := d.apiClient().Detail(ctx, o.ServiceID)
		if err != nil {
			return err
		}
		switch res.Status {
		case reseller.StatusCancelled, reseller.StatusRefunded, reseller.StatusRevoked:
			return fatal("the CA reports the order %s", res.Status)
		}
		if res.CertPEM == "" {
			o.NextAttempt = d.now().Add(*poll)
			log.Info("no certificate yet", zap.String("status", res.Status), zap.Duration("next_poll", *poll))
			*poll = min(*poll*3/2, 5*time.Minute)
			if err := d.storeFor(o.Cert).PutOrder(ctx, o); err != nil {
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
		log.Info("certificate issued and verified", zap.String("serial", o.Serial), zap.String("not_after", o.NotAfter.UTC().Format(time.RFC3339)))
		return d.next(ctx, o, store.StepIssued)

	case store.StepIssued:
		b, err := d.bundle(o)
		if err != nil {
			return &fatalError{err}
		}
		if err := d.target(cc).Install(ctx, b); err != nil {
			return err
		}
		log.Info("deployed", zap.String("dir", cc.Deploy.Dir))
		return d.next(ctx, o, store.StepDeployed)

	case store.StepDeployed:
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
			// The next attempt installs again. Recorded before the files
			// are rolled back: a crash after the rollback must not resume
			// at deployed and take the restored files for the new ones.
			o.Step = store.StepIssued
			if perr := d.storeFor(o.Cert).PutOrder(ctx, o); perr != nil {
				return errors.Join(err, perr)
			}
			rerr := d.target(cc).Rollback(ctx)
			if rerr != nil {
				// First deployment: nothing to go back to; the new files
				// stay, and the retry installs them again and reloads.
				return fmt.Errorf("reload failed (%w); no previous files to restore: %v", err, rerr)
			}
			// The reload after the rollback describes what was restored.
			restored, _ := d.target(cc).Live(ctx)
			restored.Cert = o.Cert
			rrerr := d.target(cc).Reload(ctx, restored)
			if rrerr != nil {
				return fmt.Errorf("reload failed (%w); previous files restored, but reloading them failed too: %v", err, rrerr)
			}
			return fmt.Errorf("reload failed, previous files restored and reloaded: %w", err)
		}
		live := &store.Certificate{
			Name: o.Cert, Serial: o.Serial, Names: o.Names, NotBefore: o.NotBefore, NotAfter: o.NotAfter,
			CertPEM: o.CertPEM, ChainPEM: o.ChainPEM, KeyFile: o.KeyFile, KeySealed: o.KeySealed, UniqueID: o.UniqueID,
			DeployedAt: d.now(),
		}
		if leaf, err := certs.ParsePEM(o.CertPEM); err == nil {
			live.Names = certs.LeafNames(leaf[0])
		}
		if err := d.storeFor(o.Cert).PutCertificate(ctx, live); err != nil {
			return err
		}
		log.Info("reloaded; the new certificate is live", zap.String("serial", o.Serial))
		d.clusterDeployed(ctx, cc, o.Serial, nil)
		d.updateCertMetrics(ctx, cc)
		return d.next(ctx, o, store.StepReloaded)

	case store.StepReloaded:
		if err := d.cleanup(ctx, cc, o); err != nil {
			return err
		}
		// History first: a crash before the order is marked done repeats
		// this step, and AddAttempt replaces its entry for the unique_id.
		if err := d.storeFor(o.Cert).AddAttempt(ctx, store.Attempt{Cert: o.Cert, UniqueID: o.UniqueID, Started: o.Created, Finished: d.now(),
			Outcome: store.StepDone, Cost: o.Cost, Serial: o.Serial}); err != nil {
			return err
		}
		if err := d.next(ctx, o, store.StepDone); err != nil {
			return err
		}
		log.Info("order done", zap.Float64("cost", o.Cost))
		d.alertRenewed(o)
		return nil
	}
	return fmt.Errorf("order %s in unknown step %q", o.UniqueID, o.Step)
}

// next records that o reached step; a step reached resets the retries,
// except inside the deploy phase: installing the files (issued →
// deployed) is no progress while the reload that follows keeps failing
// and rolls them back, so the tries count on, and the backoff grows,
// until the reload succeeds.
func (d *Daemon) next(ctx context.Context, o *store.Order, step store.Step) error {
	o.Step = step
	if step != store.StepDeployed {
		o.Attempts, o.LastError = 0, ""
	}
	if step != store.StepRechecked {
		o.NextAttempt = time.Time{}
	}
	if err := d.storeFor(o.Cert).PutOrder(ctx, o); err != nil {
		return err
	}
	d.stepped(ctx, o)
	return nil
}

// stepped follows a persisted step: log, metrics, the other nodes of a
// cluster, and the crash tests' hook.
func (d *Daemon) stepped(ctx context.Context, o *store.Order) {
	d.orderLog(o).Info("step", zap.String("step", string(o.Step)))
	if o.Step.Terminal() {
		d.metrics.SetStep(o.Cert, "")
	} else {
		d.metrics.SetStep(o.Cert, string(o.Step))
	}
	d.announce(ctx, store.ClusterEvent{Kind: store.EventOrder, Cert: o.Cert, UniqueID: o.UniqueID})
	if d.afterStep != nil {
		d.afterStep(o)
	}
}

// fail ends o: its DCV is cleaned up and the attempt recorded.
func (d *Daemon) fail(ctx context.Context, cc *config.CertConfig, o *store.Order, cause error) {
	log := d.orderLog(o)
	log.Error("order failed", zap.String("step", string(o.Step)), zap.Error(cause))
	d.metrics.Failure(o.Cert, failureReason(o.Step, cause))
	if see := (*ServiceEndedError)(nil); !errors.As(cause, &see) {
		// An ended service is announced once by announceServices,
		// not once per order it stops.
		d.alertOrderFailed(o, cause)
	}
	if err := d.cleanup(ctx, cc, o); err != nil {
		log.Warn("cleaning up after the failure", zap.Error(err))
	}
	if err := d.storeFor(o.Cert).AddAttempt(ctx, store.Attempt{Cert: o.Cert, UniqueID: o.UniqueID, Started: o.Created, Finished: d.now(),
		Outcome: store.StepFailed, Cost: o.Cost, Error: cause.Error()}); err != nil {
		log.Error("recording the failure", zap.Error(err))
	}
	o.LastError = cause.Error()
	o.Step = store.StepFailed
	if err := d.storeFor(o.Cert).PutOrder(ctx, o); err != nil {
		log.Error("recording the failure", zap.Error(err))
	}
	d.stepped(ctx, o)
}

func (d *Daemon) dnsFor(cc *config.CertConfig) (dnsPublisher, error) {
	p := d.dnsProvider(cc.DNS)
	if p == nil {
		return nil, fmt.Errorf("certificate %s: dns = %q names no configured [dns.%s]", cc.Name, cc.DNS, cc.DNS)
	}
	return p, nil
}

// writeFiles publishes the HTTP validation files: into every web root, and
// into the responder when the daemon serves them itself.
func (d *Daemon) writeFiles(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	if d.cluster != nil {
		// Every node writes its own web roots (clusterFiles); the
		// written files are this node's, not the order's.
		return d.clusterFiles(ctx, cc, o)
	}
	for _, in := range o.Instructions {
		if in.File == nil {
			continue
		}
		if len(cc.Webroots) > 0 {
			ws, err := httpchallenge.Write(cc.Webroots, *in.File)
			if err != nil {
				return fmt.Errorf("write the validation file of %s: %w", in.Domain, err)
			}
			o.Files = mergeWritten(o.Files, ws)
		}
	}
	return d.serveFiles(ctx, cc, o)
}

// serveFiles puts the order's pending files into the in-memory responder
// (and a standalone listener when configured). It is repeated when an
// order resumes after a restart, since the responder is in memory.
func (d *Daemon) serveFiles(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	switch o.Step {
	case store.StepPublishing, store.StepPublished, store.StepVisible, store.StepRechecked:
	default:
		return nil
	}
	for _, in := range o.Instructions {
		if in.File == nil {
			continue
		}
		d.responder.Add(*in.File)
		if cc.Standalone != "" {
			if err := d.standalone(cc.Standalone).Add(ctx, *in.File); err != nil {
				return fmt.Errorf("standalone responder %s: %w", cc.Standalone, err)
			}
		}
	}
	return nil
}

func (d *Daemon) standalone(addr string) *httpchallenge.Standalone {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.standalones[addr]
	if !ok {
		s = httpchallenge.NewStandalone(addr, d.responder)
		d.standalones[addr] = s
	}
	return s
}

// cleanup removes the order's DCV records and files: exactly what was
// planned or written. Safe to repeat.
func (d *Daemon) cleanup(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	var errs []error
	if len(o.DNSRecords) > 0 {
		if p, err := d.dnsFor(cc); err != nil {
			errs = append(errs, err)
		} else if err := p.Cleanup(ctx, o.DNSRecords); err != nil {
			errs = append(errs, err)
		}
	}
	// Files: those recorded, and those a crash may have written before
	// they were recorded (the instruction says which name, the config
	// which web roots).
	files := mergeWritten(slices.Clone(o.Files), d.clusterWritten(o.UniqueID))
	for _, in := range o.Instructions {
		if in.File == nil {
			continue
		}
		for _, wr := range cc.Webroots {
			files = mergeWritten(files, []httpchallenge.Written{{Webroot: wr.Dir, Name: in.File.FileName, Content: in.File.Content}})
		}
		d.responder.Remove(*in.File)
		if cc.Standalone != "" {
			if err := d.standalone(cc.Standalone).Remove(*in.File); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(files) > 0 {
		if err := httpchallenge.Remove(files); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		d.clusterForget(o.UniqueID)
	}
	return errors.Join(errs...)
}

// mergeWritten adds ws to have, one entry per web root and name. The
// directories created are the union of both entries': two writes of one
// file at once may each have created one of them.
func mergeWritten(have, ws []httpchallenge.Written) []httpchallenge.Written {
	for _, w := range ws {
		found := false
		for i, h := range have {
			if h.Webroot == w.Webroot && h.Name == w.Name {
				found = true
				dirs := slices.Clone(h.CreatedDirs)
				for _, d := range w.CreatedDirs {
					if !slices.Contains(dirs, d) {
						dirs = append(dirs, d)
					}
				}
				// Deepest first, as Remove expects.
				sort.SliceStable(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
				if len(dirs) == 0 {
					dirs = nil
				}
				have[i].CreatedDirs = dirs
			}
		}
		if !found {
			have = append(have, w)
		}
	}
	sort.Slice(have, func(i, j int) bool {
		if have[i].Webroot != have[j].Webroot {
			return have[i].Webroot < have[j].Webroot
		}
		return have[i].Name < have[j].Name
	})
	return have
}

func (d *Daemon) bundle(o *store.Order) (deploy.Bundle, error) {
	_, keyPEM, err := d.orderKey(o)
	if err != nil {
		return deploy.Bundle{}, fmt.Errorf("the key of order %s: %w", o.UniqueID, err)
	}
	return deploy.Bundle{Cert: o.Cert, CertPEM: o.CertPEM, ChainPEM: o.ChainPEM, KeyPEM: string(keyPEM),
		Names: o.Names, Serial: o.Serial, NotAfter: o.NotAfter}, nil
}

// notifyURL is where the CA calls back for o, or "" without callbacks.
func (d *Daemon) notifyURL(o *store.Order) string {
	base := strings.TrimSuffix(d.config().Daemon.CallbackURL, "/")
	if base == "" {
		return ""
	}
	return base + "/callback/" + url.PathEscape(o.CallbackToken)
}

func (d *Daemon) claim(cert string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.driving[cert] {
		return false
	}
	d.driving[cert] = true
	return true
}

func (d *Daemon) release(cert string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.driving, cert)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// failureReason sorts a failure for dcvd_failures_total by the step it
// happened in.
func failureReason(step store.Step, err error) string {
	var pe *PreflightError
	if errors.As(err, &pe) {
		return metrics.FailurePreflight
	}
	switch step {
	case store.StepNew, store.StepVisible:
		return metrics.FailureAPI
	case store.StepSubmitted, store.StepPublishing, store.StepPublished:
		return metrics.FailureDCV
	case store.StepRechecked:
		var fe *fatalError
		if errors.As(err, &fe) {
			return metrics.FailureVerify
		}
		return metrics.FailureAPI
	case store.StepIssued:
		return metrics.FailureDeploy
	case store.StepDeployed:
		return metrics.FailureReload
	}
	return metrics.FailureOther
}

// updateCertMetrics publishes the expiry, planned renewal and readiness of
// cc's live certificate, read from the store.
func (d *Daemon) updateCertMetrics(ctx context.Context, cc *config.CertConfig) {
	if d.metrics == nil {
		return
	}
	if r, live, err := d.renewal(ctx, cc, d.cluster == nil); err == nil {
		d.publishCertMetrics(cc, live, r)
	}
}

// publishCertMetrics publishes what the caller already read.
func (d *Daemon) publishCertMetrics(cc *config.CertConfig, live *store.Certificate, r Renewal) {
	var notAfter time.Time
	ready := false
	if live != nil {
		notAfter = live.NotAfter
		ready = d.now().Before(live.NotAfter) && len(missingNames(cc, live)) == 0
	}
	d.metrics.SetCertificate(cc.Name, notAfter, r.At, ready)
}
