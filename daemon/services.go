package daemon

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

// A certificate is an order (service_id) with a paid period. Certificate
// lifetimes shrink (200 days from March 2026, 100 from March 2027, 47 from
// March 2029), so one order is reissued several times within its period;
// when the period ends no reissue renews it and the admin must buy a
// renewal. This file keeps what the reseller says of each configured
// service's end (Store.Services), announces it ahead, and keeps reissues
// of an ended service from being sent.

// serviceRefreshInterval is how old the reseller's word on a service may
// grow before it is asked again: an end date moves only when the admin
// buys, and buying brings a new service_id, which is asked at once.
const serviceRefreshInterval = 24 * time.Hour

// serviceCheckInterval is the least time between two looks for services
// due a refresh (Run looks after each sweep): a look that finds nothing
// due reads one table.
const serviceCheckInterval = time.Hour

// serviceRefreshBudget bounds one refresh; the services it did not reach
// are asked at the next look. The certificate list answers for a hundred
// services a call, but a reseller without it costs a detail call each.
const serviceRefreshBudget = 5 * time.Minute

// ServiceEndedError refuses a reissue of a service whose paid period is
// over: the reseller would refuse it, and no reissue can renew it.
type ServiceEndedError struct {
	Cert      string
	ServiceID string
	Ended     time.Time
	// refusal is the reseller's refusal, when it was the first to say.
	refusal error
}

func (e *ServiceEndedError) Unwrap() error { return e.refusal }

func (e *ServiceEndedError) Error() string {
	sent := "nothing was sent"
	if e.refusal != nil {
		sent = "the reseller refused the reissue and charged nothing"
	}
	return fmt.Sprintf("certificate %s: service %s ended on %s, so no reissue can renew it; %s. Buy a renewal in the reseller's console and put the new service_id in the [[certificate]] %q section, then reload dcvd",
		e.Cert, e.ServiceID, e.Ended.UTC().Format("2006-01-02"), sent, e.Cert)
}

// serviceBook is the daemon's copy of the services recorded in the store,
// so that a sweep decides without reading them.
type serviceBook struct {
	mu   sync.Mutex
	byID map[string]store.Service
}

func (b *serviceBook) get(id string) (store.Service, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.byID[id]
	return s, ok
}

func (b *serviceBook) put(s store.Service) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byID == nil {
		b.byID = map[string]store.Service{}
	}
	b.byID[s.ServiceID] = s
}

