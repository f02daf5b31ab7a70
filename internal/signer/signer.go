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
	"github.com/teslamotors/vehicle-command/pkg/protocol"
	verrors "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/errors"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"github.com/teslamotors/vehicle-command/pkg/proxy"
	"github.com/teslamotors/vehicle-command/pkg/vehicle"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/httpstatus"
	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/vehicleid"
	"github.com/teslaproxy/proxy/internal/wake"
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
	// Store holds the cars' session records (and persists them, if it has a file). Nil means a
	// memory store of sessions.DefaultSize cars.
	Store *sessions.Store
	// Shared, when not nil, is a store shared with other replicas (such as sessions.Redis): it
	// serializes each car's commands across replicas and holds their session records; Store is
	// then ignored in favor of Shared.Local(). Nil means this process alone signs for its cars.
	Shared SharedStore
	// KeySessions bounds how many cars keep their derived session key in memory, so that a
	// command to them needs no ECDH. Zero means 4,096.
	KeySessions int
	// OnHandshake, when not nil, is called for every session handshake sent upstream.
	OnHandshake func()
	// OnSession, when not nil, is told for every signed command whether its vehicle session was
	// ready (true) or needed a handshake (false).
	OnSession func(ready bool)
	// Logger receives the signer's log lines; nil means none.
	Logger *zap.Logger
	// IDs, when not nil, turns numeric vehicle ids in command paths into VINs. Nil answers 404
	// to a numeric id.
	IDs *vehicleid.Resolver
	// Waker, when not nil, wakes a car that answers 408 and sends the command again
	// (-auto-wake). Nil relays the 408.
	Waker *wake.Waker
}

// Signer serves POST /api/1/vehicles/{vin}/command/{name}. It is safe for concurrent use.
type Signer struct {
	fwd     *forward.Forwarder
	timeout time.Duration
	maxBody int64
	// onSession is told whether each signed command found its session ready.
	onSession func(ready bool)
	log       *zap.Logger
	key       derivationCounter
	store     *sessions.Store
	ownStore  bool
	locks     vinLocks
	// records serializes each car's commands and holds its record: the store and locks above,
	// or a shared store.
	records  records
	counters counters
	// admit keeps callers the Fleet API has not accepted for a car from holding its turn.
	admit *admission
	// waker wakes sleeping cars (-auto-wake); nil when off.
	waker *wake.Waker
	// ids resolves numeric vehicle ids; nil when off.
	ids *vehicleid.Resolver
}

// New returns a Signer.
func New(o Options) (*Signer, error) {
	if o.Key == nil || o.Forward == nil {
		return nil, errors.New("signer: a key and a forwarder are required")
	}
	s := &Signer{fwd: o.Forward, timeout: o.Timeout, maxBody: o.MaxBodyBytes, onSession: o.OnSession, log: o.Logger, store: o.Store, admit: newAdmission(), waker: o.Waker, ids: o.IDs}
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
	s.key = newSessionKeys(o.Key, o.KeySessions)
	if o.Shared != nil {
		s.store = o.Shared.Local()
		s.records = sharedRecords{shared: o.Shared, locks: &s.locks}
		return s, nil
	}
	if s.store == nil {
		st, err := sessions.Open(sessions.Options{})
		if err != nil {
			return nil, err
		}
		s.store, s.ownStore = st, true
	}
	s.records = localRecords{store: s.store, locks: &s.locks}
	return s, nil
}

// Stats are counts of what a Signer sent upstream.
type Stats struct {
	// Handshakes is the number of session-info requests sent.
	Handshakes int64
	// Commands is the number of signed commands sent (re-syncs included).
	Commands int64
	// KeyDerivations is the number of ECDH derivations of a car's session key: one per
	// handshake, and one per command to a car whose derived key was not kept in memory.
	KeyDerivations int64
	// Busy is the number of VINs with a command running or waiting.
	Busy int
}

