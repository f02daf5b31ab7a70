// Package forward owns the proxy's road to the Fleet API.
//
// It decides which Fleet API host a request goes to (a configured upstream, or the region named
// in the caller's bearer token, or a host learned from a 421 Misdirected Request answer), holds
// the one shared http.Transport, passes unsigned routes through with httputil.ReverseProxy,
// streaming both ways, and gives the signer and the telemetry-config route a client (Call) for
// the requests they build themselves.
//
// It never signs anything and never reads a body it does not have to: pass-through bodies are
// streamed, except small request bodies, which are kept so that a 421 can be answered by sending
// the same request to the right region once.
package forward
