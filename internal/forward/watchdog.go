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

	mu       sync.Mutex
	timer    *time.Timer // nil until the clock first runs
	lastKick time.Time
	// stopped is set when the handler is done: from then on nothing may touch rc, which the
	// server has reclaimed (the race detector caught a late fire's SetReadDeadline).
	stopped bool
}

// newWatchdog starts watching. With upload false (a request without a body) the clock starts only
// when the answer does, and until then there is no timer at all; otherwise it runs from now, while
// the client sends its body.
func newWatchdog(idle time.Duration, cancel context.CancelCauseFunc, rc *http.ResponseController, upload bool) *watchdog {
	// The server's own read and write timeouts cover the first seconds, so a short transfer,
	// the usual kind, never touches the connection's deadlines.
	wd := &watchdog{idle: idle, cancel: cancel, rc: rc, lastKick: time.Now()}
	if upload {
		wd.timer = time.AfterFunc(idle, wd.fire)
	}
	return wd
}

// fire cuts the transfer off, unless the handler is done already.
func (wd *watchdog) fire() {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if wd.stopped {
		return
	}
	wd.cancel(errIdle)
	// A read of the client's body that waits for bytes that never come is not ended by the
	// cancellation: the transport's body writer sits in it until the server's own read
	// timeout. An expired read deadline ends it now, so the handler can answer 504.
	_ = wd.rc.SetReadDeadline(time.Now())
}

// pause stops the clock: the client's body is complete and the Fleet API has not answered yet.
// That wait is bounded by the transport's ResponseHeaderTimeout, not by the idle limit.
func (wd *watchdog) pause() {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if wd.timer != nil {
		wd.timer.Stop()
	}
}

// restart starts the clock again from now, when the answer begins.
func (wd *watchdog) restart() {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if wd.stopped {
		return
	}
	wd.lastKick = time.Now()
	if wd.timer == nil {
		wd.timer = time.AfterFunc(wd.idle, wd.fire)
		return
	}
	wd.timer.Reset(wd.idle)
}

// kick records progress. It touches the timer and the deadlines at most once a second, so a fast
// stream does not pay for it on every buffer.
func (wd *watchdog) kick() {
	now := time.Now()
	wd.mu.Lock()
	defer wd.mu.Unlock()
	// The upload side kicks from the transport's goroutine, which can outlive the handler.
	if wd.stopped || wd.timer == nil || now.Sub(wd.lastKick) < min(time.Second, wd.idle/4) {
		return
	}
	wd.lastKick = now
	wd.timer.Reset(wd.idle)
	deadline := now.Add(wd.idle + time.Second)
	// Errors mean the writer does not support deadlines (a test recorder, HTTP/2 before Go
	// 1.20): the server's fixed timeouts then apply, which is safe.
	_ = wd.rc.SetReadDeadline(deadline)
	_ = wd.rc.SetWriteDeadline(deadline)
}

// stop ends the watch when the handler is done; a fire or kick already running finishes first.
func (wd *watchdog) stop() {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	wd.stopped = true
	if wd.timer != nil {
		wd.timer.Stop()
	}
}

type watchedReader struct {
	rc io.ReadCloser
	wd *watchdog
}

func (r *watchedReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.wd.kick()
	}
	if err == io.EOF {
		r.wd.pause()
	}
	return n, err
}

// Close closes the watched body.
func (r *watchedReader) Close() error { return r.rc.Close() }

type watchedWriter struct {
	http.ResponseWriter
	wd    *watchdog
	wrote bool
	// ownError is set when the proxy writes its own error (the transfer failed before an answer
	// came), so a cut-off is not mistaken for a truncated Fleet API answer.
	ownError bool
}

// WriteHeader notes that the answer has started, so the watchdog no longer writes one itself.
func (w *watchedWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wd.restart()
	}
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
