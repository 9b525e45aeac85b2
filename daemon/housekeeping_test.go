package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/pgtest"
	"github.com/dcvd/dcvd/reseller"
)

// After several renewals, a failed order and an order in flight, only the
// live certificate's key, the previous generation's (the one the deploy
// directory keeps in previous/) and the key of the order in flight stay;
// with reuse_key, the one key they all share.
func TestHousekeepKeys(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("reuse_key=%v", reuse), func(t *testing.T) {
			h := newHarness(t)
			ctx := hCtx(t)
			cfg := h.config(hDomains())
			cfg.Certificates[0].ReuseKey = reuse
			d := h.daemon(cfg, nil)
			cc := &cfg.Certificates[0]

			const renewals = 4
			var done []*store.Order
			for range renewals {
				done = append(done, h.issue(ctx, d))
			}
			// A reissue the CA refuses (no such service) fails the order.
			cc.ServiceID = "no-such-service"
			failed, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true})
			cc.ServiceID = hService
			if err == nil || failed == nil || failed.Step != store.StepFailed {
				t.Fatalf("the refused reissue: %+v, %v; want a failed order", failed, err)
			}
			inFlight, err := d.newOrder(ctx, cc, false)
			if err != nil {
				t.Fatal(err)
			}
			if !reuse && len(h.keyFiles()) != renewals+2 {
				t.Fatalf("%d key files before housekeeping, want %d: %v", len(h.keyFiles()), renewals+2, h.keyFiles())
			}

			live, prev := done[renewals-1], done[renewals-2]
			d.housekeep(ctx)
			want := []string{live.KeyFile, prev.KeyFile, inFlight.KeyFile}
			if got := h.keyFiles(); !sameFiles(got, want) {
				t.Errorf("key files after housekeeping: %v\nwant the live, previous and in-flight ones: %v", got, want)
			}
			// The previous generation is the one in deploy.dir/previous/.
			prevKey, err := os.ReadFile(filepath.Join(h.deployDir, "previous", "privkey.pem"))
			if err != nil {
				t.Fatal(err)
			}
			if key, err := os.ReadFile(prev.KeyFile); err != nil || !bytes.Equal(key, prevKey) {
				t.Errorf("the key kept as the previous generation's is not previous/privkey.pem (%v)", err)
			}
			if _, err := os.Stat(failed.KeyFile); !reuse && !os.IsNotExist(err) {
				t.Errorf("the failed order's key %s is still there (%v)", failed.KeyFile, err)
			}

			// The order in flight goes live: the generation before the
			// previous one goes.
			if _, err := d.Reissue(ctx, hCert, ReissueOptions{Wait: true}); err != nil {
				t.Fatal(err)
			}
			d.housekeep(ctx)
			want = []string{inFlight.KeyFile, live.KeyFile}
			if got := h.keyFiles(); !sameFiles(got, want) {
				t.Errorf("key files after the next renewal: %v\nwant %v", got, want)
			}
			// Housekeeping again finds nothing to do.
			d.housekeep(ctx)
			if got := h.keyFiles(); !sameFiles(got, want) {
				t.Errorf("key files after housekeeping again: %v\nwant %v", got, want)
			}
		})
	}
}

// sameFiles reports whether got and want name the same files, whatever
// the order and repetitions.
func sameFiles(got, want []string) bool {
	set := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Clean(p))
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(set(got), set(want))
}

