package fleetsim

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/signatures"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
)

// Protocol limits from fleet-api.md §3 ("Checks in the reference verifier").
const (
	// maxExpiresAt is the largest expires_at a vehicle accepts (2^30 s into an epoch).
	maxExpiresAt = 1 << 30
	// maxTTLWithoutCounter is how far in the future a message without a fresh counter may expire.
	maxTTLWithoutCounter = 30
	// flagEncryptResponse is the FLAG_ENCRYPT_RESPONSE bit of RoutableMessage.flags.
	flagEncryptResponse = 1 << uint32(universal.Flags_FLAG_ENCRYPT_RESPONSE)
)

// errEncryptedCommand marks an AES-GCM-personalised command, which the Fleet API refuses because
// it cannot read the payload to enforce OAuth scopes (protocol.md "Authentication methods").
var errEncryptedCommand = errors.New("AES-GCM encrypted commands are not accepted through the Fleet API; use HMAC")

// Vehicle is one simulated car: its VIN, its own P-256 key, the client keys enrolled on it, the
// session state of its two domains and the simulated car state. All methods are safe for
// concurrent use.
type Vehicle struct {
	vin  string
	priv *ecdh.PrivateKey
	now  func() time.Time

	// life is how the car sleeps and wakes: the server's, from when it added the car; its wake
	// time may be changed later under mu (Server.SetWakeDelay).
	life lifecycle
	// changed, when set, is called (with mu held, so it must not block) after a command or a
	// control changed the car, so watchers (the dashboard) look again.
	changed func()

	mu       sync.Mutex
	enrolled map[string]*ecdh.PublicKey // by uncompressed point bytes
	keys     map[string][]byte          // K per client public key, cached
	domains  map[universal.Domain]*domainState
	state    CarState
	// tick is the time the state was last brought forward to (advance).
	tick time.Time
	// lastActive is when something last kept the car awake: a command, a data request, a wake.
	lastActive time.Time
	// idleFrom is when the car last stopped being busy (charging ended, climate went off, …).
	idleFrom time.Time
	// wakeAt, when not zero, is when a wake_up in progress brings the asleep car online.
	wakeAt time.Time
}

// lifecycle is how a car falls asleep and wakes (Options.SleepAfter and Options.WakeTime).
type lifecycle struct {
	sleepAfter time.Duration // 0: never falls asleep by itself
	wakeTime   time.Duration // 0: wake_up wakes at once
}

// domainState is the session state of one vehicle domain.
type domainState struct {
	epoch       [16]byte
	timeZero    time.Time
	counter     uint32 // highest counter accepted in this epoch
	window      uint64 // Infotainment anti-replay bitmap below counter
	respCounter uint32 // counter of encrypted responses
}

func newDomainState(now time.Time) (*domainState, error) {
	d := &domainState{}
	if err := d.reset(now); err != nil {
		return nil, err
	}
	return d, nil
}

// reset starts a new epoch, as a reboot does.
func (d *domainState) reset(now time.Time) error {
	if _, err := rand.Read(d.epoch[:]); err != nil {
		return err
	}
	d.timeZero = now
	d.counter, d.window, d.respCounter = 0, 0, 0
	return nil
}

// clock is the domain's time: whole seconds since its time zero.
func (d *domainState) clock(now time.Time) uint32 {
	el := now.Sub(d.timeZero)
	if el < 0 {
		return 0
	}
	return uint32(min(el/time.Second, math.MaxUint32)) //nolint:gosec // G115: clamped to uint32 just here
}

