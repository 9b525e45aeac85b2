package daemon

import (
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// maxCallbackBody bounds a callback's body, which is read only to be
// discarded: a callback is a hint, never data.
const maxCallbackBody = 64 << 10

// CallbackHandler answers the CA's callbacks: POST /callback/<token>. A
// known token of an order in flight makes its driver fetch the detail
// through the signed API at once; the body is never used. Anything else is
// 404.
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
		d.orderLog(o).Info("callback received", zap.String("remote", r.RemoteAddr))
		d.wakeOrder(o.UniqueID, wakeCallback)
		// In a cluster the order's driver may be another node.
		d.announce(r.Context(), ClusterEvent{Kind: EventCallback, Cert: o.Cert, UniqueID: o.UniqueID})
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("ok\n"))
	})
}
