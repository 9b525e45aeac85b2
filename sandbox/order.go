package sandbox

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/reseller"
)

// validationPath is where http and https validation files are fetched.
const validationPath = ".well-known/pki-validation/"

// maxParallelChecks bounds the DCV checks of one order run at once.
const maxParallelChecks = 8

// beijing is the API's zone (UTC+8, no daylight saving) for the times it
// shows.
var beijing = time.FixedZone("UTC+8", 8*60*60)

// orderRequest is the validated content of a create or reissue request.
type orderRequest struct {
	names        orderNames
	csrPEM       string
	csr          *x509.CertificateRequest
	notifyURL    string
	contactEmail string
	org          map[string]string
}

// parseOrderRequest validates the parameters shared by create and reissue.
// sv is the service being reissued (nil for create): a missing csr or
// domain_dcv falls back to what it has on file.
func (s *Server) parseOrderRequest(p params, prod Product, maxDomains int, sv *serviceState, fe fieldErrors) orderRequest {
	var req orderRequest

	csrPEM := p.str("csr", fe)
	if csrPEM == "" && sv != nil {
		csrPEM = sv.LastCSR
	}
	switch {
	case csrPEM != "":
		csr, err := parseCSR(csrPEM)
		if err != nil {
			fe.add("csr", "%v", err)
		} else {
			req.csr, req.csrPEM = csr, csrPEM
		}
	case len(fe["csr"]) == 0:
		fe.add("csr", "no csr given and the service has none on file")
	}

	dcv := p.domainDCV(fe)
	if len(dcv) == 0 && len(fe["domain_dcv"]) == 0 && sv != nil && len(sv.Domains) > 0 {
		dcv = make(map[string]string, len(sv.Domains))
		for _, d := range sv.Domains {
			dcv[d] = sv.LastMethods[d]
		}
	}
	switch {
	case len(dcv) > 0:
		cn := ""
		if req.csr != nil {
			if n, err := normalizeName(req.csr.Subject.CommonName); err == nil {
				cn = n.name
			}
		}
		req.names = checkDomainDCV(dcv, prod, maxDomains, cn, fe)
	case len(fe["domain_dcv"]) == 0:
		fe.add("domain_dcv", "no domain_dcv given and the service has no domains on file")
	}

	if v := p.str("contact_email", fe); v != "" {
		if err := checkContactEmail(v); err != nil {
			fe.add("contact_email", "%v", err)
		}
		req.contactEmail = v
	}
	if v := p.str("notify_url", fe); v != "" {
		if err := checkNotifyURL(v); err != nil {
			fe.add("notify_url", "%v", err)
		}
		req.notifyURL = v
	}
	switch v := p["renew"].(type) {
	case nil, bool:
	case string, json.Number:
		if s := fmt.Sprint(v); s != "" && s != "0" && s != "1" {
			fe.add("renew", "must be 0 or 1")
		}
	default:
		fe.add("renew", "must be 0 or 1")
	}
	req.org = checkOrganization(p, prod, sv, fe)
	return req
}

// checkOrganization applies the documented company-data rules: required for
// OV, EV and IV products, and frozen once such a certificate was issued.
// Fields not given are taken from the service's file.
func checkOrganization(p params, prod Product, sv *serviceState, fe fieldErrors) map[string]string {
	given := map[string]string{}
	for _, f := range organizationFields {
		if v := p.str(f, fe); v != "" {
			given[f] = v
		}
	}
	if prod.Validation == "DV" || prod.Validation == "" {
		return nil
	}
	merged := map[string]string{}
	locked := false
	if sv != nil {
		maps.Copy(merged, sv.Organization)
		locked = sv.OrgLocked
	}
	for _, f := range organizationFields {
		v, ok := given[f]
		if !ok {
			continue
		}
		if locked && merged[f] != "" && merged[f] != v {
			fe.add(f, "cannot change once an %s certificate has been issued (it is %q)", prod.Validation, merged[f])
			continue
		}
		merged[f] = v
	}
	for _, f := range organizationFields {
		if merged[f] == "" {
			fe.add(f, "is required for %s certificates", prod.Validation)
		}
	}
	return merged
}

