package sandbox

import (
	"net/http"
	"sort"
	"strconv"
	"time"
)

// The control endpoints are for tests, scripts and the demo. They are not
// signed and never see injected faults: the sandbox is meant to listen on
// the loopback interface only.
//
//	GET  /sandbox/ledger                             every charge
//	GET  /sandbox/revocations                        every revocation
//	GET  /sandbox/root.pem                           the root certificate to trust
//	GET  /sandbox/services                           services, their current order and certificate
//	POST /sandbox/approve-email?service_id=&domain=  approve an e-mail validation
//	POST /sandbox/balance?set=AMOUNT                 set the account balance
//	POST /sandbox/service-end?service_id=&ends=      set the end of a service's paid period
//
// service-end also takes its parameters as a JSON body
// ({"service_id": "demo", "ends": "2026-11-30T00:00:00+08:00"}); ends is
// RFC 3339, a date alone (midnight in the API's zone, UTC+8), or "none"
// (or empty) for no end. It answers with the service as /sandbox/services
// shows it.
//
// JSON replies use the API's envelope.
func (s *Server) registerControl(mux *http.ServeMux) {
	mux.HandleFunc("GET /sandbox/ledger", func(w http.ResponseWriter, r *http.Request) {
		writeOK(w, nonNil(s.Ledger()))
	})
	mux.HandleFunc("GET /sandbox/revocations", func(w http.ResponseWriter, r *http.Request) {
		writeOK(w, nonNil(s.Revocations()))
	})
	mux.HandleFunc("GET /sandbox/root.pem", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write([]byte(s.RootPEM()))
	})
	mux.HandleFunc("GET /sandbox/services", func(w http.ResponseWriter, r *http.Request) {
		writeOK(w, s.serviceViews())
	})
	mux.HandleFunc("POST /sandbox/approve-email", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := s.ApproveEmail(q.Get("service_id"), q.Get("domain")); err != nil {
			writeJSON(w, http.StatusBadRequest, envelope{Message: err.Error(), ErrorCode: CodeInvalidRequest})
			return
		}
		writeOK(w, nil)
	})
	mux.HandleFunc("POST /sandbox/balance", func(w http.ResponseWriter, r *http.Request) {
		v, err := strconv.ParseFloat(r.URL.Query().Get("set"), 64)
		if err == nil {
			err = s.SetBalance(v)
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, envelope{Message: "set=AMOUNT: " + err.Error(), ErrorCode: CodeInvalidRequest})
			return
		}
		writeOK(w, map[string]float64{"balance": s.Balance()})
	})
	mux.HandleFunc("POST /sandbox/service-end", s.serveServiceEnd)
	mux.HandleFunc("/sandbox/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, envelope{Message: "no control endpoint " + r.Method + " " + r.URL.Path, ErrorCode: CodeNotFound})
	})
}

func writeOK(w http.ResponseWriter, data any) {
	writeJSON(w, http.StatusOK, envelope{Success: true, Message: "OK", Data: data})
}

// nonNil makes an empty list encode as [] rather than be left out.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// serviceView is a service as /sandbox/services shows it.
type serviceView struct {
	Service
	// Order is the current order (unique_id, status), if any.
	OrderUniqueID string `json:"order_unique_id,omitempty"`
	OrderStatus   string `json:"order_status,omitempty"`
	// Created and Period: when the service was bought, for how long.
	Created time.Time `json:"created_at,omitzero"`
	Period  string    `json:"period,omitempty"`
	// Certificate in force, if any.
	Serial   string    `json:"serial,omitempty"`
	Names    []string  `json:"names,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

func (s *Server) serviceViews() []serviceView {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]serviceView, 0, len(s.st.Services))
	for _, sv := range s.st.Services {
		v := serviceView{Service: Service{
			ID: sv.ID, ProductID: sv.ProductID, MaxDomains: sv.MaxDomains, Domains: append([]string{}, sv.Paid...),
			Expires: sv.Ends,
		}, Created: sv.Created, Period: sv.Period}
		if o := s.st.Orders[sv.Current]; o != nil {
			v.OrderUniqueID, v.OrderStatus = o.UniqueID, o.Status
		}
		if sv.Issued != nil {
			v.Serial, v.Names, v.NotAfter = sv.Issued.Serial, sv.Issued.Names, sv.Issued.NotAfter
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