func newVehicle(vin string, now func() time.Time, seed []byte, boot time.Time, life lifecycle) (*Vehicle, error) {
	var priv *ecdh.PrivateKey
	var err error
	if len(seed) > 0 {
		priv, err = derivedKey(seed, vin)
	} else {
		priv, err = ecdh.P256().GenerateKey(rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	v := &Vehicle{
		vin:      vin,
		priv:     priv,
		now:      now,
		enrolled: make(map[string]*ecdh.PublicKey),
		keys:     make(map[string][]byte),
		domains:  make(map[universal.Domain]*domainState),
		state:    defaultCarState(),
		life:     life,
	}
	v.state.Model = modelOfVIN(vin)
	t := now()
	v.tick, v.lastActive, v.idleFrom = t, t, t
	for _, dom := range []universal.Domain{universal.Domain_DOMAIN_VEHICLE_SECURITY, universal.Domain_DOMAIN_INFOTAINMENT} {
		if v.domains[dom], err = newDomainState(now()); err != nil {
			return nil, err
		}
		if len(seed) > 0 {
			copy(v.domains[dom].epoch[:], derive(seed, "epoch", vin, dom.String()))
			if !boot.IsZero() {
				v.domains[dom].timeZero = boot
			}
		}
	}
	return v, nil
}

// derive returns HMAC-SHA256(seed, label‖0‖parts…).
func derive(seed []byte, label string, parts ...string) []byte {
	m := hmac.New(sha256.New, seed)
	m.Write([]byte(label))
	for _, p := range parts {
		m.Write([]byte{0})
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

// derivedKey returns the P-256 key a seeded vehicle always has.
func derivedKey(seed []byte, vin string) (*ecdh.PrivateKey, error) {
	for i := 0; i < 16; i++ {
		k, err := ecdh.P256().NewPrivateKey(derive(seed, "key", vin, strconv.Itoa(i)))
		if err == nil {
			return k, nil
		}
	}
	return nil, errors.New("no valid key from the seed")
}

// VIN returns the vehicle's VIN.
func (v *Vehicle) VIN() string { return v.vin }

// PublicKey returns the vehicle's own public key (the same for both domains).
func (v *Vehicle) PublicKey() *ecdh.PublicKey { return v.priv.PublicKey() }

// State returns a copy of the simulated car state, brought forward to the simulator's clock.
func (v *Vehicle) State() CarState {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.advance(v.now())
	return v.state.clone()
}

// Update changes the car state with f, as a scenario or a test sets it up. Time is brought
// forward first, and the change counts as activity (the car does not fall asleep at once).
func (v *Vehicle) Update(f func(*CarState)) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	v.advance(now)
	f(&v.state)
	v.touch(now)
}

// advance brings the state forward to now: a wake in progress completes, the car charges, the
// cabin temperature moves, a driving car drives, and an idle car falls asleep after
// Options.SleepAfter. It is computed on demand (no goroutine or timer per car), so it costs
// nothing while nobody looks. The caller holds v.mu.
func (v *Vehicle) advance(now time.Time) {
	if !now.After(v.tick) {
		return
	}
	if v.state.Asleep && !v.wakeAt.IsZero() && !now.Before(v.wakeAt) {
		v.runTo(v.wakeAt)
		v.state.Asleep = false
		v.wakeAt = time.Time{}
		v.lastActive = v.tick
	}
	v.runTo(now)
	if v.state.Asleep || v.life.sleepAfter <= 0 || v.state.busy() || !v.wakeAt.IsZero() {
		return
	}
	idle := v.lastActive
	if v.idleFrom.After(idle) {
		idle = v.idleFrom
	}
	if now.Sub(idle) >= v.life.sleepAfter {
		v.state.Asleep = true
	}
}

// runTo runs the car's physics from v.tick to t and notes when it stopped being busy.
func (v *Vehicle) runTo(t time.Time) {
	wasBusy := v.state.busy()
	charged := v.state.run(t.Sub(v.tick))
	if wasBusy && !v.state.busy() {
		v.idleFrom = v.tick.Add(charged)
	}
	v.tick = t
}

// touch marks activity that keeps the car awake: a command, a data request. The caller holds
// v.mu and has called advance.
func (v *Vehicle) touch(now time.Time) {
	if now.After(v.lastActive) {
		v.lastActive = now
	}
	v.notify()
}

// notify tells watchers the car changed. The caller holds v.mu.
func (v *Vehicle) notify() {
	if v.changed != nil {
		v.changed()
	}
}

// Enroll adds client public keys to the vehicle's key list. Nil keys are ignored.
func (v *Vehicle) Enroll(keys ...*ecdh.PublicKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, k := range keys {
		if k != nil {
			v.enrolled[string(k.Bytes())] = k
		}
	}
}

// Unenroll removes a client public key from the vehicle's key list.
func (v *Vehicle) Unenroll(key *ecdh.PublicKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.enrolled, string(key.Bytes()))
}

// IsEnrolled reports whether key is on the vehicle's key list.
func (v *Vehicle) IsEnrolled(key *ecdh.PublicKey) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.enrolled[string(key.Bytes())]
	return ok
}

// SetAsleep puts the vehicle to sleep (data requests and commands then answer 408) or wakes it
// at once. wake_up also wakes it, after Options.WakeTime.
func (v *Vehicle) SetAsleep(asleep bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	v.advance(now)
	v.state.Asleep = asleep
	v.wakeAt = time.Time{}
	if asleep {
		// A car put to sleep stops what would keep it awake.
		v.state.setClimate(false)
		v.state.Charging = false
		v.state.ShiftState, v.state.Speed = "", 0
		v.idleFrom = now
	}
	v.touch(now)
}

// Wake starts waking the vehicle, as wake_up does: an asleep car comes online after
// Options.WakeTime (at once when it is zero). It reports whether the car is online now.
func (v *Vehicle) Wake() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	v.advance(now)
	if !v.state.Asleep {
		v.touch(now)
		return true
	}
	switch {
	case !v.wakeAt.IsZero(): // already waking
	case v.life.wakeTime <= 0:
		v.state.Asleep = false
		v.lastActive = now
	default:
		v.wakeAt = now.Add(v.life.wakeTime)
	}
	v.notify()
	return !v.state.Asleep
}

