package fleetsim

import (
	"crypto/ecdh"
	"crypto/sha1" //nolint:gosec // VCSEC identifies keys by SHA-1 of the public key.
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/carserver"
	verrors "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/errors"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/vcsec"
)

// runVCSEC decodes a VCSEC.UnsignedMessage, applies it to the car state and returns the action
// name, the encoded FromVCSECMessage reply and whether the action is one VCSEC knows. The caller
// holds v.mu. An error means the payload does not decode.
//
// As pkg/vehicle/vcsec.go expects, a successful RKE or closure command gets an empty reply, a
// refused one a nominalError, and a whitelist operation a commandStatus carrying
// whitelistOperationStatus.
func (v *Vehicle) runVCSEC(payload []byte, refuse string) (action string, out []byte, known bool, err error) {
	var msg vcsec.UnsignedMessage
	if err := proto.Unmarshal(payload, &msg); err != nil {
		return "", nil, false, err
	}
	switch sub := msg.GetSubMessage().(type) {
	case *vcsec.UnsignedMessage_RKEAction:
		action, out, known = v.runRKE(sub.RKEAction, refuse)
	case *vcsec.UnsignedMessage_ClosureMoveRequest:
		action, out, known = v.runClosureMove(sub.ClosureMoveRequest, refuse)
	case *vcsec.UnsignedMessage_WhitelistOperation:
		action, out, known = v.runWhitelistOperation(sub.WhitelistOperation, refuse)
	case *vcsec.UnsignedMessage_InformationRequest:
		action = "informationRequest:" + sub.InformationRequest.GetInformationRequestType().String()
		return action, v.vcsecInformation(sub.InformationRequest), true, nil
	default:
		return "unknown", nominal(verrors.GenericError_E_GENERICERROR_UNKNOWN), false, nil
	}
	return action, out, known, nil
}

// vcsecRefusal is the nominalError a refused RKE or closure command gets: the generic error named
// by refuse (the Refuse fault, e.g. "unauthorized" for GENERICERROR_UNAUTHORIZED), or UNKNOWN.
func vcsecRefusal(refuse string) []byte {
	code := verrors.GenericError_E_GENERICERROR_UNKNOWN
	if c, ok := verrors.GenericError_E_value["GENERICERROR_"+strings.ToUpper(refuse)]; ok {
		code = verrors.GenericError_E(c)
	}
	return nominal(code)
}

// runRKE runs a remote keyless entry action (lock, unlock, remote drive, wake), or refuses it
// when refuse is set. An action number VCSEC does not know is not known, and answered UNKNOWN.
func (v *Vehicle) runRKE(a vcsec.RKEAction_E, refuse string) (action string, out []byte, known bool) {
	action = a.String()
	if _, ok := vcsec.RKEAction_E_name[int32(a)]; !ok {
		return "RKEAction:" + action, nominal(verrors.GenericError_E_GENERICERROR_UNKNOWN), false
	}
	if refuse != "" {
		return action, vcsecRefusal(refuse), true
	}
	switch a {
	case vcsec.RKEAction_E_RKE_ACTION_LOCK, vcsec.RKEAction_E_RKE_ACTION_AUTO_SECURE_VEHICLE:
		v.state.Locked = true
	case vcsec.RKEAction_E_RKE_ACTION_UNLOCK:
		v.state.Locked = false
	case vcsec.RKEAction_E_RKE_ACTION_REMOTE_DRIVE:
		v.state.RemoteStart = true
	case vcsec.RKEAction_E_RKE_ACTION_WAKE_VEHICLE:
		v.state.Asleep = false
	}
	return action, nil, true
}

// runClosureMove moves the trunks, tonneau and charge port door as req asks, or refuses it when
// refuse is set. A request that moves nothing is answered UNKNOWN.
func (v *Vehicle) runClosureMove(req *vcsec.ClosureMoveRequest, refuse string) (action string, out []byte, known bool) {
	moves := closureMoves(req)
	action = "closureMoveRequest:" + strings.Join(moves, ",")
	if len(moves) == 0 {
		return action, nominal(verrors.GenericError_E_GENERICERROR_UNKNOWN), true
	}
	if refuse != "" {
		return action, vcsecRefusal(refuse), true
	}
	move(&v.state.RearTrunkOpen, req.GetRearTrunk())
	move(&v.state.FrontTrunkOpen, req.GetFrontTrunk())
	move(&v.state.TonneauOpen, req.GetTonneau())
	move(&v.state.ChargePortOpen, req.GetChargePort())
	return action, nil, true
}

