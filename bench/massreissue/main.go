// Command massreissue measures the incident-response case of dcvd: a CA
// revokes certificates en masse and every one must be reissued within a
// deadline. It reissues N certificates end to end, through the code that
// "dcvd reissue --all --wait" runs (package reissueall driving the
// daemon's Reissue: reissue → plan → publish → visible → update-dcv →
// poll/callback → verify → deploy → reload → cleanup), against the sandbox
// CA and an in-process authoritative DNS server, with [api]
// max_requests_per_second set, and prints the figures: wall time,
// certificates per second, peak RSS, the charges in the CA's ledger (which
// must be exactly N), the API requests made and the time the rate limit
// alone imposes, and whether the goal (10,000 in ≤ 5 min, ≤ 256 MB) is met.
//
// The sandbox and the DNS server run in this process, so the peak RSS is
// an upper bound for dcvd's own.
//
// Run it from the repository root with bench/mass-reissue.sh, or:
//
//	go run ./bench/massreissue -n 1000
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"

	"github.com/dcvd/dcvd/daemon/config"

	"github.com/dcvd/dcvd/daemon/deploy"

	// Registered on http.DefaultServeMux, served only with -pprof-addr.
	_ "net/http/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/reissueall"
	"github.com/dcvd/dcvd/internal/memdns"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
	"github.com/dcvd/dcvd/sandbox"
)

// The goal of issue 8 for this benchmark.
const (
	goalCerts    = 10000
	goalWall     = 5 * time.Minute
	goalRSSBytes = 256 << 20
)

// settings are the benchmark's knobs; each flag defaults to an environment
// variable, so that the wrapper script and a reader can set them alike.
type settings struct {
	n           int
	zones       int
	rate        float64
	concurrency int
	poll        time.Duration
	callbacks   bool
	reload      string
	dir         string
	keep        bool
	timeout     time.Duration
	progress    time.Duration
	logLevel    string
	cpuProfile  string
	memProfile  string
	pprofAddr   string
	blockRate   int
	jsonOut     string
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func parseSettings(args []string) (settings, error) {
	var s settings
	fs := flag.NewFlagSet("massreissue", flag.ContinueOnError)
	n := fs.String("n", envOr("DCVD_BENCH_CERTS", "10000"), "certificates to reissue [DCVD_BENCH_CERTS]")
	zones := fs.String("zones", envOr("DCVD_BENCH_ZONES", "4"), "DNS zones the certificates' names are spread over [DCVD_BENCH_ZONES]")
	rate := fs.String("rate", envOr("DCVD_BENCH_RATE", "200"), "[api] max_requests_per_second; 0: no limit [DCVD_BENCH_RATE]")
	conc := fs.String("concurrency", envOr("DCVD_BENCH_CONCURRENCY", "250"), "[daemon] max_concurrent: certificates (and steps) at work at once [DCVD_BENCH_CONCURRENCY]")
	poll := fs.String("poll", envOr("DCVD_BENCH_POLL", "10s"), "[daemon] poll_interval (the first detail poll comes after min(poll, 2s)) [DCVD_BENCH_POLL]")
	cb := fs.String("callbacks", envOr("DCVD_BENCH_CALLBACKS", "true"), "serve the daemon's callback handler and set callback_url, as a running daemon does [DCVD_BENCH_CALLBACKS]")
	fs.StringVar(&s.reload, "reload", envOr("DCVD_BENCH_RELOAD", "true"), "each certificate's reload command, run with /bin/sh -c [DCVD_BENCH_RELOAD]")
	fs.StringVar(&s.dir, "dir", envOr("DCVD_BENCH_DIR", ""), "working directory (default: a temporary one, removed afterwards) [DCVD_BENCH_DIR]")
	fs.BoolVar(&s.keep, "keep", false, "keep the working directory")
	timeout := fs.String("timeout", envOr("DCVD_BENCH_TIMEOUT", "30m"), "give up after this long [DCVD_BENCH_TIMEOUT]")
	progress := fs.String("progress", envOr("DCVD_BENCH_PROGRESS", "10s"), "interval of the progress summary lines [DCVD_BENCH_PROGRESS]")
	fs.StringVar(&s.logLevel, "log-level", envOr("DCVD_BENCH_LOG_LEVEL", "warn"), "the daemon's log level (to stderr)")
	fs.StringVar(&s.cpuProfile, "cpuprofile", envOr("DCVD_BENCH_CPUPROFILE", ""), "write a CPU profile of the reissue phase here")
	fs.StringVar(&s.memProfile, "memprofile", envOr("DCVD_BENCH_MEMPROFILE", ""), "write a heap profile at the end here")
	fs.StringVar(&s.pprofAddr, "pprof-addr", envOr("DCVD_BENCH_PPROF_ADDR", ""), "serve net/http/pprof on this host:port while the benchmark runs (goroutine, block and mutex profiles of a live run)")
	fs.IntVar(&s.blockRate, "block-rate", 0, "with -pprof-addr: runtime.SetBlockProfileRate and SetMutexProfileFraction (0: off)")
	fs.StringVar(&s.jsonOut, "json", envOr("DCVD_BENCH_JSON", ""), "also write the figures as JSON here")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	var err error
	if s.n, err = strconv.Atoi(*n); err != nil || s.n < 1 {
		return s, fmt.Errorf("-n %q: want a positive number of certificates", *n)
	}
	if s.zones, err = strconv.Atoi(*zones); err != nil || s.zones < 1 {
		return s, fmt.Errorf("-zones %q: want a positive number", *zones)
	}
	if s.rate, err = strconv.ParseFloat(*rate, 64); err != nil || s.rate < 0 {
		return s, fmt.Errorf("-rate %q: want requests per second, 0 or more", *rate)
	}
	if s.concurrency, err = strconv.Atoi(*conc); err != nil || s.concurrency < 1 || s.concurrency > 1000 {
		return s, fmt.Errorf("-concurrency %q: want 1 to 1000 (daemon.max_concurrent's range)", *conc)
	}
	if s.poll, err = time.ParseDuration(*poll); err != nil || s.poll <= 0 {
		return s, fmt.Errorf("-poll %q: want a positive duration", *poll)
	}
	if s.callbacks, err = strconv.ParseBool(*cb); err != nil {
		return s, fmt.Errorf("-callbacks %q: want true or false", *cb)
	}
	if s.timeout, err = time.ParseDuration(*timeout); err != nil || s.timeout <= 0 {
		return s, fmt.Errorf("-timeout %q: want a positive duration", *timeout)
	}
	if s.progress, err = time.ParseDuration(*progress); err != nil || s.progress <= 0 {
		return s, fmt.Errorf("-progress %q: want a positive duration", *progress)
	}
	return s, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := parseSettings(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "massreissue:", err)
			os.Exit(2)
		}
		return
	}
	res, err := bench(ctx, s, os.Stderr)
	if res != nil {
		res.print(os.Stdout)
		if s.jsonOut != "" {
			if werr := res.writeJSON(s.jsonOut); werr != nil {
				fmt.Fprintln(os.Stderr, "massreissue:", werr)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "massreissue:", err)
		os.Exit(1)
	}
}