// SetWakeDelay makes the vehicle take d to come online after a wake_up, as a real car does (10 to
// 30 s): until then wake_up and the vehicle list show it "asleep", and data and commands answer
// 408. Zero wakes it at once. It replaces Options.WakeTime for this car; a wake under way keeps
// its time.
func (s *Server) SetWakeDelay(vin string, d time.Duration) {
	v := s.Vehicle(vin)
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.life.wakeTime = d
}

// Waking reports whether a wake_up is in progress.
func (v *Vehicle) Waking() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.advance(v.now())
	return !v.wakeAt.IsZero()
}

// Asleep reports whether the vehicle is asleep.
func (v *Vehicle) Asleep() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.advance(v.now())
	return v.state.Asleep
}

// Reboot starts a new epoch in both domains: fresh random epochs, counters and anti-replay
// windows cleared, domain clocks back to zero. Clients must re-sync from the session info the
// vehicle returns with its INCORRECT_EPOCH fault.
func (v *Vehicle) Reboot() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, d := range v.domains {
		// crypto/rand.Read does not fail on supported platforms; keep going if it ever does.
		_ = d.reset(v.now())
	}
	v.notify()
}

// sharedKeyFor returns K for a client key, computing it once. The caller holds v.mu.
func (v *Vehicle) sharedKeyFor(pub *ecdh.PublicKey) ([]byte, error) {
	id := string(pub.Bytes())
	if k, ok := v.keys[id]; ok {
		return k, nil
	}
	k, err := sharedKey(v.priv, pub)
	if err != nil {
		return nil, err
	}
	v.keys[id] = k
	return k, nil
}

// domainName maps a protocol domain to the name used in Execution and Stats.
func domainName(d universal.Domain) string {
	switch d {
	case universal.Domain_DOMAIN_VEHICLE_SECURITY:
		return DomainVCSEC
	case universal.Domain_DOMAIN_INFOTAINMENT:
		return DomainInfotainment
	default:
		return d.String()
	}
}

