package daemon

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/renewal"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/reseller"
)

// TestIndexMatchesStore: after every kind of write the daemon makes
// (PutCertificate, PutOrder through every step, AddAttempt of a success, a
// failure or again of the same order, PruneHistory, a write that fails),
// a config reload adding or removing certificates, a sweep's look, and a
// restart (a new daemon on the database reopened), the renewal index holds
// what a fresh build from the store holds, and every certificate's next
// look is when the store says, or sooner (at once).
//
// The sequence of operations is random from a fixed seed, logged;
// DCVD_INDEX_SEED=N reruns another.
func TestIndexMatchesStore(t *testing.T) {
	seed := uint64(20261207)
	if env := os.Getenv("DCVD_INDEX_SEED"); env != "" {
		n, err := strconv.ParseUint(env, 10, 64)
		if err != nil {
			t.Fatalf("DCVD_INDEX_SEED=%q: %v", env, err)
		}
		seed = n
	}
	t.Logf("seed %d (rerun: DCVD_INDEX_SEED=%d go test -count=1 -run TestIndexMatchesStore ./daemon/)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	ctx := t.Context()
	dir := t.TempDir()
	path := filepath.Join(dir, "dcvd.db")
	st, err := store.OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now()
	day := 24 * time.Hour

	pool := []string{"a", "b", "c", "d", "e", "f"}
	configured := map[string]bool{"a": true, "b": true, "c": true, "d": true}
	mkConfig := func() *config.Config {
		cfg := &config.Config{
			API: config.APIConfig{BaseURL: "http://127.0.0.1:9/api/v1", AccessKeyID: "test", AccessKeySecret: "test", Timeout: time.Second},
			Daemon: config.DaemonConfig{StateDir: dir, Schedule: config.DefaultSchedule, MaxConcurrent: 4,
				ExpiryAlertDays: []int{14, 7, 3, 1}},
		}
		for _, name := range pool {
			if !configured[name] {
				continue
			}
			cfg.Certificates = append(cfg.Certificates, config.CertConfig{Name: name, ServiceID: "svc-" + name, KeyType: config.KeyECDSAP256,
				Domains: map[string]reseller.Method{name + ".example.com": reseller.MethodHTTP},
				Deploy:  deploy.Spec{Dir: filepath.Join(dir, "deploy", name)}})
		}
		return cfg
	}
	start := func() *Daemon {
		d, err := New(ctx, mkConfig(), Options{Store: st})
		if err != nil {
			t.Fatal(err)
		}
		// What the first sweep does before it decides.
		if d.readBuildingIndex(ctx, d.config()) == nil {
			t.Fatal("the index was not built")
		}
		return d
	}
	d := start()
	defer func() { d.Close() }()

	// The orders: each certificate's in flight, if any, and every
	// unique_id used, by certificate.
	steps := []store.Step{store.StepNew, store.StepSubmitted, store.StepPublishing, store.StepPublished, store.StepVisible,
		store.StepRechecked, store.StepIssued, store.StepDeployed, store.StepReloaded}
	active := map[string]*store.Order{}
	attempted := map[string][]string{} // the unique_ids of each certificate's attempts
	seen := map[string]int{}
	next := 0
	uid := func(cert string) string {
		next++
		return fmt.Sprintf("u%04d-%s", next, cert)
	}

	ops := []struct {
		name string
		do   func(w store.Store, cert string) error
	}{
		{"PutCertificate", func(w store.Store, cert string) error {
			issued := now.Add(-time.Duration(rng.IntN(100*24)) * time.Hour)
			names := []string{cert + ".example.com"}
			if rng.IntN(5) == 0 {
				names = []string{"other.example.com"} // the configured names changed
			}
			return w.PutCertificate(ctx, &store.Certificate{Name: cert, Serial: fmt.Sprintf("%x", rng.Uint64()), Names: names,
				NotBefore: issued, NotAfter: issued.Add(90 * day), CertPEM: "pem", ChainPEM: "chain",
				UniqueID: "live-" + cert, DeployedAt: issued})
		}},
		{"PutOrder", func(w store.Store, cert string) error {
			o := active[cert]
			switch {
			case o == nil:
				o = &store.Order{UniqueID: uid(cert), Cert: cert, ServiceID: "svc-" + cert, Step: store.StepNew}
			case rng.IntN(8) == 0:
				o.Step = []store.Step{store.StepDone, store.StepFailed}[rng.IntN(2)]
			default:
				i := slices.Index(steps, o.Step)
				o.Step = steps[min(i+1+rng.IntN(2), len(steps)-1)]
			}
			seen[string(o.Step)]++
			if err := w.PutOrder(ctx, o); err != nil {
				return err
			}
			active[cert] = o
			if o.Step.Terminal() {
				delete(active, cert)
			}
			return nil
		}},
		{"AddAttempt", func(w store.Store, cert string) error {
			u := uid(cert)
			if n := len(attempted[cert]); n > 0 && rng.IntN(4) == 0 {
				u = attempted[cert][rng.IntN(n)] // again: replaces it in its place
			} else {
				attempted[cert] = append(attempted[cert], u)
			}
			outcome := store.StepDone
			if rng.IntN(2) == 0 {
				outcome = store.StepFailed
			}
			seen["attempt-"+string(outcome)]++
			finished := now.Add(-time.Duration(rng.IntN(48*60)) * time.Minute)
			return w.AddAttempt(ctx, store.Attempt{Cert: cert, UniqueID: u, Started: finished.Add(-time.Minute), Finished: finished,
				Outcome: outcome, Cost: 1})
		}},
		{"AddAttempt of another certificate's order (refused)", func(w store.Store, cert string) error {
			for _, other := range pool {
				// Its newest, which PruneHistory keeps.
				if other != cert && len(attempted[other]) > 0 {
					err := w.AddAttempt(ctx, store.Attempt{Cert: cert, UniqueID: attempted[other][len(attempted[other])-1], Outcome: store.StepFailed, Finished: now})
					if err == nil {
						return fmt.Errorf("an attempt of %s was recorded for %s", other, cert)
					}
					return nil
				}
			}
			return nil
		}},
		{"PutCertificate failing (cancelled)", func(w store.Store, cert string) error {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_ = w.PutCertificate(cctx, &store.Certificate{Name: cert, Serial: "dead", NotBefore: now, NotAfter: now.Add(day)})
			return nil
		}},
		{"PruneHistory", func(w store.Store, cert string) error {
			_, err := w.PruneHistory(ctx, store.HistoryPolicy{Before: now.Add(-time.Duration(rng.IntN(48)) * time.Hour),
				PerCertificate: rng.IntN(30), Limit: 1 + rng.IntN(40)})
			return err
		}},
		{"reload (a certificate added or removed)", func(w store.Store, cert string) error {
			configured[cert] = !configured[cert]
			return d.Reload(mkConfig())
		}},
		{"a sweep's look", func(w store.Store, cert string) error {
			for _, l := range d.index.Due(d.now(), nil) {
				if _, _, err := d.indexedRenewal(ctx, l); err != nil {
					return err
				}
			}
			return nil
		}},
		{"restart", func(w store.Store, cert string) error {
			if rng.IntN(2) == 0 {
				// A stop: the daemon and its store closed.
				d.Close()
				if err := st.Close(); err != nil {
					return err
				}
			} else {
				// A crash: nothing closed; the database is opened
				// again beside the handle left behind.
				old := st
				t.Cleanup(func() { old.Close() })
			}
			var err error
			if st, err = store.OpenSQLite(ctx, path); err != nil {
				return err
			}
			d = start()
			return nil
		}},
	}
	weights := []int{6, 6, 8, 1, 1, 2, 1, 3, 1}
	pick := func() int {
		total := 0
		for _, w := range weights {
			total += w
		}
		n := rng.IntN(total)
		for i, w := range weights {
			if n < w {
				return i
			}
			n -= w
		}
		return 0
	}
	const rounds = 1000
	for round := range rounds {
		op := ops[pick()]
		cert := pool[rng.IntN(len(pool))]
		if err := op.do(d.writeStore(), cert); err != nil {
			t.Fatalf("seed %d, round %d: %s of %s: %v", seed, round, op.name, cert, err)
		}
		if why := indexDiff(ctx, d); why != "" {
			t.Fatalf("seed %d, round %d, after %s of %s: %s", seed, round, op.name, cert, why)
		}
	}
	for _, s := range append(steps, store.StepDone, store.StepFailed) {
		if seen[string(s)] == 0 {
			t.Errorf("no order was put at step %s: the sequence is too short", s)
		}
	}
	if seen["attempt-done"] == 0 || seen["attempt-failed"] == 0 {
		t.Errorf("attempts: %v", seen)
	}
}

// indexDiff says how the daemon's index differs from one built afresh
// from its store; "" when it does not.
func indexDiff(ctx context.Context, d *Daemon) string {
	summaries, err := d.store.CertificateSummaries(ctx)
	if err != nil {
		return err.Error()
	}
	history, err := d.store.RecentAttempts(ctx, store.KeptAttempts)
	if err != nil {
		return err.Error()
	}
	fresh := renewal.NewIndex()
	fresh.Build(d.config(), summaries, history)
	names := append(d.index.Names(), fresh.Names()...)
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		gl, gh, gk, _ := d.index.Inputs(name)
		wl, wh, wk, _ := fresh.Inputs(name)
		if !sameSummary(gl, wl) {
			return fmt.Sprintf("%s: the index holds the live certificate %+v, the store %+v", name, gl, wl)
		}
		if !slices.EqualFunc(gh, wh, sameAttempt) {
			return fmt.Sprintf("%s: the index holds the history %+v, the store %+v", name, gh, wh)
		}
		// A key is "at once" (a look pending) or the store's.
		if !gk.IsZero() && !gk.Equal(wk) {
			return fmt.Sprintf("%s: the index would look at %v, the store says %v", name, gk, wk)
		}
	}
	return ""
}

