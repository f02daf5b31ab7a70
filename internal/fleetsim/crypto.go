package fleetsim

// The vehicle side of the Vehicle Command Protocol's cryptography, written from
// fleet-api.md §3 and vehicle-command's pkg/protocol/protocol.md (not from the library's code):
//
//	K                = SHA1(X coordinate of ECDH(v, C))[:16]
//	session-info key = HMAC-SHA256(K, "session info")
//	command key      = HMAC-SHA256(K, "authenticated command")
//	metadata         = TLV items in rising tag order, then 0xFF
//	session-info tag = HMAC(session-info key, TLV(0,[6]) ‖ TLV(2,VIN) ‖ TLV(6,challenge) ‖ 0xFF ‖ info)
//	command tag      = HMAC(command key, M ‖ payload)
//	response AAD     = SHA256(TLV(0,[9]) ‖ TLV(1,domain) ‖ TLV(2,VIN) ‖ TLV(5,counter) ‖ TLV(7,flags) ‖ TLV(8,request hash) ‖ TLV(9,fault) ‖ 0xFF)

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // SHA-1 is what the protocol specifies for deriving K.
	"crypto/sha256"
	"encoding/binary"
	"errors"

	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/signatures"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
)

var (
	errMetadataOrder   = errors.New("metadata tags must be added in rising order")
	errMetadataTooLong = errors.New("metadata value longer than 255 bytes")
)

// Labels that turn K into the two HMAC subkeys (protocol.md "Response authentication" and
// "HMAC-SHA256 authentication").
const (
	labelSessionInfo = "session info"
	labelCommand     = "authenticated command"
)

// metadata serializes protocol metadata: tag(1) ‖ len(1) ‖ value per item, tags strictly rising,
// then a final 0xFF. The first error sticks: later adds are ignored and bytes returns it.
type metadata struct {
	buf     []byte
	lastTag int
	err     error
}

func newMetadata() *metadata { return &metadata{lastTag: -1} }

// add appends one item. A nil value is skipped, as the spec says.
func (m *metadata) add(tag signatures.Tag, value []byte) {
	switch {
	case m.err != nil || value == nil:
		return
	case int(tag) <= m.lastTag:
		m.err = errMetadataOrder
	case len(value) > 255:
		m.err = errMetadataTooLong
	default:
		m.buf = append(m.buf, byte(tag), byte(len(value))) //nolint:gosec // G115: tags are below 256 (signatures.Tag) and the length was checked above
		m.buf = append(m.buf, value...)
		m.lastTag = int(tag)
	}
}

// addUint32 appends an integer item as 4 big-endian bytes.
func (m *metadata) addUint32(tag signatures.Tag, v uint32) {
	m.add(tag, binary.BigEndian.AppendUint32(nil, v))
}

// bytes returns the serialized metadata including the terminating 0xFF, or the first error.
func (m *metadata) bytes() ([]byte, error) {
	if m.err != nil {
		return nil, m.err
	}
	out := make([]byte, 0, len(m.buf)+1)
	out = append(out, m.buf...)
	return append(out, byte(signatures.Tag_TAG_END)), nil
}

// sharedKey derives K from the vehicle's private key and a client's public key.
func sharedKey(priv *ecdh.PrivateKey, peer *ecdh.PublicKey) ([]byte, error) {
	x, err := priv.ECDH(peer) // for the NIST curves this is the 32-byte X coordinate
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(x) //nolint:gosec // protocol-mandated
	return sum[:16], nil
}

