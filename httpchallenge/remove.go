package httpchallenge

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/dcvd/dcvd/reseller"
)

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
