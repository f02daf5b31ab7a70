package signer

import (
	"context"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/cache"
	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/signatures"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"github.com/teslamotors/vehicle-command/pkg/vehicle"
	"google.golang.org/protobuf/proto"

	"github.com/teslaproxy/proxy/internal/sessions"
)

// A command's signer is built from the car's stored record when the command arrives and taken
// apart after it: no vehicle object, dispatcher goroutine or connection outlives the command.

// storeDomain maps a protocol domain to the record's index.
func storeDomain(d universal.Domain) sessions.Domain {
	if d == universal.Domain_DOMAIN_VEHICLE_SECURITY {
		return sessions.VCSEC
	}
	return sessions.Infotainment
}

// grow appends n zero elements to s. It lets this package make entries of the library's cache,
// whose element type lives in an internal package and cannot be named here.
func grow[E any](s []E, n int) []E { return append(s, make([]E, n)...) }

// entries returns a session cache holding rec's usable sessions of the given domains, written so
// that the library's import gives back exactly the stored time zero: the library sets time zero
// to created_at minus the clock, so created_at is time zero plus the clock.
func entries(vin string, rec *sessions.Record, now time.Time, domains ...sessions.Domain) *cache.SessionCache {
	c := cache.New(0)
	for _, d := range domains {
		s := &rec.Sessions[d]
		if !s.Usable(now) {
			continue
		}
		info, err := proto.Marshal(&signatures.SessionInfo{
			Counter:   s.Counter,
			PublicKey: s.CarKey[:],
			Epoch:     s.Epoch[:],
			ClockTime: s.Clock,
		})
		if err != nil {
			continue
		}
		es := grow(c.Vehicles[vin], 1)
		e := &es[len(es)-1]
		e.Domain = d.ProtocolDomain()
		e.SessionInfo = info
		e.CreatedAt = time.Unix(0, s.TimeZero).Add(time.Duration(s.Clock) * time.Second)
		c.Vehicles[vin] = es
	}
	return c
}

// open builds a vehicle for one command from rec's sessions of the given domains, and starts its
// dispatcher. The caller must call v.Disconnect.
func (s *Signer) open(ctx context.Context, cn *conn, rec *sessions.Record, domains ...sessions.Domain) (*vehicle.Vehicle, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	v, err := vehicle.NewVehicle(cn, s.key, entries(cn.vin, rec, time.Now(), domains...))
	if err != nil {
		// A stored session the library cannot load (a car key that is not on the curve, say) is
		// no reason to fail: start without it.
		if v, err = vehicle.NewVehicle(cn, s.key, nil); err != nil {
			return nil, err
		}
	}
	// Connect starts the dispatcher's goroutine and waits until it runs. It must not give up
	// early: if it returned on a done context before the goroutine had registered itself,
	// Disconnect would find nothing to stop and the goroutine would run forever (issue 19,
	// defect 3). Waiting costs nothing, since the goroutine needs no outside event to start.
	if err := v.Connect(context.WithoutCancel(ctx)); err != nil {
		v.Disconnect()
		return nil, err
	}
	return v, nil
}

// slack is how far the time zero the proxy computed from a session info may lie outside the
// window the library's export allows, for the moment between the proxy receiving the session
// info and the library processing it.
const slack = 250 * time.Millisecond

// capture writes v's sessions back into rec. The counter and epoch come from the library's
// export; time zero and clock come from the session info that the library accepted, which conn
// saw arrive, so they are exact. The library exports its clock in whole seconds, which only
// bounds its time zero to a one-second window; of the session infos that fit the epoch and that
// window, the latest is the one it took.
func capture(v *vehicle.Vehicle, cn *conn, rec *sessions.Record) {
	out := cache.New(0)
	if v.UpdateCachedSessions(out) != nil {
		return
	}
	for _, e := range out.Vehicles[cn.vin] {
		d, ok := sessions.FromProtocolDomain(e.Domain)
		var info signatures.SessionInfo
		if !ok || proto.Unmarshal(e.SessionInfo, &info) != nil || len(info.GetPublicKey()) != 65 || len(info.GetEpoch()) != 16 {
			continue
		}
		prev := rec.Sessions[d]
		next := sessions.Session{Valid: true, Counter: info.GetCounter()}
		copy(next.CarKey[:], info.GetPublicKey())
		copy(next.Epoch[:], info.GetEpoch())
		// The library's time zero lies in (hi-1s, hi].
		hi := e.CreatedAt.Add(-time.Duration(info.GetClockTime()) * time.Second).UnixNano()
		fits := func(tz int64) bool {
			return tz > hi-int64(time.Second)-int64(slack) && tz <= hi+int64(slack)
		}
		switch seen, found := cn.lastInfo(d, next.Epoch, fits); {
		case found:
			next.Clock, next.TimeZero = seen.clock, seen.timeZero
		case prev.Valid && prev.CarKey == next.CarKey && prev.Epoch == next.Epoch && fits(prev.TimeZero):
			next.Clock, next.TimeZero = prev.Clock, prev.TimeZero
			if next.Counter < prev.Counter {
				next.Counter = prev.Counter
			}
		default:
			// Not expected: keep what the export says, to within half a second.
			next.Clock, next.TimeZero = info.GetClockTime(), hi-int64(time.Second/2)
		}
		rec.Sessions[d] = next
	}
}
