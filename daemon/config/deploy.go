package config

// This file reads [certificate.deploy], where a certificate's files go,
// and holds the rules of where they may go: no directory of the system or
// of another program, none the systemd unit hides from dcvd, none in a web
// root (checked in check.go, across certificates).

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/internal/section"
)

// cfgDeployKeys are the keys of [certificate.deploy].
var cfgDeployKeys = []string{"dir", "owner", "group", "mode", "key_mode", "reload", "reload_timeout"}

// deploy reads [certificate.deploy]; the directory is checked against
// daemon.state_dir, read before.
func (l *loader) deploy(s *section.Section) deploy.Spec {
	spec := deploy.Spec{Mode: deploy.DefaultMode, KeyMode: deploy.DefaultKeyMode, ReloadTimeout: deploy.DefaultReloadTimeout}
	unknown(s, cfgDeployKeys...)
	if dir, ok := required(s, "dir", "the directory for cert.pem, chain.pem, fullchain.pem and privkey.pem"); ok {
		clean := filepath.Clean(dir)
		if !filepath.IsAbs(dir) {
			s.Fail("dir", "%q must be an absolute path", dir)
		} else if why := cfgSystemDir(clean, l.stateDir); why != "" {
			s.Fail("dir", "%s %s", clean, why)
		} else {
			spec.Dir = clean
			if why := cfgHiddenByUnit(clean); why != "" {
				s.Warn("dir", "%s %s: the web server would not see the files dcvd deploys there", clean, why)
			}
		}
	}
	spec.Owner, _ = s.String("owner")
	spec.Group, _ = s.String("group")
	if m, ok := fileMode(s, "mode"); ok {
		if m&0o002 != 0 {
			// cert.pem is what the web server serves: anyone could swap
			// in a certificate of theirs, or one that does not match the
			// key and takes the site down at the next reload.
			s.Fail("mode", "%04o lets every user of the host replace the certificate files: use \"0644\", or \"0640\" with group", m)
		} else {
			spec.Mode = m
		}
	}
	if m, ok := fileMode(s, "key_mode"); ok {
		// Install gives privkey.pem exactly this mode. Whoever may write
		// the key may replace it with one of theirs; whoever may read it
		// may impersonate the site. The group may read (a web server that
		// reads keys as its own user), never write.
		switch {
		case m&0o007 != 0:
			s.Fail("key_mode", "%04o lets every user of the host read or change the private key: use \"0600\", or \"0640\" with group", m)
		case m&0o020 != 0:
			s.Fail("key_mode", "%04o lets the file's group change the private key: use \"0600\", or \"0640\" for a group that only reads it", m)
		default:
			spec.KeyMode = m
		}
	}
	spec.Reload, _ = s.String("reload")
	s.Duration("reload_timeout", &spec.ReloadTimeout)
	return spec
}

// fileMode reads a file mode written as an octal string ("0640"): a TOML
// integer would be read as decimal, a classic trap.
func fileMode(s *section.Section, k string) (os.FileMode, bool) {
	v, present := s.Value(k)
	if !present {
		return 0, false
	}
	str, ok := v.(string)
	if !ok {
		s.Fail(k, "must be a string like \"0640\", not %s", section.TypeName(v))
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(str, "0o"), 8, 32)
	if err != nil || n > 0o777 {
		s.Fail(k, "%q is not an octal file mode like \"0640\"", str)
		return 0, false
	}
	if n&0o400 == 0 {
		s.Fail(k, "%q does not let the owner read the file", str)
		return 0, false
	}
	return os.FileMode(n), true
}

