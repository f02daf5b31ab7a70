package fleetsim

import (
	"fmt"
	"slices"

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
// ("is_charging", "not_charging", "already off").
func (v *Vehicle) applyVehicleAction(va *carserver.VehicleAction) (*carserver.Response, string) {
	st := &v.state
	switch a := va.GetVehicleActionMsg().(type) {
	case *carserver.VehicleAction_ChargingSetLimitAction:
		p := a.ChargingSetLimitAction.GetPercent()
		if p < 50 || p > 100 {
			return nil, "invalid_value"
		}
		st.ChargeLimit = p
	case *carserver.VehicleAction_ChargingStartStopAction:
		c := a.ChargingStartStopAction
		switch {
		case c.GetStart() != nil:
			if st.Charging {
				return nil, "is_charging"
			}
			st.Charging = true
		case c.GetStop() != nil:
			if !st.Charging {
				return nil, "not_charging"
			}
			st.Charging = false
		case c.GetStartStandard() != nil:
			st.ChargeLimit = 90
		case c.GetStartMaxRange() != nil:
			st.ChargeLimit = 100
		default:
			return nil, "invalid_value"
		}
	case *carserver.VehicleAction_SetChargingAmpsAction:
		amps := a.SetChargingAmpsAction.GetChargingAmps()
		if amps < 0 || amps > 48 {
			return nil, "invalid_value"
		}
		st.ChargingAmps = amps
	case *carserver.VehicleAction_ScheduledChargingAction:
		st.ScheduledCharging = a.ScheduledChargingAction.GetEnabled()
		st.ScheduledChargingMinutes = a.ScheduledChargingAction.GetChargingTime()
	case *carserver.VehicleAction_ScheduledDepartureAction:
		st.ScheduledDeparture = a.ScheduledDepartureAction.GetEnabled()
	case *carserver.VehicleAction_AddChargeScheduleAction:
		st.ChargeSchedules = addSchedule(st.ChargeSchedules, a.AddChargeScheduleAction.GetId())
	case *carserver.VehicleAction_RemoveChargeScheduleAction:
		st.ChargeSchedules = removeSchedule(st.ChargeSchedules, a.RemoveChargeScheduleAction.GetId())
	case *carserver.VehicleAction_AddPreconditionScheduleAction:
		st.PreconditionSchedules = addSchedule(st.PreconditionSchedules, a.AddPreconditionScheduleAction.GetId())
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
	case *carserver.VehicleAction_HvacAutoAction:
		st.ClimateOn = a.HvacAutoAction.GetPowerOn()
	case *carserver.VehicleAction_HvacTemperatureAdjustmentAction:
		t := a.HvacTemperatureAdjustmentAction
		if d := t.GetDriverTempCelsius(); d != 0 {
			st.DriverTempC = d
		}
		if p := t.GetPassengerTempCelsius(); p != 0 {
			st.PassengerTempC = p
		}
	case *carserver.VehicleAction_HvacSteeringWheelHeaterAction:
		st.SteeringWheelHeater = a.HvacSteeringWheelHeaterAction.GetPowerOn()
	case *carserver.VehicleAction_HvacBioweaponModeAction:
		st.BioweaponMode = a.HvacBioweaponModeAction.GetOn()
	case *carserver.VehicleAction_HvacSetPreconditioningMaxAction:
		st.PreconditioningMax = a.HvacSetPreconditioningMaxAction.GetOn()
	case *carserver.VehicleAction_HvacClimateKeeperAction:
		st.ClimateKeeperMode = a.HvacClimateKeeperAction.GetClimateKeeperAction().String()
	case *carserver.VehicleAction_SetCabinOverheatProtectionAction:
		c := a.SetCabinOverheatProtectionAction
		switch {
		case !c.GetOn():
			st.CabinOverheatProtection = "off"
		case c.GetFanOnly():
			st.CabinOverheatProtection = "fan_only"
		default:
			st.CabinOverheatProtection = "on"
		}
	case *carserver.VehicleAction_VehicleControlSetSentryModeAction:
		st.SentryMode = a.VehicleControlSetSentryModeAction.GetOn()
	case *carserver.VehicleAction_VehicleControlSetValetModeAction:
		on := a.VehicleControlSetValetModeAction.GetOn()
		if !on && !st.ValetMode {
			return nil, "already off"
		}
		st.ValetMode = on
	case *carserver.VehicleAction_VehicleControlSetPinToDriveAction:
		st.PINToDrive = a.VehicleControlSetPinToDriveAction.GetOn()
	case *carserver.VehicleAction_VehicleControlResetPinToDriveAction, *carserver.VehicleAction_VehicleControlResetPinToDriveAdminAction:
		st.PINToDrive = false
	case *carserver.VehicleAction_DrivingSpeedLimitAction:
		st.SpeedLimitActive = a.DrivingSpeedLimitAction.GetActivate()
	case *carserver.VehicleAction_DrivingSetSpeedLimitAction:
		st.SpeedLimitMPH = a.DrivingSetSpeedLimitAction.GetLimitMph()
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
			return nil, "invalid_value"
		}
	case *carserver.VehicleAction_MediaUpdateVolume:
		m := a.MediaUpdateVolume
		switch m.GetMediaVolume().(type) {
		case *carserver.MediaUpdateVolume_VolumeAbsoluteFloat:
			st.Volume = m.GetVolumeAbsoluteFloat()
		case *carserver.MediaUpdateVolume_VolumeDelta:
			st.Volume += float32(m.GetVolumeDelta())
		}
		st.Volume = min(max(st.Volume, 0), 11)
	case *carserver.VehicleAction_MediaPlayAction:
		st.MediaPlaying = !st.MediaPlaying
	case *carserver.VehicleAction_VehicleControlScheduleSoftwareUpdateAction:
		st.SoftwareUpdateScheduled = true
	case *carserver.VehicleAction_VehicleControlCancelSoftwareUpdateAction:
		st.SoftwareUpdateScheduled = false
	case *carserver.VehicleAction_Ping:
		return &carserver.Response{ResponseMsg: &carserver.Response_Ping{Ping: a.Ping}}, ""
	case *carserver.VehicleAction_GetVehicleData:
		return &carserver.Response{ResponseMsg: &carserver.Response_VehicleData{VehicleData: v.vehicleData()}}, ""
	default:
		// Honk, flash, media tracks and favourites, seat heaters and coolers, homelink, COP
		// temperature, valet PIN reset, erase user data, speed-limit PIN clearing, nearby
		// charging sites, sunroof: accepted without a simulated effect beyond the Execution.
	}
	return nil, ""
}

// addSchedule adds a schedule id to a list unless it is there already.
func addSchedule(ids []uint64, id uint64) []uint64 {
	if slices.Contains(ids, id) {
		return ids
	}
	return append(ids, id)
}

// removeSchedule removes a schedule id from a list.
func removeSchedule(ids []uint64, id uint64) []uint64 {
	return slices.DeleteFunc(ids, func(x uint64) bool { return x == id })
}

// vehicleData is a small VehicleData snapshot: charge, climate and closures.
func (v *Vehicle) vehicleData() *carserver.VehicleData {
	st := v.state
	return &carserver.VehicleData{
		ChargeState: &carserver.ChargeState{
			OptionalBatteryLevel:   &carserver.ChargeState_BatteryLevel{BatteryLevel: st.BatteryLevel},
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
