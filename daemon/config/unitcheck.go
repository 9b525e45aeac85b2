package config

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// This file reads what "dcvd check-config --as-service" needs of a systemd
// service unit (dcvd.service with its drop-ins, as "systemctl cat" prints
// it): who it runs as, where its sandbox lets it write, its capabilities,
// credentials and environment. Only the [Service] directives that decide
// whether dcvd's configuration can work are read; the rest is systemd's.

// ServiceUnit is what a service unit says of the process it runs.
type ServiceUnit struct {
	// User and Group are User= and Group=; "" is root (and User's group).
	User, Group string
	// SupplementaryGroups are added to those the user has in /etc/group.
	SupplementaryGroups []string
	// ReadWritePaths, ReadOnlyPaths and InaccessiblePaths are the
	// directives' paths; Optional is a leading "-" (a missing path is
	// skipped rather than failing the start).
	ReadWritePaths, ReadOnlyPaths, InaccessiblePaths []UnitPath
	// StateDirectory, RuntimeDirectory, CacheDirectory and LogsDirectory
	// are absolute: /var/lib/NAME, /run/NAME, /var/cache/NAME,
	// /var/log/NAME. systemd makes them writable and the user's.
	StateDirectory, RuntimeDirectory, CacheDirectory, LogsDirectory []string
	// ProtectSystem and ProtectHome are the settings as written ("" when
	// absent); "true" reads as "yes".
	ProtectSystem, ProtectHome string
	PrivateTmp                 bool
	NoNewPrivileges            bool
	// Ambient are the ambient capabilities; Bounding the bounding set,
	// nil when CapabilityBoundingSet= is absent or "~" (every capability
	// but those of BoundingExcept).
	Ambient        []string
	Bounding       []string
	BoundingExcept []string
	// Credentials maps each LoadCredential= (and SetCredential=) name to
	// its source file ("" for SetCredential's inline value).
	Credentials map[string]string
	// Environment is Environment= with the EnvironmentFile= files read.
	Environment map[string]string
	// EnvironmentFiles lists EnvironmentFile= paths.
	EnvironmentFiles []UnitPath
	// ExecStart is the last ExecStart= line.
	ExecStart string
}

// UnitPath is a path of a unit directive; Optional is its "-" prefix.
type UnitPath struct {
	Path     string
	Optional bool
}

// ParseServiceUnit reads a unit file, or several concatenated as
// "systemctl cat" prints the unit and its drop-ins: later lines add to the
// lists of earlier ones, and an empty assignment ("ReadWritePaths=")
// empties the list, as systemd does.
func ParseServiceUnit(text string) (*ServiceUnit, error) {
	u := &ServiceUnit{Credentials: map[string]string{}, Environment: map[string]string{}}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	var cont strings.Builder
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		// A backslash at the end continues the line.
		if strings.HasSuffix(line, "\\") {
			cont.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		if cont.Len() > 0 {
			line = cont.String() + line
			cont.Reset()
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' && strings.HasSuffix(line, "]") {
			section = line[1 : len(line)-1]
			continue
		}
		if section != "Service" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: %q is no KEY=VALUE", n, line)
		}
		u.set(strings.TrimSpace(key), strings.TrimSpace(value))
	}
	return u, sc.Err()
}

