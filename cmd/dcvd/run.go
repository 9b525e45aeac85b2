package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/internal/sdnotify"
)

// This file is "dcvd run", the daemon as a service manager runs it, and
// the other commands' side of its control socket.
//
// Under systemd (Type=notify) dcvd says READY=1 once its configuration is
// loaded, its state open and its listeners (control socket, callbacks,
// validation files, metrics) up; it pings the watchdog when WatchdogSec is
// set, keeps a one-line STATUS=, reloads its configuration on SIGHUP
// (RELOADING=1 … READY=1, whether the new one was taken or refused) and on
// SIGTERM says STOPPING=1, starts no new step and lets the one at work
// finish (within daemon.DefaultStopGrace) before it exits 0.

const (
	// statusInterval is how often STATUS= is brought up to date.
	statusInterval = 30 * time.Second
	// stopMargin is how long past the stop grace dcvd waits for its parts
	// to stop before it gives up on them.
	stopMargin = 15 * time.Second
	// controlPoll is how often "dcvd reissue --wait" asks the running
	// daemon how its order stands.
	controlPoll = 500 * time.Millisecond
)

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("run", "run [--config FILE]", stdout)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// From here on SIGHUP reloads; left to its default it would end the
	// process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	cfg, err := loadDaemonConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	level := zap.NewAtomicLevel()
	log, err := newRunLogger(cfg, stderr, level)
	if err != nil {
		return err
	}
	defer log.Sync()

	if err := os.MkdirAll(cfg.Daemon.StateDir, 0o700); err != nil {
		return fmt.Errorf("daemon.state_dir: %w", err)
	}
	// First the socket: a daemon already running on this state refuses
	// the second one before it opens anything.
	socket, link := control.SocketPaths(cfg.Daemon.StateDir, os.Getenv("RUNTIME_DIRECTORY"))
	ln, err := control.Listen(socket, link)
	if err != nil {
		return err
	}
	events := newNotifications(cfg.Notify, log)
	defer events.Close() // after the daemon's Close: what it queued is delivered
	d, err := daemon.New(ctx, cfg, daemon.Options{Log: log, AfterStep: afterStepHook, Version: version, OnEvent: events.OnEvent})
	if err != nil {
		ln.Close()
		return err
	}
	defer d.Close()

	r := &runner{d: d, log: log, cfgPath: *cfgPath, level: level, cfg: cfg, events: events}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- d.ServeControlOn(runCtx, ln) }()
	r.parts = append(r.parts, served)
	ran := make(chan error, 1)
	go func() { ran <- d.Run(runCtx) }()
	r.parts = append(r.parts, ran)

	select {
	case <-d.Running():
	case err := <-ran:
		// A listener could not be had: nothing was ready.
		stop()
		return errors.Join(err, r.stopped(ran))
	case <-ctx.Done():
		return r.stop(stop, nil)
	}
	log.Info("dcvd started", zap.String("version", version), zap.String("config", *cfgPath),
		zap.String("control_socket", socket), zap.Int("certificates", len(cfg.Certificates)))
	r.notify(sdnotify.Ready)
	r.publishStatus(ctx)

	watchdog := sdnotify.WatchdogInterval()
	every := statusInterval
	if watchdog > 0 && watchdog < every {
		every = watchdog
	}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for {
		select {
		case <-hup:
			r.reload()
			r.publishStatus(ctx)
		case <-ticker.C:
			// The watchdog is fed only while the state answers: a daemon
			// stuck on its database is restarted rather than trusted.
			if r.publishStatus(ctx) && watchdog > 0 {
				r.notify(sdnotify.Watchdog)
			}
		case err := <-ran:
			if ctx.Err() != nil {
				return r.stop(stop, ran) // Run saw the stop first
			}
			// Run ends by itself only on an error.
			stop()
			return errors.Join(fmt.Errorf("the daemon stopped: %w", err), r.stopped(ran))
		case err := <-served:
			if ctx.Err() != nil {
				return r.stop(stop, served)
			}
			// Without its control socket the daemon would be raced by the
			// commands: better restarted by the service manager.
			stop()
			return errors.Join(fmt.Errorf("the control socket failed: %w", err), r.stopped(served))
		case <-ctx.Done():
			return r.stop(stop, nil)
		}
	}
}

// runner is the state of one "dcvd run".
type runner struct {
	d       *daemon.Daemon
	log     *zap.Logger
	cfgPath string
	level   zap.AtomicLevel
	// cfg is the configuration the daemon runs with.
	cfg *config.Config
	// events sends the daemon's events to cfg's [notify.*] channels.
	events *notifications
	// refused counts the problems of the last reload, when it was refused.
	refused int
	// parts report when the control server and Run have returned.
	parts []chan error
	// lastStatus is the STATUS= last sent.
	lastStatus string
}

// notify sends one sd_notify message; a failure is logged, never fatal.
func (r *runner) notify(send func() error) {
	if err := send(); err != nil {
		r.log.Warn("telling the service manager", zap.Error(err))
	}
}

