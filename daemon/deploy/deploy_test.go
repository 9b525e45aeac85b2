package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// deployTestCA issues test certificates from an intermediate, whose PEM is
// the chain.
type deployTestCA struct {
	key      *ecdsa.PrivateKey
	cert     *x509.Certificate
	chainPEM string
}

func newDeployTestCA(t *testing.T) *deployTestCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dcvd test intermediate"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &deployTestCA{key: key, cert: cert,
		chainPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// issue returns the bundle of a new leaf with its own key.
func (ca *deployTestCA) issue(t *testing.T, serial int64, names ...string) Bundle {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	notAfter := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return Bundle{
		Cert:     "shop",
		CertPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		ChainPEM: ca.chainPEM,
		KeyPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})),
		Names:    names,
		Serial:   hex.EncodeToString(big.NewInt(serial).Bytes()),
		NotAfter: notAfter,
	}
}

// deployTestFiles is what Install should write for b.
func deployTestFiles(b Bundle) map[string]string {
	return map[string]string{
		"cert.pem":      b.CertPEM,
		"chain.pem":     b.ChainPEM,
		"fullchain.pem": b.CertPEM + b.ChainPEM,
		"privkey.pem":   b.KeyPEM,
	}
}

// deployTestRead returns the four files of a generation in dir, missing
// ones absent.
func deployTestRead(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, name := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got[name] = string(data)
	}
	return got
}

// deployTestWrite makes dir hold exactly files (of the four).
func deployTestWrite(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
		path := filepath.Join(dir, name)
		content, ok := files[name]
		if !ok {
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func deployTestCheckGeneration(t *testing.T, what, dir string, want map[string]string) {
	t.Helper()
	if got := deployTestRead(t, dir); !reflect.DeepEqual(got, want) {
		var diff []string
		for _, name := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
			if got[name] != want[name] {
				diff = append(diff, name)
			}
		}
		t.Errorf("%s (%s): files %v differ from the expected generation", what, dir, diff)
	}
}

// deployTestNoTemps fails if a temporary file is left in dir.
func deployTestNoTemps(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left in %s", e.Name(), dir)
		}
	}
}

// Not parallel: the umask is the process's.
func TestInstallWritesFilesWithExactModes(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	ca := newDeployTestCA(t)

	tests := []struct {
		name              string
		sub               string // the deploy dir below a temp dir, created by Install
		mode, keyMode     os.FileMode
		wantMode, wantKey os.FileMode
		trimPEM           bool // PEM without final newlines
	}{
		{name: "defaults", sub: "shop", wantMode: 0o644, wantKey: 0o600},
		{name: "custom modes", sub: "shop", mode: 0o640, keyMode: 0o640, wantMode: 0o640, wantKey: 0o640},
		{name: "nested missing directories", sub: "a/b/shop", wantMode: 0o644, wantKey: 0o600},
		{name: "PEM without final newline", sub: "shop", wantMode: 0o644, wantKey: 0o600, trimPEM: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, tt.sub)
			b := ca.issue(t, 10, "shop.example.com", "www.example.com")
			want := deployTestFiles(b)
			if tt.trimPEM {
				b.CertPEM = strings.TrimSuffix(b.CertPEM, "\n")
				b.ChainPEM = strings.TrimSuffix(b.ChainPEM, "\n")
				b.KeyPEM = strings.TrimSuffix(b.KeyPEM, "\n")
			}
			spec := DeploySpec{Dir: dir, Mode: tt.mode, KeyMode: tt.keyMode}
			var d Deployer
			if err := d.Install(context.Background(), spec, b); err != nil {
				t.Fatal(err)
			}
			deployTestCheckGeneration(t, "deployed", dir, want)
			if got, err := parsePEMChain(deployTestRead(t, dir)["fullchain.pem"]); err != nil || got != 2 {
				t.Errorf("fullchain.pem: %d certificates (%v), want 2", got, err)
			}
			for name, wantMode := range map[string]os.FileMode{"cert.pem": tt.wantMode, "chain.pem": tt.wantMode,
				"fullchain.pem": tt.wantMode, "privkey.pem": tt.wantKey} {
				fi, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != wantMode {
					t.Errorf("%s: mode %v, want %v", name, fi.Mode(), wantMode)
				}
			}
			for p := dir; p != base; p = filepath.Dir(p) {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != fs.ModeDir|0o755 {
					t.Errorf("created directory %s: mode %v, want drwxr-xr-x", p, fi.Mode())
				}
			}
			deployTestNoTemps(t, dir)
			// A first deploy has nothing to keep.
			deployTestCheckGeneration(t, "previous", spec.PreviousDir(), map[string]string{})

			cert, chain, err := ReadDeployed(spec)
			if err != nil {
				t.Fatal(err)
			}
			if cert != want["cert.pem"] || chain != want["chain.pem"] {
				t.Error("ReadDeployed does not return the deployed cert.pem and chain.pem")
			}
		})
	}
}

