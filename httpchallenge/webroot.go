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
	"syscall"
	"time"

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
	var err error
	if wr.Owner != "" {
		if t.uid, err = fsutil.LookupUID(wr.Owner); err != nil {
			return nil, fmt.Errorf("webroot %s: owner %q: %w", t.dir, wr.Owner, err)
		}
	}
	if wr.Group != "" {
		if t.gid, err = fsutil.LookupGID(wr.Group); err != nil {
			return nil, fmt.Errorf("webroot %s: group %q: %w", t.dir, wr.Group, err)
		}
	}
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
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("temporary file name: %w", err)
	}
	return ".dcvd-" + hex.EncodeToString(b[:]) + ".tmp", nil
}

// Remove deletes exactly the files in ws, each only while it is still a
// regular file holding exactly its Content (so a file somebody replaced
// stays), then the directories dcvd created that hold nothing else, deepest
// first: those in CreatedDirs, and those CreatedMarker names in each web
// root of ws (a file of another order, which found the directories made,
// may be the last one to go). A created directory that still holds another
// file stays, and keeps (or gets) the marker, so that the Remove of that
// file deletes it.
//
// Everything is reached through os.Root: a record edited to name something
// else cannot make Remove delete outside its webroot, and only the two
// directories of reseller.PKIValidationPath are ever removed, never
// through a symlink, and never one that was neither recorded nor marked
// (the admin's). Missing webroots, files and directories are not an error,
// so Remove is safe to repeat; the errors of all records are joined.
func Remove(ws []Written) error {
	var errs []error
	// Per web root, in the order first met: its records, and the
	// directories they say dcvd created.
	var roots []string
	byRoot := map[string][]Written{}
	created := map[string][]string{}
	for _, w := range ws {
		ok := true
		for _, d := range w.CreatedDirs {
			if d != wellKnownDir && d != pkiDir {
				errs = append(errs, fmt.Errorf("remove directory %s from webroot %s: not a directory dcvd creates", printable(d), w.Webroot))
				ok = false
			}
		}
		if !ok {
			continue
		}
		if _, seen := byRoot[w.Webroot]; !seen {
			roots = append(roots, w.Webroot)
		}
		byRoot[w.Webroot] = append(byRoot[w.Webroot], w)
		for _, d := range w.CreatedDirs {
			if !slices.Contains(created[w.Webroot], d) {
				created[w.Webroot] = append(created[w.Webroot], d)
			}
		}
	}
	for _, dir := range roots {
		errs = append(errs, removeIn(dir, byRoot[dir], created[dir]))
	}
	return errors.Join(errs...)
}

// removeIn is Remove for the records of one web root, under its lock.
func removeIn(webroot string, ws []Written, created []string) error {
	if filepath.IsAbs(webroot) {
		defer lockWebroot(webroot)()
	}
	var errs []error
	for _, w := range ws {
		if err := removeFile(w); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeDirs(webroot, created); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// openWebroot opens a recorded webroot; nil and no error when it is gone.
func openWebroot(dir string) (*os.Root, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("webroot %q: not an absolute path", dir)
	}
	root, err := os.OpenRoot(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("webroot %s: %w", dir, err)
	}
	return root, nil
}

func removeFile(w Written) error {
	if err := reseller.CheckDCVFileName(w.Name); err != nil {
		return fmt.Errorf("remove %s from webroot %s: %w", printable(w.Name), w.Webroot, err)
	}
	if w.Content == "" {
		return fmt.Errorf("remove %s from webroot %s: no content recorded, so the file cannot be recognised as dcvd's", w.Name, w.Webroot)
	}
	root, err := openWebroot(w.Webroot)
	if root == nil {
		return err
	}
	defer root.Close()
	rel := pkiDir + "/" + w.Name
	path := filepath.Join(w.Webroot, rel)
	fi, err := root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("remove %s: %w", path, err)
	case !fi.Mode().IsRegular() || fi.Size() != int64(len(w.Content)):
		return nil // replaced by somebody else
	}
	data, err := root.ReadFile(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("remove %s: %w", path, err)
	case string(data) != w.Content:
		return nil // replaced by somebody else
	}
	if err := root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return removeTemps(root, w)
}

// removeTemps removes the temporary files a write of w interrupted by a
// crash left behind: their random names were never recorded, so they are
// recognised by dcvd's temporary name and a content that is a prefix of
// w's (a write stops anywhere). Another order's temporary file never
// matches: its content is another token.
func removeTemps(root *os.Root, w Written) error {
	entries, err := fs.ReadDir(root.FS(), pkiDir)
	if err != nil {
		return nil // no directory: nothing left behind
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, ".dcvd-") || !strings.HasSuffix(name, ".tmp") {
			continue
		}
		rel := pkiDir + "/" + name
		fi, err := e.Info()
		if err != nil || fi.Size() > int64(len(w.Content)) {
			continue
		}
		data, err := root.ReadFile(rel)
		if err != nil || !strings.HasPrefix(w.Content, string(data)) {
			continue
		}
		// A few bytes could be another write's, in progress: a short
		// prefix is left until it is surely abandoned.
		if len(data) < 8 && time.Since(fi.ModTime()) < time.Minute {
			continue
		}
		if err := root.Remove(rel); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", filepath.Join(w.Webroot, rel), err))
		}
	}
	return errors.Join(errs...)
}