// result is what one run measured.
type result struct {
	Date        string  `json:"date"`
	Certs       int     `json:"certificates"`
	Names       int     `json:"names_per_certificate"`
	Zones       int     `json:"zones"`
	Rate        float64 `json:"max_requests_per_second"`
	Concurrency int     `json:"max_concurrent"`
	Poll        string  `json:"poll_interval"`
	Callbacks   bool    `json:"callbacks"`
	CPUs        int     `json:"cpus"`

	SetupSeconds float64 `json:"setup_seconds"`
	WallSeconds  float64 `json:"wall_seconds"`
	CertsPerSec  float64 `json:"certificates_per_second"`
	Succeeded    int     `json:"succeeded"`
	Failed       int     `json:"failed"`
	NotStarted   int     `json:"not_started"`
	PeakRSSBytes int64   `json:"peak_rss_bytes"`
	CPUSeconds   float64 `json:"cpu_seconds"`

	Charges      int            `json:"charges"`
	ChargedTwice int            `json:"unique_ids_charged_more_than_once"`
	Requests     int64          `json:"api_requests"`
	Connections  int64          `json:"api_connections"`
	ByPath       map[string]int `json:"api_requests_by_path"`
	Callbacks2xx int64          `json:"callbacks_answered"`
	// RateFloorSeconds is the least time the rate limit allows for the
	// requests made; RateFloorMinSeconds for the fewest possible (three a
	// certificate: reissue, update-dcv, detail).
	RateFloorSeconds    float64 `json:"rate_floor_seconds"`
	RateFloorMinSeconds float64 `json:"rate_floor_min_seconds"`

	GoalWallMet bool `json:"goal_wall_met"`
	GoalRSSMet  bool `json:"goal_rss_met"`
}

