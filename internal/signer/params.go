package signer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/teslamotors/vehicle-command/pkg/connector/inet"
	"github.com/teslamotors/vehicle-command/pkg/proxy"
	"github.com/teslamotors/vehicle-command/pkg/vehicle"

	"github.com/teslaproxy/proxy/internal/apierr"
)

// parseParams reads a command body: nothing, or exactly one JSON object (null counts as none).
func parseParams(body []byte) (proxy.RequestParameters, error) {
	var params proxy.RequestParameters
	if len(bytes.TrimSpace(body)) == 0 {
		return params, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&params); err != nil {
		return nil, apierr.Wrap(err, http.StatusBadRequest, "invalid_json",
			"The command's parameters must be one JSON object, such as {\"percent\":80}.")
	}
	// Decoder.More would miss a stray '}' or ']' after the object; only the end of the input
	// is acceptable here.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, apierr.New(http.StatusBadRequest, "invalid_json",
			"The body holds more than one JSON value; send one JSON object.")
	}
	return params, nil
}

// checkParams refuses a command whose parameters the vehicle would never get: an unknown name,
// a command the protocol does not implement, or a missing or ill-typed parameter. Nothing is
// sent, so nothing is billed. ExtractCommandAction only parses and builds a closure, so building
// the action here and again under the vehicle's lock costs no upstream call.
func checkParams(name string, params proxy.RequestParameters) error {
	if _, err := extractAction(context.Background(), name, params); err != nil && !errors.Is(err, proxy.ErrCommandUseRESTAPI) {
		return err
	}
	return nil
}

// extractAction builds a command's action with the library's ExtractCommandAction, after the one
// check the library skips. Every action the signer runs is built here, so none is built from
// parameters that missed that check. A refusal is the client's answer (see paramError), except
// proxy.ErrCommandUseRESTAPI, which is returned as it is: that command goes to the REST API.
func extractAction(ctx context.Context, name string, params proxy.RequestParameters) (func(*vehicle.Vehicle) error, error) {
	if name == "actuate_trunk" {
		// v0.4.1 opens the rear trunk when which_trunk is not a string (a client bug must not
		// open a trunk), and refuses a missing one with a bare "invalid_value".
		v, ok := params["which_trunk"]
		if !ok {
			return nil, apierr.New(http.StatusBadRequest, "invalid_parameter",
				`Invalid parameters for actuate_trunk: the "which_trunk" parameter is required ("front" or "rear").`)
		}
		if s, isString := v.(string); !isString || (s != "front" && s != "rear") {
			return nil, apierr.New(http.StatusBadRequest, "invalid_parameter",
				`Invalid parameters for actuate_trunk: "which_trunk" must be "front" or "rear".`)
		}
	}
	action, err := proxy.ExtractCommandAction(ctx, name, params)
	if err != nil && !errors.Is(err, proxy.ErrCommandUseRESTAPI) {
		return nil, paramError(name, err)
	}
	return action, err
}

// The library's parameter messages ("missing percent param", "invalid on param").
var (
	missingParam = regexp.MustCompile(`^missing (\S+) param$`)
	invalidParam = regexp.MustCompile(`^invalid (\S+) param$`)
)

// paramError maps an ExtractCommandAction refusal to an answer that names the parameter. Nothing
// was sent.
func paramError(name string, err error) error {
	var he *inet.HTTPError
	switch {
	case errors.As(err, &he):
		return apierr.Wrap(err, http.StatusNotFound, "invalid_command",
			fmt.Sprintf("%q is not a vehicle command this proxy knows; see the Fleet API's vehicle command list.", shorten(name)))
	case errors.Is(err, proxy.ErrCommandNotImplemented):
		return apierr.Wrap(err, http.StatusBadRequest, "command_not_implemented",
			fmt.Sprintf("%q is not available through signed commands.", name))
	}
	msg := err.Error()
	var detail string
	if m := missingParam.FindStringSubmatch(msg); m != nil {
		detail = fmt.Sprintf("the %q parameter is required.", m[1])
	} else if m := invalidParam.FindStringSubmatch(msg); m != nil {
		detail = fmt.Sprintf("the %q parameter has the wrong type or value.", m[1])
	} else {
		// The few messages that do not name their parameter.
		switch {
		case name == "window_control":
			detail = `"command" must be "vent" or "close".`
		case strings.HasPrefix(msg, "unrecognized day name"):
			detail = `"days_of_week" must list day names such as "Mon,Tues", or be "All" or "Weekdays".`
		case msg == "invalid seat position":
			detail = `"seat_position" is not a known seat (0 to 8).`
		default:
			detail = shorten(strings.TrimSuffix(msg, ".")) + "."
		}
	}
	return apierr.Wrap(err, http.StatusBadRequest, "invalid_parameter",
		fmt.Sprintf("Invalid parameters for %s: %s", name, detail))
}

func shorten(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