// parsePEMChain counts the certificates in s, failing on anything else.
func parsePEMChain(s string) (int, error) {
	n := 0
	rest := []byte(s)
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return n, err
		}
		n++
	}
	if strings.TrimSpace(string(rest)) != "" {
		return n, errors.New("trailing data")
	}
	return n, nil
}

func TestInstallKeepsPreviousGeneration(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	a, b, c := ca.issue(t, 1, "shop.example.com"), ca.issue(t, 2, "shop.example.com"), ca.issue(t, 3, "shop.example.com")
	spec := DeploySpec{Dir: filepath.Join(t.TempDir(), "shop")}
	var d Deployer
	ctx := context.Background()

	steps := []struct {
		install        Bundle
		wantCur, wantP map[string]string
	}{
		{a, deployTestFiles(a), map[string]string{}},
		{b, deployTestFiles(b), deployTestFiles(a)},
		// A repeat (a crash after Install, a redeploy) must not make the
		// new generation its own previous one.
		{b, deployTestFiles(b), deployTestFiles(a)},
		{c, deployTestFiles(c), deployTestFiles(b)},
	}
	for i, s := range steps {
		if err := d.Install(ctx, spec, s.install); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		deployTestCheckGeneration(t, fmt.Sprintf("step %d: current", i), spec.Dir, s.wantCur)
		deployTestCheckGeneration(t, fmt.Sprintf("step %d: previous", i), spec.PreviousDir(), s.wantP)
	}
	fi, err := os.Stat(spec.PreviousDir())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != fs.ModeDir|0o700 {
		t.Errorf("previous/: mode %v, want drwx------", fi.Mode())
	}
	fi, err = os.Stat(filepath.Join(spec.PreviousDir(), "privkey.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("previous/privkey.pem: mode %v, want 0600", fi.Mode())
	}
}

// An install interrupted at any point, repeated, ends with the new files
// and the generation they replaced kept — never the new one kept twice.
func TestInstallResumesAfterCrash(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	z, a, b := ca.issue(t, 1, "shop.example.com"), ca.issue(t, 2, "shop.example.com"), ca.issue(t, 3, "shop.example.com")
	za, fa, fb := deployTestFiles(z), deployTestFiles(a), deployTestFiles(b)
	mix := func(m1, m2 map[string]string, fromM2 ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m1 {
			out[k] = v
		}
		for _, k := range fromM2 {
			if v, ok := m2[k]; ok {
				out[k] = v
			} else {
				delete(out, k)
			}
		}
		return out
	}

	tests := []struct {
		name          string
		current, prev map[string]string
	}{
		{"not started", fa, za},
		{"interrupted while keeping: old cert.pem invalidated", fa, mix(za, nil, "cert.pem")},
		{"interrupted while keeping: key and chain copied", fa, mix(mix(za, fa, "privkey.pem", "chain.pem"), nil, "cert.pem")},
		{"kept, nothing replaced", fa, fa},
		{"kept, key replaced", mix(fa, fb, "privkey.pem"), fa},
		{"kept, all but cert.pem replaced", mix(fa, fb, "privkey.pem", "chain.pem", "fullchain.pem"), fa},
		{"installed, step not yet recorded", fb, fa},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := DeploySpec{Dir: t.TempDir()}
			deployTestWrite(t, spec.Dir, tt.current)
			deployTestWrite(t, spec.PreviousDir(), tt.prev)
			// Leftovers of the crash, one of them a private key.
			for _, dir := range []string{spec.Dir, spec.PreviousDir()} {
				stale := filepath.Join(dir, deployTempPrefix+"STALE"+deployTempSuffix)
				if err := os.WriteFile(stale, []byte(b.KeyPEM), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var d Deployer
			if err := d.Install(context.Background(), spec, b); err != nil {
				t.Fatal(err)
			}
			deployTestCheckGeneration(t, "current", spec.Dir, fb)
			deployTestCheckGeneration(t, "previous", spec.PreviousDir(), fa)
			deployTestNoTemps(t, spec.Dir)
			deployTestNoTemps(t, spec.PreviousDir())
		})
	}
}

// A directory without cert.pem holds no generation: an older kept one must
// not become restorable.
func TestInstallWithoutCurrentGenerationClearsPrevious(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	z, b := ca.issue(t, 1, "shop.example.com"), ca.issue(t, 2, "shop.example.com")
	spec := DeploySpec{Dir: t.TempDir()}
	deployTestWrite(t, spec.Dir, map[string]string{"privkey.pem": z.KeyPEM})
	deployTestWrite(t, spec.PreviousDir(), deployTestFiles(z))
	var d Deployer
	if err := d.Install(context.Background(), spec, b); err != nil {
		t.Fatal(err)
	}
	deployTestCheckGeneration(t, "previous", spec.PreviousDir(), map[string]string{})
	if err := d.Rollback(context.Background(), spec); !errors.Is(err, ErrNoPreviousGeneration) {
		t.Errorf("Rollback = %v, want ErrNoPreviousGeneration", err)
	}
	deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(b))
}

