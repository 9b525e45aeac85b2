package daemon

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file decides what the admin is told (as events, see events.go): the
// failures nobody would otherwise see, e-mail approvals waiting for a
// person, certificates nearing expiry without a renewal, and renewals.

// retryAlertAt is the number of failed tries of one step after which the
// admin hears of it, although dcvd goes on retrying. Failures of the
// deploy phase are told at once: there the new certificate exists and is
// not being served.
const retryAlertAt = 5

// reminders are the waits between the alerts of a failure that goes on:
// the first alert, then a reminder after each of these (the last one
// repeating) while it lasts, and a word when it is over.
var reminders = []time.Duration{time.Hour, 6 * time.Hour, 24 * time.Hour}

// A failure class groups the failures that are one story for the admin:
// the same certificate failing the same way is one alert, not one per try.
type failureClass string

const (
	classStep   failureClass = "step"   // a step before the certificate arrived
	classDeploy failureClass = "deploy" // installing the files
	classReload failureClass = "reload" // the reload command
	classOrder  failureClass = "order"  // whole orders ending in failure
)

// classOf is the class of a failure in step.
func classOf(step store.Step) (failureClass, EventKind) {
	switch step {
	case store.StepIssued:
		return classDeploy, EventDeployFailed
	case store.StepDeployed:
		return classReload, EventReloadFailed
	}
	return classStep, EventReissueFailed
}

// failureAlerts remembers the failures the admin was told of and not yet
// told the end of, per certificate and class. It is in memory: after a
// restart a failure that goes on is told again once, which errs on the
// side of telling.
type failureAlerts struct {
	mu   sync.Mutex
	open map[string]*openFailure
}

type openFailure struct {
	since, last time.Time // first alert, latest alert
	reminded    int       // reminders sent
	failures    int       // failures seen since the first alert
	title       string    // what the first alert said failed
}

// failed records a failure of key at now and reports whether to alert,
// and whether that alert is a reminder of an open one.
func (a *failureAlerts) failed(key, title string, now time.Time) (alert bool, open openFailure) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.open == nil {
		a.open = map[string]*openFailure{}
	}
	f, ok := a.open[key]
	if !ok {
		f = &openFailure{since: now, last: now, failures: 1, title: title}
		a.open[key] = f
		return true, *f
	}
	f.failures++
	wait := reminders[min(f.reminded, len(reminders)-1)]
	if now.Sub(f.last) < wait {
		return false, *f
	}
	f.last = now
	f.reminded++
	return true, *f
}

// close ends the open failure of key and returns it, if there was one.
func (a *failureAlerts) close(key string) (openFailure, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f, ok := a.open[key]
	if !ok {
		return openFailure{}, false
	}
	delete(a.open, key)
	return *f, true
}

func failureKey(cert string, class failureClass) string { return cert + "\x00" + string(class) }

// expiryAlerts remembers which expiry thresholds were announced, per
// certificate serial, so each is sent once. It is in memory: after a
// restart the most urgent threshold already passed is announced again,
// which errs on the side of telling.
type expiryAlerts struct {
	mu   sync.Mutex
	sent map[string]bool
}

func (a *expiryAlerts) first(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sent == nil {
		a.sent = map[string]bool{}
	}
	if a.sent[key] {
		return false
	}
	a.sent[key] = true
	return true
}

func (d *Daemon) alertOrderFailed(o *store.Order, cause error) {
	d.alertFailure(o, classOrder, EventReissueFailed,
		fmt.Sprintf("reissue of %s failed", o.Cert),
		fmt.Sprintf("The order stopped at step %s and will not be retried; a new order follows after a backoff. Reason: %v", o.Step, cause),
		map[string]string{"step": string(o.Step), "cost": strconv.FormatFloat(o.Cost, 'f', 2, 64)})
}

// alertRetrying tells the admin that step keeps failing: once it has
// failed retryAlertAt times (at once in the deploy phase), then as a
// reminder at widening intervals while it goes on.
func (d *Daemon) alertRetrying(o *store.Order, step store.Step, err error) {
	class, kind := classOf(step)
	// A pre-flight refusal is a setup to mend, not a hiccup that may
	// pass: it is told at once.
	var pe *PreflightError
	if class == classStep && o.Attempts < retryAlertAt && !errors.As(err, &pe) {
		return
	}
	title := fmt.Sprintf("%s: step %s is failing", o.Cert, step)
	text := fmt.Sprintf("dcvd keeps retrying with a growing backoff (next try at %s); to try now: dcvd retry %s. Last error: %v",
		o.NextAttempt.UTC().Format(time.RFC3339), o.Cert, err)
	switch class {
	case classDeploy:
		title = fmt.Sprintf("%s: installing the certificate files failed", o.Cert)
		text = fmt.Sprintf("The new certificate (serial %s) is not deployed; the previous one stays live. ", o.Serial) + text
	case classReload:
		title = fmt.Sprintf("%s: the reload command failed", o.Cert)
		text = fmt.Sprintf("The new certificate (serial %s) is not live; dcvd restored and reloaded the previous files. ", o.Serial) + text
	}
	d.alertFailure(o, class, kind, title, text, map[string]string{"step": string(step), "attempts": strconv.Itoa(o.Attempts)})
}

