package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/dcvd/dcvd/daemon/config"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
)

// runRetry is "dcvd retry NAME": the order in flight of NAME is tried now,
// however far its backoff has pushed its next attempt. Through the running
// daemon when there is one (its driver is woken, or one is started); else
// the next attempt is recorded as due now in the state, for whoever drives
// the order next, and with --wait this process drives it.
func runRetry(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := commandFlags("retry", "retry NAME [--wait] [--timeout D] [--config FILE]", stdout)
	wait := fs.Bool("wait", false, "follow the order until it ends, in the foreground (as dcvd reissue --wait does)")
	timeout := fs.Duration("timeout", 30*time.Minute, "with --wait: give up after this long, the request at work included (the order stays in flight)")
	name, err := parseWithName(fs, args)
	if err != nil {
		return err
	}
	ctx, cancel := boundContext(ctx, *wait || flagGiven(fs, "timeout"), *timeout)
	defer cancel()
	c, err := dialRunning(*cfgPath)
	if err != nil {
		return err
	}
	if c != nil {
		defer c.Close()
		res, err := c.Retry(ctx, name)
		if err != nil {
			return controlFailure(ctx, name, err, *timeout)
		}
		if res.How == control.RetryElsewhere {
			return asResumable(errors.New(elsewhereMessage(name, res)))
		}
		o := res.Order
		fmt.Fprintf(stdout, "certificate %s: the running daemon tries order %s (step %s%s) now\n", name, o.UniqueID, o.Step, failuresSoFar(o))
		if !*wait {
			return nil
		}
		return followViaControl(ctx, c, name, o, *timeout, stdout, stderr)
	}

	d, done, err := openDaemonFor(ctx, *cfgPath, name, stderr)
	if err != nil {
		return err
	}
	defer done()
	res, err := d.Retry(ctx, name)
	if err != nil {
		if ctx.Err() != nil {
			return asResumable(fmt.Errorf("certificate %s: %s: %w", name, stopReason(ctx, *timeout), err))
		}
		return err
	}
	o := res.Order
	switch res.How {
	case control.RetryElsewhere:
		return asResumable(errors.New(elsewhereMessage(name, res)))
	case control.RetryWoken, control.RetryStarted:
		// Not in a process without a driver; said as it is if it happens.
		fmt.Fprintf(stdout, "certificate %s: order %s (step %s%s) is tried now\n", name, o.UniqueID, o.Step, failuresSoFar(o))
		return nil
	}
	if *wait {
		fmt.Fprintf(stderr, "certificate %s: no daemon is running: trying order %s (step %s%s) in this process now\n",
			name, o.UniqueID, o.Step, failuresSoFar(o))
		return driveHere(ctx, d, name, false, true, *timeout, stdout, stderr)
	}
	if d.Config().Store.Driver == config.StoreDriverPostgres {
		fmt.Fprintf(stdout, "certificate %s: order %s (step %s%s) is due now: the nodes of the cluster were told, and the first to look at it tries it at once (or run dcvd reissue %s --wait now)\n",
			name, o.UniqueID, o.Step, failuresSoFar(o), name)
		return nil
	}
	fmt.Fprintf(stdout, "certificate %s: order %s (step %s%s) is due now; no daemon is running: the order will be tried when dcvd run starts, or run dcvd reissue %s --wait now\n",
		name, o.UniqueID, o.Step, failuresSoFar(o), name)
	return nil
}

// failuresSoFar is ", 7 failures so far, last error: …" for an order with
// failed tries.
func failuresSoFar(o *store.Order) string {
	if o.Attempts == 0 {
		return ""
	}
	return fmt.Sprintf(", %s so far, last error: %s", plural(o.Attempts, "failure"), orNone(o.LastError))
}

// elsewhereMessage says that another node of the cluster drives the order
// and what to do about it.
func elsewhereMessage(name string, res *control.RetryResult) string {
	o := res.Order
	holder := "another node"
	if res.Holder != "" {
		holder = "node " + res.Holder
	}
	next := "its next attempt"
	if !o.NextAttempt.IsZero() {
		next = "its next attempt, " + o.NextAttempt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("certificate %s: %s of the cluster drives order %s (step %s%s) under the certificate's lease, and tries it at %s; only that node can try it sooner: run dcvd retry %s there",
		name, holder, o.UniqueID, o.Step, failuresSoFar(o), next, name)
}
