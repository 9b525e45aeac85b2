// Command dcvd-sandbox runs the sandbox reseller CA as a server: the
// reseller API under /api/v1 (signed requests, real DCV checks, charges,
// revocations, injectable faults) and unsigned control endpoints under
// /sandbox/, for trying dcvd or any client of the API without an account.
//
// On start it prints its base URL, its access key pair, the root certificate
// to trust and its services. SIGINT or SIGTERM stops it gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/sandbox"
)

const usageHeader = `dcvd-sandbox runs a local certificate reseller CA for tests and demos.

It serves the reseller API that dcvd drives (the same paths under /api/v1,
HMAC-signed requests, the same envelope) and behaves like the real CA,
including the parts that hurt: reissues cost money once per unique_id,
dropping a name revokes the issued certificate, domain control is checked
for real (CNAME lookups at --dns-server, file fetches at --http-addr and
--https-addr) and a failed DNS check is cached for --negative-cache. Faults
(server errors, rate limits, truncated replies, resets, latency) can be
injected. Unsigned control endpoints under /sandbox/ show the ledger, the
revocations, the services and the root certificate, and approve e-mail
validations.

On start it prints its base URL (http://<listen>/api/v1), the access key id
and secret to sign requests with, the path of the root certificate to trust,
and its services. State (orders, ledger, nonces, key pair, CA) is kept in
--state-dir and survives restarts. SIGINT or SIGTERM stops it gracefully.

Usage:
  dcvd-sandbox [flags]

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "dcvd-sandbox:", err)
		stop()
		os.Exit(2)
	}
}

// options are the parsed command line.
type options struct {
	listen, stateDir, configFile            string
	services                                serviceFlags
	accessKeyID, secretFile                 string
	dnsServer, httpAddr, httpsAddr          string
	negativeCache, validity, checkInterval  time.Duration
	servicePeriod                           periodFlag
	autoApproveEmail                        bool
	caDomain                                string
	balance                                 float64
	errorRate, rateLimitRate, malformedRate float64
	resetRate                               float64
	retryAfter, latency                     time.Duration
	seed                                    int64
	logLevel                                string
	faults                                  sandbox.Faults
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("dcvd-sandbox", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8600", "`host:port` to serve the API and the control endpoints on (port 0 picks a free port)")
	fs.StringVar(&o.stateDir, "state-dir", "./dcvd-sandbox-state", "`directory` holding the state and the CA; created if missing, kept across restarts")
	fs.StringVar(&o.configFile, "config", "", "optional TOML `file` with [[product]] and [[service]] tables (the catalogue); unknown keys are errors")
	fs.Var(&o.services, "service", "add a service: `ID:PRODUCT[:MAXDOMAINS]` (repeatable; MAXDOMAINS 0 or omitted = the product's); services already in the state are kept")
	fs.StringVar(&o.accessKeyID, "access-key-id", "", "access key `id` (empty: the persisted one, or a generated one on first start)")
	fs.StringVar(&o.secretFile, "access-key-secret-file", "", "`file` holding the access key secret (empty: the persisted one, or a generated one on first start)")
	fs.StringVar(&o.dnsServer, "dns-server", "", "`host:port` the CA sends its CNAME queries to (empty: the first nameserver of /etc/resolv.conf)")
	fs.StringVar(&o.httpAddr, "http-addr", "", "`host:port` the CA connects to for http validation files, whatever the domain (empty: the domain itself on port 80)")
	fs.StringVar(&o.httpsAddr, "https-addr", "", "`host:port` the CA connects to for https validation files (empty: the domain itself on port 443)")
	fs.DurationVar(&o.negativeCache, "negative-cache", 5*time.Minute, "how long a failed DNS check is remembered: a re-check inside it fails without asking (negative: no cache)")
	fs.DurationVar(&o.validity, "validity", sandbox.DefaultValidity, "lifetime of issued certificates")
	o.servicePeriod = periodFlag(sandbox.DefaultServicePeriod)
	fs.Var(&o.servicePeriod, "service-period", "paid `period` of a new service from its creation (a duration, or days as 30d, or years as 1y = 365d; none: services never end); certificates are cut to the service's end and reissues after it refused; services already in the state keep their end (set it with POST /sandbox/service-end)")
	fs.DurationVar(&o.checkInterval, "check-interval", sandbox.DefaultCheckInterval, "how often pending orders are re-checked in the background (negative: only on update-dcv and validate-dcv)")
	fs.BoolVar(&o.autoApproveEmail, "auto-approve-email", false, "pass e-mail validations at their first check (otherwise: POST /sandbox/approve-email?service_id=&domain=)")
	fs.StringVar(&o.caDomain, "ca-domain", sandbox.DefaultCADomain, "`domain` ending the CNAME targets and validation files")
	fs.Float64Var(&o.balance, "balance", sandbox.DefaultBalance, "account balance at first start; later starts keep the persisted balance (0 means the default: set an empty balance with POST /sandbox/balance?set=0)")
	fs.Float64Var(&o.errorRate, "fault-error-rate", 0, "probability of an HTTP 500/502/503 on an API request; half before processing, half after (the request took effect, its reply is lost)")
	fs.Float64Var(&o.rateLimitRate, "fault-rate-limit-rate", 0, "probability of an HTTP 429 with Retry-After, before processing")
	fs.DurationVar(&o.retryAfter, "fault-retry-after", time.Second, "Retry-After of injected 429 replies (rounded up to seconds)")
	fs.Float64Var(&o.malformedRate, "fault-malformed-rate", 0, "probability of an HTTP 200 with a truncated JSON body, after processing")
	fs.Float64Var(&o.resetRate, "fault-reset-rate", 0, "probability that the connection is closed without a reply; half before processing, half after")
	fs.DurationVar(&o.latency, "fault-latency", 0, "delay before every API reply (after processing)")
	fs.Int64Var(&o.seed, "fault-seed", 1, "seed of the fault sequence, so that a run can be repeated")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level` on stderr: debug, info, warn or error")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprint(w, usageHeader)
		fs.VisitAll(func(f *flag.Flag) {
			name, usage := flag.UnquoteUsage(f)
			line := "  --" + f.Name
			if name != "" {
				line += " " + name
			}
			def := f.DefValue
			switch {
			case f.Name == "service":
				def = "none; see the catalogue below"
			case def == "":
				def = `""`
			}
			fmt.Fprintf(w, "%s\n      %s (default %s)\n", line, usage, def)
		})
		fmt.Fprint(w, `
Catalogue: with no --config products and no --service, the sandbox offers the
product "sectigo-dv-multi" (DV, 100 domains, wildcards, reissue free, 10 per
new domain) and the service "demo" of it. A --config file looks like:

  [[product]]
  id = "sectigo-dv-multi"      # required
  name = "Sectigo DV multi-domain"
  validation = "DV"            # DV, OV, EV or IV
  max_domains = 100
  wildcard = true
  price = 100.0                # charged by certificate/create
  reissue_price = 0.0          # charged by every reissue
  domain_price = 10.0          # charged for each name not paid for yet

  [[service]]
  id = "demo"                  # required
  product_id = "sectigo-dv-multi"
  max_domains = 0              # 0: the product's
  domains = ["example.com"]    # names already paid for
  # The end of the paid period (default: --service-period from the
  # service's creation); it also moves the end of a service already in
  # the state.
  expires = 2027-11-30T00:00:00+08:00
`)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (all settings are flags; see --help)", fs.Arg(0))
	}
	o.faults = sandbox.Faults{
		ErrorRate:     o.errorRate,
		RateLimitRate: o.rateLimitRate,
		MalformedRate: o.malformedRate,
		ResetRate:     o.resetRate,
		RetryAfter:    o.retryAfter,
		Latency:       o.latency,
		Seed:          o.seed,
	}
	return o, nil
}

