package fleetsim

import (
	"crypto/ecdh"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/signatures"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
)

// Inputs of the published vectors (protocol.md and fleet-api.md §3).
const (
	vectorVIN       = "5YJ30123456789ABC"
	vectorEpoch     = "4c463f9cc0d3d26906e982ed224adde6"
	vectorChallenge = "1588d5a30eabc6f8fc9a951b11f6fd11"
	vectorInfo      = "0806124104c7a1f47138486aa4729971494878d33b1a24e39571f748a6e16c5955b3d877d3a6aaa0e955166474af5d32c410f439a2234137ad1bb085fd4e8813c958f11d971a104c463f9cc0d3d26906e982ed224adde6255a0a0000"
	vectorPayload   = "120452020801"
	vectorCounter   = 7
	vectorExpiresAt = 2655
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("hex %q: %v", s, err)
	}
	return b
}

// loadECKey reads a SEC1 "EC PRIVATE KEY" PEM from testdata.
func loadECKey(t *testing.T, name string) *ecdh.PrivateKey {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("%s: no PEM block", name)
	}
	k, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	e, err := k.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestPublishedVectors(t *testing.T) {
	vehicleKey := loadECKey(t, "vehicle.key")
	clientKey := loadECKey(t, "client.key")

	if got, want := hex.EncodeToString(vehicleKey.PublicKey().Bytes()), "04c7a1f47138486aa4729971494878d33b1a24e39571f748a6e16c5955b3d877d3a6aaa0e955166474af5d32c410f439a2234137ad1bb085fd4e8813c958f11d97"; got != want {
		t.Fatalf("vehicle public key = %s, want %s", got, want)
	}

	k, err := sharedKey(vehicleKey, clientKey.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	// The vehicle's side and the client's side must agree.
	k2, err := sharedKey(clientKey, vehicleKey.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(k, k2); diff != "" {
		t.Fatalf("K differs between the two sides (-vehicle +client):\n%s", diff)
	}

	// The session info of protocol.md decodes as the document says.
	var info signatures.SessionInfo
	if err := proto.Unmarshal(unhex(t, vectorInfo), &info); err != nil {
		t.Fatal(err)
	}
	if info.GetCounter() != 6 || info.GetClockTime() != 2650 || hex.EncodeToString(info.GetEpoch()) != vectorEpoch {
		t.Errorf("session info = %v", &info)
	}
	siTag, err := sessionInfoTag(k, vectorVIN, unhex(t, vectorChallenge), unhex(t, vectorInfo))
	if err != nil {
		t.Fatal(err)
	}
	siMeta, err := sessionInfoMetadata(vectorVIN, unhex(t, vectorChallenge))
	if err != nil {
		t.Fatal(err)
	}

	got := map[string]string{
		"K":                     hex.EncodeToString(k),
		"session info key":      hex.EncodeToString(sessionInfoKey(k)),
		"command key":           hex.EncodeToString(commandKey(k)),
		"session info metadata": hex.EncodeToString(siMeta),
		"session info tag":      hex.EncodeToString(siTag),
	}
	want := map[string]string{
		"K":                     "1b2fce19967b79db696f909cff89ea9a",
		"session info key":      "fceb679ee7bca756fcd441bf238bf2f338629b41d9eb9c67be1b32c9672ce300",
		"command key":           "6d3a14d0b6d762e4f076739e2cf6edd291d2e56e3f25bc6a2af5cb26dc753b14",
		"session info metadata": "000106021135594a333031323334353637383941424306101588d5a30eabc6f8fc9a951b11f6fd11ff",
		"session info tag":      "996c1fe38331be138f8039c194b14db2198846ed7d8251e6749284d7b32ea002",
	}

	commands := []struct {
		name   string
		domain universal.Domain
		flags  uint32
		meta   string // "" = not published
		tag    string
	}{
		{"infotainment flags 0", universal.Domain_DOMAIN_INFOTAINMENT, 0,
			"000108010103021135594a333031323334353637383941424303104c463f9cc0d3d26906e982ed224adde6040400000a5f050400000007ff",
			"6d75c4e7c5e144996e22f1bdf694e453c94774a636e4382053cb8e358bf25ea8"},
		{"infotainment flags 2", universal.Domain_DOMAIN_INFOTAINMENT, 2, "",
			"f3c24554a00e42160e6acef6dd4f1c8ef9c30ed6391ec818d75663bee00a47f0"},
		{"vcsec flags 0", universal.Domain_DOMAIN_VEHICLE_SECURITY, 0, "",
			"2e5096a085fa1c3b14ebb7814b577dec6c4c01ffb163071e26ac511da40d0b56"},
		{"vcsec flags 2", universal.Domain_DOMAIN_VEHICLE_SECURITY, 2, "",
			"43b70f74ceca1cd1e8c0ee1ab134028f8498ec3db3169aaee2c3402f4f4e1d6d"},
	}
	for _, c := range commands {
		meta, err := commandMetadata(c.domain, vectorVIN, unhex(t, vectorEpoch), vectorExpiresAt, vectorCounter, c.flags)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.meta != "" {
			got[c.name+" metadata"] = hex.EncodeToString(meta)
			want[c.name+" metadata"] = c.meta
		}
		got[c.name+" tag"] = hex.EncodeToString(commandTag(k, meta, unhex(t, vectorPayload)))
		want[c.name+" tag"] = c.tag
	}

	reqHash := append([]byte{8}, unhex(t, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")...)
	aad, err := responseAAD(universal.Domain_DOMAIN_INFOTAINMENT, vectorVIN, 1, 0, reqHash, universal.MessageFault_E_MESSAGEFAULT_ERROR_NONE)
	if err != nil {
		t.Fatal(err)
	}
	got["response AAD"] = hex.EncodeToString(aad)
	want["response AAD"] = "67dce6212a0264431aaf04255433dc0591bc18ab40c3501fe0a710183d8a1885"

	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("vectors (-published +ours):\n%s", diff)
	}
}

// TestAESGCMMetadataExample checks the metadata of protocol.md's AES-GCM example, which differs
// from the HMAC one only in the signature type.
func TestAESGCMMetadataExample(t *testing.T) {
	m := newMetadata()
	m.add(signatures.Tag_TAG_SIGNATURE_TYPE, []byte{byte(signatures.SignatureType_SIGNATURE_TYPE_AES_GCM_PERSONALIZED)})
	m.add(signatures.Tag_TAG_DOMAIN, []byte{byte(universal.Domain_DOMAIN_INFOTAINMENT)})
	m.add(signatures.Tag_TAG_PERSONALIZATION, []byte(vectorVIN))
	m.add(signatures.Tag_TAG_EPOCH, unhex(t, vectorEpoch))
	m.addUint32(signatures.Tag_TAG_EXPIRES_AT, vectorExpiresAt)
	m.addUint32(signatures.Tag_TAG_COUNTER, vectorCounter)
	meta, err := m.bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := "000105010103021135594a333031323334353637383941424303104c463f9cc0d3d26906e982ed224adde6040400000a5f050400000007ff"
	if got := hex.EncodeToString(meta); got != want {
		t.Errorf("metadata = %s, want %s", got, want)
	}
}

func TestMetadataRules(t *testing.T) {
	// Each rule on a fresh metadata, since the first error sticks.
	m := newMetadata()
	m.add(signatures.Tag_TAG_COUNTER, []byte{1})
	m.add(signatures.Tag_TAG_DOMAIN, []byte{1})
	if _, err := m.bytes(); err == nil {
		t.Error("a falling tag was accepted")
	}
	m = newMetadata()
	m.add(signatures.Tag_TAG_COUNTER, []byte{1})
	m.add(signatures.Tag_TAG_FLAGS, make([]byte, 256))
	if _, err := m.bytes(); err == nil {
		t.Error("a 256-byte value was accepted")
	}
	m = newMetadata()
	m.add(signatures.Tag_TAG_COUNTER, []byte{1})
	m.add(signatures.Tag_TAG_FLAGS, nil)
	if _, err := m.bytes(); err != nil {
		t.Errorf("a nil value must be skipped, got %v", err)
	}
	// The protocol.md example: SERIALIZE({COUNTER: 100, VIN: "abc"}).
	m = newMetadata()
	m.add(signatures.Tag_TAG_PERSONALIZATION, []byte("abc"))
	m.addUint32(signatures.Tag_TAG_COUNTER, 100)
	meta, err := m.bytes()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(meta), "0203616263050400000064ff"; got != want {
		t.Errorf("serialize = %s, want %s", got, want)
	}
}

func TestSlidingWindow(t *testing.T) {
	type state struct {
		highest uint32
		window  uint64
	}
	steps := []struct {
		counter uint32
		ok      bool
	}{
		{5, true},   // first
		{5, false},  // repeat of the highest
		{3, true},   // out of order, in the window
		{3, false},  // repeated
		{4, true},   // fills the gap
		{40, true},  // jump ahead
		{8, true},   // 32 behind: still inside
		{7, false},  // 33 behind: outside
		{39, true},  // just behind
		{39, false}, // repeated
		{41, true},
		{40, false}, // the old highest stays marked
	}
	var s state
	for i, st := range steps {
		h, w, ok := slidingWindow(s.highest, s.window, st.counter)
		if ok != st.ok {
			t.Fatalf("step %d counter %d: ok = %v, want %v (highest %d window %b)", i, st.counter, ok, st.ok, s.highest, s.window)
		}
		if ok {
			s = state{h, w}
		}
	}
}

func TestNewTestVIN(t *testing.T) {
	// A VIN with a well-known correct check digit ('X').
	if !ValidVIN("1M8GDM9AXKP042788") {
		t.Error("1M8GDM9AXKP042788 should be valid")
	}
	if ValidVIN("1M8GDM9A1KP042788") {
		t.Error("a wrong check digit was accepted")
	}
	seen := map[string]int{}
	for _, i := range []int{0, 1, 2, 3, 999_999, 1_000_000, 1_000_001, 29_999_999, -5} {
		vin := NewTestVIN(i)
		if !ValidVIN(vin) {
			t.Errorf("NewTestVIN(%d) = %q is not valid", i, vin)
		}
		if j, dup := seen[vin]; dup && j != -i {
			t.Errorf("NewTestVIN(%d) = NewTestVIN(%d) = %q", i, j, vin)
		}
		seen[vin] = i
	}
}
