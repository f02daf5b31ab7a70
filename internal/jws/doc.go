// Package jws signs and verifies the compact JSON Web Signatures that the Fleet API accepts for
// fleet-telemetry configurations, and checks those configurations before they are signed.
//
// # Role
//
// The proxy turns POST /api/1/vehicles/fleet_telemetry_config into a call to
// /api/1/vehicles/fleet_telemetry_config_jws carrying a token. This package owns the steps in
// between that involve no HTTP:
//
//   - [ParseTelemetryRequest] and [CheckTelemetryConfig] reject a request body that Tesla would
//     refuse or that would configure nothing, before anything is sent or billed. Every rejection
//     is an *apierr.Error with status 400 whose message names the field and the rule.
//   - [Sign] and [SignTelemetryConfig] build the token: header {"alg":"Tesla.SS256","typ":"JWT"},
//     the caller's claims plus "iss" (standard base64 of the signer's uncompressed P-256 public
//     key) and "aud", signed with the Schnorr/P-256/SHA-256 scheme that vehicle-command
//     implements. Signing is deterministic, so the same key and claims always give the same token,
//     byte for byte the one vehicle-command's pkg/sign produces (fleet-api.md §2 has the vector).
//   - [Verify] checks such a token with our own Schnorr verifier, written from fleet-api.md §2.
//     The simulator and `proxy jws verify` use it.
//
// # Boundaries
//
// Private-key arithmetic stays in vehicle-command: [Sign] calls the key's SchnorrSignature method,
// so a key held in hardware behind that interface works unchanged and no secret scalar passes
// through this package. Verification handles public data only (the public key, the token and its
// signature), so it makes no attempt to run in constant time.
//
// golang-jwt keeps one global table of signing methods, and vehicle-command adds its own
// Tesla.SS256 entry to it when pkg/protocol is imported; RegisterSigningMethod silently replaces
// whatever was there. Nothing in this package reads that table: [Sign] names [Method] directly
// and [Verify] parses tokens itself. [Register] exists so that other code that looks the algorithm
// up by name gets our type; call it once from run, never from init.
//
// This package does not speak HTTP, choose upstreams, log, or decide whether an issuer is trusted:
// Verify without a key proves only that a token was not altered after whoever owns the key in
// "iss" signed it.
package jws
