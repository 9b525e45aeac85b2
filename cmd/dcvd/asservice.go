package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/internal/fsutil"
	"github.com/dcvd/dcvd/systemd"
)

// This file is "dcvd check-config --as-service": the configuration checked
// as dcvd.service would run it, which plain check-config, run as root by
// an admin, cannot see. Under the shipped unit dcvd runs as user dcvd,
// with no capability, a read-only file system but for its own directories
// and ReadWritePaths=, and no way to gain privileges: a web root outside
// ReadWritePaths=, a standalone listener on port 80, a secret file only
// root may read, or "systemctl reload nginx" (refused by polkit) all pass
// check-config and fail in the service, some only after a reissue is paid.

// credentialsDir stands for $CREDENTIALS_DIRECTORY while the configuration
// is loaded as the unit would load it: systemd's own path for it.
const credentialsDir = "/run/credentials/dcvd.service"

// polkitRuleDirs are where polkit reads its JavaScript rules.
var polkitRuleDirs = []string{"/etc/polkit-1/rules.d", "/usr/share/polkit-1/rules.d"}

// unprivilegedPortStart is the lowest port a process without
// CAP_NET_BIND_SERVICE may bind.
func unprivilegedPortStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 1024
	}
	return n
}

// serviceUnitText is the unit to check against: --unit FILE, else the
// installed one with its drop-ins (systemctl cat), else the shipped one.
func serviceUnitText(ctx context.Context, unitFile string) (text, source string, err error) {
	if unitFile != "" {
		b, err := os.ReadFile(unitFile)
		if err != nil {
			return "", "", asUsage(fmt.Errorf("--unit: %w", err))
		}
		return string(b), unitFile, nil
	}
	if _, err := exec.LookPath("systemctl"); err == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(cctx, "systemctl", "cat", "--no-pager", "dcvd.service").Output()
		if err == nil && len(out) > 0 {
			return string(out), "the installed dcvd.service and its drop-ins (systemctl cat dcvd)", nil
		}
	}
	return systemd.Unit, "the shipped systemd/dcvd.service (none is installed here; --unit FILE checks another)", nil
}

// serviceCheck gathers the findings of one --as-service check.
type serviceCheck struct {
	unit     *config.ServiceUnit
	id       config.UnitIdentity
	idErr    error
	problems []error
	notes    []string
	// credReads are the credentials the configuration read, by name.
	credReads map[string]bool
}

func (c *serviceCheck) add(key, format string, args ...any) {
	c.problems = append(c.problems, &config.ConfigError{Key: key, Reason: fmt.Sprintf(format, args...)})
}

// runCheckAsService is check-config --as-service.
func runCheckAsService(ctx context.Context, cfgPath, unitFile string, stdout io.Writer) error {
	text, source, err := serviceUnitText(ctx, unitFile)
	if err != nil {
		return err
	}
	unit, err := config.ParseServiceUnit(text)
	if err != nil {
		return asConfig(fmt.Errorf("%s: %w", source, err))
	}
	c := &serviceCheck{unit: unit, credReads: map[string]bool{}}
	for _, f := range unit.EnvironmentFiles {
		// systemd reads them as root, before it drops privileges.
		if err := config.ReadEnvironmentFile(f, unit.Environment); err != nil {
			c.add("dcvd.service EnvironmentFile=", "%v: the unit would not start", err)
		}
	}
	c.id, c.idErr = unit.Identity()
	who := "root"
	if unit.User != "" {
		who = unit.User
	}
	fmt.Fprintf(stdout, "checking %s as the service would run it: %s, as user %s\n", cfgPath, source, who)
	if c.idErr != nil {
		c.add("dcvd.service User=", "the unit runs as %s: %v; create the user (systemd-sysusers, which scripts/install.sh runs)", who, c.idErr)
	} else if c.id.UID == 0 {
		c.notes = append(c.notes, "the unit runs as root: its sandbox still applies, but no file permission is checked")
	}
	if cfgArg := execStartConfig(unit.ExecStart); cfgArg != "" {
		if abs, err := filepath.Abs(cfgPath); err == nil && filepath.Clean(cfgArg) != abs {
			c.notes = append(c.notes, fmt.Sprintf("the unit runs dcvd with --config %s, not %s", cfgArg, abs))
		}
	}

	cfg, warnings, err := config.LoadConfig(cfgPath, config.LoadOptions{LookupEnv: c.lookupEnv, ReadFile: c.readFile})
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if err != nil {
		// Loaded with the unit's environment and credentials: a *_env
		// the unit does not set, a credential it does not load.
		c.problems = append(c.problems, unjoin(err)...)
	} else {
		c.problems = append(c.problems, cfg.Check()...)
		c.checkSecrets(cfgPath)
		c.checkState(cfg)
		c.checkListeners(cfg)
		for i := range cfg.Certificates {
			c.checkCertificate(&cfg.Certificates[i])
		}
	}
	c.checkUnitPaths()
	for _, n := range c.notes {
		fmt.Fprintln(stdout, "note:", n)
	}
	if len(c.problems) > 0 {
		sort.SliceStable(c.problems, func(i, j int) bool { return c.problems[i].Error() < c.problems[j].Error() })
		return asConfig(fmt.Errorf("%s has problems as the service would run it:\n%w", cfgPath, errors.Join(c.problems...)))
	}
	fmt.Fprintf(stdout, "%s: OK as the service would run it (user %s)\n", cfgPath, who)
	return nil
}

