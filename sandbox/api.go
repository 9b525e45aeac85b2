package sandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/reseller"
)

// apiPrefix is where the API is served: clients use http://host/api/v1 as
// their base URL.
const apiPrefix = "/api/v1"

// Error codes of refusals (the error_code field). Authentication refusals
// come with HTTP 401; business refusals (balance, unknown service, order
// state) with HTTP 200 and success false, as the API family does, but for
// an ended service's (HTTP 400); field validation errors with HTTP 422 and
// an errors object instead of a code.
const (
	CodeMissingParameter    = "MISSING_PARAMETER"    // accessKeyId, nonce, timestamp or sign missing
	CodeUnknownAccessKey    = "UNKNOWN_ACCESS_KEY"   // accessKeyId is not the account's
	CodeSignatureInvalid    = "SIGNATURE_INVALID"    // sign does not match
	CodeTimestampInvalid    = "TIMESTAMP_INVALID"    // timestamp not in the API's format
	CodeTimestampExpired    = "TIMESTAMP_EXPIRED"    // timestamp outside the tolerated skew
	CodeNonceInvalid        = "NONCE_INVALID"        // nonce too long
	CodeNonceReused         = "NONCE_REUSED"         // nonce already seen
	CodeInsufficientBalance = "INSUFFICIENT_BALANCE" // the account cannot pay; nothing was recorded
	CodeServiceNotFound     = "SERVICE_NOT_FOUND"    // no such service_id
	CodeProductNotFound     = "PRODUCT_NOT_FOUND"    // no such product_id
	CodeOrderNotPending     = "ORDER_NOT_PENDING"    // the service has no order in a state that allows the call
	CodeServiceExpired      = "SERVICE_EXPIRED"      // HTTP 400: the service's paid period is over (reseller.CodeServiceExpired)
	CodeRateLimited         = "RATE_LIMITED"         // HTTP 429, see Retry-After
	CodeInvalidRequest      = "INVALID_REQUEST"      // body not JSON, too large, repeated query parameter
	CodeNotFound            = "NOT_FOUND"            // no such endpoint
	CodeMethodNotAllowed    = "METHOD_NOT_ALLOWED"   // wrong HTTP method for the endpoint
	CodeInternalError       = "INTERNAL_ERROR"       // the sandbox failed (e.g. cannot write its state)
)

// envelope is the API's reply.
type envelope struct {
	Success   bool                `json:"success"`
	Message   string              `json:"message"`
	Data      any                 `json:"data,omitempty"`
	ErrorCode string              `json:"error_code,omitempty"`
	Errors    map[string][]string `json:"errors,omitempty"`
}

// apiError is a refusal: an HTTP status, an error code or field errors.
type apiError struct {
	status int
	code   string
	msg    string
	fields fieldErrors
}

func refusal(status int, code, msg string) *apiError {
	return &apiError{status: status, code: code, msg: msg}
}

// refuse is a business refusal: HTTP 200 with success false.
func refuse(code, format string, args ...any) *apiError {
	return refusal(http.StatusOK, code, fmt.Sprintf(format, args...))
}

func internalError(err error) *apiError {
	return refusal(http.StatusInternalServerError, CodeInternalError, "internal error: "+err.Error())
}

// invalid is HTTP 422 with the field errors; the message is the first error,
// as Laravel-style APIs write it.
func invalid(fe fieldErrors) *apiError {
	fields := make([]string, 0, len(fe))
	n := 0
	for f, msgs := range fe {
		fields = append(fields, f)
		n += len(msgs)
	}
	sort.Strings(fields)
	msg := fields[0] + ": " + fe[fields[0]][0]
	if n > 1 {
		msg += fmt.Sprintf(" (and %d more error(s))", n-1)
	}
	return &apiError{status: http.StatusUnprocessableEntity, msg: msg, fields: fe}
}

