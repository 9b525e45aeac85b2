package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/internal/fsutil"
)

// The files of a deploy directory, named as certbot names them so that
// server configurations written for certbot work unchanged.
const (
	deployCertFile      = "cert.pem"
	deployChainFile     = "chain.pem"
	deployFullchainFile = "fullchain.pem"
	deployKeyFile       = "privkey.pem"
	deployPreviousDir   = "previous"
)

const (
	deployDefaultMode          = 0o644
	deployDefaultKeyMode       = 0o600
	deployDefaultReloadTimeout = 60 * time.Second
	// deployDirMode is for a deploy directory dcvd creates: servers
	// running as another user must be able to reach the certificate.
	deployDirMode = 0o755
	// deployPreviousMode: the kept generation is for dcvd alone.
	deployPreviousMode = 0o700
	// deployMaxFile bounds what is read back from a deploy directory; a
	// certificate bundle is a few KiB, so anything larger is not one.
	deployMaxFile = 1 << 20
	// deployTempPrefix marks dcvd's temporary files, so that those a crash
	// left behind (possibly holding a private key) can be recognized and
	// removed, and nothing else ever is.
	deployTempPrefix = ".dcvd-deploy-"
	deployTempSuffix = ".tmp"
	// deployLockPoll is how often a deploy waiting for another one to the
	// same directory tries again.
	deployLockPoll = 100 * time.Millisecond

	// reloadOutputMax bounds the reload command's captured output (its
	// last bytes are kept: that is where the error usually is).
	reloadOutputMax = 8 << 10
	// reloadErrorLines and reloadErrorBytes bound the part of the output
	// quoted in an error message; the whole captured output is logged.
	reloadErrorLines = 10
	reloadErrorBytes = 2 << 10
	// reloadWaitDelay is how long to wait for the output pipe to close
	// after the command exited (or was killed): a daemon the command
	// started may keep it open.
	reloadWaitDelay = 5 * time.Second
	// reloadDefaultPath is PATH for the reload command when dcvd has none.
	reloadDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// deployWriteOrder is the order in which the files of a generation are
// replaced: the key and the chain before the certificate that needs them,
// and cert.pem last, so that a reader never finds a certificate without its
// key, and cert.pem holding a generation's leaf proves that the other three
// files of that generation were written before it (each rename is followed
// by an fsync of the directory, which makes the renames durable in order).
func deployWriteOrder() [4]string {
	return [4]string{deployKeyFile, deployChainFile, deployFullchainFile, deployCertFile}
}

// ErrNoPreviousGeneration is returned (wrapped) by Rollback when the deploy
// directory has no kept generation to restore.
var ErrNoPreviousGeneration = errors.New("no previous generation to restore")

// DeploySpec is where and how one certificate is deployed
// ([certificate.deploy]).
type DeploySpec struct {
	// Dir is absolute; it is created with mode 0755 if missing.
	Dir string
	// Owner and Group, optional, are user and group names or numeric ids
	// (a name is looked up first, as chown(1) does); they apply to the
	// four files.
	Owner, Group string
	// Mode is for cert.pem, chain.pem and fullchain.pem; 0 means 0644.
	Mode os.FileMode
	// KeyMode is for privkey.pem; 0 means 0600. It may not grant others
	// any access.
	KeyMode os.FileMode
	// Reload is a shell command (/bin/sh -c), optional.
	Reload string
	// ReloadTimeout bounds Reload; 0 means 60s.
	ReloadTimeout time.Duration
}

// CertPath is where the leaf certificate is deployed.
func (s DeploySpec) CertPath() string { return filepath.Join(s.Dir, deployCertFile) }

// ChainPath is where the issuer chain is deployed.
func (s DeploySpec) ChainPath() string { return filepath.Join(s.Dir, deployChainFile) }

// FullchainPath is where the leaf followed by the chain is deployed.
func (s DeploySpec) FullchainPath() string { return filepath.Join(s.Dir, deployFullchainFile) }

// KeyPath is where the private key is deployed.
func (s DeploySpec) KeyPath() string { return filepath.Join(s.Dir, deployKeyFile) }

// PreviousDir is where the generation replaced by the last Install is kept.
func (s DeploySpec) PreviousDir() string { return filepath.Join(s.Dir, deployPreviousDir) }

// Validate checks the spec the way Install will (absolute directory, modes,
// owner and group known to the system), without touching the file system,
// so that configuration checks can report a bad spec before a certificate
// depends on it.
func (s DeploySpec) Validate() error {
	_, err := s.resolve()
	return err
}

// deployTarget is a validated DeploySpec with defaults applied and owner
// and group resolved.
type deployTarget struct {
	dir           string
	mode, keyMode os.FileMode
	owner, group  string // as configured, for messages
	uid, gid      int    // -1 when not set
	reload        string
	timeout       time.Duration
}

func (s DeploySpec) resolve() (*deployTarget, error) {
	if s.Dir == "" {
		return nil, errors.New("deploy directory not set")
	}
	if !filepath.IsAbs(s.Dir) {
		return nil, fmt.Errorf("deploy directory %q is not an absolute path", s.Dir)
	}
	t := &deployTarget{dir: filepath.Clean(s.Dir), mode: s.Mode, keyMode: s.KeyMode, owner: s.Owner,
		group: s.Group, uid: -1, gid: -1, reload: s.Reload, timeout: s.ReloadTimeout}
	if t.mode == 0 {
		t.mode = deployDefaultMode
	}
	if t.keyMode == 0 {
		t.keyMode = deployDefaultKeyMode
	}
	if t.mode&^fs.ModePerm != 0 {
		return nil, fmt.Errorf("deploy mode %v: only permission bits (0777) are allowed", s.Mode)
	}
	if t.keyMode&^fs.ModePerm != 0 {
		return nil, fmt.Errorf("deploy key mode %v: only permission bits (0777) are allowed", s.KeyMode)
	}
	if t.keyMode&0o007 != 0 {
		return nil, fmt.Errorf("deploy key mode %#o would let every user of the system read the private key", uint32(t.keyMode))
	}
	if t.timeout == 0 {
		t.timeout = deployDefaultReloadTimeout
	}
	if t.timeout < 0 {
		return nil, fmt.Errorf("reload timeout %s is negative", s.ReloadTimeout)
	}
	var err error
	if s.Owner != "" {
		if t.uid, err = fsutil.LookupUID(s.Owner); err != nil {
			return nil, fmt.Errorf("deploy owner %q: %w", s.Owner, err)
		}
	}
	if s.Group != "" {
		if t.gid, err = fsutil.LookupGID(s.Group); err != nil {
			return nil, fmt.Errorf("deploy group %q: %w", s.Group, err)
		}
	}
	return t, nil
}

// Bundle is what gets deployed.
type Bundle struct {
	Cert     string // the [[certificate]] name
	CertPEM  string // leaf
	ChainPEM string // issuer chain, possibly empty
	KeyPEM   string
	Names    []string
	Serial   string
	NotAfter time.Time
}

// contents returns the four files of b, after checking that the leaf is
// one certificate, the chain only certificates, and that the key is the
// leaf's: a deploy directory must never hold a certificate its key cannot
// serve, whatever the caller checked before.
func (b Bundle) contents() (map[string]string, error) {
	leaf := deployPEMText(b.CertPEM)
	chain := deployPEMText(b.ChainPEM)
	key := deployPEMText(b.KeyPEM)
	if n, err := deployCountCerts(leaf); err != nil {
		return nil, fmt.Errorf("leaf certificate: %w", err)
	} else if n != 1 {
		return nil, fmt.Errorf("leaf certificate: %d certificates, want exactly 1", n)
	}
	if _, err := deployCountCerts(chain); err != nil {
		return nil, fmt.Errorf("chain: %w", err)
	}
	block, rest := pem.Decode([]byte(key))
	if block == nil || !strings.HasSuffix(block.Type, "PRIVATE KEY") || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("private key: not a single PEM private key")
	}
	if _, err := tls.X509KeyPair([]byte(leaf+chain), []byte(key)); err != nil {
		return nil, fmt.Errorf("the private key does not go with the certificate: %w", err)
	}
	return map[string]string{
		deployCertFile:      leaf,
		deployChainFile:     chain,
		deployFullchainFile: leaf + chain,
		deployKeyFile:       key,
	}, nil
}

