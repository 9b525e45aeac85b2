package main

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/notify"
)

// This file wires the daemon's events (daemon.Options.OnEvent) to the
// [notify.*] channels of the configuration, through a notify.Notifier,
// which queues and delivers off the daemon's path.

const (
	// notifyCloseWait bounds the delivery of what is queued when the
	// daemon stops: stopping must not hang on an unreachable webhook.
	notifyCloseWait = 10 * time.Second
	// notifyReloadWait bounds the delivery of what the channels replaced
	// by a reload had queued.
	notifyReloadWait = 30 * time.Second
)

// notifications sends the daemon's events to the channels of the
// configuration it runs with. It is safe for concurrent use.
type notifications struct {
	log *zap.Logger
	mu  sync.Mutex
	n   *notify.Notifier // nil without [notify.*] channels
}

// newNotifications starts the notifier of channels (none without any).
func newNotifications(channels []notify.Configured, log *zap.Logger) *notifications {
	s := &notifications{log: log}
	s.n = s.start(channels)
	return s
}

func (s *notifications) start(channels []notify.Configured) *notify.Notifier {
	if len(channels) == 0 {
		return nil
	}
	return notify.New(channels, s.log)
}

// OnEvent is the daemon's Options.OnEvent: it queues e for the channels
// and returns at once.
func (s *notifications) OnEvent(e daemon.Event) {
	s.mu.Lock()
	n := s.n
	s.mu.Unlock()
	if n != nil {
		n.Notify(notifyEvent(e))
	}
}

// Reload replaces the channels by those of a configuration the daemon
// took; the previous notifier delivers what it has queued, off this path.
func (s *notifications) Reload(channels []notify.Configured) {
	n := s.start(channels)
	s.mu.Lock()
	old := s.n
	s.n = n
	s.mu.Unlock()
	if old != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), notifyReloadWait)
			defer cancel()
			old.Close(ctx)
		}()
	}
}

// Close delivers what is queued, within notifyCloseWait, and stops. Call
// it once the daemon is closed; it may be called more than once.
func (s *notifications) Close() error {
	s.mu.Lock()
	n := s.n
	s.mu.Unlock()
	if n == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), notifyCloseWait)
	defer cancel()
	return n.Close(ctx)
}

// notifyEvent is the notification of e. The kinds of event are the kinds
// of notification of the same name; the level is the kind's default.
func notifyEvent(e daemon.Event) notify.Event {
	return notify.Event{
		Kind:     notify.Kind(e.Kind),
		Cert:     e.Cert,
		UniqueID: e.UniqueID,
		Title:    e.Title,
		Text:     e.Text,
		Fields:   e.Fields,
		Time:     e.Time,
	}
}

// opened holds the notifications of each daemon newDaemon opened, which
// closeDaemon closes after the daemon.
var opened sync.Map // *daemon.Daemon → *notifications

// newDaemon is daemon.New with the events sent to cfg's [notify.*]
// channels; close the daemon with closeDaemon (or closeNotifications
// after its Close).
func newDaemon(ctx context.Context, cfg *config.Config, opts daemon.Options) (*daemon.Daemon, error) {
	events := newNotifications(cfg.Notify, opts.Log)
	opts.OnEvent = events.OnEvent
	d, err := daemon.New(ctx, cfg, opts)
	if err != nil {
		events.Close()
		return nil, err
	}
	opened.Store(d, events)
	return d, nil
}

// closeNotifications delivers, within bounds, what the closed daemon d
// (opened by newDaemon) queued, and stops its notifications.
func closeNotifications(d *daemon.Daemon) error {
	if v, ok := opened.LoadAndDelete(d); ok {
		return v.(*notifications).Close()
	}
	return nil
}