func (r *result) print(w io.Writer) {
	fmt.Fprintf(w, "\n== mass reissue: %d certificates (%d names each, %d zone(s)), max_requests_per_second=%s, max_concurrent=%d, poll_interval=%s, callbacks=%t, %d CPUs, %s\n",
		r.Certs, r.Names, r.Zones, rateText(r.Rate), r.Concurrency, r.Poll, r.Callbacks, r.CPUs, r.Date)
	fmt.Fprintf(w, "setup (sandbox services, daemon):   %.1f s\n", r.SetupSeconds)
	fmt.Fprintf(w, "wall time (reissue --all --wait):   %.1f s\n", r.WallSeconds)
	fmt.Fprintf(w, "throughput:                         %.1f certificates/s\n", r.CertsPerSec)
	fmt.Fprintf(w, "succeeded / failed / not started:   %d / %d / %d\n", r.Succeeded, r.Failed, r.NotStarted)
	fmt.Fprintf(w, "peak RSS (whole process):           %.1f MB (sandbox and DNS server included: an upper bound for dcvd)\n", float64(r.PeakRSSBytes)/(1<<20))
	fmt.Fprintf(w, "CPU time (user+system):             %.1f s (%.0f%% of %d CPUs over the wall time)\n", r.CPUSeconds,
		100*r.CPUSeconds/max(r.WallSeconds, 1e-9)/float64(r.CPUs), r.CPUs)
	fmt.Fprintf(w, "ledger charges:                     %d (want exactly %d; unique_ids charged twice: %d)\n", r.Charges, r.Certs, r.ChargedTwice)
	paths := make([]string, 0, len(r.ByPath))
	for p := range r.ByPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var parts []string
	for _, p := range paths {
		parts = append(parts, fmt.Sprintf("%s %d", p, r.ByPath[p]))
	}
	fmt.Fprintf(w, "API requests:                       %d (%.2f per certificate: %s), over %d connections\n",
		r.Requests, float64(r.Requests)/float64(r.Certs), strings.Join(parts, ", "), r.Connections)
	if r.Callbacks {
		fmt.Fprintf(w, "callbacks answered:                 %d\n", r.Callbacks2xx)
	}
	if r.Rate > 0 {
		fmt.Fprintf(w, "time the rate limit alone imposes:  %.1f s for the requests made (%.1f s for 3 per certificate); %.0f%% of the wall time\n",
			r.RateFloorSeconds, r.RateFloorMinSeconds, 100*r.RateFloorSeconds/max(r.WallSeconds, 1e-9))
	}
	scaled := ""
	if r.Certs != goalCerts && r.CertsPerSec > 0 {
		scaled = fmt.Sprintf(" (at this rate %d certificates would take %.0f s)", goalCerts, goalCerts/r.CertsPerSec)
	}
	fmt.Fprintf(w, "goal wall ≤ %s for %d:            %s%s\n", goalWall, goalCerts, metText(r.GoalWallMet, r.Certs == goalCerts), scaled)
	fmt.Fprintf(w, "goal peak RSS ≤ 256 MB:             %s\n", metText(r.GoalRSSMet, true))
}

func rateText(r float64) string {
	if r == 0 {
		return "unlimited"
	}
	return strconv.FormatFloat(r, 'f', -1, 64)
}

func metText(met, applies bool) string {
	switch {
	case !applies && met:
		return "on track"
	case !applies:
		return "off track"
	case met:
		return "MET"
	}
	return "MISSED"
}

func (r *result) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// counter counts the requests an http.Handler serves, by path.
type counter struct {
	h     http.Handler
	total atomic.Int64
	ok    atomic.Int64
	conns atomic.Int64 // connections accepted
	mu    sync.Mutex
	by    map[string]int
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.total.Add(1)
	c.mu.Lock()
	c.by[r.URL.Path]++
	c.mu.Unlock()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	c.h.ServeHTTP(sw, r)
	if sw.status/100 == 2 {
		c.ok.Add(1)
	}
}

func (c *counter) byPath() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.by))
	for k, v := range c.by {
		out[k] = v
	}
	return out
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// serve serves h on a free port of 127.0.0.1 until the returned stop;
// accepted, when set, counts the connections accepted.
func serve(h http.Handler, accepted *atomic.Int64) (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if accepted != nil {
		srv.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				accepted.Add(1)
			}
		}
	}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}

// certName and the names of certificate i: an apex and its wildcard, which
// share one DCV record, in zone z.
func certName(i int) string { return fmt.Sprintf("c%05d", i) }

func zoneName(z int) string { return fmt.Sprintf("zone%d.bench.test", z) }