// closureMoves names the moves req asks for, "closure=MOVE_TYPE", in field order (the proto
// declares them by number).
func closureMoves(req *vcsec.ClosureMoveRequest) []string {
	var moves []string
	r := req.ProtoReflect()
	fields := r.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Kind() != protoreflect.EnumKind {
			continue
		}
		if e := r.Get(fd).Enum(); e != 0 {
			name := vcsec.ClosureMoveType_E(e).String()
			moves = append(moves, string(fd.Name())+"="+strings.TrimPrefix(name, "CLOSURE_MOVE_TYPE_"))
		}
	}
	return moves
}

// runWhitelistOperation applies a key-list operation, or fails it with UNDOCUMENTED_ERROR when
// refuse is set, and answers with a commandStatus carrying the whitelistOperationStatus.
func (v *Vehicle) runWhitelistOperation(op *vcsec.WhitelistOperation, refuse string) (action string, out []byte, known bool) {
	name := "unknown"
	if fd := op.ProtoReflect().WhichOneof(op.ProtoReflect().Descriptor().Oneofs().ByName("sub_message")); fd != nil {
		name = string(fd.Name())
	}
	action = "whitelistOperation:" + name
	var info vcsec.WhitelistOperationInformation_E
	if refuse != "" {
		info = vcsec.WhitelistOperationInformation_E_WHITELISTOPERATION_INFORMATION_UNDOCUMENTED_ERROR
	} else {
		info = v.whitelist(op)
	}
	status := vcsec.OperationStatus_E_OPERATIONSTATUS_OK
	if info != vcsec.WhitelistOperationInformation_E_WHITELISTOPERATION_INFORMATION_NONE {
		status = vcsec.OperationStatus_E_OPERATIONSTATUS_ERROR
	}
	return action, mustMarshal(&vcsec.FromVCSECMessage{SubMessage: &vcsec.FromVCSECMessage_CommandStatus{
		CommandStatus: &vcsec.CommandStatus{
			OperationStatus: status,
			SubMessage: &vcsec.CommandStatus_WhitelistOperationStatus{WhitelistOperationStatus: &vcsec.WhitelistOperationStatus{
				WhitelistOperationInformation: info,
				OperationStatus:               status,
			}},
		},
	}}), true
}

// move applies a closure move to an open/closed flag. MOVE toggles, as a powered trunk does.
func move(open *bool, m vcsec.ClosureMoveType_E) {
	switch m {
	case vcsec.ClosureMoveType_E_CLOSURE_MOVE_TYPE_OPEN:
		*open = true
	case vcsec.ClosureMoveType_E_CLOSURE_MOVE_TYPE_CLOSE:
		*open = false
	case vcsec.ClosureMoveType_E_CLOSURE_MOVE_TYPE_MOVE:
		*open = !*open
	}
}

// whitelist applies a key-list operation. The caller holds v.mu.
func (v *Vehicle) whitelist(op *vcsec.WhitelistOperation) vcsec.WhitelistOperationInformation_E {
	var raw []byte
	add := true
	switch {
	case op.GetAddKeyToWhitelistAndAddPermissions() != nil:
		raw = op.GetAddKeyToWhitelistAndAddPermissions().GetKey().GetPublicKeyRaw()
	case op.GetAddPublicKeyToWhitelist() != nil:
		raw = op.GetAddPublicKeyToWhitelist().GetPublicKeyRaw()
	case op.GetRemovePublicKeyFromWhitelist() != nil:
		raw, add = op.GetRemovePublicKeyFromWhitelist().GetPublicKeyRaw(), false
	default:
		// Permission changes and impermanent keys are accepted without simulating them.
		return vcsec.WhitelistOperationInformation_E_WHITELISTOPERATION_INFORMATION_NONE
	}
	pub, err := ecdh.P256().NewPublicKey(raw)
	if err != nil {
		return vcsec.WhitelistOperationInformation_E_WHITELISTOPERATION_INFORMATION_INVALID_PUBLIC_KEY
	}
	if add {
		v.enrolled[string(pub.Bytes())] = pub
	} else {
		delete(v.enrolled, string(pub.Bytes()))
	}
	return vcsec.WhitelistOperationInformation_E_WHITELISTOPERATION_INFORMATION_NONE
}

// vcsecUnsignedInformation answers payload if it is an InformationRequest, which VCSEC answers
// without a signature; ok is false if it is not one. The caller holds v.mu.
func (v *Vehicle) vcsecUnsignedInformation(payload []byte) (out []byte, ok bool) {
	var msg vcsec.UnsignedMessage
	if err := proto.Unmarshal(payload, &msg); err != nil || msg.GetInformationRequest() == nil {
		return nil, false
	}
	return v.vcsecInformation(msg.GetInformationRequest()), true
}