// serviceFlags collects --service values.
type serviceFlags []sandbox.Service

func (s *serviceFlags) String() string {
	parts := make([]string, len(*s))
	for i, sv := range *s {
		parts[i] = fmt.Sprintf("%s:%s:%d", sv.ID, sv.ProductID, sv.MaxDomains)
	}
	return strings.Join(parts, ",")
}

func (s *serviceFlags) Set(v string) error {
	parts := strings.Split(v, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return fmt.Errorf("want ID:PRODUCT[:MAXDOMAINS], got %q", v)
	}
	sv := sandbox.Service{ID: parts[0], ProductID: parts[1]}
	if len(parts) == 3 {
		n, err := strconv.Atoi(parts[2])
		if err != nil || n < 0 {
			return fmt.Errorf("MAXDOMAINS in %q is not a number of domains", v)
		}
		sv.MaxDomains = n
	}
	*s = append(*s, sv)
	return nil
}

// catalogueFile is the --config file.
type catalogueFile struct {
	Product []struct {
		ID           string  `toml:"id"`
		Name         string  `toml:"name"`
		Validation   string  `toml:"validation"`
		MaxDomains   int     `toml:"max_domains"`
		Wildcard     bool    `toml:"wildcard"`
		Price        float64 `toml:"price"`
		ReissuePrice float64 `toml:"reissue_price"`
		DomainPrice  float64 `toml:"domain_price"`
	} `toml:"product"`
	Service []struct {
		ID         string    `toml:"id"`
		ProductID  string    `toml:"product_id"`
		MaxDomains int       `toml:"max_domains"`
		Domains    []string  `toml:"domains"`
		Expires    time.Time `toml:"expires"`
	} `toml:"service"`
}

