package httpchallenge

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/dcvd/dcvd/internal/fsutil"
	"github.com/dcvd/dcvd/reseller"
)

// Modes of what Write creates. They are set with chmod after creation, so
// the process umask never matters: the web server usually runs as another
// user and must be able to traverse the directories and read the file (the
// bug certbot still has open as certbot#9920).
const (
	dirMode  fs.FileMode = 0o755
	fileMode fs.FileMode = 0o644
)

// The directories of reseller.PKIValidationPath, relative to a webroot, in
// the order they are created. os.Root takes "/" as separator.
const (
	wellKnownDir = ".well-known"
	pkiDir       = ".well-known/pki-validation"
)

// CreatedMarker is the file Write puts into a .well-known/pki-validation it
// creates, naming the directories it created. It is how Remove knows, for
// as long as the directory exists, that the directory is dcvd's: after a
// restart, and when the file of another order (of another certificate
// sharing the web root, whose Written records no created directory) is the
// last one to go. Remove deletes it with the directories once they hold
// nothing else. Its name cannot be a validation file's (those begin with a
// letter or a digit), and it is private (0600): the web server has no
// reason to serve it.
const CreatedMarker = ".dcvd-created"

// markerPath is CreatedMarker relative to a webroot; markerMaxSize bounds
// what Remove reads of it.
const (
	markerPath    = pkiDir + "/" + CreatedMarker
	markerMaxSize = 4096
)

// webrootLocks serializes, within the process, the writes and removals in
// one web root (keyed by its real path): the daemon runs several orders at
// once, and certificates may share a web root, so that a removal that finds
// a directory empty but for the marker could otherwise delete it under a
// write that has just found it, or a write could land in it between the
// marker's removal and the directory's. Across processes, which share no
// lock, Write creates the directories again when they vanish under it, and
// Remove puts the marker back when a file appears before the directory is
// gone.
var webrootLocks = struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}{m: map[string]*sync.Mutex{}}

// lockWebroot locks the web root dir and returns the unlock. The locks
// are kept, one per web root ever used: their number is that of the
// configured web roots.
func lockWebroot(dir string) (unlock func()) {
	key := filepath.Clean(dir)
	if real, err := filepath.EvalSymlinks(key); err == nil {
		key = real
	}
	webrootLocks.mu.Lock()
	l := webrootLocks.m[key]
	if l == nil {
		l = &sync.Mutex{}
		webrootLocks.m[key] = l
	}
	webrootLocks.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// Webroot is one document root serving a name.
type Webroot struct {
	// Dir is the document root, an absolute path. It must exist: a
	// missing document root is a configuration error, not something to
	// create.
	Dir string
	// Owner, when set, is the user name or numeric uid given to the file
	// and to the directories Write creates ("" keeps the process's).
	Owner string
	// Group, when set, is the group name or numeric gid given to them.
	Group string
}

// Written records one file dcvd wrote, in a form callers persist (JSON
// tags) so that it can be removed after a restart.
type Written struct {
	// Webroot is the document root's absolute path.
	Webroot string `json:"webroot"`
	// Name is the file name inside .well-known/pki-validation/.
	Name string `json:"name"`
	// Content is what was written. Remove deletes the file only while it
	// still holds exactly this: a file somebody replaced since (another
	// order for the same CSR gets the same file name with other content)
	// is theirs and stays.
	Content string `json:"content"`
	// CreatedDirs lists the directories Write created, relative to
	// Webroot, deepest first. Remove deletes them if they are empty (but
	// for CreatedMarker), and otherwise makes sure the marker says they
	// are dcvd's, for a later Remove.
	CreatedDirs []string `json:"created_dirs"`
}

// Write publishes f in every webroot, as
// <Dir>/.well-known/pki-validation/<f.FileName>, and returns what it wrote
// for Remove.
//
// The file and the directories are reached through os.Root, so that no path
// and no symlink can make dcvd write outside a webroot. A .well-known,
// pki-validation or file-name symlink that points outside is refused with an
// error naming it, before anything is written anywhere; a relative symlink
// that stays inside is followed (os.Root refuses absolute symlinks even when
// they stay inside, and so does Write, with an error that says so). Missing
// directories are created with mode 0755, the file gets 0644, both
// regardless of the umask, and both get Owner and Group when set;
// directories that already exist are left as they are. A created
// pki-validation directory gets CreatedMarker. The file is written
// to a temporary name, synced and renamed over the final name, so the web
// server never serves half a file, and a symlink at the final name is
// replaced rather than written through.
//
// All webroots or none: when one fails, f is removed again from the
// webroots of this call (a file at the name that holds other content is
// never touched). Writing the same file again is fine; the directories it
// finds are then not recorded as created. Duplicate Dirs are written once.
func Write(webroots []Webroot, f reseller.FileInstruction) ([]Written, error) {
	if err := checkInstruction(f); err != nil {
		return nil, fmt.Errorf("publish %s: %w", printable(f.FileName), err)
	}
	if len(webroots) == 0 {
		return nil, fmt.Errorf("publish %s: no webroot configured", f.FileName)
	}

	// Check every webroot before writing into any, so that a refusal
	// leaves nothing behind.
	var targets []*target
	defer func() {
		for _, t := range targets {
			t.root.Close()
		}
	}()
	seen := make(map[string]bool, len(webroots))
	for _, wr := range webroots {
		t, err := prepare(wr, f.FileName)
		if err != nil {
			return nil, fmt.Errorf("publish %s: %w", f.FileName, err)
		}
		if seen[t.dir] {
			t.root.Close()
			continue
		}
		seen[t.dir] = true
		targets = append(targets, t)
	}

	return writeAll(targets, f)
}

// writeAll writes f into every prepared webroot, or, when one fails, removes
// it from all of them again.
func writeAll(targets []*target, f reseller.FileInstruction) ([]Written, error) {
	written := make([]Written, 0, len(targets))
	for _, t := range targets {
		w, err := t.write(f)
		if err != nil {
			err = fmt.Errorf("publish %s: %w", f.FileName, err)
			if uerr := Remove(append(written, w)); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo publish %s: %w", f.FileName, uerr))
			}
			return nil, err
		}
		written = append(written, w)
	}
	return written, nil
}