// vcsecInformation answers an InformationRequest. The caller holds v.mu.
func (v *Vehicle) vcsecInformation(req *vcsec.InformationRequest) []byte {
	switch req.GetInformationRequestType() {
	case vcsec.InformationRequestType_INFORMATION_REQUEST_TYPE_GET_STATUS:
		lock := vcsec.VehicleLockState_E_VEHICLELOCKSTATE_UNLOCKED
		if v.state.Locked {
			lock = vcsec.VehicleLockState_E_VEHICLELOCKSTATE_LOCKED
		}
		sleep := vcsec.VehicleSleepStatus_E_VEHICLE_SLEEP_STATUS_AWAKE
		if v.state.Asleep {
			sleep = vcsec.VehicleSleepStatus_E_VEHICLE_SLEEP_STATUS_ASLEEP
		}
		closure := func(open bool) vcsec.ClosureState_E {
			if open {
				return vcsec.ClosureState_E_CLOSURESTATE_OPEN
			}
			return vcsec.ClosureState_E_CLOSURESTATE_CLOSED
		}
		return mustMarshal(&vcsec.FromVCSECMessage{SubMessage: &vcsec.FromVCSECMessage_VehicleStatus{VehicleStatus: &vcsec.VehicleStatus{
			ClosureStatuses: &vcsec.ClosureStatuses{
				RearTrunk:  closure(v.state.RearTrunkOpen),
				FrontTrunk: closure(v.state.FrontTrunkOpen),
				ChargePort: closure(v.state.ChargePortOpen),
				Tonneau:    closure(v.state.TonneauOpen),
			},
			VehicleLockState:   lock,
			VehicleSleepStatus: sleep,
		}}})
	case vcsec.InformationRequestType_INFORMATION_REQUEST_TYPE_GET_WHITELIST_INFO:
		info := &vcsec.WhitelistInfo{}
		ids := make([]string, 0, len(v.enrolled))
		for id := range v.enrolled {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for i, id := range ids {
			sum := sha1.Sum([]byte(id)) //nolint:gosec // protocol key identifier
			info.WhitelistEntries = append(info.WhitelistEntries, &vcsec.KeyIdentifier{PublicKeySHA1: sum[:4]})
			info.SlotMask |= 1 << uint(i)
		}
		info.NumberOfEntries = uint32(len(ids)) //nolint:gosec // G115: a key list holds a few dozen keys
		return mustMarshal(&vcsec.FromVCSECMessage{SubMessage: &vcsec.FromVCSECMessage_WhitelistInfo{WhitelistInfo: info}})
	default:
		return nominal(verrors.GenericError_E_GENERICERROR_UNKNOWN)
	}
}

func nominal(code verrors.GenericError_E) []byte {
	return mustMarshal(&vcsec.FromVCSECMessage{SubMessage: &vcsec.FromVCSECMessage_NominalError{
		NominalError: &verrors.NominalError{GenericError: code},
	}})
}

// mustMarshal encodes a message built here; marshaling a well-formed message cannot fail.
func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic("fleetsim: marshal: " + err.Error())
	}
	return b
}

// replyResult reads the car's verdict from the application-layer reply it built: "ok", or the
// reason it refused (an Infotainment result reason, a VCSEC generic error or whitelist status).
func replyResult(domain universal.Domain, out []byte) string {
	if domain == universal.Domain_DOMAIN_VEHICLE_SECURITY {
		var m vcsec.FromVCSECMessage
		if proto.Unmarshal(out, &m) != nil {
			return "ok"
		}
		if e := m.GetNominalError(); e != nil {
			return strings.ToLower(strings.TrimPrefix(e.GetGenericError().String(), "GENERICERROR_"))
		}
		if w := m.GetCommandStatus().GetWhitelistOperationStatus(); w != nil && w.GetOperationStatus() == vcsec.OperationStatus_E_OPERATIONSTATUS_ERROR {
			return strings.ToLower(strings.TrimPrefix(w.GetWhitelistOperationInformation().String(), "WHITELISTOPERATION_INFORMATION_"))
		}
		return "ok"
	}
	var r carserver.Response
	if proto.Unmarshal(out, &r) != nil || r.GetActionStatus().GetResult() != carserver.OperationStatus_E_OPERATIONSTATUS_ERROR {
		return "ok"
	}
	if reason := r.GetActionStatus().GetResultReason().GetPlainText(); reason != "" {
		return reason
	}
	return "error"
}