func (u *ServiceUnit) set(key, value string) {
	words := unitWords(value)
	paths := func(list *[]UnitPath) {
		if value == "" {
			*list = nil
			return
		}
		for _, w := range words {
			p := UnitPath{Path: w}
			// "-" skips a missing path, "+" is relative to RootDirectory=.
			for len(p.Path) > 0 && (p.Path[0] == '-' || p.Path[0] == '+') {
				p.Optional = p.Optional || p.Path[0] == '-'
				p.Path = p.Path[1:]
			}
			*list = append(*list, p)
		}
	}
	dirs := func(list *[]string, base string) {
		if value == "" {
			*list = nil
			return
		}
		for _, w := range words {
			// NAME or NAME:LINK (a symlink to it, systemd 250).
			name, _, _ := strings.Cut(w, ":")
			*list = append(*list, filepath.Join(base, name))
		}
	}
	switch key {
	case "User":
		u.User = value
	case "Group":
		u.Group = value
	case "SupplementaryGroups":
		if value == "" {
			u.SupplementaryGroups = nil
		}
		u.SupplementaryGroups = append(u.SupplementaryGroups, words...)
	case "ReadWritePaths":
		paths(&u.ReadWritePaths)
	case "ReadOnlyPaths":
		paths(&u.ReadOnlyPaths)
	case "InaccessiblePaths":
		paths(&u.InaccessiblePaths)
	case "StateDirectory":
		dirs(&u.StateDirectory, "/var/lib")
	case "RuntimeDirectory":
		dirs(&u.RuntimeDirectory, "/run")
	case "CacheDirectory":
		dirs(&u.CacheDirectory, "/var/cache")
	case "LogsDirectory":
		dirs(&u.LogsDirectory, "/var/log")
	case "ProtectSystem":
		u.ProtectSystem = unitBoolWord(value)
	case "ProtectHome":
		u.ProtectHome = unitBoolWord(value)
	case "PrivateTmp":
		u.PrivateTmp = unitBoolWord(value) == "yes"
	case "NoNewPrivileges":
		u.NoNewPrivileges = unitBoolWord(value) == "yes"
	case "AmbientCapabilities":
		if value == "" {
			u.Ambient = nil
		}
		u.Ambient = append(u.Ambient, unitCaps(words)...)
	case "CapabilityBoundingSet":
		// Several lines add up; "~" takes the capabilities it lists away
		// from all of them.
		switch {
		case value == "":
			u.Bounding, u.BoundingExcept = []string{}, nil
		case strings.HasPrefix(value, "~"):
			u.Bounding = nil
			u.BoundingExcept = append(u.BoundingExcept, unitCaps(unitWords(value[1:]))...)
		default:
			if u.Bounding == nil && u.BoundingExcept == nil {
				u.Bounding = []string{}
			}
			if u.Bounding != nil {
				u.Bounding = append(u.Bounding, unitCaps(words)...)
			}
		}
	case "LoadCredential", "LoadCredentialEncrypted":
		if value == "" {
			clear(u.Credentials)
			return
		}
		id, src, ok := strings.Cut(value, ":")
		if !ok {
			// No path: systemd looks for ID in its credential stores.
			src = unitCredstore(id)
		}
		u.Credentials[id] = src
	case "SetCredential", "SetCredentialEncrypted":
		id, _, _ := strings.Cut(value, ":")
		if _, ok := u.Credentials[id]; !ok {
			u.Credentials[id] = ""
		}
	case "Environment":
		if value == "" {
			clear(u.Environment)
		}
		for _, w := range words {
			if k, v, ok := strings.Cut(w, "="); ok {
				u.Environment[k] = v
			}
		}
	case "EnvironmentFile":
		paths(&u.EnvironmentFiles)
	case "ExecStart":
		if value != "" {
			u.ExecStart = value
		}
	}
}

// HasCapability reports whether the unit's process has capability cap
// (as "CAP_NET_BIND_SERVICE"): root needs it in the bounding set, another
// user in the ambient set as well.
func (u *ServiceUnit) HasCapability(cap string) bool {
	inBounding := slices.Contains(u.Bounding, cap)
	if u.Bounding == nil {
		inBounding = !slices.Contains(u.BoundingExcept, cap)
	}
	if !inBounding {
		return false
	}
	if u.User == "" || u.User == "root" || u.User == "0" {
		return true
	}
	return slices.Contains(u.Ambient, cap)
}

