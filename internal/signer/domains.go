package signer

import universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"

// vcsecCommands are the REST commands vehicle-command v0.4.1 sends to the vehicle security
// controller (locks, closures, remote start); every other command goes to infotainment
// (fleet-api.md §3, "Domains"). A command handshakes only with its own domain, so a first command
// costs two upstream calls, not the reference's three. If the table were ever wrong the signer
// notices (the library refuses to send without a session) and opens the other domain.
var vcsecCommands = map[string]bool{
	"door_lock":          true,
	"door_unlock":        true,
	"remote_start_drive": true,
	"actuate_trunk":      true,
	"open_tonneau":       true,
	"close_tonneau":      true,
	"stop_tonneau":       true,
}

// domainOf returns the domain a REST command is sent to.
func domainOf(name string) universal.Domain {
	if vcsecCommands[name] {
		return universal.Domain_DOMAIN_VEHICLE_SECURITY
	}
	return universal.Domain_DOMAIN_INFOTAINMENT
}

// otherDomain returns the domain that is not d.
func otherDomain(d universal.Domain) universal.Domain {
	if d == universal.Domain_DOMAIN_VEHICLE_SECURITY {
		return universal.Domain_DOMAIN_INFOTAINMENT
	}
	return universal.Domain_DOMAIN_VEHICLE_SECURITY
}
