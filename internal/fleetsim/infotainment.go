package fleetsim

import (
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/carserver"
)

// runInfotainment decodes a CarServer.Action, applies it to the car state and returns the action
// name (the VehicleAction oneof field's proto name), the encoded CarServer.Response and whether
// the action is one the simulator knows. The caller holds v.mu. An error means the payload does
// not decode.
func (v *Vehicle) runInfotainment(payload []byte, refuse string) (action string, out []byte, known bool, err error) {
	var msg carserver.Action
	if err := proto.Unmarshal(payload, &msg); err != nil {
		return "", nil, false, err
	}
	va := msg.GetVehicleAction()
	if va == nil {
		return "", carError("unsupported action: no vehicleAction"), false, nil
	}
	r := va.ProtoReflect()
	fd := r.WhichOneof(r.Descriptor().Oneofs().ByName("vehicle_action_msg"))
	if fd == nil {
		return "unknown", carError(unknownActionText(r.GetUnknown())), false, nil
	}
	action = string(fd.Name())
	if refuse != "" {
		return action, carError(refuse), true, nil
	}
	resp, reason := v.applyVehicleAction(va)
	if reason != "" {
		return action, carError(reason), true, nil
	}
	if resp == nil {
		resp = &carserver.Response{}
	}
	resp.ActionStatus = &carserver.ActionStatus{Result: carserver.OperationStatus_E_OPERATIONSTATUS_OK}
	return action, mustMarshal(resp), true, nil
}

// unknownActionText names the field numbers of an action this simulator (or the protobuf
// definitions it was built with) does not know.
func unknownActionText(raw []byte) string {
	var nums []string
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			break
		}
		raw = raw[n:]
		m := protowire.ConsumeFieldValue(num, typ, raw)
		if m < 0 {
			break
		}
		raw = raw[m:]
		nums = append(nums, fmt.Sprint(num))
	}
	if len(nums) == 0 {
		return "unsupported action"
	}
	return fmt.Sprintf("unsupported action (VehicleAction field %v)", nums)
}

// carError is a CarServer.Response that refuses the command with a reason, as the car does.
func carError(reason string) []byte {
	return mustMarshal(&carserver.Response{ActionStatus: &carserver.ActionStatus{
		Result:       carserver.OperationStatus_E_OPERATIONSTATUS_ERROR,
		ResultReason: &carserver.ResultReason{Reason: &carserver.ResultReason_PlainText{PlainText: reason}},
	}})
}

// applyVehicleAction changes the car state. It returns an optional response body and, when the
// car refuses, the reason. The refusals copy the reasons the REST API is known to give
// ("is_charging", "not_charging", "already off"). The caller holds v.mu.
//
// Software updates (scheduled on the Vehicle's clock), Ping and GetVehicleData (answered with a
// body) are handled here; the actions that only change the CarState go to vehicleActionGroups.
func (v *Vehicle) applyVehicleAction(va *carserver.VehicleAction) (*carserver.Response, string) {
	st := &v.state
	switch a := va.GetVehicleActionMsg().(type) {
	case *carserver.VehicleAction_VehicleControlScheduleSoftwareUpdateAction:
		offset := time.Duration(a.VehicleControlScheduleSoftwareUpdateAction.GetOffsetSec()) * time.Second
		return nil, st.scheduleUpdate(v.now(), offset)
	case *carserver.VehicleAction_VehicleControlCancelSoftwareUpdateAction:
		st.cancelUpdate()
		return nil, ""
	case *carserver.VehicleAction_Ping:
		return &carserver.Response{ResponseMsg: &carserver.Response_Ping{Ping: a.Ping}}, ""
	case *carserver.VehicleAction_GetVehicleData:
		return &carserver.Response{ResponseMsg: &carserver.Response_VehicleData{VehicleData: v.vehicleData()}}, ""
	}
	for _, group := range vehicleActionGroups {
		if reason, handled := group(st, va); handled {
			return nil, reason
		}
	}
	// Honk, flash, homelink, erase user data, nearby charging sites, sunroof: accepted, with
	// nothing in vehicle_data to show for it beyond the Execution.
	return nil, ""
}

// vehicleActionGroups apply the VehicleActions that only change the CarState, one function per
// group. Each reports whether va belongs to its group and, if so, the car's reason for refusing
// it ("" when done); a VehicleAction belongs to one group at most.
var vehicleActionGroups = []func(st *CarState, va *carserver.VehicleAction) (reason string, handled bool){
	chargingAction, climateAction, vehicleControlAction, mediaAction,
}

