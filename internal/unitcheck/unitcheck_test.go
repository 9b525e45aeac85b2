package unitcheck

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is the highest "systemd-analyze security" rating dcvd.service
// may get (0 is a perfect sandbox, 10 none at all).
const maxExposure = 2.0

// units are the unit files shipped in systemd/ and installed by install.sh.
var units = []string{"dcvd.service", "dcvd-reload-nginx.path", "dcvd-reload-nginx.service"}

// repoRoot returns the repository's top directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.mod", "systemd/dcvd.service", "scripts/install.sh", "config.example.toml"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("not the repository root: %v", err)
		}
	}
	return root
}

// tool returns the path of a program the test needs. Without it the test
// skips, except in CI (DCVD_TEST_REQUIRE_SERVERS set), where a skip would
// hide that the check never ran.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("DCVD_TEST_REQUIRE_SERVERS") != "" {
		t.Fatalf("%s is required (DCVD_TEST_REQUIRE_SERVERS is set): apt-get install %s", name, pkg)
	}
	t.Skipf("%s not found (apt-get install %s): %v", name, pkg, err)
	return ""
}

// analyze runs systemd-analyze and returns its stdout and stderr. Colours
// and pagers are off; the exit status is the caller's to judge.
func analyze(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), tool(t, "systemd-analyze", "systemd"), args...)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "SYSTEMD_LOG_COLOR=0")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// exposureRE matches the verdict line. The arrow before it and the face
// after it depend on the locale ("→" or "->"), the score does not.
var exposureRE = regexp.MustCompile(`(?m)Overall exposure level for (\S+): ([0-9]+\.[0-9]+)\b.*$`)

// parseExposure finds the rating of unit in the output of
// "systemd-analyze security", and returns it with its whole line.
func parseExposure(out, unit string) (float64, string, error) {
	m := exposureRE.FindAllStringSubmatch(out, -1)
	if len(m) != 1 {
		return 0, "", errors.New("want exactly one \"Overall exposure level\" line, found " + strconv.Itoa(len(m)))
	}
	if m[0][1] != unit {
		return 0, "", errors.New("the rating is for " + m[0][1] + ", not " + unit)
	}
	score, err := strconv.ParseFloat(m[0][2], 64)
	if err != nil {
		return 0, "", err
	}
	return score, strings.TrimSpace(m[0][0]), nil
}

