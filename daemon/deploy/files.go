package deploy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// deployEntry is one file of a replacement: written with content and mode,
// or removed when write is false.
type deployEntry struct {
	name    string
	content string
	write   bool
	mode    os.FileMode
}

// deployReplace makes dir hold entries, in their order. Every file is first
// written to a temporary file (chowned to uid/gid unless both are -1,
// chmoded, fsynced), all of them at once: concurrent fsyncs share the file
// system's journal commits, where one after the other each waits for its
// own. Only then are they renamed into place (or the files removed), in
// order, and dir is fsynced before the last entry and after it: the last
// (cert.pem in a deployment) is durable only once the others are. It
// returns how many entries took effect: a failure before the first rename
// changes nothing visible.
func deployReplace(dir string, entries []deployEntry, uid, gid int) (done int, err error) {
	temps := make([]string, len(entries))
	defer func() {
		for _, tmp := range temps {
			if tmp != "" {
				os.Remove(tmp)
			}
		}
	}()
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, e := range entries {
		if !e.write {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			temps[i], errs[i] = deployWriteTemp(dir, e.name, e.content, e.mode, uid, gid)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	for i, e := range entries {
		last := i == len(entries)-1
		if last && i > 0 {
			if err := deploySyncDir(dir); err != nil {
				return done, err
			}
		}
		path := filepath.Join(dir, e.name)
		if e.write {
			if err := os.Rename(temps[i], path); err != nil {
				return done, fmt.Errorf("replace %s: %w", path, err)
			}
			temps[i] = ""
		} else if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return done, fmt.Errorf("remove %s: %w", path, err)
		}
		done++
		if last {
			if err := deploySyncDir(dir); err != nil {
				return done, err
			}
		}
	}
	return done, nil
}

// deployWriteTemp writes content to a new temporary file in dir, with its
// final mode and owner set explicitly (the umask plays no part) and its data
// synced, and returns its path.
func deployWriteTemp(dir, name, content string, mode os.FileMode, uid, gid int) (string, error) {
	tmp := filepath.Join(dir, deployTempPrefix+rand.Text()+deployTempSuffix)
	// O_EXCL also refuses a symlink planted at the name.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	_, err = io.WriteString(f, content)
	if err == nil && (uid >= 0 || gid >= 0) {
		if err = f.Chown(uid, gid); err != nil {
			err = fmt.Errorf("chown to %d:%d: %w", uid, gid, err)
		}
	}
	if err == nil {
		// After the chown, which may clear mode bits.
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return tmp, nil
}

// deployReadGeneration reads the four files of a generation in dir; a
// missing file is absent from the map.
func deployReadGeneration(dir string) (map[string]string, error) {
	gen := make(map[string]string, 4)
	for _, name := range deployWriteOrder() {
		content, ok, err := deployReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if ok {
			gen[name] = content
		}
	}
	return gen, nil
}

// deployReadFile reads path, following symlinks (an adopted directory may
// be made of them); ok is false when it does not exist.
func deployReadFile(path string) (content string, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	} else if !fi.Mode().IsRegular() {
		return "", false, fmt.Errorf("read %s: not a regular file", path)
	}
	data, err := io.ReadAll(io.LimitReader(f, deployMaxFile+1))
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > deployMaxFile {
		return "", false, fmt.Errorf("read %s: larger than %d bytes, not a certificate file", path, deployMaxFile)
	}
	return string(data), true, nil
}

// deployMkdirAll creates dir and its missing parents with mode perm
// exactly, leaving existing directories as they are.
func deployMkdirAll(dir string, perm os.FileMode) error {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := deployMkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return deployMkdirAll(dir, perm)
		}
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, perm); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return deploySyncDir(parent)
}

// deploySyncDir makes the renames and removals in dir durable.
func deploySyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// sweepTemps removes the temporary files an interrupted deploy left in dir
// (the caller holds the directory's lock, so none is in use).
func (d *Deployer) sweepTemps(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return // a missing previous/ is normal; other errors surface later
	}
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, deployTempPrefix) || !strings.HasSuffix(name, deployTempSuffix) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			d.log().Warn("removing a stale temporary file", zap.String("dir", dir), zap.Error(err))
		}
	}
}

// lock takes an exclusive flock(2) on dir, waiting while another deploy
// holds it for as long as ctx allows.
func (d *Deployer) lock(ctx context.Context, dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				// Closing releases the lock.
				f.Close()
			}, nil
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir, err)
		}
		if !logged {
			d.log().Info("waiting for another deploy to the same directory", zap.String("dir", dir))
			logged = true
		}
		timer := time.NewTimer(deployLockPoll)
		select {
		case <-ctx.Done():
			timer.Stop()
			f.Close()
			return nil, fmt.Errorf("waiting for another deploy to %s: %w", dir, ctx.Err())
		case <-timer.C:
		}
	}
}
