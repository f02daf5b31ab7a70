package forward

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// idleWatch cuts off the pass-through transfers of one Forwarder that stopped moving. A transfer
// whose clock runs is a link in a list, and one timer looks the list over a few times per idle
// period, for as long as the list is not empty. Before, each request had a timer of its own and a
// cancelable context to stop it with: a timer's start and stop and a context's creation and
// cancellation took about 1.3 µs of CPU per request in a benchmark, against 0.1 µs for linking a
// transfer into the list and out again (from two goroutines at once). The look-over costs one
// check per transfer in progress, once per step, whatever the request rate.
type idleWatch struct {
	idle time.Duration
	// step is how often the list is looked over: a stalled transfer is cut off between idle and
	// idle+step after its last progress. It is also how often progress pushes the server
	// connection's deadlines back.
	step time.Duration

	mu sync.Mutex
	// head is the sentinel of a circular list of the watchdogs whose clock runs.
	head watchdog
	// timer runs lookOver; armed reports whether it is set to. No goroutine waits between
	// look-overs, and none is left once no clock runs.
	timer *time.Timer
	armed bool
}

func newIdleWatch(idle time.Duration) *idleWatch {
	// However short the idle limit, the look-over does not run more than a thousand times a
	// second.
	w := &idleWatch{idle: idle, step: max(min(time.Second, idle/4), time.Millisecond)}
	w.head.prev, w.head.next = &w.head, &w.head
	return w
}

// watchEpoch is the origin of the watchdogs' clock readings (monotonic, in nanoseconds).
var watchEpoch = time.Now()

func clock() int64 { return int64(time.Since(watchEpoch)) }

// phase is where a transfer's clock stands; it is guarded by idleWatch.mu.
type phase uint8

const (
	phaseWaiting phase = iota // not running: before the answer, or the upload done
	phaseUpload               // running while the client's body is sent upstream
	phaseAnswer               // running while the answer streams back
	phaseOver                 // the handler is done, or the transfer was cut off
)

// start runs wd's clock from now for phase p, unless the transfer is over.
func (w *idleWatch) start(wd *watchdog, p phase) {
	wd.last.Store(clock())
	w.mu.Lock()
	defer w.mu.Unlock()
	if wd.phase == phaseOver {
		return
	}
	wd.phase = p
	if wd.next != nil {
		return
	}
	wd.prev, wd.next = w.head.prev, &w.head
	w.head.prev.next = wd
	w.head.prev = wd
	if !w.armed {
		w.armed = true
		if w.timer == nil {
			w.timer = time.AfterFunc(w.step, w.lookOver)
		} else {
			w.timer.Reset(w.step)
		}
	}
}

// halt stops wd's clock if it runs for phase p (any phase when p is phaseOver), and moves it to
// phaseOver when p is.
func (w *idleWatch) halt(wd *watchdog, p phase) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p != phaseOver && wd.phase != p {
		return
	}
	wd.phase = phaseWaiting
	if p == phaseOver {
		wd.phase = phaseOver
	}
	w.unlinkLocked(wd)
}

func (w *idleWatch) unlinkLocked(wd *watchdog) {
	if wd.next == nil {
		return
	}
	wd.prev.next, wd.next.prev = wd.next, wd.prev
	wd.prev, wd.next = nil, nil
}

// lookOver cuts off the transfers that have not moved for idle, and sets the timer for the next
// look-over unless no clock runs any more.
func (w *idleWatch) lookOver() {
	var due []*watchdog
	now := clock()
	w.mu.Lock()
	for wd := w.head.next; wd != &w.head; {
		next := wd.next
		if now-wd.last.Load() >= int64(w.idle) {
			w.unlinkLocked(wd)
			wd.phase = phaseOver
			due = append(due, wd)
		}
		wd = next
	}
	if w.head.next == &w.head {
		w.armed = false
	} else {
		w.timer.Reset(w.step)
	}
	w.mu.Unlock()
	for _, wd := range due {
		wd.fire()
	}
}

// watchdog watches one pass-through transfer: it cuts the transfer off when no body byte moved for
// the idle period, and pushes the server connection's read and write deadlines back while bytes
// do move.
type watchdog struct {
	watch *idleWatch
	// prev and next link wd into watch's list while its clock runs; they and phase are guarded
	// by watch.mu.
	prev, next *watchdog
	phase      phase
	// last is the clock reading of the last progress; pushed is when the deadlines were last
	// pushed back.
	last, pushed atomic.Int64
	fired        atomic.Bool
	// left is what remains to be written of an answer of known length; 0 when none is known.
	// Only the handler's goroutine uses it.
	left int64

	mu sync.Mutex
	rc http.ResponseController
	// cancel, for a request with a body, cancels its upstream call: the transport may be stuck
	// writing the body to an upstream that does not read it.
	cancel context.CancelFunc
	// body is the upstream answer's body once it has come; closing it ends a read stuck on it.
	body io.Closer
	// stopped is set when the handler is done: from then on nothing may touch rc, which the
	// server has reclaimed (the race detector caught a late fire's SetReadDeadline).
	stopped bool
}

