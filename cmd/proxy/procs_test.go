package main

import (
	"runtime/metrics"
	"testing"
	"time"
)

// feed gives the tuner n windows of the same load from start, one procsWindow apart, and returns
// the decisions that were not 0 with the window index they came at, and the time after the last.
func feed(t *testing.T, tu *procsTuner, start time.Time, n int, w procsWindowLoad) (map[int]int, time.Time) {
	t.Helper()
	got := map[int]int{}
	now := start
	for i := range n {
		if d := tu.observe(now, w); d != 0 {
			got[i] = d
		}
		now = now.Add(procsWindow)
	}
	return got, now
}

func TestProcsTunerDropsToOneProcessorUnderLightLoadOnly(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	light := procsWindowLoad{cores: 0.6}

	var tu procsTuner
	got, now := feed(t, &tu, start, procsDownWindows, light)
	if len(got) != 1 || got[procsDownWindows-1] != -1 {
		t.Fatalf("%d light windows: decisions %v, want one drop at the last", procsDownWindows, got)
	}

	// Idle windows count neither way: a proxy that served a little, then nothing, still drops
	// once it has seen enough light windows.
	tu = procsTuner{}
	got, now = feed(t, &tu, now, procsDownWindows-1, light)
	got2, now := feed(t, &tu, now, 100, procsWindowLoad{cores: 0})
	got3, _ := feed(t, &tu, now, 1, light)
	if len(got) != 0 || len(got2) != 0 || got3[0] != -1 {
		t.Fatalf("light, idle, light: decisions %v, %v, %v; want only the last light window to drop", got, got2, got3)
	}

	// A busy proxy, or one whose average is above the threshold, stays on the default.
	for _, cores := range []float64{0.9, procsLight + 0.01} {
		tu = procsTuner{}
		if got, _ := feed(t, &tu, start, 10*procsDownWindows, procsWindowLoad{cores: cores}); len(got) != 0 {
			t.Errorf("%.2f cores: decisions %v, want none", cores, got)
		}
	}
	// Many connections keep the default however light the load, and start the count again.
	tu = procsTuner{}
	_, now = feed(t, &tu, start, procsDownWindows-1, light)
	got, now = feed(t, &tu, now, 10*procsDownWindows, procsWindowLoad{cores: 0.3, goroutines: procsCrowd + 1})
	got2, _ = feed(t, &tu, now, procsDownWindows, light)
	if len(got) != 0 || len(got2) != 1 || got2[procsDownWindows-1] != -1 {
		t.Errorf("light windows around crowded ones: decisions %v, then %v; want none, then a drop after a whole second", got, got2)
	}

	// One busy window among light ones keeps the average above the threshold for a while.
	tu = procsTuner{}
	_, now = feed(t, &tu, start, procsDownWindows-1, procsWindowLoad{cores: 0.5})
	if got, _ := feed(t, &tu, now, 1, procsWindowLoad{cores: 9}); len(got) != 0 {
		t.Errorf("a window at 9 cores after light ones: decisions %v, want none", got)
	}
}

func TestProcsTunerGoesBackUpWhenTheProcessorIsBusy(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name string
		busy procsWindowLoad
		up   bool
	}{
		{"processor busy", procsWindowLoad{cores: 0.95}, true},
		{"goroutines wait for it", procsWindowLoad{cores: 0.5, waits: 200, waitP90: 2 * time.Millisecond}, true},
		{"short waits", procsWindowLoad{cores: 0.5, waits: 200, waitP90: 100 * time.Microsecond}, false},
		{"too few waits to tell", procsWindowLoad{cores: 0.5, waits: 5, waitP90: 2 * time.Millisecond}, false},
		{"connections pile up", procsWindowLoad{cores: 0.3, goroutines: procsCrowd + 1}, true},
		{"a few connections", procsWindowLoad{cores: 0.3, goroutines: procsCrowd}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tu := procsTuner{one: true}
			// A single busy window is not enough; a calm one in between starts the count again.
			got, now := feed(t, &tu, start, 1, tc.busy)
			got2, now := feed(t, &tu, now, 1, procsWindowLoad{cores: 0.3})
			got3, _ := feed(t, &tu, now, procsUpWindows, tc.busy)
			if len(got) != 0 || len(got2) != 0 {
				t.Fatalf("busy then calm: decisions %v, %v, want none", got, got2)
			}
			want := map[int]int{}
			if tc.up {
				want[procsUpWindows-1] = 1
			}
			if len(got3) != len(want) || got3[procsUpWindows-1] != want[procsUpWindows-1] {
				t.Fatalf("%d windows like it in a row: decisions %v, want %v", procsUpWindows, got3, want)
			}
		})
	}
}

