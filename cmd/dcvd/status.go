package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/dcvd/dcvd/daemon"
)

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("status", "status [--json] [--config FILE]", stdout)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sts, err := statusOf(ctx, *cfgPath, stderr)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sts)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tNEXT RENEWAL\tSERVICE ENDS\tORDER\tCOST\tLAST ERROR")
	for _, s := range sts {
		expires := "-"
		if s.NotAfter != nil {
			expires = s.NotAfter.UTC().Format("2006-01-02 15:04")
		}
		order := "-"
		if s.Order != nil {
			order = fmt.Sprintf("%s (%s)", s.Order.Step, s.Order.UniqueID)
		}
		lastErr := s.LastError
		if len(lastErr) > 80 {
			lastErr = lastErr[:77] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.2f\t%s\n", s.Name, expires, s.NextRenewal.UTC().Format("2006-01-02 15:04"),
			serviceEnds(s.Service), order, s.TotalCost, orDash(lastErr))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	printServiceWarnings(stdout, sts)
	printBackoffs(stdout, sts)
	printCluster(stdout, sts)
	return nil
}

// serviceEnds is the SERVICE ENDS column: the end of the paid period and
// the days left, "ended" after it, "?" while the reseller has not said.
func serviceEnds(s *daemon.ServiceStatus) string {
	switch {
	case s == nil || s.Expires == nil:
		return "?"
	case s.Ended:
		return s.Expires.UTC().Format("2006-01-02") + " (ended)"
	}
	return fmt.Sprintf("%s (%s)", s.Expires.UTC().Format("2006-01-02"), plural(*s.DaysLeft, "day"))
}

// printServiceWarnings shows each certificate whose service has ended, or
// ends before its next renewal: only buying a renewal mends it.
func printServiceWarnings(w io.Writer, sts []daemon.CertStatus) {
	for _, s := range sts {
		if s.Service == nil || s.Service.Warning == "" {
			continue
		}
		fmt.Fprintf(w, "\n%s: service %s: %s\n", s.Name, s.Service.ServiceID, s.Service.Warning)
	}
}

// printBackoffs shows each order in backoff, which nothing tries before
// its next attempt (maybe a day away) unless the admin asks.
func printBackoffs(w io.Writer, sts []daemon.CertStatus) {
	for _, s := range sts {
		o := s.Order
		if o == nil || !o.Backoff || o.NextAttempt == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: order %s is in backoff at step %s after %s; next attempt %s (in %s)\n",
			s.Name, o.UniqueID, o.Step, plural(o.Attempts, "failure"), o.NextAttempt.UTC().Format("2006-01-02 15:04:05 MST"),
			time.Until(*o.NextAttempt).Round(time.Second))
		fmt.Fprintf(w, "  last error: %s\n", orNone(o.LastError))
		fmt.Fprintf(w, "  run %s to try it now\n", o.Hint)
	}
}

// printCluster shows, in a cluster, who drives each certificate and what
// each node serves.
func printCluster(w io.Writer, sts []daemon.CertStatus) {
	for _, s := range sts {
		if s.Lease == nil && len(s.Nodes) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s (serial %s)\n", s.Name, orDash(s.Serial))
		switch {
		case s.Lease == nil:
			fmt.Fprintln(w, "  lease: never taken")
		case s.Lease.Current:
			fmt.Fprintf(w, "  lease: held by %s until %s (token %d)\n", s.Lease.Holder, s.Lease.Expires.UTC().Format(time.RFC3339), s.Lease.Token)
		default:
			fmt.Fprintf(w, "  lease: free (last held by %s, token %d)\n", s.Lease.Holder, s.Lease.Token)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NODE\tSERVES\tSTATE\tLAST ERROR")
		for _, n := range s.Nodes {
			state := "alive"
			if !n.Alive {
				state = "not seen"
			}
			mark := orDash(n.Serial)
			if n.Serial != "" && n.Serial != s.Serial {
				mark += " (not the live one)"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", n.Node, mark, state, orDash(n.Error))
		}
		tw.Flush()
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
