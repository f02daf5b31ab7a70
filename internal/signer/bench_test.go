package signer_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/testenv"
)

// BenchmarkSignedCommand measures signed commands with warm sessions through the whole proxy
// (client → TLS → proxy → TLS → in-process simulator, which verifies each HMAC and runs the
// command) for 1 vehicle and for 50 vehicles at once. It reports commands per second and
// upstream calls per command (1.0 when sessions stay warm).
func BenchmarkSignedCommand(b *testing.B) {
	const fleet = 50
	env := testenv.Start(b, testenv.Options{Vehicles: fleet, Logger: zap.NewNop(), Timeout: 30 * time.Second})
	for _, vin := range env.VINs {
		a, err := send(context.Background(), env, vin, "set_charge_limit", map[string]any{"percent": 80})
		if err != nil || !a.ok() {
			b.Fatalf("warming %s: %v %d %s", vin, err, a.status, a.body)
		}
	}
	for _, c := range []struct {
		name     string
		vehicles int
		// workers per GOMAXPROCS: one vehicle's commands queue behind its lock anyway; many
		// vehicles need enough clients to keep them all busy.
		parallelism int
	}{
		{"vehicles=1", 1, 1},
		{"vehicles=50", fleet, fleet},
	} {
		b.Run(c.name, func(b *testing.B) {
			vins := env.VINs[:c.vehicles]
			var next atomic.Int64
			var failed atomic.Int64
			before := env.Sim.Stats().Upstream
			b.SetParallelism(c.parallelism)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				vin := vins[int(next.Add(1)-1)%len(vins)]
				for pb.Next() {
					a, err := send(context.Background(), env, vin, "flash_lights", nil)
					if err != nil || !a.ok() {
						failed.Add(1)
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			if n := failed.Load(); n > 0 {
				b.Fatalf("%d of %d commands failed", n, b.N)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cmd/s")
			b.ReportMetric(float64(env.Sim.Stats().Upstream-before)/float64(b.N), "calls/cmd")
		})
	}
}