// deployPEMText ends non-empty PEM text with a newline, so that the leaf
// and the chain concatenate into a valid fullchain.pem.
func deployPEMText(s string) string {
	if s != "" && !strings.HasSuffix(s, "\n") {
		return s + "\n"
	}
	return s
}

// deployCountCerts counts the CERTIFICATE blocks of s and refuses anything
// else in it.
func deployCountCerts(s string) (int, error) {
	n := 0
	rest := []byte(s)
	for len(bytes.TrimSpace(rest)) > 0 {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return n, errors.New("not PEM")
		}
		if block.Type != "CERTIFICATE" {
			return n, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// Deployer installs certificates into deploy directories and runs their
// reload commands. Operations on one directory are serialized with an
// flock(2) on the directory, across goroutines and processes (a "dcvd
// redeploy" next to a running daemon). The zero value is usable.
type Deployer struct {
	// Log receives what was done; nil logs nothing.
	Log *zap.Logger
	// Run runs the reload command, which must stop when ctx is done; nil
	// runs it with /bin/sh -c in a process group of its own, killed as a
	// whole on timeout. Tests replace it.
	Run func(ctx context.Context, command string, env []string) (output string, err error)
}

func (d *Deployer) log() *zap.Logger {
	if d.Log == nil {
		return zap.NewNop()
	}
	return d.Log
}

// Install writes b into spec.Dir, keeping the generation it replaces.
//
// The files there (cert.pem, chain.pem, fullchain.pem, privkey.pem) are
// first copied into Dir/previous/ (mode 0700; privkey.pem 0600 there),
// each atomically and cert.pem last, unless they need not be: when cert.pem
// already holds b's leaf (a repeat, as after a crash or for a redeploy), or
// when previous/cert.pem equals cert.pem (the copy was made by an install
// interrupted before cert.pem was replaced, or the files were restored by
// Rollback) — copying then would overwrite the kept generation with the new
// one. A directory without cert.pem holds no generation; previous/ is then
// emptied so that Rollback cannot restore something unrelated.
//
// The four new files (fullchain.pem = leaf + chain) are then each written
// to a temporary file in Dir, chowned, chmoded (the umask does not
// matter), fsynced, and only when all four are ready renamed over the old
// ones in the order privkey.pem, chain.pem, fullchain.pem, cert.pem, with
// an fsync of Dir after each rename. Should a rename fail midway while
// replacing another generation, that generation (now kept) is restored.
//
// Install refuses a bundle whose key is not the leaf's.
func (d *Deployer) Install(ctx context.Context, spec DeploySpec, b Bundle) error {
	t, files, unlock, err := d.prepare(ctx, spec, b)
	if err != nil {
		return fmt.Errorf("deploy certificate %s: %w", b.Cert, err)
	}
	defer unlock()
	if err := d.install(ctx, t, b, files); err != nil {
		return fmt.Errorf("deploy certificate %s to %s: %w", b.Cert, t.dir, err)
	}
	return nil
}

// Reload runs spec.Reload, if set, with spec.ReloadTimeout and this
// environment, and nothing else from dcvd's (the API secret, NOTIFY_SOCKET
// and the like stay out):
//
//	PATH                 dcvd's PATH, or a standard one if unset
//	HOME, LANG, LC_ALL, TZ  dcvd's, when set
//	DCVD_CERT_NAME       the [[certificate]] name
//	DCVD_DEPLOY_DIR      spec.Dir
//	DCVD_CERT_PATH, DCVD_CHAIN_PATH, DCVD_FULLCHAIN_PATH, DCVD_KEY_PATH
//	DCVD_DOMAINS         b.Names, space separated
//	DCVD_SERIAL          b.Serial
//	DCVD_NOT_AFTER       b.NotAfter, RFC 3339 in UTC ("" when unknown)
//
// The command runs in / with stdin from /dev/null; its output (stdout and
// stderr, the last 8 KiB) is logged and quoted in the error (its last
// lines). On timeout its whole process group is killed.
func (d *Deployer) Reload(ctx context.Context, spec DeploySpec, b Bundle) error {
	if spec.Reload == "" {
		return nil
	}
	t, err := spec.resolve()
	if err != nil {
		return fmt.Errorf("reload certificate %s: %w", b.Cert, err)
	}
	unlock, err := d.lock(ctx, t.dir)
	if err != nil {
		return fmt.Errorf("reload certificate %s: %w", b.Cert, err)
	}
	defer unlock()
	return d.reload(ctx, t, b)
}

// Rollback restores the generation kept in Dir/previous/ over the current
// files, each atomically, in the order Install writes them, with the
// spec's modes, owner and group; a file the kept generation lacks is
// removed, so that Dir holds exactly that generation. The kept copy stays.
// It is meant for after a failed reload; the caller then reloads again.
// The error wraps ErrNoPreviousGeneration when nothing is kept.
func (d *Deployer) Rollback(ctx context.Context, spec DeploySpec) error {
	t, err := spec.resolve()
	if err != nil {
		return fmt.Errorf("restore the previous generation: %w", err)
	}
	unlock, err := d.lock(ctx, t.dir)
	if err != nil {
		return fmt.Errorf("restore the previous generation in %s: %w", t.dir, err)
	}
	defer unlock()
	if err := d.rollback(ctx, t); err != nil {
		return fmt.Errorf("restore the previous generation in %s: %w", t.dir, err)
	}
	return nil
}

// Deploy installs b and reloads. If the reload fails, the previous
// generation is restored and reloaded, and the error is a *DeployError
// saying all of that. If ctx ends during the reload (dcvd is stopping),
// nothing is restored: the new files stay and the error is the reload's,
// so that the caller can run Reload again when it resumes.
func (d *Deployer) Deploy(ctx context.Context, spec DeploySpec, b Bundle) error {
	t, files, unlock, err := d.prepare(ctx, spec, b)
	if err != nil {
		return fmt.Errorf("deploy certificate %s: %w", b.Cert, err)
	}
	defer unlock()
	if err := d.install(ctx, t, b, files); err != nil {
		return fmt.Errorf("deploy certificate %s to %s: %w", b.Cert, t.dir, err)
	}
	rerr := d.reload(ctx, t, b)
	if rerr == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("deploy certificate %s: %w", b.Cert, rerr)
	}
	de := &DeployError{Cert: b.Cert, Dir: t.dir, Reload: rerr}
	if err := d.rollback(ctx, t); err != nil {
		de.Rollback = err
		d.log().Error("reload failed and the previous generation could not be restored",
			zap.String("cert", b.Cert), zap.String("dir", t.dir), zap.Error(err))
		return de
	}
	de.Restored = true
	de.RestoreReload = d.reload(ctx, t, deployedBundle(b.Cert, t.dir))
	return de
}

// DeployError is a failed reload of a newly installed certificate, and what
// came of restoring the previous generation.
type DeployError struct {
	Cert string // the [[certificate]] name
	Dir  string
	// Reload is why the new certificate's reload failed.
	Reload error
	// Restored is true when the previous generation's files are back.
	Restored bool
	// Rollback is why they are not (it wraps ErrNoPreviousGeneration when
	// there was none: the new files stay).
	Rollback error
	// RestoreReload is why reloading the restored files failed, nil when
	// it succeeded or was not tried.
	RestoreReload error
}

func (e *DeployError) Error() string {
	var s strings.Builder
	fmt.Fprintf(&s, "deploy certificate %s to %s: %v", e.Cert, e.Dir, e.Reload)
	switch {
	case e.Restored && e.RestoreReload == nil:
		s.WriteString("; the previous generation was restored and reloaded: the new certificate is not live")
	case e.Restored:
		fmt.Fprintf(&s, "; the previous generation was restored, but reloading it failed too: %v", e.RestoreReload)
	case errors.Is(e.Rollback, ErrNoPreviousGeneration):
		s.WriteString("; nothing to restore (no previous generation): the new files stay in place")
	default:
		fmt.Fprintf(&s, "; restoring the previous generation failed: %v", e.Rollback)
	}
	return s.String()
}

// Unwrap returns the errors that occurred, the reload's first.
func (e *DeployError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.Reload, e.Rollback, e.RestoreReload} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// ReadDeployed returns what spec.Dir holds now, for adopting a certificate
// deployed before dcvd: cert.pem as it is, and chain.pem, or "" when there
// is none. Nothing is verified. The error wraps fs.ErrNotExist when there
// is no cert.pem.
func ReadDeployed(spec DeploySpec) (certPEM, chainPEM string, err error) {
	if !filepath.IsAbs(spec.Dir) {
		return "", "", fmt.Errorf("deploy directory %q is not an absolute path", spec.Dir)
	}
	dir := filepath.Clean(spec.Dir)
	certPEM, ok, err := deployReadFile(filepath.Join(dir, deployCertFile))
	if err != nil {
		return "", "", err
	}
	if !ok {
		return "", "", fmt.Errorf("read %s: %w", filepath.Join(dir, deployCertFile), fs.ErrNotExist)
	}
	chainPEM, _, err = deployReadFile(filepath.Join(dir, deployChainFile))
	if err != nil {
		return "", "", err
	}
	return certPEM, chainPEM, nil
}

// prepare validates spec and b, creates the deploy directory and locks it.
func (d *Deployer) prepare(ctx context.Context, spec DeploySpec, b Bundle) (*deployTarget, map[string]string, func(), error) {
	t, err := spec.resolve()
	if err != nil {
		return nil, nil, nil, err
	}
	files, err := b.contents()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, err
	}
	if err := deployMkdirAll(t.dir, deployDirMode); err != nil {
		return nil, nil, nil, err
	}
	unlock, err := d.lock(ctx, t.dir)
	if err != nil {
		return nil, nil, nil, err
	}
	return t, files, unlock, nil
}

