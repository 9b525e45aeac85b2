package config

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/internal/section"
)

// This file holds the top-level include key of the configuration:
//
//	include = ["/etc/dcvd/conf.d/*.toml"]
//
// Each pattern is a glob (relative ones are relative to the main file's
// directory), expanded in sorted order; a pattern that matches nothing is
// fine (an empty conf.d). The files it matches, the fragments, may hold
// only [[certificate]] and [dns.NAME] sections: the settings of the daemon
// itself stay in one place, and a fragment written by "dcvd import" or a
// provisioning tool cannot change where the money is spent ([api]) or
// where the keys are kept ([daemon], [store]). Fragments are merged into
// the main file (certificates after the main file's, in file order) and
// checked with it as one configuration; every problem and warning of a
// fragment names the fragment's file.
//
// The main file's own rules apply to fragments unchanged: secrets written
// in a [dns.NAME] section draw the same warning, and no rule is made of the
// files' modes (the main file has none either: the installer creates
// /etc/dcvd root-owned, and conf.d inherits it).

// includeState is what the loader knows of the included files.
type includeState struct {
	// main is the main file, for messages about a clash with it.
	main string
	// patterns are the include patterns, made absolute; files the
	// fragments read, in order.
	patterns, files []string
	// certFiles and certIndexes say, for each [[certificate]] of the
	// merged configuration, which file it came from ("" for the main
	// file) and its index in that file. Both are nil when nothing is
	// included: the main file's certificates come first, so the index is
	// then the merged one.
	certFiles   []string
	certIndexes []int
	// dnsFile names the fragment each [dns.NAME] came from; a section of
	// the main file is not in it.
	dnsFile map[string]string
	// certByName is filled by complete: the fragment of each certificate.
	certByName map[string]string
}

func (s *includeState) certFile(i int) string {
	if i < len(s.certFiles) {
		return s.certFiles[i]
	}
	return ""
}

func (s *includeState) certIndex(i int) int {
	if i < len(s.certIndexes) {
		return s.certIndexes[i]
	}
	return i
}

// complete gives cfg what it keeps of the includes.
func (s *includeState) complete(cfg *Config) {
	cfg.Include = s.patterns
	cfg.Fragments = s.files
	cfg.CertFile = map[string]string{}
	for _, cc := range cfg.Certificates {
		if f := s.certByName[cc.Name]; f != "" {
			cfg.CertFile[cc.Name] = f
		}
	}
}

// certAt is a [[certificate]] as messages name it: its key prefix, its
// file ("" for the main one) and its position in that file (from 1).
type certAt struct {
	prefix string
	file   string
	n      int
}

// position is "#N", followed by the file when it is not base's (a clash
// across files names both).
func (a certAt) position(base string) string {
	p := "#" + strconv.Itoa(a.n)
	if a.file != base {
		p += " in " + a.fileName()
	}
	return p
}

// describe is the prefix, followed by the file when it is not from's.
func (a certAt) describe(from string) string {
	if a.file == from {
		return a.prefix
	}
	return a.prefix + " in " + a.fileName()
}

func (a certAt) fileName() string {
	if a.file == "" {
		return "the main configuration file"
	}
	return a.file
}

// failAt files a problem in a's file.
func (l *loader) failAt(a certAt, key, format string, args ...any) {
	prev := l.file
	l.file = a.file
	l.fail(key, format, args...)
	l.file = prev
}

// cfgCertOfKey returns NAME of a key "certificate[NAME]…".
func cfgCertOfKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "certificate[")
	if !ok {
		return "", false
	}
	name, _, ok := strings.Cut(rest, "]")
	return name, ok && !strings.HasPrefix(name, "#")
}

// cfgFragmentSections are the top-level keys a fragment may hold.
var cfgFragmentSections = []string{"certificate", "dns"}

// include reads the fragments that raw's include key names and merges
// their [[certificate]] and [dns.NAME] sections into raw, recording where
// each came from. Problems are recorded, never fatal: the rest of the
// configuration is still checked, so that one run reports them all.
func (l *loader) include(path string, raw map[string]any) {
	l.includes.main = path
	l.includes.dnsFile = map[string]string{}
	l.includes.certByName = map[string]string{}
	// "include" written under a section header is a TOML trap: it belongs
	// to that section. Say so rather than "unknown key".
	for _, sec := range []string{"api", "daemon", "store"} {
		if m, ok := raw[sec].(map[string]any); ok && m["include"] != nil {
			l.fail(sec+".include", "include is a top-level key: move it above the first [section] header of the file")
			delete(m, "include")
		}
	}
	v, present := raw["include"]
	if !present {
		return
	}
	patterns, bad, inList, ok := stringOrList(v)
	if !ok && inList {
		l.fail("include", "must be a list of file patterns such as [\"/etc/dcvd/conf.d/*.toml\"], but holds %s", section.TypeName(bad))
		return
	}
	if !ok {
		l.fail("include", "must be a list of file patterns such as [\"/etc/dcvd/conf.d/*.toml\"], not %s", section.TypeName(bad))
		return
	}
	mainAbs, _ := filepath.Abs(path)
	seen := map[string]bool{}
	var files []string
	for _, p := range patterns {
		if strings.TrimSpace(p) == "" {
			l.fail("include", "holds an empty pattern")
			continue
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(mainAbs), p)
		}
		p = filepath.Clean(p)
		l.includes.patterns = append(l.includes.patterns, p)
		matches, err := filepath.Glob(p) // sorted
		if err != nil {
			l.fail("include", "%q is not a valid file pattern: %v", p, err)
			continue
		}
		for _, f := range matches {
			if seen[f] {
				continue // matched by an earlier pattern too: read once
			}
			seen[f] = true
			// Editors leave hidden files next to the ones edited (Emacs'
			// .#name.toml lock links, which match *.toml): skipped, as
			// a shell's glob would.
			if strings.HasPrefix(filepath.Base(f), ".") {
				continue
			}
			if f == mainAbs {
				l.fail("include", "%q matches the main configuration file %s itself: keep the included files in a directory of their own (such as conf.d/*.toml)", p, path)
				continue
			}
			fi, err := os.Stat(f)
			if err == nil && fi.IsDir() {
				continue
			}
			files = append(files, f)
		}
	}
	if l.opts.SkipIncludes {
		return
	}
	certs, mainOK := cfgCertTables(raw["certificate"])
	if !mainOK {
		// The main file's own [[certificate]] is malformed, which
		// certificates() reports; fragments are still read for their
		// problems, but their certificates are not merged after it.
		certs = nil
	}
	for i := range certs {
		l.includes.certFiles = append(l.includes.certFiles, "")
		l.includes.certIndexes = append(l.includes.certIndexes, i)
	}
	dns, _ := raw["dns"].(map[string]any)
	if dns == nil {
		dns = map[string]any{}
	}
	for _, f := range files {
		l.fragment(f, &certs, dns)
	}
	if mainOK && len(certs) > 0 {
		raw["certificate"] = certs
	}
	// A main [dns] that is not a table is reported by dnsTables; one that
	// is was merged into in place.
	if _, ok := raw["dns"]; !ok && len(dns) > 0 {
		raw["dns"] = dns
	}
}