func TestInstallRefusesBadInput(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	other := newDeployTestCA(t)
	a := ca.issue(t, 1, "shop.example.com")
	good := ca.issue(t, 2, "shop.example.com")
	stranger := other.issue(t, 3, "shop.example.com")

	tests := []struct {
		name   string
		spec   func(*DeploySpec)
		bundle func(*Bundle)
		want   string
	}{
		{"relative dir", func(s *DeploySpec) { s.Dir = "etc/ssl/shop" }, nil, `"etc/ssl/shop" is not an absolute path`},
		{"empty dir", func(s *DeploySpec) { s.Dir = "" }, nil, "deploy directory not set"},
		{"setuid mode", func(s *DeploySpec) { s.Mode = fs.ModeSetuid | 0o755 }, nil, "only permission bits"},
		{"world-readable key", func(s *DeploySpec) { s.KeyMode = 0o644 }, nil, "every user of the system"},
		{"negative timeout", func(s *DeploySpec) { s.ReloadTimeout = -time.Second }, nil, "reload timeout -1s is negative"},
		{"unknown owner", func(s *DeploySpec) { s.Owner = "dcvd-no-such-user" }, nil, `deploy owner "dcvd-no-such-user"`},
		{"unknown group", func(s *DeploySpec) { s.Group = "dcvd-no-such-group" }, nil, `deploy group "dcvd-no-such-group"`},
		{"key of another certificate", nil, func(b *Bundle) { b.KeyPEM = stranger.KeyPEM }, "private key does not go with the certificate"},
		{"no key", nil, func(b *Bundle) { b.KeyPEM = "" }, "private key: not a single PEM private key"},
		{"certificate as key", nil, func(b *Bundle) { b.KeyPEM = b.CertPEM }, "private key: not a single PEM private key"},
		{"no leaf", nil, func(b *Bundle) { b.CertPEM = "" }, "leaf certificate: 0 certificates"},
		{"leaf with chain", nil, func(b *Bundle) { b.CertPEM += b.ChainPEM }, "leaf certificate: 2 certificates"},
		{"garbage chain", nil, func(b *Bundle) { b.ChainPEM = "not a certificate" }, "chain: not PEM"},
		{"key in chain", nil, func(b *Bundle) { b.ChainPEM += b.KeyPEM }, `chain: unexpected PEM block "PRIVATE KEY"`},
		{"corrupt leaf", nil, func(b *Bundle) {
			b.CertPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}))
		}, "leaf certificate: x509"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := DeploySpec{Dir: t.TempDir()}
			var d Deployer
			if err := d.Install(context.Background(), spec, a); err != nil {
				t.Fatal(err)
			}
			bad, b := spec, good
			if tt.spec != nil {
				tt.spec(&bad)
			}
			if tt.bundle != nil {
				tt.bundle(&b)
			}
			err := d.Install(context.Background(), bad, b)
			if err == nil {
				t.Fatal("Install succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "certificate shop") {
				t.Errorf("error %q does not name the certificate and say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY-----") || strings.Contains(err.Error(), "BEGIN") {
				t.Errorf("error %q quotes PEM", err)
			}
			deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(a))
			deployTestCheckGeneration(t, "previous", spec.PreviousDir(), map[string]string{})
			if tt.spec != nil && bad.Validate() == nil {
				t.Error("Validate accepts the spec Install refused")
			}
		})
	}
}