// Stats returns the counts so far.
func (s *Signer) Stats() Stats {
	return Stats{Handshakes: s.counters.handshakes.Load(), Commands: s.counters.commands.Load(),
		KeyDerivations: s.key.count(), Busy: s.locks.held()}
}

// Store returns the store holding the cars' session records.
func (s *Signer) Store() *sessions.Store { return s.store }

// Close releases what the Signer holds. Commands do not keep anything running between them,
// so there is nothing to stop; a store the Signer opened itself (memory only) is closed.
func (s *Signer) Close() {
	if s.ownStore {
		_ = s.store.Close()
	}
}

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
	if s.ids != nil && vehicleid.IsNumeric(vin) {
		// A numeric id: the car is signed for by VIN, which the (free) vehicle list gives.
		resolved, err := s.resolve(w, r, vin)
		if err != nil || resolved == "" {
			return err
		}
		vin = resolved
	}
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
	if rec, _ := s.records.Peek(vin); !rec.Legacy {
		if err := checkParams(name, params); err != nil {
			return err
		}
	}
	// Before the turn: a caller the Fleet API has not accepted for this car must not hold it
	// (admit.go). The verdict is the status of the answer written, once the turn is released.
	// With -auto-wake a command may also wait for its car to wake.
	done, err := s.admit.admit(r.Context(), forward.TokenFrom(r.Context()), vin, s.timeout+s.wakeTimeout())
	if err != nil {
		return err
	}
	sw := &httpstatus.Writer{ResponseWriter: w}
	w = sw
	defer func() { done(sw.Status) }()
	if s.waker == nil {
		_, err = s.attempt(w, r, vin, name, body, params, false)
		return err
	}
	return s.serveAwake(w, r, vin, name, body, params)
}

// attempt takes vin's turn and runs the command once. When wakeable is set and the Fleet API
// answers 408 (the car is asleep or offline; nothing reached it), or the car is being woken
// already, it writes nothing and returns its ticket to the car's wake, begun while it still holds
// the turn, for the caller to wait for the wake and try again.
func (s *Signer) attempt(w http.ResponseWriter, r *http.Request, vin, name string, body []byte, params proxy.RequestParameters, wakeable bool) (woken *wake.Ticket, err error) {
	t, err := s.acquire(r.Context(), vin)
	if err != nil {
		return nil, err
	}
	// The turn ends as soon as attempt returns: with the record kept when it changed, released
	// as it was otherwise.
	var keep *sessions.Record
	defer func() {
		if keep != nil {
			t.Commit(*keep)
		} else {
			t.Release()
		}
	}()

	if t, ok := s.joinWake(r, vin, wakeable); ok {
		// The car was found asleep while this command queued for it: wait for its wake
		// rather than pay for another 408.
		return t, nil
	}
	rec := t.Record()
	orig := rec
	if rec.Legacy {
		s.forwardREST(w, r, "", body)
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	// The action keeps the context it is made with and hands it to every Send: st rides in it.
	st := &reqState{budget: callBudget}
	ctx = withState(ctx, st)
	action, err := extractAction(ctx, name, params)
	if errors.Is(err, proxy.ErrCommandUseRESTAPI) {
		s.forwardREST(w, r, "", body)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	err = s.runRepairing(ctx, vin, &rec, name, action, st)
	if s.onSession != nil && !(wakeable && asleep(err)) {
		s.onSession(st.handshakes.Load() == 0)
	}
	var ue *upstreamError
	if errors.As(err, &ue) && ue.reply != nil && ue.reply.Status == http.StatusUnprocessableEntity {
		// The vehicle predates the protocol: remember that and send the REST command as the
		// app wrote it.
		rec.Legacy = true
		keep = &rec
		s.log.Info("vehicle does not support signed commands; using the REST API for it", zap.String("vin", vin))
		s.forwardREST(w, r, "", body)
		return nil, nil
	}
	if rec != orig {
		keep = &rec
	}
	return s.respond(ctx, w, r, vin, err, ue, wakeable)
}

// runRepairing runs the action on the car. When every try was rejected with a fault, nothing
// ran, and the stored session of the command's domain is beyond repair (say the vehicle's key
// changed): it starts over with a fresh handshake, once.
func (s *Signer) runRepairing(ctx context.Context, vin string, rec *sessions.Record, name string, action func(*vehicle.Vehicle) error, st *reqState) error {
	err := s.run(ctx, vin, rec, name, action)
	var ue *upstreamError
	if errors.As(err, &ue) && ue.gaveUp {
		s.log.Warn("vehicle kept rejecting its session; starting a new one", zap.String("vin", vin))
		rec.Sessions[storeDomain(domainOf(name))] = sessions.Session{}
		st.sends.Store(0)
		err = s.run(ctx, vin, rec, name, action)
	}
	return err
}

// respond writes a signed command's outcome: success, the car's refusal as the REST API words
// it, or the Fleet API's own answer; or it begins a wake for a sleeping car (wakeable, with
// -auto-wake), or returns the error for the caller to write. ue is err's upstream error, if any;
// ctx is the command's, whose end decides how a failure reads.
func (s *Signer) respond(ctx context.Context, w http.ResponseWriter, r *http.Request, vin string, err error, ue *upstreamError, wakeable bool) (*wake.Ticket, error) {
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(success)
		return nil, nil
	case protocol.IsNominalError(err):
		// The vehicle got the command and declined it: the REST API's answer for that.
		b, _ := json.Marshal(refusal{Response: refusalBody{Result: false, Reason: refusalReason(err)}})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(b, '\n'))
		return nil, nil
	case wakeable && ue != nil && ue.reply != nil && ue.reply.Status == http.StatusRequestTimeout:
		// Asleep or offline: the Fleet API did not reach the car, so nothing ran. The wake
		// begins before the turn is released.
		return s.waker.Begin(r.Context(), vin)
	case ue != nil && ue.reply != nil && ue.reply.Status < 500:
		// The Fleet API refused the call (asleep 408, rate limit 429 with Retry-After, token
		// or scope problems): relay its answer as it came.
		ue.reply.Write(w)
		return nil, nil
	default:
		return nil, answer(ctx, err)
	}
}

