package daemon

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/dcvfiles"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/pgtest"
	"github.com/dcvd/dcvd/internal/testpki"
	"github.com/dcvd/dcvd/reseller"
)

// These tests run two or three daemons in one process on one PostgreSQL
// schema and the harness's world (the sandbox, DNS, a web root served to
// the CA), under the race detector. internal/e2e runs real processes.

// clusterNode is one daemon of an in-process cluster.
type clusterNode struct {
	name      string
	d         *Daemon
	cfg       *config.Config
	webroot   string
	deployDir string
	stop      func()
}

var testSealKey = bytes.Repeat([]byte{0x5a}, 32)

// clusterNodeConfig is h's configuration as node name of a cluster: its
// own state, web root and deploy directory. Node "n1" uses the harness's
// web root, the one the CA's checks reach.
func clusterNodeConfig(t *testing.T, h *harness, name string) (*config.Config, string, string) {
	cfg := h.config(hDomains())
	cfg.Daemon.StateDir = filepath.Join(t.TempDir(), "state")
	webroot := h.webroot
	if name != "n1" {
		webroot = t.TempDir()
	}
	deployDir := filepath.Join(t.TempDir(), "deploy")
	cfg.Certificates[0].Webroots = []httpchallenge.Webroot{{Dir: webroot}}
	cfg.Certificates[0].Deploy.Dir = deployDir
	cfg.Store = config.StoreConfig{Driver: config.StoreDriverPostgres, Node: name, Lease: 2 * time.Second, EncryptionKey: testSealKey}
	return cfg, webroot, deployDir
}

// startClusterNode opens a daemon on its own connection pool to dsn and
// runs it until stop.
func startClusterNode(t *testing.T, h *harness, dsn, name string) *clusterNode {
	t.Helper()
	n := newClusterNode(t, h, dsn, name)
	n.run(t)
	return n
}

// newClusterNode opens a daemon on its own connection pool to dsn, not
// running yet.
func newClusterNode(t *testing.T, h *harness, dsn, name string) *clusterNode {
	t.Helper()
	cfg, webroot, deployDir := clusterNodeConfig(t, h, name)
	st, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d := h.daemon(cfg, func(o *Options) { o.Store = st })
	return &clusterNode{name: name, d: d, cfg: cfg, webroot: webroot, deployDir: deployDir, stop: func() {}}
}

// run runs the node's daemon until stop.
func (n *clusterNode) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.d.Run(ctx); err != nil {
			t.Errorf("node %s: Run: %v", n.name, err)
		}
	}()
	n.stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(n.stop)
}

// register records the node in the cluster, as its Run does first: from
// then on a driver waits for its validation files.
func (n *clusterNode) register(t *testing.T) {
	t.Helper()
	if err := n.d.cluster.Heartbeat(hCtx(t)); err != nil {
		t.Fatalf("node %s: heartbeat: %v", n.name, err)
	}
}