// chargingAction applies the charging actions: the limit, start and stop, the current, charge,
// departure and preconditioning schedules, and the charge port door (see vehicleActionGroups).
func chargingAction(st *CarState, va *carserver.VehicleAction) (reason string, handled bool) {
	switch a := va.GetVehicleActionMsg().(type) {
	case *carserver.VehicleAction_ChargingSetLimitAction:
		return st.setChargeLimit(a.ChargingSetLimitAction.GetPercent()), true
	case *carserver.VehicleAction_ChargingStartStopAction:
		c := a.ChargingStartStopAction
		switch {
		case c.GetStart() != nil:
			return st.startCharging(), true
		case c.GetStop() != nil:
			return st.stopCharging(), true
		case c.GetStartStandard() != nil:
			return st.setChargeLimit(90), true
		case c.GetStartMaxRange() != nil:
			return st.setChargeLimit(100), true
		default:
			return "invalid_value", true
		}
	case *carserver.VehicleAction_SetChargingAmpsAction:
		return st.setChargingAmps(a.SetChargingAmpsAction.GetChargingAmps()), true
	case *carserver.VehicleAction_ScheduledChargingAction:
		st.ScheduledCharging = a.ScheduledChargingAction.GetEnabled()
		st.ScheduledChargingMinutes = a.ScheduledChargingAction.GetChargingTime()
	case *carserver.VehicleAction_ScheduledDepartureAction:
		d := a.ScheduledDepartureAction
		st.ScheduledDeparture = d.GetEnabled()
		st.ScheduledDepartureMinutes = d.GetDepartureTime()
		st.PreconditioningEnabled = d.GetEnabled() && d.GetPreconditioningTimes() != nil
		st.OffPeakChargingEnabled = d.GetEnabled() && d.GetOffPeakChargingTimes() != nil
	case *carserver.VehicleAction_AddChargeScheduleAction:
		c := a.AddChargeScheduleAction
		st.ChargeSchedules = upsertSchedule(st.ChargeSchedules, Schedule{
			ID: c.GetId(), Name: c.GetName(), DaysOfWeek: c.GetDaysOfWeek(), Enabled: c.GetEnabled(), OneTime: c.GetOneTime(),
			StartEnabled: c.GetStartEnabled(), StartTime: c.GetStartTime(), EndEnabled: c.GetEndEnabled(), EndTime: c.GetEndTime(),
			Latitude: c.GetLatitude(), Longitude: c.GetLongitude(),
		})
	case *carserver.VehicleAction_RemoveChargeScheduleAction:
		st.ChargeSchedules = removeSchedule(st.ChargeSchedules, a.RemoveChargeScheduleAction.GetId())
	case *carserver.VehicleAction_AddPreconditionScheduleAction:
		p := a.AddPreconditionScheduleAction
		st.PreconditionSchedules = upsertSchedule(st.PreconditionSchedules, Schedule{
			ID: p.GetId(), Name: p.GetName(), DaysOfWeek: p.GetDaysOfWeek(), Enabled: p.GetEnabled(), OneTime: p.GetOneTime(),
			Time: p.GetPreconditionTime(), Latitude: p.GetLatitude(), Longitude: p.GetLongitude(),
		})
	case *carserver.VehicleAction_RemovePreconditionScheduleAction:
		st.PreconditionSchedules = removeSchedule(st.PreconditionSchedules, a.RemovePreconditionScheduleAction.GetId())
	case *carserver.VehicleAction_BatchRemoveChargeSchedulesAction:
		st.ChargeSchedules = nil
	case *carserver.VehicleAction_BatchRemovePreconditionSchedulesAction:
		st.PreconditionSchedules = nil
	case *carserver.VehicleAction_ChargePortDoorOpen:
		st.ChargePortOpen = true
	case *carserver.VehicleAction_ChargePortDoorClose:
		st.ChargePortOpen = false
	default:
		return "", false
	}
	return "", true
}