// result is what handling one RoutableMessage produced.
type result struct {
	reply     *universal.RoutableMessage
	domain    universal.Domain
	handshake bool
	command   bool   // a non-handshake message arrived for a known domain
	rejection string // fault name when the message was refused at the protocol layer
	exec      *Execution
	refused   bool // the Refuse fault answered
}

// refuse makes res a protocol-level refusal without session info.
func (res result) refuse(req *universal.RoutableMessage, code universal.MessageFault_E) (result, error) {
	res.reply = faultReply(req, res.domain, code)
	res.rejection = code.String()
	return res, nil
}

// handle runs one RoutableMessage through the vehicle, as the car would, and returns its reply.
// f is the effective fault for this vehicle. An error means the envelope cannot be handled at all
// (the HTTP layer answers 400).
func (v *Vehicle) handle(req *universal.RoutableMessage, f Fault) (result, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	v.advance(now)
	defer v.touch(now)
	domain := req.GetToDestination().GetDomain()
	res := result{domain: domain}
	ds := v.domains[domain]
	if ds == nil {
		return res.refuse(req, universal.MessageFault_E_MESSAGEFAULT_ERROR_INVALID_DOMAINS)
	}

	switch p := req.GetPayload().(type) {
	case *universal.RoutableMessage_SessionInfoRequest:
		res.handshake = true
		return v.handshake(req, domain, ds, p.SessionInfoRequest, now, res)
	case *universal.RoutableMessage_ProtobufMessageAsBytes:
		res.command = true
	default:
		return res.refuse(req, universal.MessageFault_E_MESSAGEFAULT_ERROR_DECODING)
	}

	payload := req.GetProtobufMessageAsBytes()
	switch sig := req.GetSignatureData().GetSigType().(type) {
	case *signatures.SignatureData_HMAC_PersonalizedData:
		return v.authenticated(req, domain, ds, sig.HMAC_PersonalizedData, payload, f, now, res)
	case *signatures.SignatureData_AES_GCM_PersonalizedData:
		return res, errEncryptedCommand
	case nil:
		// VCSEC answers unauthenticated information requests (e.g. BodyControllerState); nothing
		// else runs without a signature.
		if domain == universal.Domain_DOMAIN_VEHICLE_SECURITY {
			if out, ok := v.vcsecUnsignedInformation(payload); ok {
				res.reply = baseReply(req, domain)
				res.reply.Payload = &universal.RoutableMessage_ProtobufMessageAsBytes{ProtobufMessageAsBytes: out}
				return res, nil
			}
		}
	}
	return res.refuse(req, universal.MessageFault_E_MESSAGEFAULT_ERROR_BAD_PARAMETER)
}

// handshake answers a session-info request.
func (v *Vehicle) handshake(req *universal.RoutableMessage, domain universal.Domain, ds *domainState, sir *universal.SessionInfoRequest, now time.Time, res result) (result, error) {
	pub, err := ecdh.P256().NewPublicKey(sir.GetPublicKey())
	if err != nil {
		return res.refuse(req, universal.MessageFault_E_MESSAGEFAULT_ERROR_BAD_PARAMETER)
	}
	k, err := v.sharedKeyFor(pub)
	if err != nil {
		return res, err
	}
	info := &signatures.SessionInfo{ClockTime: ds.clock(now)}
	if _, ok := v.enrolled[string(pub.Bytes())]; ok {
		info.Counter = ds.counter
		info.PublicKey = v.priv.PublicKey().Bytes()
		info.Epoch = append([]byte(nil), ds.epoch[:]...)
	} else {
		// An unknown key learns nothing about the session: no vehicle key, epoch or counter, only
		// the status, which the client turns into protocol.ErrKeyNotPaired. Leaving out the
		// vehicle key also matters to vehicle-command v0.4.1: if this reply could start a
		// session, its dispatcher may see the session become ready before it reads the status,
		// and StartSession would return nil.
		info.Status = signatures.Session_Info_Status_SESSION_INFO_STATUS_KEY_NOT_ON_WHITELIST
		res.rejection = info.Status.String()
	}
	res.reply, err = sessionInfoReply(req, domain, k, v.vin, info)
	return res, err
}

