package config

// This file holds LoadConfig and the loader: reading the main file,
// merging the fragments (config_include.go), reading every section (a
// file per area: api.go, daemonsection.go, store.go, certificate.go,
// deploy.go) and collecting their problems as ConfigErrors.

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/internal/section"
	"github.com/dcvd/dcvd/notify"
	"github.com/dcvd/dcvd/providers"
)

// LoadOptions are the process's outside world, replaceable in tests.
type LoadOptions struct {
	// LookupEnv reads the *_env keys; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// ReadFile reads the secret files (*_file keys); nil means os.ReadFile.
	// The configuration file itself is always read with os.ReadFile.
	ReadFile func(string) ([]byte, error)
	// Hostname gives store.node its default; nil means os.Hostname.
	Hostname func() (string, error)
	// Providers is given to providers.New for every [dns.NAME] section;
	// its LookupEnv and ReadFile default to the ones above.
	Providers providers.Options
	// SkipIncludes loads the main file alone: the include patterns are
	// kept in Config.Include but no file is read ("dcvd import" reaches
	// the API even while a fragment it wrote waits to be completed).
	SkipIncludes bool
}

// LoadConfig reads, checks and completes the configuration at path. It
// reports every problem at once: the error joins one *ConfigError per
// problem (unknown keys, wrong types, missing or invalid values, DCV rules),
// sorted by key; a TOML syntax error alone is reported with its line. The
// warnings say what is allowed but unwise, each as "KEY: reason". On error
// the config is nil. Secrets never appear in errors or warnings.
func LoadConfig(path string, opts LoadOptions) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	return parseConfig(path, data, opts)
}

// tomlQuoted matches the text the TOML parser's messages quote from the
// file ("expected value but found \"abc\" instead", "invalid float: '1e'").
var tomlQuoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'[^']*'`)

// parseConfig is LoadConfig once the file is read.
func parseConfig(path string, data []byte, opts LoadOptions) (*Config, []string, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			// The parser quotes what it could not read, which may be a
			// secret typed without quotes: the line and column say where.
			return nil, nil, fmt.Errorf("config %s: line %d, column %d: %s", path, pe.Position.Line, pe.Position.Col,
				tomlQuoted.ReplaceAllString(pe.Message, "(not shown)"))
		}
		return nil, nil, fmt.Errorf("config %s: syntax error (not shown: it may quote a secret)", path)
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	opts.ReadFile = credentialsReadFile(opts.LookupEnv, opts.ReadFile)
	if opts.Hostname == nil {
		opts.Hostname = os.Hostname
	}
	if opts.Providers.LookupEnv == nil {
		opts.Providers.LookupEnv = opts.LookupEnv
	}
	if opts.Providers.ReadFile == nil {
		opts.Providers.ReadFile = opts.ReadFile
	}
	l := &loader{opts: opts}
	l.include(path, raw)
	cfg := l.load(path, raw)
	SortErrors(l.errs)
	sort.Strings(l.warns)
	if len(l.errs) > 0 {
		return nil, l.warns, errors.Join(l.errs...)
	}
	return cfg, l.warns, nil
}

// credentialsReadFile lets secret file paths name systemd's credentials
// directory ("${CREDENTIALS_DIRECTORY}/api-secret"), so that secrets can be
// passed with LoadCredential= and never sit in a file dcvd's user can read
// outside the service.
func credentialsReadFile(lookupEnv func(string) (string, bool), readFile func(string) ([]byte, error)) func(string) ([]byte, error) {
	return func(p string) ([]byte, error) {
		if !strings.Contains(p, "$CREDENTIALS_DIRECTORY") && !strings.Contains(p, "${CREDENTIALS_DIRECTORY}") {
			return readFile(p)
		}
		dir, ok := lookupEnv("CREDENTIALS_DIRECTORY")
		if !ok || dir == "" {
			return nil, fmt.Errorf("%s names $CREDENTIALS_DIRECTORY, which is not set (it is set by systemd for a unit with LoadCredential=)", p)
		}
		return readFile(strings.NewReplacer("${CREDENTIALS_DIRECTORY}", dir, "$CREDENTIALS_DIRECTORY", dir).Replace(p))
	}
}

// loader collects the problems of one configuration file.
type loader struct {
	opts  LoadOptions
	errs  []error
	warns []string
	// stateDir is daemon.state_dir, where SQLite keeps the state.
	stateDir string
	// httpListen is daemon.http_listen, which certificates may rely on.
	httpListen     string
	callbackListen string
	// dnsSections are the [dns.NAME] names present in the file (configured
	// or not), and dnsUsed those a certificate names.
	dnsSections map[string]bool
	dnsUsed     map[string]bool

	// file is the included file being read, "" for the main one: every
	// problem and warning names it (see config_include.go).
	file string
	// includes holds the include patterns, the fragments read and where
	// each merged certificate and [dns.NAME] came from.
	includes includeState
}

// fail records a problem of key in the file being read.
func (l *loader) fail(key, format string, args ...any) {
	l.errs = append(l.errs, &ConfigError{File: l.file, Key: key, Reason: fmt.Sprintf(format, args...)})
}

// warn records a warning about key in the file being read.
func (l *loader) warn(key, format string, args ...any) {
	l.addWarns(key + ": " + fmt.Sprintf(format, args...))
}

// addWarns records warnings made elsewhere (a section, providers, notify),
// naming the included file being read.
func (l *loader) addWarns(warns ...string) {
	for _, w := range warns {
		if l.file != "" {
			w = l.file + ": " + w
		}
		l.warns = append(l.warns, w)
	}
}

