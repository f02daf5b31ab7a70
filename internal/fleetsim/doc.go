// Package fleetsim simulates the Tesla Fleet API and the vehicles behind it, for tests, for
// `proxy simulate` and for `proxy -dev`.
//
// # Role
//
// The vehicle side of the Vehicle Command Protocol is our own implementation, written from the
// protocol specification (vehicle-command's pkg/protocol/protocol.md and our
// shared/docs/fleet-api.md §3), not from vehicle-command's code: ECDH and
// K = SHA1(shared X)[:16], the HMAC subkeys, metadata TLV, session-info tags, command-tag
// verification, epochs, per-domain clocks, counters and anti-replay windows (VCSEC strictly in
// order, Infotainment in a 32-wide sliding window), and AES-GCM response encryption. It uses only
// vehicle-command's generated protobuf types as the wire format. Because it is independent, a
// client built on vehicle-command that works against it is checked against the spec, not
// against itself.
//
// Around the vehicles it serves the Fleet API, so that an app written against the real one works
// against it unchanged:
//
//   - POST /api/1/vehicles/{vin}/signed_command: handshakes, HMAC-signed commands for VCSEC
//     and Infotainment, the spec's MessageFaults (with fresh signed session info for faults 5,
//     6, 13, 15, 17 and 20), replies encrypted when the request sets FLAG_ENCRYPT_RESPONSE.
//     Asleep gives 408 "vehicle unavailable: vehicle is offline or asleep" (vehicle-command's
//     inet connector recognizes it), a legacy vehicle 422.
//   - POST /api/1/vehicles/{vin}/command/{name}: 403 "Tesla Vehicle Command Protocol required",
//     except for legacy vehicles and the commands Tesla's servers carry out (navigation, managed
//     charging), which it accepts, applies to the car and records with the raw body.
//   - POST /api/1/vehicles/{vin}/wake_up, GET /api/1/vehicles (paginated) and
//     GET /api/1/vehicles/{vin}.
//   - GET /api/1/vehicles/{vin}/vehicle_data with endpoints (";"-separated sections; the location
//     only with location_data, as since firmware 2023.38), and the older
//     data_request/{section}.
//   - POST /api/1/vehicles/fleet_status, GET nearby_charging_sites, service_data, mobile_enabled,
//     release_notes, drivers (GET, DELETE), invitations (GET, POST, revoke), GET /api/1/products,
//     /api/1/users/me and /api/1/users/region.
//   - POST /api/1/vehicles/fleet_telemetry_config_jws (verified with internal/jws),
//     GET and DELETE /api/1/vehicles/{vin}/fleet_telemetry_config.
//   - any other path: 404 as the Fleet API answers it; with Options.Echo, every read route and
//     unknown path answers 200 with an Echo of exactly what arrived (escaped path, query, body
//     hash and length, headers, Host, a hash of Authorization), streaming the body, for tests of
//     what a proxy passes through.
//
// Vehicle data comes from each car's CarState, with the Fleet API's shapes and field names. Every
// command that changes something visible changes it there. Time moves, computed when someone
// looks (no goroutine per car): a charging car gains battery at its current and stops at its
// limit, climate brings the cabin to its setting, a driving car moves. An idle car falls asleep
// after Options.SleepAfter; wake_up brings it online after Options.WakeTime; data and commands
// for a sleeping car get 408. A Scenario (YAML) describes a fleet: models, firmware, battery,
// location, asleep, legacy, pairing, faults.
//
// Faults are injected per vehicle or server-wide with Server.SetFault (asleep, legacy, 421, 429,
// delays, refusals, failing after a command ran), vehicles reboot with Server.Reboot, and
// Server.Stats counts handshakes, commands, rejections, JWS results, routes and billing
// categories, so a test can assert exactly what a client cost. Server.Executions lists every
// command that reached a car, with its domain, action name and result.
//
// # Dashboard
//
// GET /sim/ is a page, embedded in the binary (no CDN, no build step), that shows each car
// (online, asleep or waking; lock, battery and charge limit, climate), its last commands (signed
// or REST, domain, result) and the billed calls with their estimated cost. It follows
// GET /sim/events (server-sent events carrying DashboardState) and falls back to polling
// GET /sim/state. Its buttons sleep, wake and reboot a car and inject faults through the
// control endpoints below. Cross-origin browser requests to /sim/ that change anything are
// refused (net/http.CrossOriginProtection).
//
// # Boundaries
//
// It is a simulator, not Tesla. It has no persistence of car state, no OAuth (bearer tokens are
// hashed in echoes, never checked or logged), no regions beyond the injected 421, no energy
// products, and a car model that covers what apps read: fields the Fleet API has but nothing
// here moves keep plausible constant values. The real firmware may differ from the reference
// verifier this follows; fleet-api.md says where.
//
// # Driving it from a test
//
//	sim := fleetsim.New(fleetsim.Options{})
//	vin := fleetsim.NewTestVIN(1)
//	sim.AddVehicle(vin, clientKey.PublicKey())
//	ts := httptest.NewTLSServer(sim) // loopback only
//	defer ts.Close()
//	// … point the proxy's upstream at ts.URL, send commands …
//	if got := sim.Executions(vin); len(got) != 1 || got[0].Action != "RKE_ACTION_LOCK" { … }
//	if st := sim.Stats(); st.Billing[fleetsim.BillingCommands] != 3 { … }
//
// Control endpoints outside /api/1/ do the same over HTTP for out-of-process use: GET
// /sim/stats, DELETE /sim/stats (or POST /sim/stats/reset), GET /sim/executions?vin=, GET and
// POST /sim/faults ({"vin":"…","fault":{"asleep":true,"delay_ms":200,…}}), POST
// /sim/reboot?vin=, GET /sim/vehicles, POST /sim/vehicles/{vin}/asleep ({"asleep":true}),
// POST /sim/vehicles/{vin}/wake (as wake_up, unbilled), GET /sim/state, GET /sim/events.
package fleetsim
