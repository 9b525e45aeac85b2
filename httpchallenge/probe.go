package httpchallenge

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
)

// probeAttempts bounds how often Probe starts again when a directory it
// found vanishes under it: another order's Remove may delete an empty
// pki-validation/ between Probe's look and its write.
const probeAttempts = 3

// Probe checks, without publishing anything, that Write could publish a
// validation file in wr now. It is meant to run before a reissue is paid
// for, when a refusal still costs nothing, so it is cheap: a handful of
// system calls, no network.
//
// It refuses what Write would refuse, with the same messages: a webroot
// that is not an existing directory, a .well-known or pki-validation
// symlink that leads outside the webroot (or is absolute), something in
// the way that is not a directory. It reports an Owner or Group that does
// not exist. And it really writes, the way Write would: where Write would
// create .well-known/ or pki-validation/, Probe creates a directory of its
// own beside it with Write's mode and owner and a file inside; where
// pki-validation/ exists, a file in it. So a read-only file system, a
// directory dcvd may not write to, an owner dcvd may not give files to, and
// a directory that dcvd could create but, once given to Owner, no longer
// write into, all fail here as they would fail in Write.
//
// What Probe creates has a random hidden name and is removed before it
// returns; it never creates or removes .well-known or pki-validation
// themselves, and it holds the web root's lock as they do, so that it
// cannot race with a Write or a Remove of another order in the same
// webroot. (A probe file a crash leaves in pki-validation/
// has the name of Write's temporary files and is swept by a later Remove.)
// Everything is reached through os.Root, as in Write: no symlink can make
// Probe create or remove anything outside the webroot.
//
// The error joins every problem found. Each wraps the system call's error
// (fs.ErrPermission, syscall.EROFS, …), so that a caller can explain it.
func Probe(wr Webroot) error {
	if !filepath.IsAbs(wr.Dir) {
		return fmt.Errorf("webroot %q: not an absolute path", wr.Dir)
	}
	dir := filepath.Clean(wr.Dir)
	uid, gid, errs := lookupIDs(dir, wr)
	name, err := probeName()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	// The owner is resolved above so that an unknown one does not hide the
	// webroot's own problems; prepare checks the path as Write does.
	t, err := prepare(Webroot{Dir: dir}, name)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	defer t.root.Close()
	t.owner, t.group, t.uid, t.gid = wr.Owner, wr.Group, uid, gid
	// Under the web root's lock, like Write and Remove: a Remove of another
	// order that found Probe's file or directory in pki-validation/ or
	// .well-known/ would keep them, where it should have removed them.
	defer lockWebroot(dir)()
	for attempt := 1; ; attempt++ {
		err := t.probe()
		if err != nil && errors.Is(err, fs.ErrNotExist) && attempt < probeAttempts {
			continue
		}
		if err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
}

// probe writes and removes what stands in for Write's work in the deepest
// existing directory of the file's path.
func (t *target) probe() (err error) {
	parent, creates, err := t.deepestDir()
	if err != nil {
		return err
	}
	name, err := probeName()
	if err != nil {
		return err
	}
	where := filepath.Join(t.dir, parent)
	rel := path.Join(parent, name)
	file := rel
	if creates != "" {
		// Write would create a directory here, give it dirMode and the
		// owner, and then create in it: so does Probe, with one of its own.
		if err := t.probeDir(rel); err != nil {
			t.root.Remove(rel)
			return fmt.Errorf("webroot %s: dcvd cannot create %s in %s: %w", t.dir, creates, where, err)
		}
		defer func() {
			if rerr := t.root.Remove(rel); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				err = errors.Join(err, fmt.Errorf("webroot %s: remove the probe directory %s: %w", t.dir, filepath.Join(t.dir, rel), probeCause(rerr)))
			}
		}()
		file = rel + "/" + name
	}
	f, err := t.root.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		if creates != "" {
			return fmt.Errorf("webroot %s: dcvd could create %s in %s but not write into it once given mode %04o%s: %w",
				t.dir, creates, where, uint32(dirMode), t.ownerText(), probeCause(err))
		}
		return fmt.Errorf("webroot %s: dcvd cannot create files in %s: %w", t.dir, where, probeCause(err))
	}
	if t.uid >= 0 || t.gid >= 0 {
		if cerr := f.Chown(t.uid, t.gid); cerr != nil {
			err = fmt.Errorf("webroot %s: dcvd cannot give the files it writes%s: %w", t.dir, t.ownerText(), probeCause(cerr))
		}
	}
	f.Close()
	if rerr := t.root.Remove(file); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, fmt.Errorf("webroot %s: remove the probe file %s: %w", t.dir, filepath.Join(t.dir, file), probeCause(rerr)))
	}
	return err
}

// deepestDir returns the deepest existing directory of .well-known/
// pki-validation/ ("." for the webroot itself) and the name of the
// directory Write would create in it ("" when pki-validation exists).
func (t *target) deepestDir() (dir, creates string, err error) {
	for _, d := range []struct{ rel, creates string }{{pkiDir, ""}, {wellKnownDir, "pki-validation"}} {
		// Stat follows the relative links that checkPath let through.
		fi, err := t.root.Stat(d.rel)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return "", "", fmt.Errorf("%s: %w", filepath.Join(t.dir, d.rel), err)
		case !fi.IsDir():
			return "", "", fmt.Errorf("%s exists and is not a directory", filepath.Join(t.dir, d.rel))
		}
		return d.rel, d.creates, nil
	}
	return ".", ".well-known", nil
}

// probeDir creates the directory rel as Write's mkdir creates one: mode
// dirMode whatever the umask, then the owner.
func (t *target) probeDir(rel string) error {
	if err := t.root.Mkdir(rel, dirMode); err != nil {
		return probeCause(err)
	}
	d, err := t.root.Open(rel)
	if err != nil {
		return probeCause(err)
	}
	defer d.Close()
	if err := d.Chmod(dirMode); err != nil {
		return probeCause(err)
	}
	if t.uid >= 0 || t.gid >= 0 {
		if err := d.Chown(t.uid, t.gid); err != nil {
			return fmt.Errorf("give it%s: %w", t.ownerText(), probeCause(err))
		}
	}
	return nil
}

// ownerText names the configured owner and group, for messages.
func (t *target) ownerText() string {
	switch {
	case t.owner != "" && t.group != "":
		return fmt.Sprintf(" to owner %q, group %q", t.owner, t.group)
	case t.owner != "":
		return fmt.Sprintf(" to owner %q", t.owner)
	case t.group != "":
		return fmt.Sprintf(" to group %q", t.group)
	}
	return ""
}

// probeCause is the system call's error of a path error: the path is the
// probe's random name, which means nothing to an admin; the messages name
// the directory instead.
func probeCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// probeName is a random hidden name with the prefix and suffix of Write's
// temporary files, so that Remove sweeps a probe file a crash left behind.
func probeName() (string, error) {
	return randomName(".dcvd-probe-", "probe name")
}
