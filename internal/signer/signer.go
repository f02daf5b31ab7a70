package signer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/teslamotors/vehicle-command/pkg/cache"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
	verrors "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/errors"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"github.com/teslamotors/vehicle-command/pkg/proxy"
	"github.com/teslamotors/vehicle-command/pkg/vehicle"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/forward"
)

// Options configures a Signer.
type Options struct {
	// Key is the command-signing key enrolled on the vehicles.
	Key protocol.ECDHPrivateKey
	// Forward carries signed_command calls and the REST fallbacks.
	Forward *forward.Forwarder
	// Timeout bounds one command from the moment it holds its vehicle's lock: handshake,
	// command, and any re-sync the vehicle asks for. Zero means 10 s.
	Timeout time.Duration
	// MaxBodyBytes bounds the request body (413 above it). Zero means 1 MiB.
	MaxBodyBytes int64
	// CacheSize bounds how many vehicles' sessions are kept. Zero means 10,000.
	CacheSize int
	// Sessions, when not nil, holds sessions saved by an earlier run; vehicles in it need no
	// handshake.
	Sessions *cache.SessionCache
	// OnSessionsChanged, when not nil, is called after a command that may have changed session
	// state (a handshake, a counter), so the caller can persist Sessions soon. It must not block.
	OnSessionsChanged func()
	// OnHandshake, when not nil, is called for every session handshake sent upstream.
	OnHandshake func()
	// OnSession, when not nil, is told for every signed command whether its vehicle session was
	// ready (true) or needed a handshake (false).
	OnSession func(ready bool)
	// Logger receives the signer's log lines; nil means none.
	Logger *zap.Logger
}

// Signer serves POST /api/1/vehicles/{vin}/command/{name}. It is safe for concurrent use.
type Signer struct {
	fwd     *forward.Forwarder
	timeout time.Duration
	maxBody int64
	changed func()
	// onSession is told whether each signed command found its session ready.
	onSession func(ready bool)
	log       *zap.Logger
	pool      *pool
	counters  counters
}

// New returns a Signer.
func New(o Options) (*Signer, error) {
	if o.Key == nil || o.Forward == nil {
		return nil, errors.New("signer: a key and a forwarder are required")
	}
	s := &Signer{fwd: o.Forward, timeout: o.Timeout, maxBody: o.MaxBodyBytes, changed: o.OnSessionsChanged, onSession: o.OnSession, log: o.Logger}
	s.counters.onHandshake = o.OnHandshake
	if s.timeout <= 0 {
		s.timeout = 10 * time.Second
	}
	if s.maxBody <= 0 {
		s.maxBody = 1 << 20
	}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	s.log = s.log.Named("signer")
	s.pool = newPool(o.Key, o.Forward, o.CacheSize, o.Sessions, &s.counters)
	return s, nil
}

// Stats are counts of what a Signer sent upstream.
type Stats struct {
	// Handshakes is the number of session-info requests sent.
	Handshakes int64
	// Commands is the number of signed commands sent (re-syncs included).
	Commands int64
}

// Stats returns the counts so far.
func (s *Signer) Stats() Stats {
	return Stats{Handshakes: s.counters.handshakes.Load(), Commands: s.counters.commands.Load()}
}

// Sessions returns a snapshot of every vehicle's session state, for persisting.
func (s *Signer) Sessions() *cache.SessionCache { return s.pool.sessions() }

// Close stops every vehicle's dispatcher. The Signer must not be used afterwards.
func (s *Signer) Close() { s.pool.close() }

// ServeHTTP implements http.Handler.
func (s *Signer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	vars := mux.Vars(r)
	if err := s.serve(w, r, vars["vin"], vars["name"]); err != nil {
		e := apierr.Write(w, err)
		if e.Code >= 500 {
			s.log.Warn("command failed", zap.String("vin", vars["vin"]), zap.String("command", vars["name"]), zap.Int("status", e.Code), zap.Error(e))
		} else if ce := s.log.Check(zap.DebugLevel, "command refused"); ce != nil {
			ce.Write(zap.String("vin", vars["vin"]), zap.String("command", vars["name"]), zap.Int("status", e.Code), zap.String("word", e.Word))
		}
	}
}

// callBudget bounds the signed_command calls one attempt at a command may make: a handshake, the
// command, a re-sync after a reboot and one more. The library retries for as long as the
// vehicle answers with a retryable fault; each try is billed.
const callBudget = 4

// success is the REST answer to a command the vehicle carried out.
var success = []byte(`{"response":{"result":true,"reason":""}}` + "\n")

