package fleetsim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// Delay is a simulated answer time: Base, plus or minus up to Jitter, drawn uniformly for each
// request and never below zero. The zero value answers at once.
type Delay struct {
	Base   time.Duration
	Jitter time.Duration
}

// draw returns one answer time.
func (d Delay) draw() time.Duration {
	t := d.Base
	if d.Jitter > 0 {
		t += time.Duration(rand.Int64N(int64(2*d.Jitter)+1)) - d.Jitter //nolint:gosec // G404: jitter needs spread, not secrecy
	}
	return max(t, 0)
}

// String formats d as ParseLatency reads it: "300ms" or "300ms±50ms".
func (d Delay) String() string {
	if d.Jitter > 0 {
		return d.Base.String() + "±" + d.Jitter.String()
	}
	return d.Base.String()
}

// Latency is how long the simulated Fleet API takes to answer, per route class, before writing
// anything. The real Fleet API answers in 100 ms to seconds: a command waits for the car. The zero
// value answers at once, which is what tests want.
type Latency struct {
	// Data is for reads: every GET (vehicle list, vehicle_data, telemetry config, …).
	Data Delay
	// Commands is for signed_command (commands and session handshakes alike) and REST commands.
	Commands Delay
	// Wakes is for wake_up.
	Wakes Delay
	// Other is for everything else (the signed telemetry config, DELETEs, other POSTs).
	Other Delay
}

// IsZero reports whether l adds no delay to any route.
func (l Latency) IsZero() bool { return l == Latency{} }

// String formats l as ParseLatency reads it.
func (l Latency) String() string {
	if l.Data == l.Commands && l.Data == l.Wakes && l.Data == l.Other {
		return l.Data.String()
	}
	return fmt.Sprintf("data=%s,commands=%s,wakes=%s,other=%s", l.Data, l.Commands, l.Wakes, l.Other)
}

// of returns the delay for a request on route (a route name of the router).
func (l *Latency) of(route string, r *http.Request) Delay {
	switch route {
	case "signed_command", "command":
		return l.Commands
	case "wake_up":
		return l.Wakes
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return l.Data
	}
	return l.Other
}

// ParseLatency reads a latency setting: one delay for every route class ("300ms", "300ms±50ms";
// "+-" may stand for "±"), or a comma-separated list of class=delay, classes being data,
// commands, wakes, other and all ("all=100ms,commands=300ms±100ms"; later items win). Classes not
// named answer at once. "" and "0" are no latency.
func ParseLatency(s string) (Latency, error) {
	var l Latency
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return l, nil
	}
	if !strings.Contains(s, "=") {
		d, err := parseDelay(s)
		if err != nil {
			return l, err
		}
		return Latency{Data: d, Commands: d, Wakes: d, Other: d}, nil
	}
	for item := range strings.SplitSeq(s, ",") {
		class, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			return l, fmt.Errorf("latency item %q: want class=delay, such as commands=300ms", item)
		}
		d, err := parseDelay(val)
		if err != nil {
			return l, fmt.Errorf("latency item %q: %w", item, err)
		}
		switch strings.TrimSpace(class) {
		case "data":
			l.Data = d
		case "commands":
			l.Commands = d
		case "wakes":
			l.Wakes = d
		case "other":
			l.Other = d
		case "all":
			l = Latency{Data: d, Commands: d, Wakes: d, Other: d}
		default:
			return l, fmt.Errorf("latency class %q: want data, commands, wakes, other or all", class)
		}
	}
	return l, nil
}

// parseDelay reads "300ms" or "300ms±50ms" (or "300ms+-50ms").
func parseDelay(s string) (Delay, error) {
	s = strings.TrimSpace(s)
	base, jitter, ok := strings.Cut(s, "±")
	if !ok {
		base, jitter, ok = strings.Cut(s, "+-")
	}
	var d Delay
	var err error
	if d.Base, err = time.ParseDuration(strings.TrimSpace(base)); err != nil || d.Base < 0 {
		return d, errors.New("not a delay; use a duration such as 300ms, optionally with ±jitter: 300ms±50ms")
	}
	if ok {
		if d.Jitter, err = time.ParseDuration(strings.TrimSpace(jitter)); err != nil || d.Jitter < 0 {
			return d, errors.New("not a jitter; use a duration after ±, such as 300ms±50ms")
		}
	}
	return d, nil
}
