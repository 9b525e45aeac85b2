package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/pgtest"
)

// listen runs s.Listen in the background, sending what it delivers to the
// returned channel; stop ends it and returns what Listen returned.
func listen(t *testing.T, s *PostgresStore) (events <-chan ClusterEvent, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	ch := make(chan ClusterEvent, 100)
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, func(ev ClusterEvent) { ch <- ev }) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				err = errors.New("Listen did not return after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return ch, stop
}

// receive returns the next event, failing after a generous time.
func receive(t *testing.T, events <-chan ClusterEvent) ClusterEvent {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event delivered")
		return ClusterEvent{}
	}
}

// awaitListening notifies ev from s until events delivers it: LISTEN takes
// effect at some point after Listen starts, and what is sent before is lost.
func awaitListening(t *testing.T, s *PostgresStore, events <-chan ClusterEvent, ev ClusterEvent) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := s.Notify(t.Context(), ev); err != nil {
			t.Fatalf("Notify: %v", err)
		}
		select {
		case got := <-events:
			if got != ev {
				t.Fatalf("first event delivered = %+v, want %+v", got, ev)
			}
			// Drain the copies sent while LISTEN was taking effect.
			for {
				select {
				case got := <-events:
					if got != ev {
						t.Fatalf("event delivered = %+v, want %+v", got, ev)
					}
				case <-time.After(100 * time.Millisecond):
					return
				}
			}
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("Listen never delivered an event")
		}
	}
}

func TestClusterNotifyListen(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	sender, receiver := stores[0], stores[1]
	ctx := t.Context()
	events, stop := listen(t, receiver)
	awaitListening(t, sender, events, ClusterEvent{Kind: EventOrder, Cert: "warmup"})

	sent := []ClusterEvent{
		{Kind: EventOrder, Cert: "shop", UniqueID: "u1"},
		{Kind: EventCertificate, Cert: "shop"},
		{Kind: EventCallback, Cert: "api", UniqueID: "u2"},
	}
	// Malformed notifications and unknown kinds, sent around the others
	// on the same channel, are skipped.
	for _, raw := range []string{`not json`, `{"kind":"reboot","cert":"shop"}`, `{"kind":""}`, `[1]`} {
		if _, err := sender.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, sender.channel, raw); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range sent {
		if err := sender.Notify(ctx, ev); err != nil {
			t.Fatalf("Notify(%+v): %v", ev, err)
		}
	}
	// Other channels are not ours.
	if _, err := sender.pool.Exec(ctx, `SELECT pg_notify('other', '{"kind":"order","cert":"x"}')`); err != nil {
		t.Fatal(err)
	}
	// Extra fields of a newer sender are tolerated.
	if _, err := sender.pool.Exec(ctx, `SELECT pg_notify($1, '{"kind":"order","cert":"new","unique_id":"u3","node":"x"}')`, sender.channel); err != nil {
		t.Fatal(err)
	}
	sent = append(sent, ClusterEvent{Kind: EventOrder, Cert: "new", UniqueID: "u3"})
	for i, want := range sent {
		if got := receive(t, events); got != want {
			t.Errorf("event %d = %+v, want %+v", i, got, want)
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Listen returned %v when its context ended, want nil", err)
	}

	if err := sender.Notify(ctx, ClusterEvent{Kind: "reboot", Cert: "shop"}); err == nil {
		t.Error("Notify of an unknown kind succeeded")
	}
}

func TestClusterListenEnds(t *testing.T) {
	stores, dsn := openClusterStores(t, 1)
	s := stores[0]

	// A context already ended: nil at once.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Listen(ctx, func(ClusterEvent) {}); err != nil {
		t.Errorf("Listen with an ended context = %v, want nil", err)
	}

	// A lost connection: the error, for the caller to retry.
	app := fmt.Sprintf("dcvd_listen_%d", time.Now().UnixNano())
	l, err := OpenPostgres(t.Context(), pgtest.WithParam(t, dsn, "application_name", app))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	events, stop := listen(t, l)
	awaitListening(t, s, events, ClusterEvent{Kind: EventCertificate, Cert: "shop"})
	tag, err := s.pool.Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = $1 AND query LIKE 'LISTEN%'`, app)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("terminate the listening connection: %v, %d rows", err, tag.RowsAffected())
	}
	// Listen returns on its own; stop only collects what it returned.
	deadline := time.Now().Add(10 * time.Second)
	for len(events) == 0 && time.Now().Before(deadline) {
		var n int
		if err := s.pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'`, app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stop(); err == nil {
		t.Error("Listen returned nil after its connection was lost, want the error")
	}

	// A closed store: an error.
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Listen(t.Context(), func(ClusterEvent) {}); err == nil {
		t.Error("Listen on a closed store returned nil, want an error")
	}
}

// TestClusterChannelPerSchema: LISTEN/NOTIFY channels belong to the
// database, so a store in another schema (another cluster on the same
// database) must not hear this one's events.
func TestClusterChannelPerSchema(t *testing.T) {
	ctx := t.Context()
	open := func() *PostgresStore {
		s, err := OpenPostgres(ctx, pgtest.NewSchema(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	other, mine := open(), open()
	if other.channel == mine.channel {
		t.Fatalf("two schemas share the channel %q", mine.channel)
	}
	events, _ := listen(t, mine)
	awaitListening(t, mine, events, ClusterEvent{Kind: EventOrder, Cert: "warmup"})
	if err := other.Notify(ctx, ClusterEvent{Kind: EventOrder, Cert: "theirs"}); err != nil {
		t.Fatal(err)
	}
	// Sent after the other schema's: had that one been delivered, it
	// would come first.
	want := ClusterEvent{Kind: EventOrder, Cert: "mine"}
	if err := mine.Notify(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got := receive(t, events); got != want {
		t.Errorf("delivered %+v, want %+v: another schema's event reached this store", got, want)
	}
}
