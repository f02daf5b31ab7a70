package fleetsim

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/gorilla/mux"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"

	"github.com/teslaproxy/proxy/internal/apierr"
)

// Texts of the Fleet API answers the simulator imitates.
const (
	// textAsleep contains "vehicle is offline", which vehicle-command's inet connector matches in
	// a 408 body to return ErrVehicleNotAwake.
	textAsleep = "vehicle unavailable: vehicle is offline or asleep"
	// textVCPRequired is the REST command answer for vehicles that need the Vehicle Command
	// Protocol (vehicle-command issue #39).
	textVCPRequired = "Tesla Vehicle Command Protocol required, please refer to the documentation here: https://developer.tesla.com/docs/fleet-api#2023-10-09-rest-api-vehicle-commands-endpoint-deprecation-warning"
	// textNoProtocol is the 422 answer of signed_command for a vehicle without the protocol.
	textNoProtocol = "vehicle does not support signed commands"
)

// handleSignedCommand is POST /api/1/vehicles/{vin}/signed_command.
func (s *Server) handleSignedCommand(w http.ResponseWriter, r *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	f := c.f
	switch {
	case s.refuseAsleep(w, v, f):
		return
	case f.Legacy:
		s.countInjected("legacy")
		writeFleetError(w, http.StatusUnprocessableEntity, textNoProtocol, "", nil)
		return
	}

	var body struct {
		RoutableMessage string `json:"routable_message"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCommandBody)).Decode(&body); err != nil {
		writeFleetError(w, http.StatusBadRequest, "invalid_request", "The body must be {\"routable_message\":\"<base64>\"}.", nil)
		return
	}
	raw, err := base64.StdEncoding.DecodeString(body.RoutableMessage)
	var msg universal.RoutableMessage
	if err == nil {
		err = proto.Unmarshal(raw, &msg)
	}
	if err != nil || body.RoutableMessage == "" {
		writeFleetError(w, http.StatusBadRequest, "invalid_request", "routable_message must be a standard base64 RoutableMessage.", nil)
		return
	}

	res, err := v.handle(&msg, f)
	if errors.Is(err, errEncryptedCommand) {
		writeFleetError(w, http.StatusBadRequest, "invalid_command", err.Error(), nil)
		return
	}
	if err != nil {
		s.log.Error("handle routable message", zap.String("vin", v.vin), zap.Error(err))
		writeFleetError(w, http.StatusInternalServerError, "internal_error", "", nil)
		return
	}
	s.countMessage(v.vin, res)
	if res.exec != nil {
		s.record(*res.exec)
		if res.refused {
			s.countInjected("refused")
		}
		if code := f.FailAfterExecution; code != 0 {
			s.countInjected("fail_after_execution")
			writeFleetError(w, code, strings.ToLower(http.StatusText(code)), "", nil)
			return
		}
	}
	encoded, err := proto.Marshal(res.reply)
	if err != nil {
		s.log.Error("marshal reply", zap.String("vin", v.vin), zap.Error(err))
		writeFleetError(w, http.StatusInternalServerError, "internal_error", "", nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"response": base64.StdEncoding.EncodeToString(encoded)})
}

// countMessage updates the per-vehicle counters for one handled RoutableMessage.
func (s *Server) countMessage(vin string, res result) {
	d := domainName(res.domain)
	bump := func(c *DomainCounts) {
		switch d {
		case DomainVCSEC:
			c.VCSEC++
		case DomainInfotainment:
			c.Infotainment++
		}
	}
	s.countVehicle(vin, func(vs *VehicleStats) {
		if res.handshake {
			bump(&vs.Handshakes)
		}
		if res.command {
			bump(&vs.Commands)
		}
		if res.exec != nil {
			bump(&vs.Executed)
		}
	})
	if res.rejection != "" {
		s.countRejection(vin, res.rejection)
	}
}

// serverSideCommands are REST commands the Fleet API still takes from every vehicle, because
// Tesla's servers act on them (navigation sharing, managed charging); vehicle-command sends them
// over REST too.
var serverSideCommands = map[string]bool{
	"navigation_request":                  true,
	"set_managed_charge_current_request":  true,
	"set_managed_charger_location":        true,
	"set_managed_scheduled_charging_time": true,
}

// refuseAsleep answers 408, as the Fleet API does, when the vehicle is asleep (for good, by
// fault, or until woken) and reports whether it did.
func (s *Server) refuseAsleep(w http.ResponseWriter, v *Vehicle, f Fault) bool {
	if !f.Asleep && !v.Asleep() {
		return false
	}
	if f.Asleep {
		s.countInjected("asleep")
	}
	writeFleetError(w, http.StatusRequestTimeout, textAsleep, "", nil)
	return true
}

// handleRESTCommand is POST /api/1/vehicles/{vin}/command/{name}.
func (s *Server) handleRESTCommand(w http.ResponseWriter, r *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	name, err := url.PathUnescape(mux.Vars(r)["name"])
	if err != nil {
		writeFleetError(w, http.StatusBadRequest, "invalid_command", "", nil)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCommandBody))
	if err != nil {
		writeFleetError(w, http.StatusRequestEntityTooLarge, "body_too_large", "", nil)
		return
	}
	f := c.f
	switch {
	case s.refuseAsleep(w, v, f):
		return
	case !f.Legacy && !serverSideCommands[name]:
		writeFleetError(w, http.StatusForbidden, textVCPRequired, "", nil)
		return
	}
	if len(body) == 0 {
		body = nil
	}
	reason := f.Refuse
	if reason == "" {
		reason = v.applyREST(name, body)
	} else {
		s.countInjected("refused")
	}
	s.record(Execution{VIN: v.vin, Domain: DomainREST, Action: name, Body: body, Result: resultText(reason), At: s.now()})
	s.countVehicle(v.vin, func(vs *VehicleStats) { vs.REST++ })
	if code := f.FailAfterExecution; code != 0 {
		s.countInjected("fail_after_execution")
		writeFleetError(w, code, strings.ToLower(http.StatusText(code)), "", nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{"result": reason == "", "reason": reason}})
}

// resultText is Execution.Result for a car's refusal reason ("" for success).
func resultText(reason string) string {
	if reason == "" {
		return "ok"
	}
	return reason
}

// handleWakeUp is POST /api/1/vehicles/{vin}/wake_up. It starts waking the car, which comes
// online after Options.WakeTime (the answer says "asleep" until then, as the Fleet API's does),
// unless the Asleep fault holds it down.
func (s *Server) handleWakeUp(w http.ResponseWriter, _ *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	if c.f.Asleep {
		s.countInjected("asleep")
	} else {
		v.Wake()
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": s.vehicleObject(v, v.State(), c.f)})
}

// Echo is what every route the simulator does not implement answers, as {"response":Echo}, so
// that pass-through tests can compare exactly what arrived.
type Echo struct {
	// Method is the request method.
	Method string `json:"method"`
	// Path is the path exactly as it was on the wire (escaped, uncleaned).
	Path string `json:"path"`
	// RequestURI is the request target exactly as it was on the wire.
	RequestURI string `json:"request_uri"`
	// RawQuery is the query string without the '?'.
	RawQuery string `json:"raw_query"`
	// BodySHA256 is the hex SHA-256 of the request body (of the empty string when there is none).
	BodySHA256 string `json:"body_sha256"`
	// BodyLength is the number of body bytes received.
	BodyLength int64 `json:"body_length"`
	// Header holds the end-to-end request headers, without Authorization and without the
	// framing header Content-Length (see BodyLength). Names are canonical.
	Header map[string][]string `json:"header"`
	// Host is the Host header.
	Host string `json:"host"`
	// AuthorizationSHA256 is the hex SHA-256 of the Authorization header, or "" when absent.
	AuthorizationSHA256 string `json:"authorization_sha256"`
	// XForwardedFor is the X-Forwarded-For header, or "".
	XForwardedFor string `json:"x_forwarded_for"`
}

// hopByHop are the headers a proxy must not forward (RFC 9110 §7.6.1), plus framing headers and
// Authorization, which the echo reports only as a hash.
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true,
	"Upgrade": true, "Content-Length": true, "Authorization": true,
}

// handleEcho answers every other path. It hashes the body while reading it, so any size streams.
func (s *Server) handleEcho(w http.ResponseWriter, r *http.Request, _ call) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		writeFleetError(w, http.StatusBadRequest, "body_read_failed", "", nil)
		return
	}
	e := Echo{
		Method:        r.Method,
		Path:          r.URL.EscapedPath(),
		RequestURI:    r.RequestURI,
		RawQuery:      r.URL.RawQuery,
		BodySHA256:    hex.EncodeToString(h.Sum(nil)),
		BodyLength:    n,
		Header:        map[string][]string{},
		Host:          r.Host,
		XForwardedFor: r.Header.Get("X-Forwarded-For"),
	}
	if strings.HasPrefix(r.RequestURI, "/") {
		e.Path, _, _ = strings.Cut(r.RequestURI, "?")
	}
	if a := r.Header.Values("Authorization"); len(a) > 0 {
		sum := sha256.Sum256([]byte(strings.Join(a, ", ")))
		e.AuthorizationSHA256 = hex.EncodeToString(sum[:])
	}
	// Headers the Connection header names are hop-by-hop too.
	var named map[string]bool
	for _, c := range r.Header.Values("Connection") {
		for k := range strings.SplitSeq(c, ",") {
			if named == nil {
				named = map[string]bool{}
			}
			named[textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k))] = true
		}
	}
	for k, vs := range r.Header {
		if ck := textproto.CanonicalMIMEHeaderKey(k); !hopByHop[ck] && !named[ck] {
			e.Header[k] = append([]string(nil), vs...)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": e})
}

// --- control endpoints (/sim/) ---

func (s *Server) handleSimStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func (s *Server) handleSimResetStats(w http.ResponseWriter, _ *http.Request) {
	s.ResetStats()
	writeJSON(w, http.StatusOK, map[string]any{"reset": true})
}

func (s *Server) handleSimExecutions(w http.ResponseWriter, r *http.Request) {
	ex := s.Executions(r.URL.Query().Get("vin"))
	if ex == nil {
		ex = []Execution{}
	}
	writeJSON(w, http.StatusOK, ex)
}

// faultJSON is Fault on the wire: Delay is in milliseconds.
type faultJSON struct {
	Fault
	DelayMS int64 `json:"delay_ms,omitempty"`
}

func toFaultJSON(f Fault) faultJSON { return faultJSON{Fault: f, DelayMS: f.Delay.Milliseconds()} }

func (s *Server) handleSimGetFaults(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := map[string]any{"server": toFaultJSON(s.fault)}
	per := map[string]faultJSON{}
	for vin, f := range s.faults {
		per[vin] = toFaultJSON(f)
	}
	s.mu.Unlock()
	out["vehicles"] = per
	writeJSON(w, http.StatusOK, out)
}

// handleSimSetFault is POST /sim/faults with {"vin":"…" (optional), "fault":{…}}. The fault's
// fields are Fault's JSON names, with "delay_ms" for Delay; {} clears.
func (s *Server) handleSimSetFault(w http.ResponseWriter, r *http.Request) {
	var req struct {
		VIN   string    `json:"vin"`
		Fault faultJSON `json:"fault"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		apierr.Write(w, apierr.Wrap(err, http.StatusBadRequest, "invalid_fault", "Body must be {\"vin\":\"…\",\"fault\":{…}} with known fault fields."))
		return
	}
	if req.VIN != "" && s.Vehicle(req.VIN) == nil {
		apierr.Write(w, apierr.New(http.StatusNotFound, "unknown_vin", "No simulated vehicle has that VIN."))
		return
	}
	f := req.Fault.Fault
	f.Delay = msToDuration(req.Fault.DelayMS)
	s.SetFault(req.VIN, f)
	writeJSON(w, http.StatusOK, map[string]any{"vin": req.VIN, "fault": toFaultJSON(f)})
}