func TestInstallOwnerAndGroup(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("changing a file's owner needs root")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	group, gid := "nogroup", ""
	if g, err := user.LookupGroup(group); err == nil {
		gid = g.Gid
	} else {
		group, gid = "65534", "65534"
	}
	ca := newDeployTestCA(t)
	a, b := ca.issue(t, 1, "shop.example.com"), ca.issue(t, 2, "shop.example.com")

	tests := []struct {
		name, owner, group string
		wantUID, wantGID   string
	}{
		{"names", "nobody", group, nobody.Uid, gid},
		{"numbers unknown to the system", "54321", "54322", "54321", "54322"},
		{"owner only", "nobody", "", nobody.Uid, "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := DeploySpec{Dir: t.TempDir(), Owner: tt.owner, Group: tt.group}
			var d Deployer
			for _, bundle := range []Bundle{a, b} {
				if err := d.Install(context.Background(), spec, bundle); err != nil {
					t.Fatal(err)
				}
			}
			check := func(when string) {
				for _, name := range []string{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"} {
					fi, err := os.Stat(filepath.Join(spec.Dir, name))
					if err != nil {
						t.Fatal(err)
					}
					st := fi.Sys().(*syscall.Stat_t)
					if uid, gid := strconv.Itoa(int(st.Uid)), strconv.Itoa(int(st.Gid)); uid != tt.wantUID || gid != tt.wantGID {
						t.Errorf("%s: %s owned by %s:%s, want %s:%s", when, name, uid, gid, tt.wantUID, tt.wantGID)
					}
					want := os.FileMode(0o644)
					if name == "privkey.pem" {
						want = 0o600
					}
					if fi.Mode() != want {
						t.Errorf("%s: %s: mode %v, want %v", when, name, fi.Mode(), want)
					}
				}
			}
			check("installed")
			if err := d.Rollback(context.Background(), spec); err != nil {
				t.Fatal(err)
			}
			check("restored")
			deployTestCheckGeneration(t, "restored", spec.Dir, deployTestFiles(a))
		})
	}
}

func TestReloadEnvironment(t *testing.T) {
	t.Setenv("DCVD_TEST_API_SECRET", "s3cret-value")
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("LANG", "C.UTF-8")
	ca := newDeployTestCA(t)
	b := ca.issue(t, 0x1f2e, "shop.example.com", "*.example.com")
	out := filepath.Join(t.TempDir(), "env.out")
	spec := DeploySpec{Dir: t.TempDir(), Reload: "env > " + out}
	var d Deployer
	if err := d.Deploy(context.Background(), spec, b); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	want := map[string]string{
		"DCVD_CERT_NAME":      "shop",
		"DCVD_DEPLOY_DIR":     spec.Dir,
		"DCVD_CERT_PATH":      filepath.Join(spec.Dir, "cert.pem"),
		"DCVD_CHAIN_PATH":     filepath.Join(spec.Dir, "chain.pem"),
		"DCVD_FULLCHAIN_PATH": filepath.Join(spec.Dir, "fullchain.pem"),
		"DCVD_KEY_PATH":       filepath.Join(spec.Dir, "privkey.pem"),
		"DCVD_DOMAINS":        "shop.example.com *.example.com",
		"DCVD_SERIAL":         "1f2e",
		"DCVD_NOT_AFTER":      b.NotAfter.UTC().Format(time.RFC3339),
		"LANG":                "C.UTF-8",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s=%q, want %q", k, env[k], v)
		}
	}
	if env["PATH"] == "" {
		t.Error("PATH not set")
	}
	for k := range env {
		// What the shell itself adds.
		allowed := []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "PWD", "OLDPWD", "SHLVL", "_"}
		if !strings.HasPrefix(k, "DCVD_") && !slices.Contains(allowed, k) || k == "DCVD_TEST_API_SECRET" {
			t.Errorf("the reload command inherits %s", k)
		}
	}
	if strings.Contains(string(data), "s3cret-value") {
		t.Error("the reload command's environment holds the secret")
	}
}

