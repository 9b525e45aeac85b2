package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
)

const statusAbout = `Shows each certificate: when it expires and the days left, its next
renewal, the end of its service (the paid period), the order in flight,
what it cost, where it is deployed, and the last error. Times are local
(marked with their zone) unless --utc is given. It asks the running daemon
when there is one, else reads the state.

For monitoring (a Nagios-style check, a cron job, a systemd timer's
OnFailure=): it exits 1 when a certificate is failing (its last attempt
failed, or its order is in backoff) or expires within the alert window
(the largest of [daemon] expiry_alert_days, 14 days by default), and says
which on stderr; --json prints the same data as JSON with the same exit
status.`

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("status", "status [--json] [--utc] [--config FILE]", stdout)
	asJSON := fs.Bool("json", false, "print JSON")
	utc := fs.Bool("utc", false, "show times in UTC instead of local time")
	gnuUsage(fs, "status [--json] [--utc] [--config FILE]", statusAbout, exitCodesHelp)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sts, err := statusOf(ctx, *cfgPath, stderr)
	if err != nil {
		return err
	}
	// The configuration says where each certificate is deployed and the
	// alert window; the daemon's status has neither. One that cannot be
	// loaded here (statusOf has reported why when it read the state
	// itself) leaves the deploy dirs out and the default window.
	cfg, _, _ := config.LoadConfig(*cfgPath, config.LoadOptions{})
	now := time.Now()
	window := alertWindow(cfg)
	deployDirs := map[string]string{}
	if cfg != nil {
		for _, cc := range cfg.Certificates {
			deployDirs[cc.Name] = cc.Deploy.Dir
		}
	}
	alerts := statusAlerts(sts, now, window)
	if *asJSON {
		out := make([]statusJSON, len(sts))
		for i, s := range sts {
			out[i] = statusJSON{CertStatus: s, DaysLeft: daysLeft(s.NotAfter, now), DeployDir: deployDirs[s.Name], Alert: alerts[s.Name]}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
		return alertError(alerts, sts)
	}
	loc := time.Local
	if *utc {
		loc = time.UTC
	}
	at := func(t time.Time) string { return t.In(loc).Format("2006-01-02 15:04 MST") }
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CERTIFICATE\tEXPIRES\tDAYS LEFT\tNEXT RENEWAL\tSERVICE ENDS\tORDER\tCOST\tDEPLOY DIR\tLAST ERROR")
	for _, s := range sts {
		expires, left := "-", "-"
		if s.NotAfter != nil {
			expires = at(*s.NotAfter)
			left = strconv.Itoa(*daysLeft(s.NotAfter, now))
		}
		order := "-"
		if s.Order != nil {
			order = fmt.Sprintf("%s (%s)", s.Order.Step, s.Order.UniqueID)
		}
		lastErr := s.LastError
		if len(lastErr) > 80 {
			lastErr = lastErr[:77] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%s\t%s\n", s.Name, expires, left, at(s.NextRenewal),
			serviceEnds(s.Service), order, s.TotalCost, orDash(deployDirs[s.Name]), orDash(lastErr))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	printServiceWarnings(stdout, sts)
	printBackoffs(stdout, sts, loc)
	printCluster(stdout, sts, loc)
	return alertError(alerts, sts)
}

// statusJSON is one certificate in status --json: the daemon's status with
// what the command adds. The embedded fields keep their names, so that
// readers of the older output go on working.
type statusJSON struct {
	control.CertStatus
	// DaysLeft is the whole days until NotAfter (negative once expired).
	DaysLeft *int `json:"days_left,omitempty"`
	// DeployDir is where the certificate is deployed.
	DeployDir string `json:"deploy_dir,omitempty"`
	// Alert says why the command exits 1 for this certificate.
	Alert string `json:"alert,omitempty"`
}

// daysLeft is the whole days from now until t; nil when there is no t.
func daysLeft(t *time.Time, now time.Time) *int {
	if t == nil {
		return nil
	}
	d := int(t.Sub(now).Hours() / 24)
	return &d
}

// alertWindow is how long before expiry status reports a certificate:
// the earliest alert the daemon sends.
func alertWindow(cfg *config.Config) time.Duration {
	days := config.DefaultExpiryAlertDays
	if cfg != nil && len(cfg.Daemon.ExpiryAlertDays) > 0 {
		days = cfg.Daemon.ExpiryAlertDays
	}
	return time.Duration(slices.Max(days)) * 24 * time.Hour
}

// statusAlerts names, by certificate, why each one that needs the admin
// does: failing (the last attempt failed, or the order is in backoff) or
// expiring within window.
func statusAlerts(sts []control.CertStatus, now time.Time, window time.Duration) map[string]string {
	alerts := map[string]string{}
	for _, s := range sts {
		var why []string
		switch {
		case s.Order != nil && s.Order.Backoff:
			why = append(why, fmt.Sprintf("order in backoff after %s", plural(s.Order.Attempts, "failure")))
		case s.LastError != "":
			why = append(why, "last attempt failed")
		}
		if s.NotAfter != nil {
			switch left := s.NotAfter.Sub(now); {
			case left <= 0:
				why = append(why, "expired")
			case left <= window:
				why = append(why, fmt.Sprintf("expires in %s (alert window %s)", plural(int(left.Hours()/24), "day"),
					plural(int(window.Hours()/24), "day")))
			}
		}
		if len(why) > 0 {
			alerts[s.Name] = strings.Join(why, "; ")
		}
	}
	return alerts
}

// alertError is status's exit 1 when any certificate needs the admin, in
// the order of sts.
func alertError(alerts map[string]string, sts []control.CertStatus) error {
	if len(alerts) == 0 {
		return nil
	}
	var lines []string
	for _, s := range sts {
		if why, ok := alerts[s.Name]; ok {
			lines = append(lines, fmt.Sprintf("  %s: %s", s.Name, why))
		}
	}
	return fmt.Errorf("%s need(s) attention:\n%s", plural(len(lines), "certificate"), strings.Join(lines, "\n"))
}

// serviceEnds is the SERVICE ENDS column: the end of the paid period and
// the days left, "ended" after it, "?" while the reseller has not said.
func serviceEnds(s *control.ServiceStatus) string {
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
func printServiceWarnings(w io.Writer, sts []control.CertStatus) {
	for _, s := range sts {
		if s.Service == nil || s.Service.Warning == "" {
			continue
		}
		fmt.Fprintf(w, "\n%s: service %s: %s\n", s.Name, s.Service.ServiceID, s.Service.Warning)
	}
}

// printBackoffs shows each order in backoff, which nothing tries before
// its next attempt (maybe a day away) unless the admin asks.
func printBackoffs(w io.Writer, sts []control.CertStatus, loc *time.Location) {
	for _, s := range sts {
		o := s.Order
		if o == nil || !o.Backoff || o.NextAttempt == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: order %s is in backoff at step %s after %s; next attempt %s (in %s)\n",
			s.Name, o.UniqueID, o.Step, plural(o.Attempts, "failure"), o.NextAttempt.In(loc).Format("2006-01-02 15:04:05 MST"),
			time.Until(*o.NextAttempt).Round(time.Second))
		fmt.Fprintf(w, "  last error: %s\n", orNone(o.LastError))
		fmt.Fprintf(w, "  run %s to try it now\n", o.Hint)
	}
}

// printCluster shows, in a cluster, who drives each certificate and what
// each node serves.
func printCluster(w io.Writer, sts []control.CertStatus, loc *time.Location) {
	for _, s := range sts {
		if s.Lease == nil && len(s.Nodes) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s (serial %s)\n", s.Name, orDash(s.Serial))
		switch {
		case s.Lease == nil:
			fmt.Fprintln(w, "  lease: never taken")
		case s.Lease.Current:
			fmt.Fprintf(w, "  lease: held by %s until %s (token %d)\n", s.Lease.Holder, s.Lease.Expires.In(loc).Format("2006-01-02 15:04:05 MST"), s.Lease.Token)
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
