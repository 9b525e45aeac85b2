package cluster

import (
	"context"
	"sync"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
)

// Host is what a node needs of the daemon it is part of: the daemon
// drives the orders and deploys; the node says when.
type Host interface {
	// CertConfig is the configuration of the certificate name, or an
	// error when it has none.
	CertConfig(name string) (*config.CertConfig, error)
	// Certificates are the configured certificates, as of now.
	Certificates() []config.CertConfig
	// WakeOrder wakes the driver of the order uniqueID, if one waits in
	// this process: the CA called back another node.
	WakeOrder(uniqueID string)
	// Resume drives the orders in flight given, which no other node
	// visibly holds, unless this process drives them already.
	Resume(ctx context.Context, wg *sync.WaitGroup, orders []*store.Order)
	// Driving reports whether this process drives cert's order.
	Driving(cert string) bool
	// DeployedSerial is the serial of the certificate in cc's deploy
	// directory, "" when there is none to read.
	DeployedSerial(ctx context.Context, cc *config.CertConfig) string
	// DeployLive checks the live certificate read from the database, then
	// installs it into cc's deploy directory and reloads.
	DeployLive(ctx context.Context, cc *config.CertConfig, live *store.Certificate) error
	// Deployed follows a deployment of cc on this node (its metrics).
	Deployed(ctx context.Context, cc *config.CertConfig)
}