func certDomains(i, zones int) []string {
	apex := certName(i) + "." + zoneName(i%zones)
	return []string{apex, "*." + apex}
}

func bench(ctx context.Context, s settings, logw io.Writer) (*result, error) {
	setupStart := time.Now()
	dir := s.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "dcvd-massreissue-")
		if err != nil {
			return nil, err
		}
		dir = d
		if !s.keep {
			defer os.RemoveAll(dir)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if s.pprofAddr != "" {
		if s.blockRate > 0 {
			runtime.SetBlockProfileRate(s.blockRate)
			runtime.SetMutexProfileFraction(s.blockRate)
		}
		ln, err := net.Listen("tcp", s.pprofAddr)
		if err != nil {
			return nil, fmt.Errorf("-pprof-addr: %w", err)
		}
		srv := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		fmt.Fprintf(logw, "massreissue: pprof on http://%s/debug/pprof/\n", ln.Addr())
	}
	level, err := zapcore.ParseLevel(s.logLevel)
	if err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	ec := zap.NewDevelopmentEncoderConfig()
	ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(ec), zapcore.AddSync(logw), level))

	// The admin's DNS: one authoritative server for every zone.
	zones := make([]string, s.zones)
	for z := range zones {
		zones[z] = zoneName(z)
	}
	dnsSrv, err := memdns.Start("127.0.0.1:0", zones...)
	if err != nil {
		return nil, err
	}
	defer dnsSrv.Close()

	// The CA: one service per certificate, its names already paid for so
	// that the balance is not what runs out.
	services := make([]sandbox.Service, s.n)
	product := sandbox.DefaultProducts()[0]
	for i := range services {
		services[i] = sandbox.Service{ID: "svc-" + certName(i), ProductID: product.ID, Domains: certDomains(i, s.zones)}
	}
	sb, err := sandbox.New(sandbox.Config{
		// Ephemeral: the sandbox would otherwise rewrite its whole state
		// on every request, and the benchmark would measure that.
		StateDir: filepath.Join(dir, "sandbox"), Ephemeral: true, DNSServer: dnsSrv.Addr(), CheckInterval: -1,
		Products: []sandbox.Product{product}, Services: services,
		Logger: log.Named("ca").WithOptions(zap.IncreaseLevel(zapcore.WarnLevel)),
	})
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	sb.Start(ctx)
	api := &counter{h: sb.Handler(), by: map[string]int{}}
	apiAddr, stopAPI, err := serve(api, &api.conns)
	if err != nil {
		return nil, err
	}
	defer stopAPI()
	keyID, secret := sb.AccessKey()

	// dcvd: the configuration a file would give, the DNS providers the
	// demo uses (in-process writes to the server above, propagation
	// checked against it over the network).
	cfg := &config.Config{
		API: config.APIConfig{BaseURL: "http://" + apiAddr + "/api/v1", AccessKeyID: keyID, AccessKeySecret: secret,
			Timeout: reseller.DefaultTimeout, MaxRequestsPerSecond: s.rate},
		Daemon: config.DaemonConfig{
			StateDir: filepath.Join(dir, "dcvd"), Schedule: config.DefaultSchedule, MaxConcurrent: s.concurrency,
			PollInterval: s.poll, LogFormat: "console", LogLevel: s.logLevel,
		},
	}
	dnsByName := map[string]*providers.DNS{}
	for z, zone := range zones {
		name := fmt.Sprintf("zone%d", z)
		dnsByName[name] = providers.NewWith(name, dnsSrv, zone, providers.Propagation{
			Nameservers: []string{dnsSrv.Addr()}, Interval: 50 * time.Millisecond, Timeout: time.Minute,
		})
	}
	names := make([]string, s.n)
	for i := range names {
		names[i] = certName(i)
		domains := map[string]reseller.Method{}
		for _, d := range certDomains(i, s.zones) {
			domains[d] = reseller.MethodDNS
		}
		cfg.Certificates = append(cfg.Certificates, config.CertConfig{
			Name: names[i], ServiceID: "svc-" + names[i], KeyType: config.KeyECDSAP256, DNS: fmt.Sprintf("zone%d", i%s.zones),
			Domains: domains,
			Deploy: deploy.Spec{Dir: filepath.Join(dir, "deploy", names[i]), Reload: s.reload,
				Mode: deploy.DefaultMode, KeyMode: deploy.DefaultKeyMode, ReloadTimeout: deploy.DefaultReloadTimeout},
		})
	}
	var (
		d         *daemon.Daemon
		callbacks *counter
	)
	if s.callbacks {
		// The handler needs the daemon, and the daemon the URL: the
		// listener comes first.
		var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { d.CallbackHandler().ServeHTTP(w, r) })
		callbacks = &counter{h: h, by: map[string]int{}}
		cbAddr, stopCB, err := serve(callbacks, nil)
		if err != nil {
			return nil, err
		}
		defer stopCB()
		cfg.Daemon.CallbackURL = "http://" + cbAddr
	}
	d, err = daemon.New(ctx, cfg, daemon.Options{Log: log.Named("dcvd"), Roots: sb.RootPool(), DNS: dnsByName, Version: "bench"})
	if err != nil {
		return nil, err
	}
	defer d.Close()

	res := &result{
		Date: time.Now().UTC().Format(time.RFC3339), Certs: s.n, Names: 2, Zones: s.zones, Rate: s.rate,
		Concurrency: s.concurrency, Poll: s.poll.String(), Callbacks: s.callbacks, CPUs: runtime.NumCPU(),
		SetupSeconds: time.Since(setupStart).Seconds(),
	}
	fmt.Fprintf(logw, "massreissue: %d certificates ready in %s (working directory %s); reissuing them all\n",
		s.n, time.Since(setupStart).Round(time.Millisecond), dir)

	if s.cpuProfile != "" {
		f, err := os.Create(s.cpuProfile)
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)

	// What "dcvd reissue --all --wait" does without a running daemon.
	runCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	start := time.Now()
	sum := reissueall.Run(runCtx, names, reissueall.InProcess(d, daemon.ReissueOptions{Wait: true}), reissueall.Options{
		Concurrency: s.concurrency, Wait: true, Every: s.progress, Progress: &summaryOnly{w: logw},
	})
	wall := time.Since(start)

	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	res.WallSeconds = wall.Seconds()
	res.Succeeded, res.Failed, res.NotStarted = sum.Succeeded, len(sum.Failed), sum.NotStarted
	res.CertsPerSec = float64(sum.Succeeded) / wall.Seconds()
	res.PeakRSSBytes = ru.Maxrss * 1024 // kilobytes on Linux
	res.CPUSeconds = cpuSeconds(ru) - cpuSeconds(ru0)
	res.Requests, res.ByPath, res.Connections = api.total.Load(), api.byPath(), api.conns.Load()
	if callbacks != nil {
		res.Callbacks2xx = callbacks.ok.Load()
	}
	perUID := map[string]int{}
	for _, c := range sb.Ledger() {
		if c.Op == "reissue" {
			res.Charges++
			perUID[c.UniqueID]++
		}
	}
	for _, n := range perUID {
		if n > 1 {
			res.ChargedTwice++
		}
	}
	if s.rate > 0 {
		res.RateFloorSeconds = float64(res.Requests-1) / s.rate
		res.RateFloorMinSeconds = float64(3*s.n-1) / s.rate
	}
	perCert := wall.Seconds() / float64(max(sum.Succeeded, 1))
	res.GoalWallMet = sum.OK() && time.Duration(perCert*goalCerts*float64(time.Second)) <= goalWall
	res.GoalRSSMet = res.PeakRSSBytes <= goalRSSBytes

	if s.memProfile != "" {
		f, err := os.Create(s.memProfile)
		if err != nil {
			return res, err
		}
		runtime.GC()
		err = pprof.WriteHeapProfile(f)
		f.Close()
		if err != nil {
			return res, err
		}
	}
	for i, r := range sum.Failed {
		if i == 10 {
			fmt.Fprintf(logw, "massreissue: and %d more failures\n", len(sum.Failed)-i)
			break
		}
		fmt.Fprintf(logw, "massreissue: %s failed: %v\n", r.Name, r.Err)
	}
	var errs []error
	if err := sum.Err(); err != nil {
		errs = append(errs, err)
	}
	if res.Charges != s.n || res.ChargedTwice > 0 {
		errs = append(errs, fmt.Errorf("the ledger holds %d reissue charges (%d unique_ids more than once), want exactly %d", res.Charges, res.ChargedTwice, s.n))
	}
	return res, errors.Join(errs...)
}

func cpuSeconds(ru syscall.Rusage) float64 {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// summaryOnly passes on the progress summary lines and the failures, not
// the line of every certificate that ends: ten thousand of those would
// bury the figures.
type summaryOnly struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *summaryOnly) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "progress:") || strings.Contains(line, ": FAILED after ") {
			if _, err := fmt.Fprintln(s.w, "massreissue: "+line); err != nil {
				return 0, err
			}
		}
	}
	return len(p), nil
}
