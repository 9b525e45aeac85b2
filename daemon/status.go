package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// CertStatus is what "dcvd status" shows of one certificate.
type CertStatus struct {
	Name          string       `json:"name"`
	Names         []string     `json:"names"`
	Serial        string       `json:"serial,omitempty"`
	NotAfter      *time.Time   `json:"not_after,omitempty"`
	NextRenewal   time.Time    `json:"next_renewal"`
	RenewalReason string       `json:"renewal_reason"`
	Order         *OrderStatus `json:"order,omitempty"`
	// LastError is the error of the order in flight, else of the last
	// attempt when it failed.
	LastError string  `json:"last_error,omitempty"`
	TotalCost float64 `json:"total_cost"`
}

// OrderStatus is the order in flight of a certificate.
type OrderStatus struct {
	UniqueID    string     `json:"unique_id"`
	Step        Step       `json:"step"`
	Attempts    int        `json:"attempts,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	Cost        float64    `json:"cost"`
	Created     time.Time  `json:"created"`
}

// Status reports every configured certificate.
func (d *Daemon) Status(ctx context.Context) ([]CertStatus, error) {
	var out []CertStatus
	cfg := d.config()
	for i := range cfg.Certificates {
		cc := &cfg.Certificates[i]
		st := CertStatus{Name: cc.Name, Names: cc.Names()}
		live, err := d.store.Certificate(ctx, cc.Name)
		switch {
		case errors.Is(err, ErrNotFound):
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
		if len(history) > 0 && history[0].Outcome == StepFailed {
			st.LastError = history[0].Error
		}
		if o, err := d.store.ActiveOrder(ctx, cc.Name); err == nil {
			ost := &OrderStatus{UniqueID: o.UniqueID, Step: o.Step, Attempts: o.Attempts, Cost: o.Cost, Created: o.Created}
			if !o.NextAttempt.IsZero() {
				na := o.NextAttempt
				ost.NextAttempt = &na
			}
			st.Order = ost
			if o.LastError != "" {
				st.LastError = o.LastError
			}
		} else if !errors.Is(err, ErrNotFound) {
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
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("certificate %s has no live certificate to deploy yet", name)
	}
	if err != nil {
		return err
	}
	if live.KeyFile == "" {
		return fmt.Errorf("certificate %s: its live certificate was adopted from %s and dcvd does not hold its key", name, cc.Deploy.Dir)
	}
	o := &Order{Cert: live.Name, UniqueID: live.UniqueID, KeyFile: live.KeyFile, CertPEM: live.CertPEM,
		ChainPEM: live.ChainPEM, Names: live.Names, Serial: live.Serial, NotAfter: live.NotAfter}
	b, err := d.bundle(o)
	if err != nil {
		return err
	}
	return d.deployer.Deploy(ctx, cc.Deploy, b)
}
