package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/dcvd/dcvd/daemon/deploy"
	"github.com/dcvd/dcvd/httpchallenge"
	"github.com/dcvd/dcvd/internal/fsutil"
)

// HostChecks are the checks of the host shared by Config.Check and
// Daemon.preflight.
type HostChecks struct {
	// reload: check that the reload command's program exists.
	reload bool
	// systemd: this process runs in a systemd unit (INVOCATION_ID is set),
	// whose sandbox explains some errors: messages then say what to add to
	// the unit.
	systemd bool
	// euid is the user the checks run as.
	euid int
}

func NewHostChecks(reload bool) HostChecks {
	return HostChecks{reload: reload, systemd: os.Getenv("INVOCATION_ID") != "", euid: os.Geteuid()}
}

// stateProblems checks daemon.state_dir: writable (or creatable), not
// writable by anyone else, and its keys/ directory, when present, owned by
// dcvd's user and closed to everyone else.
func (h HostChecks) StateProblems(dir string) []*ConfigError {
	const key = "daemon.state_dir"
	var out []*ConfigError
	add := func(format string, args ...any) {
		out = append(out, &ConfigError{Key: key, Reason: fmt.Sprintf(format, args...)})
	}
	if err := cfgCheckWritableDir(dir); err != nil {
		add("%v", h.explain(err, dir))
	}
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return out // reported above, or created (0700) on start
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		add("%s is writable by its group or by every user (mode %04o): they could replace dcvd.db or the private keys; chmod go-w %s (dcvd creates it 0700)",
			dir, uint32(perm), dir)
	}
	keys := filepath.Join(dir, "keys")
	ki, err := os.Stat(keys)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return out // created 0700 with the first key
	case err != nil:
		add("%v", err)
		return out
	case !ki.IsDir():
		add("%s is not a directory: dcvd keeps the private keys of its orders there", keys)
		return out
	}
	// The daemon's user: the one running the check, except that a check
	// made as root (check-config, before the service ever ran) stands for
	// the service's user, whom systemd makes state_dir's owner.
	want, who := h.euid, "the user dcvd runs as"
	if want == 0 {
		want, who = fileUID(fi), "state_dir's owner (this check runs as root)"
	}
	if uid := fileUID(ki); uid != want {
		add("%s is owned by uid %d, not by %s (uid %d): another user could read or replace the private keys; chown it (systemd's StateDirectory= does so at start)",
			keys, uid, who, want)
	}
	if perm := ki.Mode().Perm(); perm&0o077 != 0 {
		add("%s is open to its group or to other users (mode %04o): the private keys are for dcvd alone; chmod 0700 %s",
			keys, uint32(perm), keys)
	}
	return out
}

// fileUID is the owner of a file described by os.Stat; -1 when the system
// does not say.
func fileUID(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// ServedDir is a web root, resolved through symlinks, and the certificate
// that publishes into it.
type ServedDir struct {
	dir, resolved, prefix string
}

// webroots resolves the web roots of certs.
func (h HostChecks) Webroots(certs []CertConfig) []ServedDir {
	var out []ServedDir
	for _, c := range certs {
		for _, w := range c.Webroots {
			out = append(out, ServedDir{dir: w.Dir, resolved: cfgRealPath(w.Dir), prefix: "certificate[" + c.Name + "]"})
		}
	}
	return out
}

// certProblems checks cc's setup on this host: its web roots through
// httpchallenge.Probe, its deploy directory (writable, not a system
// directory nor in any of served once symlinks are resolved, not writable
// by every user), its deploy owner and group, and its reload command's
// program.
func (h HostChecks) CertProblems(cc *CertConfig, served []ServedDir) []*ConfigError {
	prefix := "certificate[" + cc.Name + "]"
	var out []*ConfigError
	add := func(key string, err error) {
		for _, p := range out {
			if p.Key == prefix+key && p.Reason == err.Error() {
				return
			}
		}
		out = append(out, &ConfigError{Key: prefix + key, Reason: err.Error()})
	}

	// Web roots. webroot_owner and webroot_group are the same for every
	// web root: an unknown one is reported once, under its own key, and the
	// web roots are then probed without it.
	var owner, group string
	if len(cc.Webroots) > 0 {
		owner, group = cc.Webroots[0].Owner, cc.Webroots[0].Group
		if owner != "" {
			if _, err := fsutil.LookupUID(owner); err != nil {
				add(".webroot_owner", fmt.Errorf("%q: %w", owner, err))
				owner = ""
			}
		}
		if group != "" {
			if _, err := fsutil.LookupGID(group); err != nil {
				add(".webroot_group", fmt.Errorf("%q: %w", group, err))
				group = ""
			}
		}
	}
	for _, w := range cc.Webroots {
		err := httpchallenge.Probe(httpchallenge.Webroot{Dir: w.Dir, Owner: owner, Group: group})
		for _, e := range cfgUnjoin(err) {
			add(".webroot", h.explain(e, w.Dir))
		}
	}

	// The deploy directory.
	if dir := cc.Deploy.Dir; dir != "" {
		if err := cfgCheckWritableDir(dir); err != nil {
			add(".deploy.dir", h.explain(err, dir))
		}
		resolved := cfgRealPath(dir)
		if resolved != dir {
			if why := cfgSystemDir(resolved, ""); why != "" {
				add(".deploy.dir", fmt.Errorf("%s leads through symlinks to %s, which %s", dir, resolved, why))
			}
		}
		for _, w := range served {
			if cfgWithin(w.resolved, resolved) {
				how := ""
				if resolved != dir || w.resolved != w.dir {
					how = fmt.Sprintf(" once symlinks are resolved (%s in %s)", resolved, w.resolved)
				}
				add(".deploy.dir", fmt.Errorf("%s is inside the web root %s of %s%s: the web server would serve privkey.pem to anyone who asks; deploy outside every web root",
					dir, w.dir, w.prefix, how))
				break
			}
		}
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() && fi.Mode().Perm()&0o002 != 0 {
			add(".deploy.dir", fmt.Errorf("%s is writable by every user (mode %04o): anyone could replace the certificate files, or create previous/ and read the kept private key; chmod o-w %s",
				dir, uint32(fi.Mode().Perm()), dir))
		}
	}
	// Validate resolves owner and group as Install will.
	if err := cc.Deploy.Validate(); err != nil {
		add(".deploy", err)
	}
	if h.reload {
		if err := cfgCheckReload(cc.Deploy.Reload); err != nil {
			add(".deploy.reload", err)
		}
	}
	return out
}

// explain adds to err what the error means for dcvd when the reason is
// likely its environment rather than the path itself: the systemd unit's
// sandbox (ProtectSystem=strict without ReadWritePaths=, ProtectHome=yes),
// a read-only file system, missing permissions.
func (h HostChecks) explain(err error, path string) error {
	switch {
	case h.systemd && cfgInHome(path) && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS)):
		// PrivateTmp= hides /tmp from other services but lets dcvd
		// write; ProtectHome= is what makes these paths fail.
		return fmt.Errorf("%w; running under systemd: %s %s", err, path, cfgHiddenByUnit(path))
	case h.systemd && errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w; running under systemd, dcvd may write only to the unit's ReadWritePaths= (ProtectSystem=strict): "+
			"add \"ReadWritePaths=%s\" to a drop-in (systemctl edit dcvd) and restart dcvd", err, path)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("%w; the file system is mounted read-only here (under dcvd.service, a path needs a ReadWritePaths= line too)", err)
	case errors.Is(err, fs.ErrPermission):
		how := "give it write access (group write and SupplementaryGroups= in the unit, or the owner)"
		if h.systemd {
			how += ", and check that the unit's ReadWritePaths= lists " + path
		}
		return fmt.Errorf("%w; uid %d, which this runs as, may not write there: %s", err, h.euid, how)
	}
	return err
}

