package signer

import (
	"bytes"
	"encoding/json"
	"testing"

	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"google.golang.org/protobuf/proto"
)

// isHandshake reads the wire format itself; it must agree with a full decode of the message.
func TestIsHandshakeAgreesWithDecoding(t *testing.T) {
	to := &universal.Destination{SubDestination: &universal.Destination_Domain{Domain: universal.Domain_DOMAIN_VEHICLE_SECURITY}}
	from := &universal.Destination{SubDestination: &universal.Destination_RoutingAddress{RoutingAddress: bytes.Repeat([]byte{7}, 16)}}
	encode := func(m *universal.RoutableMessage) []byte {
		t.Helper()
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	handshake := encode(&universal.RoutableMessage{
		ToDestination:   to,
		FromDestination: from,
		Payload:         &universal.RoutableMessage_SessionInfoRequest{SessionInfoRequest: &universal.SessionInfoRequest{PublicKey: bytes.Repeat([]byte{4}, 65)}},
		Uuid:            bytes.Repeat([]byte{1}, 16),
	})
	command := encode(&universal.RoutableMessage{
		ToDestination:   to,
		FromDestination: from,
		Payload:         &universal.RoutableMessage_ProtobufMessageAsBytes{ProtobufMessageAsBytes: []byte{0x0a, 0x02, 0x08, 0x01}},
		Uuid:            bytes.Repeat([]byte{2}, 16),
		Flags:           1,
	})
	info := encode(&universal.RoutableMessage{
		ToDestination: from,
		Payload:       &universal.RoutableMessage_SessionInfo{SessionInfo: []byte{0x08, 0x01}},
	})
	cases := map[string][]byte{
		"session info request":            handshake,
		"command":                         command,
		"session info":                    info,
		"empty":                           {},
		"garbage":                         {0xff, 0xff, 0xff},
		"truncated request":               handshake[:len(handshake)-3],
		"request, then a command (oneof)": append(append([]byte{}, handshake...), command...),
		"command, then a request (oneof)": append(append([]byte{}, command...), handshake...),
	}
	for name, b := range cases {
		var m universal.RoutableMessage
		want := proto.Unmarshal(b, &m) == nil && m.GetSessionInfoRequest() != nil
		if got := isHandshake(b); got != want {
			t.Errorf("%s: isHandshake = %v, decoding says %v", name, got, want)
		}
	}
	if !isHandshake(handshake) || isHandshake(command) {
		t.Fatal("a session info request must count as a handshake and a command must not")
	}
}

// The signed_command body is laid out by hand; it must be what json.Marshal makes of it.
func TestSignedCommandBodyIsTheJSONOfTheMessage(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 62, 63, 64, 255, 1000} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte((i*131 + n) % 256) //nolint:gosec // G115: reduced mod 256; every byte value, so "+" and "/" appear in the base64
		}
		want, err := json.Marshal(struct {
			RoutableMessage []byte `json:"routable_message"`
		}{msg})
		if err != nil {
			t.Fatal(err)
		}
		if got := signedCommandBody(msg); !bytes.Equal(got, want) {
			t.Errorf("%d bytes: body %s, want %s", n, got, want)
		}
	}
}
