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
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/dcvd/dcvd/providers"
)

const usage = `dcvd keeps commercial TLS certificates renewed through a reseller API.

Usage:
  dcvd run                 run the daemon: renew every configured certificate when due
  dcvd reissue NAME|--all  reissue a certificate (or every one, with progress) now [--wait] [--timeout D]
                           [--allow-domain-removal]; --dry-run rehearses it for free: every check
                           but the paid call (credentials, service, DNS, web roots, deploy, reload)
  dcvd retry NAME          try the order in flight of NAME now, even in backoff [--wait] [--timeout D]
  dcvd status              each certificate: expiry and days left, next renewal, service end,
                           order in flight, cost, deploy dir [--json] [--utc]; exits 1 when one
                           is failing or expires within the alert window (for monitoring)
  dcvd redeploy NAME       install the live certificate again and reload
  dcvd check-config        report every problem of the configuration at once
                           [--as-service [--unit FILE]]: as dcvd.service would run it
  dcvd import              list the account's orders; write a config fragment for each chosen
                           one [--service-id A,B | --all] [--dir DIR] [--adopt-from DIR]
                           [--deploy-root DIR] [--dry-run] [--force]; never reissues
  dcvd dns test NAME --domain DOMAIN
                           publish, check and remove a throw-away CNAME with [dns.NAME]
  dcvd dns providers       list the DNS providers and their config keys
  dcvd demo                a whole reissue on embedded defaults: sandbox CA, local DNS
                           and web root, temporary deploy directory; no account needed
  dcvd version              (also dcvd --version, dcvd -v) print the version
  dcvd help [COMMAND]       this text, or a command's (also dcvd COMMAND --help)

Every command but demo reads --config (default /etc/dcvd/config.toml).
Every command and group takes --help (-h): dcvd dns --help, dcvd reissue --help.

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
	// The daemon's DNS waits, whichever command runs them, log which
	// nameservers still lag (see logPropagation).
	ctx = providers.WithProgress(ctx, logPropagation)
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
	if cmd, ok := commands[args[0]]; ok {
		return cmd(ctx, args[1:], stdout, stderr)
	}
	switch args[0] {
	case "version", "--version", "-v", "-version":
		if len(args) > 1 && isHelp(args[1]) {
			fmt.Fprint(stdout, "Usage: dcvd version (or dcvd --version, dcvd -v)\n\nPrints dcvd's version, and for a build without one stamped, the Go\nversion and commit it was built from.\n")
			return nil
		}
		fmt.Fprintln(stdout, versionString())
		return nil
	case "dns":
		return runDNS(ctx, args[1:], stdout)
	case "help", "-h", "--help", "-help":
		// "dcvd help reissue" is "dcvd reissue --help", as git and go do.
		if len(args) > 1 && args[0] == "help" && !isHelp(args[1]) {
			return run(ctx, append(slices.Clone(args[1:]), "--help"), stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return asUsage(fmt.Errorf("unknown command %q", args[0]))
	}
}

// commands are the commands that take the arguments after their name, the
// context and both outputs.
var commands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{
	"demo":         runDemo,
	"run":          runRun,
	"reissue":      runReissue,
	"retry":        runRetry,
	"status":       runStatus,
	"redeploy":     runRedeploy,
	"check-config": runCheckConfig,
	"import":       runImport,
}

var errNoCommand = errors.New("no command given")

// isHelp says whether arg asks for help, in any of the spellings the flag
// package accepts for its own -h.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "--help", "-help", "--h", "help":
		return true
	}
	return false
}

// versionString is what dcvd --version prints. A release build has its
// version stamped with -ldflags "-X main.version=…"; any other build says
// "dev" and what the toolchain recorded of its source (commit, whether the
// tree had changes), so that a bug report from it can still be placed.
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dcvd " + version
	}
	details := []string{bi.GoVersion}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if version != "dev" {
		if rev != "" {
			details = append(details, "commit "+short(rev))
		}
		return fmt.Sprintf("dcvd %s (%s)", version, strings.Join(details, ", "))
	}
	switch {
	case rev != "":
		c := "commit " + short(rev)
		if modified == "true" {
			c += " with local changes"
		}
		details = append(details, c)
	case bi.Main.Version != "" && bi.Main.Version != "(devel)":
		// go install …@vX.Y.Z records the module version instead.
		details = append(details, "module "+bi.Main.Version)
	default:
		details = append(details, "commit unknown: built without version control information")
	}
	return fmt.Sprintf("dcvd dev (%s)", strings.Join(details, ", "))
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// printFlags lists fs's flags the GNU way (--name VALUE), which is how
// admins used to certbot, lego and acme.sh write them; the flag package
// accepts both one and two dashes, but its own listing shows one.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if arg != "" {
			line += " " + flagArg(f.Name, arg)
		}
		fmt.Fprintln(w, line)
		if zeroDefault(f.DefValue) {
			fmt.Fprintf(w, "        %s\n", usage)
		} else {
			fmt.Fprintf(w, "        %s (default %s)\n", usage, f.DefValue)
		}
	})
}

// flagArg names a flag's argument: what it is for where that is known,
// else its type.
func flagArg(name, typ string) string {
	switch name {
	case "config":
		return "FILE"
	case "domain":
		return "DOMAIN"
	case "state-dir", "out":
		return "DIR"
	}
	switch typ {
	case "duration":
		return "DURATION"
	case "int", "uint", "int64", "uint64":
		return "N"
	}
	return strings.ToUpper(typ)
}

func zeroDefault(v string) bool {
	switch v {
	case "", "0", "false", "0s":
		return true
	}
	return false
}

// gnuUsage replaces a flag set's usage with one that lists its flags the
// GNU way: "Usage: dcvd SYNOPSIS", about (if any), the flags, and extra
// (if any) at the end.
func gnuUsage(fs *flag.FlagSet, synopsis, about, extra string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: dcvd %s\n\n", synopsis)
		if about != "" {
			fmt.Fprint(w, about+"\n\n")
		}
		fmt.Fprintln(w, "Flags:")
		printFlags(w, fs)
		if extra != "" {
			fmt.Fprint(w, "\n"+extra)
		}
	}
}
