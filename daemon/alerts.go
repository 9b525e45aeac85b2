package daemon

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/dcvd/dcvd/notify"
)

// This file decides what the admin is told (through package notify): the
// failures nobody would otherwise see, e-mail approvals waiting for a
// person, certificates nearing expiry without a renewal, and renewals.

// retryAlertAt is the number of failed tries of one step after which the
// admin hears of it, although dcvd goes on retrying.
const retryAlertAt = 5

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

func (d *Daemon) alert(e notify.Event) {
	d.mu.Lock()
	n := d.notifier // swapped by Reload
	d.mu.Unlock()
	if n == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = d.now()
	}
	n.Notify(e)
}

func (d *Daemon) alertOrderFailed(o *Order, cause error) {
	d.alert(notify.Event{
		Kind: notify.ReissueFailed, Cert: o.Cert, UniqueID: o.UniqueID,
		Title:  fmt.Sprintf("reissue of %s failed", o.Cert),
		Text:   fmt.Sprintf("The order stopped at step %s and will not be retried; a new order follows after a backoff. Reason: %v", o.Step, cause),
		Fields: map[string]string{"step": string(o.Step), "cost": strconv.FormatFloat(o.Cost, 'f', 2, 64)},
	})
}

// alertRetrying tells the admin once that a step keeps failing.
func (d *Daemon) alertRetrying(o *Order, err error) {
	if o.Attempts != retryAlertAt {
		return
	}
	kind := notify.ReissueFailed
	switch o.Step {
	case StepIssued:
		kind = notify.DeployFailed
	case StepDeployed:
		kind = notify.ReloadFailed
	}
	d.alert(notify.Event{
		Kind: kind, Cert: o.Cert, UniqueID: o.UniqueID,
		Title:  fmt.Sprintf("%s: step %s failed %d times", o.Cert, o.Step, o.Attempts),
		Text:   fmt.Sprintf("dcvd keeps retrying (next at %s). Last error: %v", o.NextAttempt.UTC().Format(time.RFC3339), err),
		Fields: map[string]string{"step": string(o.Step), "attempts": strconv.Itoa(o.Attempts)},
	})
}

// alertReload reports a failed reload at once: the new certificate is
// not being served.
func (d *Daemon) alertReload(o *Order, err error) {
	d.alert(notify.Event{
		Kind: notify.ReloadFailed, Cert: o.Cert, UniqueID: o.UniqueID,
		Title: fmt.Sprintf("%s: the reload command failed", o.Cert),
		Text:  fmt.Sprintf("The new certificate (serial %s) is not live; dcvd restored the previous files and will retry. %v", o.Serial, err),
	})
}

func (d *Daemon) alertEmailApproval(o *Order, domain, approver string) {
	d.alert(notify.Event{
		Kind: notify.EmailApproval, Cert: o.Cert, UniqueID: o.UniqueID,
		Title:  fmt.Sprintf("%s: approve the validation e-mail for %s", o.Cert, domain),
		Text:   fmt.Sprintf("The CA sends the approval e-mail for %s to %s; the certificate is issued only after someone approves it.", domain, approver),
		Fields: map[string]string{"domain": domain, "approver": approver},
	})
}

func (d *Daemon) alertRenewed(o *Order) {
	d.alert(notify.Event{
		Kind: notify.Renewed, Cert: o.Cert, UniqueID: o.UniqueID,
		Title:  fmt.Sprintf("%s renewed", o.Cert),
		Text:   fmt.Sprintf("Serial %s is deployed, valid until %s (cost %.2f).", o.Serial, o.NotAfter.UTC().Format(time.RFC3339), o.Cost),
		Fields: map[string]string{"serial": o.Serial, "not_after": o.NotAfter.UTC().Format(time.RFC3339)},
	})
}

// checkExpiry announces the live certificate of cc crossing each of the
// configured days-before-expiry thresholds without having been renewed,
// each once, the most urgent one reached.
func (d *Daemon) checkExpiry(cc *CertConfig, live *Certificate) {
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
	d.alert(notify.Event{
		Kind: notify.ExpiringSoon, Cert: cc.Name,
		Title:  fmt.Sprintf("%s %s without a successful renewal", cc.Name, what),
		Text:   fmt.Sprintf("The live certificate (serial %s) is valid until %s and no renewal has succeeded yet. Run dcvd status for the order in flight and its last error.", live.Serial, live.NotAfter.UTC().Format(time.RFC3339)),
		Fields: map[string]string{"serial": live.Serial, "not_after": live.NotAfter.UTC().Format(time.RFC3339), "threshold_days": strconv.Itoa(threshold)},
	})
}
