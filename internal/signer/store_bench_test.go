package signer_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/testenv"
	"github.com/teslaproxy/proxy/internal/testenv/redistest"
)

// BenchmarkWarmCommandStore measures what the shared session store adds to a warm command: one
// replica, one vehicle with a warm session, commands one after another through the whole proxy
// (client → TLS → proxy → TLS → in-process simulator), with the embedded store and with a real
// redis-server on loopback (-session-store). It reports the p50 and p90 of one command's time,
// and store round trips per command.
//
//	go test -run '^$' -bench WarmCommandStore -benchtime 2000x ./internal/signer
func BenchmarkWarmCommandStore(b *testing.B) {
	for _, store := range []string{"embedded", "redis"} {
		b.Run("store="+store, func(b *testing.B) {
			o := testenv.Options{Vehicles: 1, Logger: zap.NewNop(), Timeout: 30 * time.Second}
			var rs *sessions.Redis
			if store == "redis" {
				srv := redistest.Start(b)
				local, err := sessions.Open(sessions.Options{})
				if err != nil {
					b.Fatal(err)
				}
				o.Key = testenv.NewKey(b)
				rs, err = sessions.OpenRedis(sessions.RedisOptions{URL: srv.URL(), Prefix: sessions.KeyPrefix(o.Key.PublicBytes()), Local: local})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = rs.Close(); _ = local.Close() })
				o.Shared = rs
			}
			env := testenv.Start(b, o)
			vin := env.VINs[0]
			for range 20 { // a session, and warm connections
				if a, err := send(context.Background(), env, vin, "flash_lights", nil); err != nil || !a.ok() {
					b.Fatalf("warming: %v %d %s", err, a.status, a.body)
				}
			}
			var trips int64
			if rs != nil {
				trips = rs.RoundTrips()
			}
			took := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				a, err := send(context.Background(), env, vin, "flash_lights", nil)
				took = append(took, time.Since(start))
				if err != nil || !a.ok() {
					b.Fatalf("command: %v %d %s", err, a.status, a.body)
				}
			}
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(took[len(took)*9/10].Microseconds()), "p90-µs")
			if rs != nil {
				b.ReportMetric(float64(rs.RoundTrips()-trips)/float64(b.N), "trips/cmd")
			}
		})
	}
}
