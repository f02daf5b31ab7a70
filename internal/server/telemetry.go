package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/jws"
	"github.com/teslaproxy/proxy/internal/vehicleid"
)

// PathTelemetryJWS is where a signed telemetry config goes upstream.
const PathTelemetryJWS = "/api/1/vehicles/fleet_telemetry_config_jws"

// Telemetry serves POST /api/1/vehicles/fleet_telemetry_config: it checks the config, signs it
// with the command key into a Tesla.SS256 JWS and posts {"vins":[…],"token":"…"} to the Fleet
// API's fleet_telemetry_config_jws endpoint, relaying the answer unchanged.
type Telemetry struct {
	Key     protocol.ECDHPrivateKey
	Forward *forward.Forwarder
	// MaxBodyBytes bounds the request body; larger bodies get 413.
	MaxBodyBytes int64
	Logger       *zap.Logger
	// Now returns the time "exp" must lie after; nil means time.Now.
	Now func() time.Time
	// VIN, when not nil, turns a numeric vehicle id in "vins" into the vehicle's VIN (see
	// vehicleid.Resolver.VIN). Nil refuses numeric ids with 400.
	VIN func(ctx context.Context, id string) (string, error)
}

// ServeHTTP implements http.Handler.
func (t *Telemetry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := t.serve(w, r); err != nil {
		e := apierr.Write(w, err)
		if t.Logger != nil && e.Code >= 500 {
			t.Logger.Warn("telemetry config failed", zap.Int("status", e.Code), zap.Error(e))
		}
	}
}

func (t *Telemetry) serve(w http.ResponseWriter, r *http.Request) error {
	body, err := apierr.ReadBody(w, r, t.MaxBodyBytes)
	if err != nil {
		return err
	}
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	req, err := jws.ParseTelemetryRequest(body, now())
	if err != nil {
		return err
	}
	for i, v := range req.VINs {
		if len(v) == 17 {
			continue
		}
		// A numeric vehicle id: the Fleet API's JWS endpoint takes VINs.
		if t.VIN == nil {
			return apierr.New(http.StatusBadRequest, jws.ErrorWord, fmt.Sprintf("vins[%d] is a numeric vehicle id; give the vehicle's 17-character VIN", i))
		}
		if req.VINs[i], err = t.VIN(r.Context(), v); err != nil {
			var re *vehicleid.ReplyError
			if errors.As(err, &re) {
				re.Reply.Write(w)
				return nil
			}
			return err
		}
	}
	token, overwritten, err := jws.SignTelemetryConfig(t.Key, req.Config)
	if err != nil {
		return apierr.Wrap(err, http.StatusInternalServerError, "signing_failed", "The proxy could not sign the configuration; see its log.")
	}
	out, err := json.Marshal(struct {
		VINs  []string `json:"vins"`
		Token string   `json:"token"`
	}{req.VINs, token})
	if err != nil {
		return apierr.Wrap(err, http.StatusInternalServerError, "internal_error", "The proxy could not build the upstream request.")
	}
	reply, err := t.Forward.Call(r.Context(), http.MethodPost, PathTelemetryJWS, out, nil)
	if err != nil {
		return err
	}
	if len(overwritten) > 0 {
		// The Fleet API's answer is relayed untouched; the note rides in a header.
		w.Header().Add("Warning", fmt.Sprintf(`299 tesla-proxy "config.%s was overwritten: the proxy sets iss and aud when it signs"`,
			strings.Join(overwritten, " and config.")))
	}
	reply.Write(w)
	return nil
}

var _ http.Handler = (*Telemetry)(nil)