// deployTestAlive reports whether pid is a process that has not exited
// (a zombie waiting for its reaper has).
func deployTestAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesized command name.
	_, rest, ok := strings.Cut(string(data), ") ")
	return ok && !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

func TestReloadTimeoutKillsProcessGroup(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	b := ca.issue(t, 1, "shop.example.com")
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The shell waits for a child, which must die with it: long before it
	// would end on its own, or Reload's wait for the output to close.
	spec := DeploySpec{Dir: t.TempDir(), ReloadTimeout: 200 * time.Millisecond,
		Reload: "sleep 120 & echo $! > " + pidFile + "; wait"}
	var d Deployer
	if err := d.Install(context.Background(), spec, b); err != nil {
		t.Fatal(err)
	}
	err := d.Reload(context.Background(), spec, b)
	if err == nil {
		t.Fatal("Reload succeeded")
	}
	for _, want := range []string{"reload certificate shop", `command "sleep 120 &`, "timed out after 200ms", "process group was killed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	// SIGKILL is delivered asynchronously; allow the child ample time to go.
	for deadline := time.Now().Add(5 * time.Second); deployTestAlive(pid); {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the reload command's child %d survived the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestReloadFailureReportsOutput(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	b := ca.issue(t, 1, "shop.example.com")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name     string
		ctx      context.Context
		command  string
		want     []string
		dontWant []string
	}{
		{"exit status and output", context.Background(), "echo starting; echo 'nginx: [emerg] bad cert' >&2; exit 3",
			[]string{`command "echo starting;`, "failed: exit status 3", `last output: "starting\nnginx: [emerg] bad cert"`}, nil},
		{"long output keeps the end", context.Background(), "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; echo LAST >&2; exit 1",
			[]string{"exit status 1", `line2999\nLAST"`}, []string{"line0\\n", "line2989"}},
		{"no output", context.Background(), "exit 7", []string{"exit status 7"}, []string{"last output"}},
		{"canceled", canceled, "true", []string{"interrupted: context canceled"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := DeploySpec{Dir: t.TempDir(), Reload: tt.command}
			var d Deployer
			err := d.Reload(tt.ctx, spec, b)
			if err == nil {
				t.Fatal("Reload succeeded")
			}
			msg := err.Error()
			for _, want := range append(tt.want, "reload certificate shop") {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			for _, bad := range tt.dontWant {
				if strings.Contains(msg, bad) {
					t.Errorf("error %q says %q", msg, bad)
				}
			}
			if len(msg) > reloadErrorBytes+512 {
				t.Errorf("error of %d bytes: the output is not bounded", len(msg))
			}
		})
	}
}

func TestReloadWithoutCommand(t *testing.T) {
	t.Parallel()
	d := Deployer{Run: func(context.Context, string, []string) (string, error) {
		t.Error("Run called without a reload command")
		return "", nil
	}}
	// The directory does not even exist: nothing is touched.
	spec := DeploySpec{Dir: filepath.Join(t.TempDir(), "missing")}
	if err := d.Reload(context.Background(), spec, Bundle{Cert: "shop"}); err != nil {
		t.Fatal(err)
	}
}

// deployTestRunner is a Run that records the serials it reloaded and fails
// for those in fail (or for all after the first failAllAfter calls, when
// positive).
type deployTestRunner struct {
	mu           sync.Mutex
	serials      []string
	fail         map[string]bool
	failAllAfter int
}

func (r *deployTestRunner) run(_ context.Context, _ string, env []string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	serial := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "DCVD_SERIAL="); ok {
			serial = v
		}
	}
	r.serials = append(r.serials, serial)
	if r.fail[serial] || (r.failAllAfter > 0 && len(r.serials) > r.failAllAfter) {
		return "nginx: [emerg] cannot load certificate\n", errors.New("exit status 1")
	}
	return "", nil
}

