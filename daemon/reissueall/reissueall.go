// Package reissueall reissues many certificates, a bounded number at a
// time, and reports progress as it goes: what "dcvd reissue --all" runs
// for an incident (a CA revoking certificates en masse, with a deadline),
// and what the mass-reissue benchmark measures, so that the figures are
// those of the command.
//
// The work on one certificate is a Func: the daemon's own Reissue in the
// process (InProcess), or the running daemon's, asked through its control
// socket and followed until the order ends (ViaControl).
//
// It lives beside package daemon, whose client it is (it drives Reissue or
// the control socket), not in internal/, which holds helpers below the
// daemon; and it is a package of its own, not part of cmd/dcvd, so that
// bench/massreissue runs the command's very code.
package reissueall

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/dcvd/dcvd/daemon"
	"github.com/dcvd/dcvd/daemon/control"
	"github.com/dcvd/dcvd/daemon/store"
)

// DefaultEvery is the interval of the summary lines when Options.Every is
// zero.
const DefaultEvery = 5 * time.Second

// maxFailedListed bounds the names the final summary lists: each failure
// has had its own line already.
const maxFailedListed = 20

// Func reissues the certificate name, or resumes its order in flight, and
// returns the order as it ended (or as far as it went without waiting),
// with the error that ended it.
type Func func(ctx context.Context, name string) (*store.Order, error)

// InProcess is Func for a daemon in this process: d.Reissue, which drives
// the order itself (with opt.Wait, until it ends).
func InProcess(d *daemon.Daemon, opt daemon.ReissueOptions) Func {
	return func(ctx context.Context, name string) (*store.Order, error) {
		return d.Reissue(ctx, name, opt)
	}
}

// ViaControl is Func for the daemon running on the other end of c: it asks
// the daemon to reissue name (which starts a driver in the daemon, or
// answers with the order in flight) and, with wait, asks for the order
// every poll until it ends. The order is read alone (GET /order), not with
// the status of every certificate, so that following many orders costs the
// daemon one indexed read each.
func ViaControl(c *control.Client, allowDomainRemoval, wait bool, poll time.Duration) Func {
	return func(ctx context.Context, name string) (*store.Order, error) {
		o, err := c.Reissue(ctx, name, allowDomainRemoval)
		if err != nil || !wait {
			return o, err
		}
		t := time.NewTicker(poll)
		defer t.Stop()
		for !o.Step.Terminal() {
			select {
			case <-ctx.Done():
				return o, ctx.Err()
			case <-t.C:
			}
			next, err := c.Order(ctx, o.UniqueID)
			if err != nil {
				if ctx.Err() != nil {
					return o, ctx.Err()
				}
				return o, fmt.Errorf("certificate %s: following order %s: %w", name, o.UniqueID, err)
			}
			o = next
		}
		if o.Step == store.StepFailed {
			return o, fmt.Errorf("certificate %s: order %s failed: %s", name, o.UniqueID, o.LastError)
		}
		return o, nil
	}
}

// Options say how Run goes about it.
type Options struct {
	// Concurrency is how many certificates are at work at once; less
	// than 1 means 1. "dcvd reissue --all" uses daemon.max_concurrent.
	Concurrency int
	// Wait says that the Func follows each order to its end: a
	// certificate then succeeds only when its order is done (deployed).
	// Otherwise an order started (or found in flight) is a success.
	Wait bool
	// Progress, when set, receives a line as each certificate ends, a
	// summary line every Every (ended, failed, in flight, queued,
	// elapsed, rate, ETA) and a last one when Run returns. Lines are
	// written whole, one at a time.
	Progress io.Writer
	// Every is the interval of the summary lines; zero means DefaultEvery.
	Every time.Duration

	// tick, in tests, replaces the summary ticker.
	tick <-chan time.Time
}

// Result is how one certificate ended.
type Result struct {
	Name string
	// Order is the certificate's order as last seen; nil when none was
	// started (the domain-removal guard refused, the CA was not reached).
	Order *store.Order
	// Err is why it failed; nil on success.
	Err error
	// Took is how long the certificate was at work.
	Took time.Duration
}

// Summary is what Run did.
type Summary struct {
	Total int
	// Succeeded counts the certificates done (with Wait) or whose order
	// is in flight (without).
	Succeeded int
	// Failed are the certificates that failed or did not end before ctx
	// did, in the order they ended.
	Failed []Result
	// NotStarted counts the certificates still queued when ctx ended.
	NotStarted int
	Elapsed    time.Duration
}

// OK reports whether every certificate succeeded.
func (s Summary) OK() bool { return s.Succeeded == s.Total }

// Rate is the certificates that ended (either way) per second.
func (s Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Succeeded+len(s.Failed)) / s.Elapsed.Seconds()
}

// String is the final summary line, e.g. "998 of 1000 certificates
// reissued, 2 failed, 0 not started, in 2m3s (8.1 certificates/s)", and
// the failed names.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d certificates reissued, %d failed, %d not started, in %s (%.1f certificates/s)",
		s.Succeeded, s.Total, len(s.Failed), s.NotStarted, s.Elapsed.Round(time.Millisecond), s.Rate())
	if len(s.Failed) > 0 {
		names := make([]string, 0, min(len(s.Failed), maxFailedListed))
		for i, r := range s.Failed {
			if i == maxFailedListed {
				break
			}
			names = append(names, r.Name)
		}
		fmt.Fprintf(&b, "; failed: %s", strings.Join(names, ", "))
		if len(s.Failed) > maxFailedListed {
			fmt.Fprintf(&b, " and %d more", len(s.Failed)-maxFailedListed)
		}
	}
	return b.String()
}

