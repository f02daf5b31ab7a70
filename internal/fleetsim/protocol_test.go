package fleetsim

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"

	"github.com/teslamotors/vehicle-command/pkg/connector"
	"github.com/teslamotors/vehicle-command/pkg/connector/inet"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/carserver"
	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/signatures"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/vcsec"
	"github.com/teslamotors/vehicle-command/pkg/vehicle"
)

var ignoreAt = cmpopts.IgnoreFields(Execution{}, "At")

// oneDomain is used where a handshake is expected to fail: vehicle-command v0.4.1's
// Dispatcher.StartSessions returns on the first error and leaves the other domain's goroutine
// blocked forever on an unbuffered channel, which goleak would (rightly) report.
var oneDomain = []universal.Domain{universal.Domain_DOMAIN_INFOTAINMENT}

// TestReferenceClient runs real commands in both domains through vehicle-command's client, with
// and without FLAG_ENCRYPT_RESPONSE.
func TestReferenceClient(t *testing.T) {
	for _, tc := range []struct {
		name    string
		flags   uint32
		encrypt bool
	}{
		{"encrypted responses", vehicle.DefaultFlags, true},
		{"plaintext responses", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim, ts, vin, key := oneVehicleSim(t, Options{}, 1)
			car, conn := newSession(t, ts, vin, key, nil)
			car.Flags = tc.flags // flags go on commands only, not on handshakes
			steps := []struct {
				name string
				run  func() error
			}{
				{"Unlock", func() error { return car.Unlock(callCtx(t)) }},
				{"ChangeChargeLimit", func() error { return car.ChangeChargeLimit(callCtx(t), 75) }},
				{"ChargeStart", func() error { return car.ChargeStart(callCtx(t)) }},
				{"SetSentryMode", func() error { return car.SetSentryMode(callCtx(t), true) }},
				{"OpenTrunk", func() error { return car.OpenTrunk(callCtx(t)) }},
				{"SetChargingAmps", func() error { return car.SetChargingAmps(callCtx(t), 24) }},
				{"Lock", func() error { return car.Lock(callCtx(t)) }},
				{"ClimateOn", func() error { return car.ClimateOn(callCtx(t)) }},
			}
			for _, s := range steps {
				if err := s.run(); err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
			}
			// The car refuses with a reason the client reports as a nominal error.
			err := car.ChargeStart(callCtx(t))
			if !protocol.IsNominalError(err) || err.Error() != "car could not execute command: is_charging" {
				t.Errorf("second ChargeStart: err = %v, want the car's refusal", err)
			}
			// getVehicleData answers with the state the commands set.
			data, err := car.GetState(callCtx(t), vehicle.StateCategoryCharge)
			if err != nil {
				t.Fatalf("GetState: %v", err)
			}
			if got := data.GetChargeState().GetChargeLimitSoc(); got != 75 {
				t.Errorf("charge limit from GetState = %d, want 75", got)
			}

			wantState := defaultCarState()
			wantState.Locked = true
			wantState.ChargeLimit = 75
			wantState.Charging = true
			wantState.SentryMode = true
			wantState.RearTrunkOpen = true
			wantState.ChargingAmps = 24
			wantState.ClimateOn = true
			// Time moves while the test runs: the car charges and its cabin warms, by a hair.
			if diff := cmp.Diff(wantState, sim.Vehicle(vin).State(), cmpopts.EquateApprox(0, 0.05)); diff != "" {
				t.Errorf("car state (-want +got):\n%s", diff)
			}

			wantExec := []Execution{
				{VIN: vin, Domain: DomainVCSEC, Action: "RKE_ACTION_UNLOCK", Result: "ok"},
				{VIN: vin, Domain: DomainInfotainment, Action: "chargingSetLimitAction", Result: "ok"},
				{VIN: vin, Domain: DomainInfotainment, Action: "chargingStartStopAction", Result: "ok"},
				{VIN: vin, Domain: DomainInfotainment, Action: "vehicleControlSetSentryModeAction", Result: "ok"},
				{VIN: vin, Domain: DomainVCSEC, Action: "closureMoveRequest:rearTrunk=MOVE", Result: "ok"},
				{VIN: vin, Domain: DomainInfotainment, Action: "setChargingAmpsAction", Result: "ok"},
				{VIN: vin, Domain: DomainVCSEC, Action: "RKE_ACTION_LOCK", Result: "ok"},
				{VIN: vin, Domain: DomainInfotainment, Action: "hvacAutoAction", Result: "ok"},
				{VIN: vin, Domain: DomainInfotainment, Action: "chargingStartStopAction", Result: "is_charging"},
				{VIN: vin, Domain: DomainInfotainment, Action: "getVehicleData", Result: "ok"},
			}
			if diff := cmp.Diff(wantExec, sim.Executions(vin), ignoreAt); diff != "" {
				t.Errorf("executions (-want +got):\n%s", diff)
			}

			// Every command reply was encrypted exactly when the client asked.
			encrypted := 0
			for _, r := range conn.replies(t) {
				if r.GetSignatureData().GetAES_GCM_ResponseData() != nil {
					encrypted++
				}
			}
			if want := map[bool]int{true: len(wantExec), false: 0}[tc.encrypt]; encrypted != want {
				t.Errorf("%d encrypted replies, want %d", encrypted, want)
			}

			st := sim.Stats()
			wantVS := VehicleStats{
				Handshakes: DomainCounts{VCSEC: 1, Infotainment: 1},
				Commands:   DomainCounts{VCSEC: 3, Infotainment: 7},
				Executed:   DomainCounts{VCSEC: 3, Infotainment: 7},
			}
			if diff := cmp.Diff(wantVS, st.Vehicles[vin]); diff != "" {
				t.Errorf("vehicle stats (-want +got):\n%s", diff)
			}
			if got := st.Billing[BillingCommands]; got != 12 {
				t.Errorf("billed commands = %d, want 12 (2 handshakes + 10 commands)", got)
			}
		})
	}
}

