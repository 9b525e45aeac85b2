package daemon

import "time"

// The daemon tells its caller what the admin is to hear of through events
// (Options.OnEvent), as certmagic's Config.OnEvent does: it decides what
// to tell and when (alerts.go: a failure alerts once, then reminds), the
// caller decides where it goes. dcvd's command sends them to the
// [notify.*] channels of its configuration.

// EventKind says what happened. The values are stable, and are those of
// the notifications sent for the events (package notify's Kind), so that
// a receiver can switch on them.
type EventKind string

// The kinds of event the daemon emits.
const (
	// EventReissueFailed: an order failed, or one of its steps before the
	// certificate arrived keeps failing.
	EventReissueFailed EventKind = "reissue_failed"
	// EventDeployFailed: the certificate files could not be installed.
	EventDeployFailed EventKind = "deploy_failed"
	// EventReloadFailed: the reload command failed (the previous files
	// were restored).
	EventReloadFailed EventKind = "reload_failed"
	// EventRecovered: a failure that was told is over.
	EventRecovered EventKind = "recovered"
	// EventEmailApproval: e-mail validation waits for someone to approve.
	EventEmailApproval EventKind = "email_approval"
	// EventRenewed: a renewed certificate is live.
	EventRenewed EventKind = "renewed"
	// EventExpiringSoon: a live certificate crossed an expiry threshold
	// (daemon.expiry_alert_days) without a successful renewal.
	EventExpiringSoon EventKind = "expiring_soon"
	// EventScheduleStalled: daemon.schedule gives no next run; no
	// renewal check happens until the configuration is mended.
	EventScheduleStalled EventKind = "schedule_stalled"
	// EventSubscriptionEnding: a certificate's service subscription ends
	// soon, or has ended (daemon.service_alert_days).
	EventSubscriptionEnding EventKind = "subscription_ending"
)

// Event is something the admin is to be told of. It holds nothing secret.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// Cert is the certificate's configured name, if the event is about one.
	Cert string
	// UniqueID is the order's unique_id, if the event is about an order.
	UniqueID string
	// Title is a one-line summary.
	Title string
	// Text says what happened and what to do, in plain text.
	Text string
	// Fields are details (serial, expiry, step …) by name. The handler
	// may keep the map: the daemon does not touch it again.
	Fields map[string]string
	// Time is when it happened, on the daemon's clock (Options.Now).
	Time time.Time
}

// emit hands e to Options.OnEvent, if set, on the calling goroutine.
func (d *Daemon) emit(e Event) {
	if d.onEvent == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = d.now()
	}
	d.onEvent(e)
}
