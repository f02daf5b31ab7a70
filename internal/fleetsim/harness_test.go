package fleetsim

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/teslamotors/vehicle-command/pkg/connector"
	"github.com/teslamotors/vehicle-command/pkg/connector/inet"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/signatures"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"github.com/teslamotors/vehicle-command/pkg/vehicle"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// startSim serves a new simulator over TLS on loopback. It registers the goroutine leak check
// first, so it runs after every other cleanup (cleanups run last-in, first-out).
func startSim(t *testing.T, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
	sim := New(opts)
	ts := httptest.NewUnstartedServer(sim)
	// Closing the server can cut a handshake short; that line is noise, not a failure.
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	return sim, ts
}

// clientKey is a client key in both the library's form and ours.
type clientKey struct {
	lib  protocol.ECDHPrivateKey
	priv *ecdh.PrivateKey
	pub  *ecdh.PublicKey
}

func newClientKey(t *testing.T) clientKey {
	t.Helper()
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return clientKey{lib: protocol.UnmarshalECDHPrivateKey(priv.Bytes()), priv: priv, pub: priv.PublicKey()}
}

// testConn is a minimal connector.Connector over the simulator's signed_command route. The HTTP
// exchange goes through vehicle-command's exported inet.SendFleetAPICommand, so its mapping of
// status codes and bodies to errors (408 "vehicle is offline", 422, …) is exercised as is.
type testConn struct {
	vin    string
	url    string
	client *http.Client

	mu       sync.Mutex
	inbox    chan []byte
	sent     [][]byte
	received [][]byte
}

func newTestConn(ts *httptest.Server, vin string) *testConn {
	return &testConn{vin: vin, url: ts.URL, client: ts.Client(), inbox: make(chan []byte, connector.BufferSize)}
}

func (c *testConn) Receive() <-chan []byte { return c.inbox }
func (c *testConn) VIN() string            { return c.vin }

func (c *testConn) PreferredAuthMethod() connector.AuthMethod { return connector.AuthMethodHMAC }
func (c *testConn) RetryInterval() time.Duration              { return 50 * time.Millisecond }
func (c *testConn) AllowedLatency() time.Duration             { return 10 * time.Second }

func (c *testConn) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inbox != nil {
		close(c.inbox)
		c.inbox = nil
	}
}

func (c *testConn) Send(ctx context.Context, buffer []byte) error {
	c.mu.Lock()
	c.sent = append(c.sent, append([]byte(nil), buffer...))
	c.mu.Unlock()
	body, err := inet.SendFleetAPICommand(ctx, c.client, "fleetsim-test", "Bearer test-token",
		c.url+"/api/1/vehicles/"+c.vin+"/signed_command", map[string][]byte{"routable_message": buffer})
	if err != nil {
		return err
	}
	var rsp struct {
		Response []byte `json:"response"`
	}
	if err := json.Unmarshal(body, &rsp); err != nil {
		return &protocol.CommandError{Err: err, PossibleSuccess: true}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.received = append(c.received, rsp.Response)
	if c.inbox == nil {
		return protocol.ErrNotConnected
	}
	select {
	case c.inbox <- rsp.Response:
		return nil
	default:
		return protocol.NewError("inbox full", true, false)
	}
}

// SendFleetAPICommand implements connector.FleetAPIConnector (some commands, such as
// SetPINToDrive, require one).
func (c *testConn) SendFleetAPICommand(ctx context.Context, endpoint string, command any) ([]byte, error) {
	return inet.SendFleetAPICommand(ctx, c.client, "fleetsim-test", "Bearer test-token", c.url+"/"+endpoint, command)
}

// Wakeup implements connector.FleetAPIConnector with one REST wake_up call.
func (c *testConn) Wakeup(ctx context.Context) error {
	body, err := c.SendFleetAPICommand(ctx, "api/1/vehicles/"+c.vin+"/wake_up", nil)
	if err != nil {
		return err
	}
	var rsp struct {
		Response struct {
			State string `json:"state"`
		} `json:"response"`
	}
	if err := json.Unmarshal(body, &rsp); err != nil {
		return err
	}
	if rsp.Response.State != "online" {
		return protocol.NewError("vehicle did not wake", false, true)
	}
	return nil
}

// lastSent returns the last message the client sent.
func (c *testConn) lastSent() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent[len(c.sent)-1]
}

