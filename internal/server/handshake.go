package server

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/apierr"
)

// handshakeListener accepts TCP connections and shakes hands on each in a goroutine of its own,
// handing http.Server only connections whose TLS handshake is done.
//
// http.Server shakes hands in the goroutine that then serves the connection. The server side of
// the X25519MLKEM768 key exchange needs more than 8 KiB of stack, so that goroutine's stack grew to
// 16 KiB, and it never shrank back: the runtime halves a stack only when a quarter of it is in use
// at a collection, and a pass-through request waiting for the Fleet API uses about 7 KiB (the
// server, the middleware, ReverseProxy, the transport). With 2,000 connections that was 16 MiB of
// stacks held for nothing. Here the handshake's deep stack belongs to a goroutine that ends with
// it, and the serving goroutine grows only as far as requests need: 8 KiB.
type handshakeListener struct {
	inner   net.Listener
	config  *tls.Config
	timeout time.Duration
	log     *zap.Logger

	ready  chan net.Conn
	errs   chan error
	closed chan struct{}
	once   sync.Once
	// shaking holds the connections in their handshake, so that Close can end them.
	mu      sync.Mutex
	shaking map[net.Conn]struct{}
}

// newHandshakeListener serves TLS with config on inner. A handshake that takes longer than
// timeout is abandoned and its connection closed; failures are logged at debug level, as a
// client's problem.
func newHandshakeListener(inner net.Listener, config *tls.Config, timeout time.Duration, log *zap.Logger) *handshakeListener {
	l := &handshakeListener{
		inner:   inner,
		config:  config,
		timeout: timeout,
		log:     log,
		ready:   make(chan net.Conn),
		errs:    make(chan error),
		closed:  make(chan struct{}),
		shaking: make(map[net.Conn]struct{}),
	}
	go l.acceptLoop()
	return l
}

// acceptLoop accepts connections until the listener fails for good, starting a handshake for
// each. An error goes to Accept's caller; after a temporary one (too many open files) the loop
// goes on once the caller has taken it, so http.Server's back-off paces it.
func (l *handshakeListener) acceptLoop() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			select {
			case l.errs <- err:
			case <-l.closed:
				return
			}
			if isTemporary(err) {
				continue
			}
			return
		}
		l.mu.Lock()
		select {
		case <-l.closed:
			l.mu.Unlock()
			_ = c.Close()
			return
		default:
		}
		l.shaking[c] = struct{}{}
		l.mu.Unlock()
		go l.handshake(c)
	}
}

// isTemporary reports whether an accept error is worth retrying, as http.Server judges it.
func isTemporary(err error) bool {
	te, ok := err.(interface{ Temporary() bool }) //nolint:errorlint // the net package's own accept errors carry Temporary at top level
	return ok && te.Temporary()
}

// handshake shakes hands on raw and hands the TLS connection to Accept.
func (l *handshakeListener) handshake(raw net.Conn) {
	tc := tls.Server(raw, l.config)
	if l.timeout > 0 {
		_ = raw.SetDeadline(time.Now().Add(l.timeout))
	}
	err := tc.Handshake()
	l.mu.Lock()
	delete(l.shaking, raw)
	l.mu.Unlock()
	if err != nil {
		if ce := l.log.Check(zap.DebugLevel, "TLS handshake failed"); ce != nil {
			ce.Write(zap.Stringer("remote", raw.RemoteAddr()), zap.Error(err))
		}
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			// Someone used http:// for the proxy's https:// URL: say so, as http.Server does,
			// in the proxy's JSON error shape.
			_, _ = io.WriteString(re.Conn, plainHTTPAnswer)
		}
		_ = raw.Close()
		return
	}
	// http.Server sets the deadlines it wants from here on.
	_ = raw.SetDeadline(time.Time{})
	select {
	case l.ready <- tc:
	case <-l.closed:
		_ = tc.Close()
	}
}

// plainHTTPAnswer is what a plain HTTP request to the TLS port gets: a 400 in the proxy's JSON
// error shape, saying what to change.
var plainHTTPAnswer = func() string {
	body, _ := json.Marshal(apierr.Body{Error: "tls_required", ErrorDescription: "This port speaks HTTPS only: use the proxy's https:// URL."})
	return "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\nContent-Length: " +
		strconv.Itoa(len(body)+1) + "\r\n\r\n" + string(body) + "\n"
}()

// looksLikeHTTP reports whether the first five bytes read, taken for a TLS record header, are the
// start of an HTTP/1.x request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO", "DELET", "PATCH", "CONNE", "TRACE":
		return true
	}
	return false
}

// Accept returns the next connection whose handshake is done.
func (l *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case err := <-l.errs:
		return nil, err
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and ends the handshakes in progress.
func (l *handshakeListener) Close() error {
	err := net.ErrClosed
	l.once.Do(func() {
		l.mu.Lock()
		close(l.closed)
		for c := range l.shaking {
			_ = c.Close()
		}
		l.mu.Unlock()
		err = l.inner.Close()
	})
	return err
}

// Addr is the address the listener accepts on.
func (l *handshakeListener) Addr() net.Addr { return l.inner.Addr() }
