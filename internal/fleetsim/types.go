package fleetsim

import (
	"crypto/ecdh"
	"time"

	"go.uber.org/zap"
)

// Domain names used in Execution.Domain and in Stats.
const (
	// DomainVCSEC is the vehicle security controller (locks, trunks, remote start).
	DomainVCSEC = "VCSEC"
	// DomainInfotainment is the infotainment computer (everything else).
	DomainInfotainment = "INFOTAINMENT"
	// DomainREST marks a legacy REST command (POST /api/1/vehicles/{vin}/command/{name}).
	DomainREST = "REST"
)

// Billing categories used in Stats.Billing, named as in Tesla's price list.
const (
	// BillingCommands counts signed_command and command/* requests.
	BillingCommands = "commands"
	// BillingWakes counts wake_up requests.
	BillingWakes = "wakes"
	// BillingData counts every other Fleet API request.
	BillingData = "data"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Logger receives the simulator's log lines. Nil means no logging.
	Logger *zap.Logger
	// TrustedKeys are the app public keys whose telemetry-config JWS tokens are accepted. Nil or
	// empty means any token that verifies against its own iss claim is accepted.
	TrustedKeys []*ecdh.PublicKey
	// Now is the simulator's clock, used for the vehicles' domain clocks and for Execution.At.
	// Nil means time.Now. Tests move it forward to make commands expire.
	Now func() time.Time
	// Seed, when not empty, makes every vehicle's identity reproducible: its key and its first
	// epochs are derived from Seed and the VIN, and its domains' clocks start at BootTime. A
	// simulator restarted with the same Seed and BootTime is the same fleet that never rebooted,
	// so sessions a client saved stay valid (the dev mode relies on this). Nil means random.
	Seed []byte
	// BootTime is the vehicles' time zero when Seed is set. Zero means the simulator's start.
	BootTime time.Time
	// Latency is how long Fleet API answers take, per route class (see Server.SetLatency). The
	// zero value answers at once, as tests want.
	Latency Latency
	// SleepAfter is how long a car stays awake with nothing to do (no command, no data request,
	// not charging, climate off, sentry off, parked) before it falls asleep. Zero means never, as
	// tests want.
	SleepAfter time.Duration
	// WakeTime is how long wake_up takes to bring an asleep car online; until then the car stays
	// asleep (408 to data and commands). Zero wakes it at once.
	WakeTime time.Duration
	// Echo makes every Fleet API route the simulator does not need for signing and waking (reads
	// such as vehicle_data, fleet_status, and any unknown path) answer with an Echo of the
	// request, for tests that check exactly what a proxy passed through. Without it those routes
	// answer as the Fleet API does, and an unknown path gets 404.
	Echo bool
}

// Fault is a set of misbehaviours to inject, for one vehicle or for the whole server (see
// Server.SetFault). The zero value injects nothing. When both a vehicle fault and a server-wide
// fault are set, each field takes the vehicle's value if it is non-zero, else the server's.
type Fault struct {
	// Asleep makes the vehicle unreachable: signed_command and command/* answer 408 "vehicle
	// unavailable: vehicle is offline or asleep", and wake_up answers state "asleep", for as long
	// as the fault is set. (To simulate a car that can be woken, use Vehicle.SetAsleep instead.)
	Asleep bool `json:"asleep,omitempty"`
	// Legacy marks a vehicle that does not speak the Vehicle Command Protocol: signed_command
	// answers 422 and the REST command route accepts commands.
	Legacy bool `json:"legacy,omitempty"`
	// RateLimitRetryAfter, when positive, makes every Fleet API request answer 429 with
	// "Retry-After: N" (N seconds) and a JSON body.
	RateLimitRetryAfter int `json:"rate_limit_retry_after,omitempty"`
	// MisdirectedHost, when non-empty, makes every Fleet API request answer 421 with
	// "Alt-Svc: h2=https://HOST" and the "user out of region, use base URL: https://HOST" body.
	MisdirectedHost string `json:"misdirected_host,omitempty"`
	// Delay is waited before any header of a Fleet API answer is written (and before a command
	// is looked at). The wait ends early if the client goes away.
	Delay time.Duration `json:"-"`
	// FailAfterExecution, when non-zero (500 or 504 are the useful values), lets a command run
	// and then answers that status instead of the vehicle's reply, so a client cannot tell that
	// it ran. Handshakes and rejected commands are not affected.
	FailAfterExecution int `json:"fail_after_execution,omitempty"`
	// Refuse, when non-empty, makes the vehicle refuse every authenticated command after
	// recording it: Infotainment answers actionStatus ERROR with this text as the reason, VCSEC
	// answers a nominalError (GENERICERROR_<Refuse> if that names a VCSEC generic error, else
	// GENERICERROR_UNKNOWN).
	Refuse string `json:"refuse,omitempty"`
}

