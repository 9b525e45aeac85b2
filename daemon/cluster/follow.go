package cluster

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// followLive deploys cc's live certificate on this node when its deploy
// directory holds another one, and records what the directory holds.
func (n *Node) followLive(ctx context.Context, host Host, cc *config.CertConfig, live *store.Certificate, active []*store.Order) {
	n.mu.Lock()
	last, known := n.recorded[cc.Name]
	n.mu.Unlock()
	if known && last.Serial == live.Serial && last.Error == "" {
		return // deployed here, and recorded: nothing to read
	}
	if host.Driving(cc.Name) {
		return // the driver deploys, and records, itself
	}
	for _, o := range active {
		if o.Cert == cc.Name && (o.Step == store.StepIssued || o.Step == store.StepDeployed) {
			// The live certificate is about to change; this node's
			// directory may already hold the new one (a driver that
			// died after installing): wait until it is recorded.
			return
		}
	}
	onDisk := host.DeployedSerial(ctx, cc)
	if onDisk == live.Serial || live.KeySealed == "" {
		// Up to date, or a certificate adopted from some node's deploy
		// directory, whose key the cluster does not hold.
		n.RecordDeployed(ctx, cc.Name, onDisk, nil)
		return
	}
	n.mu.Lock()
	retry := n.deployRetry[cc.Name]
	n.mu.Unlock()
	if time.Now().Before(retry) {
		return
	}
	log := n.log.With(zap.String("cert", cc.Name), zap.String("serial", live.Serial))
	if err := host.DeployLive(ctx, cc, live); err != nil {
		n.mu.Lock()
		n.deployFailures[cc.Name]++
		wait := n.backoff(n.deployFailures[cc.Name])
		n.deployRetry[cc.Name] = time.Now().Add(wait)
		n.mu.Unlock()
		log.Error("deploying the live certificate on this node", zap.Error(err), zap.Duration("retry_in", wait))
		n.RecordDeployed(ctx, cc.Name, onDisk, err)
		return
	}
	n.mu.Lock()
	delete(n.deployFailures, cc.Name)
	delete(n.deployRetry, cc.Name)
	n.mu.Unlock()
	log.Info("deployed the cluster's live certificate on this node", zap.String("dir", cc.Deploy.Dir))
	n.RecordDeployed(ctx, cc.Name, live.Serial, nil)
	host.Deployed(ctx, cc)
}

// RecordDeployed records what this node's deploy directory holds for
// cert, when it changed since the last record. A nil node (no cluster)
// records nothing.
func (n *Node) RecordDeployed(ctx context.Context, cert, serial string, deployErr error) {
	if n == nil {
		return
	}
	nc := store.NodeCert{Node: n.node, Cert: cert, Serial: serial}
	if deployErr != nil {
		nc.Error = deployErr.Error()
	}
	n.mu.Lock()
	last, ok := n.recorded[cert]
	n.mu.Unlock()
	if ok && last.Serial == nc.Serial && last.Error == nc.Error {
		return
	}
	if err := n.store.PutNodeCert(ctx, nc); err != nil {
		n.log.Warn("recording this node's certificate", zap.String("cert", cert), zap.Error(err))
		return
	}
	n.mu.Lock()
	n.recorded[cert] = nc
	n.mu.Unlock()
}