// install is Install with the directory locked.
func (d *Deployer) install(ctx context.Context, t *deployTarget, b Bundle, files map[string]string) error {
	log := d.log().With(zap.String("cert", b.Cert), zap.String("dir", t.dir))
	prevDir := filepath.Join(t.dir, deployPreviousDir)
	d.sweepTemps(t.dir)
	d.sweepTemps(prevDir)

	cur, err := deployReadGeneration(t.dir)
	if err != nil {
		return err
	}
	curCert, haveCert := cur[deployCertFile]
	// replacing: the files change generation, and previous/ holds the one
	// they had (not an older one), so going back to it is right.
	replacing := !haveCert || curCert != files[deployCertFile]
	switch {
	case !replacing:
		log.Info("the deploy directory already holds this certificate; the kept generation stays")
	default:
		prevCert, havePrev, err := deployReadFile(filepath.Join(prevDir, deployCertFile))
		if err != nil {
			return err
		}
		if haveCert && havePrev && prevCert == curCert {
			log.Info("the current generation is already kept in previous/")
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.keep(t, cur); err != nil {
			return fmt.Errorf("keep the current generation: %w", err)
		}
	}

	if err := ctx.Err(); err != nil {
		return err
	}
	var entries []deployEntry
	for _, name := range deployWriteOrder() {
		entries = append(entries, deployEntry{name: name, content: files[name], write: true, mode: t.fileMode(name)})
	}
	done, err := deployReplace(t.dir, entries, t.uid, t.gid)
	if err != nil && done > 0 && replacing {
		// The directory mixes generations; a server restarting now would
		// pair a key with the wrong certificate. Go back.
		if rerr := d.rollback(context.WithoutCancel(ctx), t); rerr != nil {
			return fmt.Errorf("%w; %d of 4 files were already replaced, and restoring the previous generation failed: %v", err, done, rerr)
		}
		return fmt.Errorf("%w; %d of 4 files were already replaced, the previous generation was restored", err, done)
	}
	if err != nil {
		return err
	}
	log.Info("certificate files installed", zap.String("serial", b.Serial))
	return nil
}

// keep copies the current generation cur into previous/, cert.pem last so
// that previous/cert.pem is there only once the other files are, removing
// what the current generation lacks.
func (d *Deployer) keep(t *deployTarget, cur map[string]string) error {
	prevDir := filepath.Join(t.dir, deployPreviousDir)
	if err := deployMkdirAll(prevDir, deployPreviousMode); err != nil {
		return err
	}
	// Invalidate the old kept generation before changing any of it.
	if _, err := deployReplace(prevDir, []deployEntry{{name: deployCertFile}}, -1, -1); err != nil {
		return err
	}
	if _, ok := cur[deployCertFile]; !ok {
		// No generation to keep: leave nothing a rollback could restore.
		var entries []deployEntry
		for _, name := range deployWriteOrder() {
			entries = append(entries, deployEntry{name: name})
		}
		_, err := deployReplace(prevDir, entries, -1, -1)
		return err
	}
	var entries []deployEntry
	for _, name := range deployWriteOrder() {
		content, ok := cur[name]
		mode := t.mode
		if name == deployKeyFile {
			mode = deployDefaultKeyMode
		}
		entries = append(entries, deployEntry{name: name, content: content, write: ok, mode: mode})
	}
	_, err := deployReplace(prevDir, entries, -1, -1)
	if err == nil {
		d.log().Info("kept the current generation in previous/", zap.String("dir", t.dir))
	}
	return err
}

// rollback is Rollback with the directory locked.
func (d *Deployer) rollback(ctx context.Context, t *deployTarget) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	prevDir := filepath.Join(t.dir, deployPreviousDir)
	d.sweepTemps(t.dir)
	prev, err := deployReadGeneration(prevDir)
	if err != nil {
		return err
	}
	if _, ok := prev[deployCertFile]; !ok {
		return fmt.Errorf("%w: %s holds no %s", ErrNoPreviousGeneration, prevDir, deployCertFile)
	}
	var entries []deployEntry
	for _, name := range deployWriteOrder() {
		content, ok := prev[name]
		entries = append(entries, deployEntry{name: name, content: content, write: ok, mode: t.fileMode(name)})
	}
	if done, err := deployReplace(t.dir, entries, t.uid, t.gid); err != nil {
		return fmt.Errorf("%w (%d of 4 files restored)", err, done)
	}
	d.log().Warn("restored the previous generation", zap.String("dir", t.dir))
	return nil
}