// target is a webroot checked and opened for writing.
type target struct {
	root         *os.Root
	dir          string // cleaned absolute path, for messages and Written
	owner, group string // as configured, for messages
	uid, gid     int    // -1 when not set
}

// prepare checks a webroot's settings and the links on the file's path, and
// opens the webroot.
func prepare(wr Webroot, name string) (*target, error) {
	if !filepath.IsAbs(wr.Dir) {
		return nil, fmt.Errorf("webroot %q: not an absolute path", wr.Dir)
	}
	t := &target{dir: filepath.Clean(wr.Dir), owner: wr.Owner, group: wr.Group, uid: -1, gid: -1}
	var errs []error
	if t.uid, t.gid, errs = lookupIDs(t.dir, wr); len(errs) > 0 {
		return nil, errs[0]
	}
	var err error
	if t.root, err = os.OpenRoot(t.dir); err != nil {
		return nil, fmt.Errorf("webroot %s: %w", t.dir, err)
	}
	if err := checkPath(t.root, t.dir, name); err != nil {
		t.root.Close()
		return nil, err
	}
	return t, nil
}

// checkPath refuses symlinks on the file's path that leave the webroot, and
// anything in the way that is not a directory, with an error an admin can
// act on. os.Root enforces the same boundary on every operation (this check
// cannot see a link swapped in later); its own error would only say "path
// escapes from parent".
func checkPath(root *os.Root, dir, name string) error {
	file := pkiDir + "/" + name
	for _, rel := range []string{wellKnownDir, pkiDir, file} {
		fi, err := root.Lstat(rel)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // neither it nor anything below it exists yet
		}
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, rel), err)
		}
		isFile := rel == file
		if fi.Mode()&fs.ModeSymlink != 0 {
			if err := checkLink(root, dir, rel, isFile); err != nil {
				return err
			}
			if isFile {
				return nil // the rename replaces the link itself
			}
			if fi, err = root.Stat(rel); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dir, rel), err)
			}
		}
		switch {
		case isFile && fi.IsDir():
			return fmt.Errorf("%s is a directory; refusing to replace it", filepath.Join(dir, rel))
		case !isFile && !fi.IsDir():
			return fmt.Errorf("%s exists and is not a directory", filepath.Join(dir, rel))
		}
	}
	return nil
}

