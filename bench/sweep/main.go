// Command sweep is the whole-process figure of dcvd's renewal check, the
// counterpart of one "certbot renew": it starts as "dcvd run" does (reads
// the configuration, opens the state), runs the first renewal check over
// every configured certificate, and exits as soon as that check is done.
// It serves nothing and starts no listener that the configuration does not
// ask for; with no certificate due it makes no API call.
//
//	go build -o /tmp/dcvd-sweep ./bench/sweep
//	/tmp/dcvd-sweep --config /etc/dcvd/config.toml
//
// It prints one line on stdout: the number of certificates configured, of
// live certificates in the state and of orders in flight after the check
// (0 when none was due), the time to
// load the configuration, to open the daemon (state, API client), from the
// daemon being ready (listeners up) to the end of its first check, and of
// the whole run inside the process (those, and closing the daemon); time
// it from outside for the process's start-up too (bench/certbot.sh does). On a first run
// the check adopts the certificates found in the deploy directories, which
// writes one row each: bench/certbot.sh runs it once before timing it.
//
// The end of the first check is read from the daemon's log: Run logs "next
// renewal check" right after each check, and nothing else tells it from
// outside the package. If that message changes, this command fails rather
// than report a wrong figure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/config"
)

// checkDoneMessage is what Daemon.Run logs (at info) after each renewal
// check.
const checkDoneMessage = "next renewal check"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sweep:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	start := time.Now()
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/dcvd/config.toml", "the dcvd configuration file")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up when the first check has not ended after this long")
	verbose := fs.Bool("v", false, "log the daemon's warnings and errors to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, _, err := config.LoadConfig(*cfgPath, config.LoadOptions{})
	if err != nil {
		return fmt.Errorf("load %s: %w", *cfgPath, err)
	}
	loaded := time.Now()

	checked := make(chan struct{})
	var once sync.Once
	var out zapcore.Core = zapcore.NewNopCore()
	if *verbose {
		out = zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(stderr), zapcore.WarnLevel)
	}
	log := zap.New(zapcore.NewTee(out, doneCore{func() { once.Do(func() { close(checked) }) }}))

	d, err := daemon.New(ctx, cfg, daemon.Options{Log: log})
	if err != nil {
		return fmt.Errorf("open the daemon: %w", err)
	}
	opened := time.Now()
	runCtx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(runCtx) }()

	var ready time.Time
	select {
	case <-d.Running():
		ready = time.Now()
	case err := <-ran:
		d.Close()
		return fmt.Errorf("the daemon stopped before it was ready: %w", err)
	}
	var checkErr error
	select {
	case <-checked:
	case err := <-ran:
		ran <- err
		checkErr = fmt.Errorf("the daemon stopped before its first check ended (%v), or it no longer logs %q", err, checkDoneMessage)
	case <-runCtx.Done():
		checkErr = fmt.Errorf("the first check has not ended after %s: %w", *timeout, runCtx.Err())
	}
	checkTime := time.Since(ready)
	cancel()
	runErr := <-ran
	stopped := time.Now()
	// What the check left: every certificate live (adopted if need be),
	// and no order started if none was due.
	var live, inFlight int
	if checkErr == nil {
		qctx, qcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		certs, err := d.Store().Certificates(qctx)
		active, err2 := d.Store().ActiveOrders(qctx)
		qcancel()
		if err := errors.Join(err, err2); err != nil {
			checkErr = fmt.Errorf("read the state after the check: %w", err)
		}
		live, inFlight = len(certs), len(active)
	}
	closing := time.Now()
	if err := d.Close(); err != nil {
		return errors.Join(checkErr, fmt.Errorf("close the daemon: %w", err))
	}
	// The reads above are this command's, not the daemon's work.
	inProcess := stopped.Sub(start) + time.Since(closing)
	if checkErr != nil {
		return checkErr
	}
	if runErr != nil {
		return fmt.Errorf("the daemon: %w", runErr)
	}
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 3, 64) }
	fmt.Fprintf(stdout, "certificates=%d live=%d in_flight=%d config_ms=%s open_ms=%s check_ms=%s in_process_ms=%s\n",
		len(cfg.Certificates), live, inFlight, ms(loaded.Sub(start)), ms(opened.Sub(loaded)), ms(checkTime), ms(inProcess))
	return nil
}

// doneCore is a zap core that writes nothing and calls done when the
// daemon logs checkDoneMessage.
type doneCore struct{ done func() }

func (doneCore) Enabled(l zapcore.Level) bool        { return l >= zapcore.InfoLevel }
func (c doneCore) With([]zapcore.Field) zapcore.Core { return c }
func (doneCore) Write(zapcore.Entry, []zapcore.Field) error {
	return nil
}
func (doneCore) Sync() error { return nil }

func (c doneCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if e.Message == checkDoneMessage {
		c.done()
	}
	return ce
}