// loadCatalogue reads a --config file. Unknown keys are errors, so that a
// misspelt price is not silently zero.
func loadCatalogue(path string) ([]sandbox.Product, []sandbox.Service, error) {
	var f catalogueFile
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, nil, fmt.Errorf("config %s: unknown key(s) %s", path, strings.Join(keys, ", "))
	}
	var products []sandbox.Product
	for i, p := range f.Product {
		if p.ID == "" {
			return nil, nil, fmt.Errorf("config %s: product %d has no id", path, i+1)
		}
		products = append(products, sandbox.Product{
			ID: p.ID, Name: p.Name, Validation: p.Validation, MaxDomains: p.MaxDomains, Wildcard: p.Wildcard,
			Price: p.Price, ReissuePrice: p.ReissuePrice, DomainPrice: p.DomainPrice,
		})
	}
	var services []sandbox.Service
	for i, s := range f.Service {
		if s.ID == "" || s.ProductID == "" {
			return nil, nil, fmt.Errorf("config %s: service %d needs an id and a product_id", path, i+1)
		}
		services = append(services, sandbox.Service{ID: s.ID, ProductID: s.ProductID, MaxDomains: s.MaxDomains, Domains: s.Domains, Expires: s.Expires})
	}
	return products, services, nil
}

// catalogue combines --config and --service, falling back to the default
// catalogue for what is not given.
func catalogue(o *options) ([]sandbox.Product, []sandbox.Service, error) {
	var products []sandbox.Product
	var services []sandbox.Service
	if o.configFile != "" {
		var err error
		if products, services, err = loadCatalogue(o.configFile); err != nil {
			return nil, nil, err
		}
	}
	services = append(services, o.services...)
	if len(products) == 0 {
		products = sandbox.DefaultProducts()
		if len(services) == 0 {
			services = sandbox.DefaultServices()
		}
	}
	return products, services, nil
}