func TestParseExposure(t *testing.T) {
	tests := []struct {
		name, out string
		want      float64
		ok        bool
	}{
		{"utf-8", "✓ UMask=   Files created …\n\n→ Overall exposure level for dcvd.service: 1.4 OK 🙂\n", 1.4, true},
		{"ascii locale", "-> Overall exposure level for dcvd.service: 9.6 UNSAFE :-(\n", 9.6, true},
		{"other unit", "→ Overall exposure level for nginx.service: 1.0 OK 🙂\n", 0, false},
		{"no verdict", "✗ PrivateNetwork=  Service has access to the host's network  0.5\n", 0, false},
		{"two verdicts", "→ Overall exposure level for dcvd.service: 1.0 OK\n→ Overall exposure level for dcvd.service: 9.0 UNSAFE\n", 0, false},
		{"empty", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := parseExposure(tt.out, "dcvd.service")
			if (err == nil) != tt.ok {
				t.Fatalf("error %v, want ok=%v", err, tt.ok)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// security rates unitFile offline and fails the test on any warning: a
// directive systemd did not understand is ignored, and the rating would be
// of a unit other than the one written.
func security(t *testing.T, unitFile string) (float64, string) {
	t.Helper()
	out, errOut, err := analyze(t, "security", "--offline=yes", "--no-pager", unitFile)
	if err != nil {
		t.Fatalf("systemd-analyze security --offline=yes %s: %v\n%s%s", unitFile, err, out, errOut)
	}
	if strings.TrimSpace(errOut) != "" {
		t.Errorf("systemd-analyze security %s warned:\n%s", unitFile, errOut)
	}
	score, line, err := parseExposure(out, filepath.Base(unitFile))
	if err != nil {
		t.Fatalf("systemd-analyze security %s: %v\n%s", unitFile, err, out)
	}
	return score, line
}

func TestSecurityExposure(t *testing.T) {
	unit := filepath.Join(repoRoot(t), "systemd", "dcvd.service")
	score, line := security(t, unit)
	t.Logf("systemd-analyze security --offline=yes systemd/dcvd.service: %s", line)
	if score > maxExposure {
		out, _, _ := analyze(t, "security", "--offline=yes", "--no-pager", unit)
		t.Errorf("%s: exposure %.1f, want at most %.1f\n%s", unit, score, maxExposure, out)
	}
}

// TestSecurityExposureCatchesWeakening rates dcvd.service without its
// sandbox: the check above must be able to fail.
func TestSecurityExposureCatchesWeakening(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "systemd", "dcvd.service"))
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for line := range strings.Lines(string(data)) {
		key, _, _ := strings.Cut(line, "=")
		if strings.HasPrefix(key, "Protect") || strings.HasPrefix(key, "Private") || strings.HasPrefix(key, "Restrict") ||
			strings.HasPrefix(key, "SystemCall") || strings.HasPrefix(key, "Capability") || key == "NoNewPrivileges" ||
			key == "MemoryDenyWriteExecute" || key == "LockPersonality" {
			continue
		}
		kept = append(kept, line)
	}
	weak := filepath.Join(t.TempDir(), "dcvd.service")
	if err := os.WriteFile(weak, []byte(strings.Join(kept, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	score, line := security(t, weak)
	if score <= maxExposure {
		t.Errorf("dcvd.service without its sandbox still rates %.1f (%s): the rating check cannot fail", score, line)
	}
}

// The memory dcvd needs, from BENCHMARKS.md: dcvd.service's ceiling must
// leave room for it.
const (
	// massReissuePeak is the peak RSS of a reissue of 10,000
	// certificates at once (163.4 MB measured, sandbox included).
	massReissuePeak = 160 << 20
	// maxCeiling is the most MemoryMax= may be: a ceiling far above what
	// dcvd ever uses would stop a runaway only once it has taken the
	// host's memory.
	maxCeiling = 4 << 30
)

// sizeSuffixes are the suffixes of systemd's sizes (MemoryMax=) and of
// GOMEMLIMIT, all base 1024.
var (
	systemdSuffixes = map[string]int64{"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
	goSuffixes      = map[string]int64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
)

// parseSize parses a byte count with one of suffixes. "infinity", a
// percentage (of the host's memory, whatever it is) or a bare 0 are refused:
// none is a ceiling the unit can be checked against.
func parseSize(v string, suffixes map[string]int64) (int64, error) {
	i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(v)
	}
	mult, ok := suffixes[v[i:]]
	if i == 0 || !ok {
		return 0, errors.New(strconv.Quote(v) + " is not a number of bytes with a suffix " + suffixList(suffixes))
	}
	n, err := strconv.ParseInt(v[:i], 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, errors.New(strconv.Quote(v) + " is not a positive size")
	}
	return n * mult, nil
}

func suffixList(suffixes map[string]int64) string {
	var l []string
	for s := range suffixes {
		if s != "" {
			l = append(l, s)
		}
	}
	slices.Sort(l)
	return strings.Join(l, ", ")
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		v        string
		suffixes map[string]int64
		want     int64 // 0: an error
	}{
		{"256M", systemdSuffixes, 256 << 20},
		{"1G", systemdSuffixes, 1 << 30},
		{"524288K", systemdSuffixes, 512 << 20},
		{"1048576", systemdSuffixes, 1 << 20},
		{"infinity", systemdSuffixes, 0},
		{"50%", systemdSuffixes, 0},
		{"0", systemdSuffixes, 0},
		{"M", systemdSuffixes, 0},
		{"256MiB", systemdSuffixes, 0},
		{"-1M", systemdSuffixes, 0},
		{"99999999999999999999", systemdSuffixes, 0},
		{"200MiB", goSuffixes, 200 << 20},
		{"1GiB", goSuffixes, 1 << 30},
		{"209715200B", goSuffixes, 200 << 20},
		{"200M", goSuffixes, 0},
		{"off", goSuffixes, 0},
	}
	for _, tt := range tests {
		t.Run(tt.v, func(t *testing.T) {
			got, err := parseSize(tt.v, tt.suffixes)
			if (err == nil) != (tt.want != 0) || got != tt.want {
				t.Errorf("parseSize(%q) = %d, %v; want %d", tt.v, got, err, tt.want)
			}
		})
	}
}

// serviceValues returns the values given to key in the [Service] section of
// a unit, in order: for the Memory*= keys the last one is what systemd uses.
func serviceValues(unit, key string) []string {
	var vals []string
	section := ""
	for line := range strings.Lines(unit) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok && section == "[Service]" && strings.TrimSpace(k) == key {
			vals = append(vals, strings.TrimSpace(v))
		}
	}
	return vals
}

// memoryProblems checks the memory ceiling of a unit: MemoryHigh= and
// MemoryMax= set, high enough for a mass reissue, MemoryMax= above
// MemoryHigh= with room for the kernel to reclaim and throttle before it
// kills, and GOMEMLIMIT, when set, between the two: above what dcvd needs,
// below where the kernel throttles it.
func memoryProblems(unit string) []string {
	var problems []string
	size := func(key string) int64 {
		vals := serviceValues(unit, key)
		if len(vals) == 0 {
			problems = append(problems, key+"= is not set: nothing bounds dcvd's memory")
			return 0
		}
		n, err := parseSize(vals[len(vals)-1], systemdSuffixes)
		if err != nil {
			problems = append(problems, key+"="+vals[len(vals)-1]+": "+err.Error())
		}
		return n
	}
	memHigh, memMax := size("MemoryHigh"), size("MemoryMax")
	mb := func(n int64) string { return strconv.FormatInt(n>>20, 10) + " MiB" }
	if memHigh != 0 && memHigh < massReissuePeak*5/4 {
		problems = append(problems, "MemoryHigh= is "+mb(memHigh)+": a mass reissue peaks at "+mb(massReissuePeak)+
			", and would be throttled below "+mb(massReissuePeak*5/4))
	}
	if memHigh != 0 && memMax != 0 && memMax < memHigh*3/2 {
		problems = append(problems, "MemoryMax= is "+mb(memMax)+", less than 1.5 times MemoryHigh= ("+mb(memHigh)+
			"): dcvd would be killed before the kernel could reclaim and throttle it")
	}
	if memMax > maxCeiling {
		problems = append(problems, "MemoryMax= is "+mb(memMax)+", above "+mb(maxCeiling)+": a runaway dcvd would take the host's memory first")
	}
	for _, env := range serviceValues(unit, "Environment") {
		for _, kv := range strings.Fields(env) {
			v, ok := strings.CutPrefix(strings.Trim(kv, `"`), "GOMEMLIMIT=")
			if !ok {
				continue
			}
			limit, err := parseSize(v, goSuffixes)
			switch {
			case err != nil:
				problems = append(problems, "GOMEMLIMIT="+v+": "+err.Error())
			case limit < massReissuePeak:
				problems = append(problems, "GOMEMLIMIT is "+mb(limit)+", below the "+mb(massReissuePeak)+
					" a mass reissue needs: the garbage collector would run without end")
			case memHigh != 0 && limit >= memHigh:
				problems = append(problems, "GOMEMLIMIT is "+mb(limit)+", not below MemoryHigh= ("+mb(memHigh)+
					"): the kernel would throttle dcvd before its garbage collector works harder")
			}
		}
	}
	return problems
}

func TestMemoryLimits(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "systemd", "dcvd.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(data)
	t.Logf("dcvd.service: MemoryHigh=%v MemoryMax=%v Environment=%v", serviceValues(unit, "MemoryHigh"),
		serviceValues(unit, "MemoryMax"), serviceValues(unit, "Environment"))
	if problems := memoryProblems(unit); len(problems) > 0 {
		t.Errorf("dcvd.service's memory ceiling:\n%s", strings.Join(problems, "\n"))
	}
}

// TestMemoryLimitsCatchMistakes proves that memoryProblems finds what a
// careless edit of dcvd.service would do, so that TestMemoryLimits can
// fail.
func TestMemoryLimitsCatchMistakes(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "systemd", "dcvd.service"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, old, new, want string }{
		{"no MemoryMax", "\nMemoryMax=512M\n", "\n", "MemoryMax= is not set"},
		{"no MemoryHigh", "\nMemoryHigh=256M\n", "\n", "MemoryHigh= is not set"},
		{"MemoryHigh too low", "\nMemoryHigh=256M\n", "\nMemoryHigh=64M\n", "would be throttled"},
		{"MemoryMax at MemoryHigh", "\nMemoryMax=512M\n", "\nMemoryMax=256M\n", "less than 1.5 times"},
		{"no ceiling", "\nMemoryMax=512M\n", "\nMemoryMax=infinity\n", "MemoryMax=infinity"},
		{"a ceiling too high", "\nMemoryMax=512M\n", "\nMemoryMax=64G\n", "a runaway"},
		{"a percentage", "\nMemoryHigh=256M\n", "\nMemoryHigh=10%\n", "MemoryHigh=10%"},
		{"GOMEMLIMIT above MemoryHigh", "GOMEMLIMIT=200MiB", "GOMEMLIMIT=300MiB", "not below MemoryHigh"},
		{"GOMEMLIMIT too low", "GOMEMLIMIT=200MiB", "GOMEMLIMIT=64MiB", "without end"},
		{"GOMEMLIMIT in systemd's units", "GOMEMLIMIT=200MiB", "GOMEMLIMIT=200M", "GOMEMLIMIT=200M:"},
		{"MemoryMax in a later line", "\nMemoryMax=512M\n", "\nMemoryMax=512M\nMemoryMax=300M\n", "less than 1.5 times"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(data), tt.old) {
				t.Fatalf("dcvd.service has no %q to change", tt.old)
			}
			problems := memoryProblems(strings.Replace(string(data), tt.old, tt.new, 1))
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("problems %q, want one mentioning %q", problems, tt.want)
			}
		})
	}
}