func (e *apiError) envelope() envelope {
	return envelope{Success: false, Message: e.msg, ErrorCode: e.code, Errors: e.fields}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data = []byte(`{"success":false,"message":"internal error: cannot encode the reply","error_code":"INTERNAL_ERROR"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	w.Write(data)
}

// route is one API endpoint. handle returns the reply's data (nil: none).
type route struct {
	method string
	handle func(s *Server, ctx context.Context, p params) (any, *apiError)
}

var routes = map[string]route{
	reseller.PathProductList: {http.MethodGet, (*Server).productList},
	reseller.PathCreate:      {http.MethodPost, (*Server).create},
	reseller.PathReissue:     {http.MethodPost, (*Server).reissue},
	reseller.PathUpdateDCV:   {http.MethodPost, (*Server).updateDCV},
	reseller.PathValidateDCV: {http.MethodPost, (*Server).validateDCV},
	reseller.PathDetail:      {http.MethodGet, (*Server).detail},
	reseller.PathList:        {http.MethodGet, (*Server).list},
}

// handleAPI serves one API request without faults: route, parameters,
// authentication, then the endpoint.
func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	rt, ok := routes[strings.TrimPrefix(r.URL.Path, apiPrefix)]
	if !ok {
		writeJSON(w, http.StatusNotFound, refusal(0, CodeNotFound, "no endpoint "+r.URL.Path).envelope())
		return
	}
	if r.Method != rt.method {
		w.Header().Set("Allow", rt.method)
		writeJSON(w, http.StatusMethodNotAllowed, refusal(0, CodeMethodNotAllowed,
			fmt.Sprintf("%s wants %s, not %s", r.URL.Path, rt.method, r.Method)).envelope())
		return
	}
	p, aerr := readParams(w, r)
	if aerr == nil {
		aerr = s.authenticate(r, p)
	}
	var data any
	if aerr == nil {
		data, aerr = rt.handle(s, r.Context(), p)
	}
	if aerr != nil {
		level := zap.InfoLevel
		if aerr.status >= 500 {
			level = zap.ErrorLevel
		}
		s.log.Log(level, "request refused", zap.String("path", r.URL.Path), zap.Int("status", aerr.status),
			zap.String("error_code", aerr.code), zap.String("message", aerr.msg))
		writeJSON(w, aerr.status, aerr.envelope())
		return
	}
	s.log.Debug("request served", zap.String("path", r.URL.Path))
	writeJSON(w, http.StatusOK, envelope{Success: true, Message: "OK", Data: data})
}

// productView is a product as product/list shows it.
type productView struct {
	ID           string  `json:"product_id"`
	Name         string  `json:"name"`
	CA           string  `json:"ca"`
	Validation   string  `json:"validation"`
	MaxDomains   int     `json:"max_domains"`
	Wildcard     bool    `json:"wildcard"`
	Price        float64 `json:"price"`
	ReissuePrice float64 `json:"reissue_price"`
	DomainPrice  float64 `json:"domain_price"`
}

func (s *Server) productList(_ context.Context, _ params) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]productView, 0, len(s.st.Products))
	for _, p := range s.st.Products {
		out = append(out, productView{p.ID, p.Name, "sandbox", p.Validation, p.MaxDomains, p.Wildcard, p.Price, p.ReissuePrice, p.DomainPrice})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// create places an order for a new service of a product.
func (s *Server) create(_ context.Context, p params) (any, *apiError) {
	fe := fieldErrors{}
	uid := p.requiredStr("unique_id", fe)
	productID := p.requiredStr("product_id", fe)
	months := 0
	if p.present("period") {
		n, err := strconv.Atoi(p.str("period", fe))
		if err != nil || n < 1 || n > 120 {
			fe.add("period", "must be a number of months between 1 and 120")
		}
		months = n
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.replayLocked(uid, p); ok {
		return o, nil
	}
	prod, ok := s.st.Products[productID]
	if !ok && productID != "" {
		return nil, refuse(CodeProductNotFound, "no product %q", productID)
	}
	if !p.present("domain_dcv") {
		fe.add("domain_dcv", "is required")
	}
	if !p.present("csr") {
		fe.add("csr", "is required")
	}
	req := s.parseOrderRequest(p, prod, prod.MaxDomains, nil, fe)
	if len(fe) > 0 {
		return nil, invalid(fe)
	}
	cost := roundMoney(prod.Price)
	if cost > s.st.Balance {
		return nil, refuse(CodeInsufficientBalance, "the order costs %.2f but the balance is %.2f", cost, s.st.Balance)
	}
	var sv *serviceState
	for sv == nil {
		id, err := randomString(mixedAlnum, 5)
		if err != nil {
			return nil, internalError(err)
		}
		if _, taken := s.st.Services[id]; !taken {
			sv = &serviceState{ID: id, ProductID: prod.ID, MaxDomains: prod.MaxDomains}
		}
	}
	startService(s.st, sv, s.cfg.Now(), months, s.servicePeriod())
	o, err := s.newOrder(uid, sv, "create", cost, req, p.fingerprint())
	if err != nil {
		return nil, internalError(err)
	}
	s.st.Services[sv.ID] = sv
	s.commitOrderLocked(sv, o, req)
	sv.Paid = sortedUnique(req.names.list())
	s.chargeLocked(o)
	s.log.Info("order placed", zap.String("unique_id", uid), zap.String("service_id", sv.ID),
		zap.String("product_id", prod.ID), zap.Strings("domains", o.Domains), zap.Float64("cost", cost))
	if err := s.saveLocked(); err != nil {
		return nil, internalError(err)
	}
	return s.orderViewLocked(o, o.Cost), nil
}

// reissue replaces a service's certificate: new names, methods or CSR.
func (s *Server) reissue(_ context.Context, p params) (any, *apiError) {
	fe := fieldErrors{}
	uid := p.requiredStr("unique_id", fe)
	serviceID := p.requiredStr("service_id", fe)

	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.replayLocked(uid, p); ok {
		return o, nil
	}
	if len(fe) > 0 {
		return nil, invalid(fe)
	}
	sv, ok := s.st.Services[serviceID]
	if !ok {
		return nil, refuse(CodeServiceNotFound, "no service %q", serviceID)
	}
	// After the replay above: a reissue accepted before the end is still
	// answered with its order.
	if endedLocked(sv, s.cfg.Now()) {
		return nil, serviceExpired(sv)
	}
	prod := s.st.Products[sv.ProductID]
	if !p.present("domain_dcv") && !p.present("csr") {
		fe.add("domain_dcv", "is required when csr is not present")
		fe.add("csr", "is required when domain_dcv is not present")
		return nil, invalid(fe)
	}
	req := s.parseOrderRequest(p, prod, sv.MaxDomains, sv, fe)
	if len(fe) > 0 {
		return nil, invalid(fe)
	}

	var unpaid []string
	for _, n := range req.names.list() {
		if !contains(sv.Paid, n) {
			unpaid = append(unpaid, n)
		}
	}
	cost := roundMoney(prod.ReissuePrice + prod.DomainPrice*float64(len(unpaid)))
	if cost > s.st.Balance {
		return nil, refuse(CodeInsufficientBalance, "the reissue costs %.2f (%d new domain(s)) but the balance is %.2f",
			cost, len(unpaid), s.st.Balance)
	}
	o, err := s.newOrder(uid, sv, "reissue", cost, req, p.fingerprint())
	if err != nil {
		return nil, internalError(err)
	}

	// The documented danger: names of the certificate in force that the
	// reissue drops get that certificate revoked.
	if sv.Issued != nil {
		var dropped []string
		for _, n := range sv.Issued.Names {
			if _, kept := o.DCV[n]; !kept {
				dropped = append(dropped, n)
			}
		}
		if len(dropped) > 0 {
			s.revokeLocked(sv, uid, dropped)
		}
	}
	if cur := s.st.Orders[sv.Current]; cur != nil && cur.Status == statusPending {
		cur.Status = statusCancelled
		s.log.Info("pending order superseded", zap.String("service_id", sv.ID),
			zap.String("unique_id", cur.UniqueID), zap.String("by", uid))
	}
	s.commitOrderLocked(sv, o, req)
	sv.Paid = sortedUnique(append(sv.Paid, unpaid...))
	s.chargeLocked(o)
	s.log.Info("reissue accepted", zap.String("unique_id", uid), zap.String("service_id", sv.ID),
		zap.Strings("domains", o.Domains), zap.Strings("new_domains", unpaid), zap.Float64("cost", cost))
	if err := s.saveLocked(); err != nil {
		return nil, internalError(err)
	}
	return s.orderViewLocked(o, o.Cost), nil
}

// replayLocked answers a unique_id already used: the same order, in its
// current state, and no charge, whatever the request says now.
func (s *Server) replayLocked(uid string, p params) (wireOrder, bool) {
	o, ok := s.st.Orders[uid]
	if uid == "" || !ok {
		return wireOrder{}, false
	}
	if fp := p.fingerprint(); fp != o.Fingerprint {
		s.log.Warn("unique_id replayed with a different request; answering with the original order and charging nothing",
			zap.String("unique_id", uid), zap.String("service_id", o.ServiceID))
	} else {
		s.log.Info("unique_id replayed; answering with the original order and charging nothing",
			zap.String("unique_id", uid), zap.String("service_id", o.ServiceID))
	}
	return s.orderViewLocked(o, o.Cost), true
}

func (s *Server) chargeLocked(o *orderState) {
	s.st.Balance = roundMoney(s.st.Balance - o.Cost)
	s.st.Ledger = append(s.st.Ledger, Charge{
		UniqueID: o.UniqueID, ServiceID: o.ServiceID, Op: o.Op, Amount: o.Cost, Time: o.Created,
	})
}

// updateDCV switches validation methods of the pending order's names, then
// checks the order at once, as the documented re-check trigger does.
func (s *Server) updateDCV(ctx context.Context, p params) (any, *apiError) {
	fe := fieldErrors{}
	serviceID := p.requiredStr("service_id", fe)
	dcv := p.domainDCV(fe)
	if len(dcv) == 0 && len(fe["domain_dcv"]) == 0 {
		fe.add("domain_dcv", "is required")
	}
	if len(fe) > 0 {
		return nil, invalid(fe)
	}

	s.mu.Lock()
	sv, ok := s.st.Services[serviceID]
	if !ok {
		s.mu.Unlock()
		return nil, refuse(CodeServiceNotFound, "no service %q", serviceID)
	}
	o := s.st.Orders[sv.Current]
	if o == nil {
		s.mu.Unlock()
		return nil, refuse(CodeOrderNotPending, "service %s has no order; place one with reissue", serviceID)
	}
	changed := map[string]string{}
	for raw, method := range dcv {
		n, err := normalizeName(raw)
		if err != nil {
			fe.add("domain_dcv", "%v", err)
			continue
		}
		d, ok := o.DCV[n.name]
		if !ok {
			fe.add("domain_dcv", "%s is not a domain of the order (unique_id %s); change domains with reissue", n.name, o.UniqueID)
			continue
		}
		m, err := checkMethod(n, method)
		if err != nil {
			fe.add("domain_dcv", "%v", err)
			continue
		}
		if m != d.Method {
			changed[n.name] = m
		}
	}
	if len(fe) > 0 {
		s.mu.Unlock()
		return nil, invalid(fe)
	}
	if o.Status != statusPending {
		s.mu.Unlock()
		if len(changed) == 0 {
			return nil, nil // nothing to change, nothing to check
		}
		return nil, refuse(CodeOrderNotPending, "the order of service %s (unique_id %s) is %s; change methods with reissue",
			serviceID, o.UniqueID, o.Status)
	}
	if len(changed) > 0 {
		for name, m := range changed {
			d := o.DCV[name]
			s.log.Info("DCV method changed", zap.String("service_id", serviceID), zap.String("domain", name),
				zap.String("from", d.Method), zap.String("to", m))
			*d = dcvState{Method: m, Status: dcvPending}
			if sv.LastMethods == nil {
				sv.LastMethods = map[string]string{}
			}
			sv.LastMethods[name] = m
		}
		if err := s.saveLocked(); err != nil {
			s.mu.Unlock()
			return nil, internalError(err)
		}
	}
	s.mu.Unlock()

	if err := s.checkService(ctx, serviceID); err != nil {
		return nil, internalError(err)
	}
	return nil, nil
}

// validateDCV checks the pending order now and answers with it.
func (s *Server) validateDCV(ctx context.Context, p params) (any, *apiError) {
	sv, aerr := s.serviceParam(p)
	if aerr != nil {
		return nil, aerr
	}
	s.mu.Lock()
	hasOrder := s.st.Services[sv].Current != ""
	s.mu.Unlock()
	if !hasOrder {
		return nil, refuse(CodeOrderNotPending, "service %s has no order; place one with reissue", sv)
	}
	if err := s.checkService(ctx, sv); err != nil {
		return nil, internalError(err)
	}
	return s.currentView(sv), nil
}

// detail answers with the service's latest order.
func (s *Server) detail(_ context.Context, p params) (any, *apiError) {
	sv, aerr := s.serviceParam(p)
	if aerr != nil {
		return nil, aerr
	}
	return s.currentView(sv), nil
}

// serviceParam reads and checks the service_id parameter.
func (s *Server) serviceParam(p params) (string, *apiError) {
	fe := fieldErrors{}
	id := p.requiredStr("service_id", fe)
	if len(fe) > 0 {
		return "", invalid(fe)
	}
	s.mu.Lock()
	_, ok := s.st.Services[id]
	s.mu.Unlock()
	if !ok {
		return "", refuse(CodeServiceNotFound, "no service %q", id)
	}
	return id, nil
}

// currentView is the service's latest order as detail shows it (cost 0: a
// detail charges nothing). A service without any order shows as pending
// with no names.
func (s *Server) currentView(serviceID string) wireOrder {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv := s.st.Services[serviceID]
	if o := s.st.Orders[sv.Current]; o != nil {
		return s.orderViewLocked(o, 0)
	}
	return wireOrder{ServiceID: serviceID, Status: statusPending, ServiceExpiresAt: wireTime(sv.Ends), DCV: map[string]wireDCV{}}
}

func contains(list []string, v string) bool {
	for _, e := range list {
		if e == v {
			return true
		}
	}
	return false
}
