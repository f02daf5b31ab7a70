package sessions_test

import (
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/sessions"
)

// BenchmarkIdleCar measures what an idle car costs in memory: the heap in use after storing the
// records of b.N cars (both domains, as after commands to each), divided by b.N. Run it with a
// fixed count to see a fleet's size, e.g. -benchtime 1000000x.
func BenchmarkIdleCar(b *testing.B) {
	st, err := sessions.Open(sessions.Options{Size: b.N + 1})
	if err != nil {
		b.Fatal(err)
	}
	vins := make([]string, b.N)
	for i := range vins {
		vins[i] = fleetsim.NewTestVIN(i)
	}
	r := sample(1)
	r.Sessions[sessions.VCSEC] = r.Sessions[sessions.Infotainment]
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i, vin := range vins {
		r.Sessions[sessions.VCSEC].Counter = uint32(i)
		st.Put(vin, r)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	// The VIN strings were made before the measurement; count them as the cars' too.
	perCar := float64(after.HeapInuse-before.HeapInuse)/float64(b.N) + float64(len(vins[0])+16)
	b.ReportMetric(perCar, "B/car")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	runtime.KeepAlive(st)
	runtime.KeepAlive(vins)
}

// BenchmarkPersist measures what one command's persistence costs with a file: the Put, and the
// file transaction that writes it (here one per command; the Store batches them, every 200 ms by
// default), for a small and a large saved fleet. The cost must not grow with the fleet.
func BenchmarkPersist(b *testing.B) {
	for _, fleet := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("fleet=%d", fleet), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "sessions.db")
			st, err := sessions.Open(sessions.Options{Path: path, FlushDelay: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			r := sample(1)
			for i := range fleet {
				st.Put(fleetsim.NewTestVIN(i), r)
			}
			if err := st.Flush(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				r.Sessions[sessions.Infotainment].Counter = uint32(i)
				st.Put(fleetsim.NewTestVIN(i%fleet), r)
				if err := st.Flush(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