func TestDeployRestoresPreviousGenerationWhenReloadFails(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	a, b := ca.issue(t, 0xa, "shop.example.com"), ca.issue(t, 0xb, "shop.example.com")

	tests := []struct {
		name        string
		runner      *deployTestRunner
		wantErr     []string
		wantRestore bool // the restored generation's reload succeeded
	}{
		{"restored generation reloads", &deployTestRunner{fail: map[string]bool{"0b": true}},
			[]string{"previous generation was restored and reloaded", "the new certificate is not live"}, true},
		{"restored generation fails too", &deployTestRunner{failAllAfter: 1},
			[]string{"previous generation was restored, but reloading it failed too"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := DeploySpec{Dir: t.TempDir(), Reload: "systemctl reload nginx"}
			d := Deployer{Run: tt.runner.run}
			ctx := context.Background()
			if err := d.Deploy(ctx, spec, a); err != nil {
				t.Fatal(err)
			}
			err := d.Deploy(ctx, spec, b)
			var de *DeployError
			if !errors.As(err, &de) {
				t.Fatalf("Deploy = %v, want a *DeployError", err)
			}
			if !de.Restored || de.Rollback != nil || (de.RestoreReload == nil) != tt.wantRestore {
				t.Errorf("DeployError %+v", de)
			}
			for _, want := range append(tt.wantErr, "deploy certificate shop", `command "systemctl reload nginx" failed`,
				"cannot load certificate") {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			// Reloads: a, b (failed), then a again, described as a.
			if want := []string{"0a", "0b", "0a"}; !slices.Equal(tt.runner.serials, want) {
				t.Errorf("reloads of serials %q, want %q", tt.runner.serials, want)
			}
			deployTestCheckGeneration(t, "restored", spec.Dir, deployTestFiles(a))
			deployTestCheckGeneration(t, "previous", spec.PreviousDir(), deployTestFiles(a))

			// The next attempt keeps a, not a copy of b.
			tt.runner.fail, tt.runner.failAllAfter = nil, 0
			if err := d.Deploy(ctx, spec, b); err != nil {
				t.Fatal(err)
			}
			deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(b))
			deployTestCheckGeneration(t, "previous", spec.PreviousDir(), deployTestFiles(a))
		})
	}
}

func TestDeployFirstFailingReloadHasNothingToRestore(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	b := ca.issue(t, 0xb, "shop.example.com")
	runner := &deployTestRunner{fail: map[string]bool{"0b": true}}
	d := Deployer{Run: runner.run}
	spec := DeploySpec{Dir: filepath.Join(t.TempDir(), "shop"), Reload: "systemctl reload nginx"}
	err := d.Deploy(context.Background(), spec, b)
	var de *DeployError
	if !errors.As(err, &de) {
		t.Fatalf("Deploy = %v, want a *DeployError", err)
	}
	if de.Restored || !errors.Is(err, ErrNoPreviousGeneration) {
		t.Errorf("DeployError %+v", de)
	}
	if !strings.Contains(err.Error(), "nothing to restore (no previous generation): the new files stay in place") {
		t.Errorf("error %q does not say that nothing was restored", err)
	}
	if len(runner.serials) != 1 {
		t.Errorf("%d reloads, want 1", len(runner.serials))
	}
	deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(b))
}

// A reload cut short by dcvd stopping is not a failed reload: the new files
// stay for the reload to be run again on resume.
func TestDeployInterruptedReloadRestoresNothing(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	a, b := ca.issue(t, 0xa, "shop.example.com"), ca.issue(t, 0xb, "shop.example.com")
	spec := DeploySpec{Dir: t.TempDir(), Reload: "systemctl reload nginx"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runs := 0
	d := Deployer{Run: func(rctx context.Context, _ string, env []string) (string, error) {
		runs++
		if slices.Contains(env, "DCVD_SERIAL=0b") {
			cancel()
			<-rctx.Done()
			return "", rctx.Err()
		}
		return "", nil
	}}
	if err := d.Deploy(ctx, spec, a); err != nil {
		t.Fatal(err)
	}
	err := d.Deploy(ctx, spec, b)
	var de *DeployError
	if err == nil || errors.As(err, &de) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Deploy = %v, want a plain cancellation", err)
	}
	if runs != 2 {
		t.Errorf("%d reloads, want 2", runs)
	}
	deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(b))
	deployTestCheckGeneration(t, "previous", spec.PreviousDir(), deployTestFiles(a))
}

