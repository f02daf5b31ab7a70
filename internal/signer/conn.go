package signer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/connector"
	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/signatures"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/sessions"
)

// conn is our connector.Connector: it carries one VIN's protocol messages to the Fleet API's
// signed_command endpoint through the forwarder, so commands get the same upstream choice, the
// caller's Authorization (from the context), 421 handling and timeouts as everything else.
type conn struct {
	vin     string
	path    string
	fwd     *forward.Forwarder
	recv    chan []byte
	once    sync.Once
	closed  chan struct{}
	counter *counters

	mu sync.Mutex
	// infos are the session infos the vehicle sent during this command, in arrival order.
	infos []seenInfo
}

// seenInfo is a session info as it arrived: the vehicle's clock, and the local time zero it
// implies (arrival time minus the clock), computed the way the library computes it.
type seenInfo struct {
	domain   sessions.Domain
	epoch    [16]byte
	clock    uint32
	timeZero int64
}

// lastInfo returns the latest session info seen from domain d with the given epoch whose time
// zero passes fits.
func (c *conn) lastInfo(d sessions.Domain, epoch [16]byte, fits func(int64) bool) (seenInfo, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.infos) - 1; i >= 0; i-- {
		if in := c.infos[i]; in.domain == d && in.epoch == epoch && fits(in.timeZero) {
			return in, true
		}
	}
	return seenInfo{}, false
}

// note keeps the session info carried by m, if any, received at at.
func (c *conn) note(m *universal.RoutableMessage, at time.Time) {
	raw := m.GetSessionInfo()
	if raw == nil {
		return
	}
	var info signatures.SessionInfo
	if proto.Unmarshal(raw, &info) != nil || len(info.GetEpoch()) != 16 {
		return
	}
	d, ok := sessions.FromProtocolDomain(int(m.GetFromDestination().GetDomain()))
	if !ok {
		return
	}
	in := seenInfo{domain: d, clock: info.GetClockTime(),
		timeZero: at.Add(-time.Duration(info.GetClockTime()) * time.Second).UnixNano()}
	copy(in.epoch[:], info.GetEpoch())
	c.mu.Lock()
	c.infos = append(c.infos, in)
	c.mu.Unlock()
}

// counters are the upstream calls a signer made, by kind.
type counters struct {
	handshakes atomic.Int64
	commands   atomic.Int64
	// onHandshake, when not nil, is called for every handshake sent.
	onHandshake func()
}

func newConn(vin string, fwd *forward.Forwarder, c *counters) *conn {
	return &conn{
		vin:     vin,
		path:    "/api/1/vehicles/" + vin + "/signed_command",
		fwd:     fwd,
		recv:    make(chan []byte, connector.BufferSize),
		closed:  make(chan struct{}),
		counter: c,
	}
}

// Receive implements connector.Connector.
func (c *conn) Receive() <-chan []byte { return c.recv }

// VIN implements connector.Connector.
func (c *conn) VIN() string { return c.vin }

// Close implements connector.Connector. The receive channel stays open: the dispatcher stops on
// its own signal, and closing a channel a Send may still write to would race.
func (c *conn) Close() { c.once.Do(func() { close(c.closed) }) }

// PreferredAuthMethod implements connector.Connector: the Fleet API must read commands, so they
// are HMAC-authenticated, not encrypted.
func (c *conn) PreferredAuthMethod() connector.AuthMethod { return connector.AuthMethodHMAC }

// RetryInterval implements connector.Connector. The library waits this long before retrying
// after a fault the vehicle sent with fresh session info, and also before sending a second
// handshake when the first one's answer has not been processed yet. Send delivers the answer
// before it returns, so only a starved dispatcher goroutine could miss that deadline; a second
// is ample and keeps a duplicate (billed) handshake out of reach, at the cost of a second's
// latency on the rare re-sync.
func (c *conn) RetryInterval() time.Duration { return time.Second }