// climateAction applies the climate actions: cabin temperatures, seats, steering wheel, the keeper,
// bioweapon and overheat modes (see vehicleActionGroups).
func climateAction(st *CarState, va *carserver.VehicleAction) (reason string, handled bool) {
	switch a := va.GetVehicleActionMsg().(type) {
	case *carserver.VehicleAction_HvacAutoAction:
		st.setClimate(a.HvacAutoAction.GetPowerOn())
	case *carserver.VehicleAction_HvacTemperatureAdjustmentAction:
		t := a.HvacTemperatureAdjustmentAction
		if d := t.GetDriverTempCelsius(); d != 0 {
			st.DriverTempC = d
		}
		if p := t.GetPassengerTempCelsius(); p != 0 {
			st.PassengerTempC = p
		}
	case *carserver.VehicleAction_HvacSeatHeaterActions:
		for _, h := range a.HvacSeatHeaterActions.GetHvacSeatHeaterAction() {
			if i := seatHeaterIndex(h); i >= 0 {
				st.SeatHeaters[i] = seatHeaterLevel(h)
			}
		}
	case *carserver.VehicleAction_HvacSeatCoolerActions:
		for _, c := range a.HvacSeatCoolerActions.GetHvacSeatCoolerAction() {
			if i := int(c.GetSeatPosition()) - 1; i == 0 || i == 1 {
				st.SeatCoolers[i] = max(int32(c.GetSeatCoolerLevel())-1, 0)
			}
		}
	case *carserver.VehicleAction_AutoSeatClimateAction:
		for _, c := range a.AutoSeatClimateAction.GetCarseat() {
			if i := int(c.GetSeatPosition()) - 1; i == 0 || i == 1 {
				st.AutoSeatClimate[i] = c.GetOn()
			}
		}
	case *carserver.VehicleAction_HvacSteeringWheelHeaterAction:
		st.SteeringWheelHeater = a.HvacSteeringWheelHeaterAction.GetPowerOn()
	case *carserver.VehicleAction_HvacBioweaponModeAction:
		st.BioweaponMode = a.HvacBioweaponModeAction.GetOn()
	case *carserver.VehicleAction_HvacSetPreconditioningMaxAction:
		st.setPreconditioningMax(a.HvacSetPreconditioningMaxAction.GetOn())
	case *carserver.VehicleAction_HvacClimateKeeperAction:
		st.setClimateKeeper(a.HvacClimateKeeperAction.GetClimateKeeperAction().String())
	case *carserver.VehicleAction_SetCabinOverheatProtectionAction:
		c := a.SetCabinOverheatProtectionAction
		st.setCabinOverheat(c.GetOn(), c.GetFanOnly())
	case *carserver.VehicleAction_SetCopTempAction:
		t := a.SetCopTempAction.GetCopActivationTemp()
		if t == carserver.ClimateState_CopActivationTempUnspecified {
			return "invalid_value", true
		}
		st.CopActivationTemp = strings.TrimPrefix(t.String(), "CopActivationTemp")
	default:
		return "", false
	}
	return "", true
}

// vehicleControlAction applies the car's controls: sentry, valet, PIN to drive, speed limit, guest
// mode, name, power modes and windows (see vehicleActionGroups).
func vehicleControlAction(st *CarState, va *carserver.VehicleAction) (reason string, handled bool) {
	switch a := va.GetVehicleActionMsg().(type) {
	case *carserver.VehicleAction_VehicleControlSetSentryModeAction:
		st.SentryMode = a.VehicleControlSetSentryModeAction.GetOn()
	case *carserver.VehicleAction_VehicleControlSetValetModeAction:
		c := a.VehicleControlSetValetModeAction
		return st.setValet(c.GetOn(), c.GetPassword()), true
	case *carserver.VehicleAction_VehicleControlResetValetPinAction:
		st.ValetPINSet = false
	case *carserver.VehicleAction_VehicleControlSetPinToDriveAction:
		st.PINToDrive = a.VehicleControlSetPinToDriveAction.GetOn()
	case *carserver.VehicleAction_VehicleControlResetPinToDriveAction, *carserver.VehicleAction_VehicleControlResetPinToDriveAdminAction:
		st.PINToDrive = false
	case *carserver.VehicleAction_DrivingSpeedLimitAction:
		c := a.DrivingSpeedLimitAction
		return st.setSpeedLimit(c.GetActivate(), c.GetPin()), true
	case *carserver.VehicleAction_DrivingSetSpeedLimitAction:
		return st.setSpeedLimitMPH(a.DrivingSetSpeedLimitAction.GetLimitMph()), true
	case *carserver.VehicleAction_DrivingClearSpeedLimitPinAction, *carserver.VehicleAction_DrivingClearSpeedLimitPinAdminAction:
		st.SpeedLimitPINSet = false
		st.SpeedLimitActive = false
	case *carserver.VehicleAction_GuestModeAction:
		st.GuestMode = a.GuestModeAction.GetGuestModeActive()
	case *carserver.VehicleAction_SetVehicleNameAction:
		st.Name = a.SetVehicleNameAction.GetVehicleName()
	case *carserver.VehicleAction_SetLowPowerModeAction:
		st.LowPowerMode = a.SetLowPowerModeAction.GetLowPowerMode()
	case *carserver.VehicleAction_SetKeepAccessoryPowerModeAction:
		st.KeepAccessoryPower = a.SetKeepAccessoryPowerModeAction.GetKeepAccessoryPowerMode()
	case *carserver.VehicleAction_VehicleControlWindowAction:
		switch {
		case a.VehicleControlWindowAction.GetVent() != nil:
			st.WindowsVented = true
		case a.VehicleControlWindowAction.GetClose() != nil:
			st.WindowsVented = false
		default:
			return "invalid_value", true
		}
	default:
		return "", false
	}
	return "", true
}

