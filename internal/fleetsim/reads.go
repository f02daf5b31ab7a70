package fleetsim

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
)

// The Fleet API's read routes, as an app calls them: the vehicle list and one vehicle,
// vehicle_data and the older data_request/{section} form (teslajs), fleet_status, and the
// smaller reads (nearby charging sites, service data, mobile access, drivers, invitations,
// release notes, products, user). Each answers with the Fleet API's shape and field names,
// filled from the simulated cars.

// vehicleObject shows v (with st its state and f its effective fault) as the vehicle list,
// GET /api/1/vehicles/{id}, wake_up and the top level of vehicle_data show it.
func (s *Server) vehicleObject(v *Vehicle, st CarState, f Fault) map[string]any {
	state := "online"
	if st.Asleep || f.Asleep {
		state = "asleep"
	}
	id := vehicleID(v.vin)
	return map[string]any{
		"id":                        id,
		"vehicle_id":                id/1000 + 7,
		"user_id":                   800_001,
		"vin":                       v.vin,
		"color":                     nil,
		"access_type":               "OWNER",
		"display_name":              st.Name,
		"option_codes":              nil,
		"granular_access":           map[string]any{"hide_private": false},
		"tokens":                    []string{},
		"state":                     state,
		"in_service":                false,
		"id_s":                      strconv.FormatInt(id, 10),
		"calendar_enabled":          true,
		"api_version":               81,
		"backseat_token":            nil,
		"backseat_token_updated_at": nil,
		"ble_autopair_enrolled":     false,
	}
}

// handleVehicles is GET /api/1/vehicles, paginated with page (from 1) and per_page (default
// 100), as the Fleet API pages it.
func (s *Server) handleVehicles(w http.ResponseWriter, r *http.Request, _ call) {
	vs := s.pick("")
	q := r.URL.Query()
	page, _ := strconv.Atoi(q.Get("page"))
	perPage, _ := strconv.Atoi(q.Get("per_page"))
	page, perPage = max(page, 1), max(perPage, 0)
	if perPage == 0 {
		perPage = 100
	}
	pages := max((len(vs)+perPage-1)/perPage, 1)
	from := min((page-1)*perPage, len(vs))
	to := min(from+perPage, len(vs))
	list := make([]map[string]any, 0, to-from)
	for _, v := range vs[from:to] {
		list = append(list, s.vehicleObject(v, v.State(), s.Fault(v.vin)))
	}
	var prev, next any
	if page > 1 {
		prev = page - 1
	}
	if page < pages {
		next = page + 1
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"response": list,
		"pagination": map[string]any{
			"previous": prev, "next": next, "current": page, "per_page": perPage, "count": len(vs), "pages": pages,
		},
		"count": len(vs),
	})
}

// handleVehicle is GET /api/1/vehicles/{id or VIN}. It answers for a sleeping car too (apps use
// it to see whether a car is awake without waking it).
func (s *Server) handleVehicle(w http.ResponseWriter, _ *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": s.vehicleObject(v, v.State(), c.f)})
}