// notExecutableRE matches the one complaint of "systemd-analyze verify"
// that says nothing about the unit: a program it starts is not installed on
// this machine (dcvd itself, nginx on a host without it).
var notExecutableRE = regexp.MustCompile(`^\S+: Command (/\S+) is not executable: No such file or directory$`)

// verifyProblems returns the lines of "systemd-analyze verify" output that
// point at a problem of the units.
func verifyProblems(out string) []string {
	var problems []string
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if m := notExecutableRE.FindStringSubmatch(line); m != nil {
			if _, err := os.Stat(m[1]); errors.Is(err, fs.ErrNotExist) {
				continue
			}
		}
		problems = append(problems, line)
	}
	return problems
}

// verify runs "systemd-analyze verify" on files and returns its problems.
// It skips the test where verify cannot work without a running systemd.
func verify(t *testing.T, files ...string) []string {
	t.Helper()
	out, errOut, err := analyze(t, append([]string{"verify", "--man=no"}, files...)...)
	all := out + errOut
	if strings.Contains(all, "Failed to initialize manager") {
		t.Skipf("systemd-analyze verify does not work here (it needs a running systemd): %s", all)
	}
	problems := verifyProblems(all)
	if err != nil && len(problems) == 0 && strings.TrimSpace(all) == "" {
		problems = append(problems, "exit status: "+err.Error())
	}
	return problems
}

