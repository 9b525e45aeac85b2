package config

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

func FormatDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// scheduleHorizon is how far ahead a schedule must fire at least once: a
// cron expression that matches no real date (30 February, 31 April) makes
// robfig/cron's Next return the zero time, and one that fires once in
// years checks nothing in the meantime.
const scheduleHorizon = 366 * 24 * time.Hour

// ParseSchedule parses daemon.schedule (a standard 5-field cron expression
// or a descriptor such as "@hourly") and refuses one that has no run in
// the year after now.
func ParseSchedule(expr string, now time.Time) (cron.Schedule, error) {
	sched, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, fmt.Errorf("%q is not a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. %q): %w", expr, DefaultSchedule, err)
	}
	next := sched.Next(now)
	if next.IsZero() || next.Sub(now) > scheduleHorizon {
		return nil, fmt.Errorf("%q has no run in the next year (does it name a day that does not exist, such as 30 February?): renewal checks would never run", expr)
	}
	return sched, nil
}