// TestUnknownKey checks that a key the car does not know is refused in the ways the client
// reports as "not paired".
func TestUnknownKey(t *testing.T) {
	sim, ts := startSim(t, Options{})
	vin := NewTestVIN(2)
	enrolled, stranger := newClientKey(t), newClientKey(t)
	sim.AddVehicle(vin, enrolled.pub)

	t.Run("handshake", func(t *testing.T) {
		car, _ := newClient(t, ts, vin, stranger)
		err := car.StartSession(callCtx(t), []universal.Domain{universal.Domain_DOMAIN_INFOTAINMENT})
		if !errors.Is(err, protocol.ErrKeyNotPaired) {
			t.Fatalf("StartSession with an unknown key: err = %v, want ErrKeyNotPaired", err)
		}
		if got := sim.Stats().Rejections["SESSION_INFO_STATUS_KEY_NOT_ON_WHITELIST"]; got != 1 {
			t.Errorf("KEY_NOT_ON_WHITELIST rejections = %d, want 1", got)
		}
	})

	t.Run("command after the key was removed", func(t *testing.T) {
		car, _ := newSession(t, ts, vin, enrolled, nil)
		sim.Vehicle(vin).Unenroll(enrolled.pub)
		defer sim.Vehicle(vin).Enroll(enrolled.pub)
		if err := car.Lock(callCtx(t)); !errors.Is(err, protocol.ErrKeyNotPaired) {
			t.Fatalf("Lock with a removed key: err = %v, want ErrKeyNotPaired", err)
		}
		if got := sim.Stats().Rejections["MESSAGEFAULT_ERROR_UNKNOWN_KEY_ID"]; got != 1 {
			t.Errorf("UNKNOWN_KEY_ID rejections = %d, want 1", got)
		}
	})
	if got := sim.Executions(vin); len(got) != 0 {
		t.Errorf("executions = %v, want none", got)
	}
}

