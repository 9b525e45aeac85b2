package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/daemon/store"
)

// serviceStatus is what Status shows of cc's service, from the recorded
// services; r is the certificate's next renewal.
func serviceStatus(cc *config.CertConfig, recorded map[string]store.Service, live *store.Certificate, r Renewal, now time.Time) *control.ServiceStatus {
	st := &control.ServiceStatus{ServiceID: cc.ServiceID}
	s, ok := recorded[cc.ServiceID]
	if !ok {
		return st
	}
	st.Status = s.Status
	if !s.Checked.IsZero() {
		c := s.Checked
		st.Checked = &c
	}
	if s.Expires.IsZero() {
		return st
	}
	e := s.Expires
	days := int(e.Sub(now).Hours() / 24)
	st.Expires, st.DaysLeft, st.Ended = &e, &days, s.Ended(now)
	end := e.UTC().Format("2006-01-02")
	switch {
	case st.Ended:
		st.Warning = fmt.Sprintf("the service ended on %s: no reissue is sent; buy a renewal and put its new service_id in the configuration", end)
	case reachesServiceEnd(cc, live, s, true):
		st.Warning = fmt.Sprintf("the live certificate already runs until the service ends (%s): no reissue can extend it; buy a renewal and put its new service_id in the configuration", end)
	case !r.At.Before(e):
		st.Warning = fmt.Sprintf("the next renewal (%s) falls after the service ends (%s): buy a renewal before then", r.At.UTC().Format("2006-01-02"), end)
	}
	return st
}

// Status reports every configured certificate.
func (d *Daemon) Status(ctx context.Context) ([]control.CertStatus, error) {
	var out []control.CertStatus
	cfg := d.config()
	cl, err := d.clusterStatus(ctx)
	if err != nil {
		return nil, err
	}
	services, err := d.store.Services(ctx)
	if err != nil {
		return nil, err
	}
	recorded := make(map[string]store.Service, len(services))
	for _, s := range services {
		recorded[s.ServiceID] = s
	}
	for i := range cfg.Certificates {
		cc := &cfg.Certificates[i]
		st := control.CertStatus{Name: cc.Name, Names: cc.Names()}
		if cl != nil {
			st.Lease, st.Nodes = cl.leases[cc.Name], cl.nodes[cc.Name]
		}
		live, err := d.store.Certificate(ctx, cc.Name)
		switch {
		case errors.Is(err, store.ErrNotFound):
			live = nil
		case err != nil:
			return nil, err
		default:
			st.Serial = live.Serial
			na := live.NotAfter
			st.NotAfter = &na
		}
		history, err := d.store.Attempts(ctx, cc.Name, 20)
		if err != nil {
			return nil, err
		}
		r := NextRenewal(cc, live, history, d.now())
		st.NextRenewal, st.RenewalReason = r.At, r.Reason
		st.Service = serviceStatus(cc, recorded, live, r, d.now())
		if len(history) > 0 && history[0].Outcome == store.StepFailed {
			st.LastError = history[0].Error
		}
		if o, err := d.store.ActiveOrder(ctx, cc.Name); err == nil {
			ost := &control.OrderStatus{UniqueID: o.UniqueID, Step: o.Step, Attempts: o.Attempts, LastError: o.LastError,
				Cost: o.Cost, Created: o.Created}
			if !o.NextAttempt.IsZero() {
				na := o.NextAttempt
				ost.NextAttempt = &na
			}
			if InBackoff(o, d.now()) {
				ost.Backoff, ost.Hint = true, "dcvd retry "+cc.Name
			}
			st.Order = ost
			if o.LastError != "" {
				st.LastError = o.LastError
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		if st.TotalCost, err = d.store.TotalCost(ctx, cc.Name); err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// Redeploy installs the live certificate of name again and reloads, as
// after a deploy directory was wiped or a reload failed.
func (d *Daemon) Redeploy(ctx context.Context, name string) error {
	cc, err := d.certConfig(name)
	if err != nil {
		return err
	}
	live, err := d.store.Certificate(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("certificate %s has no live certificate to deploy yet", name)
	}
	if err != nil {
		return err
	}
	if live.KeyFile == "" && live.KeySealed == "" {
		return fmt.Errorf("certificate %s: its live certificate was adopted from %s and dcvd does not hold its key", name, cc.Deploy.Dir)
	}
	o := &store.Order{Cert: live.Name, UniqueID: live.UniqueID, KeyFile: live.KeyFile, KeySealed: live.KeySealed, CertPEM: live.CertPEM,
		ChainPEM: live.ChainPEM, Names: live.Names, Serial: live.Serial, NotAfter: live.NotAfter}
	b, err := d.bundle(o)
	if err != nil {
		return err
	}
	return deploy.Deploy(ctx, d.target(cc), b)
}

// clusterView is what Status shows of a cluster, by certificate.
type clusterView struct {
	leases map[string]*control.LeaseStatus
	nodes  map[string][]control.NodeStatus
}

// clusterStatus reads the leases and the nodes' certificates; nil outside
// a cluster. Every node that ever reported is listed for every
// certificate, with "" where it reported nothing for it.
func (d *Daemon) clusterStatus(ctx context.Context) (*clusterView, error) {
	if d.cluster == nil {
		return nil, nil
	}
	cs := d.cluster.Store()
	leases, err := cs.Leases(ctx)
	if err != nil {
		return nil, err
	}
	nodes, err := cs.Nodes(ctx, d.cluster.LeaseDuration())
	if err != nil {
		return nil, err
	}
	certs, err := cs.NodeCerts(ctx)
	if err != nil {
		return nil, err
	}
	v := &clusterView{leases: map[string]*control.LeaseStatus{}, nodes: map[string][]control.NodeStatus{}}
	for _, l := range leases {
		// Current by the database's clock would need a query; the lease
		// row's expiry against this host's clock is what an admin reads.
		v.leases[l.Cert] = &control.LeaseStatus{Holder: l.Holder, Token: l.Token, Expires: l.Expires, Current: l.Expires.After(d.now())}
	}
	byCert := map[string]map[string]store.NodeCert{}
	for _, nc := range certs {
		if byCert[nc.Cert] == nil {
			byCert[nc.Cert] = map[string]store.NodeCert{}
		}
		byCert[nc.Cert][nc.Node] = nc
	}
	for _, cc := range d.config().Certificates {
		for _, n := range nodes {
			nc := byCert[cc.Name][n.Name]
			v.nodes[cc.Name] = append(v.nodes[cc.Name], control.NodeStatus{Node: n.Name, Serial: nc.Serial, Updated: nc.Updated,
				Error: nc.Error, Alive: n.Alive})
		}
	}
	return v, nil
}
