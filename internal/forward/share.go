package forward

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/teslaproxy/proxy/internal/apierr"
)

// clientShare bounds the pass-through requests one client has in flight, so a single client
// cannot take every upstream connection or stream the proxy may open. A client is a token, known
// by its hash; the Fleet API has not judged it yet, so nothing about it but the hash is trusted.
//
// The table holds only clients with a request in flight: an entry goes when its count reaches
// zero, so its size is bounded by the requests the server is serving, not by client input.
type clientShare struct {
	max int
	mu  sync.Mutex
	n   map[TokenHash]int
}

func newClientShare(max int) *clientShare {
	if max <= 0 {
		return nil
	}
	return &clientShare{max: max, n: make(map[TokenHash]int)}
}

// acquire takes one slot for h and reports whether one was free.
func (s *clientShare) acquire(h TokenHash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[h] >= s.max {
		return false
	}
	s.n[h]++
	return true
}

// release gives back a slot taken by acquire.
func (s *clientShare) release(h TokenHash) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[h] <= 1 {
		delete(s.n, h)
		return
	}
	s.n[h]--
}

// refuseOverShare answers a client that already has its whole share in flight. One second is a
// fair guess for Retry-After: most Fleet API answers take less.
func refuseOverShare(w http.ResponseWriter, max int) {
	w.Header().Set("Retry-After", "1")
	apierr.Write(w, apierr.New(http.StatusTooManyRequests, "too_many_requests_in_flight",
		"This token already has "+strconv.Itoa(max)+" requests waiting on the Fleet API through this proxy (-client-max-inflight); wait for some to finish, then retry."))
}
