package main

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/notify"
)

// recordingChannel is a notify.Channel that keeps what it is sent.
type recordingChannel struct {
	mu     sync.Mutex
	events []notify.Event
}

func (c *recordingChannel) Name() string { return "rec" }

func (c *recordingChannel) Send(_ context.Context, e notify.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, e)
	return nil
}

func (c *recordingChannel) sent() []notify.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]notify.Event(nil), c.events...)
}

// TestNotifyEventKinds: each kind of daemon event is the notification kind
// of the same name, and the event's details are carried over unchanged.
func TestNotifyEventKinds(t *testing.T) {
	for ek, nk := range map[daemon.EventKind]notify.Kind{
		daemon.EventReissueFailed:      notify.ReissueFailed,
		daemon.EventDeployFailed:       notify.DeployFailed,
		daemon.EventReloadFailed:       notify.ReloadFailed,
		daemon.EventRecovered:          notify.Recovered,
		daemon.EventEmailApproval:      notify.EmailApproval,
		daemon.EventRenewed:            notify.Renewed,
		daemon.EventExpiringSoon:       notify.ExpiringSoon,
		daemon.EventScheduleStalled:    notify.ScheduleStalled,
		daemon.EventSubscriptionEnding: notify.SubscriptionEnding,
	} {
		if got := notifyEvent(daemon.Event{Kind: ek}).Kind; got != nk {
			t.Errorf("event kind %q is sent as %q, want %q", ek, got, nk)
		}
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := daemon.Event{Kind: daemon.EventRenewed, Cert: "www", UniqueID: "u-1", Title: "www renewed", Text: "Serial 01 is deployed.",
		Fields: map[string]string{"serial": "01"}, Time: at}
	want := notify.Event{Kind: notify.Renewed, Cert: "www", UniqueID: "u-1", Title: "www renewed", Text: "Serial 01 is deployed.",
		Fields: map[string]string{"serial": "01"}, Time: at}
	if got := notifyEvent(e); !reflect.DeepEqual(got, want) {
		t.Errorf("notifyEvent = %+v, want %+v", got, want)
	}
}

// TestNotificationsReload: after a reload the events go to the new
// configuration's channels; what was queued before reaches the old ones;
// without channels nothing is sent.
func TestNotificationsReload(t *testing.T) {
	before, after := &recordingChannel{}, &recordingChannel{}
	s := newNotifications([]notify.Configured{{Channel: before, Level: notify.LevelAll}}, nil)
	s.OnEvent(daemon.Event{Kind: daemon.EventRenewed, Cert: "a"})
	s.Reload([]notify.Configured{{Channel: after, Level: notify.LevelError}})
	s.OnEvent(daemon.Event{Kind: daemon.EventRenewed, Cert: "b"}) // below the new channel's level
	s.OnEvent(daemon.Event{Kind: daemon.EventReissueFailed, Cert: "c"})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(before.sent()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the old notifier closes off the reload's path
	}
	if got := before.sent(); len(got) != 1 || got[0].Cert != "a" {
		t.Errorf("before the reload: %+v, want the event of a", got)
	}
	if got := after.sent(); len(got) != 1 || got[0].Cert != "c" || got[0].Kind != notify.ReissueFailed {
		t.Errorf("after the reload: %+v, want the failure of c", got)
	}

	none := newNotifications(nil, nil)
	none.OnEvent(daemon.Event{Kind: daemon.EventReissueFailed})
	none.Reload(nil)
	if err := none.Close(); err != nil {
		t.Fatal(err)
	}
}
