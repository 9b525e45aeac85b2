package main

import (
	"github.com/dcvd/dcvd/daemon/store"
)

// afterStepHook is daemon.Options.AfterStep for every command that opens
// the daemon. It is nil in every ordinary build; only a build with the
// crashtest tag sets it (crashhook_test_build.go), so that the crash tests
// can kill a real dcvd process right after each step is persisted.
var afterStepHook func(*store.Order)