// checkLink reports whether the symlink rel (relative to the webroot dir)
// may be followed: it must resolve inside the webroot, and, unless it is the
// file itself (which the rename replaces), be relative, since os.Root
// follows no absolute link, and lead to something that exists.
func checkLink(root *os.Root, dir, rel string, isFile bool) error {
	path := filepath.Join(dir, rel)
	target, err := root.Readlink(rel)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	dest, outside := resolveLink(dir, rel, target)
	shown := target
	if dest != target {
		shown = fmt.Sprintf("%s (%s)", target, dest)
	}
	switch {
	case outside:
		return fmt.Errorf("%s is a symlink to %s, outside the webroot; refusing to write", path, shown)
	case isFile:
		return nil
	case filepath.IsAbs(target):
		return fmt.Errorf("%s is an absolute symlink to %s; dcvd follows only relative symlinks that stay inside the webroot: make it relative", path, shown)
	}
	if _, err := root.Stat(rel); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s is a symlink to %s, which does not exist", path, shown)
	} else if err != nil {
		return fmt.Errorf("%s (a symlink to %s): %w", path, shown, err)
	}
	return nil
}

// resolveLink says where the link rel with the given target leads, as the
// kernel would resolve it, and whether that is outside dir. It only serves
// to explain a refusal: os.Root does the enforcing.
func resolveLink(dir, rel, target string) (dest string, outside bool) {
	dest = target
	if !filepath.IsAbs(target) {
		// The parents were checked first: they lead inside the webroot.
		parent := filepath.Join(dir, filepath.Dir(rel))
		if real, err := filepath.EvalSymlinks(parent); err == nil {
			parent = real
		}
		dest = filepath.Join(parent, target)
	}
	if real, err := filepath.EvalSymlinks(dest); err == nil {
		dest = real
	}
	realDir := dir
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		realDir = real
	}
	return dest, !within(dir, dest) && !within(realDir, dest)
}

// within reports whether path is dir or below it.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// write creates the directories and the file in one webroot, under the
// web root's lock. The Written it returns records what was created even on
// error, for the undo.
func (t *target) write(f reseller.FileInstruction) (Written, error) {
	defer lockWebroot(t.dir)()
	w := Written{Webroot: t.dir, Name: f.FileName, Content: f.Content}
	tmp, err := tempName()
	if err != nil {
		return w, err
	}
	tmp = pkiDir + "/" + tmp
	// A second round when the directories vanished under the temporary
	// file: another process's Remove found them empty and took them.
	for try := 0; ; try++ {
		if err := t.mkdirs(&w); err != nil {
			return w, err
		}
		err = t.writeTemp(tmp, f.Content)
		if err == nil {
			break
		}
		t.root.Remove(tmp)
		if try > 0 || !errors.Is(err, fs.ErrNotExist) {
			return w, err
		}
	}
	if err := t.root.Rename(tmp, pkiDir+"/"+f.FileName); err != nil {
		t.root.Remove(tmp)
		return w, fmt.Errorf("webroot %s: %w", t.dir, err)
	}
	return w, nil
}

// mkdirs creates the missing directories of the file's path, recording
// them in w, and marks a pki-validation it created as dcvd's.
func (t *target) mkdirs(w *Written) error {
	var created []string
	for _, d := range []string{wellKnownDir, pkiDir} {
		made, err := t.mkdir(d)
		if made {
			created = append([]string{d}, created...)
			if !slices.Contains(w.CreatedDirs, d) {
				w.CreatedDirs = append([]string{d}, w.CreatedDirs...)
			}
		}
		if err != nil {
			return err
		}
	}
	if len(created) == 0 || created[0] != pkiDir {
		return nil
	}
	if err := writeMarker(t.root, created); err != nil {
		return fmt.Errorf("webroot %s: %w", t.dir, err)
	}
	return nil
}

