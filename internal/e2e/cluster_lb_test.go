package e2e_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

// loadBalancer stands in front of the nodes' web servers as a real one
// would: each request goes to the next backend in turn. For every request
// for a validation file it records whether every backend's web root held
// that file, with the same content, at that moment.
type loadBalancer struct {
	roots    []string
	backends []http.Handler

	mu      sync.Mutex
	next    int
	down    map[int]bool // backends taken out, as a health check would
	fetches []dcvFetch
}

// dcvFetch is one request for a validation file.
type dcvFetch struct {
	at        time.Time
	host, uri string
	byCA      bool // by the sandbox CA, not a node's self-check
	backend   int
	status    int
	onAll     bool   // every web root held the file, the same
	differs   string // else what was missing or different
}

func newLoadBalancer(roots []string) *loadBalancer {
	lb := &loadBalancer{roots: roots, down: map[int]bool{}}
	for _, r := range roots {
		lb.backends = append(lb.backends, http.FileServer(http.Dir(r)))
	}
	return lb
}

// setDown takes backend i out of (or back into) the rotation.
func (lb *loadBalancer) setDown(i int, down bool) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.down[i] = down
}

func (lb *loadBalancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	lb.mu.Lock()
	i := lb.next
	for range lb.roots {
		if !lb.down[i] {
			break
		}
		i = (i + 1) % len(lb.roots)
	}
	lb.next = (i + 1) % len(lb.roots)
	lb.mu.Unlock()

	if !strings.HasPrefix(r.URL.Path, reseller.PKIValidationPath) {
		lb.backends[i].ServeHTTP(w, r)
		return
	}
	f := dcvFetch{at: time.Now(), host: r.Host, uri: r.URL.Path, backend: i,
		byCA: r.Header.Get("User-Agent") == "dcvd-sandbox-dcv-checker"}
	f.onAll, f.differs = lb.onAllRoots(r.URL.Path)
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	lb.backends[i].ServeHTTP(rec, r)
	f.status = rec.status
	lb.mu.Lock()
	lb.fetches = append(lb.fetches, f)
	lb.mu.Unlock()
}

// onAllRoots reports whether every web root holds the file at uri, with
// the same content, and if not, what is missing or different.
func (lb *loadBalancer) onAllRoots(uri string) (bool, string) {
	rel := filepath.FromSlash(strings.TrimPrefix(path.Clean(uri), "/"))
	var first []byte
	var problems []string
	for i, root := range lb.roots {
		b, err := os.ReadFile(filepath.Join(root, rel))
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("web root %d: %v", i, err))
		case i > 0 && first != nil && !bytes.Equal(b, first):
			problems = append(problems, fmt.Sprintf("web root %d holds %q, web root 0 %q", i, b, first))
		case i == 0:
			first = b
		}
	}
	return len(problems) == 0, strings.Join(problems, "; ")
}

// caFetches returns the requests the sandbox CA made.
func (lb *loadBalancer) caFetches() []dcvFetch {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var out []dcvFetch
	for _, f := range lb.fetches {
		if f.byCA {
			out = append(out, f)
		}
	}
	return out
}

// report lists every validation file request, for a failed test's log.
func (lb *loadBalancer) report() string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var b strings.Builder
	for _, f := range lb.fetches {
		who := "self-check"
		if f.byCA {
			who = "CA"
		}
		fmt.Fprintf(&b, "%s %-10s http://%s%s → backend %d, HTTP %d, on all web roots: %t %s\n",
			f.at.Format("15:04:05.000"), who, f.host, f.uri, f.backend, f.status, f.onAll, f.differs)
	}
	return b.String()
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}