// AllowedLatency implements connector.Connector: session info older than this when it arrives
// is not trusted to set the clock.
func (c *conn) AllowedLatency() time.Duration { return 10 * time.Second }

// Send implements connector.Connector: one POST to signed_command. The vehicle's answer is queued
// for the dispatcher; a Fleet API refusal or failure becomes an *upstreamError, which the library
// never retries (it reports MayHaveSucceeded for anything that may have reached the vehicle, and
// is never Temporary).
func (c *conn) Send(ctx context.Context, buffer []byte) error {
	handshake := isHandshake(buffer)
	if st := stateFrom(ctx); st != nil {
		if st.sends.Add(1) > st.budget {
			// The vehicle keeps asking for another try (each rejection carried a fault, so
			// nothing ran). Every try is a billed call: stop here.
			return &upstreamError{gaveUp: true, handshake: handshake}
		}
		if handshake {
			st.handshakes.Add(1)
		}
	}
	if handshake {
		c.counter.handshakes.Add(1)
		if c.counter.onHandshake != nil {
			c.counter.onHandshake()
		}
	} else {
		c.counter.commands.Add(1)
	}
	reply, err := c.fwd.Call(ctx, http.MethodPost, c.path, signedCommandBody(buffer), nil)
	if err != nil {
		return &upstreamError{cause: err, mayHaveArrived: forward.MayHaveArrived(err), handshake: handshake}
	}
	if reply.Status != http.StatusOK {
		return &upstreamError{reply: reply, mayHaveArrived: reply.Status >= 500, handshake: handshake}
	}
	var answer struct {
		Response *string `json:"response"`
	}
	if err := json.Unmarshal(reply.Body, &answer); err != nil || answer.Response == nil {
		return &upstreamError{invalid: "the Fleet API's signed_command answer is not {\"response\":\"<base64>\"}", mayHaveArrived: true, handshake: handshake}
	}
	at := time.Now()
	msg, err := base64.StdEncoding.DecodeString(*answer.Response)
	if err != nil {
		return &upstreamError{invalid: "the Fleet API's signed_command answer is not valid base64", mayHaveArrived: true, handshake: handshake}
	}
	// Refuse what the dispatcher would silently drop (an empty answer, one that does not say
	// where it came from), so the app gets a 502 now instead of a handshake loop and a timeout
	// later.
	var m universal.RoutableMessage
	if len(msg) == 0 {
		return &upstreamError{invalid: "the Fleet API's signed_command answer is empty", mayHaveArrived: true, handshake: handshake}
	}
	if err := proto.Unmarshal(msg, &m); err != nil || m.GetFromDestination() == nil {
		return &upstreamError{invalid: "the vehicle's answer is not a valid protocol message", mayHaveArrived: true, handshake: handshake}
	}
	c.note(&m, at)
	select {
	case c.recv <- msg:
		return nil
	case <-c.closed:
		return fmt.Errorf("connection to %s closed", c.vin)
	case <-ctx.Done():
		return &upstreamError{cause: ctx.Err(), mayHaveArrived: true, handshake: handshake}
	}
}

// reqState is one command request's account of its upstream calls, carried in the context the
// library passes to Send.
type reqState struct {
	budget     int64
	sends      atomic.Int64
	handshakes atomic.Int64
}

type stateKey struct{}

func withState(ctx context.Context, st *reqState) context.Context {
	return context.WithValue(ctx, stateKey{}, st)
}

func stateFrom(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	return st
}

// signedCommandBody is the JSON body of a signed_command call carrying msg:
// {"routable_message":"<standard base64>"}. The base64 alphabet needs no JSON escaping, so the
// body is laid out directly, in one allocation (json.Marshal of a struct took three, and
// reflection, on every command).
func signedCommandBody(msg []byte) []byte {
	const head, tail = `{"routable_message":"`, `"}`
	body := make([]byte, 0, len(head)+base64.StdEncoding.EncodedLen(len(msg))+len(tail))
	body = append(body, head...)
	body = base64.StdEncoding.AppendEncode(body, msg)
	return append(body, tail...)
}