// reload is Reload with the directory locked.
func (d *Deployer) reload(ctx context.Context, t *deployTarget, b Bundle) error {
	if t.reload == "" {
		return nil
	}
	log := d.log().With(zap.String("cert", b.Cert), zap.String("command", t.reload))
	rctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	run := d.Run
	if run == nil {
		run = d.runShell
	}
	out, err := run(rctx, t.reload, reloadEnv(t, b))
	out = deployTail(out, reloadOutputMax)
	if err == nil {
		log.Info("reload command succeeded", zap.String("output", out))
		return nil
	}
	log.Warn("reload command failed", zap.Error(err), zap.String("output", out))
	var quoted string
	if last := reloadLastLines(out); last != "" {
		quoted = fmt.Sprintf("; last output: %q", last)
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("reload certificate %s: command %q interrupted: %w%s", b.Cert, t.reload, ctx.Err(), quoted)
	case rctx.Err() != nil:
		return fmt.Errorf("reload certificate %s: command %q timed out after %s, its process group was killed (%w)%s",
			b.Cert, t.reload, t.timeout, err, quoted)
	default:
		return fmt.Errorf("reload certificate %s: command %q failed: %w%s", b.Cert, t.reload, err, quoted)
	}
}

// reloadEnv is the reload command's whole environment (see Reload).
func reloadEnv(t *deployTarget, b Bundle) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = reloadDefaultPath
	}
	env := []string{"PATH=" + path}
	for _, k := range []string{"HOME", "LANG", "LC_ALL", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	notAfter := ""
	if !b.NotAfter.IsZero() {
		notAfter = b.NotAfter.UTC().Format(time.RFC3339)
	}
	return append(env,
		"DCVD_CERT_NAME="+b.Cert,
		"DCVD_DEPLOY_DIR="+t.dir,
		"DCVD_CERT_PATH="+filepath.Join(t.dir, deployCertFile),
		"DCVD_CHAIN_PATH="+filepath.Join(t.dir, deployChainFile),
		"DCVD_FULLCHAIN_PATH="+filepath.Join(t.dir, deployFullchainFile),
		"DCVD_KEY_PATH="+filepath.Join(t.dir, deployKeyFile),
		"DCVD_DOMAINS="+strings.Join(b.Names, " "),
		"DCVD_SERIAL="+b.Serial,
		"DCVD_NOT_AFTER="+notAfter,
	)
}