// cfgUnjoin splits an errors.Join into its errors; nil gives none.
func cfgUnjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// cfgRealPath is path with every symlink resolved; for a path that does
// not exist yet, its deepest existing ancestor is resolved and the rest
// kept. On any other error it is path itself.
func cfgRealPath(path string) string {
	rest := ""
	for p := path; ; p = filepath.Dir(p) {
		resolved, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(resolved, rest)
		}
		if !errors.Is(err, fs.ErrNotExist) || p == filepath.Dir(p) {
			return path
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}

// cfgPlainCommand matches a reload command made only of words of
// characters the shell gives no meaning to. Only such a command is
// checked: quotes, variables, pipes or redirections leave what runs to
// the shell, and a check could not be sure.
var cfgPlainCommand = regexp.MustCompile(`^[A-Za-z0-9/._+,:@%-]+( +[A-Za-z0-9/._+,:@%=-]+)*$`)

// cfgShellWords are the shell's builtins and keywords a command may start
// with: they are no program to look for.
var cfgShellWords = map[string]bool{
	".": true, ":": true, "[": true, "alias": true, "bg": true, "break": true, "case": true, "cd": true,
	"command": true, "continue": true, "echo": true, "eval": true, "exec": true, "exit": true, "export": true,
	"false": true, "fg": true, "for": true, "getopts": true, "hash": true, "if": true, "jobs": true, "kill": true,
	"local": true, "printf": true, "pwd": true, "read": true, "readonly": true, "return": true, "set": true,
	"shift": true, "test": true, "times": true, "trap": true, "true": true, "type": true, "ulimit": true,
	"umask": true, "unalias": true, "unset": true, "until": true, "wait": true, "while": true,
}

// cfgCheckReload checks that the program of a plain reload command exists
// and is executable, looked up as /bin/sh will: in PATH (the reload's
// environment keeps dcvd's, or a default), relative to "/" (its working
// directory) when it holds a slash. Any other command passes, and so does
// a program found in the default PATH: only a sure failure is reported.
func cfgCheckReload(command string) error {
	command = strings.TrimSpace(command)
	if command == "" || !cfgPlainCommand.MatchString(command) {
		return nil
	}
	prog := strings.Fields(command)[0]
	if cfgShellWords[prog] {
		return nil
	}
	executable := func(p string) (bool, error) {
		fi, err := os.Stat(p)
		if err != nil {
			return false, err
		}
		return fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0, nil
	}
	if strings.Contains(prog, "/") {
		p := prog
		if !filepath.IsAbs(p) {
			p = filepath.Join("/", p)
		}
		ok, err := executable(p)
		switch {
		case err != nil:
			return fmt.Errorf("the reload command's program %s: %w", p, err)
		case !ok:
			return fmt.Errorf("the reload command's program %s is not an executable file", p)
		}
		return nil
	}
	// The reload gets this process's PATH, else the default. The default's
	// directories are searched too: check-config may run from a shell
	// whose PATH lacks /usr/sbin, where the service's has it, and a
	// program found nowhere is the only certain failure.
	path := os.Getenv("PATH")
	if path == "" {
		path = deploy.ReloadPath
	}
	for _, dir := range append(filepath.SplitList(path), filepath.SplitList(deploy.ReloadPath)...) {
		if dir == "" {
			dir = "/"
		}
		if ok, _ := executable(filepath.Join(dir, prog)); ok {
			return nil
		}
	}
	return fmt.Errorf("the reload command's program %q is not found in PATH (%s) nor in %s: the reload after each renewal would fail", prog, path, deploy.ReloadPath)
}
