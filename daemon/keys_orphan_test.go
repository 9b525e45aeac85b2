package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dcvd/dcvd/daemon/store"
)

// daemonWithKeyDir is a daemon of the default configuration and the key
// directory of its certificate, created empty.
func (h *harness) daemonWithKeyDir() (*Daemon, string) {
	h.t.Helper()
	cfg := h.config(hDomains())
	d := h.daemon(cfg, nil)
	dir := filepath.Join(cfg.Daemon.StateDir, "keys", hCert)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		h.t.Fatal(err)
	}
	return d, dir
}

// A crash between writing an order's key and recording the order leaves a
// key nothing uses: it is removed once old enough; recorded orders' keys,
// the live certificate's, fresh files, and the keys still needed whose
// writing order the history's retention deleted (the previous generation
// reused it, or the order in flight does) stay.
func TestRemoveOrphanKeys(t *testing.T) {
	h := newHarness(t)
	d, dir := h.daemonWithKeyDir()
	ctx := context.Background()
	old := time.Now().Add(-2 * orphanKeyAge)
	write := func(name string, aged bool) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("key"), 0o600); err != nil {
			t.Fatal(err)
		}
		if aged {
			if err := os.Chtimes(p, old, old); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	orphan := write("dcvd-orphan.key", true)
	orphanTmp := write(".dcvd-orphan2.key.tmp-123", true)
	recorded := write("dcvd-recorded.key", true)
	liveKey := write("dcvd-live.key", true)
	fresh := write("dcvd-fresh.key", false)
	other := write("notes.txt", true)
	previousKey := write("dcvd-pruned.key", true)
	inFlightKey := write("dcvd-pruned2.key", true)
	for _, o := range []*store.Order{
		{UniqueID: "dcvd-recorded", Cert: hCert, Step: store.StepDone},
		{UniqueID: "dcvd-previous", Cert: hCert, Step: store.StepDone, KeyFile: previousKey},
		{UniqueID: "dcvd-inflight", Cert: hCert, Step: store.StepPublished, KeyFile: inFlightKey},
	} {
		if err := d.store.PutOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.store.PutCertificate(ctx, &store.Certificate{Name: hCert, Serial: "1", KeyFile: liveKey}); err != nil {
		t.Fatal(err)
	}
	d.removeOrphanKeys(ctx)
	for _, p := range []string{orphan, orphanTmp} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s: still there (%v)", filepath.Base(p), err)
		}
	}
	for _, p := range []string{recorded, liveKey, fresh, other, previousKey, inFlightKey} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: removed (%v)", filepath.Base(p), err)
		}
	}
}