// init readies wd to watch a transfer answered through rc; cancel may be nil. With upload set
// (a request with a body) the clock runs from now, while the client sends its body; otherwise it
// starts when the answer does. The server's own read and write timeouts cover the first seconds,
// so a short transfer, the usual kind, never touches the connection's deadlines.
func (wd *watchdog) init(watch *idleWatch, rc *http.ResponseController, cancel context.CancelFunc, upload bool) {
	wd.watch, wd.rc, wd.cancel = watch, *rc, cancel
	wd.pushed.Store(clock())
	if upload {
		watch.start(wd, phaseUpload)
	}
}

// fire cuts the transfer off, unless the handler is done already.
func (wd *watchdog) fire() {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if wd.stopped {
		return
	}
	wd.fired.Store(true)
	if wd.cancel != nil {
		wd.cancel()
	}
	// A read of the client's body that waits for bytes that never come is not ended by the
	// cancellation: the transport's body writer sits in it until the server's own read
	// timeout. An expired read deadline ends it now, so the handler can answer 504.
	_ = wd.rc.SetReadDeadline(time.Now())
	// A read of the answer that waits for bytes that never come ends when its body is closed.
	if wd.body != nil {
		_ = wd.body.Close()
	}
}

// setAnswer records the upstream answer's body, for fire to close, and its length (-1 when
// unknown). It runs in the handler's goroutine, before the answer is written.
func (wd *watchdog) setAnswer(b io.Closer, length int64) {
	wd.left = max(length, 0)
	wd.mu.Lock()
	defer wd.mu.Unlock()
	wd.body = b
}

// pause stops the clock: the client's body is complete and the Fleet API has not answered yet.
// That wait is bounded by the transport's ResponseHeaderTimeout, not by the idle limit.
func (wd *watchdog) pause() { wd.watch.halt(wd, phaseUpload) }

// restart starts the clock again from now, when the answer begins.
func (wd *watchdog) restart() { wd.watch.start(wd, phaseAnswer) }

// kick records progress. It pushes the deadlines back at most once a step, so a fast stream does
// not pay for that on every buffer.
func (wd *watchdog) kick() {
	now := clock()
	wd.last.Store(now)
	if now-wd.pushed.Load() < int64(wd.watch.step) {
		return
	}
	wd.mu.Lock()
	defer wd.mu.Unlock()
	// The upload side kicks from the transport's goroutine, which can outlive the handler.
	if wd.stopped {
		return
	}
	wd.pushed.Store(now)
	deadline := time.Now().Add(wd.watch.idle + time.Second)
	// Errors mean the writer does not support deadlines (a test recorder, HTTP/2 before Go
	// 1.20): the server's fixed timeouts then apply, which is safe.
	_ = wd.rc.SetReadDeadline(deadline)
	_ = wd.rc.SetWriteDeadline(deadline)
}

// stop ends the watch when the handler is done; a fire or kick already running finishes first.
func (wd *watchdog) stop() {
	wd.mu.Lock()
	wd.stopped = true
	wd.body = nil
	wd.mu.Unlock()
	wd.watch.halt(wd, phaseOver)
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

// watchedWriter is the client's side of a watched transfer. It holds the watchdog, so that a
// request costs one allocation for both.
type watchedWriter struct {
	http.ResponseWriter
	wd    watchdog
	wrote bool
	// ownError is set when the proxy writes its own error (the transfer failed before an answer
	// came), so a cut-off is not mistaken for a truncated Fleet API answer.
	ownError bool
}

// WriteHeader notes that the answer has started, and starts the idle clock.
func (w *watchedWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wd.restart()
	}
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

// Write writes a piece of the answer. A piece of an answer of known length that is not its last
// is flushed at once, so a long or slow answer streams; the last piece goes out with the rest when
// the handler returns, so a small answer takes one write. (ReverseProxy flushes answers of unknown
// length itself.)
func (w *watchedWriter) Write(p []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(p)
	if n > 0 {
		w.wd.kick()
		if w.wd.left > 0 {
			w.wd.left -= int64(n)
			if w.wd.left > 0 && err == nil {
				// A failed flush means the client is gone; the next write says so.
				_ = w.wd.rc.Flush()
			}
		}
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the real writer (for Flush and deadlines).
func (w *watchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
