// Package server wires the proxy together: the one routing table, the middleware around it, the
// TLS listener with a certificate that can be renewed in place, and graceful shutdown.
//
// It owns no business logic: signing lives in internal/signer and internal/jws, the road to the
// Fleet API in internal/forward. The order of middleware and routes is written down once, in
// NewRouter.
package server
