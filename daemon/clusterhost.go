package daemon

import (
	"context"
	"fmt"
	"sync"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/cluster"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file is the daemon's side of package cluster: what a node asks of
// the daemon (clusterHost), and the store a driver writes through.

// storeFor is the store through which the driver of cert writes: the
// fenced view of its lease in a cluster. Without the lease, a cluster
// node's writes of that certificate are refused: only the lease holder
// writes an order or a live certificate.
func (d *Daemon) storeFor(cert string) store.Store {
	if d.cluster == nil {
		return d.writeStore()
	}
	return d.cluster.StoreFor(cert)
}

// clusterHost is the daemon as its cluster node sees it.
type clusterHost struct{ d *Daemon }

var _ cluster.Host = clusterHost{}

func (h clusterHost) CertConfig(name string) (*config.CertConfig, error) { return h.d.certConfig(name) }
func (h clusterHost) Certificates() []config.CertConfig                  { return h.d.config().Certificates }
func (h clusterHost) WakeOrder(uniqueID string)                          { h.d.wakeOrder(uniqueID, wakeCallback) }
func (h clusterHost) Driving(cert string) bool                           { return h.d.isDriving(cert) }
func (h clusterHost) Deployed(ctx context.Context, cc *config.CertConfig) {
	h.d.updateCertMetrics(ctx, cc)
}

// Resume drives the orders given, those no other node holds, unless this
// process drives them already.
func (h clusterHost) Resume(ctx context.Context, wg *sync.WaitGroup, orders []*store.Order) {
	d := h.d
	d.life.startMu.Lock() // see lifecycle.startMu
	defer d.life.startMu.Unlock()
	for _, o := range orders {
		if ctx.Err() != nil {
			return
		}
		if d.isDriving(o.Cert) {
			continue
		}
		d.resume(ctx, wg, o)
	}
}

// DeployedSerial is the serial of the certificate in cc's deploy
// directory.
func (h clusterHost) DeployedSerial(ctx context.Context, cc *config.CertConfig) string {
	deployed, err := h.d.target(cc).Live(ctx)
	if err != nil {
		return ""
	}
	leaves, err := certs.ParsePEM(deployed.CertPEM)
	if err != nil {
		return ""
	}
	return certs.SerialHex(leaves[0])
}

// DeployLive verifies the live certificate read from the database against
// its key and the configured names, then installs it and reloads.
func (h clusterHost) DeployLive(ctx context.Context, cc *config.CertConfig, live *store.Certificate) error {
	d := h.d
	o := &store.Order{Cert: live.Name, UniqueID: live.UniqueID, KeySealed: live.KeySealed, CertPEM: live.CertPEM,
		ChainPEM: live.ChainPEM, Names: live.Names, Serial: live.Serial, NotAfter: live.NotAfter}
	key, _, err := d.orderKey(o)
	if err != nil {
		return err
	}
	// The database is shared: what it says is checked like the CA's reply.
	if _, err := certs.Verify(live.CertPEM, live.ChainPEM, key, cc.Names(), d.rootPool(), d.now()); err != nil {
		return fmt.Errorf("the live certificate in the database was refused: %w", err)
	}
	b, err := d.bundle(o)
	if err != nil {
		return err
	}
	return deploy.Deploy(ctx, d.target(cc), b)
}
