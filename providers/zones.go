package providers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/libdns/libdns"
	"github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"
)

// defaultZoneLookupTimeout bounds one zone lookup when the finder is given
// no timeout.
const defaultZoneLookupTimeout = 30 * time.Second

// zoneListPage is the smallest number of zones at which a provider's zone
// list may be a first page only: Cloudflare's default page is 20 zones,
// and libdns/cloudflare v0.2.2 asks for no other page.
const zoneListPage = 20

// zoneFinder finds the zone that holds a record name: the configured zone,
// else the longest of the provider's zones that contains the name, else the
// zone an SOA lookup names. When the provider's list may be cut at a page,
// an SOA lookup also checks for a more specific zone than the list shows. Answers are cached for the finder's life (one
// run), so that the names of one reissue cost one lookup each.
//
// A zoneFinder is safe for concurrent use.
type zoneFinder struct {
	explicit  string        // configured zone, canonical; "" when none
	provider  Provider      // asked for its zones when it can list them
	resolvers []string      // for the SOA walk; empty: the system's
	timeout   time.Duration // bounds one lookup (zone list or SOA walk)

	mu     sync.Mutex
	zones  map[string]string // name (FQDN, canonical) → zone
	listed []string          // the provider's zones, once listed
}

// newZoneFinder returns a finder. explicit is the section's zone ("" for
// none); resolvers are "host:port" (empty: /etc/resolv.conf); timeout
// bounds each lookup, the provider's zone list or the whole SOA walk, and
// defaults to 30s. Each DNS query of a walk gets at most 5s of it.
func newZoneFinder(explicit string, p Provider, resolvers []string, timeout time.Duration) *zoneFinder {
	if explicit != "" {
		explicit = canonicalFQDN(explicit)
	}
	if timeout <= 0 {
		timeout = defaultZoneLookupTimeout
	}
	return &zoneFinder{
		explicit:  explicit,
		provider:  p,
		resolvers: append([]string(nil), resolvers...),
		timeout:   timeout,
		zones:     make(map[string]string),
	}
}

// zoneFor returns the zone holding name (an FQDN, trailing dot optional) as
// a lower-case FQDN with trailing dot.
func (z *zoneFinder) zoneFor(ctx context.Context, name string) (string, error) {
	fqdn := canonicalFQDN(name)
	if _, ok := dns.IsDomainName(fqdn); !ok || fqdn == "." {
		return "", fmt.Errorf("%q is not a domain name", name)
	}
	display := strings.TrimSuffix(fqdn, ".")
	if z.explicit != "" {
		// The configured zone is trusted over any lookup, but a name outside
		// it is a configuration mistake that a provider might act on anyway.
		if !dns.IsSubDomain(z.explicit, fqdn) {
			return "", fmt.Errorf("%s is not in the configured zone %s", display, z.explicit)
		}
		return z.explicit, nil
	}

	z.mu.Lock()
	zone, ok := z.zones[fqdn]
	z.mu.Unlock()
	if ok {
		return zone, nil
	}

	ctx, cancel := context.WithTimeout(ctx, z.timeout)
	defer cancel()
	zone, err := z.lookup(ctx, fqdn)
	if err != nil {
		return "", err
	}
	z.mu.Lock()
	z.zones[fqdn] = zone
	z.mu.Unlock()
	return zone, nil
}

