package providers

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/libdns/libdns"

	"github.com/dcvd/dcvd/reseller"
)

// Record is one DCV CNAME that dcvd publishes. It is what the caller
// persists between Plan and Publish, so that the record can be removed even
// after a crash or a restart.
type Record struct {
	// Provider is the [dns.NAME] section that publishes it.
	Provider string `json:"provider"`
	// Zone is the zone holding it: FQDN with trailing dot, lower case.
	Zone string `json:"zone"`
	// Name is the record's owner: FQDN without trailing dot, lower case.
	Name string `json:"name"`
	// Target is the CNAME's target: host name without trailing dot.
	Target string `json:"target"`
	// TTL of the record.
	TTL time.Duration `json:"ttl"`
}

// Report says what Publish did.
type Report struct {
	// Set are the records written; Unchanged those already correct.
	Set, Unchanged []Record
	// Calls counts the write calls: one SetRecords per zone that needed a
	// change (for Kind.SetUnsafe providers, an AppendRecords, preceded by a
	// DeleteRecords when stale records had to go).
	Calls int
}

// Plan turns validated CNAME instructions into the records to publish:
// each name once (example.com and *.example.com share their record), each
// with its zone. It writes nothing; persist its result before Publish.
func (d *DNS) Plan(ctx context.Context, cnames []reseller.CNAMEInstruction) ([]Record, error) {
	byName := map[string]Record{}
	for _, c := range cnames {
		name := strings.ToLower(strings.TrimSuffix(c.Name, "."))
		target := strings.ToLower(strings.TrimSuffix(c.Target, "."))
		// reseller.ValidateInstructions guarantees this; checked again
		// because publishing anywhere else could break a live zone.
		if !strings.HasPrefix(name, "_") || strings.Count(name, ".") < 2 {
			return nil, fmt.Errorf("dns %s: %q is not a DCV record name (one _label under the validated domain); not publishing it", d.Name, c.Name)
		}
		if target == "" {
			return nil, fmt.Errorf("dns %s: record %s has no target", d.Name, name)
		}
		if prev, dup := byName[name]; dup {
			if prev.Target != target {
				return nil, fmt.Errorf("dns %s: record %s is asked to point to both %s and %s", d.Name, name, prev.Target, target)
			}
			continue
		}
		zone, err := d.zones.zoneFor(ctx, name)
		if err != nil {
			// Not wrapped: a provider's error text may carry a key.
			return nil, fmt.Errorf("dns %s: zone of %s: %s", d.Name, name, d.Redact(err.Error()))
		}
		byName[name] = Record{Provider: d.Name, Zone: zone, Name: name, Target: target, TTL: d.TTL}
	}
	out := make([]Record, 0, len(byName))
	for _, r := range byName {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Publish makes the records exist, with one SetRecords call per zone that
// needs a change. A record that is already correct is left alone. It
// refuses to publish where the name already holds records of another type,
// because SetRecords with a CNAME could delete them. Safe to repeat.
//
// For a provider whose SetRecords is unsafe (Kind.SetUnsafe), stale CNAMEs
// at the names are deleted as listed and the records are added with one
// AppendRecords call per zone instead.
func (d *DNS) Publish(ctx context.Context, records []Record) (Report, error) {
	var rep Report
	for _, zone := range zonesOf(records) {
		recs := inZone(records, zone)
		var existing []libdns.Record
		err := safely("read zone", func() (err error) {
			existing, err = d.Provider.GetRecords(ctx, zone)
			return err
		})
		if err != nil {
			return rep, fmt.Errorf("dns %s: read zone %s: %s", d.Name, zone, d.Redact(err.Error()))
		}
		var write, stale []libdns.Record
		var set []Record
		for _, r := range recs {
			correct, other := false, ""
			var old []libdns.Record
			for _, e := range existing {
				rr := e.RR()
				if !sameName(rr.Name, r.Name, zone) {
					continue
				}
				switch {
				case rr.Type == "CNAME" && sameHost(rr.Data, r.Target):
					correct = true
				case rr.Type == "CNAME":
					old = append(old, e)
				default:
					other = rr.Type
				}
			}
			if other != "" {
				return rep, fmt.Errorf("dns %s: %s already has a %s record in zone %s; dcvd does not replace records it did not create", d.Name, r.Name, other, zone)
			}
			if correct && len(old) == 0 {
				rep.Unchanged = append(rep.Unchanged, r)
				continue
			}
			stale = append(stale, old...)
			write = append(write, r.libdns())
			set = append(set, r)
		}
		if len(write) == 0 {
			continue
		}
		if err := d.write(ctx, zone, write, stale, &rep); err != nil {
			return rep, fmt.Errorf("dns %s: publish %d record(s) in zone %s: %s", d.Name, len(write), zone, d.Redact(err.Error()))
		}
		rep.Set = append(rep.Set, set...)
	}
	return rep, nil
}

// write puts records into zone, replacing the stale CNAMEs at their names.
func (d *DNS) write(ctx context.Context, zone string, records, stale []libdns.Record, rep *Report) error {
	if !d.setUnsafe {
		rep.Calls++
		return safely("SetRecords", func() error {
			_, err := d.Provider.SetRecords(ctx, zone, records)
			return err
		})
	}
	if len(stale) > 0 {
		rep.Calls++
		if err := safely("DeleteRecords", func() error {
			_, err := d.Provider.DeleteRecords(ctx, zone, stale)
			return err
		}); err != nil {
			return fmt.Errorf("remove stale records: %w", err)
		}
	}
	rep.Calls++
	return safely("AppendRecords", func() error {
		_, err := d.Provider.(libdns.RecordAppender).AppendRecords(ctx, zone, records)
		return err
	})
}

// WaitVisible returns once every authoritative nameserver of each record's
// zone answers with the record, or says which did not in time.
func (d *DNS) WaitVisible(ctx context.Context, records []Record) error {
	for _, zone := range zonesOf(records) {
		if err := d.Propagation.Wait(ctx, zone, inZone(records, zone)); err != nil {
			return fmt.Errorf("dns %s: %w", d.Name, err)
		}
	}
	return nil
}

// Cleanup removes exactly these records: for each zone, the CNAMEs at these
// names with these targets, as the provider lists them, in one DeleteRecords
// call. Records already gone are not an error, so it is safe to repeat.
func (d *DNS) Cleanup(ctx context.Context, records []Record) error {
	for _, zone := range zonesOf(records) {
		recs := inZone(records, zone)
		var existing []libdns.Record
		err := safely("read zone", func() (err error) {
			existing, err = d.Provider.GetRecords(ctx, zone)
			return err
		})
		if err != nil {
			return fmt.Errorf("dns %s: read zone %s: %s", d.Name, zone, d.Redact(err.Error()))
		}
		var doomed []libdns.Record
		for _, e := range existing {
			rr := e.RR()
			if rr.Type != "CNAME" {
				continue
			}
			for _, r := range recs {
				if sameName(rr.Name, r.Name, zone) && sameHost(rr.Data, r.Target) {
					doomed = append(doomed, e)
					break
				}
			}
		}
		if len(doomed) == 0 {
			continue
		}
		if err := safely("DeleteRecords", func() error {
			_, err := d.Provider.DeleteRecords(ctx, zone, doomed)
			return err
		}); err != nil {
			return fmt.Errorf("dns %s: remove %d record(s) from zone %s: %s", d.Name, len(doomed), zone, d.Redact(err.Error()))
		}
	}
	return nil
}

func (r Record) libdns() libdns.Record {
	return libdns.CNAME{
		Name:   libdns.RelativeName(r.Name+".", r.Zone),
		TTL:    r.TTL,
		Target: r.Target + ".",
	}
}

// sameName reports whether a zone-relative name from a provider is fqdn.
func sameName(relative, fqdn, zone string) bool {
	abs := libdns.AbsoluteName(relative, zone)
	return strings.EqualFold(strings.TrimSuffix(abs, "."), fqdn)
}

func sameHost(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

func zonesOf(records []Record) []string {
	seen := map[string]bool{}
	var zones []string
	for _, r := range records {
		if !seen[r.Zone] {
			seen[r.Zone] = true
			zones = append(zones, r.Zone)
		}
	}
	sort.Strings(zones)
	return zones
}

func inZone(records []Record, zone string) []Record {
	var out []Record
	for _, r := range records {
		if r.Zone == zone {
			out = append(out, r)
		}
	}
	return out
}
