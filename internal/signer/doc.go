// Package signer turns REST vehicle commands into Vehicle Command Protocol messages.
//
// POST /api/1/vehicles/{vin}/command/{name} with the REST command's JSON parameters is mapped to
// an action by vehicle-command's pkg/proxy.ExtractCommandAction, signed by vehicle-command's
// pkg/vehicle (sessions, HMAC, counters, response checks), and sent to the Fleet API's
// signed_command endpoint through internal/forward. The vehicle's answer becomes the REST answer
// apps expect: {"response":{"result":true,"reason":""}}.
//
// What this package owns is everything around the library: refusing bad parameters (400, naming
// the parameter) before anything is queued or sent, since every upstream call is billed; building
// the library's vehicle object for each command from the car's compact record in
// internal/sessions and writing the record back after it, with time zero carried exactly (the
// library's own export rounds the vehicle clock to whole seconds, which drifts when it is
// rebuilt for every command, see fleet-api.md), so an idle car costs its record and nothing runs
// for it; keeping the derived session keys of recently used cars, so a warm command needs no
// ECDH; a per-VIN lock that a departing client releases, held only while commands run or wait;
// handshakes with only the domain a command needs; remembering vehicles that answer 422 (no
// protocol support) and sending their REST command with its original body; and mapping what the
// Fleet API or the vehicle said to a status an app can act on, never re-sending a command that
// may have run.
//
// It does not pass other routes through (internal/forward does), and it does not persist
// sessions itself: Options.Store does.
package signer
