package notify

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// wait is how long a test waits for something the worker does before it
// declares the worker stuck; it is a deadlock guard, not a timing claim.
const wait = 10 * time.Second

// fakeChannel records what it is sent and fails as told.
type fakeChannel struct {
	name string
	// fail, when set, decides the result of the nth call (1-based).
	fail func(n int) error
	// block, when set, makes Send wait for it (or for ctx) after
	// signalling started.
	block   chan struct{}
	started chan struct{}
	calls   chan Event

	mu  sync.Mutex
	got []Event
	n   int
}

func newFake(name string) *fakeChannel {
	return &fakeChannel{name: name, calls: make(chan Event, 1000), started: make(chan struct{}, 1000)}
}

func (f *fakeChannel) Name() string { return f.name }

func (f *fakeChannel) Send(ctx context.Context, e Event) error {
	f.mu.Lock()
	f.n++
	n := f.n
	f.mu.Unlock()
	if f.block != nil {
		f.started <- struct{}{}
		select {
		case <-f.block:
		case <-ctx.Done():
			f.calls <- e
			return ctx.Err()
		}
	}
	var err error
	if f.fail != nil {
		err = f.fail(n)
	}
	if err == nil {
		f.mu.Lock()
		f.got = append(f.got, e)
		f.mu.Unlock()
	}
	f.calls <- e
	return err
}

func (f *fakeChannel) received() []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Event(nil), f.got...)
}

func (f *fakeChannel) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// waitCalls waits for n calls of Send.
func (f *fakeChannel) waitCalls(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-f.calls:
		case <-time.After(wait):
			t.Fatalf("%s: waited for call %d of %d", f.name, i+1, n)
		}
	}
}

func waitStarted(t *testing.T, f *fakeChannel) {
	t.Helper()
	select {
	case <-f.started:
	case <-time.After(wait):
		t.Fatalf("%s: Send never started", f.name)
	}
}