// newOrder builds an order from a validated request; commitOrderLocked
// makes it the service's current order.
func (s *Server) newOrder(uid string, sv *serviceState, op string, cost float64, req orderRequest, fingerprint string) (*orderState, error) {
	uv, err := randomString(lowerAlnum, 10)
	if err != nil {
		return nil, fmt.Errorf("random unique value: %w", err)
	}
	caid, err := randomString(digits, 9)
	if err != nil {
		return nil, fmt.Errorf("random caid: %w", err)
	}
	o := &orderState{
		UniqueID:     uid,
		ServiceID:    sv.ID,
		Op:           op,
		CAID:         caid,
		Cost:         cost,
		Status:       statusPending,
		CSR:          req.csrPEM,
		Domains:      req.names.list(),
		DCV:          make(map[string]*dcvState, len(req.names.names)),
		UniqueValue:  uv,
		Values:       computeDCVValues(req.csr.Raw, uv, s.cfg.CADomain),
		NotifyURL:    req.notifyURL,
		ContactEmail: req.contactEmail,
		Fingerprint:  fingerprint,
		Created:      s.cfg.Now(),
	}
	for _, n := range req.names.names {
		o.DCV[n.name] = &dcvState{Method: req.names.methods[n.name], Status: dcvPending}
	}
	return o, nil
}

func (s *Server) commitOrderLocked(sv *serviceState, o *orderState, req orderRequest) {
	s.st.Orders[o.UniqueID] = o
	sv.Current = o.UniqueID
	sv.LastCSR = req.csrPEM
	sv.Domains = append([]string(nil), o.Domains...)
	sv.LastMethods = maps.Clone(req.names.methods)
	if req.org != nil {
		sv.Organization = req.org
	}
}

// revokeLocked revokes the service's certificate in force because the
// reissue uid dropped some of its names.
func (s *Server) revokeLocked(sv *serviceState, uid string, dropped []string) {
	rev := Revocation{
		ServiceID: sv.ID,
		Serial:    sv.Issued.Serial,
		Reason:    fmt.Sprintf("reissue %s dropped %s from the certificate", uid, strings.Join(dropped, ", ")),
		UniqueID:  uid,
		Time:      s.cfg.Now(),
	}
	s.st.Revocations = append(s.st.Revocations, rev)
	s.log.Warn("certificate revoked", zap.String("service_id", sv.ID), zap.String("serial", rev.Serial),
		zap.String("reason", rev.Reason))
	if old := s.st.Orders[sv.Issued.UniqueID]; old != nil && old.Status == statusIssued {
		old.Status = statusRevoked
		s.notifyLocked(old)
	}
	sv.Issued = nil
}

// wireOrder is an order as the API shows it: the documented shape, with the
// dcv map's subdomain and topleveldomain filled correctly (the
// documentation's own example gets them wrong).
type wireOrder struct {
	Cost      float64 `json:"cost"`
	ServiceID string  `json:"service_id"`
	CAID      string  `json:"caid"`
	Status    string  `json:"status"`
	CertPEM   *string `json:"cert_pem"`
	CAPEM     *string `json:"ca_pem"`
	NotBefore *string `json:"not_before"`
	NotAfter  *string `json:"not_after"`
	// ServiceExpiresAt, not in the documented reply, is the end of the
	// service's paid period (null: none), as the list shows it.
	ServiceExpiresAt *string            `json:"service_expires_at"`
	DCV              map[string]wireDCV `json:"dcv"`
}

// wireDCV is one name's validation. Message, not in the documentation, says
// why the last check failed; clients ignore fields they do not know.
type wireDCV struct {
	Type           string                  `json:"type"`
	Subdomain      string                  `json:"subdomain"`
	TopLevelDomain string                  `json:"topleveldomain"`
	Status         string                  `json:"status"`
	Message        string                  `json:"message,omitempty"`
	DNS            *reseller.DNSRecord     `json:"dns,omitempty"`
	HTTP           *reseller.HTTPFile      `json:"http,omitempty"`
	HTTPS          *reseller.HTTPFile      `json:"https,omitempty"`
	Email          *reseller.EmailApprover `json:"email,omitempty"`
}