func sameSummary(a, b *store.Certificate) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Name == b.Name && a.Serial == b.Serial && slices.Equal(a.Names, b.Names) && a.NotBefore.Equal(b.NotBefore) &&
		a.NotAfter.Equal(b.NotAfter) && a.KeyFile == b.KeyFile && a.UniqueID == b.UniqueID && a.DeployedAt.Equal(b.DeployedAt) &&
		a.CertPEM == "" && a.ChainPEM == "" && a.KeySealed == ""
}

func sameAttempt(a, b store.Attempt) bool {
	return a.Cert == b.Cert && a.UniqueID == b.UniqueID && a.Started.Equal(b.Started) && a.Finished.Equal(b.Finished) &&
		a.Outcome == b.Outcome && a.Cost == b.Cost && a.Serial == b.Serial && a.Error == b.Error
}

// TestSweepAllocsIndependentOfCertificates: once the index is built (by the
// first sweep), a sweep where nothing is due allocates the same small
// amount at 1,000 and at 10,000 certificates: it reads and allocates
// nothing per certificate.
func TestSweepAllocsIndependentOfCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds 11,000 certificates")
	}
	ctx := t.Context()
	leafPEM, chainPEM := benchLeafPEM(t, false)
	allocs := map[int]float64{}
	for _, n := range []int{1_000, 10_000} {
		d := benchSweepDaemon(t, ctx, n, leafPEM, chainPEM, false, 0)
		var wg sync.WaitGroup
		d.sweep(ctx, &wg) // the first: builds the index
		allocs[n] = testing.AllocsPerRun(10, func() { d.sweep(ctx, &wg) })
		wg.Wait()
		if active, err := d.store.ActiveOrders(ctx); err != nil || len(active) != 0 {
			t.Fatalf("n=%d: the sweep started orders (%d, %v): the certificates were meant to be not due", n, len(active), err)
		}
	}
	t.Logf("allocations per sweep: %v", allocs)
	if allocs[1_000] != allocs[10_000] {
		t.Errorf("a sweep allocates %v times at 1,000 certificates, %v at 10,000: want the same", allocs[1_000], allocs[10_000])
	}
	if allocs[10_000] > 100 {
		t.Errorf("a sweep allocates %v times: want a small constant", allocs[10_000])
	}
}

// TestWritesGoThroughTheIndex: no write of the daemon's code bypasses the
// indexing store (writeStore, storeFor): a write through d.store would
// leave the renewal index behind the store.
func TestWritesGoThroughTheIndex(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	write := regexp.MustCompile(`d\.store\.(PutCertificate|AddAttempt|PutOrder|PruneHistory)\(`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range write.FindAll(src, -1) {
			t.Errorf("%s: %s writes past the renewal index: use d.writeStore() or d.storeFor(cert)", f, m)
		}
	}
}
