package forward

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// errIdle is the cause recorded when a transfer is cut off for not moving.
var errIdle = errors.New("transfer idle for too long")

// watchdog cancels a pass-through transfer when no body byte moved for a while, and pushes the
// server connection's read and write deadlines back while bytes do move.
type watchdog struct {
	idle   time.Duration
	cancel context.CancelCauseFunc
	rc     *http.ResponseController
	timer  *time.Timer

	mu       sync.Mutex
	lastKick time.Time
}

func newWatchdog(idle time.Duration, cancel context.CancelCauseFunc, rc *http.ResponseController) *watchdog {
	// The server's own read and write timeouts cover the first seconds, so a short transfer,
	// the usual kind, never touches the connection's deadlines.
	wd := &watchdog{idle: idle, cancel: cancel, rc: rc, lastKick: time.Now()}
	wd.timer = time.AfterFunc(idle, func() { cancel(errIdle) })
	return wd
}

// kick records progress. It touches the timer and the deadlines at most once a second, so a fast
// stream does not pay for it on every buffer.
func (wd *watchdog) kick() {
	now := time.Now()
	wd.mu.Lock()
	if now.Sub(wd.lastKick) < min(time.Second, wd.idle/4) {
		wd.mu.Unlock()
		return
	}
	wd.lastKick = now
	wd.mu.Unlock()
	wd.timer.Reset(wd.idle)
	deadline := now.Add(wd.idle + time.Second)
	// Errors mean the writer does not support deadlines (a test recorder, HTTP/2 before Go
	// 1.20): the server's fixed timeouts then apply, which is safe.
	_ = wd.rc.SetReadDeadline(deadline)
	_ = wd.rc.SetWriteDeadline(deadline)
}

func (wd *watchdog) stop() { wd.timer.Stop() }

type watchedReader struct {
	rc io.ReadCloser
	wd *watchdog
}

func (r *watchedReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.wd.kick()
	}
	return n, err
}

// Close closes the watched body.
func (r *watchedReader) Close() error { return r.rc.Close() }

type watchedWriter struct {
	http.ResponseWriter
	wd    *watchdog
	wrote bool
}

// WriteHeader notes that the answer has started, so the watchdog no longer writes one itself.
func (w *watchedWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *watchedWriter) Write(p []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(p)
	if n > 0 {
		w.wd.kick()
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer (for Flush and deadlines).
func (w *watchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
