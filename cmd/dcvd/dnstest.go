package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// runDNS dispatches "dcvd dns test" and "dcvd dns providers".
func runDNS(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return asUsage(errors.New("usage: dcvd dns test NAME --domain DOMAIN [--config FILE] | dcvd dns providers"))
	}
	switch args[0] {
	case "test":
		return runDNSTest(ctx, args[1:], stdout, providers.Options{})
	case "providers":
		return listProviders(stdout)
	default:
		return asUsage(fmt.Errorf("unknown dns command %q (want test or providers)", args[0]))
	}
}

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
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: dcvd dns test NAME --domain DOMAIN [flags]\n\n"+
			"Publishes a throw-away CNAME _dcvd-test-<random>.DOMAIN with the provider of\n"+
			"[dns.NAME], waits until every authoritative nameserver answers it, removes it,\n"+
			"and prints each step with its timing.\n\nFlags:\n")
		fs.PrintDefaults()
	}
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
	cfg, warnings, err := daemon.LoadConfig(*configPath, daemon.LoadOptions{Providers: opts})
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
	token := make([]byte, 8)
	rand.Read(token)
	rec := reseller.CNAMEInstruction{
		Name:   "_dcvd-test-" + hex.EncodeToString(token) + "." + base,
		Target: hex.EncodeToString(token) + ".dcvd-test.invalid",
	}
	s.step("provider %s (%s): test record %s → %s", d.Name, d.Kind, rec.Name, rec.Target)

	records, err := d.Plan(ctx, []reseller.CNAMEInstruction{rec})
	if err != nil {
		return err
	}
	s.step("zone %s", records[0].Zone)

	rep, err := d.Publish(ctx, records)
	// Remove the record whatever happens next, on a context of its own so
	// that an interrupted test still cleans up.
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Cleanup(cctx, records); err != nil {
			s.step("CLEANUP FAILED: %v — remove %s by hand", err, rec.Name)
			return
		}
		s.step("removed the test record")
	}()
	if err != nil {
		return err
	}
	s.step("published (%d write call(s) to the provider)", rep.Calls)

	servers, err := d.Propagation.Servers(ctx, records[0].Zone)
	if err != nil {
		return err
	}
	s.step("authoritative nameservers: %s", strings.Join(servers, ", "))
	if err := d.WaitVisible(ctx, records); err != nil {
		return err
	}
	s.step("every authoritative nameserver answers the record")
	return nil
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
