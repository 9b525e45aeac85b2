package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The files of a deploy directory, named as certbot names them so that
// server configurations written for certbot work unchanged.
const (
	CertFile          = "cert.pem"
	ChainFile         = "chain.pem"
	FullchainFile     = "fullchain.pem"
	KeyFile           = "privkey.pem"
	deployPreviousDir = "previous"
)

// Defaults of a Spec ([certificate.deploy]), applied where it leaves a
// field zero.
const (
	DefaultMode          os.FileMode = 0o644
	DefaultKeyMode       os.FileMode = 0o600
	DefaultReloadTimeout             = 60 * time.Second
)

const (
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
	// ReloadPath is PATH for the reload command when dcvd has none.
	ReloadPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// deployWriteOrder is the order in which the files of a generation are
// replaced: the key and the chain before the certificate that needs them,
// and cert.pem last, so that a reader never finds a certificate without its
// key, and cert.pem holding a generation's leaf proves that the other three
// files of that generation were written before it (each rename is followed
// by an fsync of the directory, which makes the renames durable in order).
func deployWriteOrder() [4]string {
	return [4]string{KeyFile, ChainFile, FullchainFile, CertFile}
}

// ErrNoPreviousGeneration is returned (wrapped) by Rollback when the deploy
// directory has no kept generation to restore.
var ErrNoPreviousGeneration = errors.New("no previous generation to restore")

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
func (d *Deployer) Install(ctx context.Context, spec Spec, b Bundle) error {
	_, unlock, err := d.prepareInstall(ctx, spec, b)
	if err != nil {
		return err
	}
	unlock()
	return nil
}

// prepareInstall is Install holding the lock of the deploy directory: on
// success the caller releases it with unlock when done with the target.
func (d *Deployer) prepareInstall(ctx context.Context, spec Spec, b Bundle) (t *resolved, unlock func(), err error) {
	t, files, unlock, err := d.prepare(ctx, spec, b)
	if err != nil {
		return nil, nil, fmt.Errorf("deploy certificate %s: %w", b.Cert, err)
	}
	if err := d.install(ctx, t, b, files); err != nil {
		unlock()
		return nil, nil, fmt.Errorf("deploy certificate %s to %s: %w", b.Cert, t.dir, err)
	}
	return t, unlock, nil
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
func (d *Deployer) Reload(ctx context.Context, spec Spec, b Bundle) error {
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
func (d *Deployer) Rollback(ctx context.Context, spec Spec) error {
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
// generation is restored and reloaded, and the error is a *Error
// saying all of that. If ctx ends during the reload (dcvd is stopping),
// nothing is restored: the new files stay and the error is the reload's,
// so that the caller can run Reload again when it resumes.
func (d *Deployer) Deploy(ctx context.Context, spec Spec, b Bundle) error {
	t, unlock, err := d.prepareInstall(ctx, spec, b)
	if err != nil {
		return err
	}
	defer unlock()
	rerr := d.reload(ctx, t, b)
	if rerr == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("deploy certificate %s: %w", b.Cert, rerr)
	}
	de := &Error{Cert: b.Cert, Dir: t.dir, Reload: rerr}
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

// Error is a failed reload of a newly installed certificate, and what
// came of restoring the previous generation.
type Error struct {
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

func (e *Error) Error() string {
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
func (e *Error) Unwrap() []error {
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
func ReadDeployed(spec Spec) (certPEM, chainPEM string, err error) {
	b, err := (&directory{spec: spec}).Live(context.Background())
	if err != nil {
		return "", "", err
	}
	return b.CertPEM, b.ChainPEM, nil
}

// prepare validates spec and b, creates the deploy directory and locks it.
func (d *Deployer) prepare(ctx context.Context, spec Spec, b Bundle) (*resolved, map[string]string, func(), error) {
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
func (d *Deployer) install(ctx context.Context, t *resolved, b Bundle, files map[string]string) error {
	log := d.log().With(zap.String("cert", b.Cert), zap.String("dir", t.dir))
	prevDir := filepath.Join(t.dir, deployPreviousDir)
	d.sweepTemps(t.dir)
	d.sweepTemps(prevDir)

	cur, err := deployReadGeneration(t.dir)
	if err != nil {
		return err
	}
	curCert, haveCert := cur[CertFile]
	// replacing: the files change generation, and previous/ holds the one
	// they had (not an older one), so going back to it is right.
	replacing := !haveCert || curCert != files[CertFile]
	switch {
	case !replacing:
		log.Info("the deploy directory already holds this certificate; the kept generation stays")
	default:
		prevCert, havePrev, err := deployReadFile(filepath.Join(prevDir, CertFile))
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
func (d *Deployer) keep(t *resolved, cur map[string]string) error {
	prevDir := filepath.Join(t.dir, deployPreviousDir)
	if err := deployMkdirAll(prevDir, deployPreviousMode); err != nil {
		return err
	}
	// Invalidate the old kept generation before changing any of it.
	if _, err := deployReplace(prevDir, []deployEntry{{name: CertFile}}, -1, -1); err != nil {
		return err
	}
	if _, ok := cur[CertFile]; !ok {
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
		if name == KeyFile {
			mode = DefaultKeyMode
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
func (d *Deployer) rollback(ctx context.Context, t *resolved) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	prevDir := filepath.Join(t.dir, deployPreviousDir)
	d.sweepTemps(t.dir)
	prev, err := deployReadGeneration(prevDir)
	if err != nil {
		return err
	}
	if _, ok := prev[CertFile]; !ok {
		return fmt.Errorf("%w: %s holds no %s", ErrNoPreviousGeneration, prevDir, CertFile)
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
