package section

import (
	"fmt"
	"math"
	"net"
	"time"
)

// ParseDuration parses a duration in Go's syntax ("90m", "1h30m") that may
// also use "d" for days of 24 hours ("30d", "1d12h", "1.5d"). Its errors
// quote s and say what is accepted.
func ParseDuration(s string) (time.Duration, error) {
	bad := func() error {
		return fmt.Errorf("invalid duration %q: use numbers with units (ns, us, ms, s, m, h, d) such as \"90s\", \"720h\" or \"30d\"", s)
	}
	rest := s
	neg := false
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	if rest == "0" {
		return 0, nil
	}
	if rest == "" {
		return 0, bad()
	}
	isNum := func(c byte) bool { return c == '.' || ('0' <= c && c <= '9') }
	var total time.Duration
	for rest != "" {
		i := 0
		for i < len(rest) && isNum(rest[i]) {
			i++
		}
		j := i
		for j < len(rest) && !isNum(rest[j]) {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		rest = rest[j:]
		if num == "" || unit == "" {
			return 0, bad()
		}
		var d time.Duration
		if unit == "d" {
			h, err := time.ParseDuration(num + "h")
			if err != nil {
				return 0, bad()
			}
			if h > math.MaxInt64/24 {
				return 0, fmt.Errorf("invalid duration %q: too long", s)
			}
			d = 24 * h
		} else {
			var err error
			if d, err = time.ParseDuration(num + unit); err != nil {
				return 0, bad()
			}
		}
		if total > math.MaxInt64-d {
			return 0, fmt.Errorf("invalid duration %q: too long", s)
		}
		total += d
	}
	if neg {
		total = -total
	}
	return total, nil
}

// IsLoopback tells whether host (a URL's or an address's host, without
// port) names this machine: "localhost" or a loopback IP. Plain http or
// plain SMTP to such a host does not cross the network.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