// mediaAction applies the media actions: volume, playback, tracks and favorites (see
// vehicleActionGroups).
func mediaAction(st *CarState, va *carserver.VehicleAction) (reason string, handled bool) {
	switch a := va.GetVehicleActionMsg().(type) {
	case *carserver.VehicleAction_MediaUpdateVolume:
		m := a.MediaUpdateVolume
		switch m.GetMediaVolume().(type) {
		case *carserver.MediaUpdateVolume_VolumeAbsoluteFloat:
			st.setVolume(m.GetVolumeAbsoluteFloat())
		case *carserver.MediaUpdateVolume_VolumeDelta:
			st.setVolume(st.Volume + float32(m.GetVolumeDelta()))
		}
	case *carserver.VehicleAction_MediaPlayAction:
		st.MediaPlaying = !st.MediaPlaying
	case *carserver.VehicleAction_MediaNextTrack:
		st.stepTrack(1)
	case *carserver.VehicleAction_MediaPreviousTrack:
		st.stepTrack(-1)
	case *carserver.VehicleAction_MediaNextFavorite:
		st.stepFavorite(1)
	case *carserver.VehicleAction_MediaPreviousFavorite:
		st.stepFavorite(-1)
	default:
		return "", false
	}
	return "", true
}

// seatHeaterIndex maps a seat heater action's position to the CarState.SeatHeaters index, or -1.
func seatHeaterIndex(h *carserver.HvacSeatHeaterActions_HvacSeatHeaterAction) int {
	switch {
	case h.GetCAR_SEAT_FRONT_LEFT() != nil:
		return 0
	case h.GetCAR_SEAT_FRONT_RIGHT() != nil:
		return 1
	case h.GetCAR_SEAT_REAR_LEFT() != nil:
		return 2
	case h.GetCAR_SEAT_REAR_LEFT_BACK() != nil:
		return 3
	case h.GetCAR_SEAT_REAR_CENTER() != nil:
		return 4
	case h.GetCAR_SEAT_REAR_RIGHT() != nil:
		return 5
	case h.GetCAR_SEAT_REAR_RIGHT_BACK() != nil:
		return 6
	case h.GetCAR_SEAT_THIRD_ROW_LEFT() != nil:
		return 7
	case h.GetCAR_SEAT_THIRD_ROW_RIGHT() != nil:
		return 8
	default:
		return -1
	}
}

// seatHeaterLevel maps a seat heater action's level to 0–3.
func seatHeaterLevel(h *carserver.HvacSeatHeaterActions_HvacSeatHeaterAction) int32 {
	switch {
	case h.GetSEAT_HEATER_LOW() != nil:
		return 1
	case h.GetSEAT_HEATER_MED() != nil:
		return 2
	case h.GetSEAT_HEATER_HIGH() != nil:
		return 3
	default:
		return 0
	}
}

// vehicleData is a small VehicleData snapshot: charge, climate and closures.
func (v *Vehicle) vehicleData() *carserver.VehicleData {
	st := v.state
	return &carserver.VehicleData{
		ChargeState: &carserver.ChargeState{
			OptionalBatteryLevel:   &carserver.ChargeState_BatteryLevel{BatteryLevel: int32(math.Round(st.BatteryLevel))},
			OptionalChargeLimitSoc: &carserver.ChargeState_ChargeLimitSoc{ChargeLimitSoc: st.ChargeLimit},
			OptionalChargingAmps:   &carserver.ChargeState_ChargingAmps{ChargingAmps: st.ChargingAmps},
		},
		ClimateState: &carserver.ClimateState{
			OptionalIsClimateOn:          &carserver.ClimateState_IsClimateOn{IsClimateOn: st.ClimateOn},
			OptionalDriverTempSetting:    &carserver.ClimateState_DriverTempSetting{DriverTempSetting: st.DriverTempC},
			OptionalPassengerTempSetting: &carserver.ClimateState_PassengerTempSetting{PassengerTempSetting: st.PassengerTempC},
		},
		ClosuresState: &carserver.ClosuresState{
			OptionalLocked:    &carserver.ClosuresState_Locked{Locked: st.Locked},
			OptionalValetMode: &carserver.ClosuresState_ValetMode{ValetMode: st.ValetMode},
		},
	}
}