// TestReplay resends the exact bytes of an accepted command: the second copy is refused with
// fresh session info and does not run.
func TestReplay(t *testing.T) {
	sim, ts, vin, key := oneVehicleSim(t, Options{}, 3)
	car, conn := newSession(t, ts, vin, key, nil)
	raw := newRawClient(t, ts, vin, key)

	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"VCSEC", func() error { return car.Lock(callCtx(t)) }},
		{"Infotainment", func() error { return car.SetSentryMode(callCtx(t), true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(sim.Executions(vin))
			if err := tc.run(); err != nil {
				t.Fatal(err)
			}
			sent := conn.lastSent()
			var orig universal.RoutableMessage
			if err := proto.Unmarshal(sent, &orig); err != nil {
				t.Fatal(err)
			}
			reply := raw.post(sent)
			if got := reply.GetSignedMessageStatus().GetSignedMessageFault(); got != universal.MessageFault_E_MESSAGEFAULT_ERROR_INVALID_TOKEN_OR_COUNTER {
				t.Errorf("replay fault = %v, want INVALID_TOKEN_OR_COUNTER", got)
			}
			// The refusal carries session info tagged for the replayed request's uuid.
			raw.checkSessionInfo(reply, orig.GetUuid())
			if diff := cmp.Diff(orig.GetUuid(), reply.GetRequestUuid()); diff != "" {
				t.Errorf("request_uuid not echoed:\n%s", diff)
			}
			if got := len(sim.Executions(vin)) - before; got != 1 {
				t.Errorf("command ran %d times, want 1", got)
			}
		})
	}
}

// TestReboot makes the client re-sync from the INCORRECT_EPOCH fault's session info; each
// command still runs exactly once and no new handshake is needed.
func TestReboot(t *testing.T) {
	sim, ts, vin, key := oneVehicleSim(t, Options{}, 4)
	car, _ := newSession(t, ts, vin, key, nil)
	if err := car.ChangeChargeLimit(callCtx(t), 60); err != nil {
		t.Fatal(err)
	}
	sim.Reboot(vin)
	if err := car.ChangeChargeLimit(callCtx(t), 70); err != nil {
		t.Fatalf("after reboot: %v", err)
	}
	if err := car.Unlock(callCtx(t)); err != nil {
		t.Fatalf("VCSEC after reboot: %v", err)
	}
	want := []Execution{
		{VIN: vin, Domain: DomainInfotainment, Action: "chargingSetLimitAction", Result: "ok"},
		{VIN: vin, Domain: DomainInfotainment, Action: "chargingSetLimitAction", Result: "ok"},
		{VIN: vin, Domain: DomainVCSEC, Action: "RKE_ACTION_UNLOCK", Result: "ok"},
	}
	if diff := cmp.Diff(want, sim.Executions(vin), ignoreAt); diff != "" {
		t.Errorf("executions (-want +got):\n%s", diff)
	}
	st := sim.Stats()
	if got := st.Rejections["MESSAGEFAULT_ERROR_INCORRECT_EPOCH"]; got != 2 {
		t.Errorf("INCORRECT_EPOCH rejections = %d, want 2 (one per domain)", got)
	}
	if diff := cmp.Diff(DomainCounts{VCSEC: 1, Infotainment: 1}, st.Vehicles[vin].Handshakes); diff != "" {
		t.Errorf("handshakes (-want +got):\n%s", diff)
	}
	if got := sim.Vehicle(vin).State().ChargeLimit; got != 70 {
		t.Errorf("charge limit = %d, want 70", got)
	}
}

