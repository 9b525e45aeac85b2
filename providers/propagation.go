package providers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

const (
	// queryTimeout bounds one DNS exchange; a server slower than this is
	// treated as not answering, and the next round asks it again.
	queryTimeout = 5 * time.Second
	// ednsSize is the EDNS0 buffer size of the DNS flag day 2020: large
	// enough for any CNAME answer, small enough to avoid IP fragmentation.
	ednsSize = 1232
	// maxParallelQueries bounds the queries of one propagation round, so that
	// a zone with many nameservers and records does not flood them.
	maxParallelQueries = 16
	// defaultDNSPort is the port of discovered nameservers.
	defaultDNSPort = 53
	// resolvConf is where the system's resolvers are read from.
	resolvConf = "/etc/resolv.conf"
)

// The pauses of a Wait. The goal is that the CA is asked to look within
// 500 ms of the record being visible on the last nameserver, at any point
// of the wait; a record that turns up just after a round is seen one pause
// later, so the pause must be well under that, leaving room for the
// round's own queries and what follows (the HTTP self-check, one commit,
// the update-dcv call). A round costs one small UDP query per (nameserver,
// record) still lagging: a server that has answered a record is never
// asked for it again. Most providers publish within seconds to a minute
// (Route 53 documents 60 seconds), so the first two minutes poll every
// 250 ms (at most 480 queries per record and server); past that the
// provider is a slow one, and the pauses grow from Interval but never
// beyond SteadyInterval, 400 ms: 2.5 queries a second per lagging server
// and record, 1,200 in the rest of a 10-minute wait, where the old backoff
// to 10 s saved queries at the price of noticing a record up to 10 s late.
const (
	// DefaultPropagationFastInterval is Propagation.FastInterval's default.
	DefaultPropagationFastInterval = 250 * time.Millisecond
	// DefaultPropagationFastPhase is Propagation.FastPhase's default.
	DefaultPropagationFastPhase = 2 * time.Minute
	// DefaultPropagationSteadyInterval is Propagation.SteadyInterval's
	// default.
	DefaultPropagationSteadyInterval = 400 * time.Millisecond
)

// Propagation says how dcvd checks that published records are visible: it
// asks every authoritative nameserver of the zone directly, since the CA
// may ask any of them and a recursive resolver would only show one view
// (and cache negative answers).
//
// The zero value is usable: zero fields take their defaults.
type Propagation struct {
	// Timeout bounds one Wait; default DefaultPropagationTimeout.
	Timeout time.Duration
	// FastInterval is the pause between rounds during the first FastPhase
	// of a Wait, never more than Interval; default
	// DefaultPropagationFastInterval, or Interval when that is set above
	// DefaultPropagationInterval (polling slowed down on purpose, for
	// nameservers that limit their answers, stays slow).
	FastInterval time.Duration
	// FastPhase is how long a Wait polls every FastInterval; default
	// DefaultPropagationFastPhase, negative for none.
	FastPhase time.Duration
	// Interval is the first pause after the fast phase; the pauses grow by
	// half per round up to MaxInterval, and never beyond SteadyInterval.
	// Default DefaultPropagationInterval.
	Interval time.Duration
	// MaxInterval caps the pause between rounds; default
	// DefaultPropagationMax.
	MaxInterval time.Duration
	// SteadyInterval caps the pauses after the fast phase, so that a
	// record is noticed soon however long the wait has lasted; it is never
	// below FastInterval (polling slowed down on purpose stays slow, and
	// steady). Default DefaultPropagationSteadyInterval; negative for no
	// cap but MaxInterval (the pauses back off to it).
	SteadyInterval time.Duration
	// Nameservers, when set, are the "host:port" authoritative servers to
	// ask, and skip discovery (for split-horizon setups or hidden primaries).
	Nameservers []string
	// Resolvers are the "host:port" recursive resolvers used to discover the
	// zone's nameservers; default the nameservers of /etc/resolv.conf.
	Resolvers []string
	// Port is the port of discovered nameservers; default 53.
	Port int
	// ProgressEvery is how often a Wait reports which nameservers still
	// lag to the function set with WithProgress; default
	// DefaultProgressEvery.
	ProgressEvery time.Duration
}

// DefaultProgressEvery is Propagation.ProgressEvery's default: often
// enough that an admin watching a wait of many minutes sees it is alive
// and which server holds it up, rarely enough not to flood the log.
const DefaultProgressEvery = 15 * time.Second

// Progress is what a Wait reports while it lasts.
type Progress struct {
	// Zone is the zone waited on (FQDN with trailing dot).
	Zone string
	// Elapsed is the time since the Wait began.
	Elapsed time.Duration
	// Servers and Records are how many nameservers are asked and how many
	// distinct records each must answer.
	Servers, Records int
	// Queries is how many queries the Wait has sent to the nameservers so
	// far: one per lagging (server, record) and round.
	Queries int
	// Lagging are the nameservers that do not answer every record yet,
	// each with its last answer, as "host:port: answered NXDOMAIN for
	// NAME", sorted.
	Lagging []string
}

type progressKey struct{}

// WithProgress returns a context whose propagation Waits call report,
// every ProgressEvery, with the nameservers that still lag. The context
// carries it (rather than the Propagation) so that whoever runs the wait
// decides where progress goes: the daemon's log, dcvd dns test's steps.
func WithProgress(ctx context.Context, report func(Progress)) context.Context {
	return context.WithValue(ctx, progressKey{}, report)
}

func progressOf(ctx context.Context) func(Progress) {
	f, _ := ctx.Value(progressKey{}).(func(Progress))
	return f
}

// Wait returns once every authoritative nameserver of zone answers each
// record's Name with a CNAME to its Target (case-insensitive, trailing dot
// ignored). Servers are polled in rounds, each pause counted from the
// start of the round before (see FastPhase and SteadyInterval); a server
// that has answered a record correctly is not asked for it again. On
// timeout, or when ctx ends, the error names each lagging server and
// record with the server's last answer; when ctx ended, it wraps ctx's
// error.
func (p Propagation) Wait(ctx context.Context, zone string, records []Record) error {
	zone = canonicalFQDN(zone)
	checks, err := uniqueChecks(records)
	if err != nil {
		return fmt.Errorf("propagation in zone %s: %w", zone, err)
	}
	if len(checks) == 0 {
		return nil
	}
	env := waitEnvOf(ctx)
	timeout := p.timeout()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The wait's own end on its clock; ctx's deadline may be earlier.
	deadline := env.now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && env.real && d.Before(deadline) {
		deadline = d
	}

	servers, err := p.Servers(ctx, zone)
	if err != nil {
		if perr := parent.Err(); perr != nil && !errors.Is(err, perr) {
			return fmt.Errorf("propagation in zone %s: %w: %v", zone, perr, err)
		}
		return fmt.Errorf("propagation in zone %s: %w", zone, err)
	}

	type pair struct{ server, check int }
	var pending []pair
	for s := range servers {
		for c := range checks {
			pending = append(pending, pair{s, c})
		}
	}
	last := make(map[pair]string, len(pending)) // what each pending pair answered last
	sched := p.schedule()
	begun := env.now()
	report := progressOf(ctx)
	lastReport := begun
	queries := 0
	for {
		roundStart := env.now()
		answers := make([]answer, len(pending))
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxParallelQueries)
		for i, pr := range pending {
			wg.Add(1)
			go func() {
				defer wg.Done()
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					answers[i] = answer{status: "was not asked (" + ctx.Err().Error() + ")"}
					return
				}
				defer func() { <-sem }()
				answers[i] = env.ask(ctx, servers[pr.server], checks[pr.check])
				answers[i].asked = true
			}()
		}
		wg.Wait()

		// A query's connection deadline, set from ctx's, can fire before
		// ctx reports that it ended: the clock says whether the wait did.
		ended := ctx.Err() != nil || !env.now().Before(deadline)
		still := pending[:0]
		for i, pr := range pending {
			if answers[i].asked {
				queries++
			}
			if answers[i].ok {
				delete(last, pr)
				continue
			}
			// An answer cut short by the end of the wait says nothing about
			// the server; keep the one from the round before.
			if !ended || last[pr] == "" {
				last[pr] = answers[i].status
			}
			still = append(still, pr)
		}
		pending = still
		if len(pending) == 0 {
			return nil
		}
		if report != nil && !ended && env.now().Sub(lastReport) >= p.progressEvery() {
			lastReport = env.now()
			lagging := make([]string, 0, len(pending))
			for _, pr := range pending {
				lagging = append(lagging, fmt.Sprintf("%s: %s for %s", servers[pr.server], last[pr], checks[pr.check].name))
			}
			sort.Strings(lagging)
			report(Progress{Zone: zone, Elapsed: lastReport.Sub(begun), Servers: len(servers), Records: len(checks), Queries: queries, Lagging: lagging})
		}

		// From the round's start: a slow server does not add its answer
		// time to every pause.
		next := roundStart.Add(sched.next(roundStart.Sub(begun)))
		if next.After(deadline) {
			next = deadline
		}
		env.sleepUntil(ctx, next)
		if ctx.Err() != nil || !env.now().Before(deadline) {
			lagging := make([]string, 0, len(pending))
			for _, pr := range pending {
				c := checks[pr.check]
				lagging = append(lagging, fmt.Sprintf("%s %s for %s (want CNAME %s)", servers[pr.server], last[pr], c.name, c.target))
			}
			summary := strings.Join(lagging, "; ")
			if perr := parent.Err(); perr != nil {
				return fmt.Errorf("propagation of %d record(s) in zone %s not complete: %w: %s", len(checks), zone, perr, summary)
			}
			return fmt.Errorf("propagation of %d record(s) in zone %s not complete after %s: %s", len(checks), zone, timeout, summary)
		}
	}
}