func newLogger(level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	enc := zap.NewDevelopmentEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), lvl)
	return zap.New(core), nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	log, err := newLogger(o.logLevel, stderr)
	if err != nil {
		return err
	}
	defer log.Sync()
	products, services, err := catalogue(o)
	if err != nil {
		return err
	}
	var secret string
	if o.secretFile != "" {
		b, err := os.ReadFile(o.secretFile)
		if err != nil {
			return fmt.Errorf("--access-key-secret-file: %w", err)
		}
		if secret = strings.TrimSpace(string(b)); secret == "" {
			return fmt.Errorf("--access-key-secret-file %s is empty", o.secretFile)
		}
	}

	sb, err := sandbox.New(sandbox.Config{
		StateDir:         o.stateDir,
		AccessKeyID:      o.accessKeyID,
		AccessKeySecret:  secret,
		Products:         products,
		Services:         services,
		DNSServer:        o.dnsServer,
		HTTPAddr:         o.httpAddr,
		HTTPSAddr:        o.httpsAddr,
		NegativeCacheTTL: o.negativeCache,
		Validity:         o.validity,
		ServicePeriod:    time.Duration(o.servicePeriod),
		CheckInterval:    o.checkInterval,
		AutoApproveEmail: o.autoApproveEmail,
		CADomain:         o.caDomain,
		Balance:          o.balance,
		Faults:           o.faults,
		Logger:           log,
	})
	if err != nil {
		return err
	}
	defer sb.Close()

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	srv := &http.Server{Handler: sb.Handler(), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	sb.Start(ctx)

	printBanner(stdout, "http://"+ln.Addr().String(), sb)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return sb.Close()
}

func printBanner(w io.Writer, base string, sb *sandbox.Server) {
	id, secret := sb.AccessKey()
	fmt.Fprintf(w, "dcvd-sandbox is serving\n")
	fmt.Fprintf(w, "  base URL:          %s/api/v1\n", base)
	fmt.Fprintf(w, "  access key id:     %s\n", id)
	fmt.Fprintf(w, "  access key secret: %s\n", secret)
	fmt.Fprintf(w, "  root certificate:  %s\n", sb.RootPath())
	fmt.Fprintf(w, "  control:           %s/sandbox/ (ledger, revocations, services, root.pem, approve-email, balance, service-end)\n", base)
	fmt.Fprintf(w, "  balance:           %.2f\n", sb.Balance())
	services := sb.Services()
	sort.Slice(services, func(i, j int) bool { return services[i].ID < services[j].ID })
	fmt.Fprintf(w, "  services:\n")
	for _, s := range services {
		paid := "none"
		if len(s.Domains) > 0 {
			paid = strings.Join(s.Domains, ", ")
		}
		ends := "never"
		if !s.Expires.IsZero() {
			ends = s.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "    %-12s product %s, at most %d domains, paid for: %s, ends: %s\n", s.ID, s.ProductID, s.MaxDomains, paid, ends)
	}
}

// periodFlag is --service-period: a Go duration, whole days ("30d") or years
// of 365 days ("1y"), or "none" (or 0) for services that never end, which
// the sandbox's Config writes as a negative period.
type periodFlag time.Duration

func (p *periodFlag) String() string {
	d := time.Duration(*p)
	const day = 24 * time.Hour
	switch {
	case d < 0:
		return "none"
	case d > 0 && d%(365*day) == 0:
		return fmt.Sprintf("%dy", d/(365*day))
	case d > 0 && d%day == 0:
		return fmt.Sprintf("%dd", d/day)
	default:
		return d.String()
	}
}

func (p *periodFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "none") || v == "0" {
		*p = periodFlag(-1)
		return nil
	}
	var d time.Duration
	if n, unit := strings.TrimRight(v, "dy"), strings.TrimLeft(v, "0123456789"); unit == "d" || unit == "y" {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 {
			return fmt.Errorf("want a positive number of days or years, got %q", v)
		}
		if unit == "y" {
			days *= 365
		}
		if days > 100*365 {
			return fmt.Errorf("the period %q is more than a century", v)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			return fmt.Errorf("want a duration (720h), days (30d), years (1y) or none, got %q", v)
		}
	}
	if d <= 0 {
		return fmt.Errorf("the period %q is not positive (none: services never end)", v)
	}
	*p = periodFlag(d)
	return nil
}
