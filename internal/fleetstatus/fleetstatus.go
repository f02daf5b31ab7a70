// Package fleetstatus learns from the fleet_status answers apps fetch anyway which cars predate
// the Vehicle Command Protocol. POST /api/1/vehicles/fleet_status answers, per VIN,
// "vehicle_command_protocol_required"; a car that does not need it (a pre-2021 Model S or X)
// refuses signed_command with 422, a billed round trip the signer otherwise needs to find out.
package fleetstatus

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Path is the fleet_status route.
const Path = "/api/1/vehicles/fleet_status"

// maxBody bounds how much of an answer is kept to be read; a larger one is passed on unread.
const maxBody = 1 << 20

// markTimeout bounds how long recording the marks may wait for the cars' turns.
const markTimeout = 2 * time.Second

// Marker records whether a car lacks the protocol (signer.Signer).
type Marker interface {
	MarkLegacy(ctx context.Context, vin string, legacy bool) (bool, error)
}

// Learn returns next, reading each successful fleet_status answer on its way to the client and
// telling m what it says about each car. onLegacy, when not nil, is told about each car newly
// marked as lacking the protocol.
func Learn(next http.Handler, m Marker, onLegacy func(), log *zap.Logger) http.Handler {
	if log == nil {
		log = zap.NewNop()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != Path {
			next.ServeHTTP(w, r)
			return
		}
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status != http.StatusOK || rec.over || r.Context().Err() != nil {
			return
		}
		learnFrom(r.Context(), w.Header(), rec.body, m, onLegacy, log)
	})
}

// learnFrom reads a successful fleet_status answer and tells m what it says about each car. It
// is a function of its own so that the handler's frame, which every pass-through request holds
// while it waits for the Fleet API, stays small (see server.handshakeListener); inlined, its locals
// would be back in that frame.
//
//go:noinline
func learnFrom(ctx context.Context, header http.Header, body []byte, m Marker, onLegacy func(), log *zap.Logger) {
	var answer struct {
		Response struct {
			VehicleInfo map[string]struct {
				Required *bool `json:"vehicle_command_protocol_required"`
			} `json:"vehicle_info"`
		} `json:"response"`
	}
	if header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return
		}
		if body, err = io.ReadAll(io.LimitReader(zr, maxBody)); err != nil {
			return
		}
	}
	if json.Unmarshal(body, &answer) != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, markTimeout)
	defer cancel()
	for vin, info := range answer.Response.VehicleInfo {
		if info.Required == nil {
			continue
		}
		changed, err := m.MarkLegacy(ctx, vin, !*info.Required)
		if err != nil {
			log.Debug("could not record a car's protocol support", zap.String("vin", vin), zap.Error(err))
			continue
		}
		if changed {
			log.Info("fleet_status: car support for signed commands recorded", zap.String("vin", vin), zap.Bool("signed_commands", *info.Required))
			if !*info.Required && onLegacy != nil {
				onLegacy()
			}
		}
	}
}

// recorder passes an answer on and keeps a copy of its body, up to maxBody.
type recorder struct {
	http.ResponseWriter
	status int
	body   []byte
	over   bool
}

// WriteHeader records the first final status and the headers sent with it, and passes them on.
func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 && code >= 200 {
		rec.status = code
	}
	rec.ResponseWriter.WriteHeader(code)
}

// Write passes p on and keeps a copy while the copy stays within its bound.
func (rec *recorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if !rec.over {
		if len(rec.body)+len(p) > maxBody {
			rec.over, rec.body = true, nil
		} else {
			rec.body = append(rec.body, p...)
		}
	}
	return rec.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the client's writer.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }
