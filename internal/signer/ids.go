package signer

import (
	"errors"
	"net/http"

	"github.com/teslaproxy/proxy/internal/vehicleid"
)

// resolve returns the VIN of the numeric vehicle id in a command path. When the Fleet API
// refused the vehicle-list call (a bad token, a rate limit), it relays that answer and returns
// "" with a nil error.
func (s *Signer) resolve(w http.ResponseWriter, r *http.Request, id string) (string, error) {
	vin, err := s.ids.VIN(r.Context(), id)
	var re *vehicleid.ReplyError
	if errors.As(err, &re) {
		re.Reply.Write(w)
		return "", nil
	}
	return vin, err
}
