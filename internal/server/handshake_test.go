package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/certgen"
)

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	cert, pool, err := certgen.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	return cert, pool
}

// serveTLS runs Serve with TLS on a loopback port, answering with the protocol each request came
// in on, and returns its address and the roots that trust it.
func serveTLS(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, Options{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.TLS == nil {
					http.Error(w, "no TLS state", http.StatusInternalServerError)
					return
				}
				_, _ = io.WriteString(w, r.Proto) //nolint:gosec // G705: a protocol name the server set, to a test client
			}),
			TLSConfig: TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }),
			Logger:    zaptest.NewLogger(t),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), pool
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q, err %v", resp.StatusCode, b, err)
	}
	return string(b)
}

// Clients that offer HTTP/2 get it, clients that do not get HTTP/1.1, both with the TLS state
// the handlers see, as with http.Server's own TLS listener.
func TestServeTLSSpeaksBothProtocols(t *testing.T) {
	addr, pool := serveTLS(t)
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	defer h2.CloseIdleConnections()
	defer h1.CloseIdleConnections()
	if got := get(t, h2, "https://"+addr+"/"); got != "HTTP/2.0" {
		t.Errorf("client offering h2 was served %s", got)
	}
	if got := get(t, h1, "https://"+addr+"/"); got != "HTTP/1.1" {
		t.Errorf("HTTP/1.1 client was served %s", got)
	}
}

// A client that connects and never finishes its handshake holds up no one: handshakes run beside
// each other, not in the accept loop.
func TestStalledHandshakeDoesNotBlockOthers(t *testing.T) {
	addr, pool := serveTLS(t)
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Half a ClientHello, then silence.
		if _, err := c.Write([]byte{0x16, 0x03, 0x01, 0x02, 0x00}); err != nil {
			t.Fatal(err)
		}
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer client.CloseIdleConnections()
	if got := get(t, client, "https://"+addr+"/"); got != "HTTP/1.1" {
		t.Errorf("served %s", got)
	}
}

// A handshake is cut off after the listener's timeout, and a failed one leaves the listener
// serving.
func TestHandshakeTimeoutAndFailure(t *testing.T) {
	cert, pool := selfSigned(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newHandshakeListener(inner, &tls.Config{Certificates: []tls.Certificate{cert}}, 300*time.Millisecond, zaptest.NewLogger(t))
	defer l.Close()

	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("a client that never said hello: read gave %v, want the server to close (EOF)", err)
	}

	// Plain HTTP on the TLS port fails its handshake, and is told what to use instead.
	resp, err := http.Get("http://" + l.Addr().String() + "/api/1/vehicles")
	if err != nil {
		t.Fatal(err)
	}
	var body apierr.Body
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusBadRequest || body.Error != "tls_required" || !strings.Contains(body.ErrorDescription, "https://") {
		t.Errorf("plain HTTP to the TLS port: %d %+v (%v), want 400 tls_required naming https://", resp.StatusCode, body, err)
	}

	go func() {
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool})
		if err == nil {
			c.Close()
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.(*tls.Conn).ConnectionState().HandshakeComplete {
		t.Error("Accept returned a connection before its handshake")
	}
}

// Close ends the handshakes in progress and makes Accept return net.ErrClosed.
func TestHandshakeListenerClose(t *testing.T) {
	cert, _ := selfSigned(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newHandshakeListener(inner, &tls.Config{Certificates: []tls.Certificate{cert}}, time.Minute, zaptest.NewLogger(t))
	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Wait until the listener holds the connection in its handshake.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		l.mu.Lock()
		n := len(l.shaking)
		l.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection never reached its handshake")
		}
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("connection in its handshake at Close: read gave %v, want EOF", err)
	}
}