// fragment reads one included file into certs and dns.
func (l *loader) fragment(file string, certs *[]map[string]any, dns map[string]any) {
	l.file = file
	defer func() { l.file = "" }()
	l.includes.files = append(l.includes.files, file)
	data, err := os.ReadFile(file)
	if err != nil {
		l.fail("", "cannot read the included file: %v", err)
		return
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// As for the main file: the parser's quotes may hold a secret.
			l.fail("", "line %d, column %d: %s", pe.Position.Line, pe.Position.Col, tomlQuoted.ReplaceAllString(pe.Message, "(not shown)"))
		} else {
			l.fail("", "syntax error (not shown: it may quote a secret)")
		}
		return
	}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if slices.Contains(cfgFragmentSections, k) {
			continue
		}
		switch {
		case k == "include":
			l.fail(section.KeyPart(k), "not allowed in an included file: includes do not nest; list every pattern in the main file %s", l.includes.main)
		case slices.Contains(cfgTopLevel, k):
			l.fail(section.KeyPart(k), "not allowed in an included file, which may hold only [[certificate]] and [dns.NAME] sections: [%s] belongs in the main file %s", k, l.includes.main)
		default:
			l.fail(section.KeyPart(k), "unknown section or key: an included file may hold only [[certificate]] and [dns.NAME] sections")
		}
	}
	if v, ok := raw["certificate"]; ok {
		tables, ok := cfgCertTables(v)
		if !ok {
			l.fail("certificate", "must be an array of tables: write [[certificate]] (double brackets), one per certificate, not %s", section.TypeName(v))
		}
		for i, m := range tables {
			*certs = append(*certs, m)
			l.includes.certFiles = append(l.includes.certFiles, file)
			l.includes.certIndexes = append(l.includes.certIndexes, i)
			if name, ok := m["name"].(string); ok && l.includes.certByName[name] == "" {
				l.includes.certByName[name] = file
			}
		}
	}
	if _, ok := raw["dns"]; ok {
		tables, ok := l.table(raw, "dns", "tables such as [dns.main]")
		if !ok {
			return
		}
		for _, name := range slices.Sorted(maps.Keys(tables)) {
			if _, dup := dns[name]; dup {
				where := l.includes.dnsFile[name]
				if where == "" {
					where = "the main file " + l.includes.main
				}
				l.fail("dns."+section.KeyPart(name), "[dns.%s] is also defined in %s: define each DNS provider once, in one file", name, where)
				continue
			}
			dns[name] = tables[name]
			l.includes.dnsFile[name] = file
		}
	}
}

// cfgCertTables returns the tables of a [[certificate]] value; ok is false
// when it is not an array of tables. An absent value is no tables.
func cfgCertTables(v any) (tables []map[string]any, ok bool) {
	switch t := v.(type) {
	case nil:
		return nil, true
	case []map[string]any:
		return slices.Clone(t), true
	case []any:
		for _, e := range t {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			tables = append(tables, m)
		}
		return tables, true
	}
	return nil, false
}

// IncludeDir is the directory new fragments go to: that of the first
// include pattern when there is one ("dcvd import" writes there so that
// the next load reads them), else conf.d next to the main file.
func (c *Config) IncludeDir() string {
	if len(c.Include) > 0 {
		return filepath.Dir(c.Include[0])
	}
	abs, err := filepath.Abs(c.Path)
	if err != nil {
		abs = c.Path
	}
	return filepath.Join(filepath.Dir(abs), "conf.d")
}

// stringOrList reads v, one string or a list of strings, as a list. When v
// is neither, ok is false and bad is what is in the way: the first element
// of the list that is not a string (inList), or else v itself.
func stringOrList(v any) (list []string, bad any, inList, ok bool) {
	switch t := v.(type) {
	case string:
		return []string{t}, nil, false, true
	case []any:
		for _, e := range t {
			s, ok := e.(string)
			if !ok {
				return nil, e, true, false
			}
			list = append(list, s)
		}
		return list, nil, false, true
	default:
		return nil, v, false, false
	}
}
