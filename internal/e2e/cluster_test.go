package e2e_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run cluster mode (issue 7) as it is deployed: three "dcvd
// run" processes on one machine sharing a real PostgreSQL, each with its own
// state, web root and deploy directories, behind a load balancer that the
// sandbox CA fetches the validation files through. Each test starts a
// PostgreSQL of its own (scripts/postgres.sh start), because one of them
// stops it, and other packages' tests share the CI's server.

// clusterLease is the [store] lease of the tests: short, so that a
// takeover happens within a test, and above the 2s the config requires.
const clusterLease = 3 * time.Second

// clusterNodes are the names of the three nodes, in the order they are
// configured.
var clusterNodes = []string{"n1", "n2", "n3"}

// clusterCert is one [[certificate]] of a cluster test, and the sandbox
// service it is reissued against (of the same name).
type clusterCert struct {
	name    string
	domains map[string]string // name → "http" or an approver address
}

// httpClusterCert is a certificate with two names validated by http files.
func httpClusterCert(name string) clusterCert {
	return clusterCert{name: name, domains: map[string]string{
		name + ".example.com":          "http",
		"www." + name + ".example.com": "http",
	}}
}

// TestClusterThreeNodes: three nodes, three certificates of two http names
// each. Every certificate is charged once; every node deploys the same
// files and runs its reload; the CA found each validation file on all
// three web roots whenever it fetched one, and none is left after;
// "dcvd status" shows every node alive with the deployed serial.
func TestClusterThreeNodes(t *testing.T) {
	bin := dcvdBinary(t, "")
	ctx := testContext(t)
	certs := []clusterCert{httpClusterCert("c1"), httpClusterCert("c2"), httpClusterCert("c3")}
	w := newClusterWorld(t, certs...)
	start := time.Now()
	// Three members, then the orders: no reissue is answered before every
	// node is alive in the cluster, so that each order's driver waits for
	// all three nodes' validation files. Started one after the other, a
	// node could join after a driver had looked, and write the files only
	// as it starts, racing the CA's fetch (package daemon's
	// TestClusterStartingNodeWritesPendingFiles covers that case).
	release := w.reissues.hold()
	defer release()
	for _, n := range w.nodes {
		n.start(t, bin)
	}
	waitUntil(ctx, t, "three nodes alive in the cluster", func() string {
		sts, err := clusterStatuses(ctx, bin, w.nodes[0].cfgPath)
		if err != nil {
			return err.Error()
		}
		st := sts[certs[0].name]
		for _, name := range clusterNodes {
			if !slices.ContainsFunc(st.Nodes, func(n clusterNodeStatus) bool { return n.Node == name && n.Alive }) {
				return fmt.Sprintf("node %s not alive yet (%+v)", name, st.Nodes)
			}
		}
		return ""
	})
	release()

	// Done when node 1's status shows every certificate deployed on every
	// node, the reloads ran, and no validation file is left.
	var sts map[string]clusterStatus
	waitUntil(ctx, t, "every certificate live on three nodes", func() string {
		for _, n := range w.nodes {
			if n.exited() {
				t.Fatalf("node %s exited: %v\n%s", n.name, n.err, n.out.String())
			}
		}
		var err error
		if sts, err = clusterStatuses(ctx, bin, w.nodes[0].cfgPath); err != nil {
			return err.Error()
		}
		for _, c := range certs {
			st, ok := sts[c.name]
			if !ok {
				return "status does not list " + c.name
			}
			if why := settled(st, clusterNodes); why != "" {
				return c.name + ": " + why
			}
			for _, n := range w.nodes {
				if !slices.Contains(reloads(t, n)[c.name], st.Serial) {
					return fmt.Sprintf("%s: node %s has not reloaded serial %s yet", c.name, n.name, st.Serial)
				}
			}
		}
		return webRootLeft(w)
	})
	t.Logf("three certificates live on three nodes after %s", time.Since(start).Round(time.Millisecond))

	uids := checkOneOrderEach(t, w)
	services := sandboxServices(ctx, t, w.sbURL)
	for _, c := range certs {
		st := sts[c.name]
		if sv := services[c.name]; !sameSerial(sv.Serial, st.Serial) || sv.OrderUniqueID != uids[c.name] {
			t.Errorf("certificate %s: the sandbox issued serial %s for order %s; dcvd shows %s, the ledger %s",
				c.name, sv.Serial, sv.OrderUniqueID, st.Serial, uids[c.name])
		}
		if len(st.Nodes) != len(clusterNodes) {
			t.Errorf("certificate %s: status lists nodes %+v, want %v", c.name, st.Nodes, clusterNodes)
		}
		if st.Lease == nil {
			t.Errorf("certificate %s: status shows no lease", c.name)
		} else if !slices.Contains(clusterNodes, st.Lease.Holder) || st.Lease.Token < 1 {
			t.Errorf("certificate %s: lease %+v, want one held by a node with a token", c.name, *st.Lease)
		}
		checkSameDeployed(t, w, c.name, slices.Collect(maps.Keys(c.domains)), w.nodes...)
		leaf := parseCerts(t, "cert.pem", readFile(t, filepath.Join(w.nodes[0].deployDir(c.name), "cert.pem")))[0]
		if leaf.SerialNumber.Cmp(parseSerial(t, st.Serial)) != 0 {
			t.Errorf("certificate %s: cert.pem has serial %x, dcvd status says %s", c.name, leaf.SerialNumber, st.Serial)
		}
		for _, n := range w.nodes {
			rl := reloads(t, n)[c.name]
			if len(rl) == 0 || rl[len(rl)-1] != st.Serial {
				t.Errorf("certificate %s: node %s reloaded for serials %v, want last %s", c.name, n.name, rl, st.Serial)
			}
			if len(rl) > 1 {
				t.Logf("certificate %s: node %s reloaded %d times (%v)", c.name, n.name, len(rl), rl)
			}
		}
	}

	// The CA fetched each name's file, and found it on all three web
	// roots every time.
	fetched := map[string]bool{}
	for _, f := range w.lb.caFetches() {
		fetched[f.host] = true
		if !f.onAll || f.status != http.StatusOK {
			t.Errorf("the CA fetched http://%s%s (backend %d, HTTP %d) when not every web root held it: %s",
				f.host, f.uri, f.backend, f.status, f.differs)
		}
	}
	for _, c := range certs {
		for name := range c.domains {
			if !fetched[name] {
				t.Errorf("the CA never fetched a validation file of %s", name)
			}
		}
	}
	// No file is left. The directories made for the files may stay:
	// several certificates' files shared them, and httpchallenge.Remove
	// leaves a directory it made while another order's file is in it.
	for _, n := range w.nodes {
		checkOnlyDirs(t, n.webroot, ".well-known", ".well-known/pki-validation")
	}

	for _, n := range w.nodes {
		if err := n.stop(); err != nil {
			t.Errorf("node %s, stopped with SIGTERM: %v", n.name, err)
		}
	}
}

