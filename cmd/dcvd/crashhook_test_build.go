//go:build crashtest

package main

import (
	"fmt"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/dcvd/dcvd/daemon/store"
)

// This file is only in a build with -tags crashtest, which the crash tests
// of internal/e2e make: with DCVD_CRASH_AT_STEP=STEP in its environment,
// the process sends itself SIGKILL as soon as an order has persisted STEP,
// before the side effect of the next one, as a power cut there would.

// envCrashAtStep names the step after which the process kills itself.
const envCrashAtStep = "DCVD_CRASH_AT_STEP"

// crashSteps are the steps the hook can stop at.
var crashSteps = []store.Step{
	store.StepNew, store.StepSubmitted, store.StepPublishing, store.StepPublished, store.StepVisible,
	store.StepRechecked, store.StepIssued, store.StepDeployed, store.StepReloaded, store.StepDone,
	store.StepFailed,
}

func init() {
	step := store.Step(os.Getenv(envCrashAtStep))
	if step == "" {
		return
	}
	// A misspelt step would never match, and the crash test would see a
	// process that did not crash without knowing why.
	if !slices.Contains(crashSteps, step) {
		fmt.Fprintf(os.Stderr, "dcvd: %s=%q is not a step (%v)\n", envCrashAtStep, step, crashSteps)
		os.Exit(2)
	}
	afterStepHook = func(o *store.Order) {
		if o.Step != step {
			return
		}
		fmt.Fprintf(os.Stderr, "dcvd: crashtest: SIGKILL after step %s of order %s\n", o.Step, o.UniqueID)
		if err := syscall.Kill(os.Getpid(), syscall.SIGKILL); err != nil {
			fmt.Fprintf(os.Stderr, "dcvd: crashtest: kill: %v\n", err)
			os.Exit(3)
		}
		// The signal takes the process down in a moment; until then this
		// goroutine must not return into the next step.
		for {
			time.Sleep(time.Hour)
		}
	}
}
