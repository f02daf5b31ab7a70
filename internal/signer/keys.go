package signer

import (
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
)

// exchanger is the method set of vehicle-command's ECDH key, with the type of the session it
// derives as a parameter: the library's session type lives in an internal package, so it cannot
// be named here, but it can be inferred from the key (Go infers a type argument from the methods
// of an interface value).
type exchanger[S any] interface {
	Exchange(remotePublicBytes []byte) (S, error)
	PublicBytes() []byte
	SchnorrSignature(message []byte) ([]byte, error)
}

// sessionKeys is the command key as the library sees it, with the sessions it derives kept for
// the cars commanded most recently. Building a signer from a stored record asks the key for the
// car's session (an ECDH and an AES-GCM setup); a car commanded again soon gets the same session
// back without either. The derived sessions stay in memory only: nothing on disk or in a shared
// store can sign for a car.
type sessionKeys[S any] struct {
	exchanger[S]
	derived *lru.Cache[string, S]
	// derivations counts the ECDH derivations done (cache misses).
	derivations atomic.Int64
}

// keySessionsKept bounds how many derived sessions are kept. Each holds the AES key schedule and
// GCM tables, about 1.1 KB, so the default costs about 4.5 MB. A command to a car whose session
// is not kept pays one ECDH (BenchmarkExchange: about 120 µs on a 2-core machine), which is what
// the reference proxy pays for every command.
const keySessionsKept = 4096

// newSessionKeys wraps key; size bounds the sessions kept (zero means keySessionsKept).
func newSessionKeys[S any](key exchanger[S], size int) *sessionKeys[S] {
	if size <= 0 {
		size = keySessionsKept
	}
	c, _ := lru.New[string, S](size) // only fails for a size below 1
	return &sessionKeys[S]{exchanger: key, derived: c}
}

// Exchange returns the session with the car whose public key is remote, deriving it only if it
// is not kept. The session depends on nothing but the two keys.
func (k *sessionKeys[S]) Exchange(remote []byte) (S, error) {
	if s, ok := k.derived.Get(string(remote)); ok {
		return s, nil
	}
	s, err := k.exchanger.Exchange(remote)
	if err != nil {
		return s, err
	}
	k.derivations.Add(1)
	k.derived.Add(string(remote), s)
	return s, nil
}

// derivationCounter is what the Signer keeps of a sessionKeys, whatever its type argument.
type derivationCounter interface {
	protocol.ECDHPrivateKey
	count() int64
}

func (k *sessionKeys[S]) count() int64 { return k.derivations.Load() }

var _ derivationCounter = newSessionKeys(protocol.ECDHPrivateKey(nil), 1)