// IsZero reports whether f injects nothing.
func (f Fault) IsZero() bool { return f == Fault{} }

// merge returns f with every zero field taken from base.
func (f Fault) merge(base Fault) Fault {
	if !f.Asleep {
		f.Asleep = base.Asleep
	}
	if !f.Legacy {
		f.Legacy = base.Legacy
	}
	if f.RateLimitRetryAfter == 0 {
		f.RateLimitRetryAfter = base.RateLimitRetryAfter
	}
	if f.MisdirectedHost == "" {
		f.MisdirectedHost = base.MisdirectedHost
	}
	if f.Delay == 0 {
		f.Delay = base.Delay
	}
	if f.FailAfterExecution == 0 {
		f.FailAfterExecution = base.FailAfterExecution
	}
	if f.Refuse == "" {
		f.Refuse = base.Refuse
	}
	return f
}

// Execution records one command that reached a vehicle's application layer: it passed
// authentication (or, for REST, was accepted by a legacy vehicle) and was handed to the simulated
// car, whether the car then carried it out or refused it.
type Execution struct {
	// VIN is the vehicle's VIN.
	VIN string `json:"vin"`
	// Domain is DomainVCSEC, DomainInfotainment or DomainREST.
	Domain string `json:"domain"`
	// Action names what ran. Infotainment: the proto field name of the VehicleAction that was set,
	// such as "chargingSetLimitAction". VCSEC: the RKE action's enum name ("RKE_ACTION_LOCK"), or
	// "closureMoveRequest:rearTrunk=MOVE" (every closure that was asked to move, in field order,
	// comma separated), "whitelistOperation:<operation>" or "informationRequest:<type>". REST: the
	// command name from the path.
	Action string `json:"action"`
	// Body is the raw request body of a REST command, exactly as received; nil otherwise.
	Body []byte `json:"body,omitempty"`
	// Result is what the car answered: "ok", or its reason for refusing ("is_charging", the
	// Refuse fault's text, …).
	Result string `json:"result"`
	// At is the simulator clock's time when the command ran.
	At time.Time `json:"at"`
}

// DomainCounts holds one number per vehicle domain.
type DomainCounts struct {
	// VCSEC is the count for the vehicle security domain.
	VCSEC int `json:"vcsec"`
	// Infotainment is the count for the infotainment domain.
	Infotainment int `json:"infotainment"`
}

// VehicleStats counts what one vehicle saw.
type VehicleStats struct {
	// Handshakes counts session-info requests, per domain (including refused ones).
	Handshakes DomainCounts `json:"handshakes"`
	// Commands counts signed messages other than handshakes that arrived, per domain, whether
	// or not they were accepted.
	Commands DomainCounts `json:"commands"`
	// Executed counts commands that reached the application layer, per domain.
	Executed DomainCounts `json:"executed"`
	// Rejections counts protocol-level refusals by MessageFault name (e.g.
	// "MESSAGEFAULT_ERROR_INVALID_TOKEN_OR_COUNTER") and "SESSION_INFO_STATUS_KEY_NOT_ON_WHITELIST".
	Rejections map[string]int `json:"rejections,omitempty"`
	// REST counts REST commands a legacy vehicle accepted.
	REST int `json:"rest"`
}

// Stats is a snapshot of the simulator's counters since it started or since ResetStats.
type Stats struct {
	// Vehicles holds per-VIN counters. Vehicles that saw nothing are absent.
	Vehicles map[string]VehicleStats `json:"vehicles"`
	// Rejections counts protocol-level refusals by name, over all vehicles.
	Rejections map[string]int `json:"rejections"`
	// Injected counts answers produced by injected faults: "asleep" (408), "legacy" (422),
	// "rate_limited" (429), "misdirected" (421), "fail_after_execution", "refused".
	Injected map[string]int `json:"injected"`
	// JWSAccepted counts telemetry-config tokens accepted.
	JWSAccepted int `json:"jws_accepted"`
	// JWSRejected counts telemetry-config tokens refused (bad signature, untrusted key, wrong aud).
	JWSRejected int `json:"jws_rejected"`
	// Routes counts requests per route: "signed_command", "command", "wake_up", "vehicles",
	// "vehicle", "vehicle_data", "data_request", "fleet_status", "nearby_charging_sites",
	// "service_data", "mobile_enabled", "release_notes", "drivers", "invitations", "products",
	// "users", "fleet_telemetry_config_jws", "fleet_telemetry_config", and "not_found" for any
	// other path ("echo" instead with Options.Echo).
	Routes map[string]int `json:"routes"`
	// Billing counts requests per billing category (BillingCommands, BillingWakes, BillingData)
	// that Tesla would bill: those answered with a status below 500.
	Billing map[string]int `json:"billing"`
	// Upstream counts every request that reached the simulated Fleet API (everything outside
	// /sim/), whatever its answer.
	Upstream int `json:"upstream"`
}
