package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// reload is Reload with the directory locked.
func (d *Deployer) reload(ctx context.Context, t *resolved, b Bundle) error {
	if t.reload == "" {
		return nil
	}
	log := d.log().With(zap.String("cert", b.Cert), zap.String("command", t.reload))
	rctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	run := d.Run
	if run == nil {
		run = d.runShell
	}
	out, err := run(rctx, t.reload, reloadEnv(t, b))
	out = deployTail(out, reloadOutputMax)
	if err == nil {
		log.Info("reload command succeeded", zap.String("output", out))
		return nil
	}
	log.Warn("reload command failed", zap.Error(err), zap.String("output", out))
	var quoted string
	if last := reloadLastLines(out); last != "" {
		quoted = fmt.Sprintf("; last output: %q", last)
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("reload certificate %s: command %q interrupted: %w%s", b.Cert, t.reload, ctx.Err(), quoted)
	case rctx.Err() != nil:
		return fmt.Errorf("reload certificate %s: command %q timed out after %s, its process group was killed (%w)%s",
			b.Cert, t.reload, t.timeout, err, quoted)
	default:
		return fmt.Errorf("reload certificate %s: command %q failed: %w%s", b.Cert, t.reload, err, quoted)
	}
}

// reloadEnv is the reload command's whole environment (see Reload).
func reloadEnv(t *resolved, b Bundle) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = ReloadPath
	}
	env := []string{"PATH=" + path}
	for _, k := range []string{"HOME", "LANG", "LC_ALL", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	notAfter := ""
	if !b.NotAfter.IsZero() {
		notAfter = b.NotAfter.UTC().Format(time.RFC3339)
	}
	return append(env,
		"DCVD_CERT_NAME="+b.Cert,
		"DCVD_DEPLOY_DIR="+t.dir,
		"DCVD_CERT_PATH="+filepath.Join(t.dir, CertFile),
		"DCVD_CHAIN_PATH="+filepath.Join(t.dir, ChainFile),
		"DCVD_FULLCHAIN_PATH="+filepath.Join(t.dir, FullchainFile),
		"DCVD_KEY_PATH="+filepath.Join(t.dir, KeyFile),
		"DCVD_DOMAINS="+strings.Join(b.Names, " "),
		"DCVD_SERIAL="+b.Serial,
		"DCVD_NOT_AFTER="+notAfter,
	)
}

// runShell is the default Run: /bin/sh -c command in a new process group,
// so that on timeout the command and everything it started are killed,
// not only the shell.
func (d *Deployer) runShell(ctx context.Context, command string, env []string) (string, error) {
	out := &reloadOutput{max: reloadOutputMax}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// With Setpgid the group's id is the shell's pid.
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if errors.Is(err, syscall.ESRCH) {
			return os.ErrProcessDone
		}
		return err
	}
	cmd.WaitDelay = reloadWaitDelay
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// The command succeeded; something it started (a daemon that did
		// not close its inherited output) is not ours to judge.
		d.log().Warn("the reload command exited 0 but left its output open; no longer reading it",
			zap.String("command", command))
		err = nil
	}
	return out.String(), err
}

// reloadOutput keeps the last max bytes written to it.
type reloadOutput struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int64
}

func (o *reloadOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(p)
	if len(p) > o.max {
		o.dropped += int64(len(p) - o.max)
		p = p[len(p)-o.max:]
	}
	if over := len(o.buf) + len(p) - o.max; over > 0 {
		o.dropped += int64(over)
		o.buf = o.buf[:copy(o.buf, o.buf[over:])]
	}
	o.buf = append(o.buf, p...)
	return n, nil
}

func (o *reloadOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dropped > 0 {
		return fmt.Sprintf("[%d earlier bytes not kept]\n%s", o.dropped, o.buf)
	}
	return string(o.buf)
}

// deployTail bounds output a replaced Run returned.
func deployTail(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	return fmt.Sprintf("[%d earlier bytes not kept]\n%s", len(s)-limit, s[len(s)-limit:])
}

// reloadLastLines is the end of the output, as quoted in errors.
func reloadLastLines(out string) string {
	out = strings.TrimRight(out, " \t\r\n")
	lines := strings.Split(out, "\n")
	if len(lines) > reloadErrorLines {
		lines = lines[len(lines)-reloadErrorLines:]
	}
	s := strings.Join(lines, "\n")
	if len(s) > reloadErrorBytes {
		s = "…" + s[len(s)-reloadErrorBytes:]
	}
	return s
}