// TestClusterLeaseHolderKilled: node 1, alone, takes the order to published
// and is killed there with SIGKILL (the crashtest build's hook). Nodes 2 and
// 3, started after, finish that same order — one charge, one unique_id —
// within the lease and some slack of the kill, and deploy it.
func TestClusterLeaseHolderKilled(t *testing.T) {
	bin := dcvdBinary(t, "crashtest")
	ctx := testContext(t)
	cert := httpClusterCert("c1")
	w := newClusterWorld(t, cert)
	n1, n2, n3 := w.node("n1"), w.node("n2"), w.node("n3")

	n1.start(t, bin, "DCVD_CRASH_AT_STEP=published")
	select {
	case <-n1.done:
	case <-ctx.Done():
		t.Fatalf("node 1 did not crash at published: %v\n%s", ctx.Err(), n1.out.String())
	}
	killed := n1.exitedAt
	if !killedBy(n1.err, syscall.SIGKILL) {
		t.Fatalf("node 1 with DCVD_CRASH_AT_STEP=published ended with %v, want death by SIGKILL\n%s", n1.err, n1.out.String())
	}
	const hook = "crashtest: SIGKILL after step published of order "
	out := n1.out.String()
	i := strings.Index(out, hook)
	if i < 0 {
		t.Fatalf("node 1 died by SIGKILL, but not from the hook (%q not in its output):\n%s", hook, out)
	}
	uid, _, _ := strings.Cut(out[i+len(hook):], "\n")
	uid = strings.TrimSpace(uid)
	// The lease is node 1's (it dies holding it), the order at published.
	if sts, err := clusterStatuses(ctx, bin, n2.cfgPath); err != nil {
		t.Errorf("dcvd status with no node running: %v", err)
	} else {
		st := sts[cert.name]
		if st.Order == nil || st.Order.UniqueID != uid || st.Order.Step != "published" {
			t.Errorf("after the crash dcvd status shows order %+v, want %s at published", st.Order, uid)
		}
		if st.Lease == nil || st.Lease.Holder != "n1" {
			t.Errorf("after the crash dcvd status shows lease %+v, want n1's", st.Lease)
		}
	}
	// A dead node's web server is taken out of the load balancer, as a
	// health check would: the CA must find the files the others wrote.
	w.lb.setDown(0, true)

	n2.start(t, bin)
	n3.start(t, bin)
	finishBy := killed.Add(clusterLease + 30*time.Second)
	deadline, cancel := context.WithDeadline(ctx, finishBy)
	defer cancel()
	var st clusterStatus
	waitUntil(deadline, t, "the order finished by node 2 or 3 within the lease + 30s of the kill", func() string {
		for _, n := range []*clusterNode{n2, n3} {
			if n.exited() {
				t.Fatalf("node %s exited: %v\n%s", n.name, n.err, n.out.String())
			}
		}
		sts, err := clusterStatuses(ctx, bin, n2.cfgPath)
		if err != nil {
			return err.Error()
		}
		st = sts[cert.name]
		if why := settled(st, []string{"n2", "n3"}); why != "" {
			return why
		}
		for _, n := range []*clusterNode{n2, n3} {
			if fs := filesUnder(n.webroot); len(fs) > 0 {
				return fmt.Sprintf("node %s's web root still holds %v", n.name, fs)
			}
		}
		return ""
	})
	t.Logf("order %s finished %s after node 1 was killed (lease %s)", uid, time.Since(killed).Round(time.Millisecond), clusterLease)

	checkCharges(t, w.sb, uid)
	if sent := w.reissues.uniqueIDs()[cert.name]; !slices.Equal(sent, []string{uid}) {
		t.Errorf("reissue requests carried unique_ids %v, want only node 1's %s", sent, uid)
	}
	if sv := sandboxServices(ctx, t, w.sbURL)[cert.name]; sv.OrderUniqueID != uid || !sameSerial(sv.Serial, st.Serial) {
		t.Errorf("the sandbox issued serial %s for order %s; dcvd shows %s, want order %s", sv.Serial, sv.OrderUniqueID, st.Serial, uid)
	}
	if st.Lease == nil || (st.Lease.Holder != "n2" && st.Lease.Holder != "n3") {
		t.Errorf("after the takeover the lease is %+v, want held last by n2 or n3", st.Lease)
	} else if st.Lease.Token < 2 {
		t.Errorf("after the takeover the lease has token %d, want more than node 1's", st.Lease.Token)
	}
	checkSameDeployed(t, w, cert.name, slices.Collect(maps.Keys(cert.domains)), n2, n3)
	for _, n := range []*clusterNode{n2, n3} {
		if rl := reloads(t, n)[cert.name]; len(rl) == 0 || rl[len(rl)-1] != st.Serial {
			t.Errorf("node %s reloaded for serials %v, want last %s", n.name, rl, st.Serial)
		}
	}
	for _, f := range w.lb.caFetches() {
		if f.backend == 0 || f.status != http.StatusOK {
			t.Errorf("the CA fetched http://%s%s from backend %d: HTTP %d", f.host, f.uri, f.backend, f.status)
		}
	}
	for _, n := range []*clusterNode{n2, n3} {
		checkOnlyEntries(t, n.webroot)
		if err := n.stop(); err != nil {
			t.Errorf("node %s, stopped with SIGTERM: %v", n.name, err)
		}
	}
}

