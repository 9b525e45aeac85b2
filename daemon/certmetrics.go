package daemon

import (
	"context"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// updateCertMetrics publishes the expiry, planned renewal and readiness of
// cc's live certificate, read from the store.
func (d *Daemon) updateCertMetrics(ctx context.Context, cc *config.CertConfig) {
	if d.metrics == nil {
		return
	}
	if r, live, err := d.renewal(ctx, cc, d.cluster == nil); err == nil {
		d.publishCertMetrics(cc, live, r)
	}
}

// publishCertMetrics publishes what the caller already read.
func (d *Daemon) publishCertMetrics(cc *config.CertConfig, live *store.Certificate, r Renewal) {
	var notAfter time.Time
	ready := false
	if live != nil {
		notAfter = live.NotAfter
		ready = d.now().Before(live.NotAfter) && len(missingNames(cc, live)) == 0
	}
	d.metrics.SetCertificate(cc.Name, notAfter, r.At, ready)
}
