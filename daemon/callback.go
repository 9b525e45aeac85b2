package daemon

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/store"
)

// maxCallbackBody bounds a callback's body, which is read only to be
// discarded: a callback is a hint, never data.
const maxCallbackBody = 64 << 10

// callbackWakeInterval is the least time between two wakes of one order by
// callbacks: a CA (or anyone holding the URL) that calls back in a loop
// costs at most one detail request per order per interval.
const callbackWakeInterval = 10 * time.Second

// callbackGate lets through at most one callback wake per order per
// callbackWakeInterval.
type callbackGate struct {
	mu   sync.Mutex
	last map[string]time.Time // unique_id → last wake let through
}

// allow reports whether a callback for uniqueID at now may wake its order.
func (g *callbackGate) allow(uniqueID string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.last == nil {
		g.last = map[string]time.Time{}
	}
	if t, ok := g.last[uniqueID]; ok && now.Sub(t) < callbackWakeInterval && !now.Before(t) {
		return false
	}
	// Entries older than the interval decide nothing: drop them, so the
	// map holds at most the orders woken in the last interval.
	for uid, t := range g.last {
		if now.Sub(t) >= callbackWakeInterval {
			delete(g.last, uid)
		}
	}
	g.last[uniqueID] = now
	return true
}

// CallbackHandler answers the CA's callbacks: POST /callback/<token>. A
// callback is a hint, never data: the body is read (bounded) and dropped.
// A known token of an order waiting for its certificate (step rechecked)
// makes its driver fetch the detail through the signed API at once — at
// most once per callbackWakeInterval, and a fetch it prompts that fails
// counts as no attempt and leaves the backoff alone (see orderRun.drive).
// The token of an order in any other step in flight is answered 200 and
// does nothing: the order is not waiting for the CA. Anything else is 404.
func (d *Daemon) CallbackHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.URL.Path, "/callback/")
		if !ok || token == "" || strings.Contains(token, "/") {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		o, err := d.store.OrderByToken(r.Context(), token)
		if err != nil || o.Step.Terminal() {
			http.NotFound(w, r)
			return
		}
		// Read (and drop) the body, bounded: a callback is only a hint.
		if n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, maxCallbackBody+1)); n > maxCallbackBody {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		log := d.orderLog(o).With(zap.String("remote", r.RemoteAddr), zap.String("step", string(o.Step)))
		switch {
		case o.Step != store.StepRechecked:
			log.Info("callback received; the order is not waiting for the CA, nothing to do")
		case !d.callbacks.allow(o.UniqueID, d.now()):
			log.Info("callback received; the order was woken moments ago, not again", zap.Duration("interval", callbackWakeInterval))
		default:
			log.Info("callback received")
			d.wakeOrder(o.UniqueID, wakeCallback)
			// In a cluster the order's driver may be another node.
			d.cluster.Announce(r.Context(), store.ClusterEvent{Kind: store.EventCallback, Cert: o.Cert, UniqueID: o.UniqueID})
		}
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("ok\n"))
	})
}