// refile records e, a problem found by package section (or by a reader
// built on it, such as providers.New or notify.Parse), as a ConfigError of
// the file being read. The key comes from the *section.Error, never from
// the message; an error that is not one belongs to the section
// fallbackKey.
func (l *loader) refile(e error, fallbackKey string) {
	var se *section.Error
	if errors.As(e, &se) {
		l.fail(se.Key, "%s", se.Reason)
		return
	}
	l.fail(fallbackKey, "%s", e.Error())
}

// newSection starts reading the table m at path with package section, in
// the house style of the config's messages (keys quoted as TOML quotes
// them, types named). Its problems and warnings become the loader's when
// done is called.
func (l *loader) newSection(path string, m map[string]any) *section.Section {
	return section.New(path, m, section.Options{
		ReadFile:  l.opts.ReadFile,
		LookupEnv: l.opts.LookupEnv,
		QuoteKeys: true,
		NameTypes: true,
	})
}

// done re-files the problems and warnings of s (and of its sub-tables) in
// the file being read; it is called once, when s has been read.
func (l *loader) done(s *section.Section) {
	for _, e := range s.Errors() {
		l.refile(e, s.Path())
	}
	l.addWarns(s.Warnings()...)
}

// cfgTopLevel are the keys of the main file: its sections and include.
var cfgTopLevel = []string{"api", "certificate", "daemon", "dns", "include", "notify", "store"}

// load reads every section of raw, the main file with the fragments
// merged into it, into a Config.
func (l *loader) load(path string, raw map[string]any) *Config {
	cfg := &Config{Path: path, DNS: map[string]*providers.DNS{}}
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		if !slices.Contains(cfgTopLevel, k) {
			l.fail(section.KeyPart(k), "unknown section or key (known: %s)", strings.Join(cfgTopLevel, ", "))
		}
	}
	cfg.API = l.api(raw)
	cfg.Daemon = l.daemon(raw)
	l.stateDir = cfg.Daemon.StateDir
	cfg.Store = l.store(raw)
	l.dnsSections = map[string]bool{}
	l.dnsUsed = map[string]bool{}
	rawDNS := l.dnsTables(raw)
	cfg.Certificates = l.certificates(raw)
	cfg.Notify = l.notify(raw)
	for _, name := range slices.Sorted(maps.Keys(rawDNS)) {
		l.file = l.includes.dnsFile[name]
		d, warns, err := providers.New(name, rawDNS[name], l.opts.Providers)
		l.addWarns(warns...)
		if err != nil {
			l.providerErrors(name, err)
		} else {
			cfg.DNS[name] = d
			if !l.dnsUsed[name] {
				l.warn("dns."+section.KeyPart(name), "not used by any certificate")
			}
		}
		l.file = ""
	}
	l.includes.complete(cfg)
	return cfg
}

// table returns the top-level key of raw, a table (or a table of tables).
// ok is false when the key is absent, and when it is something else, which
// is reported: it must be want ("a table [api]").
func (l *loader) table(raw map[string]any, key, want string) (m map[string]any, ok bool) {
	v, present := raw[key]
	if !present {
		return nil, false
	}
	if m, ok = v.(map[string]any); !ok {
		l.fail(key, "must be %s, not %s", want, section.TypeName(v))
	}
	return m, ok
}

// openSection opens the top-level table key of raw, whose known keys are
// known, for reading; the caller calls l.done with it when done. It is nil
// when the key is absent, and when it is not a table, which is reported.
func (l *loader) openSection(raw map[string]any, key string, known ...string) *section.Section {
	m, ok := l.table(raw, key, "a table ["+key+"]")
	if !ok {
		return nil
	}
	s := l.newSection(key, m)
	unknown(s, known...)
	return s
}

// notify configures the [notify.NAME] channels with package notify, whose
// errors (each a *section.Error) are re-filed as ConfigErrors.
func (l *loader) notify(raw map[string]any) []notify.Configured {
	tables, ok := l.table(raw, "notify", "tables such as [notify.ops]")
	if !ok {
		return nil
	}
	var out []notify.Configured
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		sec, ok := tables[name].(map[string]any)
		if !ok {
			l.fail("notify."+section.KeyPart(name), "must be a table [notify.%s], not %s", name, section.TypeName(tables[name]))
			continue
		}
		c, warns, errs := notify.Parse(name, sec, l.opts.LookupEnv, l.opts.ReadFile)
		l.addWarns(warns...)
		for _, e := range errs {
			l.refile(e, "notify."+section.KeyPart(name))
		}
		if len(errs) == 0 {
			out = append(out, c)
		}
	}
	return out
}

// providerErrors re-files the problems of providers.New, joined with
// errors.Join, as ConfigErrors, so that they sort with the others.
func (l *loader) providerErrors(name string, err error) {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		// A provider's own check that names no key is a plain error:
		// it is the section's.
		l.refile(e, "dns."+section.KeyPart(name))
	}
}

// dnsTables collects the raw [dns.NAME] sections; providers.New checks
// their keys.
func (l *loader) dnsTables(raw map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	tables, ok := l.table(raw, "dns", "tables such as [dns.main]")
	if !ok {
		return out
	}
	for _, name := range slices.Sorted(maps.Keys(tables)) {
		l.dnsSections[name] = true
		sec, ok := tables[name].(map[string]any)
		if !ok {
			l.file = l.includes.dnsFile[name]
			l.fail("dns."+section.KeyPart(name), "must be a table [dns.%s], not %s", name, section.TypeName(tables[name]))
			l.file = ""
			continue
		}
		out[name] = sec
	}
	return out
}
