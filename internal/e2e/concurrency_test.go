package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/testenv"
)

// TestConcurrentTelemetryConfigs signs many telemetry configs at once through the proxy, from
// several goroutines. Every one must be answered 200 and every JWS must verify at the simulator.
// Under -race it found that vehicle-command's Schnorr signer shares a package-level modulus its
// math library writes to; internal/jws now serializes the calls.
func TestConcurrentTelemetryConfigs(t *testing.T) {
	const workers, each = 8, 5
	withoutLeaks(t, "concurrent", func(t *testing.T) {
		env := testenv.Start(t, testenv.Options{Vehicles: 2, Logger: zap.NewNop()})
		body := telemetryBody(fmt.Sprintf(`[%q,%q]`, env.VINs[0], env.VINs[1]), goodConfigJSON())
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					req, _ := http.NewRequest("POST", env.URL+"/api/1/vehicles/fleet_telemetry_config", bytes.NewReader(body))
					req.Header.Set("Authorization", "Bearer "+env.Token)
					resp, err := env.Client.Do(req)
					if err != nil {
						errs <- err
						continue
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						errs <- fmt.Errorf("%d %s", resp.StatusCode, b)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		st := env.Sim.Stats()
		if st.JWSAccepted != workers*each || st.JWSRejected != 0 {
			t.Errorf("simulator accepted %d and rejected %d JWS, want %d and 0", st.JWSAccepted, st.JWSRejected, workers*each)
		}
	})
}