// lookupEnv is the unit's environment: Environment=, EnvironmentFile=,
// and $CREDENTIALS_DIRECTORY when it loads credentials.
func (c *serviceCheck) lookupEnv(k string) (string, bool) {
	if k == "CREDENTIALS_DIRECTORY" {
		return credentialsDir, len(c.unit.Credentials) > 0
	}
	v, ok := c.unit.Environment[k]
	return v, ok
}

// readFile reads a secret file as systemd would hand it over: a path in
// $CREDENTIALS_DIRECTORY is the LoadCredential= source (systemd reads it
// as root); any other file is read here, and checkSecrets checks that the
// unit's user may read it.
func (c *serviceCheck) readFile(p string) ([]byte, error) {
	rel, err := filepath.Rel(credentialsDir, p)
	if err != nil || strings.HasPrefix(rel, "..") {
		return os.ReadFile(p)
	}
	c.credReads[rel] = true
	src, ok := c.unit.Credentials[rel]
	switch {
	case !ok:
		return nil, fmt.Errorf("the unit has no credential %q: add LoadCredential=%s:/etc/dcvd/%s to a drop-in (systemctl edit dcvd), the file 0600 root:root", rel, rel, rel)
	case src == "":
		return nil, fmt.Errorf("credential %q is set inline (SetCredential=): not checked", rel)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("LoadCredential=%s:%s: %w: the unit would not start", rel, src, err)
	}
	return b, nil
}

// checkSecrets checks that every file the configuration names (*_file
// keys, ca_roots_file) outside the credentials directory is visible to the
// unit and readable by its user.
func (c *serviceCheck) checkSecrets(cfgPath string) {
	for _, f := range fileKeys(cfgPath) {
		if strings.Contains(f.value, "CREDENTIALS_DIRECTORY") {
			continue // through LoadCredential=, read by systemd as root
		}
		if ok, why := c.unit.Visible(f.value); !ok {
			c.add(f.key, "%s is %s: pass it as a credential (LoadCredential=) or move it", f.value, why)
			continue
		}
		if c.idErr != nil {
			continue
		}
		err := c.id.MayAccess(f.value, config.AccessRead)
		if err == nil || !errors.Is(err, fs.ErrPermission) {
			continue // a missing file was reported by the load
		}
		if f.secret {
			name := filepath.Base(f.value)
			c.add(f.key, "%v; the service runs as %s: pass it as a credential, which keeps it root's alone: LoadCredential=%s:%s in a drop-in (systemctl edit dcvd) and %s = \"${CREDENTIALS_DIRECTORY}/%s\"; or let %s's group read it (chgrp %s %s; chmod 0640 %s)",
				err, c.id.Name, name, f.value, f.leaf, name, c.id.Name, c.id.Name, f.value, f.value)
		} else {
			c.add(f.key, "%v; the service runs as %s: chmod 0644 %s (it holds no secret)", err, c.id.Name, f.value)
		}
	}
	// A credential the unit loads from a file that is not there stops it
	// from starting, whether the configuration uses it or not.
	for name, src := range c.unit.Credentials {
		if src == "" || c.credReads[name] {
			continue
		}
		if _, err := os.Stat(src); err != nil {
			c.add("dcvd.service LoadCredential="+name, "%v: the unit would not start; create the file or drop the line", err)
		}
	}
}

