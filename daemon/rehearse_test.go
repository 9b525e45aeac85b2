package daemon

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libdns/libdns"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/store"
	"github.com/dcvd/dcvd/providers"
)

// refusingProvider is a DNS provider whose writes are refused, as with
// credentials that may read the zone but not change it.
type refusingProvider struct{ *hProvider }

func (p refusingProvider) SetRecords(context.Context, string, []libdns.Record) ([]libdns.Record, error) {
	return nil, errors.New("403 Forbidden: this token may not edit the zone")
}

// TestRehearse: a rehearsal passes on a good setup and fails naming the
// step on each broken one; whatever the outcome it charges nothing, sends
// no reissue, and leaves no order, key, DCV record or file behind.
func TestRehearse(t *testing.T) {
	tests := []struct {
		name string
		// edit breaks the configuration of harness h.
		edit func(h *harness, cfg *config.Config)
		// refuseDNS makes the DNS provider refuse writes.
		refuseDNS bool
		// failed is the first failed step; "" for a rehearsal that passes.
		failed, reason string
	}{
		{name: "good"},
		{name: "wrong secret", edit: func(_ *harness, cfg *config.Config) { cfg.API.AccessKeySecret = "not-the-secret" },
			failed: RehearseCredentials, reason: "refused the credentials"},
		{name: "unknown service_id", edit: func(_ *harness, cfg *config.Config) { cfg.Certificates[0].ServiceID = "no-such-service" },
			failed: RehearseService, reason: `no usable service "no-such-service"`},
		{name: "DNS provider cannot publish", refuseDNS: true,
			failed: "dns publish", reason: "may not edit the zone"},
		{name: "web root not served", edit: func(h *harness, cfg *config.Config) {
			// Written where the web server does not look.
			cfg.Certificates[0].Webroots[0].Dir = h.t.TempDir()
		}, failed: "http fetch www.example.com", reason: "HTTP 404"},
		{name: "deploy dir not writable", edit: func(h *harness, cfg *config.Config) {
			// Under a regular file: not creatable, even for root.
			file := filepath.Join(h.t.TempDir(), "file")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				h.t.Fatal(err)
			}
			cfg.Certificates[0].Deploy.Dir = filepath.Join(file, "deploy")
		}, failed: RehearsePreflight, reason: "deploy.dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			cfg := h.config(hDomains())
			if tt.edit != nil {
				tt.edit(h, cfg)
			}
			d := h.daemon(cfg, func(o *Options) {
				if tt.refuseDNS {
					o.DNS["zone"] = providers.NewWith("zone", refusingProvider{h.provider}, hZone, o.DNS["zone"].Propagation)
				}
			})
			r, err := d.Rehearse(hCtx(t), hCert, RehearseOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var rows []string
			for _, s := range r.Steps {
				rows = append(rows, s.Name)
			}
			failed := r.Failed()
			switch {
			case tt.failed == "" && len(failed) > 0:
				t.Fatalf("the rehearsal failed: %v (steps %v)", r.Err(), rows)
			case tt.failed != "" && len(failed) == 0:
				t.Fatalf("the rehearsal passed, want step %q to fail (steps %v)", tt.failed, rows)
			case tt.failed != "":
				if failed[0].Name != tt.failed || !strings.Contains(failed[0].Err.Error(), tt.reason) {
					t.Errorf("first failed step %q: %v; want %q with %q", failed[0].Name, failed[0].Err, tt.failed, tt.reason)
				}
				if err := r.Err(); err == nil || !strings.Contains(err.Error(), `step "`+tt.failed+`"`) {
					t.Errorf("Err() does not name the step: %v", err)
				}
			}
			// Every part is rehearsed whatever failed.
			for _, want := range []string{RehearsePlan, RehearseCredentials, RehearseService, RehearsePreflight,
				"dns publish", "dns cleanup", "http write", "http cleanup"} {
				if !strings.Contains(strings.Join(rows, "|")+"|", want+"|") {
					t.Errorf("no step %q in %v", want, rows)
				}
			}
			if tt.failed == "" {
				for _, want := range []string{"dns visible", "http fetch www.example.com"} {
					if !strings.Contains(strings.Join(rows, "|")+"|", want+"|") {
						t.Errorf("no step %q in %v", want, rows)
					}
				}
				if r.Plan == nil || len(r.Plan.Names) != 3 || r.Plan.KeyType != config.KeyECDSAP256 || r.Plan.UniqueID != "" {
					t.Errorf("plan %+v, want a new order of the 3 names", r.Plan)
				}
			}

			if n := len(h.sb.Ledger()); n != 0 {
				t.Errorf("the rehearsal charged %d time(s)", n)
			}
			if n := h.events.count(evReissue); n != 0 {
				t.Errorf("the rehearsal sent %d reissue(s)", n)
			}
			if o, err := d.Store().ActiveOrder(context.Background(), hCert); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("the rehearsal left an order: %+v, %v", o, err)
			}
			if keys := h.keyFiles(); len(keys) != 0 {
				t.Errorf("the rehearsal left key files: %v", keys)
			}
			if svcs, err := d.Store().Services(context.Background()); err != nil || len(svcs) != 0 {
				t.Errorf("the rehearsal recorded services: %+v, %v", svcs, err)
			}
			h.assertDCVClean()
			if entries, _ := os.ReadDir(cfg.Certificates[0].Webroots[0].Dir); len(entries) != 0 {
				t.Errorf("the rehearsal left %d entries in the web root", len(entries))
			}
		})
	}
}

// TestRehearseDomainRemoval: names the CA's certificate has and the
// configuration drops fail the service step (the CA revokes it), unless
// the removal is allowed.
func TestRehearseDomainRemoval(t *testing.T) {
	h := newHarness(t)
	h.issue(hCtx(t), h.daemon(h.config(hDomains()), nil))
	charged := len(h.sb.Ledger())

	fewer := hDomains()
	delete(fewer, "www.example.com")
	d := h.daemon(h.config(fewer), nil)
	for _, allow := range []bool{false, true} {
		r, err := d.Rehearse(hCtx(t), hCert, RehearseOptions{AllowDomainRemoval: allow})
		if err != nil {
			t.Fatal(err)
		}
		var service RehearsalStep
		for _, s := range r.Steps {
			if s.Name == RehearseService {
				service = s
			}
		}
		var dre *DomainRemovalError
		switch {
		case !allow && (!errors.As(service.Err, &dre) || len(dre.Dropped) != 1 || dre.Dropped[0] != "www.example.com"):
			t.Errorf("without --allow-domain-removal the service step says %v (%s), want www.example.com dropped", service.Err, service.Detail)
		case allow && (service.Err != nil || !strings.Contains(service.Detail, "drops www.example.com")):
			t.Errorf("with --allow-domain-removal the service step says %v (%s)", service.Err, service.Detail)
		}
	}
	if n := len(h.sb.Ledger()); n != charged {
		t.Errorf("the rehearsals charged %d time(s)", n-charged)
	}
}