func (s *Server) orderViewLocked(o *orderState, cost float64) wireOrder {
	v := wireOrder{
		Cost:      cost,
		ServiceID: o.ServiceID,
		CAID:      o.CAID,
		Status:    o.Status,
		DCV:       make(map[string]wireDCV, len(o.DCV)),
	}
	if sv := s.st.Services[o.ServiceID]; sv != nil {
		v.ServiceExpiresAt = wireTime(sv.Ends)
	}
	if o.CertPEM != "" {
		cert, ca := o.CertPEM, o.CAPEM
		nb, na := o.NotBefore.In(beijing).Format(time.RFC3339), o.NotAfter.In(beijing).Format(time.RFC3339)
		v.CertPEM, v.CAPEM, v.NotBefore, v.NotAfter = &cert, &ca, &nb, &na
	}
	for name, d := range o.DCV {
		n, err := normalizeName(name)
		if err != nil {
			// Names were validated when the order was placed; a state file
			// edited by hand shows the name as it is.
			n = domainName{name: name, base: strings.TrimPrefix(name, "*.")}
		}
		sub, top := splitDomain(n)
		e := wireDCV{Subdomain: sub, TopLevelDomain: top, Status: d.Status, Message: d.Message}
		val := o.Values
		switch {
		case d.Method == "dns":
			e.Type = "dns"
			e.DNS = &reseller.DNSRecord{
				Type:     "cname",
				Hostname: val.RecordLabel,
				Fullname: val.RecordLabel + "." + n.base,
				Value:    val.CNAMETarget,
			}
		case d.Method == "http" || d.Method == "https":
			e.Type = d.Method
			host := n.name
			if n.ip && strings.Contains(host, ":") {
				host = "[" + host + "]"
			}
			f := &reseller.HTTPFile{
				Filename:     val.FileName,
				Filecontent:  val.FileContent,
				Filepath:     validationPath,
				Filefullpath: validationPath + val.FileName,
				URL:          d.Method + "://" + host + "/" + validationPath + val.FileName,
			}
			if d.Method == "http" {
				e.HTTP = f
			} else {
				e.HTTPS = f
			}
		default:
			e.Type = "email"
			e.Email = &reseller.EmailApprover{Address: d.Method, Available: approverAddresses(n)}
		}
		v.DCV[name] = e
	}
	return v
}

// checkTask is one DCV check to run outside the lock.
type checkTask struct {
	name   domainName
	method string
	values dcvValues
}

// checkService checks the pending validations of the service's current
// order, records the results and issues the certificate when every name is
// valid. The network checks run without the lock. The returned error is the
// sandbox's own failure (state, CA); a failed check is recorded on its name.
func (s *Server) checkService(ctx context.Context, serviceID string) error {
	s.mu.Lock()
	sv := s.st.Services[serviceID]
	if sv == nil {
		s.mu.Unlock()
		return fmt.Errorf("check service %s: no such service", serviceID)
	}
	o := s.st.Orders[sv.Current]
	if o == nil || o.Status != statusPending {
		s.mu.Unlock()
		return nil
	}
	var tasks []checkTask
	for _, name := range o.Domains {
		d := o.DCV[name]
		if d.Status == dcvValid {
			continue
		}
		n, err := normalizeName(name)
		if err != nil {
			n = domainName{name: name, base: strings.TrimPrefix(name, "*.")}
		}
		tasks = append(tasks, checkTask{name: n, method: d.Method, values: o.Values})
	}
	uid := o.UniqueID
	s.mu.Unlock()

	results := make([]error, len(tasks))
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallelChecks)
	for i, t := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i] = s.runCheck(ctx, t)
		}()
	}
	wg.Wait()

	s.mu.Lock()
	defer s.mu.Unlock()
	o = s.st.Orders[uid]
	if o.Status != statusPending {
		return nil // issued, superseded or revoked meanwhile
	}
	now := s.cfg.Now()
	for i, t := range tasks {
		d := o.DCV[t.name.name]
		if d.Method != t.method || d.Status == dcvValid {
			continue // the method changed meanwhile: this result is about the old one
		}
		d.CheckedAt = now
		if err := results[i]; err != nil {
			d.Message = err.Error()
			s.log.Info("DCV check failed", zap.String("service_id", serviceID), zap.String("unique_id", uid),
				zap.String("domain", t.name.name), zap.String("method", t.method), zap.String("reason", d.Message))
			continue
		}
		d.Status, d.Message = dcvValid, ""
		s.log.Info("DCV check passed", zap.String("service_id", serviceID), zap.String("unique_id", uid),
			zap.String("domain", t.name.name), zap.String("method", t.method))
	}
	issueErr := s.maybeIssueLocked(o)
	if err := s.saveLocked(); err != nil {
		return errors.Join(issueErr, err)
	}
	return issueErr
}

