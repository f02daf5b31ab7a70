package jws

import (
	"bytes"
	"crypto/ecdh"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"

	"filippo.io/nistec"
)

// scalarSize is the length of a P-256 scalar or coordinate in bytes.
const scalarSize = 32

// groupOrder is n, the order of P-256's base point, big-endian (SEC 2 §2.4.2). A signature's r
// must be below it.
var groupOrder = [scalarSize]byte{
	0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
}

// generator is G, the P-256 base point, in uncompressed form (SEC 1 §2.3.3). It is the first
// item hashed into every challenge. TestGenerator checks it against crypto/ecdh.
var generator = [1 + 2*scalarSize]byte{
	0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40,
	0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2,
	0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e,
	0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51,
	0xf5,
}

// challenge computes c = SHA-256(LV(G) ‖ LV(V) ‖ LV(A) ‖ LV(msg)), where LV(x) is x's length as
// four big-endian bytes followed by x (fleet-api.md §2; RFC 8235 §3.3 with explicit lengths so
// that no two inputs hash alike). nonce is V and pub is A, both uncompressed.
func challenge(nonce, pub, msg []byte) []byte {
	h := sha256.New()
	writeLV(h, generator[:])
	writeLV(h, nonce)
	writeLV(h, pub)
	writeLV(h, msg)
	return h.Sum(nil)
}

func writeLV(h hash.Hash, b []byte) {
	var n [4]byte
	// Every input is a point, a digest or a JWS payload under the request body limit, far below
	// 4 GiB, so the length fits. hash.Hash writes never fail.
	binary.BigEndian.PutUint32(n[:], uint32(len(b))) //nolint:gosec // G115: bounded, see above
	h.Write(n[:])
	h.Write(b)
}

// verifySchnorr checks a Tesla.SS256 signature Vx‖Vy‖r over msg by A = pub: it accepts when
// c·A + r·G = V, with c the challenge above. A signer computed r = v − a·c for V = v·G, so an
// honest signature gives c·aG + (v − ac)·G = v·G.
//
// Everything here is public (the key, the message, the signature), so this code does not try to
// be constant-time. It is stricter than vehicle-command's verifier in two ways that an honest
// signer never notices: V must be a point on the curve, and r must be below the group order n,
// which removes the second spelling r+n of each signature.
func verifySchnorr(pub *ecdh.PublicKey, msg, sig []byte) error {
	if pub == nil || pub.Curve() != ecdh.P256() {
		return fmt.Errorf("%w: verification needs a P-256 public key", ErrInvalidKey)
	}
	if len(sig) != SignatureSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrInvalidSignature, len(sig), SignatureSize)
	}
	nonce := make([]byte, 1+2*scalarSize)
	nonce[0] = 0x04
	copy(nonce[1:], sig[:2*scalarSize])
	// SetBytes rejects coordinates ≥ p and points off the curve; an uncompressed encoding cannot
	// name the point at infinity.
	if _, err := nistec.NewP256Point().SetBytes(nonce); err != nil {
		return fmt.Errorf("%w: nonce is not a point on P-256", ErrInvalidSignature)
	}
	r := sig[2*scalarSize:]
	if bytes.Compare(r, groupOrder[:]) >= 0 {
		return fmt.Errorf("%w: r is not below the group order", ErrInvalidSignature)
	}

	a := pub.Bytes()
	A, err := nistec.NewP256Point().SetBytes(a)
	if err != nil { // crypto/ecdh validated the key already, so this is a bug, not bad input.
		return fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	// c may exceed n; scalar multiplication works modulo the group order, so that is harmless.
	cA, err := nistec.NewP256Point().ScalarMult(A, challenge(nonce, a, msg))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSignature, err)
	}
	rG, err := nistec.NewP256Point().ScalarBaseMult(r)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSignature, err)
	}
	// The point at infinity encodes as the single byte 0x00, which no valid V equals.
	if !bytes.Equal(cA.Add(cA, rG).Bytes(), nonce) {
		return ErrInvalidSignature
	}
	return nil
}
