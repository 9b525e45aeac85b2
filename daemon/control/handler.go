package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/dcvd/dcvd/daemon/store"
)

// Backend does what the control requests ask: the daemon. Handler speaks
// the protocol (paths, methods, parameters, JSON, statuses) around it.
type Backend interface {
	Status(ctx context.Context) ([]CertStatus, error)
	// Order is the order uniqueID; store.ErrNotFound when there is none.
	Order(ctx context.Context, uniqueID string) (*store.Order, error)
	// CheckName refuses a certificate name the daemon has no
	// configuration of.
	CheckName(name string) error
	Reissue(name string, allowDomainRemoval bool) (Order, error)
	Retry(name string) (RetryReply, error)
	Redeploy(name string) error
	// Reply is the HTTP status and code (one of the Code* constants, or
	// "") the error err is answered with.
	Reply(err error) (status int, code string)
}

// Handler serves the control protocol (see the package comment) with b.
// An error that is an *Error is answered with its Status and Code, any
// other as b.Reply says.
func Handler(b Backend) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/status", only(b, http.MethodGet, func(r *http.Request) (any, int, error) {
		sts, err := b.Status(r.Context())
		if sts == nil {
			sts = []CertStatus{}
		}
		return sts, http.StatusOK, err
	}))
	mux.HandleFunc("/order", only(b, http.MethodGet, func(r *http.Request) (any, int, error) {
		id := r.URL.Query().Get("unique_id")
		if id == "" {
			return nil, 0, &Error{Status: http.StatusBadRequest, Message: "name the order: ?unique_id="}
		}
		o, err := b.Order(r.Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			return nil, 0, &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no order %q", id)}
		}
		if err != nil {
			return nil, 0, err
		}
		return OrderFrom(o), http.StatusOK, nil
	}))
	mux.HandleFunc("/reissue", named(b, func(r *http.Request, name string) (any, int, error) {
		allow, err := queryBool(r, "allow_domain_removal")
		if err != nil {
			return nil, 0, err
		}
		o, err := b.Reissue(name, allow)
		return o, http.StatusAccepted, err
	}))
	mux.HandleFunc("/retry", named(b, func(r *http.Request, name string) (any, int, error) {
		res, err := b.Retry(name)
		return res, http.StatusOK, err
	}))
	mux.HandleFunc("/redeploy", named(b, func(r *http.Request, name string) (any, int, error) {
		return struct{}{}, http.StatusOK, b.Redeploy(name)
	}))
	return mux
}

// named wraps a POST handler of the certificate ?name=, which b knows.
func named(b Backend, h func(r *http.Request, name string) (any, int, error)) http.HandlerFunc {
	return only(b, http.MethodPost, func(r *http.Request) (any, int, error) {
		name := r.URL.Query().Get("name")
		if name == "" {
			return nil, 0, &Error{Status: http.StatusBadRequest, Message: "name the [[certificate]]: ?name="}
		}
		if err := b.CheckName(name); err != nil {
			return nil, 0, err
		}
		return h(r, name)
	})
}

// only wraps a handler of one method, which answers a value to encode
// with a status, or an error.
func only(b Backend, method string, h func(r *http.Request) (any, int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": r.URL.Path + " takes " + method})
			return
		}
		v, status, err := h(r)
		if err != nil {
			var ce *Error
			status, code := 0, ""
			if errors.As(err, &ce) {
				status, code = ce.Status, ce.Code
			} else {
				status, code = b.Reply(err)
			}
			reply := map[string]string{"error": err.Error()}
			if code != "" {
				reply["code"] = code
			}
			writeJSON(w, status, reply)
			return
		}
		writeJSON(w, status, v)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func queryBool(r *http.Request, key string) (bool, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf("%s=%q is not a boolean", key, v)}
	}
	return b, nil
}
