package deploy

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
)

// Target is one place a certificate is deployed.
//
// Every method is safe to repeat: after a crash the daemon calls again
// whatever it cannot prove finished.
type Target interface {
	// Install writes b, keeping what it replaces so that Rollback can
	// restore it. Installing what is already live keeps the kept
	// generation as it is. Install refuses a bundle whose key is not its
	// leaf's.
	Install(ctx context.Context, b Bundle) error

	// Reload makes the servers use what is installed; b describes it (for
	// the reload command's environment). A target without a reload does
	// nothing.
	Reload(ctx context.Context, b Bundle) error

	// Rollback restores what the last Install replaced. The error wraps
	// ErrNoPreviousGeneration when nothing was kept.
	Rollback(ctx context.Context) error

	// Live reports what is deployed now: the certificate and chain as
	// they are, and, when the leaf parses, its names, serial and expiry;
	// nothing is verified. The error wraps fs.ErrNotExist when nothing
	// is deployed. With another error, what could be read is returned
	// too.
	Live(ctx context.Context) (Bundle, error)

	// String names the target in logs and messages (a path, a host).
	String() string
}

// deployer is implemented by targets that run the whole of Deploy
// themselves, such as a directory that stays locked from the install to
// the reload's end.
type deployer interface {
	Deploy(ctx context.Context, b Bundle) error
}

// Deploy installs b on t and reloads. If the reload fails, what Install
// replaced is restored and reloaded, and the error is an *Error saying all
// of that. If ctx ends during the reload (dcvd is stopping), nothing is
// restored: the new files stay and the error is the reload's, so that
// the caller can reload again when it resumes.
func Deploy(ctx context.Context, t Target, b Bundle) error {
	if d, ok := t.(deployer); ok {
		return d.Deploy(ctx, b)
	}
	if err := t.Install(ctx, b); err != nil {
		return err
	}
	rerr := t.Reload(ctx, b)
	if rerr == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("deploy certificate %s: %w", b.Cert, rerr)
	}
	de := &Error{Cert: b.Cert, Dir: t.String(), Reload: rerr}
	if err := t.Rollback(ctx); err != nil {
		de.Rollback = err
		return de
	}
	de.Restored = true
	restored, _ := t.Live(ctx)
	restored.Cert = b.Cert
	de.RestoreReload = t.Reload(ctx, restored)
	return de
}

// Directory is a deploy directory as a Target: spec says where and how,
// d does the work.
func (d *Deployer) Directory(spec Spec) Target {
	return &directory{d: d, spec: spec}
}

// directory implements Target over a Deployer and a Spec.
type directory struct {
	d    *Deployer
	spec Spec
}

var _ Target = (*directory)(nil)

func (t *directory) Install(ctx context.Context, b Bundle) error {
	return t.d.Install(ctx, t.spec, b)
}

func (t *directory) Reload(ctx context.Context, b Bundle) error {
	return t.d.Reload(ctx, t.spec, b)
}

func (t *directory) Rollback(ctx context.Context) error {
	return t.d.Rollback(ctx, t.spec)
}

func (t *directory) Deploy(ctx context.Context, b Bundle) error {
	return t.d.Deploy(ctx, t.spec, b)
}

func (t *directory) Live(ctx context.Context) (Bundle, error) {
	if !filepath.IsAbs(t.spec.Dir) {
		return Bundle{}, fmt.Errorf("deploy directory %q is not an absolute path", t.spec.Dir)
	}
	dir := filepath.Clean(t.spec.Dir)
	certPEM, ok, err := deployReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		return Bundle{}, err
	}
	if !ok {
		return Bundle{}, fmt.Errorf("read %s: %w", filepath.Join(dir, CertFile), fs.ErrNotExist)
	}
	b := describe(certPEM)
	b.ChainPEM, _, err = deployReadFile(filepath.Join(dir, ChainFile))
	return b, err
}

func (t *directory) String() string { return t.spec.Dir }