// The payload oneof of RoutableMessage and its session_info_request field, as vehicle-command's
// generated descriptor numbers them.
var (
	payloadOneof            = (&universal.RoutableMessage{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")
	fieldSessionInfoRequest = payloadOneof.Fields().ByName("session_info_request").Number()
)

// isHandshake reports whether an encoded RoutableMessage is a session-info request: whether the
// last payload field on the wire (the one that wins in a oneof) is session_info_request. It reads
// the top-level fields only, without decoding the message: buffer is what vehicle-command has
// just encoded, and a full decode was a tenth of what a command's sending allocated.
func isHandshake(buffer []byte) bool {
	var payload protowire.Number
	for len(buffer) > 0 {
		num, typ, n := protowire.ConsumeTag(buffer)
		if n < 0 {
			return false
		}
		buffer = buffer[n:]
		m := protowire.ConsumeFieldValue(num, typ, buffer)
		if m < 0 {
			return false
		}
		buffer = buffer[m:]
		if payloadOneof.Fields().ByNumber(num) != nil {
			if typ != protowire.BytesType {
				return false
			}
			payload = num
		}
	}
	return payload == fieldSessionInfoRequest
}

// upstreamError is a signed_command call that did not bring back a vehicle answer.
type upstreamError struct {
	// reply is the Fleet API's non-200 answer, if it gave one.
	reply *forward.Reply
	// cause is the transport failure, if the call failed.
	cause error
	// gaveUp reports that the request's call budget ran out (see reqState).
	gaveUp bool
	// invalid says what was wrong with a 200 answer, if that was the problem.
	invalid        string
	mayHaveArrived bool
	// handshake reports whether the message was a session-info request: then no command was
	// sent, whatever happened to it.
	handshake bool
}

func (e *upstreamError) Error() string {
	switch {
	case e.reply != nil:
		return fmt.Sprintf("signed_command answered %d", e.reply.Status)
	case e.cause != nil:
		return "signed_command failed: " + e.cause.Error()
	case e.gaveUp:
		return "gave up: the vehicle kept rejecting the session"
	default:
		return e.invalid
	}
}

func (e *upstreamError) Unwrap() error { return e.cause }

// MayHaveSucceeded implements protocol.Error; it keeps the library from re-sending.
func (e *upstreamError) MayHaveSucceeded() bool { return e.mayHaveArrived }

// Temporary implements protocol.Error. Nothing here is retried by the library: a safe retry is
// the signer's decision, not the transport's.
func (e *upstreamError) Temporary() bool { return false }

// SendFleetAPICommand implements connector.FleetAPIConnector: a JSON POST to a Fleet API
// endpoint (a path such as "api/1/vehicles/VIN/wake_up") with the caller's token. The library
// requires this interface for commands that must not go over a channel it cannot trust (such as
// set_pin_to_drive).
func (c *conn) SendFleetAPICommand(ctx context.Context, endpoint string, command interface{}) ([]byte, error) {
	var body []byte
	if command != nil {
		var err error
		if body, err = json.Marshal(command); err != nil {
			return nil, err
		}
	}
	reply, err := c.fwd.Call(ctx, http.MethodPost, "/"+strings.TrimPrefix(endpoint, "/"), body, nil)
	if err != nil {
		return nil, &upstreamError{cause: err, mayHaveArrived: forward.MayHaveArrived(err)}
	}
	if reply.Status != http.StatusOK {
		return nil, &upstreamError{reply: reply, mayHaveArrived: reply.Status >= 500}
	}
	return reply.Body, nil
}

// Wakeup implements connector.FleetAPIConnector with one REST wake_up call. (The signer sends
// command/wake_up itself, once; this exists because the interface requires it.)
func (c *conn) Wakeup(ctx context.Context) error {
	_, err := c.SendFleetAPICommand(ctx, "api/1/vehicles/"+c.vin+"/wake_up", nil)
	return err
}

var _ connector.FleetAPIConnector = (*conn)(nil)
