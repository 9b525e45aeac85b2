package daemon

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/certs"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/keyfiles"
	"github.com/dcvd/dcvd/daemon/store"
)

// This file starts orders: Reissue and its dry run Plan, the guards that
// refuse an order before it costs anything, and newOrder, which persists
// an order's intent (unique_id, key, CSR) before anything is sent.

// ReissueOptions say how Reissue drives an order.
type ReissueOptions struct {
	// AllowDomainRemoval confirms a reissue that drops names of the live
	// certificate, which the CA answers by revoking it.
	AllowDomainRemoval bool
	// Wait drives the order until it ends, sleeping through backoffs and
	// while the CA works. Otherwise Reissue returns at the first wait, and
	// the running daemon carries the order on.
	Wait bool
	// Retrying, when set, is told of each failed try of a step that will
	// be retried, once the try is recorded. An error it returns stops the
	// drive with that error; the order stays in flight, resumable.
	// dcvd reissue --wait gives up with it on repeated failures that
	// waiting cannot mend.
	Retrying func(o *store.Order, err error) error
}

// DomainRemovalError refuses a reissue that would drop names of the live
// certificate without the admin's confirmation.
type DomainRemovalError struct {
	Cert    string
	Serial  string
	Dropped []string
}

func (e *DomainRemovalError) Error() string {
	return fmt.Sprintf("certificate %s: the reissue would drop %s from the live certificate (serial %s), and the CA revokes a certificate whose names a reissue replaces; if that is intended, run: dcvd reissue %s --allow-domain-removal",
		e.Cert, strings.Join(e.Dropped, ", "), e.Serial, e.Cert)
}

// Reissue reissues the certificate name now, or resumes its order in
// flight, and drives the order (see ReissueOptions).
// Reissue reissues the certificate name now, or resumes its order in
// flight, and drives the order (see ReissueOptions).
func (d *Daemon) Reissue(ctx context.Context, name string, opt ReissueOptions) (*store.Order, error) {
	cc, err := d.certConfig(name)
	if err != nil {
		return nil, err
	}
	h, err := d.acquire(ctx, cc, func(lctx context.Context) (*store.Order, error) {
		return d.newOrder(lctx, cc, opt.AllowDomainRemoval)
	})
	if err != nil {
		return nil, err
	}
	defer h.Release()
	return h.o, h.drive(h.ctx, opt)
}

// Plan says what Reissue would do, without doing it: the names and their
// methods, and whether the domain-removal guard would refuse.
func (d *Daemon) Plan(ctx context.Context, name string, allowDomainRemoval bool) (*store.Order, error) {
	cc, err := d.certConfig(name)
	if err != nil {
		return nil, err
	}
	if o, err := d.store.ActiveOrder(ctx, name); err == nil {
		return o, nil
	}
	if err := d.guardDomainRemoval(ctx, cc, allowDomainRemoval); err != nil {
		return nil, err
	}
	if err := d.guardServiceEnded(cc); err != nil {
		return nil, err
	}
	return &store.Order{Cert: cc.Name, ServiceID: cc.ServiceID, Names: cc.Names(), DomainDCV: cc.Domains, KeyType: cc.KeyType}, nil
}

func (d *Daemon) guardDomainRemoval(ctx context.Context, cc *config.CertConfig, allow bool) error {
	live, err := d.store.Certificate(ctx, cc.Name)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var dropped []string
	for _, n := range live.Names {
		if _, kept := cc.Domains[n]; !kept {
			dropped = append(dropped, n)
		}
	}
	if len(dropped) == 0 || allow {
		return nil
	}
	return &DomainRemovalError{Cert: cc.Name, Serial: live.Serial, Dropped: dropped}
}

// newOrder persists the intent of a reissue: unique_id, key, CSR. The key
// is on disk before the order row names it, and both before anything is
// sent.
func (d *Daemon) newOrder(ctx context.Context, cc *config.CertConfig, allowDomainRemoval bool) (*store.Order, error) {
	if err := d.guardDomainRemoval(ctx, cc, allowDomainRemoval); err != nil {
		return nil, err
	}
	if err := d.guardServiceEnded(cc); err != nil {
		return nil, err
	}
	o := &store.Order{
		UniqueID:           "dcvd-" + randomHex(16),
		Cert:               cc.Name,
		ServiceID:          cc.ServiceID,
		Step:               store.StepNew,
		Names:              cc.Names(),
		DomainDCV:          cc.Domains,
		KeyType:            cc.KeyType,
		CallbackToken:      randomHex(24),
		AllowDomainRemoval: allowDomainRemoval,
	}
	log := d.orderLog(o)

	var reused bool
	if cc.ReuseKey {
		if live, err := d.store.Certificate(ctx, cc.Name); err == nil {
			held := &store.Order{Cert: cc.Name, UniqueID: live.UniqueID, KeyFile: live.KeyFile, KeySealed: live.KeySealed}
			// A key is reused only in the form this mode keeps keys in.
			if (d.sealer != nil) == (live.KeySealed != "") && (live.KeyFile != "" || live.KeySealed != "") {
				if _, _, err := d.orderKey(held); err == nil {
					o.KeyFile, o.KeySealed, reused = live.KeyFile, live.KeySealed, true
				}
			}
		}
	}
	if !reused {
		key, err := certs.GenerateKey(cc.KeyType)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
		}
		if d.sealer != nil {
			// Cluster mode: the key lives in the shared database, sealed,
			// so that whichever node finishes the order has it.
			keyPEM, err := certs.EncodeKey(key)
			if err != nil {
				return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
			}
			if o.KeySealed, err = d.sealer.seal(cc.Name, keyPEM); err != nil {
				return nil, err
			}
		} else {
			o.KeyFile = keyfiles.Path(d.config().Daemon.StateDir, cc.Name, o.UniqueID)
			if err := certs.WriteKey(o.KeyFile, key); err != nil {
				return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
			}
		}
	}
	key, _, err := d.orderKey(o)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
	}
	if o.CSR, err = certs.NewCSR(key, o.Names); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", cc.Name, err)
	}
	if err := d.storeFor(cc.Name).PutOrder(ctx, o); err != nil {
		return nil, fmt.Errorf("certificate %s: record the order: %w", cc.Name, err)
	}
	log.Info("order created", zap.Strings("names", o.Names), zap.Bool("key_reused", reused), zap.String("key_file", o.KeyFile),
		zap.Bool("key_sealed", o.KeySealed != ""))
	d.metrics.ReissueStarted(cc.Name)
	d.stepped(ctx, o)
	return o, nil
}

// orderKey returns o's private key and its PEM: opened from the database
// in cluster mode, else read from its file.
func (d *Daemon) orderKey(o *store.Order) (crypto.Signer, []byte, error) {
	if o.KeySealed == "" {
		return certs.LoadKey(o.KeyFile)
	}
	if d.sealer == nil {
		return nil, nil, fmt.Errorf("order %s: its key is sealed in the database, and [store] has no encryption key to open it", o.UniqueID)
	}
	keyPEM, err := d.sealer.open(o.Cert, o.KeySealed)
	if err != nil {
		return nil, nil, fmt.Errorf("order %s: %w", o.UniqueID, err)
	}
	key, err := certs.ParseKey(keyPEM, "of order "+o.UniqueID)
	if err != nil {
		return nil, nil, err
	}
	return key, keyPEM, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
