package deploy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/dcvd/dcvd/internal/fsutil"
)

// Spec is where and how one certificate is deployed
// ([certificate.deploy]).
type Spec struct {
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
func (s Spec) CertPath() string { return filepath.Join(s.Dir, CertFile) }

// ChainPath is where the issuer chain is deployed.
func (s Spec) ChainPath() string { return filepath.Join(s.Dir, ChainFile) }

// FullchainPath is where the leaf followed by the chain is deployed.
func (s Spec) FullchainPath() string { return filepath.Join(s.Dir, FullchainFile) }

// KeyPath is where the private key is deployed.
func (s Spec) KeyPath() string { return filepath.Join(s.Dir, KeyFile) }

// PreviousDir is where the generation replaced by the last Install is kept.
func (s Spec) PreviousDir() string { return filepath.Join(s.Dir, deployPreviousDir) }

// Validate checks the spec the way Install will (absolute directory, modes,
// owner and group known to the system), without touching the file system,
// so that configuration checks can report a bad spec before a certificate
// depends on it.
func (s Spec) Validate() error {
	_, err := s.resolve()
	return err
}

// resolved is a validated Spec with defaults applied and owner
// and group resolved.
type resolved struct {
	dir           string
	mode, keyMode os.FileMode
	owner, group  string // as configured, for messages
	uid, gid      int    // -1 when not set
	reload        string
	timeout       time.Duration
}

func (s Spec) resolve() (*resolved, error) {
	if s.Dir == "" {
		return nil, errors.New("deploy directory not set")
	}
	if !filepath.IsAbs(s.Dir) {
		return nil, fmt.Errorf("deploy directory %q is not an absolute path", s.Dir)
	}
	t := &resolved{dir: filepath.Clean(s.Dir), mode: s.Mode, keyMode: s.KeyMode, owner: s.Owner,
		group: s.Group, uid: -1, gid: -1, reload: s.Reload, timeout: s.ReloadTimeout}
	if t.mode == 0 {
		t.mode = DefaultMode
	}
	if t.keyMode == 0 {
		t.keyMode = DefaultKeyMode
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
		t.timeout = DefaultReloadTimeout
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

func (t *resolved) fileMode(name string) os.FileMode {
	if name == KeyFile {
		return t.keyMode
	}
	return t.mode
}