// A key is deleted only when its order is recorded, ended, and wrote that
// very file, and nothing needs it: the live certificate, an order in
// flight or the last two generations, by path or, for a state directory
// moved since, by name.
func TestRemoveEndedKeys(t *testing.T) {
	h := newHarness(t)
	d, dir := h.daemonWithKeyDir()
	ctx := context.Background()
	file := func(uid string) string { return filepath.Join(dir, uid+".key") }
	day := 24 * time.Hour
	at := time.Now().Add(-100 * day)
	put := func(o *store.Order) {
		t.Helper()
		o.Cert = hCert
		if o.Step == "" {
			o.Step = store.StepDone
		}
		if err := d.store.PutOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
		at = at.Add(day) // the next order is newer
	}
	sq := d.store.(*store.SQLiteStore)
	sq.SetClock(func() time.Time { return at })

	keys := map[string]bool{} // the files, and whether they must stay
	write := func(uid string, stays bool) {
		t.Helper()
		if err := os.WriteFile(file(uid), []byte("key "+uid), 0o600); err != nil {
			t.Fatal(err)
		}
		keys[uid] = stays
	}
	// Oldest first.
	write("failed", false)
	put(&store.Order{UniqueID: "failed", Step: store.StepFailed, KeyFile: file("failed")})
	write("superseded", false)
	put(&store.Order{UniqueID: "superseded", KeyFile: file("superseded")})
	// A superseded generation whose key the previous one reused.
	write("reused", true)
	put(&store.Order{UniqueID: "reused", KeyFile: file("reused")})
	put(&store.Order{UniqueID: "previous", KeyFile: file("reused")})
	// The live generation, recorded under the state directory's old
	// path: its file is known by its name.
	write("live", true)
	put(&store.Order{UniqueID: "live", KeyFile: "/old/state/keys/shop/live.key"})
	if err := d.store.PutCertificate(ctx, &store.Certificate{Name: hCert, Serial: "1", KeyFile: "/old/state/keys/shop/live.key",
		UniqueID: "live"}); err != nil {
		t.Fatal(err)
	}
	write("inflight", true)
	put(&store.Order{UniqueID: "inflight", Step: store.StepPublished, KeyFile: file("inflight")})
	// Failed, but its key was another file (reused): this file is not
	// provably its.
	write("mismatch", true)
	put(&store.Order{UniqueID: "mismatch", Step: store.StepFailed, KeyFile: file("live")})
	// Failed, but recorded as another certificate's.
	write("blog-order", true)
	if err := d.store.PutOrder(ctx, &store.Order{UniqueID: "blog-order", Cert: "blog", Step: store.StepFailed,
		KeyFile: file("blog-order")}); err != nil {
		t.Fatal(err)
	}
	// Never recorded: removeOrphanKeys' business, at start only.
	write("unrecorded", true)

	n, err := d.removeEndedKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	removed := 0
	for uid, stays := range keys {
		_, err := os.Stat(file(uid))
		switch {
		case stays && err != nil:
			t.Errorf("%s: removed (%v)", uid, err)
		case !stays && !os.IsNotExist(err):
			t.Errorf("%s: still there (%v)", uid, err)
		case !stays:
			removed++
		}
	}
	if n != removed {
		t.Errorf("removeEndedKeys says %d removed, %d were", n, removed)
	}
}

// housekeep prunes the history as [daemon] history_retention and
// history_per_certificate say, their defaults when unset, and logs what it
// deleted.
func TestHousekeepHistory(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name      string
		retention time.Duration
		per       int
		n         int // attempts and failed orders, one a day, the newest a day old
		wantKept  int // attempts
		wantOrd   int // orders
	}{
		{"defaults keep a year of a hundred", 0, 0, 120, 100, 100},
		{"defaults, old history", 0, 0, 500, 100, 100},
		{"thirty days", 30 * day, 0, 60, 29, 29},
		{"ten per certificate", 0, 10, 60, store.KeptAttempts, 10},
		{"nothing to delete", 30 * day, 100, 15, 15, 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config(hDomains())
			cfg.Daemon.HistoryRetention, cfg.Daemon.HistoryPerCertificate = tt.retention, tt.per
			core, logs := observer.New(zap.DebugLevel)
			d := h.daemon(cfg, func(o *Options) { o.Log = zap.New(core) })
			ctx := hCtx(t)
			sq := d.store.(*store.SQLiteStore)
			now := h.clock.Now()
			for i := range tt.n {
				age := time.Duration(tt.n-i)*day + time.Hour
				a := store.Attempt{Cert: hCert, UniqueID: fmt.Sprintf("u%04d", i), Started: now.Add(-age - time.Minute),
					Finished: now.Add(-age), Outcome: store.StepFailed, Error: "refused"}
				if err := sq.AddAttempt(ctx, a); err != nil {
					t.Fatal(err)
				}
				sq.SetClock(func() time.Time { return now.Add(-age) })
				if err := sq.PutOrder(ctx, &store.Order{UniqueID: a.UniqueID, Cert: hCert, Step: store.StepFailed}); err != nil {
					t.Fatal(err)
				}
			}
			d.housekeep(ctx)
			h2, err := sq.Attempts(ctx, hCert, 0)
			if err != nil {
				t.Fatal(err)
			}
			orders := 0
			for i := range tt.n {
				if _, err := sq.Order(ctx, fmt.Sprintf("u%04d", i)); err == nil {
					orders++
				}
			}
			if len(h2) != tt.wantKept || orders != tt.wantOrd {
				t.Errorf("kept %d attempts and %d orders, want %d and %d", len(h2), orders, tt.wantKept, tt.wantOrd)
			}
			entries := logs.FilterMessageSnippet("housekeeping").All()
			if len(entries) != 1 {
				t.Fatalf("%d housekeeping log lines, want 1: %v", len(entries), entries)
			}
			fields := entries[0].ContextMap()
			deleted := tt.n-tt.wantKept > 0
			if got := entries[0].Level == zap.InfoLevel; got != deleted {
				t.Errorf("logged at %v (%s), want info only when something was deleted", entries[0].Level, entries[0].Message)
			}
			if deleted && (fields["attempts"] != int64(tt.n-tt.wantKept) || fields["orders"] != int64(tt.n-tt.wantOrd)) {
				t.Errorf("logged %v, want %d attempts and %d orders deleted", fields, tt.n-tt.wantKept, tt.n-tt.wantOrd)
			}
		})
	}
}

