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
	// ID is the provider's ID of the record, as the provider gave it when
	// the record was written or last seen by Publish, for providers whose
	// listing may not show the record again (alidns lists only the newest
	// 20 records of a zone): Cleanup deletes by it. Empty for records
	// planned before dcvd kept IDs and for providers that give none;
	// Cleanup then looks the record up by name.
	ID string `json:"id,omitempty"`
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
//
// Publish sets the ID of each record in records itself (and in the report)
// to the one the provider gave or showed, so that a caller that persists
// records after Publish keeps what Cleanup needs to find them again.
func (d *DNS) Publish(ctx context.Context, records []Record) (Report, error) {
	var rep Report
	reader := readerFor(d.Provider)
	for _, zone := range zonesOf(records) {
		idx := indexesIn(records, zone)
		existing, err := d.read(ctx, reader, zone, records, idx)
		if err != nil {
			return rep, fmt.Errorf("dns %s: read zone %s: %s", d.Name, zone, d.Redact(err.Error()))
		}
		var write, stale []libdns.Record
		var set []int
		for _, i := range idx {
			r := records[i]
			correct, other, id := false, "", ""
			var old []libdns.Record
			for _, e := range existing {
				rr := e.RR()
				if !sameName(rr.Name, r.Name, zone) {
					continue
				}
				switch {
				case rr.Type == "CNAME" && sameHost(rr.Data, r.Target):
					correct, id = true, recordID(e)
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
				if id != "" {
					records[i].ID = id
				}
				rep.Unchanged = append(rep.Unchanged, records[i])
				continue
			}
			stale = append(stale, old...)
			write = append(write, r.libdns())
			set = append(set, i)
		}
		if len(write) == 0 {
			continue
		}
		written, err := d.write(ctx, zone, write, stale, &rep)
		if err != nil {
			return rep, fmt.Errorf("dns %s: publish %d record(s) in zone %s: %s", d.Name, len(write), zone, d.Redact(err.Error()))
		}
		for _, i := range set {
			// A new record has a new ID: an ID kept from before names
			// a record that is gone or stale.
			records[i].ID = ""
			for _, w := range written {
				rr := w.RR()
				if rr.Type == "CNAME" && sameName(rr.Name, records[i].Name, zone) && sameHost(rr.Data, records[i].Target) {
					records[i].ID = recordID(w)
				}
			}
			rep.Set = append(rep.Set, records[i])
		}
	}
	return rep, nil
}

// read returns what Publish must know of the zone: the records at the names
// of records[idx], through the provider's recordReader when it has one,
// else its whole listing.
func (d *DNS) read(ctx context.Context, reader recordReader, zone string, records []Record, idx []int) ([]libdns.Record, error) {
	if reader == nil {
		var existing []libdns.Record
		err := safely("read zone", func() (err error) {
			existing, err = d.Provider.GetRecords(ctx, zone)
			return err
		})
		return existing, err
	}
	var out []libdns.Record
	for _, i := range idx {
		recs, err := reader.atName(ctx, zone, records[i].Name)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

// write puts records into zone, replacing the stale CNAMEs at their names,
// and returns the records as the provider says it wrote them.
func (d *DNS) write(ctx context.Context, zone string, records, stale []libdns.Record, rep *Report) ([]libdns.Record, error) {
	var written []libdns.Record
	if !d.setUnsafe {
		rep.Calls++
		err := safely("SetRecords", func() (err error) {
			written, err = d.Provider.SetRecords(ctx, zone, records)
			return err
		})
		return written, err
	}
	if len(stale) > 0 {
		rep.Calls++
		if err := safely("DeleteRecords", func() error {
			_, err := d.Provider.DeleteRecords(ctx, zone, stale)
			return err
		}); err != nil {
			return nil, fmt.Errorf("remove stale records: %w", err)
		}
	}
	rep.Calls++
	err := safely("AppendRecords", func() (err error) {
		written, err = d.Provider.(libdns.RecordAppender).AppendRecords(ctx, zone, records)
		return err
	})
	return written, err
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
// names with these targets, in one DeleteRecords call. Records already gone
// are not an error, so it is safe to repeat.
//
// Where the provider has a recordReader, each record is found by its ID,
// else (no ID kept, or the ID no longer names this record) by a query for
// its name; otherwise the provider's listing of the zone says.
func (d *DNS) Cleanup(ctx context.Context, records []Record) error {
	reader := readerFor(d.Provider)
	for _, zone := range zonesOf(records) {
		recs := inZone(records, zone)
		var doomed []libdns.Record
		var err error
		if reader != nil {
			doomed, err = findOwn(ctx, reader, zone, recs)
		} else {
			doomed, err = d.findListed(ctx, zone, recs)
		}
		if err != nil {
			return fmt.Errorf("dns %s: read zone %s: %s", d.Name, zone, d.Redact(err.Error()))
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

// findListed returns the records of the provider's listing of zone that
// are among recs.
func (d *DNS) findListed(ctx context.Context, zone string, recs []Record) ([]libdns.Record, error) {
	var existing []libdns.Record
	if err := safely("read zone", func() (err error) {
		existing, err = d.Provider.GetRecords(ctx, zone)
		return err
	}); err != nil {
		return nil, err
	}
	var doomed []libdns.Record
	for _, e := range existing {
		for _, r := range recs {
			if r.is(e, zone) {
				doomed = append(doomed, e)
				break
			}
		}
	}
	return doomed, nil
}

// findOwn returns, with their IDs, the records of zone that are among recs:
// by each one's ID when it has one that still names it, else by its name.
func findOwn(ctx context.Context, reader recordReader, zone string, recs []Record) ([]libdns.Record, error) {
	var doomed []libdns.Record
	for _, r := range recs {
		if r.ID != "" {
			e, err := reader.byID(ctx, zone, r.ID)
			if err != nil {
				return nil, err
			}
			if e != nil && r.is(e, zone) {
				doomed = append(doomed, e)
				continue
			}
			// Gone, or changed by hand since: only a record at the
			// name with the target is still dcvd's.
		}
		at, err := reader.atName(ctx, zone, r.Name)
		if err != nil {
			return nil, err
		}
		for _, e := range at {
			if r.is(e, zone) {
				doomed = append(doomed, e)
			}
		}
	}
	return doomed, nil
}

// is reports whether a provider's record e of zone is the CNAME r.
func (r Record) is(e libdns.Record, zone string) bool {
	rr := e.RR()
	return rr.Type == "CNAME" && sameName(rr.Name, r.Name, zone) && sameHost(rr.Data, r.Target)
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

// indexesIn returns the indexes of the records in zone.
func indexesIn(records []Record, zone string) []int {
	var out []int
	for i, r := range records {
		if r.Zone == zone {
			out = append(out, i)
		}
	}
	return out
}

// inZone returns the records in zone.
func inZone(records []Record, zone string) []Record {
	var out []Record
	for _, i := range indexesIn(records, zone) {
		out = append(out, records[i])
	}
	return out
}