// runCheck performs one check as the CA does.
func (s *Server) runCheck(ctx context.Context, t checkTask) error {
	switch t.method {
	case "dns":
		return s.checker.checkCNAME(ctx, t.values.RecordLabel+"."+t.name.base, t.values.CNAMETarget)
	case "http", "https":
		return s.checker.checkFile(ctx, t.method, t.name.name, "/"+validationPath+t.values.FileName, t.values.FileContent)
	default:
		if s.cfg.AutoApproveEmail {
			return nil
		}
		return fmt.Errorf("approval e-mail sent to %s; not approved yet", t.method)
	}
}

// maybeIssueLocked issues the order's certificate if every name is valid,
// valid until the service's end at the latest; an order whose service has
// ended is marked expired instead.
func (s *Server) maybeIssueLocked(o *orderState) error {
	if o.Status != statusPending {
		return nil
	}
	for _, d := range o.DCV {
		if d.Status != dcvValid {
			return nil
		}
	}
	now := s.cfg.Now()
	sv := s.st.Services[o.ServiceID]
	if sv != nil && endedLocked(sv, now) {
		// Validated too late: the paid period ended while the order
		// waited, and a certificate may not outlive it.
		o.Status = statusExpired
		s.log.Warn("order not issued: its service ended before its validations passed",
			zap.String("service_id", o.ServiceID), zap.String("unique_id", o.UniqueID), zap.Time("service_ended", sv.Ends))
		s.notifyLocked(o)
		return nil
	}
	csr, err := parseCSR(o.CSR)
	if err != nil {
		return fmt.Errorf("issue order %s: %w", o.UniqueID, err)
	}
	certPEM, serial, err := s.ca.issue(csr, o.Domains, now, capValidity(sv, now, s.cfg.Validity))
	if err != nil {
		return fmt.Errorf("issue order %s: %w", o.UniqueID, err)
	}
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		return fmt.Errorf("issue order %s: the CA returned no PEM certificate", o.UniqueID)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("issue order %s: parse the new certificate: %w", o.UniqueID, err)
	}
	o.Status = statusIssued
	o.CertPEM = certPEM
	o.CAPEM = s.ca.chainPEM()
	o.Serial = serial
	o.NotBefore, o.NotAfter = cert.NotBefore, cert.NotAfter
	if sv != nil && sv.Current == o.UniqueID {
		sv.Issued = &issuedCert{
			UniqueID:  o.UniqueID,
			Serial:    serial,
			Names:     append([]string(nil), o.Domains...),
			NotBefore: cert.NotBefore,
			NotAfter:  cert.NotAfter,
		}
		sv.OrgLocked = true
	}
	s.log.Info("certificate issued", zap.String("service_id", o.ServiceID), zap.String("unique_id", o.UniqueID),
		zap.String("serial", serial), zap.Strings("domains", o.Domains), zap.Time("not_after", cert.NotAfter))
	s.notifyLocked(o)
	return nil
}

// pendingServices lists the services whose current order is pending.
func (s *Server) pendingServices() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, sv := range s.st.Services {
		if o := s.st.Orders[sv.Current]; o != nil && o.Status == statusPending {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}