func (n *clusterNode) certPEM() []byte {
	b, _ := os.ReadFile(filepath.Join(n.deployDir, "cert.pem"))
	return b
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClusterTwoNodesOneOrder(t *testing.T) {
	dsn := pgtest.NewSchema(t)
	h := newHarness(t)
	// Two members of a cluster, then an order: both nodes are registered
	// before either runs. A node that only joins once the order has gone
	// past its validation files has none to serve (see
	// TestClusterStartingNodeWritesPendingFiles for one that joins during
	// the order).
	n1 := newClusterNode(t, h, dsn, "n1")
	n2 := newClusterNode(t, h, dsn, "n2")
	n1.register(t)
	n2.register(t)
	n1.run(t)
	n2.run(t)
	st := n1.d.Store()

	var live *store.Certificate
	waitFor(t, "a live certificate on both nodes", func() bool {
		c, err := st.Certificate(context.Background(), hCert)
		if err != nil {
			return false
		}
		live = c
		a, b := n1.certPEM(), n2.certPEM()
		return len(a) > 0 && bytes.Equal(a, b) && certs.SerialHex(testpki.ParseCert(t, string(a))) == c.Serial
	})
	if live.KeySealed == "" || live.KeyFile != "" {
		t.Fatalf("live certificate: key_file %q, sealed %t; want only a sealed key", live.KeyFile, live.KeySealed != "")
	}
	if strings.Contains(live.KeySealed, "PRIVATE KEY") {
		t.Fatal("the key is in the database in plain text")
	}
	if n := h.charges(live.UniqueID); n != 1 {
		t.Fatalf("order %s charged %d times, want 1", live.UniqueID, n)
	}
	if all := len(h.sb.Ledger()); all != 1 {
		t.Fatalf("%d charges in the ledger, want 1", all)
	}
	k1, _ := os.ReadFile(filepath.Join(n1.deployDir, "privkey.pem"))
	k2, _ := os.ReadFile(filepath.Join(n2.deployDir, "privkey.pem"))
	if len(k1) == 0 || !bytes.Equal(k1, k2) {
		t.Fatal("the two nodes deployed different keys")
	}
	// Both nodes served the validation file while pending, and removed it.
	waitFor(t, "the validation files removed on both nodes", func() bool {
		f1, _ := filepath.Glob(filepath.Join(n1.webroot, ".well-known", "pki-validation", "*"))
		f2, _ := filepath.Glob(filepath.Join(n2.webroot, ".well-known", "pki-validation", "*"))
		return len(f1) == 0 && len(f2) == 0
	})
	cs := st.(store.ClusterStore)
	acks, err := cs.FileAcks(context.Background(), live.UniqueID)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(acks, ",") != "n1,n2" {
		t.Fatalf("file acknowledgements %v, want both nodes", acks)
	}
	waitFor(t, "both nodes recording the live serial", func() bool {
		ncs, err := cs.NodeCerts(context.Background())
		if err != nil || len(ncs) != 2 {
			return false
		}
		for _, nc := range ncs {
			if nc.Serial != live.Serial || nc.Error != "" {
				return false
			}
		}
		return true
	})
	sts, err := n2.d.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 1 || sts[0].Lease == nil || len(sts[0].Nodes) != 2 {
		t.Fatalf("status %+v: want the lease and two nodes", sts)
	}
	for _, ns := range sts[0].Nodes {
		if !ns.Alive || ns.Serial != live.Serial {
			t.Errorf("status of node %s: %+v", ns.Node, ns)
		}
	}
}

// A node deploys what the database says only after checking it: a live
// certificate whose row was tampered with (another certificate, not for
// the sealed key) is refused and the error recorded.
func TestClusterRefusesTamperedLiveCertificate(t *testing.T) {
	dsn := pgtest.NewSchema(t)
	h := newHarness(t)
	n1 := startClusterNode(t, h, dsn, "n1")
	st := n1.d.Store()
	var live *store.Certificate
	waitFor(t, "a live certificate", func() bool {
		c, err := st.Certificate(context.Background(), hCert)
		live = c
		return err == nil && len(n1.certPEM()) > 0
	})
	n1.stop()

	// The row now holds the sandbox's intermediate: a real certificate,
	// but not one for the sealed key.
	ic, _ := h.sandboxIntermediate()
	forged := *live
	forged.Serial = "abcdef"
	forged.CertPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ic.Raw}))
	cs := st.(store.ClusterStore)
	l, err := cs.AcquireLease(context.Background(), hCert, "forger", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Fenced(l).PutCertificate(context.Background(), &forged); err != nil {
		t.Fatal(err)
	}
	n3 := startClusterNode(t, h, dsn, "n3")
	waitFor(t, "node n3 recording the refusal", func() bool {
		ncs, err := cs.NodeCerts(context.Background())
		if err != nil {
			return false
		}
		for _, nc := range ncs {
			if nc.Node == "n3" && strings.Contains(nc.Error, "refused") {
				return true
			}
		}
		return false
	})
	if b := n3.certPEM(); len(b) != 0 {
		t.Fatalf("node n3 deployed a refused certificate:\n%s", b)
	}
}

// Without the lease, a cluster node's writes of a certificate are refused
// before they reach the database.
func TestClusterWritesNeedTheLease(t *testing.T) {
	dsn := pgtest.NewSchema(t)
	h := newHarness(t)
	cfg, _, _ := clusterNodeConfig(t, h, "n1")
	st, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d := h.daemon(cfg, func(o *Options) { o.Store = st })
	ctx := hCtx(t)
	err = d.storeFor(hCert).PutOrder(ctx, &store.Order{UniqueID: "x", Cert: hCert, Step: store.StepNew})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("PutOrder without the lease: %v, want ErrLeaseLost", err)
	}
	if _, err := st.Order(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the order was written anyway: %v", err)
	}

	// Another node holds the lease: a reissue here is refused, naming it.
	if _, err := st.AcquireLease(ctx, hCert, "n2", time.Minute); err != nil {
		t.Fatal(err)
	}
	_, err = d.Reissue(ctx, hCert, ReissueOptions{})
	if !errors.Is(err, store.ErrLeaseHeld) || !strings.Contains(err.Error(), "n2") {
		t.Fatalf("Reissue while n2 holds the lease: %v", err)
	}
	if len(h.sb.Ledger()) != 0 {
		t.Fatal("a reissue was sent without the lease")
	}
}