// TestExpired checks expiry against the vehicle's clock, driven by Options.Now.
func TestExpired(t *testing.T) {
	clock := newFakeClock()
	sim, ts, vin, key := oneVehicleSim(t, Options{Now: clock.Now}, 5)

	t.Run("raw command is refused", func(t *testing.T) {
		raw := newRawClient(t, ts, vin, key)
		info := raw.handshake(universal.Domain_DOMAIN_INFOTAINMENT)
		clock.Advance(20 * time.Second)
		payload := mustProto(t, chargeLimitAction(80))
		msg := raw.command(universal.Domain_DOMAIN_INFOTAINMENT, payload, info.GetCounter()+1, info.GetClockTime()+10, 0)
		var req universal.RoutableMessage
		_ = proto.Unmarshal(msg, &req)
		reply := raw.post(msg)
		if got := reply.GetSignedMessageStatus().GetSignedMessageFault(); got != universal.MessageFault_E_MESSAGEFAULT_ERROR_TIME_EXPIRED {
			t.Fatalf("fault = %v, want TIME_EXPIRED", got)
		}
		fresh := raw.checkSessionInfo(reply, req.GetUuid())
		if fresh.GetClockTime() != info.GetClockTime()+20 {
			t.Errorf("clock in fresh session info = %d, want %d", fresh.GetClockTime(), info.GetClockTime()+20)
		}
		if got := sim.Executions(vin); len(got) != 0 {
			t.Errorf("expired command ran: %v", got)
		}
	})

	t.Run("reference client re-syncs", func(t *testing.T) {
		car, _ := newSession(t, ts, vin, key, nil)
		// The vehicle's clock jumps an hour ahead of the client's estimate.
		clock.Advance(time.Hour)
		before := sim.Stats().Rejections["MESSAGEFAULT_ERROR_TIME_EXPIRED"]
		if err := car.ChangeChargeLimit(callCtx(t), 81); err != nil {
			t.Fatal(err)
		}
		if got := sim.Stats().Rejections["MESSAGEFAULT_ERROR_TIME_EXPIRED"] - before; got != 1 {
			t.Errorf("TIME_EXPIRED rejections = %d, want 1", got)
		}
		if got := len(sim.Executions(vin)); got != 1 {
			t.Errorf("executions = %d, want 1", got)
		}
	})
}

func chargeLimitAction(p int32) *carserver.Action {
	return &carserver.Action{ActionMsg: &carserver.Action_VehicleAction{VehicleAction: &carserver.VehicleAction{
		VehicleActionMsg: &carserver.VehicleAction_ChargingSetLimitAction{ChargingSetLimitAction: &carserver.ChargingSetLimitAction{Percent: p}},
	}}}
}

func lockMessage() *vcsec.UnsignedMessage {
	return &vcsec.UnsignedMessage{SubMessage: &vcsec.UnsignedMessage_RKEAction{RKEAction: vcsec.RKEAction_E_RKE_ACTION_LOCK}}
}