// authenticated verifies an HMAC-personalised command in the order fleet-api.md §3 gives, then
// runs it. A fault found before the session key is known (the signer's key) is refused without
// session info; a fault found with it is answered with signed session info, so that the client
// can resynchronise (see rejectWithSession).
func (v *Vehicle) authenticated(req *universal.RoutableMessage, domain universal.Domain, ds *domainState, h *signatures.HMAC_Personalized_Signature_Data, payload []byte, f Fault, now time.Time, res result) (result, error) {
	pub, code := v.enrolledSigner(req)
	if code != faultNone {
		return res.refuse(req, code)
	}
	k, err := v.sharedKeyFor(pub)
	if err != nil {
		return res, err
	}
	if code := verifyHMAC(domain, v.vin, ds, h, payload, req.GetFlags(), k, now); code != faultNone {
		return v.rejectWithSession(req, domain, ds, k, code, now, res)
	}
	return v.runAuthenticated(req, domain, ds, h, k, payload, f, now, res)
}

// faultNone is the MessageFault of a message that passed a check.
const faultNone = universal.MessageFault_E_MESSAGEFAULT_ERROR_NONE

// enrolledSigner is the first check: it returns the signer's public key, or BAD_PARAMETER when
// the key does not parse and UNKNOWN_KEY_ID when it is not enrolled on the car.
func (v *Vehicle) enrolledSigner(req *universal.RoutableMessage) (*ecdh.PublicKey, universal.MessageFault_E) {
	pub, err := ecdh.P256().NewPublicKey(req.GetSignatureData().GetSignerIdentity().GetPublicKey())
	if err != nil {
		return nil, universal.MessageFault_E_MESSAGEFAULT_ERROR_BAD_PARAMETER
	}
	if _, ok := v.enrolled[string(pub.Bytes())]; !ok {
		return nil, universal.MessageFault_E_MESSAGEFAULT_ERROR_UNKNOWN_KEY_ID
	}
	return pub, faultNone
}

// verifyHMAC runs the checks that need the session key k, in fleet-api.md §3's order, and
// returns the first fault, or faultNone. Only the last, the counter, changes ds, and only when
// the message passes it.
func verifyHMAC(domain universal.Domain, vin string, ds *domainState, h *signatures.HMAC_Personalized_Signature_Data, payload []byte, flags uint32, k []byte, now time.Time) universal.MessageFault_E {
	clock := ds.clock(now)
	exp, counter := h.GetExpiresAt(), h.GetCounter()
	if code := checkEpoch(ds, h.GetEpoch()); code != faultNone {
		return code
	}
	if code := checkExpiry(exp, clock); code != faultNone {
		return code
	}
	if code := checkTTL(exp, counter, ds.counter, clock); code != faultNone {
		return code
	}
	if code := checkTag(domain, vin, ds, exp, counter, flags, k, payload, h.GetTag()); code != faultNone {
		return code
	}
	return ds.acceptCounter(domain, counter)
}

// checkEpoch returns INCORRECT_EPOCH when the message names an epoch other than the session's.
func checkEpoch(ds *domainState, epoch []byte) universal.MessageFault_E {
	if epoch != nil && !hmac.Equal(epoch, ds.epoch[:]) {
		return universal.MessageFault_E_MESSAGEFAULT_ERROR_INCORRECT_EPOCH
	}
	return faultNone
}

// checkExpiry returns TIME_EXPIRED when the message has expired on the domain's clock, and
// BAD_PARAMETER when it expires beyond what a vehicle accepts. An exp of 0 (none) passes here;
// checkTTL decides whether that is allowed.
func checkExpiry(exp, clock uint32) universal.MessageFault_E {
	if exp != 0 && exp < clock {
		return universal.MessageFault_E_MESSAGEFAULT_ERROR_TIME_EXPIRED
	}
	if exp > maxExpiresAt {
		return universal.MessageFault_E_MESSAGEFAULT_ERROR_BAD_PARAMETER
	}
	return faultNone
}