// mkdir creates the directory rel if it is missing and reports whether it
// did. Mode and owner are set through a descriptor of the new directory, so
// that they cannot land on something swapped in at its name.
func (t *target) mkdir(rel string) (created bool, err error) {
	path := filepath.Join(t.dir, rel)
	err = t.root.Mkdir(rel, dirMode)
	if errors.Is(err, fs.ErrExist) {
		fi, err := t.root.Stat(rel)
		switch {
		case err != nil:
			return false, fmt.Errorf("%s: %w", path, err)
		case !fi.IsDir():
			return false, fmt.Errorf("%s exists and is not a directory", path)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("webroot %s: %w", t.dir, err)
	}
	d, err := t.root.Open(rel)
	if err != nil {
		return true, fmt.Errorf("webroot %s: %w", t.dir, err)
	}
	defer d.Close()
	if err := d.Chmod(dirMode); err != nil {
		return true, fmt.Errorf("webroot %s: %w", t.dir, err)
	}
	return true, t.chown(d, path)
}

// writeTemp writes content to a new file rel with mode 0644, the owner, and
// its data synced before the rename makes it visible.
func (t *target) writeTemp(rel, content string) error {
	path := filepath.Join(t.dir, rel)
	file, err := t.root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return fmt.Errorf("webroot %s: %w", t.dir, err)
	}
	_, err = io.WriteString(file, content)
	if err == nil {
		err = file.Chmod(fileMode)
	}
	if err == nil {
		err = t.chown(file, path)
	}
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("webroot %s: write %s: %w", t.dir, path, err)
	}
	return nil
}

// lookupIDs resolves wr's owner and group to IDs, -1 for one not set or
// not found. Each that is not found is an error naming dir.
func lookupIDs(dir string, wr Webroot) (uid, gid int, errs []error) {
	uid, gid = -1, -1
	if wr.Owner != "" {
		if id, err := fsutil.LookupUID(wr.Owner); err != nil {
			errs = append(errs, fmt.Errorf("webroot %s: owner %q: %w", dir, wr.Owner, err))
		} else {
			uid = id
		}
	}
	if wr.Group != "" {
		if id, err := fsutil.LookupGID(wr.Group); err != nil {
			errs = append(errs, fmt.Errorf("webroot %s: group %q: %w", dir, wr.Group, err))
		} else {
			gid = id
		}
	}
	return uid, gid, errs
}

// chown gives f the configured owner and group, when any is set.
func (t *target) chown(f *os.File, path string) error {
	if t.uid < 0 && t.gid < 0 {
		return nil
	}
	if err := f.Chown(t.uid, t.gid); err != nil {
		return fmt.Errorf("webroot %s: chown %s to owner %q, group %q: %w", t.dir, path, t.owner, t.group, err)
	}
	return nil
}

// tempName returns a hidden, unpredictable file name for the temporary
// file, so that nothing can be planted at it in advance.
func tempName() (string, error) {
	return randomName(".dcvd-", "temporary file name")
}

// randomName is prefix, 16 random hex digits and ".tmp". what names it in
// the error.
func randomName(prefix, what string) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return prefix + hex.EncodeToString(b[:]) + ".tmp", nil
}

// checkInstruction checks, again, the parts of f that decide where a file
// goes and what it holds; reseller.ValidateInstructions already did, but a
// path mistake here would write outside a web root.
func checkInstruction(f reseller.FileInstruction) error {
	if err := reseller.CheckDCVFileName(f.FileName); err != nil {
		return fmt.Errorf("file name: %w", err)
	}
	if f.Path != reseller.PKIValidationPath+f.FileName {
		return fmt.Errorf("path %s is not %s", printable(f.Path), reseller.PKIValidationPath+f.FileName)
	}
	if n := len(f.Content); n == 0 || n > reseller.MaxDCVFileContentLen {
		return fmt.Errorf("content of %d bytes: want 1 to %d", n, reseller.MaxDCVFileContentLen)
	}
	return nil
}

// printable returns s as it may appear in a message: at most 200 bytes,
// quoted when it holds anything but printable ASCII, spaces included. s is
// untrusted (a name from the API, a Location header).
func printable(s string) string {
	const max = 200
	clipped := len(s) > max
	if clipped {
		s = s[:max]
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' || s[i] == '"' {
			s = strconv.Quote(s)
			break
		}
	}
	if s == "" {
		s = `""`
	}
	if clipped {
		s += "…"
	}
	return s
}
