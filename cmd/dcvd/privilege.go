package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"go.uber.org/zap"

	"github.com/dcvd/dcvd/daemon/config"
)

// This file keeps the commands run by hand as root from leaving root-owned
// files in the state directory. The daemon runs as dcvd (dcvd.service's
// User=); a dcvd.db, -wal, -shm or keys/ file that root created there
// before the service started, or while it was stopped, makes every later
// start fail with "permission denied". So a command run as root acts as
// the state directory's owner before it opens anything in it, exactly as
// "runuser -u dcvd --" would, except that it has already read, as root,
// the configuration and the secret files only root may read.

// stateUse is what a command does with the state directory.
type stateUse int

const (
	// stateWrites: the command creates the database and keys when there
	// are none (reissue, retry, redeploy, import).
	stateWrites stateUse = iota
	// stateReads: the command never creates anything (status).
	stateReads
)

// serviceUser is the user dcvd.service runs as (dcvd.sysusers.conf).
// When it exists, dcvd is installed as a service, and a state directory
// that root would create would lock it out.
var serviceUser = "dcvd"

// serviceStateDir is the service's state directory (dcvd.service's
// StateDirectory=, the configuration's default): the one a root-run
// command must not create.
var serviceStateDir = config.DefaultStateDir

// actAsStateOwner makes this process, when it runs as root, the owner of
// cfg's state directory (its user, that user's primary group and
// supplementary groups, as runuser and systemd's User= give them), so that
// whatever the command creates there belongs to the daemon's user. It
// returns the user switched to, "" when none:
//
//   - not root, or a PostgreSQL store without a state directory: nothing
//     to do (the store is not in a file);
//   - the state directory owned by root: a deliberate setup where dcvd
//     runs as root; the command stays root;
//   - no state directory: a command that would create the service's
//     (daemon.DefaultStateDir, the unit's StateDirectory=) refuses when
//     the service's user exists (root would own it, and the service could
//     not use it); without that user dcvd is no service here, and another
//     directory is the admin's own: root creates it. A command that only
//     reads goes on, and finds no state.
//
// Call it after every file only root may read has been read: the
// configuration and its secrets (LoadConfig reads them all), the CA roots.
// On Linux, Go applies setresuid and setgroups to every thread of the
// process (since Go 1.16), so no goroutine keeps root.
func actAsStateOwner(cfg *config.Config, use stateUse, log *zap.Logger) (string, error) {
	if os.Geteuid() != 0 {
		return "", nil
	}
	dir := cfg.Daemon.StateDir
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if use == stateReads || cfg.Store.Driver == config.StoreDriverPostgres {
			return "", nil
		}
		if _, err := user.Lookup(serviceUser); err != nil || filepath.Clean(dir) != serviceStateDir {
			// No service user, so dcvd is not installed as a service
			// here; or a state directory of the admin's own, not the
			// service's: root running it by hand is the setup.
			log.Debug("no state directory: creating it as root", zap.String("state_dir", dir))
			return "", nil
		}
		return "", fmt.Errorf("the state directory %s does not exist; it is created by the package/installer (systemd-tmpfiles) as user dcvd — "+
			"run `systemd-tmpfiles --create dcvd.conf` or start the service first (run as root, this command would create it, "+
			"and the database in it, as root: the service could not open them) [daemon.state_dir]", dir)
	case err != nil:
		return "", fmt.Errorf("daemon.state_dir: %w", err)
	case !fi.IsDir():
		return "", fmt.Errorf("daemon.state_dir: %s is not a directory", dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", nil // no owner to go by
	}
	if st.Uid == 0 {
		log.Debug("the state directory is root's: running as root", zap.String("state_dir", dir))
		return "", nil
	}
	id, err := switchUser(int(st.Uid), int(st.Gid))
	if err != nil {
		return "", fmt.Errorf("act as the owner of the state directory %s (uid %d), so as to leave no root-owned file in it: %w; run the command as that user (runuser -u USER -- dcvd ...)",
			dir, st.Uid, err)
	}
	log.Debug("run as root: acting as the state directory's owner, so that the files this command creates are the daemon's",
		zap.String("state_dir", dir), zap.String("user", id.name), zap.Int("uid", id.uid), zap.Int("gid", id.gid),
		zap.Ints("groups", id.groups))
	return id.name, nil
}

// identity is a user with the groups a login (initgroups) gives it.
type identity struct {
	name     string
	uid, gid int
	groups   []int
}

// lookupIdentity is uid's identity from the user database. A uid it does
// not know (a state directory chowned to a bare number) gets fallbackGID
// and no supplementary group.
func lookupIdentity(uid, fallbackGID int) identity {
	id := identity{name: strconv.Itoa(uid), uid: uid, gid: fallbackGID, groups: []int{fallbackGID}}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return id
	}
	id.name = u.Username
	if g, err := strconv.Atoi(u.Gid); err == nil {
		id.gid = g
	}
	id.groups = []int{id.gid}
	if gids, err := u.GroupIds(); err == nil {
		for _, s := range gids {
			if g, err := strconv.Atoi(s); err == nil && g != id.gid {
				id.groups = append(id.groups, g)
			}
		}
	}
	return id
}

// switchUser drops root for uid for good: groups first (only root may
// set them), then the group ids, then the user ids, real, effective and
// saved alike, so that nothing can switch back.
func switchUser(uid, dirGID int) (identity, error) {
	id := lookupIdentity(uid, dirGID)
	if err := syscall.Setgroups(id.groups); err != nil {
		return id, fmt.Errorf("setgroups %v: %w", id.groups, err)
	}
	if err := syscall.Setresgid(id.gid, id.gid, id.gid); err != nil {
		return id, fmt.Errorf("setresgid %d: %w", id.gid, err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return id, fmt.Errorf("setresuid %d: %w", uid, err)
	}
	return id, nil
}