func TestVerifyUnits(t *testing.T) {
	root := repoRoot(t)
	for _, u := range units {
		t.Run(u, func(t *testing.T) {
			if problems := verify(t, filepath.Join(root, "systemd", u)); len(problems) > 0 {
				t.Errorf("systemd-analyze verify systemd/%s:\n%s", u, strings.Join(problems, "\n"))
			}
		})
	}
}

// TestVerifyCatchesMistakes proves that verifyProblems reports what a
// mistyped unit draws, so that TestVerifyUnits can fail.
func TestVerifyCatchesMistakes(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "systemd", "dcvd.service"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, old, new, want string }{
		{"unknown key", "\nUMask=0077\n", "\nUMask=0077\nProtectSystm=strict\n", "Unknown key"},
		{"bad value", "\nProtectHome=yes\n", "\nProtectHome=maybe\n", "Failed to parse protect home value"},
		{"misspelt type", "\nType=notify\n", "\nType=notfy\n", "Failed to parse service type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(data), tt.old) {
				t.Fatalf("dcvd.service has no %q to change", tt.old)
			}
			bad := filepath.Join(t.TempDir(), "dcvd.service")
			if err := os.WriteFile(bad, []byte(strings.Replace(string(data), tt.old, tt.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			problems := verify(t, bad)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("verify of a unit with %s: problems %q, want one mentioning %q", tt.name, problems, tt.want)
			}
		})
	}
}

