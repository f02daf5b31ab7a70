// Package apierr is the one place where the proxy's own errors become HTTP answers.
//
// Every error the proxy itself produces (as opposed to an answer relayed from the Fleet API or a
// vehicle) is written as JSON in the Fleet API's own error shape:
//
//	{"response":null,"error":"<code word>","error_description":"<a sentence a person can act on>"}
//
// An *Error keeps the client-safe text (Word, Msg) apart from the cause (Err), which is only ever
// logged. Errors that are not an *Error become a bare 500 so that no internal detail leaks.
package apierr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// StatusClientClosed is the non-standard status (nginx's 499) recorded when the client went away
// before the answer was ready. It is never seen by that client; it exists for logs and metrics.
const StatusClientClosed = 499

// Error is an error with an HTTP status and a client-safe description.
type Error struct {
	// Code is the HTTP status to answer with.
	Code int
	// Word is a short snake_case code word for programs, such as "invalid_vin".
	Word string
	// Msg is a sentence for people. It must never contain secrets or upstream internals.
	Msg string
	// Err is the underlying cause. It is logged, never sent to the client. It may be nil.
	Err error
	// Header holds extra headers to send with the answer (for example Retry-After). It may be nil.
	Header http.Header
}

// New returns an *Error with no underlying cause.
func New(code int, word, msg string) *Error {
	return &Error{Code: code, Word: word, Msg: msg}
}

// Wrap returns an *Error that records err as its cause.
func Wrap(err error, code int, word, msg string) *Error {
	return &Error{Code: code, Word: word, Msg: msg, Err: err}
}

// Error implements error. It includes the cause, so it is for logs only.
func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Code, e.Word, e.Msg, e.Err)
	}
	return fmt.Sprintf("%d %s: %s", e.Code, e.Word, e.Msg)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Body is the JSON shape of the proxy's own errors (and of the Fleet API's).
type Body struct {
	Response         any    `json:"response"`
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

// From turns any error into an *Error. Context cancellation becomes 499, a deadline becomes 504,
// and anything unknown becomes a bare 500 whose text reveals nothing.
func From(err error) *Error {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.Canceled):
		return Wrap(err, StatusClientClosed, "client_closed_request", "The client closed the connection before the answer was ready.")
	case errors.Is(err, context.DeadlineExceeded):
		return Wrap(err, http.StatusGatewayTimeout, "upstream_timeout", "The Fleet API did not answer in time; the request may or may not have been carried out.")
	default:
		return Wrap(err, http.StatusInternalServerError, "internal_error", "The proxy hit an internal error; see its log.")
	}
}

// Write renders err as a JSON error answer and returns the *Error it wrote, so the caller can log
// the cause. It must be called before anything else was written to w.
func Write(w http.ResponseWriter, err error) *Error {
	e := From(err)
	h := w.Header()
	for k, vs := range e.Header {
		h[k] = vs
	}
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Del("Content-Length")
	w.WriteHeader(e.Code)
	b, _ := json.Marshal(Body{Error: e.Word, ErrorDescription: e.Msg})
	_, _ = w.Write(append(b, '\n'))
	return e
}

// ReadBody reads a request body the proxy must look at itself, at most limit bytes (zero means
// 1 MiB). A larger body is a 413, one that breaks off a 400.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = 1 << 20
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, BodyError(err)
	}
	return body, nil
}

// BodyError is the answer to a request body that could not be read: 413 when it was over a
// limit set with http.MaxBytesReader, 400 otherwise.
func BodyError(err error) *Error {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return Wrap(err, http.StatusRequestEntityTooLarge, "body_too_large",
			fmt.Sprintf("The request body is larger than the proxy's limit of %d bytes.", tooBig.Limit))
	}
	return Wrap(err, http.StatusBadRequest, "body_unreadable", "The request body could not be read to the end; send it again.")
}
