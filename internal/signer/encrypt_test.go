package signer_test

import (
	"net/http"
	"testing"

	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
)

// TestEncryptedResponses checks that commands ask for encrypted answers
// (FLAG_ENCRYPT_RESPONSE, vehicle-command's default) and that the vehicle's AES-GCM answers, in
// both domains, are decrypted and understood: the commands succeed, and a refusal's reason, which
// is inside the encrypted payload, reaches the app.
func TestEncryptedResponses(t *testing.T) {
	env, tap := startTapped(t, 1, 0)
	vin := env.VINs[0]
	for _, name := range []string{"honk_horn", "door_unlock", "charge_start"} {
		resp, body := env.Command(t, vin, name, nil)
		mustSucceed(t, resp, body)
	}
	// The car refuses charge_stop when not charging; stop twice so the second is refused.
	resp, body := env.Command(t, vin, "charge_stop", nil)
	mustSucceed(t, resp, body)
	resp, body = env.Command(t, vin, "charge_stop", nil)
	if a := decode(t, body); resp.StatusCode != http.StatusOK || a.Response == nil || a.Response.Result || a.Response.Reason != "not_charging" {
		t.Errorf("refused charge_stop: %d %s, want 200 result false reason not_charging", resp.StatusCode, body)
	}

	encrypted := map[universal.Domain]int{}
	for _, e := range tap.exchanges() {
		if e.request.GetSessionInfoRequest() != nil {
			continue
		}
		flags := e.request.GetFlags()
		if flags&(1<<uint32(universal.Flags_FLAG_ENCRYPT_RESPONSE)) == 0 {
			t.Errorf("a command went out without FLAG_ENCRYPT_RESPONSE (flags %d)", flags)
		}
		gcm := e.reply.GetSignatureData().GetAES_GCM_ResponseData()
		if gcm == nil {
			t.Errorf("a command's answer was not encrypted")
			continue
		}
		if len(gcm.GetNonce()) == 0 || len(gcm.GetTag()) == 0 || gcm.GetCounter() == 0 {
			t.Errorf("an encrypted answer lacks its nonce, tag or counter")
		}
		encrypted[e.reply.GetFromDestination().GetDomain()]++
	}
	if encrypted[universal.Domain_DOMAIN_INFOTAINMENT] != 4 || encrypted[universal.Domain_DOMAIN_VEHICLE_SECURITY] != 1 {
		t.Errorf("encrypted answers per domain %v, want 4 infotainment and 1 VCSEC", encrypted)
	}
}