func TestVerifyProblems(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "dcvd")
	tests := []struct {
		name, out string
		want      int
	}{
		{"clean", "", 0},
		{"program not installed", "dcvd.service: Command " + missing + " is not executable: No such file or directory\n", 0},
		// /bin/sh exists: a complaint about it is about the unit.
		{"program present", "dcvd.service: Command /bin/sh is not executable: Permission denied\n", 1},
		{"unknown key", "/x/dcvd.service:76: Unknown key 'FooBar' in section [Service], ignoring.\n", 1},
		{"both", "dcvd.service: Command " + missing + " is not executable: No such file or directory\n" +
			"/x/dcvd.service:77: Failed to parse protect system value, ignoring: bogus\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := verifyProblems(tt.out); len(got) != tt.want {
				t.Errorf("got %q, want %d problem(s)", got, tt.want)
			}
		})
	}
}

// installer runs scripts/install.sh with args, with env added to an
// environment that has no DESTDIR of its own.
type installer struct {
	t      *testing.T
	script string
	binary string // a stand-in for the dcvd binary: install.sh only copies it
}

func newInstaller(t *testing.T) *installer {
	t.Helper()
	tool(t, "bash", "bash")
	tool(t, "install", "coreutils")
	bin := filepath.Join(t.TempDir(), "dcvd")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho 'dcvd test binary'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &installer{t: t, script: filepath.Join(repoRoot(t), "scripts", "install.sh"), binary: bin}
}

