package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/buffer"
	"go.uber.org/zap/zapcore"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/providers"
)

// newLogger builds the daemon's logger from [daemon] log_format and
// log_level. When w is the journal's stream (dcvd run under systemd), each
// line starts with its syslog priority, which journald takes as the
// entry's priority (sd-daemon(3)), so that journalctl -p err shows the
// errors; the text format then leaves out the time, which journald records
// itself.
func newLogger(cfg *config.Config, w io.Writer) (*zap.Logger, error) {
	return newLoggerFor(cfg, w, toJournal(w))
}

func newLoggerFor(cfg *config.Config, w io.Writer, journal bool) (*zap.Logger, error) {
	level := zapcore.InfoLevel
	if cfg.Daemon.LogLevel != "" {
		if err := level.Set(cfg.Daemon.LogLevel); err != nil {
			return nil, fmt.Errorf("daemon.log_level: %w", err)
		}
	}
	var enc zapcore.Encoder
	if cfg.Daemon.LogFormat == "json" {
		ec := zap.NewProductionEncoderConfig()
		// RFC 3339 with milliseconds and the zone, not the default
		// seconds since the epoch: log shippers and people read it alike.
		// JSON keeps its time under the journal too: what reads the JSON
		// may not read journald's fields.
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("2006-01-02T15:04:05.000Z07:00")
		enc = zapcore.NewJSONEncoder(ec)
	} else {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("2006-01-02 15:04:05.000")
		if journal {
			ec.TimeKey = ""
		}
		enc = zapcore.NewConsoleEncoder(ec)
	}
	if journal {
		enc = priorityEncoder{enc}
	}
	log := zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level))
	progressLog.Store(log)
	return log, nil
}

// toJournal says whether w is connected to the journal: systemd sets
// JOURNAL_STREAM to the device and inode of the stream it gave the
// service's stdout and stderr, and sd-daemon(3) asks to compare them, so
// that a command run from a shell inside the service (whose stderr is a
// terminal) still logs plainly.
func toJournal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	return sameStream(os.Getenv("JOURNAL_STREAM"), f)
}

func sameStream(env string, f *os.File) bool {
	devStr, inoStr, ok := strings.Cut(env, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devStr, 10, 64)
	ino, err2 := strconv.ParseUint(inoStr, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// syslogPriority is the syslog(3) priority of a zap level.
func syslogPriority(l zapcore.Level) int {
	switch {
	case l <= zapcore.DebugLevel:
		return 7 // LOG_DEBUG
	case l == zapcore.InfoLevel:
		return 6 // LOG_INFO
	case l == zapcore.WarnLevel:
		return 4 // LOG_WARNING
	case l == zapcore.ErrorLevel:
		return 3 // LOG_ERR
	}
	return 2 // LOG_CRIT: DPanic, Panic, Fatal
}

// priorityEncoder starts every line with "<N>", N the entry's syslog
// priority, as journald reads it from a service's output. A line of an
// entry that spans several (a message with newlines) gets the same
// prefix, since journald makes an entry of each line.
type priorityEncoder struct{ zapcore.Encoder }

func (e priorityEncoder) Clone() zapcore.Encoder { return priorityEncoder{e.Encoder.Clone()} }

func (e priorityEncoder) EncodeEntry(ent zapcore.Entry, fields []zapcore.Field) (*buffer.Buffer, error) {
	inner, err := e.Encoder.EncodeEntry(ent, fields)
	if err != nil {
		return nil, err
	}
	defer inner.Free()
	prefix := "<" + strconv.Itoa(syslogPriority(ent.Level)) + ">"
	out := bufferPool.Get()
	body := strings.TrimSuffix(inner.String(), "\n")
	for _, line := range strings.Split(body, "\n") {
		out.AppendString(prefix)
		out.AppendString(line)
		out.AppendByte('\n')
	}
	return out, nil
}

var bufferPool = buffer.NewPool()

// progressLog is the logger of the process's daemon, which the
// propagation progress of its DNS waits goes to (see logPropagation).
var progressLog atomic.Pointer[zap.Logger]

// logPropagation logs a DNS propagation wait that is still going: which
// nameservers lag and what they answered last, so that a wait of minutes
// shows what it waits for. main sets it on the command's context, which
// the daemon's waits inherit.
func logPropagation(p providers.Progress) {
	log := progressLog.Load()
	if log == nil {
		return
	}
	log.Info("DNS propagation: waiting for nameservers",
		zap.String("zone", p.Zone),
		zap.Duration("elapsed", p.Elapsed.Round(time.Second)),
		zap.Int("lagging", lagServers(p.Lagging)),
		zap.Int("servers", p.Servers),
		zap.Strings("still", p.Lagging))
}
