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
// Around the vehicles it serves the Fleet API routes a signing proxy touches:
//
//   - POST /api/1/vehicles/{vin}/signed_command: handshakes, HMAC-signed commands for VCSEC
//     and Infotainment, the spec's MessageFaults (with fresh signed session info for faults 5,
//     6, 13, 15, 17 and 20), replies encrypted when the request sets FLAG_ENCRYPT_RESPONSE.
//     Asleep gives 408 "vehicle unavailable: vehicle is offline or asleep" (vehicle-command's
//     inet connector recognises it), a legacy vehicle 422.
//   - POST /api/1/vehicles/{vin}/command/{name}: 403 "Tesla Vehicle Command Protocol required",
//     except for legacy vehicles, which accept it and record the raw body.
//   - POST /api/1/vehicles/{vin}/wake_up, GET /api/1/vehicles.
//   - POST /api/1/vehicles/fleet_telemetry_config_jws (verified with internal/jws),
//     GET and DELETE /api/1/vehicles/{vin}/fleet_telemetry_config.
//   - every other path, any method: 200 with an Echo of exactly what arrived (escaped path,
//     query, body hash and length, headers, Host, a hash of Authorization), streaming the body.
//
// Faults are injected per vehicle or server-wide with Server.SetFault (asleep, legacy, 421, 429,
// delays, refusals, failing after a command ran), vehicles reboot with Server.Reboot, and
// Server.Stats counts handshakes, commands, rejections, JWS results, routes and billing
// categories, so a test can assert exactly what a client cost. Server.Executions lists every
// command that reached a car, with its domain and action name.
//
// # Boundaries
//
// It is a test double. It has no persistence, no OAuth (bearer tokens are hashed in echoes, never
// checked or logged), no regions beyond the injected 421, and a small car model: only the state
// in CarState changes, and vehicle_data and most other read routes are served by the echo. The
// real firmware may differ from the reference verifier this follows; fleet-api.md says where.
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
// /sim/reboot?vin=, GET /sim/vehicles, POST /sim/vehicles/{vin}/asleep ({"asleep":true}).
package fleetsim
