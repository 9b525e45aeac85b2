package sandbox

import (
	"cmp"
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

// The certificate list, as the API family documents it: a Laravel-style
// paginator of the account's services, each with its paid period.
const (
	defaultListPageSize = 15
	maxListPageSize     = 100
	// expiringWithin is what the expiring filter means: a certificate that
	// expires within 30 days.
	expiringWithin = 30 * 24 * time.Hour
)

// listPage is the paginator of certificate/list.
type listPage struct {
	CurrentPage int           `json:"current_page"`
	LastPage    int           `json:"last_page"`
	PerPage     int           `json:"per_page"`
	Total       int           `json:"total"`
	From        *int          `json:"from"` // position of the first item, null on an empty page
	To          *int          `json:"to"`
	Data        []wireService `json:"data"`
}

// wireService is one entry of the list.
type wireService struct {
	ID        int    `json:"id"`
	ServiceID string `json:"service_id"`
	// Status is that of the service's latest order, as detail shows it
	// (pending for a service without any order).
	Status           string            `json:"status"`
	DomainDCV        map[string]string `json:"domain_dcv"`
	ProductName      string            `json:"product_name"`
	Period           *string           `json:"period"`
	CreatedAt        *string           `json:"created_at"`
	CertExpiresAt    *string           `json:"cert_expires_at"`
	ServiceExpiresAt *string           `json:"service_expires_at"`
}

// list answers GET certificate/list: page (default 1), page_size (default
// 15; more than 100 is cut to 100, as Laravel paginators cap it), status
// (issuing, issued, expiring, expired) and keyword (a part of a domain or
// of the service_id, in any case). Entries come in the order of the
// services' creation, so that a service bought while a client pages
// through the list lands on the last page instead of shifting the others.
func (s *Server) list(_ context.Context, p params) (any, *apiError) {
	fe := fieldErrors{}
	page := listNumber(p, "page", 1, fe)
	size := min(listNumber(p, "page_size", defaultListPageSize, fe), maxListPageSize)
	status := strings.ToLower(p.str("status", fe))
	switch status {
	case "", reseller.StatusIssuing, reseller.StatusIssued, reseller.StatusExpiring, reseller.StatusExpired:
	default:
		fe.add("status", "must be issuing, issued, expiring or expired")
	}
	keyword := strings.ToLower(p.str("keyword", fe))
	if len(fe) > 0 {
		return nil, invalid(fe)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var matched []*serviceState
	for _, sv := range s.st.Services {
		if s.listStatusLocked(sv, status, now) && listKeyword(sv, keyword) {
			matched = append(matched, sv)
		}
	}
	slices.SortFunc(matched, func(a, b *serviceState) int {
		return cmp.Or(cmp.Compare(a.Number, b.Number), strings.Compare(a.ID, b.ID))
	})

	out := listPage{CurrentPage: page, PerPage: size, Total: len(matched), LastPage: max(1, (len(matched)+size-1)/size), Data: []wireService{}}
	// page and size are bounded by listNumber: (page-1)*size cannot overflow.
	if first := (page - 1) * size; page <= out.LastPage && first < len(matched) {
		last := min(first+size, len(matched))
		for _, sv := range matched[first:last] {
			out.Data = append(out.Data, s.serviceEntryLocked(sv))
		}
		from, to := first+1, last
		out.From, out.To = &from, &to
	}
	return out, nil
}

// listNumber reads a positive whole number parameter, def when absent.
func listNumber(p params, key string, def int, fe fieldErrors) int {
	v := p.str(key, fe)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1_000_000 {
		fe.add(key, "must be a whole number from 1 to 1000000")
		return def
	}
	return n
}

// listStatusLocked applies the status filter. issuing: the latest order is
// pending; issued: a certificate is in force and not expired; expiring:
// likewise, and it expires within 30 days; expired: the certificate in
// force has passed its not_after.
func (s *Server) listStatusLocked(sv *serviceState, status string, now time.Time) bool {
	cert := sv.Issued
	switch status {
	case "":
		return true
	case reseller.StatusIssuing:
		o := s.st.Orders[sv.Current]
		return o != nil && o.Status == statusPending
	case reseller.StatusIssued:
		return cert != nil && now.Before(cert.NotAfter)
	case reseller.StatusExpiring:
		return cert != nil && now.Before(cert.NotAfter) && cert.NotAfter.Sub(now) <= expiringWithin
	case reseller.StatusExpired:
		return cert != nil && !now.Before(cert.NotAfter)
	}
	return false
}

// listKeyword matches a lower-case keyword against the service_id and the
// names of the service (those of its latest order and those paid for).
func listKeyword(sv *serviceState, keyword string) bool {
	if keyword == "" || strings.Contains(strings.ToLower(sv.ID), keyword) {
		return true
	}
	for _, names := range [][]string{sv.Domains, sv.Paid} {
		for _, n := range names {
			if strings.Contains(n, keyword) {
				return true
			}
		}
	}
	return false
}

// serviceEntryLocked is a service as the list shows it.
func (s *Server) serviceEntryLocked(sv *serviceState) wireService {
	e := wireService{
		ID:               sv.Number,
		ServiceID:        sv.ID,
		Status:           statusPending,
		DomainDCV:        make(map[string]string, len(sv.Domains)),
		ProductName:      s.st.Products[sv.ProductID].Name,
		CreatedAt:        wireTime(sv.Created),
		ServiceExpiresAt: wireTime(sv.Ends),
	}
	if o := s.st.Orders[sv.Current]; o != nil {
		e.Status = o.Status
	}
	for _, d := range sv.Domains {
		e.DomainDCV[d] = sv.LastMethods[d]
	}
	if sv.Period != "" {
		period := sv.Period
		e.Period = &period
	}
	if sv.Issued != nil {
		e.CertExpiresAt = wireTime(sv.Issued.NotAfter)
	}
	return e
}