func (in *installer) run(env []string, args ...string) (string, error) {
	in.t.Helper()
	cmd := exec.CommandContext(in.t.Context(), "bash", append([]string{in.script}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DESTDIR=") && !strings.HasPrefix(kv, "TMPDIR=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TMPDIR="+in.t.TempDir())
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// staged is one path install.sh must create under DESTDIR.
type staged struct {
	path string
	mode fs.FileMode // permission bits; fs.ModeDir for directories
	src  string      // the file it copies, relative to the repository ("" for the binary)
}

func stagedTree(prefix string) []staged {
	return []staged{
		{prefix + "/bin/dcvd", 0o755, ""},
		{prefix + "/lib/systemd/system/dcvd.service", 0o644, "systemd/dcvd.service"},
		{prefix + "/lib/systemd/system/dcvd-reload-nginx.path", 0o644, "systemd/dcvd-reload-nginx.path"},
		{prefix + "/lib/systemd/system/dcvd-reload-nginx.service", 0o644, "systemd/dcvd-reload-nginx.service"},
		{prefix + "/lib/sysusers.d/dcvd.conf", 0o644, "systemd/dcvd.sysusers.conf"},
		{prefix + "/lib/tmpfiles.d/dcvd.conf", 0o644, "systemd/dcvd.tmpfiles.conf"},
		{prefix + "/share/doc/dcvd/config.example.toml", 0o644, "config.example.toml"},
		{prefix + "/share/doc/dcvd/systemd.md", 0o644, "systemd/README.md"},
		{"/etc/dcvd", fs.ModeDir | 0o750, ""},
		{"/etc/dcvd/config.toml", 0o640, "config.example.toml"},
	}
}

// checkTree compares the staged files under destdir with their sources.
// The units' /usr/local/ paths follow the prefix.
func (in *installer) checkTree(destdir, prefix string) {
	t := in.t
	t.Helper()
	root := repoRoot(t)
	for _, f := range stagedTree(prefix) {
		p := filepath.Join(destdir, f.path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if got := fi.Mode() & (fs.ModeType | fs.ModePerm); got != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, got, f.mode)
		}
		if f.mode.IsDir() {
			continue
		}
		src := in.binary
		if f.src != "" {
			src = filepath.Join(root, f.src)
		}
		want, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(f.path, prefix+"/lib/systemd/") {
			want = bytes.ReplaceAll(want, []byte("/usr/local/"), []byte(prefix+"/"))
		}
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: content differs from %s (err %v)", f.path, src, err)
		}
	}
}

func TestInstallStaged(t *testing.T) {
	in := newInstaller(t)
	dest := filepath.Join(t.TempDir(), "stage")

	out, err := in.run(nil, "--binary", in.binary, "--destdir", dest)
	if err != nil {
		t.Fatalf("install.sh --destdir: %v\n%s", err, out)
	}
	if !strings.Contains(out, "Staged under "+dest) {
		t.Errorf("install.sh did not say where it staged:\n%s", out)
	}
	in.checkTree(dest, "/usr/local")

	// Nothing outside the tree: no users, owners or services on a staged
	// install.
	for line := range strings.Lines(out) {
		cmd, ok := strings.CutPrefix(strings.TrimSpace(line), "+ ")
		if !ok {
			continue
		}
		fields := strings.Fields(cmd)
		switch {
		case fields[0] == "install" && !slices.Contains(fields, "-o") && !slices.Contains(fields, "-g") &&
			strings.HasPrefix(fields[len(fields)-1], dest+"/"):
		case fields[0] == "sed" && strings.Contains(cmd, "/usr/local/"):
		default:
			t.Errorf("a staged install ran %q, which is not an install into %s", cmd, dest)
		}
	}

	// Again, through $DESTDIR this time: a changed configuration is kept as
	// it is, a changed unit is replaced.
	config := filepath.Join(dest, "etc/dcvd/config.toml")
	mine := []byte("# my configuration\n")
	if err := os.WriteFile(config, mine, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(config, 0o600); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dest, "usr/local/lib/systemd/system/dcvd.service")
	if err := os.WriteFile(unit, []byte("[Service]\nExecStart=/bin/false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = in.run([]string{"DESTDIR=" + dest}, "--binary", in.binary)
	if err != nil {
		t.Fatalf("second install.sh: %v\n%s", err, out)
	}
	if !strings.Contains(out, "keeping "+config) {
		t.Errorf("second run did not say it keeps the configuration:\n%s", out)
	}
	if got, err := os.ReadFile(config); err != nil || !bytes.Equal(got, mine) {
		t.Errorf("the existing config.toml was overwritten: %q (%v)", got, err)
	}
	if fi, err := os.Stat(config); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the existing config.toml's mode was changed: %v (%v)", fi.Mode(), err)
	}
	if err := os.WriteFile(config, mustRead(t, filepath.Join(repoRoot(t), "config.example.toml")), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(config, 0o640); err != nil {
		t.Fatal(err)
	}
	in.checkTree(dest, "/usr/local") // the unit is back, all else unchanged

	// A symlink where the configuration belongs is a configuration too.
	link := filepath.Join(t.TempDir(), "stage")
	if err := os.MkdirAll(filepath.Join(link, "etc/dcvd"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/config.toml", filepath.Join(link, "etc/dcvd/config.toml")); err != nil {
		t.Fatal(err)
	}
	if out, err := in.run(nil, "--binary", in.binary, "--destdir", link); err != nil {
		t.Fatalf("install.sh over a symlinked config: %v\n%s", err, out)
	}
	if target, err := os.Readlink(filepath.Join(link, "etc/dcvd/config.toml")); err != nil || target != "/nonexistent/config.toml" {
		t.Errorf("the config.toml symlink was replaced: %q, %v", target, err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInstallPrefix(t *testing.T) {
	in := newInstaller(t)
	dest := t.TempDir()
	out, err := in.run(nil, "--binary="+in.binary, "--destdir="+dest, "--prefix=/usr")
	if err != nil {
		t.Fatalf("install.sh --prefix /usr: %v\n%s", err, out)
	}
	in.checkTree(dest, "/usr")
	unit := string(mustRead(t, filepath.Join(dest, "usr/lib/systemd/system/dcvd.service")))
	if !strings.Contains(unit, "\nExecStart=/usr/bin/dcvd run --config /etc/dcvd/config.toml\n") {
		t.Errorf("ExecStart does not follow the prefix:\n%s", unit)
	}
	if _, err := os.Stat(filepath.Join(dest, "usr/local")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--prefix /usr still installed into /usr/local: %v", err)
	}
}

func TestInstallDryRun(t *testing.T) {
	in := newInstaller(t)
	dest := filepath.Join(t.TempDir(), "stage")
	out, err := in.run(nil, "--dry-run", "--binary", in.binary, "--destdir", dest)
	if err != nil {
		t.Fatalf("install.sh --dry-run: %v\n%s", err, out)
	}
	if _, err := os.Stat(dest); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("--dry-run created %s: %v", dest, err)
	}
	for _, want := range []string{"+ install -m 0755 " + in.binary + " " + dest + "/usr/local/bin/dcvd",
		"+ install -m 0640 ", "Dry run: nothing was changed."} {
		if !strings.Contains(out, want) {
			t.Errorf("--dry-run output lacks %q:\n%s", want, out)
		}
	}
}

func TestInstallRefuses(t *testing.T) {
	in := newInstaller(t)
	notExec := filepath.Join(t.TempDir(), "dcvd")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing binary", []string{"--binary", filepath.Join(t.TempDir(), "none")}, "is not an executable file"},
		{"binary not executable", []string{"--binary", notExec}, "is not an executable file"},
		{"binary is a directory", []string{"--binary", t.TempDir()}, "is not an executable file"},
		{"relative prefix", []string{"--binary", in.binary, "--prefix", "usr"}, "must be an absolute path"},
		{"root prefix", []string{"--binary", in.binary, "--prefix", "/"}, "not supported"},
		{"prefix with odd characters", []string{"--binary", in.binary, "--prefix", "/opt/d|cvd"}, "may only contain"},
		{"destdir /", []string{"--binary", in.binary, "--destdir", "/"}, "the real system"},
		{"unknown flag", []string{"--bogus"}, "unknown argument --bogus"},
		{"flag without value", []string{"--binary"}, "--binary needs a path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "stage")
			args := tt.args
			if !slices.Contains(args, "--destdir") {
				args = append([]string{"--destdir", dest}, args...)
			}
			out, err := in.run(nil, args...)
			if err == nil {
				t.Fatalf("install.sh %q succeeded:\n%s", args, out)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("install.sh %q: output lacks %q:\n%s", args, tt.want, out)
			}
			if _, err := os.Stat(dest); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused install wrote to %s", dest)
			}
		})
	}
}

// TestInstallNeedsRoot checks that a real install (no DESTDIR) refuses to
// start as an ordinary user. As root it would install into this machine,
// so it does not run there.
func TestInstallNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: a real install would change this machine")
	}
	in := newInstaller(t)
	out, err := in.run(nil, "--binary", in.binary)
	if err == nil || !strings.Contains(out, "run as root") {
		t.Errorf("install.sh without --destdir as uid %d: err %v, want a refusal:\n%s", os.Geteuid(), err, out)
	}
}
