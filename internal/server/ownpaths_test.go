package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gorilla/mux"
)

// The quick test in front of the router must never send a request for one of the proxy's own
// routes to the catch-all: for every path, if a non-catch-all route matches, the test says so.
func TestOwnPathsNeverMissesAnOwnRoute(t *testing.T) {
	r := mux.NewRouter()
	r.UseEncodedPath()
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	r.Handle(PathHealth, ok)
	r.Handle(PathPublicKey, ok)
	r.Handle(PathTelemetry, ok)
	r.Handle(PathCommand, ok)
	catchAll := r.PathPrefix("/").Handler(ok)
	might := ownPaths(r, catchAll)
	paths := []string{
		PathHealth, PathPublicKey, PathTelemetry,
		"/api/1/vehicles/5YJ3E1EA7KF000001/command/door_lock",
		"/api/1/vehicles/1234567890/command/honk_horn",
		"/api/1/vehicles/5YJ3E1EA7KF000001/vehicle_data",
		"/api/1/vehicles/5YJ3E1EA7KF000001/command",
		"/api/1/vehicles",
		"/api/1/products",
		"/api/1/vehicles/5YJ3E1EA7KF000001/command/door_lock/extra",
		"/healthz",
		"/",
	}
	for _, p := range paths {
		var m mux.RouteMatch
		req := httptest.NewRequest(http.MethodPost, p, nil)
		own := r.Match(req, &m) && m.Route != catchAll
		if own && !might(p) {
			t.Errorf("%s matches an own route but the quick test sends it to pass-through", p)
		}
	}
	// And it does skip the common pass-through paths, or it would be no use.
	for _, p := range []string{"/api/1/vehicles/5YJ3E1EA7KF000001/vehicle_data", "/api/1/vehicles", "/api/1/products"} {
		if might(p) {
			t.Errorf("%s: the quick test does not spot a plain pass-through path", p)
		}
	}
}