func (s *Server) handleSimReboot(w http.ResponseWriter, r *http.Request) {
	vin := r.URL.Query().Get("vin")
	if vin != "" && s.Vehicle(vin) == nil {
		apierr.Write(w, apierr.New(http.StatusNotFound, "unknown_vin", "No simulated vehicle has that VIN."))
		return
	}
	s.Reboot(vin)
	writeJSON(w, http.StatusOK, map[string]any{"rebooted": vin})
}

func (s *Server) handleSimVehicles(w http.ResponseWriter, _ *http.Request) {
	type entry struct {
		VIN      string   `json:"vin"`
		ID       int64    `json:"id"`
		State    CarState `json:"state"`
		Enrolled int      `json:"enrolled_keys"`
	}
	var out []entry
	for _, v := range s.pick("") {
		v.mu.Lock()
		n := len(v.enrolled)
		v.mu.Unlock()
		out = append(out, entry{VIN: v.vin, ID: vehicleID(v.vin), State: v.State(), Enrolled: n})
	}
	if out == nil {
		out = []entry{}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleSimAsleep is POST /sim/vehicles/{vin}/asleep with {"asleep":true|false}.
func (s *Server) handleSimAsleep(w http.ResponseWriter, r *http.Request) {
	v := s.Vehicle(mux.Vars(r)["vin"])
	if v == nil {
		apierr.Write(w, apierr.New(http.StatusNotFound, "unknown_vin", "No simulated vehicle has that VIN."))
		return
	}
	var req struct {
		Asleep bool `json:"asleep"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&req); err != nil {
		apierr.Write(w, apierr.Wrap(err, http.StatusBadRequest, "invalid_request", "Body must be {\"asleep\":true|false}."))
		return
	}
	v.SetAsleep(req.Asleep)
	writeJSON(w, http.StatusOK, map[string]any{"vin": v.vin, "asleep": req.Asleep})
}
