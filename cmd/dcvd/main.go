// Command dcvd keeps commercial TLS certificates renewed through a
// certificate reseller's API, with no human in the loop.
//
// It runs as a daemon (dcvd run) and has commands to reissue, inspect and
// redeploy certificates, check the configuration, test DNS providers, and
// a demo on embedded defaults.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `dcvd keeps commercial TLS certificates renewed through a reseller API.

Usage:
  dcvd run                 run the daemon: renew every configured certificate when due
  dcvd reissue NAME|--all  reissue a certificate (or every one, with progress) now [--wait] [--timeout D] [--dry-run] [--allow-domain-removal]
  dcvd retry NAME          try the order in flight of NAME now, even in backoff [--wait] [--timeout D]
  dcvd status              each certificate: expiry, next renewal, order in flight, cost [--json]
  dcvd redeploy NAME       install the live certificate again and reload
  dcvd check-config        report every problem of the configuration at once
  dcvd dns test NAME --domain DOMAIN
                           publish, check and remove a throw-away CNAME with [dns.NAME]
  dcvd dns providers       list the DNS providers and their config keys
  dcvd demo                a whole reissue on embedded defaults: sandbox CA, local DNS
                           and web root, temporary deploy directory; no account needed
  dcvd version

Every command but demo reads --config (default /etc/dcvd/config.toml).

With --wait, reissue and retry follow the order to its end in the foreground
(through the running daemon when there is one). They give up, leaving the
order in flight, on Ctrl-C or SIGTERM (at once, even during a request to the
CA: resending it with the same unique_id is safe), at --timeout (default 30m;
a hard bound), and after three identical failures that waiting cannot mend
(a reply from the CA that cannot be understood).

` + exitCodesHelp

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "dcvd:", err)
		}
		stop()
		os.Exit(exitCode(err))
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return asUsage(errNoCommand)
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "run":
		return runRun(ctx, args[1:], stdout, stderr)
	case "reissue":
		return runReissue(ctx, args[1:], stdout, stderr)
	case "retry":
		return runRetry(ctx, args[1:], stdout, stderr)
	case "status":
		return runStatus(ctx, args[1:], stdout, stderr)
	case "redeploy":
		return runRedeploy(ctx, args[1:], stdout, stderr)
	case "check-config":
		return runCheckConfig(ctx, args[1:], stdout, stderr)
	case "version":
		return runVersion(stdout)
	case "dns":
		return runDNS(ctx, args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return asUsage(fmt.Errorf("unknown command %q", args[0]))
	}
}

var errNoCommand = errors.New("no command given")
