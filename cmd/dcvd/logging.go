package main

import (
	"fmt"
	"io"

	"github.com/dcvd/dcvd/daemon"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newLogger builds the daemon's logger from [daemon] log_format and
// log_level.
func newLogger(cfg *daemon.Config, w io.Writer) (*zap.Logger, error) {
	level := zapcore.InfoLevel
	if cfg.Daemon.LogLevel != "" {
		if err := level.Set(cfg.Daemon.LogLevel); err != nil {
			return nil, fmt.Errorf("daemon.log_level: %w", err)
		}
	}
	var enc zapcore.Encoder
	if cfg.Daemon.LogFormat == "json" {
		enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	} else {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("2006-01-02 15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level)), nil
}