// Writable reports whether the unit's file system namespace lets it write
// at path (which need not exist): inside a ReadWritePaths= or one of its
// own directories, or anywhere ProtectSystem= and ProtectHome= leave
// writable. why says what makes it read-only or invisible otherwise.
func (u *ServiceUnit) Writable(path string) (ok bool, why string) {
	if p, hit := unitUnder(u.InaccessiblePaths, path); hit {
		return false, "inaccessible (InaccessiblePaths=" + p + ")"
	}
	if u.OwnDir(path) {
		return true, ""
	}
	if _, hit := unitUnder(u.ReadWritePaths, path); hit {
		return true, ""
	}
	if unitInHome(path) {
		switch u.ProtectHome {
		case "yes", "tmpfs":
			return false, "invisible to the service (ProtectHome=" + u.ProtectHome + ")"
		case "read-only":
			return false, "read-only under ProtectHome=read-only and not in ReadWritePaths="
		}
	}
	if p, hit := unitUnder(u.ReadOnlyPaths, path); hit {
		return false, "read-only (ReadOnlyPaths=" + p + ")"
	}
	switch u.ProtectSystem {
	case "strict":
		for _, api := range []string{"/dev", "/proc", "/sys"} {
			if unitWithin(api, path) {
				return true, ""
			}
		}
		// /tmp under PrivateTmp= is writable, but private to the
		// service: no web server would see what dcvd writes there, so it
		// counts as read-only here (LoadConfig warns of it too).
		return false, "read-only under ProtectSystem=strict and not in ReadWritePaths=, StateDirectory= or RuntimeDirectory="
	case "full", "yes":
		ro := []string{"/usr", "/boot", "/efi"}
		if u.ProtectSystem == "full" {
			ro = append(ro, "/etc")
		}
		for _, d := range ro {
			if unitWithin(d, path) {
				return false, "read-only under ProtectSystem=" + u.ProtectSystem + " and not in ReadWritePaths="
			}
		}
	}
	return true, ""
}

// Visible reports whether path can be read at all in the unit's
// namespace (ProtectHome=, InaccessiblePaths=).
func (u *ServiceUnit) Visible(path string) (ok bool, why string) {
	if p, hit := unitUnder(u.InaccessiblePaths, path); hit {
		return false, "inaccessible (InaccessiblePaths=" + p + ")"
	}
	if unitInHome(path) && (u.ProtectHome == "yes" || u.ProtectHome == "tmpfs") {
		if _, hit := unitUnder(u.ReadWritePaths, path); !hit {
			return false, "invisible to the service (ProtectHome=" + u.ProtectHome + ")"
		}
	}
	return true, ""
}

// OwnDir reports whether path is inside a directory systemd makes for
// the unit and gives to its user (StateDirectory= and the like).
func (u *ServiceUnit) OwnDir(path string) bool {
	for _, list := range [][]string{u.StateDirectory, u.RuntimeDirectory, u.CacheDirectory, u.LogsDirectory} {
		for _, d := range list {
			if unitWithin(d, path) {
				return true
			}
		}
	}
	return false
}

// UnitIdentity is the user a unit runs as, with every group it has.
type UnitIdentity struct {
	Name   string
	UID    int
	GID    int
	Groups []int
}

// Identity resolves the unit's User=, Group= and SupplementaryGroups=
// on this host, with the user's groups from the group database (systemd
// calls initgroups for User=).
func (u *ServiceUnit) Identity() (UnitIdentity, error) {
	name := u.User
	if name == "" {
		name = "root"
	}
	usr, err := lookupUser(name)
	if err != nil {
		return UnitIdentity{}, err
	}
	id := UnitIdentity{Name: usr.Username}
	id.UID, _ = strconv.Atoi(usr.Uid)
	id.GID, _ = strconv.Atoi(usr.Gid)
	if u.Group != "" {
		g, err := lookupGroup(u.Group)
		if err != nil {
			return id, fmt.Errorf("Group=%s: %w", u.Group, err)
		}
		id.GID = g
	}
	id.Groups = []int{id.GID}
	if gids, err := usr.GroupIds(); err == nil {
		for _, s := range gids {
			if g, err := strconv.Atoi(s); err == nil && !slices.Contains(id.Groups, g) {
				id.Groups = append(id.Groups, g)
			}
		}
	}
	for _, s := range u.SupplementaryGroups {
		g, err := lookupGroup(s)
		if err != nil {
			return id, fmt.Errorf("SupplementaryGroups=%s: %w", s, err)
		}
		if !slices.Contains(id.Groups, g) {
			id.Groups = append(id.Groups, g)
		}
	}
	return id, nil
}

func lookupUser(name string) (*user.User, error) {
	if _, err := strconv.Atoi(name); err == nil {
		return user.LookupId(name)
	}
	return user.Lookup(name)
}