func (z *zoneFinder) lookup(ctx context.Context, fqdn string) (string, error) {
	lister, ok := z.provider.(zoneLister)
	if !ok {
		return z.walk(ctx, fqdn)
	}
	zones, err := z.providerZones(ctx, lister)
	if err != nil {
		// Some credentials may edit records but not list zones (a
		// Cloudflare token scoped to one zone): DNS can still tell.
		zone, werr := z.walk(ctx, fqdn)
		if werr != nil {
			return "", fmt.Errorf("the provider could not list its zones (%v), and %w", err, werr)
		}
		return zone, nil
	}
	best := ""
	for _, zn := range zones {
		if dns.IsSubDomain(zn, fqdn) && len(zn) > len(best) {
			best = zn
		}
	}
	if best == "" {
		// Providers' zone lists may be one page only (libdns/cloudflare
		// returns the first 20 zones): ask DNS before giving up.
		zone, werr := z.walk(ctx, fqdn)
		if werr != nil {
			return "", fmt.Errorf("none of the provider's zones holds %s (zones: %s), and %w", strings.TrimSuffix(fqdn, "."), summarize(zones, 10), werr)
		}
		return zone, nil
	}
	if len(zones) >= zoneListPage {
		// The list may be one page of more (libdns/cloudflare lists the
		// first 20 zones), so a zone below best, such as a delegated
		// shop.example.com beside example.com, may be on a page not
		// shown: writing into best would then publish a record nobody
		// resolves. DNS tells; when it cannot, best is all there is.
		if zone, werr := z.walk(ctx, fqdn); werr == nil && zone != best && dns.IsSubDomain(best, zone) {
			return zone, nil
		}
	}
	return best, nil
}

// providerZones lists the provider's zones once per finder.
func (z *zoneFinder) providerZones(ctx context.Context, lister zoneLister) ([]string, error) {
	z.mu.Lock()
	listed := z.listed
	z.mu.Unlock()
	if listed != nil {
		return listed, nil
	}
	var list []libdns.Zone
	err := safely("list zones", func() (err error) {
		list, err = lister.ListZones(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	zones := make([]string, 0, len(list))
	for _, zn := range list {
		if zn.Name != "" {
			zones = append(zones, canonicalFQDN(zn.Name))
		}
	}
	z.mu.Lock()
	z.listed = zones
	z.mu.Unlock()
	return zones, nil
}

// walk asks the resolvers for the SOA of fqdn, then of each parent, and
// stops at the registrable domain: a zone above it (a TLD, or a public
// suffix such as github.io) is never one a customer's provider holds.
func (z *zoneFinder) walk(ctx context.Context, fqdn string) (string, error) {
	display := strings.TrimSuffix(fqdn, ".")
	resolvers, err := resolverList(z.resolvers)
	if err != nil {
		return "", fmt.Errorf("SOA lookup: %w", err)
	}
	limit := fqdn
	if reg, err := publicsuffix.EffectiveTLDPlusOne(display); err == nil {
		limit = canonicalFQDN(reg)
	}
	for d := fqdn; ; {
		r, err := askResolvers(ctx, resolvers, d, dns.TypeSOA)
		if err != nil {
			// A failure below the zone (a broken delegation) must not make
			// the walk settle on a parent that no longer serves the name.
			return "", fmt.Errorf("SOA lookup: %w", err)
		}
		aliased := false
		for _, rr := range r.Answer {
			switch v := rr.(type) {
			case *dns.SOA:
				if strings.EqualFold(v.Hdr.Name, d) {
					return d, nil
				}
			case *dns.CNAME:
				if strings.EqualFold(v.Hdr.Name, d) {
					aliased = true
				}
			}
		}
		// The SOA of a negative answer names the zone that holds d, unless d
		// is an alias: then it is the zone of the alias's target.
		if !aliased {
			for _, rr := range r.Ns {
				soa, ok := rr.(*dns.SOA)
				if !ok {
					continue
				}
				owner := canonicalFQDN(soa.Hdr.Name)
				if dns.IsSubDomain(owner, d) && dns.IsSubDomain(limit, owner) {
					return owner, nil
				}
			}
		}
		if d == limit || !dns.IsSubDomain(limit, d) {
			break
		}
		d = d[strings.IndexByte(d, '.')+1:]
	}
	return "", fmt.Errorf("no zone found for %s: no SOA at it or its parents up to %s (resolvers asked: %s)",
		display, strings.TrimSuffix(limit, "."), strings.Join(resolvers, ", "))
}

// summarize joins up to n items and says how many more there are.
func summarize(items []string, n int) string {
	if len(items) == 0 {
		return "none"
	}
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}