// A load near the threshold must not switch back and forth: going up soon after a drop holds the
// next drop off, for twice as long each time, up to procsHoldMax.
func TestProcsTunerHoldsOffAfterFlapping(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	light := procsWindowLoad{cores: 0.6}
	busy := procsWindowLoad{cores: 0.95}
	var tu procsTuner
	var got map[int]int
	wantHold := procsHoldMin
	for round := range 8 {
		// Light windows until it drops; count how long that took.
		from := now
		dropped := false
		for !dropped && now.Sub(from) < 2*procsHoldMax {
			if tu.observe(now, light) == -1 {
				dropped = true
			}
			now = now.Add(procsWindow)
		}
		if !dropped {
			t.Fatalf("round %d: no drop within %v", round, 2*procsHoldMax)
		}
		waited := now.Sub(from)
		if round > 0 {
			// It waited for the hold, not only for its window of light load.
			if waited < tu.hold {
				t.Fatalf("round %d: dropped after %v, within the hold of %v", round, waited, tu.hold)
			}
		}
		// Busy at once: back up within procsFlap of the drop.
		got, now = feed(t, &tu, now, procsUpWindows, busy)
		if got[procsUpWindows-1] != 1 {
			t.Fatalf("round %d: busy windows after the drop: decisions %v, want up", round, got)
		}
		if tu.hold != wantHold {
			t.Fatalf("round %d: hold %v after flapping, want %v", round, tu.hold, wantHold)
		}
		wantHold = min(2*wantHold, procsHoldMax)
	}

	// Once a drop lasts longer than procsFlap, the hold is forgotten.
	for tu.observe(now, light) != -1 {
		now = now.Add(procsWindow)
	}
	_, now = feed(t, &tu, now.Add(procsWindow), int(procsFlap/procsWindow)+1, procsWindowLoad{cores: 0.3})
	if got, _ = feed(t, &tu, now, procsUpWindows, busy); got[procsUpWindows-1] != 1 {
		t.Fatalf("busy after a long calm drop: decisions %v, want up", got)
	}
	if tu.hold != 0 {
		t.Fatalf("hold %v after a drop that lasted longer than procsFlap, want 0", tu.hold)
	}
}

func TestHistogramDelta(t *testing.T) {
	us := func(n float64) float64 { return n / 1e6 }
	h := &metrics.Float64Histogram{
		Buckets: []float64{0, us(10), us(100), us(1000), us(10000)},
		Counts:  []uint64{100, 50, 20, 5},
	}
	if p, n := histogramDelta(h, nil); p != 0 || n != 0 {
		t.Errorf("first read: %v, %d; want nothing", p, n)
	}
	// The window added 80 waits under 10 µs, 10 in [10, 100) µs and 10 in [100, 1000) µs: the
	// 90th percentile falls in the second bucket.
	prev := []uint64{20, 40, 10, 5}
	if p, n := histogramDelta(h, prev); p != 10*time.Microsecond || n != 100 {
		t.Errorf("p90 %v over %d waits, want 10µs over 100", p, n)
	}
	// 70 waits under 10 µs and 20 in [100, 1000) µs: it falls in the third bucket.
	prev = []uint64{30, 50, 0, 5}
	if p, n := histogramDelta(h, prev); p != 100*time.Microsecond || n != 90 {
		t.Errorf("p90 %v over %d waits, want 100µs over 90", p, n)
	}
	if p, n := histogramDelta(h, h.Counts); p != 0 || n != 0 {
		t.Errorf("no new waits: %v, %d; want nothing", p, n)
	}
}

// The meter reads the process's own CPU time (a goroutine spinning through the window shows) and
// its goroutines.
func TestProcsMeterSeesCPUTime(t *testing.T) {
	m := newProcsMeter()
	deadline := time.Now().Add(100 * time.Millisecond)
	n := 0
	for time.Now().Before(deadline) {
		n++
	}
	w := m.read(time.Now())
	if w.cores <= 0 {
		t.Fatalf("a window spent spinning (%d turns) measured %.3f cores", n, w.cores)
	}
	if w.goroutines == 0 {
		t.Fatal("the meter counted no goroutines, not even its own test's")
	}
}
