package signer

import (
	"errors"
	"net/http"
	"testing"

	"github.com/teslamotors/vehicle-command/pkg/proxy"

	"github.com/teslaproxy/proxy/internal/apierr"
)

// TestExtractActionChecksWhichTrunk checks that the which_trunk check guards every action the
// signer builds, not only the early parameter check (which a vehicle known to be legacy skips):
// v0.4.1 would build an action that opens the rear trunk from any of these.
func TestExtractActionChecksWhichTrunk(t *testing.T) {
	for _, params := range []proxy.RequestParameters{nil, {"which_trunk": 1}, {"which_trunk": "side"}} {
		action, err := extractAction(t.Context(), "actuate_trunk", params)
		var ae *apierr.Error
		if action != nil || !errors.As(err, &ae) || ae.Code != http.StatusBadRequest || ae.Word != "invalid_parameter" {
			t.Errorf("extractAction(actuate_trunk, %v): action %v, err %v; want no action and 400 invalid_parameter", params, action != nil, err)
		}
	}
	if action, err := extractAction(t.Context(), "actuate_trunk", proxy.RequestParameters{"which_trunk": "front"}); action == nil || err != nil {
		t.Errorf("extractAction(actuate_trunk, front): action %v, err %v; want an action", action != nil, err)
	}
}