// Err is nil when every certificate succeeded, else an error naming how
// many did not.
func (s Summary) Err() error {
	if s.OK() {
		return nil
	}
	return fmt.Errorf("%d of %d certificates not reissued (%d failed, %d not started)",
		s.Total-s.Succeeded, s.Total, len(s.Failed), s.NotStarted)
}

// Run reissues every certificate of names with fn, at most
// opt.Concurrency at once, in the order given, and returns when each has
// ended or ctx has: the certificates not started by then are counted, and
// those at work end as fn returns them (a daemon's order stays in flight,
// to be resumed). A certificate that fails does not stop the others.
func Run(ctx context.Context, names []string, fn Func, opt Options) Summary {
	start := time.Now()
	conc := max(opt.Concurrency, 1)
	p := &progress{w: opt.Progress, total: len(names), wait: opt.Wait, start: start}

	queue := make(chan string)
	results := make(chan Result)
	var workers sync.WaitGroup
	for range min(conc, max(len(names), 1)) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for name := range queue {
				if ctx.Err() != nil {
					continue // not started: counted as such
				}
				p.started()
				began := time.Now()
				o, err := fn(ctx, name)
				results <- judge(name, o, err, opt.Wait, time.Since(began))
			}
		}()
	}
	go func() {
		defer close(queue)
		for _, name := range names {
			select {
			case queue <- name:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		workers.Wait()
		close(results)
	}()

	tick := opt.tick
	if tick == nil && opt.Progress != nil {
		every := opt.Every
		if every <= 0 {
			every = DefaultEvery
		}
		t := time.NewTicker(every)
		defer t.Stop()
		tick = t.C
	}
	sum := Summary{Total: len(names)}
	for {
		select {
		case r, ok := <-results:
			if !ok {
				// The last summary line has the final counts, so that
				// the progress log always ends with a whole tally.
				p.summary()
				sum.Elapsed = time.Since(start)
				sum.NotStarted = sum.Total - sum.Succeeded - len(sum.Failed)
				return sum
			}
			if r.Err == nil {
				sum.Succeeded++
			} else {
				sum.Failed = append(sum.Failed, r)
			}
			p.ended(r)
		case <-tick:
			p.summary()
		}
	}
}

// judge makes fn's answer a Result.
func judge(name string, o *store.Order, err error, wait bool, took time.Duration) Result {
	r := Result{Name: name, Order: o, Err: err, Took: took}
	switch {
	case err != nil && o != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		r.Err = fmt.Errorf("not done when the run ended: order %s is at step %s (last error: %s); it stays in flight, and the daemon resumes it: %w",
			o.UniqueID, o.Step, orNone(o.LastError), err)
	case err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		r.Err = fmt.Errorf("not done when the run ended: %w", err)
	case err != nil:
	case o == nil:
		r.Err = errors.New("no order came back")
	case wait && o.Step != store.StepDone:
		// Followed through the daemon, whose configuration dropped the
		// certificate meanwhile, or failed without an error.
		r.Err = fmt.Errorf("order %s ended at step %s (last error: %s)", o.UniqueID, o.Step, orNone(o.LastError))
	}
	return r
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// progress writes the progress lines and keeps the counts they show.
type progress struct {
	w     io.Writer
	total int
	wait  bool
	start time.Time

	mu       sync.Mutex
	inFlight int
	launched int // certificates handed to a worker
	ok, bad  int
}

func (p *progress) started() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight++
	p.launched++
}

// ended writes the line of one certificate that ended.
func (p *progress) ended(r Result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight--
	if r.Err == nil {
		p.ok++
	} else {
		p.bad++
	}
	if p.w == nil {
		return
	}
	width := len(fmt.Sprint(p.total))
	head := fmt.Sprintf("[%*d/%d] %s", width, p.ok+p.bad, p.total, r.Name)
	took := r.Took.Round(time.Millisecond)
	switch {
	case r.Err != nil:
		fmt.Fprintf(p.w, "%s: FAILED after %s: %v\n", head, took, r.Err)
	case r.Order.Step == store.StepDone:
		fmt.Fprintf(p.w, "%s: done in %s: serial %s deployed, valid until %s (order %s, cost %.2f)\n",
			head, took, r.Order.Serial, r.Order.NotAfter.UTC().Format(time.RFC3339), r.Order.UniqueID, r.Order.Cost)
	default:
		fmt.Fprintf(p.w, "%s: order %s at step %s after %s; the daemon carries it on\n", head, r.Order.UniqueID, r.Order.Step, took)
	}
}

// summary writes the periodic summary line.
func (p *progress) summary() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w == nil {
		return
	}
	fmt.Fprintln(p.w, summaryLine(p.ok, p.bad, p.inFlight, p.total-p.launched, time.Since(p.start)))
}

// summaryLine is e.g. "progress: 500/1000 ended (498 ok, 2 failed), 64
// in flight, 436 queued; elapsed 1m2s, 8.1 certificates/s, ETA 1m5s".
func summaryLine(ok, bad, inFlight, queued int, elapsed time.Duration) string {
	ended := ok + bad
	total := ended + inFlight + queued
	rate := 0.0
	if elapsed > 0 {
		rate = float64(ended) / elapsed.Seconds()
	}
	eta := "unknown"
	if rate > 0 {
		eta = roughly(time.Duration(float64(inFlight+queued) / rate * float64(time.Second)))
	}
	return fmt.Sprintf("progress: %d/%d ended (%d ok, %d failed), %d in flight, %d queued; elapsed %s, %.1f certificates/s, ETA %s",
		ended, total, ok, bad, inFlight, queued, roughly(elapsed), rate, eta)
}

// roughly rounds d for a progress line: tenths of a second under a minute,
// whole seconds above.
func roughly(d time.Duration) string {
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
