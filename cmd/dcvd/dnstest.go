package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// runDNS dispatches "dcvd dns test" and "dcvd dns providers".
func runDNS(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stdout, dnsUsage)
		return asUsage(errors.New("dns: name a command: test or providers"))
	}
	switch args[0] {
	case "test":
		return runDNSTest(ctx, args[1:], stdout, providers.Options{})
	case "providers":
		if len(args) > 1 {
			if isHelp(args[1]) {
				fmt.Fprint(stdout, "Usage: dcvd dns providers\n\nLists the DNS providers dcvd can publish records with: the type to write in\n[dns.NAME], the keys it requires, the keys of its own, and what it is.\n")
				return nil
			}
			return asUsage(fmt.Errorf("dns providers takes no arguments, got %v", args[1:]))
		}
		return listProviders(stdout)
	default:
		if isHelp(args[0]) {
			fmt.Fprint(stdout, dnsUsage)
			return nil
		}
		return asUsage(fmt.Errorf("unknown dns command %q (want test or providers)", args[0]))
	}
}

const dnsUsage = `Usage: dcvd dns COMMAND

Commands:
  test NAME --domain DOMAIN [--timeout DURATION] [--config FILE]
              publish, check and remove a throw-away CNAME with [dns.NAME]
  providers   list the DNS providers and their config keys

dcvd dns COMMAND --help says more of each.
`

func listProviders(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tREQUIRED\tKEYS\tABOUT")
	for _, k := range providers.Kinds() {
		own, _, _ := providers.KeyNames(k.Name)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.Name, strings.Join(k.Required, ","), strings.Join(own, ","), k.About)
	}
	return tw.Flush()
}

// runDNSTest publishes a throw-away DCV-style CNAME with one configured
// provider, waits until every authoritative nameserver answers it, and
// removes it, printing each step: the admin's proof that credentials and
// propagation work before the first real reissue.
func runDNSTest(ctx context.Context, args []string, stdout io.Writer, opts providers.Options) error {
	fs := flag.NewFlagSet("dcvd dns test", flag.ContinueOnError)
	fs.SetOutput(stdout)
	configPath := fs.String("config", DefaultConfigPath, "configuration file")
	domain := fs.String("domain", "", "a domain in one of the provider's zones; the test record is _dcvd-test-<random>.DOMAIN (required)")
	timeout := fs.Duration("timeout", 0, "give up on propagation after this long (default: the section's propagation_timeout)")
	gnuUsage(fs, "dns test NAME --domain DOMAIN [flags]",
		"Publishes a throw-away CNAME _dcvd-test-<random>.DOMAIN with the provider of\n"+
			"[dns.NAME], waits until every authoritative nameserver answers it (saying\n"+
			"every 15 s which still lag), removes it, and prints each step with its timing.", "")
	// Accept the section name before or after the flags.
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if name == "" && fs.NArg() == 1 {
		name = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return asUsage(fmt.Errorf("unexpected arguments %v", fs.Args()))
	}
	if name == "" {
		fs.Usage()
		return asUsage(errors.New("dns test: name the [dns.NAME] section to test"))
	}
	if *domain == "" {
		fs.Usage()
		return asUsage(errors.New("dns test: --domain is required"))
	}
	base, err := reseller.NormalizeDomain(*domain)
	if err != nil || reseller.IsWildcard(base) || reseller.IsIP(base) {
		return asUsage(fmt.Errorf("dns test: --domain %q is not a domain name", *domain))
	}

	// The daemon's own loader: what dns test accepts, the daemon accepts.
	cfg, warnings, err := config.LoadConfig(*configPath, config.LoadOptions{Providers: opts})
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if err != nil {
		return asConfig(fmt.Errorf("config %s:\n%w", *configPath, err))
	}
	d, ok := cfg.DNS[name]
	if !ok {
		names := make([]string, 0, len(cfg.DNS))
		for n := range cfg.DNS {
			names = append(names, n)
		}
		sort.Strings(names)
		return asUsage(fmt.Errorf("no [dns.%s] section in %s (sections: %v)", name, *configPath, names))
	}
	if *timeout > 0 {
		d.Propagation.Timeout = *timeout
	}

	s := &stepper{out: stdout, start: time.Now()}
	rec := providers.ProbeRecord(base) // the rehearsal's probe, too
	s.step("provider %s (%s): test record %s → %s", d.Name, d.Kind, rec.Name, rec.Target)

	records, err := d.Plan(ctx, []reseller.CNAMEInstruction{rec})
	if err != nil {
		return err
	}
	s.step("zone %s", records[0].Zone)

	rep, err := d.Publish(ctx, records)
	published := err == nil
	// Remove the record whatever happens next, on a context of its own so
	// that an interrupted test still cleans up. After a failed publish the
	// provider may hold part of what was written, so cleanup still runs,
	// but the steps say only what is known: nothing was published.
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Cleanup(cctx, records); err != nil {
			if published {
				s.step("CLEANUP FAILED: %v — remove %s by hand", err, rec.Name)
			} else {
				s.step("CLEANUP FAILED: %v — check the zone for %s and remove it by hand if it is there", err, rec.Name)
			}
			return
		}
		if published {
			s.step("removed the test record")
		} else {
			s.step("no test record left in the zone")
		}
	}()
	if err != nil {
		s.step("publishing FAILED after %d write call(s) to the provider: the record was not published", rep.Calls)
		return err
	}
	s.step("published (%d write call(s) to the provider)", rep.Calls)

	servers, err := d.Propagation.Servers(ctx, records[0].Zone)
	if err != nil {
		s.step("FAILED to find the zone's authoritative nameservers")
		return err
	}
	s.step("authoritative nameservers: %s", strings.Join(servers, ", "))
	wctx := providers.WithProgress(ctx, func(p providers.Progress) {
		s.step("still waiting for %d of %d nameserver(s): %s", lagServers(p.Lagging), p.Servers, strings.Join(p.Lagging, "; "))
	})
	if err := d.WaitVisible(wctx, records); err != nil {
		s.step("FAILED: not every authoritative nameserver answers the record")
		return err
	}
	s.step("every authoritative nameserver answers the record")
	return nil
}

// lagServers counts the distinct servers in Progress.Lagging, whose
// entries are "host:port: what it answered for NAME".
func lagServers(lagging []string) int {
	seen := make(map[string]bool, len(lagging))
	for _, l := range lagging {
		server, _, _ := strings.Cut(l, ": ")
		seen[server] = true
	}
	return len(seen)
}

// stepper prints numbered steps with their timings.
type stepper struct {
	out   io.Writer
	start time.Time
	last  time.Time
}

func (s *stepper) step(format string, args ...any) {
	now := time.Now()
	if s.last.IsZero() {
		s.last = s.start
	}
	fmt.Fprintf(s.out, "[%7.3fs +%6.3fs] %s\n", now.Sub(s.start).Seconds(), now.Sub(s.last).Seconds(), fmt.Sprintf(format, args...))
	s.last = now
}
