package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/providers"
	"github.com/dcvd/dcvd/reseller"
)

// This file is where the steps reach what publishes and removes an
// order's DCV (a DNS provider, the file publisher picked in New) and what
// it deploys.

// dnsPublisher is what the steps need of a configured DNS provider
// (*providers.DNS).
type dnsPublisher interface {
	Plan(ctx context.Context, cnames []reseller.CNAMEInstruction) ([]providers.Record, error)
	Publish(ctx context.Context, records []providers.Record) (providers.Report, error)
	WaitVisible(ctx context.Context, records []providers.Record) error
	Cleanup(ctx context.Context, records []providers.Record) error
}

func (d *Daemon) dnsFor(cc *config.CertConfig) (dnsPublisher, error) {
	p := d.dnsProvider(cc.DNS)
	if p == nil {
		return nil, fmt.Errorf("certificate %s: dns = %q names no configured [dns.%s]", cc.Name, cc.DNS, cc.DNS)
	}
	return p, nil
}

// writeFiles publishes o's HTTP validation files (see
// dcvfiles.Publisher.Publish).
func (d *Daemon) writeFiles(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	return d.files.Publish(ctx, cc, o)
}

// standalone is the standalone responder listening on addr.
func (d *Daemon) standalone(addr string) *httpchallenge.Standalone {
	return d.local.Standalone(addr)
}

// cleanup removes the order's DCV records and files: exactly what was
// planned or written. Safe to repeat.
func (d *Daemon) cleanup(ctx context.Context, cc *config.CertConfig, o *store.Order) error {
	var errs []error
	if len(o.DNSRecords) > 0 {
		if p, err := d.dnsFor(cc); err != nil {
			errs = append(errs, err)
		} else if err := p.Cleanup(ctx, o.DNSRecords); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.files.Remove(cc, o); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		d.files.Forget(o.UniqueID)
	}
	return errors.Join(errs...)
}

func (d *Daemon) bundle(o *store.Order) (deploy.Bundle, error) {
	_, keyPEM, err := d.orderKey(o)
	if err != nil {
		return deploy.Bundle{}, fmt.Errorf("the key of order %s: %w", o.UniqueID, err)
	}
	return deploy.Bundle{Cert: o.Cert, CertPEM: o.CertPEM, ChainPEM: o.ChainPEM, KeyPEM: string(keyPEM),
		Names: o.Names, Serial: o.Serial, NotAfter: o.NotAfter}, nil
}

// notifyURL is where the CA calls back for o, or "" without callbacks.
func (d *Daemon) notifyURL(o *store.Order) string {
	base := strings.TrimSuffix(d.config().Daemon.CallbackURL, "/")
	if base == "" {
		return ""
	}
	return base + "/callback/" + url.PathEscape(o.CallbackToken)
}
