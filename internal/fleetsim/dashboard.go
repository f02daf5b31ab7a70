package fleetsim

import (
	"embed"
	"encoding/json"
	"io/fs"
	"math"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/metrics"
)

// The dashboard at /sim/: one page, served from files embedded in the binary (no CDN, no build
// step), that shows the cars, their last commands and the billed calls, and drives the
// simulator's controls. It follows /sim/events (server-sent events) and falls back to polling
// /sim/state.

//go:embed dashboard
var dashboardFiles embed.FS

// dashboardHandler serves /sim/ (the page) and /sim/assets/….
func dashboardHandler() http.Handler {
	sub, err := fs.Sub(dashboardFiles, "dashboard")
	if err != nil {
		panic("fleetsim: dashboard files: " + err.Error()) // the embed directive guarantees them
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-cache")
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/"
		if p := r.URL.Path; p != "/sim/" {
			r2.URL.Path = p[len("/sim/assets"):]
		}
		r2.URL.RawPath = ""
		files.ServeHTTP(w, r2)
	})
}

// DashboardState is what the dashboard shows, as GET /sim/state and each /sim/events message
// carry it.
type DashboardState struct {
	// At is the simulator clock's time of the snapshot.
	At time.Time `json:"at"`
	// Vehicles are the cars in the order they were added.
	Vehicles []DashboardVehicle `json:"vehicles"`
	// Billing is the billed calls by category, with Tesla's price per call and the estimated cost.
	Billing []BillingLine `json:"billing"`
	// TotalUSD is the estimated cost of every billed call.
	TotalUSD float64 `json:"total_usd"`
	// Upstream counts every Fleet API request, billed or not.
	Upstream int `json:"upstream"`
	// Handshakes counts session handshakes, both domains.
	Handshakes int `json:"handshakes"`
	// Rejections counts commands refused at the protocol layer.
	Rejections int `json:"rejections"`
	// SleepAfterSec and WakeTimeSec are Options.SleepAfter and Options.WakeTime in seconds.
	SleepAfterSec float64 `json:"sleep_after_sec"`
	WakeTimeSec   float64 `json:"wake_time_sec"`
}

// DashboardVehicle is one car on the dashboard.
type DashboardVehicle struct {
	VIN   string `json:"vin"`
	ID    int64  `json:"id"`
	Model string `json:"model"`
	// Status is "online", "asleep" or "waking".
	Status string `json:"status"`
	// State is the car's full simulated state.
	State CarState `json:"state"`
	// ChargingState and RangeMiles are as vehicle_data shows them.
	ChargingState string  `json:"charging_state"`
	RangeMiles    float64 `json:"range_miles"`
	// Fault is the effective fault, with Delay in milliseconds.
	Fault faultJSON `json:"fault"`
	// Recent are the car's last commands, newest first.
	Recent []Execution `json:"recent"`
}

// BillingLine is one billing category.
type BillingLine struct {
	Category string  `json:"category"`
	Calls    int     `json:"calls"`
	PerCall  float64 `json:"per_call_usd"`
	USD      float64 `json:"usd"`
}

// Dashboard returns what the dashboard shows now.
func (s *Server) Dashboard() DashboardState {
	out := DashboardState{
		At:            s.now().UTC(),
		SleepAfterSec: s.life.sleepAfter.Seconds(),
		WakeTimeSec:   s.life.wakeTime.Seconds(),
	}
	for _, v := range s.pick("") {
		st := v.State()
		status := "online"
		switch f := s.Fault(v.vin); {
		case f.Asleep:
			status = "asleep"
		case v.Waking():
			status = "waking"
		case st.Asleep:
			status = "asleep"
		}
		s.mu.Lock()
		recent := make([]Execution, 0, len(s.recent[v.vin]))
		for i := len(s.recent[v.vin]) - 1; i >= 0; i-- {
			e := s.recent[v.vin][i]
			e.Body = nil // bodies may be large and are not shown
			recent = append(recent, e)
		}
		s.mu.Unlock()
		out.Vehicles = append(out.Vehicles, DashboardVehicle{
			VIN:           v.vin,
			ID:            vehicleID(v.vin),
			Model:         specOf(st.Model).name,
			Status:        status,
			State:         st,
			ChargingState: st.chargingState(),
			RangeMiles:    round(st.BatteryLevel/100*specOf(st.Model).ratedRange, 1),
			Fault:         toFaultJSON(s.Fault(v.vin)),
			Recent:        recent,
		})
	}
	stats := s.Stats()
	for _, cat := range []string{BillingCommands, BillingData, BillingWakes} {
		n := stats.Billing[cat]
		price := metrics.Price(cat)
		usd := math.Round(float64(n)*price*1e4) / 1e4
		out.Billing = append(out.Billing, BillingLine{Category: cat, Calls: n, PerCall: price, USD: usd})
		out.TotalUSD += usd
	}
	out.TotalUSD = math.Round(out.TotalUSD*1e4) / 1e4
	out.Upstream = stats.Upstream
	for _, vs := range stats.Vehicles {
		out.Handshakes += vs.Handshakes.VCSEC + vs.Handshakes.Infotainment
	}
	for _, n := range stats.Rejections {
		out.Rejections += n
	}
	return out
}

// handleSimState is GET /sim/state.
func (s *Server) handleSimState(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Dashboard())
}

// Event stream pacing: at most one message per eventMinGap, and one every eventRefresh even when
// nothing was done (time moves: batteries charge, cabins warm, cars fall asleep).
const (
	eventMinGap  = 200 * time.Millisecond
	eventRefresh = 2 * time.Second
)

// handleSimEvents is GET /sim/events: server-sent events, one "state" event with the
// DashboardState JSON at once and after every change.
func (s *Server) handleSimEvents(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.stopEvents:
		apierr.Write(w, apierr.New(http.StatusServiceUnavailable, "shutting_down", "The simulator is shutting down."))
		return
	default:
	}
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	refresh := time.NewTicker(eventRefresh)
	defer refresh.Stop()
	for {
		changed := s.changes.next()
		b, err := json.Marshal(s.Dashboard())
		if err != nil {
			return
		}
		if _, err := w.Write(append(append([]byte("event: state\ndata: "), b...), "\n\n"...)); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.stopEvents:
			return
		case <-changed:
		case <-refresh.C:
		}
		if sleepCtx(r.Context(), eventMinGap) != nil {
			return
		}
	}
}

// StopEvents ends every open /sim/events stream, now and from now on, so that a graceful server
// shutdown does not wait for dashboards to go away. Register it with
// http.Server.RegisterOnShutdown.
func (s *Server) StopEvents() {
	s.stopOnce.Do(func() { close(s.stopEvents) })
}

// handleSimWake is POST /sim/vehicles/{vin}/wake: wake the car as wake_up does (after
// Options.WakeTime), without a billed call.
func (s *Server) handleSimWake(w http.ResponseWriter, r *http.Request) {
	v := s.Vehicle(mux.Vars(r)["vin"])
	if v == nil {
		apierr.Write(w, apierr.New(http.StatusNotFound, "unknown_vin", "No simulated vehicle has that VIN."))
		return
	}
	online := v.Wake()
	writeJSON(w, http.StatusOK, map[string]any{"vin": v.vin, "online": online})
}