// runShell is the default Run: /bin/sh -c command in a new process group,
// so that on timeout the command and everything it started are killed,
// not only the shell.
func (d *Deployer) runShell(ctx context.Context, command string, env []string) (string, error) {
	out := &reloadOutput{max: reloadOutputMax}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// With Setpgid the group's id is the shell's pid.
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = reloadWaitDelay
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// The command succeeded; something it started (a daemon that did
		// not close its inherited output) is not ours to judge.
		d.log().Warn("the reload command exited 0 but left its output open; no longer reading it",
			zap.String("command", command))
		err = nil
	}
	return out.String(), err
}

// reloadOutput keeps the last max bytes written to it.
type reloadOutput struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func (o *reloadOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(p)
	if len(p) > o.max {
		o.dropped += int64(len(p) - o.max)
		p = p[len(p)-o.max:]
	}
	if over := len(o.buf) + len(p) - o.max; over > 0 {
		o.dropped += int64(over)
		o.buf = o.buf[:copy(o.buf, o.buf[over:])]
	}
	o.buf = append(o.buf, p...)
	return n, nil
}

func (o *reloadOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dropped > 0 {
		return fmt.Sprintf("[%d earlier bytes not kept]\n%s", o.dropped, o.buf)
	}
	return string(o.buf)
}

// deployTail bounds output a replaced Run returned.
func deployTail(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	return fmt.Sprintf("[%d earlier bytes not kept]\n%s", len(s)-limit, s[len(s)-limit:])
}

// reloadLastLines is the end of the output, as quoted in errors.
func reloadLastLines(out string) string {
	out = strings.TrimRight(out, " \t\r\n")
	lines := strings.Split(out, "\n")
	if len(lines) > reloadErrorLines {
		lines = lines[len(lines)-reloadErrorLines:]
	}
	s := strings.Join(lines, "\n")
	if len(s) > reloadErrorBytes {
		s = "…" + s[len(s)-reloadErrorBytes:]
	}
	return s
}

// deployedBundle describes the generation Dir holds, for the environment of
// the reload after a rollback; what cannot be read stays empty.
func deployedBundle(cert, dir string) Bundle {
	b := Bundle{Cert: cert}
	certPEM, _, err := deployReadFile(filepath.Join(dir, deployCertFile))
	if err != nil {
		return b
	}
	b.CertPEM = certPEM
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		return b
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return b
	}
	b.Serial = hex.EncodeToString(leaf.SerialNumber.Bytes())
	b.NotAfter = leaf.NotAfter
	b.Names = append(b.Names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		b.Names = append(b.Names, ip.String())
	}
	slices.Sort(b.Names)
	return b
}

