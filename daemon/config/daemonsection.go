package config

// This file reads the [daemon] section: where the state lives, when to
// check, the listeners, logging and alerting. Every key is optional.

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// cfgMaxPollInterval is where the detail polling backs off to; a first poll
// slower than that would make the backoff pointless.
const cfgMaxPollInterval = 5 * time.Minute

// cfgDaemonKeys are the keys of [daemon].
var cfgDaemonKeys = []string{"state_dir", "schedule", "callback_listen", "callback_url", "http_listen",
	"max_concurrent", "poll_interval", "log_format", "log_level", "metrics_listen", "expiry_alert_days", "service_alert_days",
	"history_retention", "history_per_certificate"}

// daemon reads [daemon] into the defaults, and tells the loader the
// listeners and the state directory that certificates are checked
// against.
func (l *loader) daemon(raw map[string]any) DaemonConfig {
	d := DaemonConfig{
		StateDir:         DefaultStateDir,
		Schedule:         DefaultSchedule,
		LogFormat:        DefaultLogFormat,
		LogLevel:         DefaultLogLevel,
		MaxConcurrent:    DefaultMaxConcurrent,
		PollInterval:     DefaultPollInterval,
		ExpiryAlertDays:  slices.Clone(DefaultExpiryAlertDays),
		ServiceAlertDays: slices.Clone(DefaultServiceAlertDays),

		HistoryRetention:      DefaultHistoryRetention,
		HistoryPerCertificate: DefaultHistoryPerCertificate,
	}
	s := l.openSection(raw, "daemon", cfgDaemonKeys...)
	if s == nil {
		return d
	}
	defer l.done(s)
	if dir, ok := s.String("state_dir"); ok {
		if !filepath.IsAbs(dir) {
			s.Fail("state_dir", "%q must be an absolute path", dir)
		} else {
			d.StateDir = filepath.Clean(dir)
		}
	}
	if sched, ok := s.String("schedule"); ok {
		if _, err := ParseSchedule(sched, time.Now()); err != nil {
			s.Fail("schedule", "%v", err)
		} else {
			d.Schedule = sched
		}
	}
	if a, ok := hostPort(s, "callback_listen", true); ok {
		d.CallbackListen = a
	}
	if u, ok := httpURL(s, "callback_url"); ok {
		d.CallbackURL = strings.TrimRight(u, "/")
	}
	switch {
	case s.Has("callback_listen") && !s.Has("callback_url"):
		s.Fail("callback_url", "required with daemon.callback_listen: the public URL that reaches that listener (the CA posts to it)")
	case s.Has("callback_url") && !s.Has("callback_listen"):
		s.Fail("callback_listen", "required with daemon.callback_url: the \"host:port\" the daemon listens on for callbacks")
	}
	if a, ok := hostPort(s, "http_listen", true); ok {
		d.HTTPListen = a
	}
	if n, ok := s.Int("max_concurrent"); ok {
		if n < 1 || n > 1000 {
			s.Fail("max_concurrent", "must be from 1 to 1000, got %d", n)
		} else {
			d.MaxConcurrent = int(n)
		}
	}
	if s.Duration("poll_interval", &d.PollInterval) && d.PollInterval > cfgMaxPollInterval {
		s.Fail("poll_interval", "must be at most %s (polling backs off to that)", cfgMaxPollInterval)
	}
	if f, ok := s.String("log_format"); ok {
		if f != "console" && f != "json" {
			s.Fail("log_format", "%q is neither \"console\" nor \"json\"", f)
		} else {
			d.LogFormat = f
		}
	}
	if lv, ok := s.String("log_level"); ok {
		if !slices.Contains([]string{"debug", "info", "warn", "error"}, lv) {
			s.Fail("log_level", "%q is none of debug, info, warn, error", lv)
		} else {
			d.LogLevel = lv
		}
	}
	if a, ok := hostPort(s, "metrics_listen", true); ok {
		d.MetricsListen = a
	}
	for _, ln := range []struct{ key, addr string }{
		{"callback_listen", d.CallbackListen}, {"http_listen", d.HTTPListen}, {"metrics_listen", d.MetricsListen},
	} {
		if ln.addr != "" && cfgAllInterfaces(ln.addr) {
			s.Warn(ln.key, "%q listens on every interface: %s; unless that is what you want, bind it to loopback (%q) or to one address",
				ln.addr, cfgListenerExposes[ln.key], cfgLoopbackAddr(ln.addr))
		}
	}
	if days, ok := alertDays(s, "expiry_alert_days", 365, "[14, 7, 3, 1]"); ok {
		d.ExpiryAlertDays = days
	}
	if days, ok := alertDays(s, "service_alert_days", 366, "[60, 30, 14, 7]"); ok {
		d.ServiceAlertDays = days
	}
	if s.Duration("history_retention", &d.HistoryRetention) && d.HistoryRetention < MinHistoryRetention {
		s.Fail("history_retention", "must be at least %s, got %s", FormatDuration(MinHistoryRetention), FormatDuration(d.HistoryRetention))
	}
	if n, ok := s.Int("history_per_certificate"); ok {
		if n < 1 || n > MaxHistoryPerCertificate {
			s.Fail("history_per_certificate", "must be from 1 to %d, got %d", MaxHistoryPerCertificate, n)
		} else {
			d.HistoryPerCertificate = int(n)
		}
	}
	l.httpListen, l.callbackListen = d.HTTPListen, d.CallbackListen
	return d
}

// cfgListenerExposes says what each listener of [daemon] serves, for the
// warning about one bound to every interface.
var cfgListenerExposes = map[string]string{
	"callback_listen": "anyone who reaches the port can post callbacks (each only makes dcvd fetch an order's detail, but a reverse proxy in front of callback_url is the usual way in)",
	"http_listen":     "anyone who reaches the port gets the pending validation files (the web server that proxies /.well-known/pki-validation/ to dcvd reaches loopback)",
	"metrics_listen":  "anyone who reaches the port reads /metrics (every certificate's names, expiry, failures and costs) and /healthz",
}

// cfgAllInterfaces tells whether a listener's "host:port" binds every
// interface: no host, 0.0.0.0 or [::].
func cfgAllInterfaces(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// cfgLoopbackAddr is addr bound to loopback instead, as advice.
func cfgLoopbackAddr(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return net.JoinHostPort("::1", port)
	}
	return net.JoinHostPort("127.0.0.1", port)
}