// checkTTL returns TIME_TO_LIVE_TOO_LONG when a message that cannot use the counter check (no
// counter, or one below the last accepted) does not expire soon: only its expiry bounds a replay.
func checkTTL(exp, counter, lastCounter, clock uint32) universal.MessageFault_E {
	if counter == 0 || counter < lastCounter {
		if exp == 0 || exp-clock > maxTTLWithoutCounter {
			return universal.MessageFault_E_MESSAGEFAULT_ERROR_TIME_TO_LIVE_TOO_LONG
		}
	}
	return faultNone
}

// checkTag returns INVALID_SIGNATURE when the HMAC tag over the command's metadata and payload
// does not match, and BAD_PARAMETER when the metadata cannot be encoded.
func checkTag(domain universal.Domain, vin string, ds *domainState, exp, counter, flags uint32, k, payload, tag []byte) universal.MessageFault_E {
	meta, err := commandMetadata(domain, vin, ds.epoch[:], exp, counter, flags)
	if err != nil {
		return universal.MessageFault_E_MESSAGEFAULT_ERROR_BAD_PARAMETER
	}
	if !hmac.Equal(commandTag(k, meta, payload), tag) {
		return universal.MessageFault_E_MESSAGEFAULT_ERROR_INVALID_SIGNATURE
	}
	return faultNone
}

// acceptCounter is the replay check, the last one: it returns INVALID_TOKEN_OR_COUNTER when the
// message's counter (if it has one) has been used, and otherwise records it in d. VCSEC needs
// counters in order; infotainment accepts them out of order within a sliding window.
func (d *domainState) acceptCounter(domain universal.Domain, counter uint32) universal.MessageFault_E {
	if counter == 0 {
		return faultNone
	}
	if domain == universal.Domain_DOMAIN_VEHICLE_SECURITY {
		if counter <= d.counter {
			return universal.MessageFault_E_MESSAGEFAULT_ERROR_INVALID_TOKEN_OR_COUNTER
		}
		d.counter = counter
		return faultNone
	}
	c, w, ok := slidingWindow(d.counter, d.window, counter)
	if !ok {
		return universal.MessageFault_E_MESSAGEFAULT_ERROR_INVALID_TOKEN_OR_COUNTER
	}
	d.counter, d.window = c, w
	return faultNone
}

// rejectWithSession refuses a command with code and the domain's session info, signed with the
// session key k, so that a client with a stale epoch, clock or counter can resynchronise.
func (v *Vehicle) rejectWithSession(req *universal.RoutableMessage, domain universal.Domain, ds *domainState, k []byte, code universal.MessageFault_E, now time.Time, res result) (result, error) {
	res.rejection = code.String()
	info := &signatures.SessionInfo{
		Counter:   ds.counter,
		PublicKey: v.priv.PublicKey().Bytes(),
		Epoch:     append([]byte(nil), ds.epoch[:]...),
		ClockTime: ds.clock(now),
	}
	var err error
	res.reply, err = sessionInfoReply(req, domain, k, v.vin, info)
	if err != nil {
		return res, err
	}
	res.reply.SignedMessageStatus = &universal.MessageStatus{
		OperationStatus:    universal.OperationStatus_E_OPERATIONSTATUS_ERROR,
		SignedMessageFault: code,
	}
	return res, nil
}

