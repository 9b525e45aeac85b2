package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClusterMigrations(t *testing.T) {
	db := postgresBackend.newDB(t)
	ctx := t.Context()
	// Two processes starting together on a new database.
	var wg sync.WaitGroup
	stores := make([]testStore, 2)
	errs := make([]error, 2)
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = db.open(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	s := stores[0].(*PostgresStore)
	clusterVersions := func() []int {
		t.Helper()
		var vs []int
		rows, err := s.pool.Query(ctx, `SELECT version FROM cluster_schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				t.Fatal(err)
			}
			vs = append(vs, v)
		}
		return vs
	}
	var want []int
	for i := range postgresClusterMigrations {
		want = append(want, i+1)
	}
	if got := clusterVersions(); !reflect.DeepEqual(got, want) {
		t.Errorf("cluster versions after two concurrent opens = %v, want %v", got, want)
	}
	// Both work on the one set of tables.
	l := mustAcquire(t, s, "shop", "node-a", time.Minute)
	if _, err := stores[1].(*PostgresStore).RenewLease(ctx, l, time.Minute); err != nil {
		t.Errorf("lease acquired through one store, renewed through the other: %v", err)
	}
	// Migrating again changes nothing.
	if err := s.migrate(ctx); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	if got := clusterVersions(); !reflect.DeepEqual(got, want) {
		t.Errorf("cluster versions after migrating again = %v, want %v", got, want)
	}
	if leases, err := s.Leases(ctx); err != nil || len(leases) != 1 || leases[0].Token != l.Token {
		t.Errorf("leases after migrating again = %+v, %v", leases, err)
	}

	// A cluster schema newer than the code is refused, as the shared one.
	future := len(postgresClusterMigrations) + 1
	if err := s.exec(ctx, fmt.Sprintf(`INSERT INTO cluster_schema_migrations (version, applied) VALUES (%d, '')`, future)); err != nil {
		t.Fatal(err)
	}
	s2, err := db.open(ctx)
	if err == nil {
		s2.Close()
		t.Fatal("open accepted a cluster schema newer than the code")
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("cluster schema version %d is newer", future)) {
		t.Errorf("error %q does not say the cluster schema is newer", err)
	}
}

func TestClusterHonoursContext(t *testing.T) {
	s := openClusterStore(t)
	l := mustAcquire(t, s, "shop", "node-a", time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	f := s.Fenced(l)
	calls := map[string]func() error{
		"AcquireLease": func() error { _, err := s.AcquireLease(ctx, "api", "node-a", time.Minute); return err },
		"RenewLease":   func() error { _, err := s.RenewLease(ctx, l, time.Minute); return err },
		"ReleaseLease": func() error { return s.ReleaseLease(ctx, l) },
		"Leases":       func() error { _, err := s.Leases(ctx); return err },
		"Heartbeat":    func() error { _, err := s.Heartbeat(ctx, Node{Name: "n", Instance: "i"}); return err },
		"Nodes":        func() error { _, err := s.Nodes(ctx, time.Minute); return err },
		"PutNodeCert":  func() error { return s.PutNodeCert(ctx, NodeCert{Node: "n", Cert: "shop"}) },
		"NodeCerts":    func() error { _, err := s.NodeCerts(ctx); return err },
		"AckFiles":     func() error { return s.AckFiles(ctx, "u1", "n") },
		"FileAcks":     func() error { _, err := s.FileAcks(ctx, "u1"); return err },
		"Notify":       func() error { return s.Notify(ctx, ClusterEvent{Kind: EventOrder, Cert: "shop"}) },
		"fenced PutOrder": func() error {
			return f.PutOrder(ctx, &Order{UniqueID: "u1", Cert: "shop", Step: StepNew})
		},
		"fenced PutCertificate": func() error { return f.PutCertificate(ctx, fullCertificate("shop")) },
		"fenced AddAttempt":     func() error { return f.AddAttempt(ctx, fullAttempt("shop", "u1")) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v, want context.Canceled", name, err)
		}
	}
	if r, err := s.RenewLease(t.Context(), l, time.Minute); err != nil || r.Token != l.Token {
		t.Errorf("the lease after cancelled calls = %+v, %v; want it still current", r, err)
	}
}

func TestChannelFor(t *testing.T) {
	long := strings.Repeat("s", 200)
	tests := []struct {
		schema, want string
	}{
		{"", "dcvd"},
		{"public", "dcvd"},
	}
	for _, tt := range tests {
		if got := channelFor(tt.schema); got != tt.want {
			t.Errorf("channelFor(%q) = %q, want %q", tt.schema, got, tt.want)
		}
	}
	for _, schema := range []string{"a", "b", "cluster2", long} {
		got := channelFor(schema)
		if got == "dcvd" || len(got) > 63 || !strings.HasPrefix(got, "dcvd_") {
			t.Errorf("channelFor(%q) = %q: want a dcvd_ channel of its own, at most 63 bytes", schema, got)
		}
	}
	if channelFor("a") == channelFor("b") {
		t.Error("two schemas share a channel")
	}
}