// alertFailure sends the alert of a failure of o's certificate in class,
// or a reminder of it, or nothing when the admin was told recently.
func (d *Daemon) alertFailure(o *store.Order, class failureClass, kind EventKind, title, text string, fields map[string]string) {
	key := failureKey(o.Cert, class)
	send, open := d.failures.failed(key, title, d.now())
	if !send {
		d.orderLog(o).Debug("failure already alerted; no reminder due yet", zap.String("class", string(class)), zap.Int("failures", open.failures))
		return
	}
	if open.reminded > 0 {
		title = fmt.Sprintf("%s (still failing, reminder %d)", title, open.reminded)
		text = fmt.Sprintf("Failing since %s, %d failures since the first alert. %s", open.since.UTC().Format(time.RFC3339), open.failures, text)
	}
	d.emit(Event{Kind: kind, Cert: o.Cert, UniqueID: o.UniqueID, Title: title, Text: text, Fields: fields})
}

// recovered follows a step of o that went through (from step): the
// failures it ends are over, and the admin, who was told of them, is told
// that too. An order done ends every failure of its certificate.
func (d *Daemon) recovered(o *store.Order, step store.Step) {
	classes := []failureClass{}
	switch {
	case o.Step == store.StepDone:
		classes = append(classes, classStep, classDeploy, classReload, classOrder)
	case step == store.StepDeployed && o.Step == store.StepIssued:
		return // a reload that failed, rolled back: not a recovery
	default:
		class, _ := classOf(step)
		classes = append(classes, class)
	}
	for _, class := range classes {
		f, ok := d.failures.close(failureKey(o.Cert, class))
		if !ok {
			continue
		}
		d.orderLog(o).Info("failure over", zap.String("class", string(class)), zap.Time("since", f.since))
		d.emit(Event{
			Kind: EventRecovered, Cert: o.Cert, UniqueID: o.UniqueID,
			Title: fmt.Sprintf("%s: recovered (%s)", o.Cert, f.title),
			Text: fmt.Sprintf("What was failing since %s works again (%d failures in between); the order is at step %s.",
				f.since.UTC().Format(time.RFC3339), f.failures, o.Step),
			Fields: map[string]string{"class": string(class), "failing_since": f.since.UTC().Format(time.RFC3339)},
		})
	}
}

func (d *Daemon) alertEmailApproval(o *store.Order, domain, approver string) {
	d.emit(Event{
		Kind: EventEmailApproval, Cert: o.Cert, UniqueID: o.UniqueID,
		Title:  fmt.Sprintf("%s: approve the validation e-mail for %s", o.Cert, domain),
		Text:   fmt.Sprintf("The CA sends the approval e-mail for %s to %s; the certificate is issued only after someone approves it.", domain, approver),
		Fields: map[string]string{"domain": domain, "approver": approver},
	})
}

func (d *Daemon) alertRenewed(o *store.Order) {
	d.emit(Event{
		Kind: EventRenewed, Cert: o.Cert, UniqueID: o.UniqueID,
		Title:  fmt.Sprintf("%s renewed", o.Cert),
		Text:   fmt.Sprintf("Serial %s is deployed, valid until %s (cost %.2f).", o.Serial, o.NotAfter.UTC().Format(time.RFC3339), o.Cost),
		Fields: map[string]string{"serial": o.Serial, "not_after": o.NotAfter.UTC().Format(time.RFC3339)},
	})
}

// checkExpiry announces the live certificate of cc crossing each of the
// configured days-before-expiry thresholds without having been renewed,
// each once, the most urgent one reached.
func (d *Daemon) checkExpiry(cc *config.CertConfig, live *store.Certificate) {
	if live == nil || live.NotAfter.IsZero() {
		return
	}
	left := live.NotAfter.Sub(d.now())
	days := d.config().Daemon.ExpiryAlertDays
	threshold := -1
	for _, n := range days { // most distant first
		if left <= time.Duration(n)*24*time.Hour {
			threshold = n
		}
	}
	if threshold < 0 || !d.expiry.first(cc.Name+"\x00"+live.Serial+"\x00"+strconv.Itoa(threshold)) {
		return
	}
	what := fmt.Sprintf("expires in %s", left.Round(time.Hour))
	if left <= 0 {
		what = "has expired"
	}
	d.emit(Event{
		Kind: EventExpiringSoon, Cert: cc.Name,
		Title:  fmt.Sprintf("%s %s without a successful renewal", cc.Name, what),
		Text:   fmt.Sprintf("The live certificate (serial %s) is valid until %s and no renewal has succeeded yet. Run dcvd status for the order in flight and its last error.", live.Serial, live.NotAfter.UTC().Format(time.RFC3339)),
		Fields: map[string]string{"serial": live.Serial, "not_after": live.NotAfter.UTC().Format(time.RFC3339), "threshold_days": strconv.Itoa(threshold)},
	})
}