// TestClusterPostgresDown: a network partition's stand-in. While an order
// waits for the CA (an e-mail validation not yet approved), PostgreSQL is
// stopped for three lease durations, then started again. No node dies, the
// order is submitted once (one unique_id, one charge), and once the
// approver clicks it completes and every node deploys it.
func TestClusterPostgresDown(t *testing.T) {
	bin := dcvdBinary(t, "")
	ctx := testContext(t)
	const approved = "www.c1.example.com"
	cert := clusterCert{name: "c1", domains: map[string]string{
		"c1.example.com": "http",
		approved:         "admin@c1.example.com",
	}}
	w := newClusterWorld(t, cert)
	for _, n := range w.nodes {
		n.start(t, bin)
	}
	checkRunning := func() {
		t.Helper()
		for _, n := range w.nodes {
			if n.exited() {
				t.Fatalf("node %s exited: %v\n%s", n.name, n.err, n.out.String())
			}
		}
	}

	// The order waits for the approval, its file on every web root.
	waitUntil(ctx, t, "the order waiting for the e-mail approval", func() string {
		checkRunning()
		sts, err := clusterStatuses(ctx, bin, w.nodes[0].cfgPath)
		if err != nil {
			return err.Error()
		}
		st := sts[cert.name]
		if st.Order == nil || st.Order.Step != "rechecked" {
			return fmt.Sprintf("order %+v, want one at rechecked", st.Order)
		}
		for _, n := range w.nodes {
			if len(filesUnder(n.webroot)) == 0 {
				return fmt.Sprintf("node %s's web root holds no validation file", n.name)
			}
		}
		return ""
	})
	if sv := sandboxServices(ctx, t, w.sbURL)[cert.name]; sv.OrderStatus != "pending" {
		t.Fatalf("the sandbox's order is %+v, want pending", sv)
	}

	// The outage.
	if err := postgresScript(w.root, "pause", w.pgDir); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	for time.Since(down) < 3*clusterLease {
		checkRunning()
		time.Sleep(200 * time.Millisecond)
	}
	if err := postgresScript(w.root, "resume", w.pgDir); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL was down for %s", time.Since(down).Round(time.Millisecond))
	checkRunning()

	if err := w.sb.ApproveEmail(cert.name, approved); err != nil {
		t.Fatal(err)
	}
	resumed := time.Now()
	var st clusterStatus
	waitUntil(ctx, t, "the order finished after PostgreSQL came back", func() string {
		checkRunning()
		sts, err := clusterStatuses(ctx, bin, w.nodes[0].cfgPath)
		if err != nil {
			return err.Error()
		}
		st = sts[cert.name]
		if why := settled(st, clusterNodes); why != "" {
			return why
		}
		return webRootLeft(w)
	})
	t.Logf("order finished %s after the approval", time.Since(resumed).Round(time.Millisecond))

	uids := checkOneOrderEach(t, w)
	if sv := sandboxServices(ctx, t, w.sbURL)[cert.name]; sv.OrderUniqueID != uids[cert.name] || !sameSerial(sv.Serial, st.Serial) {
		t.Errorf("the sandbox issued serial %s for order %s; dcvd shows %s, the ledger %s", sv.Serial, sv.OrderUniqueID, st.Serial, uids[cert.name])
	}
	checkSameDeployed(t, w, cert.name, slices.Collect(maps.Keys(cert.domains)), w.nodes...)
	for _, n := range w.nodes {
		if rl := reloads(t, n)[cert.name]; len(rl) == 0 || rl[len(rl)-1] != st.Serial {
			t.Errorf("node %s reloaded for serials %v, want last %s", n.name, rl, st.Serial)
		}
		checkOnlyEntries(t, n.webroot)
	}
	for _, n := range w.nodes {
		if err := n.stop(); err != nil {
			t.Errorf("node %s, stopped with SIGTERM: %v", n.name, err)
		}
	}
}

// readFile returns the content of p.
func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// webRootLeft names the first node of w whose web root still holds files,
// or is "" when none does.
func webRootLeft(w *clusterWorld) string {
	for _, n := range w.nodes {
		if fs := filesUnder(n.webroot); len(fs) > 0 {
			return fmt.Sprintf("node %s's web root still holds %v", n.name, fs)
		}
	}
	return ""
}
