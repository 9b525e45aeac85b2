package deploy

import (
	"context"
	"crypto"
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
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dcvd/dcvd/internal/testpki"
)

// deployTestCA issues test certificates from an intermediate, whose PEM is
// the chain.
type deployTestCA struct {
	key      crypto.Signer
	cert     *x509.Certificate
	chainPEM string
}

func newDeployTestCA(t *testing.T) *deployTestCA {
	t.Helper()
	key := testpki.Key(t)
	cert := testpki.SelfSigned(t, key, "dcvd test intermediate", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	return &deployTestCA{key: key, cert: cert, chainPEM: testpki.PEM(cert)}
}

// issue returns the bundle of a new leaf with its own key.
func (ca *deployTestCA) issue(t *testing.T, serial int64, names ...string) Bundle {
	t.Helper()
	key := testpki.Key(t)
	notAfter := time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
	}
	return Bundle{
		Cert:     "shop",
		CertPEM:  testpki.PEM(testpki.Sign(t, tmpl, ca.cert, key.Public(), ca.key)),
		ChainPEM: ca.chainPEM,
		KeyPEM:   testpki.KeyPEM(t, key),
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
			spec := Spec{Dir: dir, Mode: tt.mode, KeyMode: tt.keyMode}
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
	spec := Spec{Dir: filepath.Join(t.TempDir(), "shop")}
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
			spec := Spec{Dir: t.TempDir()}
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
	spec := Spec{Dir: t.TempDir()}
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
		spec   func(*Spec)
		bundle func(*Bundle)
		want   string
	}{
		{"relative dir", func(s *Spec) { s.Dir = "etc/ssl/shop" }, nil, `"etc/ssl/shop" is not an absolute path`},
		{"empty dir", func(s *Spec) { s.Dir = "" }, nil, "deploy directory not set"},
		{"setuid mode", func(s *Spec) { s.Mode = fs.ModeSetuid | 0o755 }, nil, "only permission bits"},
		{"world-readable key", func(s *Spec) { s.KeyMode = 0o644 }, nil, "every user of the system"},
		{"negative timeout", func(s *Spec) { s.ReloadTimeout = -time.Second }, nil, "reload timeout -1s is negative"},
		{"unknown owner", func(s *Spec) { s.Owner = "dcvd-no-such-user" }, nil, `deploy owner "dcvd-no-such-user"`},
		{"unknown group", func(s *Spec) { s.Group = "dcvd-no-such-group" }, nil, `deploy group "dcvd-no-such-group"`},
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
			spec := Spec{Dir: t.TempDir()}
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
			spec := Spec{Dir: t.TempDir(), Owner: tt.owner, Group: tt.group}
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
			spec := Spec{Dir: t.TempDir()}
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
		if _, _, err := ReadDeployed(Spec{Dir: "shop"}); err == nil {
			t.Error("ReadDeployed accepts a relative directory")
		}
	})
	t.Run("huge file", func(t *testing.T) {
		spec := Spec{Dir: t.TempDir()}
		deployTestWrite(t, spec.Dir, map[string]string{"cert.pem": strings.Repeat("x", deployMaxFile+1)})
		if _, _, err := ReadDeployed(spec); err == nil || !strings.Contains(err.Error(), "not a certificate file") {
			t.Errorf("ReadDeployed = %v, want a size error", err)
		}
	})
}
