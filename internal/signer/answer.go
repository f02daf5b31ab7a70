package signer

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/teslamotors/vehicle-command/pkg/protocol"

	"github.com/teslaproxy/proxy/internal/apierr"
)

// checkVIN refuses anything but a 17-character VIN with 404, as the Fleet API does for unknown
// vehicles. A numeric id gets a hint: the REST API accepted ids, signed commands need the VIN.
func checkVIN(vin string) error {
	digits := vin != ""
	for i := 0; i < len(vin); i++ {
		c := vin[i]
		if c < '0' || c > '9' {
			digits = false
		}
	}
	if digits {
		return apierr.New(http.StatusNotFound, "invalid_vin",
			"Signed commands need the vehicle's 17-character VIN in the path, not its numeric Fleet API id.")
	}
	if len(vin) != 17 {
		return apierr.New(http.StatusNotFound, "invalid_vin", "The path must name a vehicle by its 17-character VIN.")
	}
	for i := 0; i < len(vin); i++ {
		c := vin[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return apierr.New(http.StatusNotFound, "invalid_vin", "A VIN has 17 characters, upper-case letters and digits only.")
		}
	}
	return nil
}

// answer maps a failed command to the client's answer. The vehicle's own refusals come back as
// 200 result:false, as the REST API answers them; everything else gets a status an app can act on
// and a sentence saying whether the command may have been carried out.
func answer(ctx context.Context, err error) error {
	var ue *upstreamError
	switch {
	case errors.Is(err, protocol.ErrKeyNotPaired):
		return apierr.Wrap(err, http.StatusForbidden, "key_not_paired",
			"The vehicle does not know this proxy's command key. Pair it: the owner opens https://tesla.com/_ak/<your-app-domain> on the phone with the Tesla app, then taps the card on the vehicle (your public key must be served at https://<your-app-domain>/.well-known/appspecific/com.tesla.3p.public-key.pem).")
	case errors.As(err, &ue) && ue.reply != nil:
		// Only 5xx answers get here; the caller relays the others as the Fleet API sent them.
		code := http.StatusBadGateway
		if ue.reply.Status == http.StatusGatewayTimeout || ue.reply.Status == http.StatusServiceUnavailable {
			code = http.StatusGatewayTimeout
		}
		if ue.handshake {
			return apierr.Wrap(err, code, "upstream_error",
				fmt.Sprintf("The Fleet API answered %d to the session handshake; the command was not sent. Try again later.", ue.reply.Status))
		}
		return apierr.Wrap(err, code, "upstream_error_after_send",
			fmt.Sprintf("The Fleet API answered %d after the command was sent. The command may have been carried out; check the vehicle before sending it again.", ue.reply.Status))
	case errors.As(err, &ue) && ue.gaveUp:
		return apierr.Wrap(err, http.StatusBadGateway, "vehicle_session_error",
			fmt.Sprintf("The vehicle kept rejecting the proxy's session, even a new one, so the proxy stopped after %d calls; the command was not carried out. Try again later; if it persists, check that the vehicle has the proxy's key.", callBudget))
	case errors.As(err, &ue) && ue.invalid != "":
		if ue.handshake {
			return apierr.Wrap(err, http.StatusBadGateway, "invalid_upstream_answer",
				"The Fleet API's answer to the session handshake could not be read: "+ue.invalid+". The command was not sent.")
		}
		return apierr.Wrap(err, http.StatusBadGateway, "invalid_upstream_answer",
			"The Fleet API's answer could not be read: "+ue.invalid+". The command may have been carried out; check the vehicle before sending it again.")
	case errors.Is(err, context.Canceled) && ctx.Err() != nil && !errors.Is(context.Cause(ctx), context.DeadlineExceeded):
		return apierr.From(context.Canceled)
	case ue != nil && ue.handshake && (errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil || isTimeout(ue.cause)):
		return apierr.Wrap(err, http.StatusGatewayTimeout, "vehicle_timeout",
			"The vehicle did not answer the session handshake in time; the command was not sent. Try again later.")
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		if protocol.MayHaveSucceeded(err) || ue != nil {
			return apierr.Wrap(err, http.StatusGatewayTimeout, "vehicle_timeout",
				"The vehicle did not answer in time. The command may have been carried out; check the vehicle before sending it again.")
		}
		return apierr.Wrap(err, http.StatusGatewayTimeout, "vehicle_timeout",
			"The vehicle did not answer in time; the command was not confirmed.")
	case ue != nil && ue.cause != nil:
		ae := apierr.From(ue.cause)
		msg := ae.Msg
		if ue.handshake {
			msg += " This was the session handshake; the command was not sent."
		} else if ue.mayHaveArrived {
			msg += " The command may have been carried out; check the vehicle before sending it again."
		}
		return apierr.Wrap(err, ae.Code, ae.Word, msg)
	case errors.Is(err, protocol.ErrBusy):
		return apierr.Wrap(err, http.StatusServiceUnavailable, "vehicle_busy", "The vehicle is busy; try again shortly.")
	case protocol.MayHaveSucceeded(err):
		// The vehicle got the command, and may have carried it out, but its answer could not
		// be read (too large for the channel, or without the payload it should carry). Say so
		// exactly as for a Fleet API failure after sending, so the app does not resend it.
		return apierr.Wrap(err, http.StatusBadGateway, "upstream_error_after_send",
			"The vehicle's answer could not be read ("+shorten(err.Error())+"). The command may have been carried out; check the vehicle before sending it again.")
	default:
		var rme *protocol.RoutableMessageError
		if errors.As(err, &rme) {
			return apierr.Wrap(err, http.StatusBadGateway, "vehicle_fault",
				fmt.Sprintf("The vehicle rejected the command (%s).", rme.Error()))
		}
		return apierr.Wrap(err, http.StatusBadGateway, "vehicle_error", "The vehicle's answer was not a success: "+shorten(err.Error())+".")
	}
}

// isTimeout reports whether a transport failure was a timeout (a deadline, or the transport's
// own response-header timeout, which the forwarder reports as 504).
func isTimeout(err error) bool {
	var ae *apierr.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ae) && ae.Code == http.StatusGatewayTimeout)
}