func TestRollback(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	a, b := ca.issue(t, 1, "shop.example.com"), ca.issue(t, 2, "shop.example.com")
	ctx := context.Background()
	var d Deployer

	t.Run("no previous generation", func(t *testing.T) {
		spec := DeploySpec{Dir: t.TempDir()}
		if err := d.Install(ctx, spec, a); err != nil {
			t.Fatal(err)
		}
		err := d.Rollback(ctx, spec)
		if !errors.Is(err, ErrNoPreviousGeneration) || !strings.Contains(err.Error(), spec.Dir) {
			t.Errorf("Rollback = %v, want ErrNoPreviousGeneration naming %s", err, spec.Dir)
		}
		deployTestCheckGeneration(t, "current", spec.Dir, deployTestFiles(a))
	})
	t.Run("missing directory", func(t *testing.T) {
		spec := DeploySpec{Dir: filepath.Join(t.TempDir(), "missing")}
		if err := d.Rollback(ctx, spec); err == nil || !strings.Contains(err.Error(), spec.Dir) {
			t.Errorf("Rollback = %v, want an error naming %s", err, spec.Dir)
		}
	})
	t.Run("restores exactly the kept generation", func(t *testing.T) {
		// The kept generation had no chain.pem: the new one must go too.
		spec := DeploySpec{Dir: t.TempDir(), Mode: 0o640}
		kept := deployTestFiles(a)
		delete(kept, "chain.pem")
		deployTestWrite(t, spec.Dir, kept)
		if err := d.Install(ctx, spec, b); err != nil {
			t.Fatal(err)
		}
		if err := d.Rollback(ctx, spec); err != nil {
			t.Fatal(err)
		}
		deployTestCheckGeneration(t, "current", spec.Dir, kept)
		deployTestCheckGeneration(t, "previous", spec.PreviousDir(), kept)
		fi, err := os.Stat(spec.CertPath())
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o640 {
			t.Errorf("restored cert.pem: mode %v, want the spec's 0640", fi.Mode())
		}
	})
}

func TestDeployWaitsForTheDirectoryLock(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	b := ca.issue(t, 1, "shop.example.com")
	spec := DeploySpec{Dir: t.TempDir()}
	var d Deployer
	unlock, err := d.lock(context.Background(), spec.Dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = d.Install(ctx, spec, b)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for another deploy") {
		t.Errorf("Install while locked = %v, want it to wait until the deadline", err)
	}
	deployTestCheckGeneration(t, "current", spec.Dir, map[string]string{})
	unlock()
	if err := d.Install(context.Background(), spec, b); err != nil {
		t.Fatal(err)
	}
}

func TestReadDeployed(t *testing.T) {
	t.Parallel()
	ca := newDeployTestCA(t)
	b := ca.issue(t, 1, "shop.example.com")

	tests := []struct {
		name       string
		files      map[string]string
		wantCert   string
		wantChain  string
		wantErr    string
		notExisted bool
	}{
		{"empty directory", map[string]string{}, "", "", "cert.pem", true},
		{"no chain", map[string]string{"cert.pem": b.CertPEM}, b.CertPEM, "", "", false},
		{"all", deployTestFiles(b), b.CertPEM, b.ChainPEM, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			spec := DeploySpec{Dir: t.TempDir()}
			deployTestWrite(t, spec.Dir, tt.files)
			cert, chain, err := ReadDeployed(spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || errors.Is(err, fs.ErrNotExist) != tt.notExisted {
					t.Errorf("ReadDeployed error %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cert != tt.wantCert || chain != tt.wantChain {
				t.Error("ReadDeployed returns other files")
			}
		})
	}
	t.Run("relative directory", func(t *testing.T) {
		if _, _, err := ReadDeployed(DeploySpec{Dir: "shop"}); err == nil {
			t.Error("ReadDeployed accepts a relative directory")
		}
	})
	t.Run("huge file", func(t *testing.T) {
		spec := DeploySpec{Dir: t.TempDir()}
		deployTestWrite(t, spec.Dir, map[string]string{"cert.pem": strings.Repeat("x", deployMaxFile+1)})
		if _, _, err := ReadDeployed(spec); err == nil || !strings.Contains(err.Error(), "not a certificate file") {
			t.Errorf("ReadDeployed = %v, want a size error", err)
		}
	})
}

func TestReloadOutputKeepsTheEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"fits", []string{"ab", "cd"}, "abcd"},
		{"overflow across writes", []string{"abcdef", "ghij"}, "[2 earlier bytes not kept]\ncdefghij"},
		{"one large write", []string{"ab", "0123456789xyz"}, "[7 earlier bytes not kept]\n56789xyz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &reloadOutput{max: 8}
			for _, w := range tt.writes {
				if n, err := o.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := o.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}