// TestVerifierFaults walks the verifier's checks with hand-made messages.
func TestVerifierFaults(t *testing.T) {
	clock := newFakeClock()
	sim, ts, vin, key := oneVehicleSim(t, Options{Now: clock.Now}, 6)
	raw := newRawClient(t, ts, vin, key)
	const (
		info = universal.Domain_DOMAIN_INFOTAINMENT
		sec  = universal.Domain_DOMAIN_VEHICLE_SECURITY
	)
	raw.handshake(info)
	raw.handshake(sec)
	charge := mustProto(t, chargeLimitAction(77))
	lock := mustProto(t, lockMessage())

	type fault = universal.MessageFault_E
	const (
		none      = universal.MessageFault_E_MESSAGEFAULT_ERROR_NONE
		counter   = universal.MessageFault_E_MESSAGEFAULT_ERROR_INVALID_TOKEN_OR_COUNTER
		signature = universal.MessageFault_E_MESSAGEFAULT_ERROR_INVALID_SIGNATURE
		epoch     = universal.MessageFault_E_MESSAGEFAULT_ERROR_INCORRECT_EPOCH
		ttl       = universal.MessageFault_E_MESSAGEFAULT_ERROR_TIME_TO_LIVE_TOO_LONG
		badParam  = universal.MessageFault_E_MESSAGEFAULT_ERROR_BAD_PARAMETER
	)
	// The steps share the vehicle's counters, so they run in order.
	steps := []struct {
		name     string
		msg      func() []byte
		want     fault
		withInfo bool
	}{
		{"infotainment 10", func() []byte { return raw.command(info, charge, 10, 5, 0) }, none, false},
		{"infotainment 8 (out of order, in window)", func() []byte { return raw.command(info, charge, 8, 5, 2) }, none, false},
		{"infotainment 8 again", func() []byte { return raw.command(info, charge, 8, 5, 0) }, counter, true},
		{"infotainment 10 again", func() []byte { return raw.command(info, charge, 10, 5, 0) }, counter, true},
		{"infotainment 50", func() []byte { return raw.command(info, charge, 50, 5, 0) }, none, false},
		{"infotainment 17 (outside window)", func() []byte { return raw.command(info, charge, 17, 5, 0) }, counter, true},
		{"vcsec 3", func() []byte { return raw.command(sec, lock, 3, 5, 2) }, none, false},
		{"vcsec 2 (out of order)", func() []byte { return raw.command(sec, lock, 2, 5, 0) }, counter, true},
		{"vcsec 3 again", func() []byte { return raw.command(sec, lock, 3, 5, 0) }, counter, true},
		{"vcsec 4", func() []byte { return raw.command(sec, lock, 4, 5, 0) }, none, false},
		{"bad tag", func() []byte {
			m := raw.command(info, charge, 60, 5, 0)
			var r universal.RoutableMessage
			_ = proto.Unmarshal(m, &r)
			r.GetSignatureData().GetHMAC_PersonalizedData().Tag[0] ^= 1
			return mustProto(t, &r)
		}, signature, true},
		{"flags not covered by the tag", func() []byte {
			m := raw.command(info, charge, 61, 5, 0)
			var r universal.RoutableMessage
			_ = proto.Unmarshal(m, &r)
			r.Flags = 2
			return mustProto(t, &r)
		}, signature, true},
		{"signed for another VIN", func() []byte {
			other := *raw
			other.vin = NewTestVIN(99)
			return other.command(info, charge, 62, 5, 0)
		}, signature, true},
		{"wrong epoch", func() []byte { return raw.commandWithEpoch(info, charge, 62, 5, 0, randomBytes(16)) }, epoch, true},
		{"no epoch is fine", func() []byte { return raw.commandWithEpoch(info, charge, 63, 5, 0, nil) }, none, false},
		{"counter 0 with long expiry", func() []byte { return raw.command(info, charge, 0, 100, 0) }, ttl, true},
		{"counter 0 expiring soon", func() []byte { return raw.command(info, charge, 0, 20, 0) }, none, false},
		{"expires_at beyond 2^30", func() []byte { return raw.command(info, charge, 70, 1<<30+1, 0) }, badParam, true},
	}
	for _, s := range steps {
		msg := s.msg()
		var req universal.RoutableMessage
		if err := proto.Unmarshal(msg, &req); err != nil {
			t.Fatal(err)
		}
		before := len(sim.Executions(vin))
		reply := raw.post(msg)
		if got := reply.GetSignedMessageStatus().GetSignedMessageFault(); got != s.want {
			t.Errorf("%s: fault = %v, want %v", s.name, got, s.want)
			continue
		}
		ran := len(sim.Executions(vin)) - before
		if (s.want == none) != (ran == 1) {
			t.Errorf("%s: ran %d times", s.name, ran)
		}
		if s.withInfo {
			raw.checkSessionInfo(reply, req.GetUuid())
		} else if reply.GetSessionInfo() != nil {
			t.Errorf("%s: unexpected session info", s.name)
		}
	}

	t.Run("unsigned command", func(t *testing.T) {
		msg := &universal.RoutableMessage{
			ToDestination:   &universal.Destination{SubDestination: &universal.Destination_Domain{Domain: sec}},
			FromDestination: &universal.Destination{SubDestination: &universal.Destination_RoutingAddress{RoutingAddress: randomBytes(16)}},
			Payload:         &universal.RoutableMessage_ProtobufMessageAsBytes{ProtobufMessageAsBytes: lock},
			Uuid:            randomBytes(16),
		}
		reply := raw.post(mustProto(t, msg))
		if got := reply.GetSignedMessageStatus().GetSignedMessageFault(); got != badParam {
			t.Errorf("fault = %v, want BAD_PARAMETER", got)
		}
	})

	t.Run("unknown domain", func(t *testing.T) {
		msg := &universal.RoutableMessage{
			ToDestination: &universal.Destination{SubDestination: &universal.Destination_Domain{Domain: universal.Domain(7)}},
			Payload:       &universal.RoutableMessage_SessionInfoRequest{SessionInfoRequest: &universal.SessionInfoRequest{PublicKey: key.pub.Bytes()}},
			Uuid:          randomBytes(16),
		}
		reply := raw.post(mustProto(t, msg))
		if got := reply.GetSignedMessageStatus().GetSignedMessageFault(); got != universal.MessageFault_E_MESSAGEFAULT_ERROR_INVALID_DOMAINS {
			t.Errorf("fault = %v, want INVALID_DOMAINS", got)
		}
	})
}

