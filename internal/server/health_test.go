package server_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/teslaproxy/proxy/internal/server"
)

// TestHealthReportsDegraded: while the shared session store is unreachable /health still answers
// 200 (the replica serves), and says it is degraded; once the store is back it says OK.
func TestHealthReportsDegraded(t *testing.T) {
	var down atomic.Bool
	h := server.NewRouter(server.Deps{Degraded: down.Load})
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(); code != 200 || body != "OK" {
		t.Errorf("healthy: %d %q, want 200 OK", code, body)
	}
	down.Store(true)
	if code, body := get(); code != 200 || !strings.HasPrefix(body, "DEGRADED") {
		t.Errorf("degraded: %d %q, want 200 DEGRADED…", code, body)
	}
	down.Store(false)
	if code, body := get(); code != 200 || body != "OK" {
		t.Errorf("back: %d %q, want 200 OK", code, body)
	}
}
