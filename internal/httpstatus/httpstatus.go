// Package httpstatus records what a handler wrote: the status and the body bytes. The access
// log, the signer's admission of unproven tokens and the simulator's billing counts all need the
// status of the answer actually sent, and use this one writer for it.
package httpstatus

import "net/http"

// Writer wraps an http.ResponseWriter and records the status and the body bytes written through
// it. The zero Status means nothing has been written yet.
type Writer struct {
	http.ResponseWriter
	// Status is the status sent: the one given to WriteHeader, or 200 once the body starts
	// without one. Zero means no answer has started.
	Status int
	// Bytes counts the body bytes written.
	Bytes int64
}

// WriteHeader implements http.ResponseWriter, keeping the first status.
func (w *Writer) WriteHeader(code int) {
	if w.Status == 0 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (w *Writer) Write(p []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.Bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (Flush, deadlines).
func (w *Writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var _ http.ResponseWriter = (*Writer)(nil)