// TestHandshakeAddressing checks the reply envelope the client's dispatcher matches on.
func TestHandshakeAddressing(t *testing.T) {
	sim, ts, vin, key := oneVehicleSim(t, Options{}, 7)
	v := sim.Vehicle(vin)
	raw := newRawClient(t, ts, vin, key)
	addr, uuid := randomBytes(16), randomBytes(16)
	req := &universal.RoutableMessage{
		ToDestination:   &universal.Destination{SubDestination: &universal.Destination_Domain{Domain: universal.Domain_DOMAIN_VEHICLE_SECURITY}},
		FromDestination: &universal.Destination{SubDestination: &universal.Destination_RoutingAddress{RoutingAddress: addr}},
		Payload:         &universal.RoutableMessage_SessionInfoRequest{SessionInfoRequest: &universal.SessionInfoRequest{PublicKey: key.pub.Bytes()}},
		Uuid:            uuid,
	}
	reply := raw.post(mustProto(t, req))
	if diff := cmp.Diff(addr, reply.GetToDestination().GetRoutingAddress()); diff != "" {
		t.Errorf("to_destination (-want +got):\n%s", diff)
	}
	if got := reply.GetFromDestination().GetDomain(); got != universal.Domain_DOMAIN_VEHICLE_SECURITY {
		t.Errorf("from_destination = %v", got)
	}
	if diff := cmp.Diff(uuid, reply.GetRequestUuid()); diff != "" {
		t.Errorf("request_uuid (-want +got):\n%s", diff)
	}
	info := raw.checkSessionInfo(reply, uuid)
	if diff := cmp.Diff(v.PublicKey().Bytes(), info.GetPublicKey()); diff != "" {
		t.Errorf("session info public key (-want +got):\n%s", diff)
	}
	if info.GetStatus() != signatures.Session_Info_Status_SESSION_INFO_STATUS_OK || len(info.GetEpoch()) != 16 {
		t.Errorf("session info = %v", info)
	}
}

// TestUnknownAction sends an Infotainment action the simulator does not know through the
// client's low-level Send: the car answers ERROR with a reason, and nothing is recorded.
func TestUnknownAction(t *testing.T) {
	sim, ts, vin, key := oneVehicleSim(t, Options{}, 8)
	car, _ := newSession(t, ts, vin, key, []universal.Domain{universal.Domain_DOMAIN_INFOTAINMENT})
	// Action{vehicleAction{field 4000: varint 1}}: a field no VehicleAction defines.
	vehicleAction := []byte{0x80, 0xfa, 0x01, 0x01}
	payload := append([]byte{0x12, byte(len(vehicleAction))}, vehicleAction...) //nolint:gosec // G115: 4 bytes
	out, err := car.Send(callCtx(t), universal.Domain_DOMAIN_INFOTAINMENT, payload, connector.AuthMethodHMAC)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	var resp carserver.Response
	if err := proto.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.GetActionStatus().GetResult() != carserver.OperationStatus_E_OPERATIONSTATUS_ERROR ||
		resp.GetActionStatus().GetResultReason().GetPlainText() != "unsupported action (VehicleAction field [4000])" {
		t.Errorf("response = %v", &resp)
	}
	if got := sim.Executions(vin); len(got) != 0 {
		t.Errorf("executions = %v, want none", got)
	}
}