func (t *deployTarget) fileMode(name string) os.FileMode {
	if name == deployKeyFile {
		return t.keyMode
	}
	return t.mode
}

// deployEntry is one file of a replacement: written with content and mode,
// or removed when write is false.
type deployEntry struct {
	name    string
	content string
	write   bool
	mode    os.FileMode
}

// deployReplace makes dir hold entries, in their order. Every file is first
// written to a temporary file (chowned to uid/gid unless both are -1,
// chmoded, fsynced), all of them at once: concurrent fsyncs share the file
// system's journal commits, where one after the other each waits for its
// own. Only then are they renamed into place (or the files removed), in
// order, and dir is fsynced before the last entry and after it: the last
// (cert.pem in a deployment) is durable only once the others are. It
// returns how many entries took effect: a failure before the first rename
// changes nothing visible.
func deployReplace(dir string, entries []deployEntry, uid, gid int) (done int, err error) {
	temps := make([]string, len(entries))
	defer func() {
		for _, tmp := range temps {
			if tmp != "" {
				os.Remove(tmp)
			}
		}
	}()
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		if !e.write {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			temps[i], errs[i] = deployWriteTemp(dir, e.name, e.content, e.mode, uid, gid)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	for i, e := range entries {
		last := i == len(entries)-1
		if last && i > 0 {
			if err := deploySyncDir(dir); err != nil {
				return done, err
			}
		}
		path := filepath.Join(dir, e.name)
		if e.write {
			if err := os.Rename(temps[i], path); err != nil {
				return done, fmt.Errorf("replace %s: %w", path, err)
			}
			temps[i] = ""
		} else if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return done, fmt.Errorf("remove %s: %w", path, err)
		}
		done++
		if last {
			if err := deploySyncDir(dir); err != nil {
				return done, err
			}
		}
	}
	return done, nil
}