// replies decodes every reply received so far.
func (c *testConn) replies(t *testing.T) []*universal.RoutableMessage {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*universal.RoutableMessage
	for _, b := range c.received {
		m := new(universal.RoutableMessage)
		if err := proto.Unmarshal(b, m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

var _ connector.FleetAPIConnector = (*testConn)(nil)

// newClient returns a connected reference client (vehicle-command's pkg/vehicle) for vin. It does
// not start sessions. Disconnect runs at cleanup.
func newClient(t *testing.T, ts *httptest.Server, vin string, key clientKey) (*vehicle.Vehicle, *testConn) {
	t.Helper()
	conn := newTestConn(ts, vin)
	car, err := vehicle.NewVehicle(conn, key.lib, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := car.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(car.Disconnect)
	return car, conn
}

// oneVehicleSim starts a simulator (see startSim) with one vehicle, NewTestVIN(i), that has a
// fresh client key enrolled.
func oneVehicleSim(t *testing.T, opts Options, i int) (*Server, *httptest.Server, string, clientKey) {
	t.Helper()
	sim, ts := startSim(t, opts)
	vin := NewTestVIN(i)
	key := newClientKey(t)
	sim.AddVehicle(vin, key.pub)
	return sim, ts, vin, key
}

// newSession returns a reference client (see newClient) with sessions started in domains (nil
// means both).
func newSession(t *testing.T, ts *httptest.Server, vin string, key clientKey, domains []universal.Domain) (*vehicle.Vehicle, *testConn) {
	t.Helper()
	car, conn := newClient(t, ts, vin, key)
	if err := car.StartSession(callCtx(t), domains); err != nil {
		t.Fatalf("StartSession: %v", err)
	}
	return car, conn
}

// callCtx returns a context for one client call.
func callCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// rawClient speaks the protocol by hand, with our own crypto, to craft messages the reference
// client never sends (expired, replayed, out of order, badly tagged).
type rawClient struct {
	t    *testing.T
	ts   *httptest.Server
	vin  string
	key  clientKey
	k    []byte                                       // K with the vehicle
	info map[universal.Domain]*signatures.SessionInfo // from the last handshake
}

func newRawClient(t *testing.T, ts *httptest.Server, vin string, key clientKey) *rawClient {
	return &rawClient{t: t, ts: ts, vin: vin, key: key, info: map[universal.Domain]*signatures.SessionInfo{}}
}

// postStatus sends one message and returns the HTTP status and, on 200, the decoded reply.
func (c *rawClient) postStatus(msg []byte) (int, *universal.RoutableMessage, []byte) {
	c.t.Helper()
	body, _ := json.Marshal(map[string]string{"routable_message": base64.StdEncoding.EncodeToString(msg)})
	resp, err := c.ts.Client().Post(c.ts.URL+"/api/1/vehicles/"+c.vin+"/signed_command", "application/json", bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, raw
	}
	var env struct {
		Response []byte `json:"response"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		c.t.Fatalf("reply %s: %v", raw, err)
	}
	reply := new(universal.RoutableMessage)
	if err := proto.Unmarshal(env.Response, reply); err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, reply, raw
}

func (c *rawClient) post(msg []byte) *universal.RoutableMessage {
	c.t.Helper()
	code, reply, raw := c.postStatus(msg)
	if code != http.StatusOK {
		c.t.Fatalf("status %d: %s", code, raw)
	}
	return reply
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func mustProto(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// handshake fetches and checks session info for a domain.
func (c *rawClient) handshake(domain universal.Domain) *signatures.SessionInfo {
	c.t.Helper()
	uuid := randomBytes(16)
	req := &universal.RoutableMessage{
		ToDestination:   &universal.Destination{SubDestination: &universal.Destination_Domain{Domain: domain}},
		FromDestination: &universal.Destination{SubDestination: &universal.Destination_RoutingAddress{RoutingAddress: randomBytes(16)}},
		Payload:         &universal.RoutableMessage_SessionInfoRequest{SessionInfoRequest: &universal.SessionInfoRequest{PublicKey: c.key.pub.Bytes()}},
		Uuid:            uuid,
	}
	reply := c.post(mustProto(c.t, req))
	return c.checkSessionInfo(reply, uuid)
}

// checkSessionInfo verifies the session info in a reply and remembers it.
func (c *rawClient) checkSessionInfo(reply *universal.RoutableMessage, challenge []byte) *signatures.SessionInfo {
	c.t.Helper()
	var info signatures.SessionInfo
	if err := proto.Unmarshal(reply.GetSessionInfo(), &info); err != nil {
		c.t.Fatal(err)
	}
	vpub, err := ecdh.P256().NewPublicKey(info.GetPublicKey())
	if err != nil {
		c.t.Fatalf("session info public key: %v", err)
	}
	c.k, err = sharedKey(c.key.priv, vpub)
	if err != nil {
		c.t.Fatal(err)
	}
	want, err := sessionInfoTag(c.k, c.vin, challenge, reply.GetSessionInfo())
	if err != nil {
		c.t.Fatal(err)
	}
	if !hmac.Equal(want, reply.GetSignatureData().GetSessionInfoTag().GetTag()) {
		c.t.Fatal("session info tag does not verify")
	}
	c.info[reply.GetFromDestination().GetDomain()] = &info
	return &info
}

// command builds an HMAC-signed command.
func (c *rawClient) command(domain universal.Domain, payload []byte, counter, expiresAt, flags uint32) []byte {
	c.t.Helper()
	return c.commandWithEpoch(domain, payload, counter, expiresAt, flags, c.info[domain].GetEpoch())
}

func (c *rawClient) commandWithEpoch(domain universal.Domain, payload []byte, counter, expiresAt, flags uint32, epoch []byte) []byte {
	c.t.Helper()
	meta, err := commandMetadata(domain, c.vin, c.info[domain].GetEpoch(), expiresAt, counter, flags)
	if err != nil {
		c.t.Fatal(err)
	}
	msg := &universal.RoutableMessage{
		ToDestination:   &universal.Destination{SubDestination: &universal.Destination_Domain{Domain: domain}},
		FromDestination: &universal.Destination{SubDestination: &universal.Destination_RoutingAddress{RoutingAddress: randomBytes(16)}},
		Payload:         &universal.RoutableMessage_ProtobufMessageAsBytes{ProtobufMessageAsBytes: payload},
		Uuid:            randomBytes(16),
		Flags:           flags,
		SubSigData: &universal.RoutableMessage_SignatureData{SignatureData: &signatures.SignatureData{
			SignerIdentity: &signatures.KeyIdentity{IdentityType: &signatures.KeyIdentity_PublicKey{PublicKey: c.key.pub.Bytes()}},
			SigType: &signatures.SignatureData_HMAC_PersonalizedData{HMAC_PersonalizedData: &signatures.HMAC_Personalized_Signature_Data{
				Epoch:     epoch,
				Counter:   counter,
				ExpiresAt: expiresAt,
				Tag:       commandTag(c.k, meta, payload),
			}},
		}},
	}
	return mustProto(c.t, msg)
}