// acquire takes vin's turn. Waiting for the vehicle's other commands, here or on other
// replicas, is bounded by the same deadline as a command, and ends when the client leaves.
func (s *Signer) acquire(ctx context.Context, vin string) (turn, error) {
	lockCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	l, err := s.records.Acquire(lockCtx, vin)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, apierr.Wrap(err, http.StatusServiceUnavailable, "vehicle_busy",
			"Other commands to this vehicle are still running; try again shortly.")
	}
	return l, nil
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

// run builds a signer for vin from rec's session for the command's domain, opens a session with
// that domain if there is none, runs the action, and writes the sessions back into rec. Should
// the library refuse for want of a session in the other domain (nothing was sent), it loads or
// opens that one too and runs the action once more.
func (s *Signer) run(ctx context.Context, vin string, rec *sessions.Record, name string, action func(*vehicle.Vehicle) error) error {
	domain := domainOf(name)
	cn := newConn(vin, s.fwd, &s.counters)
	v, err := s.open(ctx, cn, rec, storeDomain(domain))
	if err != nil {
		return err
	}
	defer v.Disconnect()
	defer capture(v, cn, rec)
	if err := v.StartSession(ctx, []universal.Domain{domain}); err != nil {
		return err
	}
	err = action(v)
	if errors.Is(err, protocol.ErrNoSession) {
		s.log.Warn("command needed the other domain; opening a session there", zap.String("command", name))
		other := otherDomain(domain)
		if rec.Sessions[storeDomain(other)].Usable(time.Now()) {
			// Keep what the first domain did, then load both.
			capture(v, cn, rec)
			if err := v.LoadCachedSessions(entries(vin, rec, time.Now(), storeDomain(domain), storeDomain(other))); err != nil {
				return err
			}
		} else if err := v.StartSession(ctx, []universal.Domain{other}); err != nil {
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