// runAuthenticated hands an authenticated command's payload to the domain's application layer
// and replies with its answer, encrypted when the request asks (flagEncryptResponse). A payload
// the domain cannot decode is refused with DECODING, without session info.
func (v *Vehicle) runAuthenticated(req *universal.RoutableMessage, domain universal.Domain, ds *domainState, h *signatures.HMAC_Personalized_Signature_Data, k, payload []byte, f Fault, now time.Time, res result) (result, error) {
	var (
		action string
		out    []byte
		known  bool
		err    error
	)
	if domain == universal.Domain_DOMAIN_VEHICLE_SECURITY {
		action, out, known, err = v.runVCSEC(payload, f.Refuse)
	} else {
		action, out, known, err = v.runInfotainment(payload, f.Refuse)
	}
	if err != nil {
		return res.refuse(req, universal.MessageFault_E_MESSAGEFAULT_ERROR_DECODING)
	}
	if known {
		res.exec = &Execution{VIN: v.vin, Domain: domainName(domain), Action: action, Result: replyResult(domain, out), At: now}
		res.refused = f.Refuse != ""
	}

	res.reply = baseReply(req, domain)
	res.reply.Payload = &universal.RoutableMessage_ProtobufMessageAsBytes{ProtobufMessageAsBytes: out}
	if req.GetFlags()&flagEncryptResponse != 0 {
		return res, v.encryptReply(res.reply, domain, ds, k, h.GetTag(), out)
	}
	return res, nil
}

// encryptReply replaces reply's payload with out encrypted under the session key k (AES-GCM),
// bound to the request by its tag, and counts the response in ds.
func (v *Vehicle) encryptReply(reply *universal.RoutableMessage, domain universal.Domain, ds *domainState, k, reqTag, out []byte) error {
	ds.respCounter++
	aad, err := responseAAD(domain, v.vin, ds.respCounter, reply.GetFlags(), requestHash(domain, reqTag), faultNone)
	if err != nil {
		return err
	}
	nonce, ct, tag, err := encryptResponse(k, out, aad)
	if err != nil {
		return err
	}
	reply.Payload = &universal.RoutableMessage_ProtobufMessageAsBytes{ProtobufMessageAsBytes: ct}
	reply.SubSigData = &universal.RoutableMessage_SignatureData{SignatureData: &signatures.SignatureData{
		SigType: &signatures.SignatureData_AES_GCM_ResponseData{AES_GCM_ResponseData: &signatures.AES_GCM_Response_Signature_Data{
			Nonce: nonce, Counter: ds.respCounter, Tag: tag,
		}},
	}}
	return nil
}

// baseReply addresses a reply the way the client's dispatcher matches it: back to the request's
// routing address, from the domain, echoing the request's uuid.
func baseReply(req *universal.RoutableMessage, domain universal.Domain) *universal.RoutableMessage {
	r := &universal.RoutableMessage{
		FromDestination: &universal.Destination{SubDestination: &universal.Destination_Domain{Domain: domain}},
		RequestUuid:     append([]byte(nil), req.GetUuid()...),
	}
	if from := req.GetFromDestination(); from != nil {
		r.ToDestination = proto.Clone(from).(*universal.Destination)
	}
	return r
}

// faultReply is a protocol-level refusal without session info.
func faultReply(req *universal.RoutableMessage, domain universal.Domain, code universal.MessageFault_E) *universal.RoutableMessage {
	r := baseReply(req, domain)
	r.SignedMessageStatus = &universal.MessageStatus{
		OperationStatus:    universal.OperationStatus_E_OPERATIONSTATUS_ERROR,
		SignedMessageFault: code,
	}
	return r
}

// sessionInfoReply carries signed session info; the challenge is the request's uuid.
func sessionInfoReply(req *universal.RoutableMessage, domain universal.Domain, k []byte, vin string, info *signatures.SessionInfo) (*universal.RoutableMessage, error) {
	encoded, err := proto.Marshal(info)
	if err != nil {
		return nil, err
	}
	tag, err := sessionInfoTag(k, vin, req.GetUuid(), encoded)
	if err != nil {
		return nil, fmt.Errorf("session info tag: %w", err)
	}
	r := baseReply(req, domain)
	r.Payload = &universal.RoutableMessage_SessionInfo{SessionInfo: encoded}
	r.SubSigData = &universal.RoutableMessage_SignatureData{SignatureData: &signatures.SignatureData{
		SigType: &signatures.SignatureData_SessionInfoTag{SessionInfoTag: &signatures.HMAC_Signature_Data{Tag: tag}},
	}}
	return r, nil
}
