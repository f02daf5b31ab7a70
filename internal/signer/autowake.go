package signer

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/proxy"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/wake"
)

// Headers of an answer to a command that waited for its car to wake (-auto-wake).
const (
	// HeaderWake is "sent" when this command's request sent the wake_up, "shared" when it
	// waited for a wake another command had sent.
	HeaderWake = "X-Proxy-Wake"
	// HeaderWakeMillis is how long the command waited for the car, in milliseconds.
	HeaderWakeMillis = "X-Proxy-Wake-Duration-Ms"
)

// wakeTimeout is how long a command may wait for its car to wake: zero without -auto-wake.
func (s *Signer) wakeTimeout() time.Duration {
	if s.waker == nil {
		return 0
	}
	return s.waker.Timeout()
}

// serveAwake runs a command with -auto-wake. A command to a car being woken for the same token
// waits for that wake before it queues for the car. A command the Fleet API answers with 408
// wakes the car (or joins the wake under way), then is sent once more. The waits happen outside
// the car's turn, so the car's other commands can share the wake instead of each paying a
// billed 408.
func (s *Signer) serveAwake(w http.ResponseWriter, r *http.Request, vin, name string, body []byte, params proxy.RequestParameters) error {
	if t, waited := s.waker.Join(r.Context(), vin); waited {
		res, err := t.Wait(r.Context())
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(2*s.timeout + 30*time.Second))
		setWakeHeaders(w, res)
		if err != nil {
			return wakeFailed(w, err)
		}
	}
	ticket, err := s.attempt(w, r, vin, name, body, params, true)
	if err != nil || ticket == nil {
		return err
	}
	// The server's write deadline allows for a command's upstream calls, not for a wake on
	// top: push it back by the wake's bound. (Not every writer supports it; tests' recorders.)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.waker.Timeout() + 2*s.timeout + 30*time.Second))
	res, err := ticket.Wait(r.Context())
	setWakeHeaders(w, res)
	if err != nil {
		s.log.Info("vehicle did not wake", zap.String("vin", vin), zap.Duration("waited", res.Waited), zap.Int("polls", res.Polls))
		return wakeFailed(w, err)
	}
	// Once only: a car that is asleep again at once gets the Fleet API's 408 relayed.
	_, err = s.attempt(w, r, vin, name, body, params, false)
	return err
}

// joinWake joins the wake of vin under way for the request's token, when wakeable.
func (s *Signer) joinWake(r *http.Request, vin string, wakeable bool) (*wake.Ticket, bool) {
	if !wakeable {
		return nil, false
	}
	return s.waker.Join(r.Context(), vin)
}

// asleep reports whether err is the Fleet API's 408 to a signed_command: the car is asleep or
// offline.
func asleep(err error) bool {
	var ue *upstreamError
	return errors.As(err, &ue) && ue.reply != nil && ue.reply.Status == http.StatusRequestTimeout
}

// setWakeHeaders says in the answer that the command waited for a wake, and how long.
func setWakeHeaders(w http.ResponseWriter, res wake.Result) {
	how := "shared"
	if res.Sent {
		how = "sent"
	}
	w.Header().Set(HeaderWake, how)
	w.Header().Set(HeaderWakeMillis, strconv.FormatInt(res.Waited.Milliseconds(), 10))
}

// wakeFailed relays the Fleet API's own answer to the wake (a refused token, a rate limit) or
// returns the error for the one writer.
func wakeFailed(w http.ResponseWriter, err error) error {
	if reply, ok := wake.IsReply(err); ok {
		reply.Write(w)
		return nil
	}
	return apierr.From(err)
}
