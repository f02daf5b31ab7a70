package signer

import (
	"context"
)

// MarkLegacy records whether vin lacks the Vehicle Command Protocol (legacy true: its commands go
// to the REST API as the app wrote them), as a fleet_status answer said. The first command to
// such a car then skips the signed_command call the Fleet API would refuse with 422. It reports
// whether the record changed. It waits for the car's turn, within the signer's timeout.
func (s *Signer) MarkLegacy(ctx context.Context, vin string, legacy bool) (bool, error) {
	if err := checkVIN(vin); err != nil {
		return false, err
	}
	if rec, ok := s.records.Peek(vin); (ok && rec.Legacy == legacy) || (!ok && !legacy) {
		return false, nil
	}
	t, err := s.acquire(ctx, vin)
	if err != nil {
		return false, err
	}
	rec := t.Record()
	if rec.Legacy == legacy {
		t.Release()
		return false, nil
	}
	rec.Legacy = legacy
	t.Commit(rec)
	return true, nil
}