func (s *Signer) serve(w http.ResponseWriter, r *http.Request, vin, name string) error {
	if err := checkVIN(vin); err != nil {
		return err
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return apierr.New(http.StatusMethodNotAllowed, "method_not_allowed", "Vehicle commands must be sent with POST.")
	}
	body, err := apierr.ReadBody(w, r, s.maxBody)
	if err != nil {
		return err
	}
	if name == "wake_up" {
		// Waking is a REST call, billed per call: send it once, no handshake, no polling loop.
		s.forwardREST(w, r, "/api/1/vehicles/"+vin+"/wake_up", nil)
		return nil
	}
	params, err := parseParams(body)
	if err != nil {
		return err
	}

	// Refuse bad parameters before queueing behind the vehicle's other commands: they cost
	// nothing upstream and the app should not wait to hear about them. A vehicle without the
	// protocol gets its REST command as the app wrote it, for the Fleet API to judge.
	if !s.pool.legacy(vin) {
		if err := checkParams(name, params); err != nil {
			return err
		}
	}
	c, err := s.lock(r.Context(), vin)
	if err != nil {
		return err
	}
	defer c.release()
	c.lastUsed = time.Now()

	if c.legacy.Load() {
		s.forwardREST(w, r, "", body)
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	// The action keeps the context it is made with and hands it to every Send: st rides in it.
	st := &reqState{budget: callBudget}
	ctx = withState(ctx, st)
	action, err := extractAction(ctx, name, params)
	if errors.Is(err, proxy.ErrCommandUseRESTAPI) {
		s.forwardREST(w, r, "", body)
		return nil
	}
	if err != nil {
		return err
	}
	v, err := s.pool.vehicle(ctx, c)
	if err != nil {
		return err
	}
	err = s.run(ctx, v, name, action)
	var ue *upstreamError
	if errors.As(err, &ue) && ue.gaveUp {
		// Every try was rejected with a fault, so nothing ran. The saved session is beyond
		// repair (say the vehicle's key changed): start over with a fresh handshake, once.
		s.log.Warn("vehicle kept rejecting its session; starting a new one", zap.String("vin", vin))
		s.pool.reset(c)
		if v, err = s.pool.vehicle(ctx, c); err != nil {
			return err
		}
		st.sends.Store(0)
		err = s.run(ctx, v, name, action)
		ue = nil
	}
	if s.onSession != nil {
		s.onSession(st.handshakes.Load() == 0)
	}
	if s.changed != nil {
		s.changed()
	}
	if errors.As(err, &ue) && ue.reply != nil && ue.reply.Status == http.StatusUnprocessableEntity {
		// The vehicle predates the protocol: remember that and send the REST command as the
		// app wrote it.
		c.legacy.Store(true)
		s.log.Info("vehicle does not support signed commands; using the REST API for it", zap.String("vin", vin))
		s.forwardREST(w, r, "", body)
		return nil
	}
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(success)
		return nil
	case protocol.IsNominalError(err):
		// The vehicle got the command and declined it: the REST API's answer for that.
		b, _ := json.Marshal(refusal{Response: refusalBody{Result: false, Reason: refusalReason(err)}})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(b, '\n'))
		return nil
	case ue != nil && ue.reply != nil && ue.reply.Status < 500:
		// The Fleet API refused the call (asleep 408, rate limit 429 with Retry-After, token
		// or scope problems): relay its answer as it came.
		ue.reply.Write(w)
		return nil
	default:
		return answer(ctx, err)
	}
}

// lock returns vin's car with its lock held. Waiting for the vehicle's other commands is bounded
// by the same deadline as a command, and ends when the client leaves.
func (s *Signer) lock(ctx context.Context, vin string) (*car, error) {
	lockCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	for {
		c := s.pool.get(vin)
		if err := c.acquire(lockCtx); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, apierr.Wrap(err, http.StatusServiceUnavailable, "vehicle_busy",
				"Other commands to this vehicle are still running; try again shortly.")
		}
		if !c.evicted {
			return c, nil
		}
		// Dropped from the pool while we waited: the VIN has (or will get) a new car.
		c.release()
	}
}

// refusalReason is the vehicle's reason as the REST API words it ("not_charging"), without the
// library's "car could not execute command: " preamble.
func refusalReason(err error) string {
	// VCSEC's reason is an enum; v0.4.1 words it in protobuf text format, whose spacing varies
	// between builds. Give it the REST API's snake_case style instead: "closures_open".
	var ve *protocol.NominalVCSECError
	if errors.As(err, &ve) && ve.Details.GetGenericError() != verrors.GenericError_E_GENERICERROR_NONE {
		return strings.ToLower(strings.TrimPrefix(ve.Details.GetGenericError().String(), "GENERICERROR_"))
	}
	msg := err.Error()
	for _, prefix := range []string{"car could not execute command: ", "vcsec could not execute command: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return msg
}

type refusal struct {
	Response refusalBody `json:"response"`
}

type refusalBody struct {
	Result bool   `json:"result"`
	Reason string `json:"reason"`
}

// run opens a session with the command's domain if there is none, then runs the action. Should
// the library refuse for want of a session in the other domain (nothing was sent), it opens that
// one and runs the action once more.
func (s *Signer) run(ctx context.Context, v *vehicle.Vehicle, name string, action func(*vehicle.Vehicle) error) error {
	domain := domainOf(name)
	if err := v.StartSession(ctx, []universal.Domain{domain}); err != nil {
		return err
	}
	err := action(v)
	if errors.Is(err, protocol.ErrNoSession) {
		s.log.Warn("command needed the other domain; opening a session there", zap.String("command", name))
		if err := v.StartSession(ctx, []universal.Domain{otherDomain(domain)}); err != nil {
			return err
		}
		err = action(v)
	}
	return err
}

// forwardREST sends the REST form of a command to the Fleet API with its original body and
// relays the answer. path overrides the request path when not empty.
func (s *Signer) forwardREST(w http.ResponseWriter, r *http.Request, path string, body []byte) {
	out := r.Clone(r.Context())
	if path != "" {
		out.URL.Path, out.URL.RawPath = path, ""
	}
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	if len(body) == 0 {
		out.Body = http.NoBody
	}
	s.fwd.ServeHTTP(w, out)
}

var _ http.Handler = (*Signer)(nil)
