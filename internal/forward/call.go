package forward

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/teslaproxy/proxy/internal/apierr"
)

// Reply is an upstream answer read in full by Call.
type Reply struct {
	Status int
	Header http.Header
	Body   []byte
}

// Write relays the answer to w as the Fleet API sent it: status, end-to-end headers (Retry-After
// and RateLimit-* included) and body. Headers already set on w stay unless the answer has them too.
func (r *Reply) Write(w http.ResponseWriter) {
	h := w.Header()
	for k, vs := range r.Header {
		switch http.CanonicalHeaderKey(k) {
		// Hop-by-hop headers (RFC 9110 §7.6.1) belong to the upstream connection; the length is
		// the server's to set.
		case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Te", "Trailer", "Upgrade", "Content-Length":
			continue
		}
		h[k] = vs
	}
	w.WriteHeader(r.Status)
	_, _ = w.Write(r.Body)
}

// CallError is an upstream failure seen by Call. It unwraps to an *apierr.Error holding the
// status the client should get.
type CallError struct {
	// MayHaveArrived reports whether the request may have reached the Fleet API (and so the
	// vehicle). It is false only when the connection failed before anything was written.
	MayHaveArrived bool
	err            *apierr.Error
}

// Error returns the message of the client-facing error it carries.
func (e *CallError) Error() string { return e.err.Error() }

// Unwrap returns the *apierr.Error.
func (e *CallError) Unwrap() error { return e.err }

// MayHaveArrived reports whether err leaves open that the request reached the Fleet API. Errors
// that are not a *CallError count as "may have arrived", the safe answer.
func MayHaveArrived(err error) bool {
	var ce *CallError
	if errors.As(err, &ce) {
		return ce.MayHaveArrived
	}
	return err != nil
}

// Call sends a request the proxy built itself (a signed command, a signed telemetry config) to
// the Fleet API chosen for the token in ctx (see WithToken), with the caller's Authorization, the
// same 421 handling as pass-through and the configured timeout, and reads the answer, up to the
// configured limit. header may be nil; Content-Type defaults to application/json. The request's
// User-Agent is the client's (from WithClientSlot) followed by the proxy's product token, unless
// header sets one.
func (f *Forwarder) Call(ctx context.Context, method, path string, body []byte, header http.Header) (*Reply, error) {
	slot, _ := ctx.Value(tokenKey).(*tokenSlot)
	var tok *Token
	var clientUA string
	if slot != nil {
		tok, clientUA = slot.tok, slot.userAgent
	}
	if tok == nil {
		return nil, apierr.New(http.StatusUnauthorized, "missing_token", "This request needs an 'Authorization: Bearer <token>' header.")
	}
	if f.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.timeout)
		defer cancel()
	}
	u := *f.Target(tok)
	u.Path = path
	if p, q, ok := strings.Cut(path, "?"); ok {
		u.Path, u.RawQuery = p, q
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, apierr.Wrap(err, http.StatusInternalServerError, "internal_error", "The proxy could not build the upstream request.")
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if _, ok := req.Header["User-Agent"]; !ok {
		req.Header["User-Agent"] = []string{UserAgent(clientUA)}
	}
	req.Header.Set("Authorization", tok.authorization())
	resp, err := f.roundTrip(req)
	if err != nil {
		return nil, &CallError{MayHaveArrived: !dialFailed(err), err: classify(ctx, err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, f.maxResponse+1))
	if err != nil {
		return nil, &CallError{MayHaveArrived: true, err: classify(ctx, err)}
	}
	if int64(len(data)) > f.maxResponse {
		return nil, &CallError{MayHaveArrived: true, err: apierr.New(http.StatusBadGateway, "upstream_answer_too_large",
			fmt.Sprintf("The Fleet API's answer was larger than the proxy's limit of %d bytes; the request may have been carried out.", f.maxResponse))}
	}
	return &Reply{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}
