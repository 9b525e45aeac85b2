package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

// The dcvd binary under test is built once per test binary, into binDir,
// for each set of build tags asked for.
var (
	binDir string
	builds = map[string]*dcvdBuild{"": {}, "crashtest": {}}
)

type dcvdBuild struct {
	once sync.Once
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dcvd-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildTimeout bounds one go build (a cold cache compiles SQLite).
const buildTimeout = 10 * time.Minute

// dcvdBinary returns the path of cmd/dcvd built with tags, building it on
// first use. Under -race it is built with -race too, so that a data race
// in the daemon fails these tests.
func dcvdBinary(t *testing.T, tags string) string {
	t.Helper()
	b, ok := builds[tags]
	if !ok {
		t.Fatalf("no dcvd build with tags %q", tags)
	}
	name := "dcvd"
	if tags != "" {
		name += "-" + tags
	}
	return buildDcvd(t, b, name, raceEnabled(), tags)
}

// buildDcvd builds cmd/dcvd into binDir/name once per b (with the race
// detector when race, with tags when given) and returns its path.
func buildDcvd(t *testing.T, b *dcvdBuild, name string, race bool, tags string) string {
	t.Helper()
	b.once.Do(func() {
		goCmd, err := goCommand()
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(binDir, name)
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		if tags != "" {
			args = append(args, "-tags", tags)
		}
		args = append(args, "github.com/dcvd/dcvd/cmd/dcvd")
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, goCmd, args...)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
			return
		}
		t.Logf("built %s in %s", strings.Join(cmd.Args[1:], " "), time.Since(start).Round(time.Millisecond))
	})
	if b.err != nil {
		t.Fatalf("build dcvd: %v", b.err)
	}
	return b.path
}

// goCommand is the go command of the toolchain that built this test, else
// the one on PATH.
func goCommand() (string, error) {
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
		return p, nil
	}
	p, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no go command in %s/bin or on PATH: %w", runtime.GOROOT(), err)
	}
	return p, nil
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// dcvdEnv is the environment of a dcvd run: this process's, without the
// crash hook's variable, with GORACE for a -race build, plus env.
func dcvdEnv(env []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DCVD_CRASH_AT_STEP=") && !strings.HasPrefix(kv, "GORACE=") {
			out = append(out, kv)
		}
	}
	out = append(out, "GORACE="+goraceFor(os.Getenv("GORACE")))
	return append(out, env...)
}

// goraceFor is GORACE for a dcvd built with -race: the caller's options,
// and no second of sleep at each exit (the race runtime's default, which
// would make every run of dcvd take a second longer) unless asked for.
func goraceFor(gorace string) string {
	if strings.Contains(gorace, "atexit_sleep_ms=") {
		return gorace
	}
	return strings.TrimSpace(gorace + " atexit_sleep_ms=0")
}
