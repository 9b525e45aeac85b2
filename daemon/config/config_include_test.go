package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// includeCert is a fragment's [[certificate]] named name, validated by
// dns through [dns.main] (which the main file defines).
func includeCert(name, service string) string {
	return `
[[certificate]]
name = "` + name + `"
service_id = "` + service + `"
dns = "main"
[certificate.domains]
"` + name + `.example.org" = "dns"
[certificate.deploy]
dir = "/etc/ssl/dcvd/` + name + `"
`
}

// includeWorld writes the main file (testBaseConfig with include) and the
// fragments (file name → text) into a temporary directory, and loads it.
func includeWorld(t *testing.T, include string, fragments map[string]string) (dir string, cfg *Config, warns []string, err error) {
	t.Helper()
	dir = t.TempDir()
	for name, text := range fragments {
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	main := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(main, []byte(include+"\n"+testBaseConfig), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg, warns, err = LoadConfig(main, testLoadOptions())
	return dir, cfg, warns, err
}

// TestIncludeMerges: fragments matched by the globs are read in sorted
// order, relative patterns from the main file's directory, and their
// certificates and DNS sections join the main file's.
func TestIncludeMerges(t *testing.T) {
	dir, cfg, warns, err := includeWorld(t, `include = ["conf.d/*.toml", "empty.d/*.toml"]`, map[string]string{
		"conf.d/b.toml": includeCert("bravo", "svc-b"),
		"conf.d/a.toml": includeCert("alpha", "svc-a") + `
[dns.other]
provider = "rfc2136"
server = "ns2.example.net:53"
key_name = "dcvd"
key_alg = "hmac-sha256"
key_file = "/etc/dcvd/tsig.key"
`,
		"conf.d/.#a.toml":   "not toml at all [[[", // an editor's lock file: skipped
		"conf.d/notes.txt":  "not matched",
		"empty.d/dir.toml/": "", // a directory the glob matches: skipped
	})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, cc := range cfg.Certificates {
		names = append(names, cc.Name)
	}
	if want := []string{"shop", "alpha", "bravo"}; !slices.Equal(names, want) {
		t.Errorf("certificates %v, want %v", names, want)
	}
	if want := []string{filepath.Join(dir, "conf.d/a.toml"), filepath.Join(dir, "conf.d/b.toml")}; !slices.Equal(cfg.Fragments, want) {
		t.Errorf("fragments %v, want %v", cfg.Fragments, want)
	}
	if cfg.CertFile["alpha"] != filepath.Join(dir, "conf.d/a.toml") || cfg.CertFile["shop"] != "" {
		t.Errorf("CertFile %v", cfg.CertFile)
	}
	if cfg.DNS["other"] == nil {
		t.Error("[dns.other] of a fragment not loaded")
	}
	// The unused provider's warning names its file.
	want := filepath.Join(dir, "conf.d/a.toml") + ": dns.other: not used by any certificate"
	if !slices.Contains(warns, want) {
		t.Errorf("warnings %q lack %q", warns, want)
	}
	if got := cfg.IncludeDir(); got != filepath.Join(dir, "conf.d") {
		t.Errorf("IncludeDir %s", got)
	}
}

// TestIncludeProblemsNameTheFile: every problem of a fragment names the
// fragment and the key; clashes across files name both files.
func TestIncludeProblemsNameTheFile(t *testing.T) {
	for _, tt := range []struct {
		name      string
		include   string
		fragments map[string]string
		want      []string // substrings of the error, FILE standing for the fragment's path
	}{
		{"section of the main file", `include = ["conf.d/*.toml"]`,
			map[string]string{"conf.d/x.toml": "[daemon]\nstate_dir = \"/srv\"\n" + includeCert("x", "svc-x")},
			[]string{"conf.d/x.toml: daemon: not allowed in an included file, which may hold only [[certificate]] and [dns.NAME] sections"}},
		{"nested include", `include = ["conf.d/*.toml"]`,
			map[string]string{"conf.d/x.toml": "include = [\"more/*.toml\"]\n"},
			[]string{"conf.d/x.toml: include: not allowed in an included file: includes do not nest"}},
		{"bad key of a certificate", `include = ["conf.d/*.toml"]`,
			map[string]string{"conf.d/x.toml": strings.Replace(includeCert("x", "svc-x"), "dir = \"/etc/ssl/dcvd/x\"", "dir = \"relative\"", 1)},
			[]string{`conf.d/x.toml: certificate[x].deploy.dir: "relative" must be an absolute path`}},
		{"undefined dns provider", `include = ["conf.d/*.toml"]`,
			map[string]string{"conf.d/x.toml": strings.Replace(includeCert("x", "svc-x"), `dns = "main"`, `dns = "CHANGE-ME"`, 1)},
			[]string{`conf.d/x.toml: certificate[x].dns: no [dns.CHANGE-ME] section in the config`}},
		{"syntax error", `include = ["conf.d/*.toml"]`,
			map[string]string{"conf.d/x.toml": "[[certificate]\n"},
			[]string{"conf.d/x.toml: line 2, column"}},
		{"duplicate name across files", `include = ["conf.d/*.toml"]`,
			map[string]string{"conf.d/a.toml": includeCert("dup", "svc-a"), "conf.d/b.toml": includeCert("dup", "svc-b")},
			[]string{`conf.d/b.toml: certificate[dup].name: "dup" names more than one [[certificate]] (#1, #1 in `, "conf.d/b.toml): names must be unique"}},
		{"duplicate of the main file's name", `include = ["conf.d/*.toml"]`,
			map[string]string{"conf.d/a.toml": includeCert("shop", "svc-a")},
			[]string{`"shop" names more than one [[certificate]] (#1, #1 in `, "conf.d/a.toml)"}},
		{"service_id across files", `include = ["conf.d/*.toml"]`,
			map[string]string{"conf.d/a.toml": includeCert("a", "o91bZ")},
			[]string{`conf.d/a.toml: certificate[a].service_id: service_id "o91bZ" is also used by certificate[shop] in the main configuration file`}},
		{"dns across files", `include = ["conf.d/*.toml"]`,
			map[string]string{"conf.d/a.toml": "[dns.main]\nprovider = \"rfc2136\"\n"},
			[]string{"conf.d/a.toml: dns.main: [dns.main] is also defined in the main file"}},
		{"include under a section", "[store]\ninclude = [\"conf.d/*.toml\"]\n",
			nil, []string{"include is a top-level key"}},
		{"main file matched", `include = ["*.toml"]`,
			nil, []string{"matches the main configuration file"}},
		{"not a list", `include = 3`,
			nil, []string{"include: must be a list of file patterns"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := includeWorld(t, tt.include, tt.fragments)
			if err == nil {
				t.Fatal("loaded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Error("the error holds the secret")
			}
		})
	}
}

// TestIncludeEmptyGlob: a pattern matching nothing (an empty conf.d) is
// fine, and a main file without certificates then only draws the usual
// warning.
func TestIncludeEmptyGlob(t *testing.T) {
	_, cfg, _, err := includeWorld(t, `include = ["/nonexistent-dcvd-dir/*.toml"]`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Fragments) != 0 || len(cfg.Certificates) != 1 {
		t.Errorf("fragments %v, %d certificates", cfg.Fragments, len(cfg.Certificates))
	}
}

// TestIncludeCheckNamesTheFile: the host checks of check-config name the
// fragment of a certificate too.
func TestIncludeCheckNamesTheFile(t *testing.T) {
	dir, cfg, _, err := includeWorld(t, `include = ["conf.d/*.toml"]`, map[string]string{
		"conf.d/x.toml": includeCert("x", "svc-x"),
	})
	if err != nil {
		t.Fatal(err)
	}
	// A deploy directory whose parent is a file cannot be created.
	blocker := filepath.Join(dir, "blocker")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Certificates {
		if cfg.Certificates[i].Name == "x" {
			cfg.Certificates[i].Deploy.Dir = filepath.Join(blocker, "x")
		}
	}
	var found bool
	for _, e := range cfg.Check() {
		if strings.HasPrefix(e.Error(), filepath.Join(dir, "conf.d/x.toml")+": certificate[x].deploy") {
			found = true
		}
	}
	if !found {
		t.Errorf("no check problem names the fragment: %v", cfg.Check())
	}
}
