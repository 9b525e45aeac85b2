package daemon

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/metrics"
	"github.com/dcvd/dcvd/daemon/renewal"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/internal/testpki"
	"github.com/dcvd/dcvd/reseller"
)

// BenchmarkSweep measures the renewal check of a running daemon when
// nothing is due: one Daemon.sweep over 1,000, 10,000 and 100,000
// configured certificates, each with a live certificate in the SQLite store
// valid for 80 more days (due in about 50), and 0 to 2 successful attempts
// in its history, as after renewals (10k-long-history: 50 each, as a
// year of daily failures would leave, of which the check reads 20). It is
// the work of every tick of daemon.schedule after the first: the daemon's
// first sweep (made before the timing starts) reads the state of every
// certificate and builds the renewal index from it; every later sweep
// reads the orders in flight and looks only at the certificates the index
// finds due, here none (10k-metrics: with daemon.metrics_listen set;
// 10k-decide-only: sweepOnce, without FreeOSMemory). 10k-build times that first sweep: read
// the state, build the index, decide with NextRenewal, publish the
// metrics, check the expiry alerts, then give the memory of the batched
// read back to the system. The goal is 10 ms at 100,000 (it was 100 ms at
// 10,000 before the index).
//
//	go test -run '^$' -bench BenchmarkSweep -benchtime 20x ./daemon/
//
// DCVD_SWEEP_BENCH_N=N replaces the sizes by N alone, named as the others
// (Nk when N is a multiple of 1,000).
//
// The store is seeded through PutCertificate and AddAttempt (with
// synchronous=OFF while seeding only: 100,000 fsyncs would take minutes
// and measure nothing of the sweep). One real leaf is stored in every row,
// under the row's own names: NextRenewal reads the row's dates and names,
// never the PEM.
//
// The daemon's whole process (start, config, state, one sweep, exit) is
// measured by bench/sweep and bench/certbot.sh.
func BenchmarkSweep(b *testing.B) {
	leafPEM, chainPEM := benchLeafPEM(b, true)
	type sweepCase struct {
		name    string
		n       int
		metrics bool
		// decideOnly leaves out the memory given back after the check
		// (debug.FreeOSMemory in sweep), to tell the two costs apart.
		decideOnly bool
		// history is the attempts of every certificate; 0 means 0 to 2.
		history int
		// build times the first sweep, which builds the index.
		build bool
	}
	cases := []sweepCase{
		{"1k", 1_000, false, false, 0, false},
		{"10k", 10_000, false, false, 0, false},
		{"100k", 100_000, false, false, 0, false},
		// With daemon.metrics_listen set: the sweep also publishes every
		// certificate's series.
		{"10k-metrics", 10_000, true, false, 0, false},
		{"10k-decide-only", 10_000, false, true, 0, false},
		// Histories longer than the check reads (renewalHistory).
		{"10k-long-history", 10_000, false, false, 50, false},
		// The first sweep of a daemon: every certificate read, the
		// index built.
		{"10k-build", 10_000, false, false, 0, true},
	}
	// bench/certbot.sh measures the size it compares with certbot.
	if env := os.Getenv("DCVD_SWEEP_BENCH_N"); env != "" {
		n, err := strconv.Atoi(env)
		if err != nil || n < 1 {
			b.Fatalf("DCVD_SWEEP_BENCH_N=%q: want a positive number of certificates", env)
		}
		name := strconv.Itoa(n)
		if n%1000 == 0 {
			name = strconv.Itoa(n/1000) + "k"
		}
		cases = []sweepCase{{name, n, false, false, 0, false}}
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			d := benchSweepDaemon(b, ctx, c.n, leafPEM, chainPEM, c.metrics, c.history)
			var wg sync.WaitGroup
			if !c.build {
				d.sweep(ctx, &wg) // the daemon's first: builds the index
			}
			cpu0 := benchCPUTime(b)
			sweep := d.sweep
			if c.decideOnly {
				sweep = func(ctx context.Context, wg *sync.WaitGroup) { d.sweepOnce(ctx, wg) }
			}
			for b.Loop() {
				if c.build {
					d.index = renewal.NewIndex()
					d.writes = indexingStore{Store: d.store, idx: d.index}
				}
				sweep(ctx, &wg)
			}
			b.StopTimer()
			cpu := benchCPUTime(b) - cpu0
			wg.Wait()
			// The measure is void if anything was found due.
			if active, err := d.store.ActiveOrders(ctx); err != nil || len(active) != 0 {
				b.Fatalf("the sweep started orders (%d, %v): the certificates were meant to be not due", len(active), err)
			}
			d.mu.Lock()
			driving := len(d.driving)
			d.mu.Unlock()
			if driving != 0 {
				b.Fatalf("%d drivers started: the certificates were meant to be not due", driving)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(c.n), "ns/cert")
			// On a busy machine the wall time stretches; the CPU time of
			// the process (the collector's included) much less.
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

// benchCPUTime is the CPU time (user and system) the process has used.
func benchCPUTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchLeafPEM is a self-signed ECDSA certificate issued 10 days ago and
// valid for 90 days, and a chain: for the benchmarks one of the size of a
// real one (an RSA-2048 certificate), so that the rows are as large as real
// ones; for the tests, where size does not matter, a quicker ECDSA one.
func benchLeafPEM(b testing.TB, realSize bool) (leafPEM, chainPEM string) {
	b.Helper()
	key := testpki.Key(b)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0x5eed),
		Subject:      pkix.Name{CommonName: "bench.example.com"},
		DNSNames:     []string{"bench.example.com"},
		NotBefore:    now.Add(-10 * 24 * time.Hour),
		NotAfter:     now.Add(80 * 24 * time.Hour),
	}
	leaf := testpki.Sign(b, tmpl, tmpl, key.Public(), key)
	caKey := key
	if realSize {
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			b.Fatal(err)
		}
		caKey = rsaKey
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(0xca), Subject: pkix.Name{CommonName: "Bench Intermediate CA", Organization: []string{"dcvd bench"}},
		NotBefore: now.Add(-365 * 24 * time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	return testpki.PEM(leaf), testpki.PEM(testpki.Sign(b, ca, ca, caKey.Public(), caKey))
}

// benchSweepDaemon is a daemon with n configured certificates, each with a
// live certificate not due and 0 to 2 successful attempts in its history
// (history attempts each when history > 0, the histories interleaved as
// renewals make them), in a new SQLite store, with the default expiry
// alerts, logging nowhere; with metrics if asked.
func benchSweepDaemon(b testing.TB, ctx context.Context, n int, leafPEM, chainPEM string, withMetrics bool, history int) *Daemon {
	b.Helper()
	dir := b.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "dcvd.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	if _, err := st.DB().ExecContext(ctx, `PRAGMA synchronous = OFF`); err != nil {
		b.Fatal(err)
	}
	leaf := testpki.ParseCert(b, leafPEM)
	cfg := &config.Config{
		API: config.APIConfig{BaseURL: "http://127.0.0.1:9/api/v1", AccessKeyID: "bench", AccessKeySecret: "bench", Timeout: time.Second},
		Daemon: config.DaemonConfig{
			StateDir: dir, Schedule: config.DefaultSchedule, MaxConcurrent: 4, PollInterval: 10 * time.Second,
			ExpiryAlertDays: []int{14, 7, 3, 1},
		},
		Certificates: make([]config.CertConfig, n),
	}
	for i := range n {
		name := fmt.Sprintf("cert%06d", i)
		domain := name + ".example.com"
		cfg.Certificates[i] = config.CertConfig{
			Name: name, ServiceID: fmt.Sprintf("svc%06d", i), KeyType: config.KeyECDSAP256,
			Domains: map[string]reseller.Method{domain: reseller.MethodHTTP, "www." + domain: reseller.MethodHTTP},
			Deploy:  deploy.Spec{Dir: filepath.Join(dir, "deploy", name)},
		}
		serial := fmt.Sprintf("%032x", i+1)
		live := &store.Certificate{
			Name: name, Serial: serial, Names: []string{domain, "www." + domain},
			NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, CertPEM: leafPEM, ChainPEM: chainPEM,
			KeyFile: filepath.Join(dir, "keys", name, "key.pem"), UniqueID: "u-" + name, DeployedAt: leaf.NotBefore,
		}
		if err := st.PutCertificate(ctx, live); err != nil {
			b.Fatal(err)
		}
		if history > 0 {
			continue
		}
		for k := range i % 3 {
			uid := fmt.Sprintf("u%d-%s", k, name)
			a := store.Attempt{Cert: name, UniqueID: uid, Started: leaf.NotBefore.Add(-time.Hour),
				Finished: leaf.NotBefore, Outcome: store.StepDone, Cost: 1, Serial: serial}
			if err := st.AddAttempt(ctx, a); err != nil {
				b.Fatal(err)
			}
		}
	}
	if history > 0 {
		// In SQL: 500,000 AddAttempts would take minutes.
		_, err := st.DB().ExecContext(ctx, `WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?)
			INSERT INTO attempts (cert, unique_id, started, finished, outcome, cost, serial, error)
			SELECT c.name, 'h' || k.n || '-' || c.name, ?, ?, 'done', 1, c.serial, ''
			FROM k, certificates AS c ORDER BY k.n, c.name`,
			history, sqliteTime(leaf.NotBefore.Add(-time.Hour)), sqliteTime(leaf.NotBefore))
		if err != nil {
			b.Fatal(err)
		}
	}
	if _, err := st.DB().ExecContext(ctx, `PRAGMA synchronous = FULL`); err != nil {
		b.Fatal(err)
	}
	opts := Options{Store: st}
	if withMetrics {
		opts.Metrics = metrics.New()
	}
	d, err := New(ctx, cfg, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

// TestSweepBatchedDecisions: the sweep's decisions from the state read at
// once are those of a read per certificate, for every kind of certificate:
// not due, in a failure backoff, due, with a name added, adopted from its
// deploy directory, without anything, and in cluster mode (no adoption).
func TestSweepBatchedDecisions(t *testing.T) {
	ctx := t.Context()
	leafPEM, chainPEM := benchLeafPEM(t, false)
	leaf, err := certs.ParsePEM(leafPEM)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "dcvd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now()
	day := 24 * time.Hour
	// The deploy directories of "adopt" and "adoptfailed" hold leaf; the
	// others' hold nothing.
	toAdopt := []string{"adopt", "adoptfailed"}
	for _, cert := range toAdopt {
		adoptDir := filepath.Join(dir, "deploy", cert)
		if err := os.MkdirAll(adoptDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, text := range map[string]string{"cert.pem": leafPEM, "chain.pem": chainPEM} {
			if err := os.WriteFile(filepath.Join(adoptDir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	names := []string{"bench.example.com"}
	cases := []struct {
		name    string
		extra   string // a configured name the live certificate lacks
		live    *store.Certificate
		history []store.Attempt
		due     bool
	}{
		{name: "notdue", live: &store.Certificate{Serial: "01", NotBefore: now.Add(-10 * day), NotAfter: now.Add(80 * day)},
			history: []store.Attempt{{UniqueID: "n1", Outcome: store.StepDone, Finished: now.Add(-10 * day)}}},
		{name: "backoff", live: &store.Certificate{Serial: "02", NotBefore: now.Add(-85 * day), NotAfter: now.Add(5 * day)},
			history: []store.Attempt{{UniqueID: "b2", Outcome: store.StepFailed, Finished: now.Add(-time.Minute)},
				{UniqueID: "b1", Outcome: store.StepFailed, Finished: now.Add(-2 * time.Hour)}}},
		{name: "due", live: &store.Certificate{Serial: "03", NotBefore: now.Add(-85 * day), NotAfter: now.Add(5 * day)}, due: true},
		{name: "renamed", extra: "new.example.com", live: &store.Certificate{Serial: "04", NotBefore: now.Add(-day), NotAfter: now.Add(89 * day)}, due: true},
		{name: "adopt"},
		// Adopted although a failure's backoff runs: the backoff is
		// after the renewal point of the adopted certificate.
		{name: "adoptfailed", history: []store.Attempt{{UniqueID: "af1", Outcome: store.StepFailed, Finished: now.Add(-time.Minute)}}},
		{name: "nothing", due: true},
		{name: "failedfresh", history: []store.Attempt{{UniqueID: "f1", Outcome: store.StepFailed, Finished: now.Add(-time.Minute)}}},
	}
	cfg := &config.Config{
		API:    config.APIConfig{BaseURL: "http://127.0.0.1:9/api/v1", AccessKeyID: "test", AccessKeySecret: "test", Timeout: time.Second},
		Daemon: config.DaemonConfig{StateDir: dir, Schedule: config.DefaultSchedule, MaxConcurrent: 4, ExpiryAlertDays: []int{14, 7, 3, 1}},
	}
	for _, c := range cases {
		cc := config.CertConfig{Name: c.name, ServiceID: "svc-" + c.name, KeyType: config.KeyECDSAP256,
			Domains: map[string]reseller.Method{names[0]: reseller.MethodHTTP},
			Deploy:  deploy.Spec{Dir: filepath.Join(dir, "deploy", c.name)}}
		if c.extra != "" {
			cc.Domains[c.extra] = reseller.MethodHTTP
		}
		cfg.Certificates = append(cfg.Certificates, cc)
		if c.live != nil {
			c.live.Name, c.live.Names, c.live.CertPEM = c.name, names, leafPEM
			if err := st.PutCertificate(ctx, c.live); err != nil {
				t.Fatal(err)
			}
		}
		for i := len(c.history) - 1; i >= 0; i-- { // oldest first
			a := c.history[i]
			a.Cert, a.Started = c.name, a.Finished.Add(-time.Minute)
			if err := st.AddAttempt(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
	}
	d, err := New(ctx, cfg, Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	for _, adopt := range []bool{false, true} { // cluster mode's first look, then a single daemon's
		state := d.readSweepState(ctx)
		if state == nil {
			t.Fatal("readSweepState failed on a sound store")
		}
		for i, c := range cases {
			cc := &cfg.Certificates[i]
			got, gotLive, err := d.sweepRenewal(ctx, state, cc, adopt)
			if err != nil {
				t.Fatalf("adopt=%v: sweepRenewal(%s): %v", adopt, c.name, err)
			}
			// The reference: a read of this certificate alone (after
			// sweepRenewal, so that an adoption it made shows).
			want, wantLive, err := d.renewal(ctx, cc, false)
			if err != nil {
				t.Fatal(err)
			}
			serial := func(c *store.Certificate) string {
				if c == nil {
					return "none"
				}
				return c.Serial
			}
			due := !got.At.After(time.Now())
			// "Due now" is the time of each call.
			sameAt := got.At.Equal(want.At) || due && !want.At.After(time.Now())
			if !sameAt || got.Reason != want.Reason || serial(gotLive) != serial(wantLive) {
				t.Errorf("adopt=%v, %s: batched %+v (live %s), per certificate %+v (live %s)",
					adopt, c.name, got, serial(gotLive), want, serial(wantLive))
			}
			// Without adopting, the deploy directory's certificate is
			// not seen: due, to be decided again under the lease.
			if wantDue := c.due || c.name == "adopt" && !adopt; due != wantDue {
				t.Errorf("adopt=%v, %s: due = %v (%+v), want %v", adopt, c.name, due, got, wantDue)
			}
		}
		for _, cert := range toAdopt {
			adopted, err := st.Certificate(ctx, cert)
			switch {
			case !adopt && err == nil:
				t.Errorf("%s: the certificate in the deploy directory was adopted without adopt (a cluster's first look)", cert)
			case adopt && err != nil:
				t.Errorf("%s: the certificate in the deploy directory was not adopted: %v", cert, err)
			case adopt && (adopted.Serial != certs.SerialHex(leaf[0]) || adopted.ChainPEM != chainPEM):
				t.Errorf("%s: adopted %+v, want the deploy directory's certificate", cert, adopted)
			}
		}
	}
}

// TestSweepRereadsAfterADriverEnds: a certificate whose driver ended after
// the sweep read the state is decided on a fresh read, not on the state
// its driver has since replaced.
func TestSweepRereadsAfterADriverEnds(t *testing.T) {
	ctx := t.Context()
	leafPEM, _ := benchLeafPEM(t, false)
	d := benchSweepDaemonT(t, leafPEM)
	cc := &d.config().Certificates[0]
	if !d.claim(cc.Name) {
		t.Fatal("claim failed")
	}
	state := d.readSweepState(ctx)
	// The driver installs a new certificate and ends.
	renewed := &store.Certificate{Name: cc.Name, Serial: "f00d", Names: cc.Names(), NotBefore: time.Now(),
		NotAfter: time.Now().Add(90 * 24 * time.Hour), CertPEM: leafPEM}
	if err := d.store.PutCertificate(ctx, renewed); err != nil {
		t.Fatal(err)
	}
	d.release(cc.Name)
	_, live, err := d.sweepRenewal(ctx, state, cc, true)
	if err != nil {
		t.Fatal(err)
	}
	if live == nil || live.Serial != "f00d" {
		t.Errorf("decided on %+v, want the certificate the driver installed (serial f00d)", live)
	}
}

// TestSweepFallsBackWhenTheBatchFails: a row that cannot be read holds up
// only its own certificate: the sweep reads the others one by one.
func TestSweepFallsBackWhenTheBatchFails(t *testing.T) {
	for _, table := range []string{"certificates", "attempts"} {
		t.Run(table, func(t *testing.T) {
			ctx := t.Context()
			leafPEM, _ := benchLeafPEM(t, false)
			d := benchSweepDaemonT(t, leafPEM)
			sq := d.store.(*store.SQLiteStore)
			if err := sq.AddAttempt(ctx, store.Attempt{Cert: "broken", UniqueID: "x", Outcome: store.StepDone}); err != nil {
				t.Fatal(err)
			}
			column := map[string]string{"certificates": "not_after", "attempts": "finished"}[table]
			field := map[string]string{"certificates": "name", "attempts": "cert"}[table]
			if _, err := sq.DB().ExecContext(ctx, `UPDATE `+table+` SET `+column+` = 'garbage' WHERE `+field+` = 'broken'`); err != nil {
				t.Fatal(err)
			}
			if state := d.readSweepState(ctx); state != nil {
				t.Fatalf("readSweepState read a store with a broken row in %s", table)
			}
			for i := range d.config().Certificates {
				cc := &d.config().Certificates[i]
				r, live, err := d.sweepRenewal(ctx, nil, cc, true)
				if cc.Name == "broken" {
					if err == nil {
						t.Errorf("the broken certificate was decided: %+v", r)
					}
					continue
				}
				if err != nil || live == nil || !time.Now().Before(r.At) {
					t.Errorf("%s: %+v, %v, %v; want not due from its live certificate", cc.Name, r, live, err)
				}
			}
			// The whole sweep goes on past the broken certificate and
			// starts nothing.
			var wg sync.WaitGroup
			d.sweep(ctx, &wg)
			wg.Wait()
			if active, err := d.store.ActiveOrders(ctx); err != nil || len(active) != 0 {
				t.Errorf("the sweep started %d orders (%v)", len(active), err)
			}
		})
	}
}

// benchSweepDaemonT is a daemon of three certificates, "broken" among
// them, each with a live certificate not due.
func benchSweepDaemonT(t *testing.T, leafPEM string) *Daemon {
	t.Helper()
	ctx := t.Context()
	dir := t.TempDir()
	st, err := store.OpenSQLite(ctx, filepath.Join(dir, "dcvd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := &config.Config{
		API:    config.APIConfig{BaseURL: "http://127.0.0.1:9/api/v1", AccessKeyID: "test", AccessKeySecret: "test", Timeout: time.Second},
		Daemon: config.DaemonConfig{StateDir: dir, Schedule: config.DefaultSchedule, MaxConcurrent: 4},
	}
	now := time.Now()
	for _, name := range []string{"alpha", "broken", "omega"} {
		cc := config.CertConfig{Name: name, ServiceID: "svc-" + name, KeyType: config.KeyECDSAP256,
			Domains: map[string]reseller.Method{name + ".example.com": reseller.MethodHTTP},
			Deploy:  deploy.Spec{Dir: filepath.Join(dir, "deploy", name)}}
		cfg.Certificates = append(cfg.Certificates, cc)
		live := &store.Certificate{Name: name, Serial: "0" + name[:1], Names: cc.Names(), NotBefore: now.Add(-24 * time.Hour),
			NotAfter: now.Add(80 * 24 * time.Hour), CertPEM: leafPEM}
		if err := st.PutCertificate(ctx, live); err != nil {
			t.Fatal(err)
		}
	}
	d, err := New(ctx, cfg, Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// BenchmarkHousekeep measures a housekeeping pass with nothing to delete,
// as almost every hourly pass is: 10,000 certificates, each with its live
// and previous generations (two done orders and their key files) and 0 to
// 2 attempts (10k-long-history: 50 attempts each, under the default
// retention and count, of which nothing goes either).
//
//	go test -run '^$' -bench BenchmarkHousekeep -benchtime 5x ./daemon/
func BenchmarkHousekeep(b *testing.B) {
	leafPEM, chainPEM := benchLeafPEM(b, true)
	for _, c := range []struct {
		name    string
		n       int
		history int
	}{
		{"10k", 10_000, 0},
		{"10k-long-history", 10_000, 50},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			d := benchSweepDaemon(b, ctx, c.n, leafPEM, chainPEM, false, c.history)
			st := d.store.(*store.SQLiteStore)
			keys := filepath.Join(d.config().Daemon.StateDir, "keys")
			for i, cc := range d.config().Certificates {
				dir := filepath.Join(keys, cc.Name)
				if err := os.MkdirAll(dir, 0o700); err != nil {
					b.Fatal(err)
				}
				for k, uid := range []string{"u-" + cc.Name, "p-" + cc.Name} {
					path := filepath.Join(dir, uid+".key")
					if err := os.WriteFile(path, []byte("key"), 0o600); err != nil {
						b.Fatal(err)
					}
					at := sqliteTime(time.Now().Add(-time.Duration(k+1+i%7) * 24 * time.Hour))
					if _, err := st.DB().ExecContext(ctx, `INSERT INTO orders
						(unique_id, cert, service_id, step, callback_token, data, created, updated)
						VALUES (?, ?, ?, 'done', NULL, json_object('key_file', ?), ?, ?)`,
						uid, cc.Name, cc.ServiceID, path, at, at); err != nil {
						b.Fatal(err)
					}
				}
			}
			cpu0 := benchCPUTime(b)
			for b.Loop() {
				d.housekeep(ctx)
			}
			b.StopTimer()
			b.ReportMetric(float64((benchCPUTime(b)-cpu0).Nanoseconds())/float64(b.N)/1e6, "cpu-ms/op")
			// The measure is void if anything was deleted.
			if files := d.listKeyFiles(); len(files) != 2*c.n {
				b.Fatalf("%d key files left of %d", len(files), 2*c.n)
			}
			if p, err := d.pruneHistory(ctx); err != nil || p != (store.Pruned{}) {
				b.Fatalf("pruneHistory: %+v, %v; want nothing to do", p, err)
			}
			var attempts int
			if err := st.DB().QueryRowContext(ctx, `SELECT count(*) FROM attempts`).Scan(&attempts); err != nil ||
				c.history > 0 && attempts != c.n*c.history {
				b.Fatalf("%d attempts left (%v)", attempts, err)
			}
		})
	}
}

// sqliteTime formats t as the SQLite store's time columns hold it.
func sqliteTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000000Z")
}
