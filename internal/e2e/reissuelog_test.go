package e2e_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/dcvd/dcvd/reseller"
)

// reissueLog records every request that reaches the sandbox's reissue
// endpoint, replays included: which unique_id each node sent for which
// service.
type reissueLog struct {
	mu   sync.Mutex
	reqs []reissueRequest
	// gate, while open, keeps reissue requests waiting, as a slow CA
	// would (see hold).
	gate chan struct{}
}

type reissueRequest struct {
	serviceID, uniqueID string
}

// hold keeps the reissue requests from now on waiting until release is
// called (or their client gives up: a 503, which it retries).
func (l *reissueLog) hold() (release func()) {
	gate := make(chan struct{})
	l.mu.Lock()
	l.gate = gate
	l.mu.Unlock()
	return sync.OnceFunc(func() { close(gate) })
}

// wrap records the reissue requests on their way to h.
func (l *reissueLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, reseller.PathReissue) {
			l.mu.Lock()
			gate := l.gate
			l.mu.Unlock()
			if gate != nil {
				select {
				case <-gate:
				case <-r.Context().Done():
					http.Error(w, "held back by the test", http.StatusServiceUnavailable)
					return
				}
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
			r.Body.Close()
			if err != nil {
				http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			var p map[string]any
			_ = json.Unmarshal(body, &p) // a malformed body is the sandbox's to refuse
			str := func(k string) string {
				if s, ok := p[k].(string); ok {
					return s
				}
				return r.URL.Query().Get(k)
			}
			l.mu.Lock()
			l.reqs = append(l.reqs, reissueRequest{serviceID: str("service_id"), uniqueID: str("unique_id")})
			l.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// uniqueIDs returns, per service, the distinct unique_ids sent for it.
func (l *reissueLog) uniqueIDs() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]string{}
	for _, r := range l.reqs {
		if !slices.Contains(out[r.serviceID], r.uniqueID) {
			out[r.serviceID] = append(out[r.serviceID], r.uniqueID)
		}
	}
	return out
}