func (b *serviceBook) replace(all []store.Service) {
	m := make(map[string]store.Service, len(all))
	for _, s := range all {
		m[s.ServiceID] = s
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byID = m
}

// loadServices reads the recorded services into the book.
func (d *Daemon) loadServices(ctx context.Context) {
	all, err := d.store.Services(ctx)
	if err != nil {
		d.log.Warn("reading the recorded services", zap.Error(err))
		return
	}
	d.services.replace(all)
	if d.metrics == nil {
		return
	}
	for _, cc := range d.config().Certificates {
		if s, ok := d.services.get(cc.ServiceID); ok {
			d.metrics.SetService(cc.Name, s.ServiceID, s.Expires)
		}
	}
}

// refreshServicesIfDue runs refreshServices if the last look, at *last,
// was serviceCheckInterval ago or more. Run calls it after each sweep.
func (d *Daemon) refreshServicesIfDue(ctx context.Context, last *time.Time) {
	now := time.Now()
	if !last.IsZero() && now.Sub(*last) < serviceCheckInterval {
		return
	}
	*last = now
	ctx, cancel := context.WithTimeout(ctx, serviceRefreshBudget)
	defer cancel()
	d.refreshServices(ctx)
}

// refreshServices asks the reseller for the end of every configured
// service last asked serviceRefreshInterval ago or more (or never; see
// askServices), then announces what is due.
func (d *Daemon) refreshServices(ctx context.Context) {
	d.loadServices(ctx)
	cfg := d.config()
	now := d.now()
	var due []*config.CertConfig
	for i := range cfg.Certificates {
		cc := &cfg.Certificates[i]
		s, ok := d.services.get(cc.ServiceID)
		if !ok || now.Sub(s.Checked) >= serviceRefreshInterval || s.Cert != cc.Name {
			due = append(due, cc)
		}
	}
	if api := d.apiClient(); len(due) > 0 && api != nil {
		d.askServices(ctx, api, due)
	}
	d.announceServices(ctx)
}

// serviceDetailLimit is how many services are asked one detail call each;
// beyond it the certificate list answers for a hundred a call. An account
// may hold thousands of orders of which dcvd manages a few: those few are
// cheaper asked one by one than by reading the whole list.
const serviceDetailLimit = 20

// askServices asks the reseller the end of each service of due and records
// it: through the certificate list when there are many (or when a detail
// does not carry the end), else a detail each. A service neither answers
// for is left as recorded, and asked at the next look.
func (d *Daemon) askServices(ctx context.Context, api *reseller.Client, due []*config.CertConfig) {
	var listed map[string]reseller.Service
	readList := func() {
		if listed != nil {
			return
		}
		listed = map[string]reseller.Service{}
		items, err := api.ListAll(ctx, "")
		if err != nil {
			d.log.Info("the reseller's certificate list could not be read; asking each service's detail instead", zap.Error(err))
		}
		for _, it := range items {
			listed[it.ServiceID] = it
		}
	}
	if len(due) > serviceDetailLimit {
		readList()
	}
	for _, cc := range due {
		if ctx.Err() != nil {
			return
		}
		it, ok := listed[cc.ServiceID]
		if !ok {
			o, err := api.Detail(ctx, cc.ServiceID)
			if err != nil {
				d.log.Warn("reading the service's end from the reseller", zap.String("cert", cc.Name), zap.String("service_id", cc.ServiceID), zap.Error(err))
				continue
			}
			it = reseller.Service{ServiceID: cc.ServiceID, Status: o.Status, ServiceExpiresAt: o.ServiceExpiresAt}
			if it.ServiceExpiresAt.IsZero() {
				// The detail does not say: the list may.
				readList()
				if l, ok := listed[cc.ServiceID]; ok {
					it = l
				}
			}
		}
		d.recordService(ctx, cc, it.Status, it.ServiceExpiresAt)
	}
}

// recordService records what the reseller said of cc's service now. An
// end it no longer states is kept: the reseller's silence is not news.
// A new end (a renewal bought under the same service_id) starts the
// alerts afresh.
func (d *Daemon) recordService(ctx context.Context, cc *config.CertConfig, status string, expires time.Time) store.Service {
	s, ok := d.services.get(cc.ServiceID)
	if !ok {
		s = store.Service{ServiceID: cc.ServiceID, AlertedDays: store.NoServiceAlert}
	}
	s.Cert, s.Checked = cc.Name, d.now()
	if status != "" {
		s.Status = status
	}
	if !expires.IsZero() && !expires.Equal(s.Expires) {
		if !s.Expires.IsZero() {
			d.log.Info("the service's end changed", zap.String("cert", cc.Name), zap.String("service_id", cc.ServiceID),
				zap.Time("was", s.Expires), zap.Time("now", expires))
		}
		s.Expires, s.AlertedDays = expires.UTC(), store.NoServiceAlert
	}
	if err := d.store.PutService(ctx, s); err != nil {
		d.log.Warn("recording the service's end", zap.String("cert", cc.Name), zap.Error(err))
	}
	d.services.put(s)
	d.metrics.SetService(cc.Name, s.ServiceID, s.Expires)
	return s
}

// serviceAlertThreshold is the most urgent of days (most distant first)
// that left has reached: 0 once the service has ended, NoServiceAlert
// before the first.
func serviceAlertThreshold(left time.Duration, days []int) int {
	if left <= 0 {
		return 0
	}
	t := store.NoServiceAlert
	for _, n := range days {
		if left <= time.Duration(n)*24*time.Hour {
			t = n
		}
	}
	return t
}

// announceServices alerts, for each configured certificate whose service
// ends, at each of daemon.service_alert_days and at the end itself, each
// once (recorded, so that a restart does not repeat it), saying so when
// the next renewal falls after the end.
func (d *Daemon) announceServices(ctx context.Context) {
	cfg := d.config()
	now := d.now()
	for i := range cfg.Certificates {
		cc := &cfg.Certificates[i]
		s, ok := d.services.get(cc.ServiceID)
		if !ok || s.Expires.IsZero() {
			continue
		}
		t := serviceAlertThreshold(s.Expires.Sub(now), cfg.Daemon.ServiceAlertDays)
		if t >= s.AlertedDays {
			continue
		}
		// Told with each alert, not at each look: status shows it all
		// along.
		renewAt, after := d.renewalAfterServiceEnd(ctx, cc, s)
		if after && t > 0 {
			d.log.Warn("the next renewal falls after the service ends: buy a renewal before then", zap.String("cert", cc.Name),
				zap.String("service_id", s.ServiceID), zap.Time("renewal", renewAt), zap.Time("service_ends", s.Expires))
		}
		s.AlertedDays = t
		if err := d.store.PutService(ctx, s); err != nil {
			// Announced anyway: a repeat after a restart is better than
			// silence.
			d.log.Warn("recording the service alert", zap.String("cert", cc.Name), zap.Error(err))
		}
		d.services.put(s)
		d.alertServiceEnding(cc, s, t, renewAt, after)
	}
}

// renewalAfterServiceEnd returns when cc is next due for renewal and
// whether that falls at or after its service's end.
func (d *Daemon) renewalAfterServiceEnd(ctx context.Context, cc *config.CertConfig, s store.Service) (time.Time, bool) {
	live, err := d.store.Certificate(ctx, cc.Name)
	if err != nil {
		return time.Time{}, false
	}
	r := NextRenewal(cc, live, nil, d.now())
	return r.At, !r.At.Before(s.Expires)
}

func (d *Daemon) alertServiceEnding(cc *config.CertConfig, s store.Service, threshold int, renewAt time.Time, after bool) {
	end := s.Expires.UTC().Format("2006-01-02")
	title := fmt.Sprintf("%s: service %s ends on %s", cc.Name, s.ServiceID, end)
	text := fmt.Sprintf("The paid period of service %s ends on %s (in %s); after it no reissue can renew %s. Buy a renewal in the reseller's console and put its new service_id in the configuration.",
		s.ServiceID, end, s.Expires.Sub(d.now()).Round(time.Hour), cc.Name)
	if threshold == 0 {
		title = fmt.Sprintf("%s: service %s ended on %s", cc.Name, s.ServiceID, end)
		text = fmt.Sprintf("The paid period of service %s ended on %s: dcvd sends no more reissues for %s. Buy a renewal in the reseller's console and put its new service_id in the configuration.",
			s.ServiceID, end, cc.Name)
	} else if after {
		text += fmt.Sprintf(" The next renewal is due on %s, after the end.", renewAt.UTC().Format("2006-01-02"))
	}
	d.emit(Event{
		Kind: EventSubscriptionEnding, Cert: cc.Name, Title: title, Text: text,
		Fields: map[string]string{"service_id": s.ServiceID, "service_expires_at": s.Expires.UTC().Format(time.RFC3339),
			"threshold_days": strconv.Itoa(threshold)},
	})
}

// guardServiceEnded refuses a new order of cc when the book says its
// service has ended: nothing is written, nothing is sent.
func (d *Daemon) guardServiceEnded(cc *config.CertConfig) error {
	if s, ok := d.services.get(cc.ServiceID); ok && s.Ended(d.now()) {
		return &ServiceEndedError{Cert: cc.Name, ServiceID: cc.ServiceID, Ended: s.Expires}
	}
	return nil
}

// serviceCheckTimeout bounds the read of a service's end before a reissue:
// it is advisory, and a hung API must not hold the reissue longer than a
// moment (the reissue would meet the same API).
const serviceCheckTimeout = 10 * time.Second

// checkServiceBeforeReissue is the last look before o's paid call: the
// service's end is asked again (a detail call) when the book's word is
// older than serviceRefreshInterval or missing, as the refusal rests on
// it. A failed call leaves the decision to what is known; the reseller
// refuses an ended service's reissue anyway.
func (d *Daemon) checkServiceBeforeReissue(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	s, ok := d.services.get(o.ServiceID)
	if (!ok || d.now().Sub(s.Checked) >= serviceRefreshInterval) && o.ServiceID == cc.ServiceID {
		if api := d.apiClient(); api != nil {
			cctx, cancel := context.WithTimeout(ctx, serviceCheckTimeout)
			r, err := api.Detail(cctx, o.ServiceID)
			cancel()
			if err != nil {
				d.orderLog(o).Info("the service's end could not be read before the reissue; going on with what is known", zap.Error(err))
			} else {
				s, ok = d.recordService(ctx, cc, r.Status, r.ServiceExpiresAt), true
			}
		}
	}
	if ok && s.Ended(d.now()) {
		d.announceServices(ctx)
		return &ServiceEndedError{Cert: o.Cert, ServiceID: o.ServiceID, Ended: s.Expires}
	}
	return nil
}

// serviceEndSlack is how near its service's end a live certificate's
// expiry counts as reaching it: the CA caps a certificate at the end of
// the paid period, give or take the hours of its own clock.
const serviceEndSlack = 24 * time.Hour

// reachesServiceEnd reports whether live already runs to the end of its
// service (within serviceEndSlack): a reissue cannot give a longer
// certificate, only a shorter one, so the renewal is not started — renewing
// such capped certificates at a third of their lifetime would reissue ever
// more often as the end nears. A certificate missing configured names is
// reissued all the same.
func reachesServiceEnd(cc *config.CertConfig, live *store.Certificate, s store.Service, ok bool) bool {
	if !ok || s.Expires.IsZero() || live == nil || live.NotAfter.IsZero() || len(missingNames(cc, live)) > 0 {
		return false
	}
	return !live.NotAfter.Before(s.Expires.Add(-serviceEndSlack))
}

// renewalHeldByService says why the sweep starts no renewal of cc although
// it is due, "" when nothing holds it: the service has ended, or live
// already runs to its end.
func (d *Daemon) renewalHeldByService(cc *config.CertConfig, live *store.Certificate) string {
	s, ok := d.services.get(cc.ServiceID)
	switch {
	case ok && s.Ended(d.now()):
		return "its service has ended"
	case reachesServiceEnd(cc, live, s, ok):
		return "the live certificate already runs to its service's end"
	}
	return ""
}

// serviceExpired is err, the reseller's refusal of o's reissue, as a
// *ServiceEndedError when it says that the service has ended; that is
// then recorded, so that no further reissue is started for it. Other
// errors are returned as they are.
func (d *Daemon) serviceExpired(ctx context.Context, cc *config.CertConfig, o *store.Order, err error) error {
	var ae *reseller.APIError
	if !errors.As(err, &ae) || ae.Code != reseller.CodeServiceExpired || o.ServiceID != cc.ServiceID {
		return err
	}
	s, ok := d.services.get(cc.ServiceID)
	end := d.now()
	if ok && !s.Expires.IsZero() && s.Expires.Before(end) {
		end = s.Expires
	}
	if !ok || !s.Ended(d.now()) {
		d.orderLog(o).Warn("the reseller says the service has ended", zap.Error(err))
		s = d.recordService(ctx, cc, s.Status, end)
		d.announceServices(ctx)
	}
	return &ServiceEndedError{Cert: o.Cert, ServiceID: o.ServiceID, Ended: s.Expires, refusal: err}
}
