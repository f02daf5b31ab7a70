// Package sessions keeps vehicle sessions as plain data: for each VIN a small Record with, per
// domain, what the vehicle sent in the clear (its public key, epoch, counter and clock) and the
// local instant its clock read zero. No goroutine and no live object stands behind an idle car,
// and nothing in a Record is secret: the session key is derived again by ECDH from the car's
// public key and the app's private key whenever a signer is built from it.
//
// A Store holds the Records of up to a bounded number of cars in memory (least recently used
// dropped first) and, with a file, in an embedded bbolt database that is written only where
// something changed, in batches, so one command's persistence costs O(1) whatever the fleet
// size. The JSON session file of earlier versions is read once and converted.
package sessions

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Domain indexes a Record's sessions: one per vehicle domain that signs commands.
type Domain int

// The two domains a command can go to.
const (
	VCSEC Domain = iota
	Infotainment
	numDomains
)

// String names the domain as the protocol does.
func (d Domain) String() string {
	if d == VCSEC {
		return "VCSEC"
	}
	return "Infotainment"
}

// Session is one domain's session state.
type Session struct {
	// Valid reports whether the rest holds a session; the zero value holds none.
	Valid bool
	// CarKey is the domain's public key, uncompressed (0x04‖X‖Y).
	CarKey [65]byte
	// Epoch names the vehicle's boot of this domain.
	Epoch [16]byte
	// Counter is the last counter the proxy signed with.
	Counter uint32
	// Clock is the vehicle's clock, in seconds, in the last session info the signer accepted.
	// The library accepts later session info only if its clock is not behind this.
	Clock uint32
	// TimeZero is the local time, in Unix nanoseconds, at which the vehicle's clock read zero.
	// It is carried exactly from the session info that set it, never re-derived from a
	// whole-second clock, so rebuilding a signer from a Record does not drift.
	TimeZero int64
}

// Record is one VIN's state.
type Record struct {
	// Sessions holds the session of each domain, indexed by Domain.
	Sessions [numDomains]Session
	// Legacy reports whether the vehicle answered that it does not support signed commands; its
	// commands go to the REST API.
	Legacy bool
}

// Empty reports whether r holds nothing worth keeping.
func (r *Record) Empty() bool {
	return !r.Legacy && !r.Sessions[VCSEC].Valid && !r.Sessions[Infotainment].Valid
}

// maxVehicleClock is the largest vehicle clock, in seconds, the protocol can express in a
// command's expiry (2^30 s; larger expiries are refused by the library before anything is sent).
const maxVehicleClock = 1 << 30

// Usable reports whether s can authorize a command at now: it holds a session whose time zero is
// not in the future (a host clock that stepped back, or a hostile file), whose clock, with a
// minute of command lifetime, still fits the protocol's expiry field and agrees with time zero,
// and whose counter can still go up. A session that is not usable must be treated as absent: the library would otherwise
// retry the authorization until the deadline without sending anything.
func (s *Session) Usable(now time.Time) bool {
	if !s.Valid || s.CarKey[0] != 4 || s.Counter == ^uint32(0) {
		return false
	}
	age := now.UnixNano() - s.TimeZero
	// The clock the vehicle last reported cannot lie ahead of the time since its zero (a second
	// of slack for rounding): if it does, time zero or the clock is wrong.
	return age >= 0 && age/int64(time.Second)+60 < maxVehicleClock && int64(s.Clock) <= age/int64(time.Second)+1
}

// The binary form of a Record, as the file store keeps it: a version byte, a flags byte (bit 0
// legacy, bit 1 VCSEC present, bit 2 Infotainment present), then each present session as
// CarKey(65) Epoch(16) Counter(4) Clock(4) TimeZero(8), big-endian.
const (
	recordVersion = 1
	sessionBytes  = 65 + 16 + 4 + 4 + 8
)

// MarshalBinary encodes r.
func (r *Record) MarshalBinary() ([]byte, error) {
	out := make([]byte, 2, 2+numDomains*sessionBytes)
	out[0] = recordVersion
	if r.Legacy {
		out[1] |= 1
	}
	for d := range numDomains {
		s := &r.Sessions[d]
		if !s.Valid {
			continue
		}
		out[1] |= 2 << d
		out = append(out, s.CarKey[:]...)
		out = append(out, s.Epoch[:]...)
		out = binary.BigEndian.AppendUint32(out, s.Counter)
		out = binary.BigEndian.AppendUint32(out, s.Clock)
		out = binary.BigEndian.AppendUint64(out, uint64(s.TimeZero)) //nolint:gosec // G115: stores the bits; decoding converts them back
	}
	return out, nil
}

// errRecord is a stored record that does not decode.
var errRecord = errors.New("not a session record")

// UnmarshalBinary decodes what MarshalBinary wrote.
func (r *Record) UnmarshalBinary(b []byte) error {
	if len(b) < 2 || b[0] != recordVersion {
		return errRecord
	}
	*r = Record{Legacy: b[1]&1 != 0}
	rest := b[2:]
	for d := range numDomains {
		if b[1]&(2<<d) == 0 {
			continue
		}
		if len(rest) < sessionBytes {
			return fmt.Errorf("%w: %d bytes short", errRecord, sessionBytes-len(rest))
		}
		s := &r.Sessions[d]
		s.Valid = true
		copy(s.CarKey[:], rest[:65])
		copy(s.Epoch[:], rest[65:81])
		s.Counter = binary.BigEndian.Uint32(rest[81:])
		s.Clock = binary.BigEndian.Uint32(rest[85:])
		s.TimeZero = int64(binary.BigEndian.Uint64(rest[89:])) //nolint:gosec // G115: the bits MarshalBinary stored
		rest = rest[sessionBytes:]
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes too many", errRecord, len(rest))
	}
	return nil
}
