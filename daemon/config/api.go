package config

// This file reads the [api] section: how to reach and authenticate to the
// reseller.

import (
	"net/url"
	"strings"

	"github.com/dcvd/dcvd/internal/section"
	"github.com/dcvd/dcvd/reseller"
)

// cfgAPIKeys are the keys of [api].
var cfgAPIKeys = []string{"base_url", "access_key_id", "access_key_secret", "access_key_secret_file",
	"access_key_secret_env", "timeout", "ca_roots_file", "max_requests_per_second"}

// api reads [api], which is required: without it nothing can be renewed.
func (l *loader) api(raw map[string]any) APIConfig {
	a := APIConfig{Timeout: reseller.DefaultTimeout}
	if _, present := raw["api"]; !present {
		l.fail("api", "required section [api] is missing (base_url, access_key_id, access_key_secret_file)")
		return a
	}
	s := l.openSection(raw, "api", cfgAPIKeys...)
	if s == nil {
		return a
	}
	defer l.done(s)
	if _, ok := required(s, "base_url", "the reseller API's base URL, ending in /api/v1"); ok {
		if u, ok := httpURL(s, "base_url"); ok {
			a.BaseURL = u
			if pu, _ := url.Parse(u); pu.Scheme == "http" && !section.IsLoopback(pu.Hostname()) {
				s.Warn("base_url", "plain http to a remote host: requests and certificates travel unencrypted")
			}
		}
	}
	if id, ok := required(s, "access_key_id", "the access key ID from the reseller's console"); ok {
		a.AccessKeyID = strings.TrimSpace(id)
	}
	a.AccessKeySecret = apiSecret(s)
	s.Duration("timeout", &a.Timeout)
	if f, ok := s.String("ca_roots_file"); ok {
		if f == "" {
			s.Fail("ca_roots_file", "must be a file path (or leave the key out to use the system roots)")
		} else {
			a.CARootsFile = f
		}
	}
	a.MaxRequestsPerSecond = requestRate(s, "max_requests_per_second")
	return a
}

// apiSecret reads the API secret from exactly one of access_key_secret,
// access_key_secret_file and access_key_secret_env. No message quotes it.
func apiSecret(s *section.Section) string {
	const key = "access_key_secret"
	v, used, set := s.Secret(key)
	if !set {
		s.Fail(key, "required: set access_key_secret_file (a file holding the secret), access_key_secret_env (an environment variable holding it) or access_key_secret")
	}
	if used == key && v != "" {
		s.WarnInlineSecret(key)
	}
	return v
}
