package sandbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
)

// This file holds the paid period of services: a service ends (its
// service_expires_at), after which no reissue is accepted and until which
// certificates are capped. A commercial certificate is sold for a period
// (one or more years) and reissued several times within it, as certificate
// lifetimes shrink; when the period ends the admin must buy a renewal,
// which is a new service.

// DefaultServicePeriod is the paid period of a service that the
// configuration gives no end: a year from its creation, so that a demo
// keeps working for that long.
const DefaultServicePeriod = 365 * 24 * time.Hour

// servicePeriod is the period of new services (Config.ServicePeriod with
// its default); zero means that they never end.
func (s *Server) servicePeriod() time.Duration { return servicePeriod(s.cfg.ServicePeriod) }

func servicePeriod(configured time.Duration) time.Duration {
	switch {
	case configured == 0:
		return DefaultServicePeriod
	case configured < 0:
		return 0
	default:
		return configured
	}
}

// startService sets what a new service gets when it is bought: its number
// in the list, its creation time and its end. months > 0 is the period the
// order asked for (create's period parameter); otherwise period applies (0:
// no end).
func startService(st *state, sv *serviceState, now time.Time, months int, period time.Duration) {
	sv.Number = nextServiceNumber(st)
	sv.Created = now.Truncate(time.Second)
	switch {
	case months > 0:
		sv.Ends = sv.Created.AddDate(0, months, 0)
		sv.Period = describeMonths(months)
	case period > 0:
		sv.Ends = sv.Created.Add(period).Truncate(time.Second)
		sv.Period = describePeriod(period)
	}
}

// nextServiceNumber is the list id of the next service: one more than the
// highest so far.
func nextServiceNumber(st *state) int {
	n := 0
	for _, sv := range st.Services {
		n = max(n, sv.Number)
	}
	return n + 1
}

// numberServices gives a list id to services of a state file written before
// services had one, in the order of their service_id.
func numberServices(st *state) {
	var ids []string
	for id, sv := range st.Services {
		if sv.Number == 0 {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		st.Services[id].Number = nextServiceNumber(st)
	}
}

// describeMonths writes a period of months as the list shows it ("1 Year",
// "6 Months").
func describeMonths(m int) string {
	switch {
	case m%12 == 0:
		return plural(m/12, "Year")
	default:
		return plural(m, "Month")
	}
}

// describePeriod writes a configured period: in years of 365 days, in days,
// or as a duration.
func describePeriod(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d%(365*day) == 0:
		return plural(int(d/(365*day)), "Year")
	case d%day == 0:
		return plural(int(d/day), "Day")
	default:
		return d.String()
	}
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// endedLocked reports whether the service's paid period is over at now.
func endedLocked(sv *serviceState, now time.Time) bool {
	return !sv.Ends.IsZero() && !now.Before(sv.Ends)
}

// serviceExpired is the refusal of a reissue after the service's end. It
// names the date and what to do, since the client's user must act: no
// retry can succeed. It comes with HTTP 400, unlike the other business
// refusals: nothing is known of the real API's answer, and a client must
// recognise it by its code (or its message) whatever the status.
func serviceExpired(sv *serviceState) *apiError {
	end := sv.Ends.In(beijing)
	return refusal(http.StatusBadRequest, CodeServiceExpired, fmt.Sprintf(
		"service %s ended on %s (%s): no reissue after the end of its paid period; buy a renewal and use its new service_id",
		sv.ID, end.Format(time.DateOnly), end.Format(time.RFC3339)))
}

// capValidity shortens a certificate's validity so that it ends no later
// than the service: a CA does not sell a certificate beyond what was paid.
func capValidity(sv *serviceState, now time.Time, validity time.Duration) time.Duration {
	if sv == nil || sv.Ends.IsZero() {
		return validity
	}
	// The CA starts certificates at the whole second; Ends is a whole
	// second too, so that the cap is exact.
	return min(validity, sv.Ends.Sub(now.Truncate(time.Second)))
}

// SetServiceEnd sets the end of serviceID's paid period (the zero time: it
// never ends), as buying or letting lapse a subscription would; tests use
// it to end a service. It does not touch the certificate in force: a CA
// does not revoke at the end of the period, it only refuses reissues.
func (s *Server) SetServiceEnd(serviceID string, end time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.st.Services[serviceID]
	if !ok {
		return fmt.Errorf("sandbox: set the end of service %q: no such service", serviceID)
	}
	sv.Ends = end.Truncate(time.Second)
	if err := s.saveLocked(); err != nil {
		return fmt.Errorf("sandbox: set the end of service %s: %w", serviceID, err)
	}
	if sv.Ends.IsZero() {
		s.log.Info("service end removed", zap.String("service_id", serviceID))
	} else {
		s.log.Info("service end set", zap.String("service_id", serviceID), zap.Time("ends", sv.Ends))
	}
	return nil
}

// wireTime is a time as the sandbox's replies show it (RFC 3339 in the
// API's zone, as not_before and not_after), or null when unknown.
func wireTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	v := t.In(beijing).Format(time.RFC3339)
	return &v
}

// serveServiceEnd is POST /sandbox/service-end (see registerControl).
func (s *Server) serveServiceEnd(w http.ResponseWriter, r *http.Request) {
	fail := func(msg string) {
		writeJSON(w, http.StatusBadRequest, envelope{Message: "service-end: " + msg, ErrorCode: CodeInvalidRequest})
	}
	q := r.URL.Query()
	req := struct {
		ServiceID string `json:"service_id"`
		Ends      string `json:"ends"`
	}{q.Get("service_id"), q.Get("ends")}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		fail("read the body: " + err.Error())
		return
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			fail(`the body is not {"service_id": "…", "ends": "…"}: ` + err.Error())
			return
		}
	}
	end, err := parseServiceEnd(req.Ends)
	if err != nil {
		fail(err.Error())
		return
	}
	if err := s.SetServiceEnd(req.ServiceID, end); err != nil {
		fail(err.Error())
		return
	}
	for _, v := range s.serviceViews() {
		if v.ID == req.ServiceID {
			writeOK(w, v)
			return
		}
	}
	writeOK(w, nil)
}

// parseServiceEnd reads the ends of service-end: RFC 3339, a date alone
// (midnight in the API's zone), or "none" / "" for no end.
func parseServiceEnd(v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" || strings.EqualFold(v, "none") {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, v, beijing); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("ends %q is neither RFC 3339 (2026-11-30T00:00:00+08:00), a date (2026-11-30) nor none", v)
}