// deployWriteTemp writes content to a new temporary file in dir, with its
// final mode and owner set explicitly (the umask plays no part) and its data
// synced, and returns its path.
func deployWriteTemp(dir, name, content string, mode os.FileMode, uid, gid int) (string, error) {
	tmp := filepath.Join(dir, deployTempPrefix+rand.Text()+deployTempSuffix)
	// O_EXCL also refuses a symlink planted at the name.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	_, err = io.WriteString(f, content)
	if err == nil && (uid >= 0 || gid >= 0) {
		if err = f.Chown(uid, gid); err != nil {
			err = fmt.Errorf("chown to %d:%d: %w", uid, gid, err)
		}
	}
	if err == nil {
		// After the chown, which may clear mode bits.
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return tmp, nil
}

// deployReadGeneration reads the four files of a generation in dir; a
// missing file is absent from the map.
func deployReadGeneration(dir string) (map[string]string, error) {
	gen := make(map[string]string, 4)
	for _, name := range deployWriteOrder() {
		content, ok, err := deployReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if ok {
			gen[name] = content
		}
	}
	return gen, nil
}

// deployReadFile reads path, following symlinks (an adopted directory may
// be made of them); ok is false when it does not exist.
func deployReadFile(path string) (content string, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	} else if !fi.Mode().IsRegular() {
		return "", false, fmt.Errorf("read %s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, deployMaxFile+1))
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > deployMaxFile {
		return "", false, fmt.Errorf("read %s: larger than %d bytes, not a certificate file", path, deployMaxFile)
	}
	return string(data), true, nil
}

// deployMkdirAll creates dir and its missing parents with mode perm
// exactly, leaving existing directories as they are.
func deployMkdirAll(dir string, perm os.FileMode) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := deployMkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return deployMkdirAll(dir, perm)
		}
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return deploySyncDir(parent)
}

// deploySyncDir makes the renames and removals in dir durable.
func deploySyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// sweepTemps removes the temporary files an interrupted deploy left in dir
// (the caller holds the directory's lock, so none is in use).
func (d *Deployer) sweepTemps(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // a missing previous/ is normal; other errors surface later
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, deployTempPrefix) || !strings.HasSuffix(name, deployTempSuffix) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.log().Warn("removing a stale temporary file", zap.String("dir", dir), zap.Error(err))
		}
	}
}

// lock takes an exclusive flock(2) on dir, waiting while another deploy
// holds it for as long as ctx allows.
func (d *Deployer) lock(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				// Closing releases the lock.
				f.Close()
			}, nil
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		if !logged {
			d.log().Info("waiting for another deploy to the same directory", zap.String("dir", dir))
			logged = true
		}
		timer := time.NewTimer(deployLockPoll)
		select {
		case <-ctx.Done():
			timer.Stop()
			f.Close()
			return nil, fmt.Errorf("waiting for another deploy to %s: %w", dir, ctx.Err())
		case <-timer.C:
		}
	}
}
