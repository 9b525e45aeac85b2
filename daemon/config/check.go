package config

// This file holds the checks that look at more than one section: those
// across certificates, which LoadConfig makes (no two share a name, an
// order or a deploy directory; no deploy directory in a web root), and
// Check, which looks at the host.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// certRead is a [[certificate]] as read, whether it loaded or not, and
// where messages name it: what the checks across certificates compare,
// so that a clash is reported even when one side has problems of its own.
type certRead struct {
	at   certAt
	cert CertConfig
}

// checkAcross checks what no certificate can tell alone.
func (l *loader) checkAcross(read []certRead) {
	// Each certificate is known by its key prefix and the file it is in
	// (certAt), so that a clash between two files names both.
	byName := map[string][]certAt{}
	byService := map[string][]certAt{}
	byDir := map[string][]certAt{}
	type served struct {
		at  certAt
		dir string
	}
	var webroots, deploys []served
	for _, r := range read {
		c, at := r.cert, r.at
		for _, w := range c.Webroots {
			webroots = append(webroots, served{at, w.Dir})
		}
		if c.Deploy.Dir != "" {
			deploys = append(deploys, served{at, c.Deploy.Dir})
		}
		if c.Name != "" {
			byName[c.Name] = append(byName[c.Name], at)
		}
		if c.ServiceID != "" {
			byService[c.ServiceID] = append(byService[c.ServiceID], at)
		}
		if c.Deploy.Dir != "" {
			byDir[c.Deploy.Dir] = append(byDir[c.Deploy.Dir], at)
		}
	}
	for name, ats := range byName {
		if len(ats) > 1 {
			pos := make([]string, len(ats))
			for i, at := range ats {
				pos[i] = at.position(ats[0].file)
			}
			l.failAt(ats[len(ats)-1], "certificate["+name+"].name", "%q names more than one [[certificate]] (%s): names must be unique", name, strings.Join(pos, ", "))
		}
	}
	for id, ats := range byService {
		if len(ats) > 1 {
			l.failAt(ats[1], ats[1].prefix+".service_id", "service_id %q is also used by %s: two certificates reissuing one order would revoke each other", id, ats[0].describe(ats[1].file))
		}
	}
	for dir, ats := range byDir {
		if len(ats) > 1 {
			l.failAt(ats[1], ats[1].prefix+".deploy.dir", "%s is also the deploy directory of %s: each certificate needs its own", dir, ats[0].describe(ats[1].file))
		}
	}
	// A deploy directory in a web root puts privkey.pem where the web
	// server serves files to anyone: whatever certificate's web root.
	// Each deploy directory's ancestors are looked up among the web roots
	// rather than every pair compared: with thousands of certificates the
	// pairs were most of a config load.
	first := map[string]int{} // clean absolute web root → its first index in webroots
	for i, w := range webroots {
		if filepath.IsAbs(w.dir) {
			if _, ok := first[filepath.Clean(w.dir)]; !ok {
				first[filepath.Clean(w.dir)] = i
			}
		}
	}
	for _, d := range deploys {
		hit := -1
		if filepath.IsAbs(d.dir) {
			for p := filepath.Clean(d.dir); ; p = filepath.Dir(p) {
				if i, ok := first[p]; ok && (hit < 0 || i < hit) {
					hit = i
				}
				if p == filepath.Dir(p) {
					break
				}
			}
		} else {
			// Refused elsewhere; compared as before so that the messages
			// stay the same.
			hit = slices.IndexFunc(webroots, func(w served) bool { return cfgWithin(w.dir, d.dir) })
		}
		if hit >= 0 {
			w := webroots[hit]
			l.failAt(d.at, d.at.prefix+".deploy.dir", "%s is inside the web root %s of %s: the web server would serve privkey.pem to anyone who asks; deploy outside every web root (such as /etc/ssl/dcvd/NAME)",
				d.dir, w.dir, w.at.describe(d.at.file))
		}
	}
}

// Check makes the checks of "dcvd check-config" that look at the host
// rather than the file, the same ones (HostChecks) the daemon makes before
// every paid reissue: the state directory exists or can be created, is
// writable (a temporary file is created and removed) and writable by no
// one else, and its keys/ is dcvd's alone; ca_roots_file holds
// certificates; for every certificate, each webroot passes
// httpchallenge.Probe (an existing directory, no symlink leading out of
// it, writable: a probe file is really created and removed), its owner and
// group exist, the deploy directory is writable (or can be created), is no
// system directory and in no web root once symlinks are resolved, and the
// reload command's program exists. Each error is a *ConfigError naming its
// key; they are sorted by key.
func (c *Config) Check() []error {
	h := NewHostChecks(true)
	var errs []error
	for _, p := range h.StateProblems(c.Daemon.StateDir) {
		errs = append(errs, p)
	}
	if _, err := c.API.CARoots(); err != nil {
		errs = append(errs, &ConfigError{Key: "api.ca_roots_file", Reason: err.Error()})
	}
	// Every web root, resolved once: a deploy directory may be in another
	// certificate's web root too.
	served := h.Webroots(c.Certificates)
	for i := range c.Certificates {
		for _, p := range h.CertProblems(&c.Certificates[i], served) {
			errs = append(errs, p)
		}
	}
	// A problem of an included certificate names its file, as LoadConfig's
	// do.
	for _, e := range errs {
		var ce *ConfigError
		if errors.As(e, &ce) && ce.File == "" {
			if name, ok := cfgCertOfKey(ce.Key); ok {
				ce.File = c.CertFile[name]
			}
		}
	}
	SortErrors(errs)
	return errs
}

// cfgCheckWritableDir checks that dir is a writable directory, or can be
// created: then its nearest existing parent must be writable.
func cfgCheckWritableDir(dir string) error {
	probe := func(d string) error {
		f, err := os.CreateTemp(d, ".dcvd-check-*")
		if err != nil {
			return err
		}
		name := f.Name()
		f.Close()
		return os.Remove(name)
	}
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		if err := probe(dir); err != nil {
			return fmt.Errorf("%s is not writable: %w", dir, err)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && p != filepath.Dir(p) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s does not exist and cannot be created: %w", dir, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s does not exist and cannot be created: %s is not a directory", dir, p)
		}
		if err := probe(p); err != nil {
			return fmt.Errorf("%s does not exist and cannot be created: %w", dir, err)
		}
		return nil
	}
}
