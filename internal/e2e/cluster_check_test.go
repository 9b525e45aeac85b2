package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// clusterStatus is one entry of "dcvd status --json" in cluster mode: the
// fields the tests read, by their JSON names.
type clusterStatus struct {
	certStatus
	Lease *struct {
		Holder  string    `json:"holder"`
		Token   int64     `json:"token"`
		Expires time.Time `json:"expires"`
		Current bool      `json:"current"`
	} `json:"lease"`
	Nodes []clusterNodeStatus `json:"nodes"`
}

// clusterNodeStatus is what "dcvd status --json" says of one node's
// deployment of a certificate.
type clusterNodeStatus struct {
	Node    string    `json:"node"`
	Serial  string    `json:"serial"`
	Updated time.Time `json:"updated"`
	Error   string    `json:"error"`
	Alive   bool      `json:"alive"`
}

// clusterStatuses runs "dcvd status --json" with a node's configuration
// and returns its entries by certificate; an error (not a failure) lets a
// caller poll through a moment when the command cannot answer.
func clusterStatuses(ctx context.Context, bin, cfgPath string) (map[string]clusterStatus, error) {
	r := runDcvd(ctx, bin, nil, "status", "--json", "--config", cfgPath)
	if statusFailed(r) {
		return nil, fmt.Errorf("dcvd status --json: %w\nstdout:\n%s\nstderr:\n%s", r.err, r.stdout, r.stderr)
	}
	var sts []clusterStatus
	if err := json.Unmarshal([]byte(r.stdout), &sts); err != nil {
		return nil, fmt.Errorf("dcvd status --json printed %q: %w", r.stdout, err)
	}
	out := map[string]clusterStatus{}
	for _, s := range sts {
		out[s.Name] = s
	}
	return out, nil
}

// settled says why st is not yet a certificate live and deployed on every
// node in nodes ("" when it is).
func settled(st clusterStatus, nodes []string) string {
	switch {
	case st.Serial == "":
		if st.Order != nil {
			return fmt.Sprintf("no certificate yet, order %s at %s", st.Order.UniqueID, st.Order.Step)
		}
		return "no certificate and no order"
	case st.Order != nil:
		return fmt.Sprintf("order %s still at %s", st.Order.UniqueID, st.Order.Step)
	case st.LastError != "":
		return "last error: " + st.LastError
	}
	for _, name := range nodes {
		i := slices.IndexFunc(st.Nodes, func(n clusterNodeStatus) bool { return n.Node == name })
		if i < 0 {
			return fmt.Sprintf("node %s not in the status (%+v)", name, st.Nodes)
		}
		n := st.Nodes[i]
		if !n.Alive || !strings.EqualFold(n.Serial, st.Serial) || n.Error != "" {
			return fmt.Sprintf("node %s: alive %t, serial %q (live %s), error %q", name, n.Alive, n.Serial, st.Serial, n.Error)
		}
	}
	return ""
}

// waitUntil polls cond every 200ms until it returns "", and fails with what
// it last returned when ctx ends.
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() string) {
	t.Helper()
	for {
		why := cond()
		if why == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not reached (%v): %s", what, ctx.Err(), why)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// filesUnder lists the regular files under dir, relative to it.
func filesUnder(dir string) []string {
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			out = append(out, strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
	return out
}

// checkOnlyDirs fails unless everything under dir is one of the
// directories allowed (relative to dir), each empty but for the others.
func checkOnlyDirs(t *testing.T, dir string, allowed ...string) {
	t.Helper()
	var stray []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			stray = append(stray, err.Error())
			return nil
		}
		if rel := strings.TrimPrefix(p, dir+"/"); p != dir && (!d.IsDir() || !slices.Contains(allowed, rel)) {
			stray = append(stray, rel)
		}
		return nil
	})
	if len(stray) > 0 {
		t.Errorf("%s still holds %v", dir, stray)
	}
}

// reloads reads a node's reload log: the serials reloaded, by certificate.
func reloads(t *testing.T, n *clusterNode) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(n.reloadLog)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if cert, serial, ok := strings.Cut(line, " "); ok {
			out[cert] = append(out[cert], serial)
		}
	}
	return out
}

// checkSameDeployed fails unless the deploy directories of cert on nodes
// hold the same four files, byte for byte, and checks the first one fully
// (complete, the key matching, chaining to the sandbox root for names).
func checkSameDeployed(t *testing.T, w *clusterWorld, cert string, names []string, nodes ...*clusterNode) {
	t.Helper()
	checkDeployed(t, nodes[0].deployDir(cert), w.sb.RootPool(), names)
	for _, f := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
		want, err := os.ReadFile(filepath.Join(nodes[0].deployDir(cert), f))
		if err != nil {
			t.Fatalf("node %s: %v", nodes[0].name, err)
		}
		for _, n := range nodes[1:] {
			got, err := os.ReadFile(filepath.Join(n.deployDir(cert), f))
			if err != nil {
				t.Errorf("node %s: %v", n.name, err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("certificate %s: node %s's %s differs from node %s's", cert, n.name, f, nodes[0].name)
			}
		}
	}
}

// sandboxService is a service as the sandbox's /sandbox/services shows it.
type sandboxService struct {
	ID            string `json:"service_id"`
	OrderUniqueID string `json:"order_unique_id"`
	OrderStatus   string `json:"order_status"`
	Serial        string `json:"serial"`
}

// sandboxServices reads the sandbox's services through its control
// endpoint, by service ID.
func sandboxServices(ctx context.Context, t *testing.T, sbURL string) map[string]sandboxService {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sbURL+"/sandbox/services", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /sandbox/services: %v", err)
	}
	defer resp.Body.Close()
	var env struct {
		Data []sandboxService `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		t.Fatalf("GET /sandbox/services: %v", err)
	}
	out := map[string]sandboxService{}
	for _, s := range env.Data {
		out[s.ID] = s
	}
	return out
}

// checkOneOrderEach fails unless the sandbox charged exactly once for each
// certificate, and every reissue request for it carried that charge's
// unique_id; it returns the unique_ids by certificate.
func checkOneOrderEach(t *testing.T, w *clusterWorld) map[string]string {
	t.Helper()
	uids := map[string]string{}
	ledger := w.sb.Ledger()
	for _, c := range ledger {
		if prev, ok := uids[c.ServiceID]; ok {
			t.Errorf("service %s charged twice: %s and %s", c.ServiceID, prev, c.UniqueID)
		}
		uids[c.ServiceID] = c.UniqueID
	}
	if len(ledger) != len(w.certs) {
		t.Errorf("the sandbox charged %d time(s) (%+v), want once for each of %d certificate(s)", len(ledger), ledger, len(w.certs))
	}
	sent := w.reissues.uniqueIDs()
	for _, c := range w.certs {
		if _, ok := uids[c.name]; !ok {
			t.Errorf("certificate %s was never charged", c.name)
		}
		if got := sent[c.name]; len(got) != 1 || got[0] != uids[c.name] {
			t.Errorf("certificate %s: reissue requests carried unique_ids %v, want only %s", c.name, got, uids[c.name])
		}
	}
	return uids
}