// readAwake returns the car's state for a request that needs the car online, counting it as
// activity that keeps the car awake; or it answers 408 and returns false.
func (s *Server) readAwake(w http.ResponseWriter, v *Vehicle, f Fault) (CarState, bool) {
	if s.refuseAsleep(w, v, f) {
		return CarState{}, false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	v.advance(now)
	if v.state.Asleep { // fell asleep between the two looks
		writeFleetError(w, http.StatusRequestTimeout, textAsleep, "", nil)
		return CarState{}, false
	}
	v.touch(now)
	return v.state.clone(), true
}

// handleVehicleData is GET /api/1/vehicles/{id}/vehicle_data[?endpoints=a;b].
func (s *Server) handleVehicleData(w http.ResponseWriter, r *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	st, ok := s.readAwake(w, v, c.f)
	if !ok {
		return
	}
	out := s.vehicleObject(v, st, c.f)
	for k, sec := range vehicleDataSections(st, parseSections(queryParam(r.URL.RawQuery, "endpoints")), s.now()) {
		out[k] = sec
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": out})
}

// queryParam returns a query parameter, splitting the query at '&' only: the Fleet API's
// endpoints value is separated by ';', which net/url no longer accepts as a separator and drops
// with its whole pair.
func queryParam(rawQuery, key string) string {
	for pair := range strings.SplitSeq(rawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if uk, err := url.QueryUnescape(k); err != nil || uk != key {
			continue
		}
		if uv, err := url.QueryUnescape(v); err == nil {
			return uv
		}
	}
	return ""
}

// dataRequestSections are the sections GET …/data_request/{section} serves, as the owner API
// did and libraries such as teslajs still call.
var dataRequestSections = map[string]bool{
	sectionCharge: true, sectionClimate: true, sectionDrive: true, sectionGUI: true,
	sectionVehicleConfig: true, sectionVehicleState: true,
}

// handleDataRequest is GET /api/1/vehicles/{id}/data_request/{section}: one section on its own.
// drive_state carries the location here, as it did before location_data existed.
func (s *Server) handleDataRequest(w http.ResponseWriter, r *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	section := mux.Vars(r)["section"]
	if !dataRequestSections[section] {
		writeFleetError(w, http.StatusNotFound, "not_found", "Unknown data_request section.", nil)
		return
	}
	st, ok := s.readAwake(w, v, c.f)
	if !ok {
		return
	}
	want := map[string]bool{section: true}
	if section == sectionDrive {
		want[sectionLocation] = true
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": vehicleDataSections(st, want, s.now())[section]})
}

// handleFleetStatus is POST /api/1/vehicles/fleet_status with {"vins":[…]}. A car is
// key-paired when a trusted app key (Options.TrustedKeys; any key when none are configured) is
// enrolled on it. VINs the simulator does not know are unpaired and have no vehicle_info.
func (s *Server) handleFleetStatus(w http.ResponseWriter, r *http.Request, _ call) {
	var req struct {
		VINs []string `json:"vins"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxCommandBody)).Decode(&req); err != nil {
		writeFleetError(w, http.StatusBadRequest, "invalid_request", "The body must be {\"vins\":[…]}.", nil)
		return
	}
	paired, unpaired := []string{}, []string{}
	info := map[string]any{}
	for _, vin := range req.VINs {
		v := s.Vehicle(vin)
		if v == nil {
			unpaired = append(unpaired, vin)
			continue
		}
		if s.keyPaired(v) {
			paired = append(paired, vin)
		} else {
			unpaired = append(unpaired, vin)
		}
		v.mu.Lock()
		keys := len(v.enrolled)
		v.mu.Unlock()
		info[vin] = map[string]any{
			"firmware_version":                  v.State().Firmware,
			"vehicle_command_protocol_required": !s.Fault(vin).Legacy,
			"discounted_device_data":            false,
			"fleet_telemetry_version":           "1.1.0",
			"total_number_of_keys":              keys + 2, // the owner's phone key and key card
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{
		"key_paired_vins": paired,
		"unpaired_vins":   unpaired,
		"vehicle_info":    info,
	}})
}

// keyPaired reports whether an app key is enrolled on v: a trusted key, or any key when the
// simulator trusts every key.
func (s *Server) keyPaired(v *Vehicle) bool {
	if len(s.trusted) == 0 {
		v.mu.Lock()
		defer v.mu.Unlock()
		return len(v.enrolled) > 0
	}
	for _, k := range s.trusted {
		if v.IsEnrolled(k) {
			return true
		}
	}
	return false
}

// chargingSites are the simulated sites near every car: offsets from the car in degrees.
var chargingSites = []struct {
	name      string
	super     bool
	dLat, dLo float64
	stalls    int
}{
	{"Fremont, CA - Auto Mall Parkway", true, 0.012, -0.018, 20},
	{"Milpitas, CA - Great Mall", true, 0.041, 0.022, 16},
	{"Newark, CA - NewPark Mall", true, -0.035, -0.051, 12},
	{"Hilton Garden Inn Fremont", false, 0.006, 0.009, 4},
	{"Pacific Commons Shopping Center", false, -0.009, -0.014, 6},
}

// handleNearbyChargingSites is GET /api/1/vehicles/{id}/nearby_charging_sites[?count=N]. The car
// must be online, as on the Fleet API.
func (s *Server) handleNearbyChargingSites(w http.ResponseWriter, r *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	st, ok := s.readAwake(w, v, c.f)
	if !ok {
		return
	}
	count, err := strconv.Atoi(r.URL.Query().Get("count"))
	if err != nil || count <= 0 {
		count = len(chargingSites)
	}
	var super, dest []map[string]any
	for i, site := range chargingSites {
		if i >= count {
			break
		}
		lat, lon := st.Latitude+site.dLat, st.Longitude+site.dLo
		dy := site.dLat * milesPerDegLat
		dx := site.dLo * milesPerDegLat * math.Cos(st.Latitude*math.Pi/180)
		m := map[string]any{
			"location":       map[string]any{"lat": round(lat, 6), "long": round(lon, 6)},
			"name":           site.name,
			"distance_miles": round(math.Hypot(dx, dy), 6),
			"amenities":      "restrooms,wifi,lodging",
		}
		if site.super {
			m["type"] = "supercharger"
			m["total_stalls"] = site.stalls
			m["available_stalls"] = site.stalls - i*3
			m["site_closed"] = false
			m["billing_info"] = ""
			super = append(super, m)
		} else {
			m["type"] = "destination"
			dest = append(dest, m)
		}
	}
	now := s.now()
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{
		"congestion_sync_time_utc_secs": now.Unix(),
		"destination_charging":          orEmpty(dest),
		"superchargers":                 orEmpty(super),
		"timestamp":                     now.UnixMilli(),
	}})
}

func orEmpty(l []map[string]any) []map[string]any {
	if l == nil {
		return []map[string]any{}
	}
	return l
}

// handleServiceData is GET /api/1/vehicles/{id}/service_data.
func (s *Server) handleServiceData(w http.ResponseWriter, _ *http.Request, c call) {
	if c.vehicle(w) == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{"service_status": "not_in_service"}})
}

// handleMobileEnabled is GET /api/1/vehicles/{id}/mobile_enabled. The car must be online.
func (s *Server) handleMobileEnabled(w http.ResponseWriter, _ *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	if _, ok := s.readAwake(w, v, c.f); !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": true})
}

// handleReleaseNotes is GET /api/1/vehicles/{id}/release_notes: notes for the installed version.
func (s *Server) handleReleaseNotes(w http.ResponseWriter, _ *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	fw := v.State().Firmware
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{"release_notes": []map[string]any{{
		"title":            "Simulated Fleet API",
		"subtitle":         "Software " + fw,
		"description":      "This car lives in the tesla-proxy simulator. Its battery charges, its cabin warms and cools, and it falls asleep when left alone.",
		"customer_version": fw,
		"icon":             "release_notes_icon",
		"image_url":        "",
		"light_image_url":  "",
	}}}})
}

// driver is the one driver every simulated car has: the account owner.
func driver() map[string]any {
	return map[string]any{
		"my_tesla_unique_id": 800_001,
		"user_id":            800_001,
		"user_id_s":          "800001",
		"vault_uuid":         "b5c443af-a286-49eb-a4ad-35a97963155d",
		"driver_first_name":  "Sim",
		"driver_last_name":   "Driver",
		"granular_access":    map[string]any{"hide_private": false},
		"active_pubkeys":     []string{},
		"public_key":         "",
	}
}

// handleDrivers is GET /api/1/vehicles/{id}/drivers.
func (s *Server) handleDrivers(w http.ResponseWriter, _ *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": []map[string]any{driver()}, "count": 1})
}

// handleDriversDelete is DELETE /api/1/vehicles/{id}/drivers?share_user_id=N. The owner cannot be
// removed; any other id is simply not there.
func (s *Server) handleDriversDelete(w http.ResponseWriter, _ *http.Request, c call) {
	if c.vehicle(w) == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": "ok"})
}

// invitation is a driver invitation (invitations routes).
type invitation struct {
	ID        int64
	State     string
	Code      string
	CreatedAt time.Time
	RevokedAt time.Time
}

func (inv invitation) json(vin string) map[string]any {
	var revoked any
	if !inv.RevokedAt.IsZero() {
		revoked = inv.RevokedAt.Format(time.RFC3339)
	}
	return map[string]any{
		"id":                  inv.ID,
		"id_s":                strconv.FormatInt(inv.ID, 10),
		"owner_id":            800_001,
		"owner_id_s":          "800001",
		"product_id":          vin,
		"product_type":        "vehicle",
		"share_type":          "customer",
		"share_user_id":       nil,
		"share_user_sso_id":   nil,
		"active_pubkeys":      []string{},
		"state":               inv.State,
		"code":                inv.Code,
		"expires_at":          inv.CreatedAt.Add(48 * time.Hour).Format(time.RFC3339),
		"revoked_at":          revoked,
		"borrowing_device_id": nil,
		"key_id":              nil,
		"share_link":          "https://www.tesla.com/_rs/1/" + inv.Code,
	}
}

// handleInvitations is GET /api/1/vehicles/{id}/invitations.
func (s *Server) handleInvitations(w http.ResponseWriter, _ *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	s.mu.Lock()
	list := make([]map[string]any, 0, len(s.invitations[v.vin]))
	for _, inv := range s.invitations[v.vin] {
		list = append(list, inv.json(v.vin))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"response": list, "count": len(list)})
}

// handleInvitationCreate is POST /api/1/vehicles/{id}/invitations.
func (s *Server) handleInvitationCreate(w http.ResponseWriter, _ *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	s.mu.Lock()
	s.nextInvitation++
	inv := invitation{
		ID:        2_252_000_000 + s.nextInvitation,
		State:     "pending",
		Code:      fmt.Sprintf("SIM%06d", s.nextInvitation),
		CreatedAt: s.now().UTC(),
	}
	s.invitations[v.vin] = append(s.invitations[v.vin], inv)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"response": inv.json(v.vin)})
}

// handleInvitationRevoke is POST /api/1/vehicles/{id}/invitations/{invitation}/revoke.
func (s *Server) handleInvitationRevoke(w http.ResponseWriter, r *http.Request, c call) {
	v := c.vehicle(w)
	if v == nil {
		return
	}
	id, _ := strconv.ParseInt(mux.Vars(r)["invitation"], 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, inv := range s.invitations[v.vin] {
		if inv.ID == id {
			if inv.State != "revoked" {
				inv.State, inv.RevokedAt = "revoked", s.now().UTC()
				s.invitations[v.vin][i] = inv
			}
			writeJSON(w, http.StatusOK, map[string]any{"response": true})
			return
		}
	}
	writeFleetError(w, http.StatusNotFound, "not_found", "No invitation with that id.", nil)
}

// handleProducts is GET /api/1/products: the vehicles, each with command_signing ("required",
// or "off" for a car without the Vehicle Command Protocol), as Home Assistant reads them.
func (s *Server) handleProducts(w http.ResponseWriter, _ *http.Request, _ call) {
	vs := s.pick("")
	list := make([]map[string]any, 0, len(vs))
	for _, v := range vs {
		f := s.Fault(v.vin)
		p := s.vehicleObject(v, v.State(), f)
		p["command_signing"] = "required"
		if f.Legacy {
			p["command_signing"] = "off"
		}
		list = append(list, p)
	}
	writeJSON(w, http.StatusOK, map[string]any{"response": list, "count": len(list)})
}

// handleUserMe is GET /api/1/users/me.
func (s *Server) handleUserMe(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{
		"email":             "sim.driver@example.com",
		"full_name":         "Sim Driver",
		"profile_image_url": "",
		"vault_uuid":        "b5c443af-a286-49eb-a4ad-35a97963155d",
	}})
}

// handleUserRegion is GET /api/1/users/region: the account's region, North America.
func (s *Server) handleUserRegion(w http.ResponseWriter, _ *http.Request, _ call) {
	writeJSON(w, http.StatusOK, map[string]any{"response": map[string]any{
		"region":             "na",
		"fleet_api_base_url": "https://fleet-api.prd.na.vn.cloud.tesla.com",
	}})
}

// handleNotFound answers a path the simulated Fleet API does not have.
func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request, _ call) {
	writeFleetError(w, http.StatusNotFound, "not_found",
		"The simulator has no "+r.Method+" "+strings.SplitN(r.URL.EscapedPath(), "?", 2)[0]+" (proxy simulate -echo echoes every unknown path).", nil)
}
