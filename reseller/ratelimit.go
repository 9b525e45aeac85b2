package reseller

import (
	"context"
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// Limiter paces a Client's requests: Do waits for it before every request
// it sends, a retried request included, so that a mass reissue stays under
// the reseller's request rate instead of being answered with HTTP 429.
type Limiter interface {
	// Wait blocks until one request may be sent, or until ctx ends, when
	// it returns an error wrapping ctx's error and no request is counted.
	// It must be safe for concurrent use.
	Wait(ctx context.Context) error
}

// NewRateLimiter returns a Limiter that lets perSecond requests a second
// through, evenly spaced (a burst of one: the reseller's counting window is
// not documented, so no two requests leave closer together than
// 1/perSecond). perSecond must be positive and finite.
func NewRateLimiter(perSecond float64) (Limiter, error) {
	if err := checkRate(perSecond); err != nil {
		return nil, err
	}
	if perSecond == 0 {
		return nil, fmt.Errorf("reseller: a rate limit of 0 requests per second lets nothing through")
	}
	return newRateLimiter(perSecond, time.Now, realTimer), nil
}

// checkRate refuses what cannot be a request rate; 0 is accepted (no limit).
func checkRate(perSecond float64) error {
	if math.IsNaN(perSecond) || math.IsInf(perSecond, 0) || perSecond < 0 {
		return fmt.Errorf("reseller: the rate limit %v is not a finite number of requests per second, 0 or more", perSecond)
	}
	return nil
}

// rateLimiter waits for reservations of a token bucket. It does not use
// rate.Limiter.Wait, which fails at once when ctx has a deadline earlier
// than the reservation: a caller with a distant deadline would then get an
// error although nothing is wrong, and an order could be failed for it.
// Here the wait simply ends with ctx.
type rateLimiter struct {
	l   *rate.Limiter
	now func() time.Time
	// timer starts a wait of d: its channel fires when d has passed, and
	// stop releases it early.
	timer func(d time.Duration) (c <-chan time.Time, stop func())
}

func newRateLimiter(perSecond float64, now func() time.Time, timer func(time.Duration) (<-chan time.Time, func())) *rateLimiter {
	return &rateLimiter{l: rate.NewLimiter(rate.Limit(perSecond), 1), now: now, timer: timer}
}

func realTimer(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTimer(d)
	return t.C, func() { t.Stop() }
}

// Wait takes the next token, sleeping until it is due.
func (r *rateLimiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := r.now()
	res := r.l.ReserveN(now, 1)
	// Never !OK: the burst is 1 and one token is asked for.
	d := res.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	c, stop := r.timer(d)
	defer stop()
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		// The token goes back, so that the requests still waiting do not
		// wait for one that is never sent.
		res.CancelAt(r.now())
		return ctx.Err()
	}
}

// limit is the rate in requests per second, for tests and String.
func (r *rateLimiter) limit() float64 { return float64(r.l.Limit()) }