// checkState checks daemon.state_dir: the unit's StateDirectory= (which
// systemd makes and gives to the user at each start) or a writable path.
func (c *serviceCheck) checkState(cfg *config.Config) {
	if cfg.Store.Driver == config.StoreDriverPostgres {
		return
	}
	c.checkWritable("daemon.state_dir", cfg.Daemon.StateDir, "")
}

// checkWritable checks that the unit may write at dir: its sandbox, then
// the permissions of dir (or of its nearest existing parent, where dcvd
// creates it) for the unit's user. fix is extra advice.
func (c *serviceCheck) checkWritable(key, dir, fix string) {
	c.checkWritableIn(key, dir, dir, fix)
}

// checkWritableIn is checkWritable for a path below root, which is what
// a ReadWritePaths= line names (a web root, not its pki-validation/).
func (c *serviceCheck) checkWritableIn(key, root, dir, fix string) {
	if ok, why := c.unit.Writable(dir); !ok {
		dir = root
		how := fmt.Sprintf("add ReadWritePaths=%s to a drop-in (systemctl edit dcvd)", dir)
		if strings.Contains(why, "ProtectHome") {
			how = fmt.Sprintf("add ProtectHome=read-only and ReadWritePaths=%s to a drop-in (systemctl edit dcvd), or use a directory outside /home", dir)
		}
		c.add(key, "%s is %s: writing there fails with \"read-only file system\"; %s%s", dir, why, how, fix)
		return
	}
	if c.idErr != nil || c.id.UID == 0 || c.unit.OwnDir(dir) {
		return // systemd gives its own directories to the user
	}
	p := dir
	for {
		if _, err := os.Stat(p); err == nil || p == filepath.Dir(p) {
			break
		}
		p = filepath.Dir(p)
	}
	if err := c.id.MayAccess(p, config.AccessWrite); err != nil && errors.Is(err, fs.ErrPermission) {
		c.add(key, "%v; the service runs as %s: chown %s %s, or give a group of %s write access (SupplementaryGroups= in a drop-in)%s",
			err, c.id.Name, c.id.Name, p, c.id.Name, fix)
	}
}

// checkListeners: ports below the unprivileged start need
// CAP_NET_BIND_SERVICE.
func (c *serviceCheck) checkListeners(cfg *config.Config) {
	listeners := []struct{ key, addr string }{
		{"daemon.callback_listen", cfg.Daemon.CallbackListen},
		{"daemon.http_listen", cfg.Daemon.HTTPListen},
		{"daemon.metrics_listen", cfg.Daemon.MetricsListen},
	}
	for _, cc := range cfg.Certificates {
		listeners = append(listeners, struct{ key, addr string }{"certificate[" + cc.Name + "].standalone", cc.Standalone})
	}
	start := unprivilegedPortStart()
	const capName = "CAP_NET_BIND_SERVICE"
	for _, l := range listeners {
		if l.addr == "" {
			continue
		}
		_, ps, err := net.SplitHostPort(l.addr)
		if err != nil {
			continue
		}
		port, err := strconv.Atoi(ps)
		if err != nil || port == 0 || port >= start || c.unit.HasCapability(capName) {
			continue
		}
		c.add(l.key, "%q: port %d is below %d, which the service's user may bind only with %s; add to a drop-in (systemctl edit dcvd) "+
			"CapabilityBoundingSet=%s and AmbientCapabilities=%s (systemd/README.md), or listen on a port from %d up (daemon.http_listen behind the web server)",
			l.addr, port, start, capName, capName, capName, start)
	}
}