func lookupGroup(name string) (int, error) {
	if g, err := strconv.Atoi(name); err == nil {
		return g, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// Access is what MayAccess checks for.
type Access uint32

const (
	AccessRead  Access = 4
	AccessWrite Access = 2
)

// MayAccess reports whether id may read or write path by its mode bits,
// and those of the directories it must pass through (ACLs are not read).
// A nil error means it may; otherwise the error names the file or
// directory in the way, its owner and mode.
func (id UnitIdentity) MayAccess(path string, want Access) error {
	if id.UID == 0 {
		return nil
	}
	clean := filepath.Clean(path)
	// Every directory on the way needs search (x) permission.
	for dir := filepath.Dir(clean); ; dir = filepath.Dir(dir) {
		if err := id.check(dir, 1); err != nil {
			return err
		}
		if dir == filepath.Dir(dir) {
			break
		}
	}
	return id.check(clean, want)
}

func (id UnitIdentity) check(path string, want Access) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	perm := uint32(fi.Mode().Perm())
	var bits uint32
	switch {
	case int(st.Uid) == id.UID:
		bits = perm >> 6
	case slices.Contains(id.Groups, int(st.Gid)):
		bits = perm >> 3
	default:
		bits = perm
	}
	if bits&uint32(want) == uint32(want) {
		return nil
	}
	what := map[Access]string{1: "enter", AccessRead: "read", AccessWrite: "write to"}[want]
	return fmt.Errorf("%s may not %s %s (owner %s, group %s, mode %04o): %w",
		id.Name, what, path, unitUserName(int(st.Uid)), unitGroupName(int(st.Gid)), perm, fs.ErrPermission)
}

func unitUserName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func unitGroupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}

// unitUnder is the first of list that path is inside (or equals).
func unitUnder(list []UnitPath, path string) (string, bool) {
	for _, p := range list {
		if unitWithin(p.Path, path) {
			return p.Path, true
		}
	}
	return "", false
}

// unitWithin reports whether path is dir or inside it, lexically.
func unitWithin(dir, path string) bool {
	dir, path = filepath.Clean(dir), filepath.Clean(path)
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

func unitInHome(path string) bool {
	return unitWithin("/home", path) || unitWithin("/root", path) || unitWithin("/run/user", path)
}

// unitWords splits a directive's value on white space, honouring double
// and single quotes as systemd does.
func unitWords(s string) []string {
	var out []string
	var b strings.Builder
	in, quote, inWord := false, byte(0), false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case in && c == quote:
			in = false
		case in:
			b.WriteByte(c)
		case c == '"' || c == '\'':
			in, quote, inWord = true, c, true
		case c == ' ' || c == '\t':
			if inWord {
				out = append(out, b.String())
				b.Reset()
				inWord = false
			}
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
			inWord = true
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, b.String())
	}
	return out
}

// unitBoolWord normalizes a boolean-or-word setting: "true", "on", "1"
// read as "yes", "false", "off", "0" as "no".
func unitBoolWord(v string) string {
	switch strings.ToLower(v) {
	case "yes", "true", "on", "1":
		return "yes"
	case "no", "false", "off", "0", "":
		return "no"
	}
	return strings.ToLower(v)
}

func unitCaps(words []string) []string {
	out := make([]string, 0, len(words))
	for _, w := range words {
		w = strings.ToUpper(w)
		if !strings.HasPrefix(w, "CAP_") {
			w = "CAP_" + w
		}
		out = append(out, w)
	}
	return out
}

// unitCredstore is where systemd finds a credential named without a
// path; "" when in none of its stores.
func unitCredstore(id string) string {
	for _, d := range []string{"/etc/credstore", "/run/credstore", "/usr/lib/credstore"} {
		p := filepath.Join(d, id)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join("/etc/credstore", id)
}

// ReadEnvironmentFile reads an EnvironmentFile= (KEY=VALUE lines, # and ;
// comments) into env. A missing optional file is no error.
func ReadEnvironmentFile(p UnitPath, env map[string]string) error {
	data, err := os.ReadFile(p.Path)
	if errors.Is(err, fs.ErrNotExist) && p.Optional {
		return nil
	}
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	return nil
}