// Two writes of one file at once may each create one of its directories:
// the merged record must know both, or one is never removed.
func TestMergeWrittenUnionsCreatedDirs(t *testing.T) {
	a := httpchallenge.Written{Webroot: "/w", Name: "f.txt", Content: "x", CreatedDirs: []string{".well-known"}}
	b := httpchallenge.Written{Webroot: "/w", Name: "f.txt", Content: "x", CreatedDirs: []string{".well-known/pki-validation"}}
	other := httpchallenge.Written{Webroot: "/v", Name: "f.txt", Content: "x"}
	got := dcvfiles.MergeWritten([]httpchallenge.Written{a}, []httpchallenge.Written{b, other})
	if len(got) != 2 {
		t.Fatalf("merged %+v, want two records", got)
	}
	w := got[1] // sorted by web root: /v, /w
	if w.Webroot != "/w" || strings.Join(w.CreatedDirs, ",") != ".well-known/pki-validation,.well-known" {
		t.Fatalf("merged record %+v, want both directories, deepest first", w)
	}
	if got[0].CreatedDirs != nil {
		t.Fatalf("a record that created nothing got %v", got[0].CreatedDirs)
	}
}

// pendingFileOrder is an order of hCert waiting for the CA's look at its
// validation file (step published), as its driver records it.
func pendingFileOrder(uniqueID string) *store.Order {
	const name = "pending-0123456789abcdef.txt"
	return &store.Order{UniqueID: uniqueID, Cert: hCert, Step: store.StepPublished, Instructions: []reseller.Instruction{{
		Domain: "www.example.com", Method: reseller.MethodHTTP, File: &reseller.FileInstruction{
			Scheme: "http", Host: "www.example.com", Path: reseller.PKIValidationPath + name, FileName: name,
			Content: "pending-content", URL: "http://www.example.com" + reseller.PKIValidationPath + name,
		},
	}}}
}

// A node that starts while an order waits for its validation files writes
// them, and says so, before it runs: the CA may fetch them from its web
// server at any moment, and a driver that found the node registered waits
// for them.
func TestClusterStartingNodeWritesPendingFiles(t *testing.T) {
	dsn := pgtest.NewSchema(t)
	h := newHarness(t)
	ctx := hCtx(t)
	st, err := store.OpenPostgres(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// The order's driver is another node, alive and holding the lease for
	// longer than the test: the new node only serves the files.
	l, err := st.AcquireLease(ctx, hCert, "n1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	o := pendingFileOrder("dcvd-pending-1")
	if err := st.Fenced(l).PutOrder(ctx, o); err != nil {
		t.Fatal(err)
	}

	n2 := newClusterNode(t, h, dsn, "n2")
	n2.run(t)
	select {
	case <-n2.d.Running():
	case <-ctx.Done():
		t.Fatal("node n2 did not start")
	}
	// Checked once, at once: Running means the files are written.
	f := o.Instructions[0].File
	got, err := os.ReadFile(filepath.Join(n2.webroot, ".well-known", "pki-validation", f.FileName))
	if err != nil || string(got) != f.Content {
		t.Fatalf("node n2 runs, and its web root holds %q (%v), want the pending validation file %q", got, err, f.Content)
	}
	acks, err := st.FileAcks(ctx, o.UniqueID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(acks, "n2") {
		t.Fatalf("node n2 runs, and the acknowledgements of order %s are %v, want n2's", o.UniqueID, acks)
	}
}

// The driver waits for every node alive, whether or not it acknowledged
// anything yet, at most the bound, and then fails naming the node; a node
// that stops heartbeating is waited for only until it drops out of the
// liveness window.
func TestClusterWaitFileAcks(t *testing.T) {
	dsn := pgtest.NewSchema(t)
	h := newHarness(t)
	ctx := hCtx(t)
	n1 := newClusterNode(t, h, dsn, "n1")
	n1.register(t)
	c := n1.d.cluster
	o := pendingFileOrder("dcvd-acks-1")
	ack := func(node string) {
		t.Helper()
		if err := c.Store().AckFiles(ctx, o.UniqueID, node); err != nil {
			t.Fatal(err)
		}
	}
	heartbeat := func(node, instance string) {
		t.Helper()
		if _, err := c.Store().Heartbeat(ctx, store.Node{Name: node, Instance: instance, Started: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	// waitAcks waits for the acknowledgements of o, which must succeed.
	waitAcks := func(what string) {
		t.Helper()
		if err := n1.d.files.WaitAcks(ctx, o); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	ack("n1")
	waitAcks("only node n1, which acknowledged")

	// n2 registered, and has not acknowledged: waited for, then named.
	heartbeat("n2", "i2")
	c.AckWait = 300 * time.Millisecond
	err := n1.d.files.WaitAcks(ctx, o)
	if err == nil || !strings.Contains(err.Error(), "node n2 (last heartbeat") || strings.Contains(err.Error(), "n1 (") {
		t.Fatalf("node n2 alive without acknowledging: %v, want an error naming n2 alone", err)
	}
	ack("n2")
	waitAcks("both nodes acknowledged")

	// n3 heartbeats once and is gone: waited for until its heartbeat is
	// older than the liveness window (the lease), long before the bound.
	heartbeat("n3", "i3")
	c.AckWait = time.Hour
	start := time.Now()
	waitAcks("node n3 gone")
	if took := time.Since(start); took > 10*c.LeaseDuration() {
		t.Fatalf("waited %s for a node gone, want about the lease (%s)", took, c.LeaseDuration())
	}
}