func hmacSHA256(key []byte, parts ...[]byte) []byte {
	h := hmac.New(sha256.New, key)
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

func sessionInfoKey(k []byte) []byte { return hmacSHA256(k, []byte(labelSessionInfo)) }
func commandKey(k []byte) []byte     { return hmacSHA256(k, []byte(labelCommand)) }

// sessionInfoMetadata is the metadata that a session-info tag covers.
func sessionInfoMetadata(vin string, challenge []byte) ([]byte, error) {
	m := newMetadata()
	m.add(signatures.Tag_TAG_SIGNATURE_TYPE, []byte{byte(signatures.SignatureType_SIGNATURE_TYPE_HMAC)})
	m.add(signatures.Tag_TAG_PERSONALIZATION, []byte(vin))
	m.add(signatures.Tag_TAG_CHALLENGE, challenge)
	return m.bytes()
}

// sessionInfoTag authenticates an encoded SessionInfo for the client that sent challenge.
func sessionInfoTag(k []byte, vin string, challenge, encodedInfo []byte) ([]byte, error) {
	meta, err := sessionInfoMetadata(vin, challenge)
	if err != nil {
		return nil, err
	}
	return hmacSHA256(sessionInfoKey(k), meta, encodedInfo), nil
}

// commandMetadata is M for an HMAC-personalised command. Flags are included only when non-zero.
func commandMetadata(domain universal.Domain, vin string, epoch []byte, expiresAt, counter, flags uint32) ([]byte, error) {
	if domain < 0 || domain > 255 {
		return nil, errors.New("domain out of range")
	}
	m := newMetadata()
	m.add(signatures.Tag_TAG_SIGNATURE_TYPE, []byte{byte(signatures.SignatureType_SIGNATURE_TYPE_HMAC_PERSONALIZED)})
	m.add(signatures.Tag_TAG_DOMAIN, []byte{byte(domain)})
	m.add(signatures.Tag_TAG_PERSONALIZATION, []byte(vin))
	m.add(signatures.Tag_TAG_EPOCH, epoch)
	m.addUint32(signatures.Tag_TAG_EXPIRES_AT, expiresAt)
	m.addUint32(signatures.Tag_TAG_COUNTER, counter)
	if flags != 0 {
		m.addUint32(signatures.Tag_TAG_FLAGS, flags)
	}
	return m.bytes()
}

// commandTag is the HMAC tag a client must attach to an HMAC-personalised command.
func commandTag(k, meta, payload []byte) []byte {
	return hmacSHA256(commandKey(k), meta, payload)
}

// requestHash identifies the request a response answers: the signature type byte, then the
// request's tag, cut to 16 tag bytes for VCSEC.
func requestHash(domain universal.Domain, tag []byte) []byte {
	if domain == universal.Domain_DOMAIN_VEHICLE_SECURITY && len(tag) > 16 {
		tag = tag[:16]
	}
	out := []byte{byte(signatures.SignatureType_SIGNATURE_TYPE_HMAC_PERSONALIZED)}
	return append(out, tag...)
}

// responseAAD is the associated data of an encrypted response. Flags are the response's own and
// are always present; the fault is encoded as a 32-bit integer.
func responseAAD(domain universal.Domain, vin string, counter, flags uint32, reqHash []byte, fault universal.MessageFault_E) ([]byte, error) {
	m := newMetadata()
	m.add(signatures.Tag_TAG_SIGNATURE_TYPE, []byte{byte(signatures.SignatureType_SIGNATURE_TYPE_AES_GCM_RESPONSE)})
	m.add(signatures.Tag_TAG_DOMAIN, []byte{byte(domain)}) //nolint:gosec // G115: domains are 0, 2 and 3
	m.add(signatures.Tag_TAG_PERSONALIZATION, []byte(vin))
	m.addUint32(signatures.Tag_TAG_COUNTER, counter)
	m.addUint32(signatures.Tag_TAG_FLAGS, flags)
	m.add(signatures.Tag_TAG_REQUEST_HASH, reqHash)
	m.addUint32(signatures.Tag_TAG_FAULT, uint32(fault)) //nolint:gosec // G115: faults are small non-negative enum values
	meta, err := m.bytes()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(meta)
	return sum[:], nil
}

// encryptResponse seals plaintext with AES-128-GCM under K with a fresh 12-byte nonce and returns
// the nonce, the ciphertext without the tag, and the 16-byte tag.
func encryptResponse(k, plaintext, aad []byte) (nonce, ciphertext, tag []byte, err error) {
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, nil, nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, nil, err
	}
	nonce = make([]byte, gcm.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, nil, err
	}
	sealed := gcm.Seal(nil, nonce, plaintext, aad)
	cut := len(sealed) - gcm.Overhead()
	return nonce, sealed[:cut], sealed[cut:], nil
}

// slidingWindow is the Infotainment anti-replay check: the highest counter seen plus a bitmap of
// the 32 counters below it (bit i set means highest-(i+1) was used). It reports whether c is
// fresh and, if so, the updated state.
func slidingWindow(highest uint32, window uint64, c uint32) (uint32, uint64, bool) {
	const width = 32
	switch {
	case c > highest:
		shift := uint64(c - highest)
		if shift > width {
			window = 0
		} else {
			window <<= shift
		}
		if highest > 0 && shift <= width {
			window |= 1 << (shift - 1) // the old highest is now behind us
		}
		return c, window & (1<<width - 1), true
	case c == highest:
		return highest, window, false
	default:
		age := highest - c
		if age > width {
			return highest, window, false
		}
		bit := uint64(1) << (age - 1)
		if window&bit != 0 {
			return highest, window, false
		}
		return highest, window | bit, true
	}
}
