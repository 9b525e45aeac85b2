// Package keyfiles finds and deletes the private-key files under
// state_dir/keys/<cert>/ that nothing needs any more: those of orders never
// recorded (a crash between writing the key and recording the order), and
// those of ended orders whose generation is neither the live one nor the
// one before it. A single process keeps its keys there; a cluster seals
// them into the shared database instead.
package keyfiles

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/store"
)

// OrphanAge is how old a key file must be before RemoveOrphans takes
// it for abandoned: a key is recorded in its order within
// milliseconds of being written.
const OrphanAge = time.Minute

// keyRefs are the key files that must stay, known by path and by file
// name: a state directory moved since a path was recorded still has its
// files recognised by their name (<unique_id>.key, unique_ids being
// random).
type keyRefs struct {
	paths map[string]bool
	names map[string]bool
}

// add records that the key file keyFile, of the order uniqueID (either may
// be ""), must stay.
func (r keyRefs) add(keyFile, uniqueID string) {
	if keyFile != "" {
		r.paths[filepath.Clean(keyFile)] = true
		r.names[filepath.Base(keyFile)] = true
	}
	if uniqueID != "" {
		r.names[uniqueID+".key"] = true
	}
}

// holds reports whether the key file at path must stay.
func (r keyRefs) holds(path string) bool {
	return r.paths[filepath.Clean(path)] || r.names[filepath.Base(path)]
}

// neededKeys reads which key files must stay: the live certificates' (which
// a reuse_key order also uses), those of the orders in flight, and those of
// the last KeptGenerations done orders of every certificate: the live
// generation and the one before it, which deploy.dir/previous/ holds. A key
// is deleted only when none of these reads failed.
func neededKeys(ctx context.Context, st store.Store) (keyRefs, error) {
	refs := keyRefs{paths: map[string]bool{}, names: map[string]bool{}}
	lives, err := st.CertificateSummaries(ctx)
	if err != nil {
		return refs, fmt.Errorf("read the live certificates: %w", err)
	}
	for _, c := range lives {
		refs.add(c.KeyFile, c.UniqueID)
	}
	active, err := st.ActiveOrders(ctx)
	if err != nil {
		return refs, fmt.Errorf("read the orders in flight: %w", err)
	}
	for _, o := range active {
		refs.add(o.KeyFile, o.UniqueID)
	}
	gens, err := st.Generations(ctx, store.KeptGenerations)
	if err != nil {
		return refs, fmt.Errorf("read the last generations: %w", err)
	}
	for _, orders := range gens {
		for _, o := range orders {
			refs.add(o.KeyFile, o.UniqueID)
		}
	}
	return refs, nil
}

// File is a file of the key directory of one certificate.
type File struct {
	Path string
	// UID is the unique_id of the order that wrote it: <uid>.key, or
	// .<uid>.key.tmp-… (the temporary file of its write).
	UID  string
	Temp bool
}

// Path is where the key of the order uniqueID of cert is written.
func Path(stateDir, cert, uniqueID string) string {
	return filepath.Join(stateDir, "keys", cert, uniqueID+".key")
}

// List lists the regular files named as keys or their temporary
// files under state_dir/keys/<cert>/; nothing when there are no keys yet.
// It reads the directories only (no stat of each file: a housekeeping pass
// lists every key).
func List(stateDir string) []File {
	root := filepath.Join(stateDir, "keys")
	certDirs, err := os.ReadDir(root)
	if err != nil {
		return nil // no keys yet
	}
	var out []File
	for _, cd := range certDirs {
		if !cd.IsDir() {
			continue
		}
		dir := filepath.Join(root, cd.Name())
		files, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range files {
			if !f.Type().IsRegular() {
				continue
			}
			kf := File{Path: filepath.Join(dir, f.Name())}
			name := f.Name()
			if uid, ok := strings.CutSuffix(name, ".key"); ok && !strings.HasPrefix(name, ".") {
				kf.UID = uid
			} else if i := strings.Index(name, ".key.tmp"); strings.HasPrefix(name, ".") && i > 1 {
				kf.UID, kf.Temp = name[1:i], true
			}
			if kf.UID != "" {
				out = append(out, kf)
			}
		}
	}
	return out
}

// RemoveOrphans deletes the key files of orders that were never
// recorded: a crash between writing an order's key and recording the order
// leaves one (or its temporary file) that nothing will ever use. A key of a
// recorded order, or one still needed (neededKeys: the order that wrote it
// may since have been deleted by the history's retention), stays.
func RemoveOrphans(ctx context.Context, st store.Store, stateDir string, log *zap.Logger) {
	files := List(stateDir)
	if len(files) == 0 {
		return
	}
	needed, err := neededKeys(ctx, st)
	if err != nil {
		log.Warn("looking for abandoned keys", zap.Error(err))
		return
	}
	for _, f := range files {
		if needed.holds(f.Path) {
			continue
		}
		if info, err := os.Lstat(f.Path); err != nil || !info.Mode().IsRegular() || time.Since(info.ModTime()) < OrphanAge {
			continue
		}
		if _, err := st.Order(ctx, f.UID); !errors.Is(err, store.ErrNotFound) {
			continue // recorded (or the store cannot say): keep it
		}
		if err := os.Remove(f.Path); err != nil {
			log.Warn("removing an abandoned key", zap.String("file", f.Path), zap.Error(err))
			continue
		}
		log.Info("removed the key of an order that was never recorded", zap.String("file", f.Path))
	}
}

// RemoveEnded deletes the key files of ended orders that nothing needs
// any more: those of failed orders, and those of done orders whose
// generation is neither the live one nor the one before it. A file goes
// only when its order (the unique_id in its name) is recorded, has ended
// (an ended order is never resumed), wrote that very file, and neededKeys
// does not hold it; the files of orders not recorded are removeOrphanKeys'
// business. It stops at the end of ctx, and returns how many it removed
// and the errors met.
//
// Reading what is needed after listing the files is safe against the
// orders that run meanwhile: a key becomes needed again only by being the
// live one (reuse_key reuses the live key), and the live key changes only
// to the key of an order in flight, which is held.
func RemoveEnded(ctx context.Context, st store.Store, stateDir string, log *zap.Logger) (int, error) {
	files := List(stateDir)
	if len(files) == 0 {
		return 0, nil
	}
	needed, err := neededKeys(ctx, st)
	if err != nil {
		return 0, err
	}
	removed := 0
	var errs []error
	for _, f := range files {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		if f.Temp || needed.holds(f.Path) {
			continue
		}
		o, err := st.Order(ctx, f.UID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			continue
		case err != nil:
			errs = append(errs, err)
			continue
		case !o.Step.Terminal() || filepath.Base(o.KeyFile) != filepath.Base(f.Path) ||
			filepath.Base(filepath.Dir(f.Path)) != o.Cert:
			continue
		}
		if err := os.Remove(f.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove the key of order %s: %w", f.UID, err))
			continue
		}
		removed++
		log.Debug("removed the key of an ended order", zap.String("cert", o.Cert), zap.String("unique_id", o.UniqueID),
			zap.String("step", string(o.Step)), zap.String("file", f.Path))
	}
	return removed, errors.Join(errs...)
}
