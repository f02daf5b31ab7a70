package fleetsim

import (
	"encoding/json"
	"maps"
	"net/http"
	"time"

	"github.com/teslaproxy/proxy/internal/jws"
)

// handleTelemetryJWS is POST /api/1/vehicles/fleet_telemetry_config_jws with
// {"vins":[…],"token":"<JWS>"}. The token must verify against a trusted app key (Options.
// TrustedKeys; against its own iss when none is configured) and have aud TelemetryAudience.
// Vehicles that do not have the signing key enrolled, and VINs the simulator does not know, are
// skipped as "missing_key".
func (s *Server) handleTelemetryJWS(w http.ResponseWriter, r *http.Request, _ call) {
	var req struct {
		VINs  []string `json:"vins"`
		Token string   `json:"token"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCommandBody)).Decode(&req); err != nil || req.Token == "" {
		writeFleetError(w, http.StatusBadRequest, "invalid_request", "The body must be {\"vins\":[…],\"token\":\"<JWS>\"}.", nil)
		return
	}
	claims, ok := s.verifyTelemetryToken(req.Token)
	if !ok {
		s.countJWS(false)
		writeFleetError(w, http.StatusBadRequest, "invalid_token", "The token is not a valid Tesla.SS256 JWS from a trusted key for "+jws.TelemetryAudience+".", nil)
		return
	}
	s.countJWS(true)
	signer, err := jws.PublicKeyFromIssuer(claims["iss"].(string)) // Verify checked iss is a string naming a key
	if err != nil {
		writeFleetError(w, http.StatusBadRequest, "invalid_token", "The token's iss is not a public key.", nil)
		return
	}
	config := maps.Clone(claims)
	delete(config, "iss")
	delete(config, "aud")

	missing := []string{}
	updated := 0
	for _, vin := range req.VINs {
		v := s.Vehicle(vin)
		if v == nil || !v.IsEnrolled(signer) {
			missing = append(missing, vin)
			continue
		}
		s.mu.Lock()
		s.telemetry[vin] = maps.Clone(config)
		s.mu.Unlock()
		updated++
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{
		"updated_vehicles": updated,
		"skipped_vehicles": map[string][]string{
			"missing_key":          missing,
			"unsupported_hardware": {},
			"unsupported_firmware": {},
			"max_configs":          {},
		},
	}})
}

// verifyTelemetryToken checks the signature and the audience.
func (s *Server) verifyTelemetryToken(token string) (map[string]any, bool) {
	var claims map[string]any
	if len(s.trusted) == 0 {
		c, err := jws.Verify(token, nil)
		if err != nil {
			return nil, false
		}
		claims = c
	} else {
		for _, k := range s.trusted {
			if c, err := jws.Verify(token, k); err == nil {
				claims = c
				break
			}
		}
	}
	if claims == nil {
		return nil, false
	}
	switch aud := claims["aud"].(type) {
	case string:
		return claims, aud == jws.TelemetryAudience
	case []any:
		for _, a := range aud {
			if a == jws.TelemetryAudience {
				return claims, true
			}
		}
	}
	return nil, false
}

// TelemetryConfig returns a copy of the telemetry config stored for a VIN (the JWS claims without
// iss and aud), or nil.
func (s *Server) TelemetryConfig(vin string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.telemetry[vin])
}

// handleTelemetryGet is GET /api/1/vehicles/{vin}/fleet_telemetry_config.
func (s *Server) handleTelemetryGet(w http.ResponseWriter, _ *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{
		"synced":        true,
		"config":        s.TelemetryConfig(v.vin),
		"limit_reached": false,
		"key_paired":    true,
	}})
}

// handleTelemetryDelete is DELETE /api/1/vehicles/{vin}/fleet_telemetry_config.
func (s *Server) handleTelemetryDelete(w http.ResponseWriter, _ *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	s.mu.Lock()
	_, had := s.telemetry[v.vin]
	delete(s.telemetry, v.vin)
	s.mu.Unlock()
	n := 0
	if had {
		n = 1
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{"updated_vehicles": n}})
}

// msToDuration converts milliseconds from the control API.
func msToDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
