package store

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestClusterHeartbeatAndNodes(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	a, b := stores[0], stores[1]
	ctx := t.Context()
	started := time.Date(2026, 5, 1, 8, 0, 0, 123456000, time.UTC)
	if nodes, err := a.Nodes(ctx, time.Minute); err != nil || nodes == nil || len(nodes) != 0 {
		t.Errorf("Nodes on an empty store = %v, %v; want an empty slice", nodes, err)
	}

	na := Node{Name: "node-a", Instance: "i1", Version: "1.0", Started: started,
		Heartbeat: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), Alive: true} // both ignored
	prev, err := a.Heartbeat(ctx, na)
	if err != nil || prev != nil {
		t.Fatalf("first Heartbeat = %+v, %v; want nil, nil", prev, err)
	}
	nodes, err := a.Nodes(ctx, time.Minute)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("Nodes = %+v, %v; want node-a", nodes, err)
	}
	first := nodes[0]
	if first.Name != "node-a" || first.Instance != "i1" || first.Version != "1.0" || !first.Started.Equal(started) ||
		!first.Alive || first.Heartbeat.Year() == 2000 || first.Heartbeat.Location() != time.UTC {
		t.Errorf("node after its first heartbeat = %+v", first)
	}

	// A second process under the same name: the previous row is
	// returned, so that it can warn.
	nb := Node{Name: "node-a", Instance: "i2", Version: "1.1", Started: started.Add(time.Hour)}
	prev, err = b.Heartbeat(ctx, nb)
	if err != nil {
		t.Fatal(err)
	}
	want := first
	want.Alive = false // Heartbeat knows no within
	if prev == nil || !reflect.DeepEqual(*prev, want) {
		t.Errorf("Heartbeat returned previous %+v, want %+v", prev, want)
	}
	nodes, err = a.Nodes(ctx, time.Minute)
	if err != nil || len(nodes) != 1 || nodes[0].Instance != "i2" || nodes[0].Version != "1.1" ||
		nodes[0].Heartbeat.Before(first.Heartbeat) {
		t.Errorf("Nodes after the second heartbeat = %+v, %v", nodes, err)
	}

	// Alive is on the database's clock: age node-a's heartbeat, and
	// add a node heartbeating now.
	if _, err := a.pool.Exec(ctx, `UPDATE nodes SET heartbeat = clock_timestamp() - interval '10 minutes'`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Heartbeat(ctx, Node{Name: "node-0", Instance: "i3"}); err != nil {
		t.Fatal(err)
	}
	nodes, err = a.Nodes(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, n := range nodes {
		summary = append(summary, fmt.Sprintf("%s:%v", n.Name, n.Alive))
	}
	if got, want := strings.Join(summary, " "), "node-0:true node-a:false"; got != want {
		t.Errorf("Nodes(1m) = %s, want %s", got, want)
	}
	if !nodes[0].Started.IsZero() {
		t.Errorf("a zero Started came back as %v", nodes[0].Started)
	}
	for _, within := range []time.Duration{0, -time.Minute} {
		nodes, err := a.Nodes(ctx, within)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if n.Alive {
				t.Errorf("Nodes(%v): %s alive, want none", within, n.Name)
			}
		}
	}

	for _, bad := range []Node{{Instance: "i"}, {Name: "node-x"}} {
		if _, err := a.Heartbeat(ctx, bad); err == nil {
			t.Errorf("Heartbeat(%+v) succeeded, want an error", bad)
		}
	}
}

