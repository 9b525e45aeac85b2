// Command dcvd keeps commercial TLS certificates renewed through a
// certificate reseller's API, with no human in the loop.
//
// This build has the subcommands demo (a complete reissue against an
// in-process sandbox CA) and dns (test a DNS provider's credentials and
// propagation). The daemon itself (run, check-config, status) arrives with
// the daemon's issue.
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
  dcvd demo [flags]    run one complete reissue against an in-process sandbox CA
  dcvd dns test NAME --domain DOMAIN [--config FILE]
                       publish, check and remove a throw-away CNAME with the
                       DNS provider of [dns.NAME]: proves credentials and propagation
  dcvd dns providers   list the DNS providers and their config keys
  dcvd help            show this help

Run "dcvd demo --help" for the demo's flags.
`

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
		return errUsage
	}
	switch args[0] {
	case "demo":
		return runDemo(ctx, args[1:], stdout)
	case "dns":
		return runDNS(ctx, args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

var errUsage = errors.New("no command given")

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 1
}