// waitEnv is the clock and the query a Wait uses: the real ones, or a
// test's simulated clock and nameservers (withWaitEnv), so that waits of
// many minutes can be checked without taking them.
type waitEnv struct {
	real bool
	now  func() time.Time
	// sleepUntil returns at t, or earlier when ctx ends.
	sleepUntil func(ctx context.Context, t time.Time)
	ask        func(ctx context.Context, server string, c check) answer
}

var realWaitEnv = waitEnv{
	real: true,
	now:  time.Now,
	sleepUntil: func(ctx context.Context, t time.Time) {
		timer := time.NewTimer(time.Until(t))
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
		}
	},
	ask: askCNAME,
}

type waitEnvKey struct{}

// withWaitEnv returns a context whose Waits use env (tests only).
func withWaitEnv(ctx context.Context, env waitEnv) context.Context {
	return context.WithValue(ctx, waitEnvKey{}, env)
}

func waitEnvOf(ctx context.Context) waitEnv {
	if env, ok := ctx.Value(waitEnvKey{}).(waitEnv); ok {
		return env
	}
	return realWaitEnv
}

// pollSchedule gives the pauses between the rounds of one Wait: fast
// during the fast phase, then from first growing by half per round up to
// most, and never beyond steady.
type pollSchedule struct {
	fast, phase, first, most time.Duration
	steady                   time.Duration // 0: no cap but most
	grown                    time.Duration // the last pause after the fast phase; 0 before
}

func (p Propagation) schedule() *pollSchedule {
	return &pollSchedule{fast: p.fastInterval(), phase: p.fastPhase(), first: p.interval(), most: p.maxInterval(), steady: p.steadyInterval()}
}

// next is the pause after a round that started elapsed into the Wait.
func (s *pollSchedule) next(elapsed time.Duration) time.Duration {
	if elapsed < s.phase {
		return s.fast
	}
	if s.grown == 0 {
		s.grown = s.first
	} else {
		s.grown = min(s.grown*3/2, s.most)
	}
	if s.steady > 0 {
		return min(s.grown, s.steady)
	}
	return s.grown
}

// Servers returns the "host:port" servers Wait asks: Nameservers when set,
// else every address of every NS host of zone, found through Resolvers.
// A server listed under two NS names is asked once.
func (p Propagation) Servers(ctx context.Context, zone string) ([]string, error) {
	zone = canonicalFQDN(zone)
	port := p.port()
	if len(p.Nameservers) > 0 {
		return dedupe(withPorts(p.Nameservers, port)), nil // in the configured order
	}
	resolvers, err := resolverList(p.Resolvers)
	if err != nil {
		return nil, err
	}
	r, err := askResolvers(ctx, resolvers, zone, dns.TypeNS)
	if err != nil {
		return nil, fmt.Errorf("find nameservers of zone %s: %w", zone, err)
	}
	var hosts []string
	for _, rr := range r.Answer {
		if ns, ok := rr.(*dns.NS); ok && strings.EqualFold(ns.Hdr.Name, zone) {
			hosts = append(hosts, canonicalFQDN(ns.Ns))
		}
	}
	hosts = dedupe(hosts)
	if len(hosts) == 0 {
		return nil, fmt.Errorf("no authoritative nameserver found for zone %s: resolvers %s answered %s without NS records",
			zone, strings.Join(resolvers, ", "), dns.RcodeToString[r.Rcode])
	}

	type result struct {
		addrs []string
		err   error
	}
	results := make([]result, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i].addrs, results[i].err = hostAddrs(ctx, resolvers, h)
		}()
	}
	wg.Wait()

	var servers []string
	for _, res := range results {
		// A nameserver whose address cannot be looked up right now may still
		// be the one the CA asks: stop rather than check fewer servers.
		if res.err != nil {
			return nil, fmt.Errorf("find nameservers of zone %s: %w", zone, res.err)
		}
		for _, a := range res.addrs {
			servers = append(servers, net.JoinHostPort(a, strconv.Itoa(port)))
		}
	}
	servers = dedupe(servers)
	sort.Strings(servers)
	if len(servers) == 0 {
		return nil, fmt.Errorf("no authoritative nameserver found for zone %s: NS hosts %s have no A or AAAA records",
			zone, strings.Join(hosts, ", "))
	}
	return servers, nil
}