// reload loads the configuration file again and gives it to the daemon;
// a configuration with problems is refused whole, each problem logged, and
// the daemon goes on with the one it has.
func (r *runner) reload() {
	r.notify(sdnotify.Reloading)
	r.log.Info("SIGHUP: reloading the configuration", zap.String("config", r.cfgPath))
	next, warnings, err := config.LoadConfig(r.cfgPath, config.LoadOptions{})
	for _, w := range warnings {
		r.log.Warn("configuration warning", zap.String("warning", w))
	}
	if err == nil {
		err = r.d.Reload(next)
	}
	if err != nil {
		problems := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			problems = j.Unwrap()
		}
		for _, p := range problems {
			r.log.Error("configuration refused", zap.String("config", r.cfgPath), zap.String("problem", p.Error()))
		}
		r.log.Error("reload refused: dcvd goes on with its previous configuration; fix the problems and reload again",
			zap.Int("problems", len(problems)))
		r.refused = len(problems)
		r.notify(sdnotify.Ready)
		return
	}
	if err := r.level.UnmarshalText([]byte(next.Daemon.LogLevel)); err != nil {
		r.log.Warn("daemon.log_level: keeping the previous level", zap.Error(err))
	}
	if next.Daemon.LogFormat != r.cfg.Daemon.LogFormat {
		r.log.Warn("daemon.log_format changed: it takes effect when dcvd restarts")
	}
	r.events.Reload(next.Notify) // the channels of the configuration taken
	r.cfg, r.refused = next, 0
	r.notify(sdnotify.Ready)
}

// publishStatus sends STATUS= when it changed, and reports whether the
// state answered.
func (r *runner) publishStatus(ctx context.Context) bool {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	active, err := r.d.Store().ActiveOrders(qctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("the state does not answer", zap.Error(err))
		}
		return false
	}
	s := statusText(len(r.d.Config().Certificates), len(active), r.refused)
	if s != r.lastStatus {
		r.lastStatus = s
		r.notify(func() error { return sdnotify.Status(s) })
	}
	return true
}

// statusText is the STATUS= line: "3 certificates, 1 order in flight".
func statusText(certs, inFlight, refused int) string {
	s := plural(certs, "certificate") + ", "
	if inFlight == 0 {
		s += "no order in flight"
	} else {
		s += plural(inFlight, "order") + " in flight"
	}
	if refused > 0 {
		s += fmt.Sprintf("; last reload refused (%s, see the log), running with the previous configuration", plural(refused, "problem"))
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// stop is the end on SIGTERM or SIGINT: STOPPING=1, no new step, the
// step at work finishes, then every part has stopped.
func (r *runner) stop(cancel context.CancelFunc, ran chan error) error {
	r.notify(sdnotify.Stopping)
	r.log.Info("stopping: no new step starts; a step at work may finish first",
		zap.Duration("at_most", daemon.DefaultStopGrace))
	cancel()
	if err := r.stopped(ran); err != nil {
		return err
	}
	r.log.Info("dcvd stopped")
	return nil
}

// stopped waits, after the cancel, for the parts still running (skipping
// done, which has already reported) within the grace and a margin.
func (r *runner) stopped(done chan error) error {
	deadline := time.After(daemon.DefaultStopGrace + stopMargin)
	var errs []error
	for _, p := range r.parts {
		if p == done {
			continue
		}
		select {
		case err := <-p:
			errs = append(errs, err)
		case <-deadline:
			return fmt.Errorf("stop: work still going on %s after the stop; giving up on it", daemon.DefaultStopGrace+stopMargin)
		}
	}
	return errors.Join(errs...)
}

// newRunLogger is newLogger with its level in level, so that a reload can
// change it.
func newRunLogger(cfg *config.Config, w io.Writer, level zap.AtomicLevel) (*zap.Logger, error) {
	if err := level.UnmarshalText([]byte(cfg.Daemon.LogLevel)); err != nil && cfg.Daemon.LogLevel != "" {
		return nil, fmt.Errorf("daemon.log_level: %w", err)
	}
	all := *cfg
	all.Daemon.LogLevel = "debug"
	base, err := newLogger(&all, w)
	if err != nil {
		return nil, err
	}
	return base.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		filtered, err := zapcore.NewIncreaseLevelCore(c, level)
		if err != nil {
			return c // debug is the lowest level: cannot happen
		}
		return filtered
	})), nil
}

// dialRunning connects to the daemon running with the configuration at
// cfgPath, through its control socket; it returns nil and no error when no
// daemon runs, and the command then works on the state itself.
func dialRunning(cfgPath string) (*control.Client, error) {
	stateDir := stateDirOf(cfgPath)
	if stateDir == "" {
		return nil, nil // the full load reports what is wrong
	}
	var paths []string
	if rt := os.Getenv("RUNTIME_DIRECTORY"); rt != "" {
		socket, _ := control.SocketPaths(stateDir, rt)
		paths = append(paths, socket)
	}
	// Outside the service the link in the state directory leads to the
	// socket in the runtime directory.
	socket, _ := control.SocketPaths(stateDir, "")
	paths = append(paths, socket)
	for _, p := range paths {
		c, err := control.Dial(p)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, control.ErrNoDaemon) {
			return nil, fmt.Errorf("talk to the running daemon: %w (run this command as the daemon's user or as root)", err)
		}
	}
	return nil, nil
}

// stateDirOf reads daemon.state_dir from the configuration file without
// checking the rest, so that a running daemon is found even while its file
// is being edited; "" when the file cannot say.
func stateDirOf(cfgPath string) string {
	var f struct {
		Daemon struct {
			StateDir *string `toml:"state_dir"`
		} `toml:"daemon"`
	}
	if _, err := toml.DecodeFile(cfgPath, &f); err != nil {
		return ""
	}
	if f.Daemon.StateDir == nil {
		return config.DefaultStateDir
	}
	if !filepath.IsAbs(*f.Daemon.StateDir) {
		return ""
	}
	return filepath.Clean(*f.Daemon.StateDir)
}

// statusOf is the status from the running daemon, else from the state.
func statusOf(ctx context.Context, cfgPath string, stderr io.Writer) ([]control.CertStatus, error) {
	c, err := dialRunning(cfgPath)
	if err != nil {
		return nil, err
	}
	if c != nil {
		defer c.Close()
		return c.Status(ctx)
	}
	// Without a daemon: read the state as it is, creating nothing.
	return statusFromState(ctx, cfgPath, stderr)
}
