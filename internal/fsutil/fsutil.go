// Package fsutil holds the file-system helpers that several of dcvd's
// packages need and that must behave identically everywhere: an atomic file
// write and the chown(1)-style resolution of a user or group.
package fsutil

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// WriteFileAtomic replaces path with data so that a crash leaves the old
// file or the new one, never a mixture: a temporary file in the same
// directory, mode set explicitly (the umask does not apply), synced, renamed
// over path, and the directory synced.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// LookupUID resolves a user the way chown(1) does: a name first, then a
// number, which needs no entry in the user database.
func LookupUID(name string) (int, error) {
	return lookupID(name, func(n string) (string, error) {
		u, err := user.Lookup(n)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	})
}

// LookupGID resolves a group as LookupUID resolves a user.
func LookupGID(name string) (int, error) {
	return lookupID(name, func(n string) (string, error) {
		g, err := user.LookupGroup(n)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	})
}

func lookupID(name string, lookup func(string) (string, error)) (int, error) {
	id, lerr := lookup(name)
	if lerr == nil {
		n, err := strconv.Atoi(id)
		if err != nil {
			return -1, fmt.Errorf("non-numeric id %q", id)
		}
		return n, nil
	}
	if n, err := strconv.ParseUint(name, 10, 31); err == nil {
		return int(n), nil
	}
	return -1, lerr
}