func closeNotifier(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func kinds(evs []Event) string {
	var k []string
	for _, e := range evs {
		k = append(k, string(e.Kind))
	}
	return strings.Join(k, ",")
}

func TestLevels(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Level
		ok   bool
	}{
		{"error", LevelError, true},
		{"renewal", LevelRenewal, true},
		{"all", LevelAll, true},
		{"", 0, false},
		{"Error", 0, false},
		{"info", 0, false},
	} {
		got, err := ParseLevel(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != tc.in {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
	admits := []struct {
		channel, event Level
		want           bool
	}{
		{LevelError, LevelError, true},
		{LevelError, LevelRenewal, false},
		{LevelError, LevelAll, false},
		{LevelRenewal, LevelError, true},
		{LevelRenewal, LevelRenewal, true},
		{LevelRenewal, LevelAll, false},
		{LevelAll, LevelAll, true},
		{LevelAll, LevelError, true},
		{LevelAll, 0, false},
		{0, LevelError, false},
		{Level(9), LevelError, false},
	}
	for _, tc := range admits {
		if got := tc.channel.Admits(tc.event); got != tc.want {
			t.Errorf("%v.Admits(%v) = %v, want %v", tc.channel, tc.event, got, tc.want)
		}
	}
	if _, err := Level(0).MarshalText(); err == nil {
		t.Error("MarshalText of the zero Level succeeded")
	}
	var l Level
	if err := json.Unmarshal([]byte(`"renewal"`), &l); err != nil || l != LevelRenewal {
		t.Errorf("unmarshal renewal = %v, %v", l, err)
	}
	if err := json.Unmarshal([]byte(`"loud"`), &l); err == nil {
		t.Error("unmarshal of an unknown level succeeded")
	}
	for k, want := range map[Kind]Level{Renewed: LevelRenewal, StepChanged: LevelAll, ReissueFailed: LevelError,
		EmailApproval: LevelError, ExpiringSoon: LevelError, Kind("new_thing"): LevelError} {
		if got := k.DefaultLevel(); got != want {
			t.Errorf("%s.DefaultLevel() = %v, want %v", k, got, want)
		}
	}
}

func TestRouting(t *testing.T) {
	errCh, renewCh, allCh := newFake("errors"), newFake("renewals"), newFake("everything")
	n := New([]Configured{
		{Channel: errCh, Level: LevelError},
		{Channel: renewCh, Level: LevelRenewal},
		{Channel: allCh, Level: LevelAll},
	}, nil)
	n.Notify(Event{Kind: Renewed, Cert: "shop"})
	n.Notify(Event{Kind: ReissueFailed, Cert: "shop"})
	n.Notify(Event{Kind: StepChanged, Cert: "shop"})
	// An explicit level wins over the kind's default.
	n.Notify(Event{Kind: StepChanged, Level: LevelError, Cert: "shop"})
	closeNotifier(t, n)

	for _, tc := range []struct {
		ch   *fakeChannel
		want string
	}{
		{errCh, "reissue_failed,step_changed"},
		{renewCh, "renewed,reissue_failed,step_changed"},
		{allCh, "renewed,reissue_failed,step_changed,step_changed"},
	} {
		if got := kinds(tc.ch.received()); got != tc.want {
			t.Errorf("%s got %s, want %s", tc.ch.name, got, tc.want)
		}
	}
	// Defaults filled by Notify.
	got := renewCh.received()[0]
	if got.Level != LevelRenewal || got.Time.IsZero() || !strings.Contains(got.Title, "shop") {
		t.Errorf("defaults not filled: %+v", got)
	}
	if s := n.Stats(); s.Sent != 9 || s.Failed != 0 || s.Dropped != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestQueueBoundedNeverBlocks(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	ch := newFake("slow")
	ch.block = make(chan struct{})
	n := NewWithOptions([]Configured{{Channel: ch}}, zap.New(core), Options{QueueSize: 2})

	n.Notify(Event{Kind: ReissueFailed, Cert: "a"})
	waitStarted(t, ch) // the worker holds event a; the queue is empty
	n.Notify(Event{Kind: ReissueFailed, Cert: "b"})
	n.Notify(Event{Kind: ReissueFailed, Cert: "c"}) // queue full now
	n.Notify(Event{Kind: ReissueFailed, Cert: "d"}) // dropped, without blocking
	n.Notify(Event{Kind: ReissueFailed, Cert: "e"}) // dropped
	if s := n.Stats(); s.Dropped != 2 {
		t.Errorf("dropped = %d, want 2", s.Dropped)
	}
	if got := logs.FilterMessage("notification dropped: queue full").Len(); got != 2 {
		t.Errorf("%d drop logs, want 2", got)
	}
	close(ch.block)
	closeNotifier(t, n)
	var certs []string
	for _, e := range ch.received() {
		certs = append(certs, e.Cert)
	}
	if strings.Join(certs, "") != "abc" {
		t.Errorf("delivered %v, want a b c", certs)
	}
	// After Close, Notify drops rather than panics or blocks.
	n.Notify(Event{Kind: ReissueFailed, Cert: "f"})
	if s := n.Stats(); s.Dropped != 3 || s.Sent != 3 {
		t.Errorf("stats = %+v", s)
	}
}

func TestRetriesThenGivesUp(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	ch := newFake("dead")
	ch.fail = func(int) error { return errors.New("connection refused") }
	n := NewWithOptions([]Configured{{Channel: ch}}, zap.New(core),
		Options{MaxAttempts: 3, Backoff: []time.Duration{time.Millisecond}})
	n.Notify(Event{Kind: DeployFailed, Cert: "shop"})
	ch.waitCalls(t, 3)
	closeNotifier(t, n)
	if got := ch.callCount(); got != 3 {
		t.Errorf("%d attempts, want 3", got)
	}
	if s := n.Stats(); s.Failed != 1 || s.Retried != 2 || s.Sent != 0 {
		t.Errorf("stats = %+v", s)
	}
	if logs.FilterMessage("notification failed; giving up").Len() != 1 {
		t.Errorf("no give-up log: %v", logs.All())
	}
	if logs.FilterMessage("notification failed; will retry").Len() != 2 {
		t.Errorf("want 2 retry logs: %v", logs.All())
	}
}

func TestRetrySucceeds(t *testing.T) {
	ch := newFake("flaky")
	ch.fail = func(n int) error {
		if n == 1 {
			return errors.New("HTTP 502")
		}
		return nil
	}
	n := NewWithOptions([]Configured{{Channel: ch}}, nil, Options{Backoff: []time.Duration{time.Millisecond}})
	n.Notify(Event{Kind: ReissueFailed})
	ch.waitCalls(t, 2)
	closeNotifier(t, n)
	if s := n.Stats(); s.Sent != 1 || s.Retried != 1 || s.Failed != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestPermanentNotRetried(t *testing.T) {
	ch := newFake("refusing")
	ch.fail = func(int) error { return Permanent(errors.New("HTTP 401")) }
	n := NewWithOptions([]Configured{{Channel: ch}}, nil, Options{Backoff: []time.Duration{time.Millisecond}})
	n.Notify(Event{Kind: ReissueFailed})
	ch.waitCalls(t, 1)
	closeNotifier(t, n)
	if got := ch.callCount(); got != 1 {
		t.Errorf("%d attempts of a permanent failure, want 1", got)
	}
	if s := n.Stats(); s.Failed != 1 || s.Retried != 0 {
		t.Errorf("stats = %+v", s)
	}
	if Permanent(nil) != nil || IsPermanent(errors.New("x")) {
		t.Error("Permanent(nil) or IsPermanent of a plain error")
	}
}

func TestCloseDrains(t *testing.T) {
	ch := newFake("drain")
	ch.block = make(chan struct{})
	n := New([]Configured{{Channel: ch}}, nil)
	for i := 0; i < 5; i++ {
		n.Notify(Event{Kind: ExpiringSoon, Cert: string(rune('a' + i))})
	}
	waitStarted(t, ch)
	closed := make(chan error, 1)
	go func() { closed <- n.Close(context.Background()) }()
	close(ch.block)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Close did not return")
	}
	if got := len(ch.received()); got != 5 {
		t.Errorf("%d of 5 events delivered before Close returned", got)
	}
	if err := n.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A delivery waiting for a long backoff gets its last attempt at Close
// instead of holding up the shutdown.
func TestCloseAttemptsPendingRetryAtOnce(t *testing.T) {
	ch := newFake("late")
	ch.fail = func(n int) error {
		if n == 1 {
			return errors.New("timeout")
		}
		return nil
	}
	n := NewWithOptions([]Configured{{Channel: ch}}, nil, Options{Backoff: []time.Duration{time.Hour}})
	n.Notify(Event{Kind: ReissueFailed})
	ch.waitCalls(t, 1)
	closeNotifier(t, n)
	if s := n.Stats(); s.Sent != 1 || s.Retried != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestCloseGivesUpWhenContextEnds(t *testing.T) {
	core, logs := observer.New(zap.ErrorLevel)
	ch := newFake("stuck")
	ch.block = make(chan struct{}) // never closed: Send returns only on ctx
	n := New([]Configured{{Channel: ch}}, zap.New(core))
	for i := 0; i < 3; i++ {
		n.Notify(Event{Kind: ReissueFailed})
	}
	waitStarted(t, ch)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := n.Close(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want context.Canceled", err)
	}
	if s := n.Stats(); s.Sent != 0 || s.Dropped != 3 {
		t.Errorf("stats = %+v, want 3 dropped", s)
	}
	if logs.FilterMessage("notifications dropped at shutdown").Len() != 1 {
		t.Errorf("no drop log: %v", logs.All())
	}
}

func TestNoChannelsIsFine(t *testing.T) {
	n := New(nil, nil)
	n.Notify(Event{Kind: ReissueFailed})
	closeNotifier(t, n)
	if s := n.Stats(); s != (Stats{}) {
		t.Errorf("stats = %+v", s)
	}
}

func TestRendering(t *testing.T) {
	e := Event{
		Kind: ReissueFailed, Cert: "shop", UniqueID: "u-1",
		Title:  "reissue failed\r\nBcc: victim@example.com",
		Text:   "CA said: <@all> <font color=\"warning\">x</font>\r\nline two\x07",
		Fields: map[string]string{"step": "rechecked", "attempts": "5\nsix"},
		Time:   time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}.normalized(time.Now())
	if s := e.subject(); strings.ContainsAny(s, "\r\n") || !strings.HasPrefix(s, "[dcvd] ") {
		t.Errorf("subject %q", s)
	}
	md := e.markdown()
	if strings.Contains(md, "<@all>") || strings.Contains(md, "<font") {
		t.Errorf("markdown keeps mentions or tags: %q", md)
	}
	for _, want := range []string{"- **attempts**: 5 six", "- **cert**: shop", "- **step**: rechecked", "- **time**: 2026-01-02T03:04:05Z", "line two"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	if i, j := strings.Index(md, "**attempts**"), strings.Index(md, "**step**"); i > j {
		t.Error("fields not sorted")
	}
	pt := e.plainText()
	if strings.Contains(pt, "\r") || strings.Contains(pt, "\x07") {
		t.Errorf("plain text keeps control characters: %q", pt)
	}
	if got := truncate("证书证书", 7); got != "证…" {
		t.Errorf("truncate = %q", got)
	}
	if got := (Event{Kind: Renewed, Cert: "dcvd-site", Title: "DCVD renewed"}).subject(); got != "DCVD renewed" {
		t.Errorf("subject %q", got)
	}
}