// housekeepIfDue runs a pass at most every housekeepingInterval.
func TestHousekeepIfDue(t *testing.T) {
	h := newHarness(t)
	cfg := h.config(hDomains())
	d := h.daemon(cfg, nil)
	ctx := hCtx(t)
	dir := filepath.Join(cfg.Daemon.StateDir, "keys", hCert)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	failedKey := func(uid string) string {
		t.Helper()
		p := filepath.Join(dir, uid+".key")
		if err := os.WriteFile(p, []byte("key"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.store.PutOrder(ctx, &store.Order{UniqueID: uid, Cert: hCert, Step: store.StepFailed, KeyFile: p}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var last time.Time
	first := failedKey("f1")
	d.housekeepIfDue(ctx, &last)
	if _, err := os.Stat(first); !os.IsNotExist(err) || last.IsZero() {
		t.Fatalf("the first pass did not run: %v, last %v", err, last)
	}
	second := failedKey("f2")
	d.housekeepIfDue(ctx, &last)
	if _, err := os.Stat(second); err != nil {
		t.Fatalf("a pass ran again at once: %v", err)
	}
	last = last.Add(-housekeepingInterval)
	d.housekeepIfDue(ctx, &last)
	if _, err := os.Stat(second); !os.IsNotExist(err) {
		t.Errorf("no pass after the interval: %v", err)
	}
}

// Two certificates share a web root: whichever order writes its file
// first creates the validation directories, whichever ends first removes
// its file while the other's is there. Once both have cleaned up (also
// from the config alone, as after a crash before the files were recorded),
// no directory dcvd made is left; the admin's stay.
func TestCleanupSharedWebroot(t *testing.T) {
	tests := []struct {
		name         string
		creatorFirst bool // the creator's order ends first
		lost         bool // the second's written files were never recorded
		adminDirs    bool
	}{
		{name: "creator ends first", creatorFirst: true},
		{name: "other ends first"},
		{name: "creator ends first, the other's record lost", creatorFirst: true, lost: true},
		{name: "admin's directories", creatorFirst: true, adminDirs: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config(hDomains())
			blog := cfg.Certificates[0]
			blog.Name, blog.Domains = "blog", map[string]reseller.Method{"blog.example.com": reseller.MethodHTTP}
			cfg.Certificates = append(cfg.Certificates, blog)
			d := h.daemon(cfg, nil)
			ctx := hCtx(t)
			pki := filepath.Join(h.webroot, ".well-known", "pki-validation")
			if tt.adminDirs {
				if err := os.MkdirAll(pki, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			order := func(cc *config.CertConfig, file string) *store.Order {
				f := reseller.FileInstruction{Scheme: "http", Host: cc.Names()[0], Path: reseller.PKIValidationPath + file,
					FileName: file, Content: "token of " + cc.Name, URL: "http://" + cc.Names()[0] + reseller.PKIValidationPath + file}
				o := &store.Order{UniqueID: "u-" + cc.Name, Cert: cc.Name, Step: store.StepPublishing,
					Instructions: []reseller.Instruction{{Domain: cc.Names()[0], Method: reseller.MethodHTTP, File: &f}}}
				if err := d.writeFiles(ctx, cc, o); err != nil {
					t.Fatal(err)
				}
				return o
			}
			creator := order(&cfg.Certificates[0], "AAAA1111.txt")
			other := order(&cfg.Certificates[1], "BBBB2222.txt")
			first, second := creator, other
			firstCC, secondCC := &cfg.Certificates[0], &cfg.Certificates[1]
			if !tt.creatorFirst {
				first, second, firstCC, secondCC = other, creator, secondCC, firstCC
			}
			if tt.lost {
				second.Files = nil
			}
			if err := d.cleanup(ctx, firstCC, first); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(pki, second.Instructions[0].File.FileName)); err != nil {
				t.Fatalf("the second order's file is gone with the first's cleanup: %v", err)
			}
			if err := d.cleanup(ctx, secondCC, second); err != nil {
				t.Fatal(err)
			}
			_, err := os.Stat(filepath.Join(h.webroot, ".well-known"))
			switch {
			case tt.adminDirs && err != nil:
				t.Errorf("the admin's directories were removed: %v", err)
			case tt.adminDirs:
				if entries, err := os.ReadDir(pki); err != nil || len(entries) != 0 {
					t.Errorf("the admin's pki-validation holds %v (%v), want nothing", entries, err)
				}
			case !os.IsNotExist(err):
				left, _ := filepath.Glob(filepath.Join(h.webroot, ".well-known", "*", "*"))
				t.Errorf("the web root keeps .well-known (%v), holding %v", err, left)
			}
			if _, err := os.Stat(filepath.Join(pki, httpchallenge.CreatedMarker)); !os.IsNotExist(err) {
				t.Errorf("the marker is left behind: %v", err)
			}
		})
	}
}

// In a cluster every node housekeeps the shared history at once: the
// history is pruned once (the costs carried once), ended orders go with
// their sealed keys, and no key file is touched (keys are sealed in the
// database there).
func TestHousekeepCluster(t *testing.T) {
	dsn := pgtest.NewSchema(t)
	h := newHarness(t)
	n1, n2 := newClusterNode(t, h, dsn, "n1"), newClusterNode(t, h, dsn, "n2")
	ctx := hCtx(t)
	st := n1.d.store
	day := 24 * time.Hour
	now := h.clock.Now()
	const n = 60
	var cost float64
	for i := range n {
		age := time.Duration(n-i) * day
		a := store.Attempt{Cert: hCert, UniqueID: fmt.Sprintf("u%03d", i), Started: now.Add(-age - time.Minute),
			Finished: now.Add(-age), Outcome: store.StepFailed, Cost: 1.5, Error: "refused"}
		if err := st.AddAttempt(ctx, a); err != nil {
			t.Fatal(err)
		}
		cost += a.Cost
		if err := st.PutOrder(ctx, &store.Order{UniqueID: a.UniqueID, Cert: hCert, Step: store.StepFailed, KeySealed: "v1:sealed"}); err != nil {
			t.Fatal(err)
		}
	}
	// A key file left from before cluster mode, of an ended order.
	dir := filepath.Join(n1.cfg.Daemon.StateDir, "keys", hCert)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "u000.key")
	if err := os.WriteFile(keyFile, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, nd := range []*clusterNode{n1, n2} {
		nd.cfg.Daemon.HistoryPerCertificate = 25
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		n2.d.housekeep(ctx)
	}()
	n1.d.housekeep(ctx)
	<-done
	// The orders were written "now": only the count applies to them.
	if got, err := st.Attempts(ctx, hCert, 0); err != nil || len(got) != 25 {
		t.Errorf("%d attempts kept (%v), want 25", len(got), err)
	}
	kept := 0
	for i := range n {
		if _, err := st.Order(ctx, fmt.Sprintf("u%03d", i)); err == nil {
			kept++
		}
	}
	if kept != 25 {
		t.Errorf("%d orders kept, want 25", kept)
	}
	if got, err := st.TotalCost(ctx, hCert); err != nil || got != cost {
		t.Errorf("TotalCost = %v, %v; want %v", got, err, cost)
	}
	if _, err := os.Stat(keyFile); err != nil {
		t.Errorf("a cluster node removed a key file: %v", err)
	}
}