// checkCertificate checks what one certificate needs of the unit: its web
// roots and deploy directory writable, its owners and groups reachable,
// its reload command possible.
func (c *serviceCheck) checkCertificate(cc *config.CertConfig) {
	prefix := "certificate[" + cc.Name + "]"
	for _, w := range cc.Webroots {
		// dcvd writes into .well-known/pki-validation/ below it.
		c.checkWritableIn(prefix+".webroot", w.Dir, filepath.Join(w.Dir, ".well-known", "pki-validation"), "")
	}
	if cc.Deploy.Dir != "" {
		c.checkWritable(prefix+".deploy.dir", cc.Deploy.Dir, "")
	}
	var owner, group string
	if len(cc.Webroots) > 0 {
		owner, group = cc.Webroots[0].Owner, cc.Webroots[0].Group
	}
	c.checkOwner(prefix+".webroot_owner", owner)
	c.checkGroup(prefix+".webroot_group", group)
	c.checkOwner(prefix+".deploy.owner", cc.Deploy.Owner)
	c.checkGroup(prefix+".deploy.group", cc.Deploy.Group)
	c.checkReload(prefix+".deploy.reload", cc)
}

// checkOwner: giving a file to another user needs CAP_CHOWN (and
// CAP_FOWNER to set its mode after).
func (c *serviceCheck) checkOwner(key, owner string) {
	if owner == "" || c.idErr != nil || c.id.UID == 0 {
		return
	}
	uid, err := fsutil.LookupUID(owner)
	if err != nil || uid == c.id.UID || (c.unit.HasCapability("CAP_CHOWN") && c.unit.HasCapability("CAP_FOWNER")) {
		return
	}
	c.add(key, "%q is another user than %s, and giving a file away needs CAP_CHOWN and CAP_FOWNER: add CapabilityBoundingSet=CAP_CHOWN CAP_FOWNER and AmbientCapabilities=CAP_CHOWN CAP_FOWNER to a drop-in (systemctl edit dcvd), or leave the key out",
		owner, c.id.Name)
}

// checkGroup: without CAP_CHOWN a file can go only to a group the user
// is in.
func (c *serviceCheck) checkGroup(key, group string) {
	if group == "" || c.idErr != nil || c.id.UID == 0 || c.unit.HasCapability("CAP_CHOWN") {
		return
	}
	gid, err := fsutil.LookupGID(group)
	if err != nil || slices.Contains(c.id.Groups, gid) {
		return
	}
	c.add(key, "%q is not a group of %s: add SupplementaryGroups=%s to a drop-in (systemctl edit dcvd)", group, c.id.Name, group)
}

// systemctlVerbs are the systemctl verbs polkit refuses an unprivileged
// user for a system unit.
var systemctlVerbs = map[string]bool{"reload": true, "restart": true, "try-restart": true, "reload-or-restart": true,
	"try-reload-or-restart": true, "start": true, "stop": true, "kill": true, "force-reload": true}

// checkReload checks that the reload command can work as the unit's user
// in its sandbox.
func (c *serviceCheck) checkReload(key string, cc *config.CertConfig) {
	cmd := strings.TrimSpace(cc.Deploy.Reload)
	if cmd == "" || (c.idErr == nil && c.id.UID == 0) {
		return
	}
	words := strings.Fields(strings.NewReplacer(";", " ; ", "&&", " && ", "||", " || ", "|", " | ").Replace(cmd))
	pathUnit := fmt.Sprintf("leave reload unset and enable the shipped dcvd-reload-nginx.path, which reloads nginx as root when %s changes "+
		"(systemctl edit dcvd-reload-nginx.path: PathChanged=%s; then systemctl enable --now dcvd-reload-nginx.path; another server: a copy of both units)",
		cc.Deploy.CertPath(), cc.Deploy.CertPath())
	for i, w := range words {
		base := filepath.Base(w)
		switch {
		case base == "sudo" || base == "doas" || base == "su" || base == "pkexec":
			c.add(key, "%q uses %s, which cannot work under the unit's NoNewPrivileges=yes; %s (systemd/README.md, \"Reloading the web server\")", cmd, base, pathUnit)
			return
		case base == "systemctl" || base == "service":
			verb := ""
			for _, v := range words[i+1:] {
				if systemctlVerbs[v] {
					verb = v
					break
				}
				if v == ";" || v == "&&" || v == "||" || v == "|" {
					break
				}
			}
			if base == "service" && verb == "" {
				verb = "reload"
			}
			if verb == "" || slices.Contains(words[i+1:], "--user") {
				continue
			}
			if rule := c.polkitRule(); rule != "" {
				c.notes = append(c.notes, fmt.Sprintf("%s: %q relies on the polkit rule %s letting %s %s that unit", key, cmd, rule, c.id.Name, verb))
				return
			}
			c.add(key, "%q runs as %s, and polkit refuses a %s of a system unit to an unprivileged user: every deploy would be rolled back; %s; or allow it with a polkit rule (systemd/README.md, \"Reloading the web server\")",
				cmd, c.userName(), verb, pathUnit)
			return
		case base == "nginx" && slices.Contains(words[i+1:], "-s"):
			c.add(key, "%q signals nginx's master process, which runs as root and which %s may not signal (nor see, under ProtectProc=invisible); %s",
				cmd, c.userName(), pathUnit)
			return
		}
	}
}

