package signer

import (
	"crypto/ecdh"
	"crypto/rand"
	"testing"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
)

// carKey returns a fresh vehicle public key, uncompressed.
func carKey(t testing.TB) []byte {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey().Bytes()
}

func appKey(t testing.TB) protocol.ECDHPrivateKey {
	t.Helper()
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return protocol.UnmarshalECDHPrivateKey(k.Bytes())
}

// TestSessionKeysKeepDerivedSessions: the wrapper hands back the library's own session for a car
// it has seen, derives one only for a car it has not (or has dropped), and the sessions it gives
// agree with the library's.
func TestSessionKeysKeepDerivedSessions(t *testing.T) {
	key := appKey(t)
	k := newSessionKeys(key, 2)
	a, b, c := carKey(t), carKey(t), carKey(t)
	sa, err := k.Exchange(a)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := k.Exchange(a)
	if again != sa || k.count() != 1 {
		t.Errorf("second Exchange for the same car: same session %v, %d derivations; want the kept one and 1", again == sa, k.count())
	}
	direct, _ := key.Exchange(a)
	tag1, _ := sa.SessionInfoHMAC([]byte("VIN"), []byte("challenge"), []byte("info"))
	tag2, _ := direct.SessionInfoHMAC([]byte("VIN"), []byte("challenge"), []byte("info"))
	if string(tag1) != string(tag2) {
		t.Error("the kept session computes other tags than the library's own")
	}
	_, _ = k.Exchange(b)
	_, _ = k.Exchange(c) // over the bound of 2: a, the least recently used, goes
	if _, _ = k.Exchange(a); k.count() != 4 {
		t.Errorf("%d derivations, want 4 (a, b, c, and a again after it was dropped)", k.count())
	}
	if _, err := k.Exchange([]byte{4, 1, 2}); err == nil {
		t.Error("a malformed car key gave a session")
	}
}

// BenchmarkExchange is what a command costs when its car's derived session is not kept: the
// library's ECDH and AES-GCM setup. "kept" is the cost when it is.
func BenchmarkExchange(b *testing.B) {
	key := appKey(b)
	car := carKey(b)
	b.Run("derive", func(b *testing.B) {
		for b.Loop() {
			if _, err := key.Exchange(car); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("kept", func(b *testing.B) {
		k := newSessionKeys(key, 0)
		for b.Loop() {
			if _, err := k.Exchange(car); err != nil {
				b.Fatal(err)
			}
		}
	})
}