// removeDirs removes from webroot the directories dcvd created (created,
// and those CreatedMarker names) once they hold nothing but the marker,
// pki-validation first; a created pki-validation that holds another file
// stays, with the marker naming them all.
func removeDirs(webroot string, created []string) error {
	root, err := openWebroot(webroot)
	if root == nil {
		return err
	}
	defer root.Close()
	marked, err := readMarker(root)
	if err != nil {
		return fmt.Errorf("webroot %s: %w", webroot, err)
	}
	dcvds := slices.Clone(created)
	for _, d := range marked {
		if !slices.Contains(dcvds, d) {
			dcvds = append(dcvds, d)
		}
	}
	if slices.Contains(dcvds, pkiDir) {
		gone, err := removePKIDir(root, webroot, dcvds)
		if err != nil || !gone {
			return err
		}
	}
	if slices.Contains(dcvds, wellKnownDir) {
		return removeDir(root, webroot, wellKnownDir)
	}
	return nil
}

// removePKIDir removes the pki-validation directory, dcvd's, if nothing but
// the marker is in it, and reports whether it is gone. Otherwise it makes
// sure the marker names dcvds, the directories dcvd created.
func removePKIDir(root *os.Root, webroot string, dcvds []string) (gone bool, err error) {
	path := filepath.Join(webroot, pkiDir)
	fi, err := root.Lstat(pkiDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("remove %s: %w", path, err)
	case !fi.IsDir():
		return false, nil // replaced, possibly by a symlink: Remove would delete the link
	}
	only, err := onlyMarker(root)
	if err != nil {
		return false, fmt.Errorf("remove %s: %w", path, err)
	}
	if !only {
		// Another order's file (or the admin's): the directory stays,
		// known as dcvd's until the last file goes.
		if err := writeMarker(root, dcvds); err != nil {
			return false, fmt.Errorf("webroot %s: %w", webroot, err)
		}
		return false, nil
	}
	if err := root.Remove(markerPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("remove %s: %w", filepath.Join(webroot, markerPath), err)
	}
	err = root.Remove(pkiDir)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if empty, derr := isEmptyDir(root, pkiDir); derr == nil && !empty {
		// A file appeared since (another process's write): the
		// directory stays, and must stay known as dcvd's.
		if err := writeMarker(root, dcvds); err != nil {
			return false, fmt.Errorf("webroot %s: %w", webroot, err)
		}
		return false, nil
	}
	return false, fmt.Errorf("remove %s: %w", path, err)
}

// removeDir removes the directory rel if it is empty.
func removeDir(root *os.Root, webroot, rel string) error {
	path := filepath.Join(webroot, rel)
	fi, err := root.Lstat(rel)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("remove %s: %w", path, err)
	case !fi.IsDir():
		return nil // replaced, possibly by a symlink: Remove would delete the link
	}
	err = root.Remove(rel)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if empty, derr := isEmptyDir(root, rel); derr == nil && !empty {
		return nil // something else lives there now: keep it
	}
	return fmt.Errorf("remove %s: %w", path, err)
}

// onlyMarker reports whether pki-validation holds nothing but
// CreatedMarker, as a regular file (anything else at its name is not
// dcvd's).
func onlyMarker(root *os.Root) (bool, error) {
	d, err := root.Open(pkiDir)
	if err != nil {
		return false, err
	}
	defer d.Close()
	entries, err := d.ReadDir(2)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	for _, e := range entries {
		if e.Name() != CreatedMarker || !e.Type().IsRegular() {
			return false, nil
		}
	}
	return true, nil
}

// readMarker returns the directories CreatedMarker names, none when there
// is no marker. A marker that is not a regular file, or is too large, is
// not dcvd's and names nothing. The marker's presence alone says that
// pki-validation is dcvd's: it is written only into a directory Write
// created, and a write cut short may have left it incomplete.
func readMarker(root *os.Root) ([]string, error) {
	fi, err := root.Lstat(markerPath)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", markerPath, err)
	case !fi.Mode().IsRegular() || fi.Size() > markerMaxSize:
		return nil, nil
	}
	data, err := root.ReadFile(markerPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", markerPath, err)
	}
	dirs := []string{pkiDir}
	for line := range strings.Lines(string(data)) {
		if strings.TrimSpace(line) == wellKnownDir {
			dirs = append(dirs, wellKnownDir)
		}
	}
	return dirs, nil
}

// markerText is CreatedMarker's content for the directories dirs.
func markerText(dirs []string) string {
	var b strings.Builder
	b.WriteString("# dcvd created the directories below for validation files, and removes them\n" +
		"# once they hold nothing but this file.\n")
	for _, d := range []string{pkiDir, wellKnownDir} {
		if slices.Contains(dirs, d) {
			b.WriteString(d + "\n")
		}
	}
	return b.String()
}

// writeMarker makes CreatedMarker name dirs (at least: what it named
// already stays named). It creates the file anew, never writing through
// what is at its name: a marker that is not a regular file is left alone,
// and the knowledge goes with it. Without a pki-validation directory there
// is nothing to mark.
func writeMarker(root *os.Root, dirs []string) error {
	if !slices.Contains(dirs, pkiDir) {
		return nil
	}
	have, err := readMarker(root)
	if err != nil {
		return err
	}
	if have != nil {
		missing := false
		for _, d := range dirs {
			missing = missing || !slices.Contains(have, d)
		}
		if !missing {
			return nil
		}
		dirs = append(slices.Clone(dirs), have...)
		if err := root.Remove(markerPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("replace %s: %w", markerPath, err)
		}
	} else if fi, err := root.Lstat(markerPath); err == nil && !fi.Mode().IsRegular() {
		return nil
	}
	f, err := root.OpenFile(markerPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrExist) {
		// The directory went meanwhile (nothing to mark), or another
		// process marked it.
		return nil
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", markerPath, err)
	}
	_, err = io.WriteString(f, markerText(dirs))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", markerPath, err)
	}
	return nil
}

func isEmptyDir(root *os.Root, rel string) (bool, error) {
	d, err := root.Open(rel)
	if err != nil {
		return false, err
	}
	defer d.Close()
	_, err = d.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return false, err
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