// cfgSystemDirs are directories of the operating system or of other
// programs, refused as deploy.dir. A deploy directory is dcvd's own: it
// writes cert.pem, chain.pem, fullchain.pem and privkey.pem there, keeps
// the previous generation in previous/, removes its leftover temporary
// files and locks the directory. In one of these it would overwrite other
// programs' files of those names and put a private key among files other
// users list, and under the systemd unit (ProtectSystem=strict) it fails
// with "read-only file system" only once the reissue is paid for. A
// directory below one of them is fine (/etc/ssl/dcvd/shop, /srv/certs/shop):
// what matters is one directory per certificate. The list is the top of
// the file system hierarchy (hier(7), the FHS) and the shared directories
// where certificates, web content and configuration usually live.
var cfgSystemDirs = map[string]bool{
	"/": true, "/bin": true, "/boot": true, "/dev": true, "/etc": true, "/home": true, "/lib": true, "/lib32": true,
	"/lib64": true, "/libx32": true, "/media": true, "/mnt": true, "/opt": true, "/proc": true, "/root": true,
	"/run": true, "/sbin": true, "/srv": true, "/sys": true, "/tmp": true, "/usr": true, "/var": true,
	// Shared certificate stores: other programs' keys and certificates
	// (ssl-cert-snakeoil, distribution bundles) live there.
	"/etc/ssl": true, "/etc/ssl/certs": true, "/etc/ssl/private": true, "/etc/pki": true, "/etc/pki/tls": true,
	"/etc/pki/tls/certs": true, "/etc/pki/tls/private": true, "/etc/letsencrypt": true,
	// Configuration of dcvd and of the servers it reloads.
	"/etc/dcvd": true, "/etc/nginx": true, "/etc/apache2": true, "/etc/httpd": true, "/etc/systemd": true,
	"/usr/bin": true, "/usr/sbin": true, "/usr/lib": true, "/usr/lib64": true, "/usr/libexec": true,
	"/usr/local": true, "/usr/local/bin": true, "/usr/local/sbin": true, "/usr/local/lib": true, "/usr/share": true,
	"/var/lib": true, "/var/log": true, "/var/tmp": true, "/var/cache": true, "/var/spool": true, "/var/mail": true,
	"/var/run": true, "/var/www": true, "/var/backups": true, "/var/opt": true,
}

// cfgKernelDirs are kernel file systems: nothing below them is a place for
// files.
var cfgKernelDirs = []string{"/proc", "/sys", "/dev"}

// cfgSystemDir says why dir (clean and absolute) cannot be a deploy
// directory, or "" when it can. stateDir is daemon.state_dir.
func cfgSystemDir(dir, stateDir string) string {
	for _, k := range cfgKernelDirs {
		if cfgWithin(k, dir) {
			return "is on a kernel file system (" + k + "): give each certificate a directory of its own, such as /etc/ssl/dcvd/NAME"
		}
	}
	switch {
	case dir == "/run/dcvd" || cfgWithin("/run/dcvd", dir):
		return "is in dcvd's runtime directory, which systemd empties whenever dcvd stops: use a directory that lasts, such as /etc/ssl/dcvd/NAME"
	case stateDir != "" && dir == stateDir:
		return "is daemon.state_dir, dcvd's private state (dcvd.db, keys/): use a directory of its own, such as /etc/ssl/dcvd/NAME"
	case stateDir != "" && cfgWithin(filepath.Join(stateDir, "keys"), dir):
		return "is inside daemon.state_dir/keys, which holds the keys of every order: use a directory of its own, such as /etc/ssl/dcvd/NAME"
	case cfgSystemDirs[dir]:
		return "is a directory of the system or of other programs: dcvd writes cert.pem, chain.pem, fullchain.pem, privkey.pem and previous/ into deploy.dir and treats it as its own; give each certificate a directory of its own, such as " +
			filepath.Join(cfgSuggestParent(dir), "NAME")
	}
	return ""
}

// cfgSuggestParent is where to put per-certificate directories instead of
// dir: below it when it is a place for them, else the shipped default.
func cfgSuggestParent(dir string) string {
	switch dir {
	case "/srv", "/opt", "/var/lib":
		return filepath.Join(dir, "dcvd")
	}
	return "/etc/ssl/dcvd"
}

// cfgHiddenByUnit says how the shipped systemd unit hides path from dcvd
// (PrivateTmp=yes, ProtectHome=yes), or "" when it does not. Only a
// warning: dcvd may run without the unit.
func cfgHiddenByUnit(path string) string {
	for _, d := range []string{"/tmp", "/var/tmp"} {
		if cfgWithin(d, path) {
			return "is in " + d + ", which dcvd.service makes private to dcvd (PrivateTmp=yes)"
		}
	}
	for _, d := range cfgHomeDirs {
		if cfgWithin(d, path) {
			return "is in " + d + ", which dcvd.service hides from dcvd (ProtectHome=yes; a drop-in may set ProtectHome=read-only with ReadWritePaths=" + path + ")"
		}
	}
	return ""
}

// cfgHomeDirs are what ProtectHome=yes hides.
var cfgHomeDirs = []string{"/home", "/root", "/run/user"}

// cfgInHome tells whether path is in one of cfgHomeDirs.
func cfgInHome(path string) bool {
	return slices.ContainsFunc(cfgHomeDirs, func(d string) bool { return cfgWithin(d, path) })
}

// cfgWithin tells whether path is dir or below it; both clean and
// absolute.
func cfgWithin(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