func (c *serviceCheck) userName() string {
	if c.idErr == nil {
		return c.id.Name
	}
	return c.unit.User
}

// polkitRule is a polkit rules file that lets the unit's user manage
// systemd units, "" when none does.
func (c *serviceCheck) polkitRule() string {
	for _, dir := range polkitRuleDirs {
		files, _ := filepath.Glob(filepath.Join(dir, "*.rules"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			s := string(b)
			if strings.Contains(s, "org.freedesktop.systemd1.manage-units") &&
				(strings.Contains(s, `"`+c.userName()+`"`) || strings.Contains(s, `'`+c.userName()+`'`)) {
				return f
			}
		}
	}
	return ""
}

// checkUnitPaths: a ReadWritePaths= without "-" that does not exist stops
// the unit from starting.
func (c *serviceCheck) checkUnitPaths() {
	for _, p := range c.unit.ReadWritePaths {
		if p.Optional {
			continue
		}
		if _, err := os.Stat(p.Path); errors.Is(err, fs.ErrNotExist) {
			c.add("dcvd.service ReadWritePaths="+p.Path, "%s does not exist, and the unit would not start (status=226/NAMESPACE): create it, or write ReadWritePaths=-%s", p.Path, p.Path)
		}
	}
}

// execStartConfig is the --config of the unit's ExecStart=, "" when none.
func execStartConfig(execStart string) string {
	words := strings.Fields(execStart)
	for i, w := range words {
		if (w == "--config" || w == "-config") && i+1 < len(words) {
			return words[i+1]
		}
		if v, ok := strings.CutPrefix(w, "--config="); ok {
			return v
		}
	}
	return ""
}

// fileKey is a key of the configuration naming a file dcvd reads.
type fileKey struct {
	key, leaf, value string
	// secret: a *_file key (ca_roots_file holds no secret).
	secret bool
}

// fileKeys lists the *_file and ca_roots_file keys of the configuration
// file and of the fragments its include globs name, by their full key
// (api.access_key_secret_file, dns.main.api_token_file).
func fileKeys(cfgPath string) []fileKey {
	var out []fileKey
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			switch v := v.(type) {
			case map[string]any:
				walk(key, v)
			case []map[string]any:
				for i, e := range v {
					walk(fmt.Sprintf("%s[%d]", key, i), e)
				}
			case string:
				if strings.HasSuffix(k, "_file") && v != "" {
					out = append(out, fileKey{key: key, leaf: k, value: v, secret: k != "ca_roots_file"})
				}
			}
		}
	}
	read := func(path, where string) map[string]any {
		var raw map[string]any
		if _, err := toml.DecodeFile(path, &raw); err != nil {
			return nil
		}
		walk(where, raw)
		return raw
	}
	raw := read(cfgPath, "")
	if inc, ok := raw["include"].([]any); ok {
		for _, g := range inc {
			pattern, _ := g.(string)
			files, _ := filepath.Glob(pattern)
			for _, f := range files {
				read(f, "")
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// unjoin splits an errors.Join into its errors.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
