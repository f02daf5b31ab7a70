package app

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The cached clock must write exactly what zapcore.ISO8601TimeEncoder writes, across seconds,
// milliseconds, zones and years outside four digits.
func TestISOClockMatchesZapsISO8601(t *testing.T) {
	encoder := func(et zapcore.TimeEncoder) zapcore.Encoder {
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = et
		return zapcore.NewJSONEncoder(cfg)
	}
	ours, zaps := encoder(new(isoClock).encode), encoder(zapcore.ISO8601TimeEncoder)
	base := time.Date(2026, 12, 3, 13, 59, 58, 0, time.UTC)
	var times []time.Time
	for _, loc := range []*time.Location{time.UTC, time.FixedZone("CET", 3600), time.FixedZone("NST", -(3*3600 + 1800)), time.Local} {
		for _, d := range []time.Duration{0, time.Millisecond, 7 * time.Millisecond, 99*time.Millisecond + 999, 500 * time.Millisecond, 999*time.Millisecond + 999999, time.Second, 1001 * time.Millisecond, 2*time.Second + 42*time.Millisecond, -time.Millisecond} {
			times = append(times, base.Add(d).In(loc))
		}
	}
	times = append(times, time.Date(999, 1, 1, 0, 0, 0, 5e6, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 5e6, time.UTC), base)
	for _, tm := range times {
		want, err := zaps.EncodeEntry(zapcore.Entry{Time: tm, Message: "m"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ours.EncodeEntry(zapcore.Entry{Time: tm, Message: "m"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("%v: got %s want %s", tm, got.String(), want.String())
		}
	}
}
