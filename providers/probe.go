package providers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

// This file is the DNS half of a rehearsal: a throw-away DCV-style CNAME
// published, waited for on every authoritative nameserver, and removed,
// each step timed. "dcvd dns test" and "dcvd reissue --dry-run" both prove
// with it that the provider's credentials and the propagation work before
// anything is paid for.

// probeCleanupTimeout bounds the removal of the probe records, which runs
// on a context of its own: an interrupted probe still removes them.
const probeCleanupTimeout = time.Minute

// ProbeStep is one timed step of Probe.
type ProbeStep struct {
	// Name is "zones", "publish", "nameservers", "visible" or "cleanup".
	Name string
	// Detail says what the step found or did.
	Detail string
	Took   time.Duration
	Err    error
}

// ProbeRecord is a throw-away CNAME under domain, shaped like a DCV record
// (one "_" label under the validated name) so that Plan accepts it:
// _dcvd-test-<random>.DOMAIN → <random>.dcvd-test.invalid. The target is
// in .invalid, so that the record can never lead anywhere.
func ProbeRecord(domain string) reseller.CNAMEInstruction {
	token := make([]byte, 8)
	rand.Read(token)
	base := strings.TrimPrefix(strings.ToLower(strings.TrimSuffix(domain, ".")), "*.")
	return reseller.CNAMEInstruction{
		Name:   "_dcvd-test-" + hex.EncodeToString(token) + "." + base,
		Target: hex.EncodeToString(token) + ".dcvd-test.invalid",
	}
}

// Probe proves that d can publish the DCV records of domains: it plans a
// ProbeRecord under each, keeps one per zone (a real order's records in one
// zone fare alike, and every wait costs propagation time), publishes them,
// waits until every authoritative nameserver of each zone answers them, and
// removes them, telling step of each step as it ends. The removal runs
// whenever a publish was attempted, whatever failed after it. It returns
// the first failure (a failed removal included), which step was also told.
func (d *DNS) Probe(ctx context.Context, domains []string, step func(ProbeStep)) (err error) {
	start := time.Now()
	done := func(name, detail string, err error) error {
		now := time.Now()
		step(ProbeStep{Name: name, Detail: detail, Took: now.Sub(start), Err: err})
		start = now
		return err
	}

	var cnames []reseller.CNAMEInstruction
	for _, dom := range domains {
		cnames = append(cnames, ProbeRecord(dom))
	}
	planned, err := d.Plan(ctx, cnames)
	if err != nil {
		return done("zones", "", err)
	}
	var records []Record
	seen := map[string]bool{}
	var desc []string
	for _, r := range planned {
		if seen[r.Zone] {
			continue
		}
		seen[r.Zone] = true
		records = append(records, r)
		desc = append(desc, fmt.Sprintf("%s (probe %s)", r.Zone, r.Name))
	}
	done("zones", fmt.Sprintf("provider %s (%s): %s", d.Name, d.Kind, strings.Join(desc, ", ")), nil)

	rep, perr := d.Publish(ctx, records)
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeCleanupTimeout)
		defer cancel()
		var names []string
		for _, r := range records {
			names = append(names, r.Name)
		}
		if cerr := d.Cleanup(cctx, records); cerr != nil {
			done("cleanup", "remove by hand: "+strings.Join(names, ", "), cerr)
			if err == nil {
				err = cerr
			}
			return
		}
		done("cleanup", "removed "+strings.Join(names, ", "), nil)
	}()
	if perr != nil {
		return done("publish", "", perr)
	}
	done("publish", fmt.Sprintf("%d write call(s) to the provider", rep.Calls), nil)

	var servers []string
	for _, zone := range zonesOf(records) {
		s, err := d.Propagation.Servers(ctx, zone)
		if err != nil {
			return done("nameservers", "", err)
		}
		servers = append(servers, zone+" "+strings.Join(s, " "))
	}
	done("nameservers", strings.Join(servers, "; "), nil)

	if err := d.WaitVisible(ctx, records); err != nil {
		return done("visible", "", err)
	}
	done("visible", "every authoritative nameserver answers the probe", nil)
	return nil
}