// TestAsleepAndLegacy checks that the client recognizes the 408 and 422 answers.
func TestAsleepAndLegacy(t *testing.T) {
	sim, ts, vin, key := oneVehicleSim(t, Options{}, 9)
	v := sim.Vehicle(vin)

	t.Run("asleep", func(t *testing.T) {
		v.SetAsleep(true)
		car, _ := newClient(t, ts, vin, key)
		err := car.StartSession(callCtx(t), oneDomain)
		if !errors.Is(err, inet.ErrVehicleNotAwake) {
			t.Fatalf("err = %v, want inet.ErrVehicleNotAwake", err)
		}
		code, _, body := newRawClient(t, ts, vin, key).postStatus([]byte{})
		if code != 408 || string(body) != `{"response":null,"error":"vehicle unavailable: vehicle is offline or asleep","error_description":""}`+"\n" {
			t.Errorf("asleep answer = %d %s", code, body)
		}
	})

	t.Run("asleep fault outlasts wake_up", func(t *testing.T) {
		v.SetAsleep(false)
		sim.SetFault(vin, Fault{Asleep: true})
		defer sim.SetFault(vin, Fault{})
		car, _ := newClient(t, ts, vin, key)
		if err := car.StartSession(callCtx(t), oneDomain); !errors.Is(err, inet.ErrVehicleNotAwake) {
			t.Fatalf("err = %v, want inet.ErrVehicleNotAwake", err)
		}
	})

	t.Run("legacy", func(t *testing.T) {
		sim.SetFault(vin, Fault{Legacy: true})
		defer sim.SetFault(vin, Fault{})
		car, _ := newClient(t, ts, vin, key)
		if err := car.StartSession(callCtx(t), oneDomain); !errors.Is(err, protocol.ErrProtocolNotSupported) {
			t.Fatalf("err = %v, want protocol.ErrProtocolNotSupported", err)
		}
	})

	t.Run("awake again", func(t *testing.T) {
		car, _ := newSession(t, ts, vin, key, nil)
		if err := car.Lock(callCtx(t)); err != nil {
			t.Fatal(err)
		}
	})
	if diff := cmp.Diff(map[string]int{"asleep": 1, "legacy": 1}, sim.Stats().Injected); diff != "" {
		t.Errorf("injected (-want +got):\n%s", diff)
	}
}

// TestFailAfterExecution: the command runs, the client sees a 500 it may not retry.
func TestFailAfterExecution(t *testing.T) {
	sim, ts, vin, key := oneVehicleSim(t, Options{}, 10)
	car, _ := newSession(t, ts, vin, key, nil)
	sim.SetFault(vin, Fault{FailAfterExecution: 500})
	err := car.Lock(callCtx(t))
	var httpErr *inet.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Code != 500 || !protocol.MayHaveSucceeded(err) {
		t.Fatalf("err = %v, want an inet 500 that may have succeeded", err)
	}
	want := []Execution{{VIN: vin, Domain: DomainVCSEC, Action: "RKE_ACTION_LOCK", Result: "ok"}}
	if diff := cmp.Diff(want, sim.Executions(vin), ignoreAt); diff != "" {
		t.Errorf("executions (-want +got):\n%s", diff)
	}
	st := sim.Stats()
	if st.Injected["fail_after_execution"] != 1 || st.Billing[BillingCommands] != 2 {
		t.Errorf("injected %v, billing %v: want 1 failure and only the 2 handshakes billed", st.Injected, st.Billing)
	}
}

// TestRefuseFault makes the car refuse authenticated commands in both domains.
func TestRefuseFault(t *testing.T) {
	sim, ts, vin, key := oneVehicleSim(t, Options{}, 11)
	car, _ := newSession(t, ts, vin, key, nil)
	sim.SetFault("", Fault{Refuse: "closures_open"})
	if err := car.SetSentryMode(callCtx(t), true); err == nil || err.Error() != "car could not execute command: closures_open" {
		t.Errorf("Infotainment: err = %v", err)
	}
	if err := car.Unlock(callCtx(t)); err == nil || err.Error() != "vcsec could not execute command: genericError:GENERICERROR_CLOSURES_OPEN" {
		t.Errorf("VCSEC: err = %v", err)
	}
	if st := sim.Vehicle(vin).State(); st.SentryMode || !st.Locked {
		t.Errorf("a refused command changed the state: %+v", st)
	}
	if got := len(sim.Executions(vin)); got != 2 {
		t.Errorf("executions = %d, want 2 (refused commands still reached the car)", got)
	}
}