// TestClusterNodeGoesQuiet lets a heartbeat age in real time.
func TestClusterNodeGoesQuiet(t *testing.T) {
	s := openClusterStore(t)
	ctx := t.Context()
	if _, err := s.Heartbeat(ctx, Node{Name: "node-a", Instance: "i1"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	nodes, err := s.Nodes(ctx, 100*time.Millisecond)
	if err != nil || len(nodes) != 1 || nodes[0].Alive {
		t.Errorf("Nodes(100ms) 300ms after the last heartbeat = %+v, %v; want node-a not alive", nodes, err)
	}
	nodes, err = s.Nodes(ctx, time.Hour)
	if err != nil || len(nodes) != 1 || !nodes[0].Alive {
		t.Errorf("Nodes(1h) = %+v, %v; want node-a alive", nodes, err)
	}
}

func TestClusterNodeCerts(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	a, b := stores[0], stores[1]
	ctx := t.Context()

	if got, err := a.NodeCerts(ctx); err != nil || got == nil || len(got) != 0 {
		t.Errorf("NodeCerts on an empty store = %v, %v; want an empty slice", got, err)
	}
	for _, nc := range []NodeCert{
		{Node: "node-b", Cert: "shop", Serial: "0a"},
		{Node: "node-a", Cert: "shop", Serial: "0a"},
		{Node: "node-a", Cert: "api", Serial: "", Error: "reload: exit status 1"},
		{Node: "node-a", Cert: "shop", Serial: "0b", Updated: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}, // replaces
	} {
		st := a
		if nc.Node == "node-b" {
			st = b
		}
		if err := st.PutNodeCert(ctx, nc); err != nil {
			t.Fatalf("PutNodeCert(%+v): %v", nc, err)
		}
	}
	got, err := b.NodeCerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, nc := range got {
		summary = append(summary, fmt.Sprintf("%s/%s=%s[%s]", nc.Cert, nc.Node, nc.Serial, nc.Error))
		if nc.Updated.Year() == 2000 || nc.Updated.IsZero() || nc.Updated.Location() != time.UTC {
			t.Errorf("Updated of %s/%s = %v, want the database's present time in UTC", nc.Cert, nc.Node, nc.Updated)
		}
	}
	want := "api/node-a=[reload: exit status 1] shop/node-a=0b[] shop/node-b=0a[]"
	if strings.Join(summary, " ") != want {
		t.Errorf("NodeCerts = %s, want %s", strings.Join(summary, " "), want)
	}
	for _, bad := range []NodeCert{{Cert: "shop"}, {Node: "node-a"}} {
		if err := a.PutNodeCert(ctx, bad); err == nil {
			t.Errorf("PutNodeCert(%+v) succeeded, want an error", bad)
		}
	}
}

func TestClusterFileAcks(t *testing.T) {
	stores, _ := openClusterStores(t, 2)
	a, b := stores[0], stores[1]
	ctx := t.Context()

	if got, err := a.FileAcks(ctx, "u1"); err != nil || got == nil || len(got) != 0 {
		t.Errorf("FileAcks with none = %v, %v; want an empty slice", got, err)
	}
	for _, ack := range []struct {
		st        *PostgresStore
		uid, node string
	}{
		{b, "u1", "node-c"}, {a, "u1", "node-a"}, {b, "u1", "node-b"},
		{a, "u1", "node-a"}, // again: harmless
		{a, "u2", "node-a"},
	} {
		if err := ack.st.AckFiles(ctx, ack.uid, ack.node); err != nil {
			t.Fatalf("AckFiles(%s, %s): %v", ack.uid, ack.node, err)
		}
	}
	if got, err := a.FileAcks(ctx, "u1"); err != nil || !reflect.DeepEqual(got, []string{"node-a", "node-b", "node-c"}) {
		t.Errorf("FileAcks(u1) = %v, %v; want node-a, node-b, node-c", got, err)
	}
	if got, err := b.FileAcks(ctx, "u2"); err != nil || !reflect.DeepEqual(got, []string{"node-a"}) {
		t.Errorf("FileAcks(u2) = %v, %v; want node-a", got, err)
	}
	for _, bad := range [][2]string{{"", "node-a"}, {"u1", ""}} {
		if err := a.AckFiles(ctx, bad[0], bad[1]); err == nil {
			t.Errorf("AckFiles(%q, %q) succeeded, want an error", bad[0], bad[1])
		}
	}
}