func (p Propagation) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultPropagationTimeout
}

func (p Propagation) progressEvery() time.Duration {
	if p.ProgressEvery > 0 {
		return p.ProgressEvery
	}
	return DefaultProgressEvery
}

func (p Propagation) interval() time.Duration {
	if p.Interval > 0 {
		return p.Interval
	}
	return DefaultPropagationInterval
}

func (p Propagation) fastInterval() time.Duration {
	interval := p.interval()
	switch {
	case p.FastInterval > 0:
		return min(p.FastInterval, interval)
	case interval > DefaultPropagationInterval:
		return interval
	}
	return min(DefaultPropagationFastInterval, interval)
}

func (p Propagation) fastPhase() time.Duration {
	switch {
	case p.FastPhase < 0:
		return 0
	case p.FastPhase == 0:
		return DefaultPropagationFastPhase
	}
	return p.FastPhase
}

// steadyInterval is the cap of the pauses after the fast phase; 0 for
// none.
func (p Propagation) steadyInterval() time.Duration {
	switch {
	case p.SteadyInterval < 0:
		return 0
	case p.SteadyInterval == 0:
		return max(DefaultPropagationSteadyInterval, p.fastInterval())
	}
	return max(p.SteadyInterval, p.fastInterval())
}

func (p Propagation) maxInterval() time.Duration {
	if p.MaxInterval > 0 {
		return max(p.MaxInterval, p.interval())
	}
	return max(DefaultPropagationMax, p.interval())
}

func (p Propagation) port() int {
	if p.Port > 0 {
		return p.Port
	}
	return defaultDNSPort
}

// check is one record to find on every server.
type check struct {
	name   string // FQDN without trailing dot, lower case
	target string // host name without trailing dot, lower case
}

// uniqueChecks turns records into the distinct (name, target) pairs to
// check. One name with two targets can never be satisfied by a CNAME.
func uniqueChecks(records []Record) ([]check, error) {
	byName := make(map[string]string, len(records))
	var out []check
	for _, r := range records {
		name := strings.ToLower(strings.TrimSuffix(r.Name, "."))
		target := strings.ToLower(strings.TrimSuffix(r.Target, "."))
		if name == "" || target == "" {
			return nil, fmt.Errorf("record %q → %q: name and target are required", r.Name, r.Target)
		}
		if prev, ok := byName[name]; ok {
			if prev != target {
				return nil, fmt.Errorf("record %s is expected to point to both %s and %s", name, prev, target)
			}
			continue
		}
		byName[name] = target
		out = append(out, check{name: name, target: target})
	}
	return out, nil
}

// answer is what one server said about one record.
type answer struct {
	ok     bool
	asked  bool   // the query was sent (counted in Progress.Queries)
	status string // for the error message: "answered NXDOMAIN", "timed out", …
}

// askCNAME asks an authoritative server for the CNAME of c.name.
func askCNAME(ctx context.Context, server string, c check) answer {
	qname := dns.Fqdn(c.name)
	r, err := exchange(ctx, server, qname, dns.TypeCNAME, false)
	if err != nil {
		return answer{status: describeError(err)}
	}
	if r.Rcode != dns.RcodeSuccess {
		return answer{status: "answered " + rcodeName(r.Rcode)}
	}
	var other []string
	for _, rr := range r.Answer {
		cn, ok := rr.(*dns.CNAME)
		if !ok || !strings.EqualFold(cn.Hdr.Name, qname) {
			continue
		}
		got := strings.ToLower(strings.TrimSuffix(cn.Target, "."))
		if got == c.target {
			return answer{ok: true}
		}
		other = append(other, got)
	}
	if len(other) > 0 {
		return answer{status: "answered CNAME " + strings.Join(other, ", ")}
	}
	if !r.Authoritative {
		return answer{status: "answered NODATA without authority (is it authoritative for the zone?)"}
	}
	return answer{status: "answered NODATA"}
}

func rcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return "rcode " + strconv.Itoa(rcode)
}

func describeError(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timed out"
	}
	if errors.Is(err, context.Canceled) {
		return "was not answered (" + err.Error() + ")"
	}
	return "failed: " + err.Error()
}

// hostAddrs returns the IPv4 and IPv6 addresses of host, following CNAMEs
// within each answer.
func hostAddrs(ctx context.Context, resolvers []string, host string) ([]string, error) {
	var addrs []string
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		r, err := askResolvers(ctx, resolvers, host, qtype)
		if err != nil {
			return nil, fmt.Errorf("address of nameserver %s: %w", host, err)
		}
		owners := map[string]bool{strings.ToLower(host): true}
		for _, rr := range r.Answer {
			if cn, ok := rr.(*dns.CNAME); ok && owners[strings.ToLower(cn.Hdr.Name)] {
				owners[canonicalFQDN(cn.Target)] = true
			}
		}
		for _, rr := range r.Answer {
			if !owners[strings.ToLower(rr.Header().Name)] {
				continue
			}
			switch a := rr.(type) {
			case *dns.A:
				addrs = append(addrs, a.A.String())
			case *dns.AAAA:
				addrs = append(addrs, a.AAAA.String())
			}
		}
	}
	return addrs, nil
}

// resolverList returns configured, else the system's resolvers, each as
// "host:port".
func resolverList(configured []string) ([]string, error) {
	if len(configured) > 0 {
		return dedupe(withPorts(configured, defaultDNSPort)), nil
	}
	conf, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil {
		return nil, fmt.Errorf("no resolvers configured and the system's cannot be read: %w", err)
	}
	if len(conf.Servers) == 0 {
		return nil, fmt.Errorf("no resolvers configured and %s lists none", resolvConf)
	}
	out := make([]string, 0, len(conf.Servers))
	for _, s := range conf.Servers {
		out = append(out, net.JoinHostPort(s, conf.Port))
	}
	return dedupe(out), nil
}

// askResolvers asks each resolver in turn until one answers with NOERROR or
// NXDOMAIN, the two answers that say something about the name.
func askResolvers(ctx context.Context, resolvers []string, name string, qtype uint16) (*dns.Msg, error) {
	var errs []error
	for _, res := range resolvers {
		r, err := exchange(ctx, res, dns.Fqdn(name), qtype, true)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", res, err))
		case r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError:
			errs = append(errs, fmt.Errorf("%s answered %s", res, rcodeName(r.Rcode)))
		default:
			return r, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%s %s: %w", dns.TypeToString[qtype], strings.TrimSuffix(name, "."), errors.Join(errs...))
}

// exchange sends one query to server over UDP, and again over TCP when the
// UDP answer is truncated. recursive sets RD: resolvers get RD=1, while
// authoritative servers get RD=0 so that they answer from their own data.
func exchange(ctx context.Context, server, name string, qtype uint16, recursive bool) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = recursive
	m.SetEdns0(ednsSize, false)

	r, err := exchangeOver(ctx, "udp", server, m)
	if r != nil && r.Truncated {
		r, err = exchangeOver(ctx, "tcp", server, m)
	}
	if err != nil {
		return nil, err
	}
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, name) || r.Question[0].Qtype != qtype {
		return nil, fmt.Errorf("%s answered another question", server)
	}
	return r, nil
}

func exchangeOver(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: queryTimeout}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// miekg/dns honours the context's deadline but not its cancellation
	// once connected; closing the connection makes a cancelled Wait return
	// at once.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if ctxErr := ctx.Err(); err != nil && ctxErr != nil {
		return nil, ctxErr
	}
	if err != nil && (r == nil || !r.Truncated) {
		return nil, err
	}
	return r, nil
}

// withPorts appends port to every address that has none.
func withPorts(addrs []string, port int) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		a = strings.TrimSpace(a)
		if _, _, err := net.SplitHostPort(a); err != nil {
			a = net.JoinHostPort(strings.Trim(a, "[]"), strconv.Itoa(port))
		}
		out = append(out, a)
	}
	return out
}

// dedupe returns the distinct strings of in, in their first order: the
// order of resolvers is the order of preference.
func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// canonicalFQDN lower-cases name and gives it a trailing dot.
func canonicalFQDN(name string) string {
	return strings.ToLower(dns.Fqdn(strings.TrimSpace(name)))
}
