package main

import (
	"errors"
	"fmt"
	"sort"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/providers"
)

// DefaultConfigPath is where dcvd looks for its configuration.
const DefaultConfigPath = "/etc/dcvd/config.toml"

// fileConfig is the part of the configuration file this build reads: the
// [dns.NAME] sections. The daemon's issue adds the rest (and check-config).
type fileConfig struct {
	dns map[string]map[string]any
}

// knownSections are the top-level tables a config file may have today.
var knownSections = map[string]bool{"api": true, "dns": true}

func loadConfig(path string) (*fileConfig, error) {
	var raw map[string]any
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	var errs []error
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !knownSections[k] {
			errs = append(errs, fmt.Errorf("config %s: %s: unknown section", path, k))
		}
	}
	cfg := &fileConfig{dns: map[string]map[string]any{}}
	if d, ok := raw["dns"]; ok {
		tables, ok := d.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("config %s: dns: must be tables such as [dns.main]", path))
		}
		for name, v := range tables {
			sec, ok := v.(map[string]any)
			if !ok {
				errs = append(errs, fmt.Errorf("config %s: dns.%s: must be a table [dns.%s]", path, name, name))
				continue
			}
			cfg.dns[name] = sec
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// dnsProvider configures the [dns.NAME] section.
func (c *fileConfig) dnsProvider(name string, opts providers.Options) (*providers.DNS, []string, error) {
	sec, ok := c.dns[name]
	if !ok {
		names := make([]string, 0, len(c.dns))
		for n := range c.dns {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, nil, fmt.Errorf("no [dns.%s] section in the config (sections: %v)", name, names)
	}
	return providers.New(name, sec, opts)
}
