package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/testenv"
)

type statusLog struct {
	mu  sync.Mutex
	got []int
	ch  chan int
}

func newStatusLog() *statusLog { return &statusLog{ch: make(chan int, 16)} }

func (s *statusLog) observe(_ string, status int, _ float64) {
	s.mu.Lock()
	s.got = append(s.got, status)
	s.mu.Unlock()
	s.ch <- status
}

func decodeErr(t *testing.T, b []byte) (word, desc string) {
	t.Helper()
	var e struct {
		Response         any    `json:"response"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body is not JSON: %q", b)
	}
	if e.Response != nil || e.ErrorDescription == "" {
		t.Errorf("error body %q lacks a description or has a response", b)
	}
	return e.Error, e.ErrorDescription
}

func TestUpstreamUnreachableIs502(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := startProxy(t, envOptions{fixed: &url.URL{Scheme: "https", Host: addr}})
	resp, body := doGet(t, env, t.Context(), "/api/1/vehicles", testenv.Token(t, map[string]any{"sub": "s"}))
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	if word, _ := decodeErr(t, body); word != "upstream_unreachable" {
		t.Errorf("error word %q", word)
	}
}

func TestUpstreamSlowHeadersIs504(t *testing.T) {
	release := make(chan struct{})
	upstream, pool := testenv.StartTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
			// The proxy hung up: answer nothing, as a real server could not (an empty 200
			// could race into the closing connection's read).
			panic(http.ErrAbortHandler)
		}
	}))
	defer close(release)
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool, timeout: 200 * time.Millisecond})
	start := time.Now()
	resp, body := doGet(t, env, t.Context(), "/api/1/vehicles", testenv.Token(t, map[string]any{"sub": "s"}))
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	if word, _ := decodeErr(t, body); word != "upstream_timeout" {
		t.Errorf("error word %q", word)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("504 took %v", d)
	}
}

func TestStalledBodyIsCutOff(t *testing.T) {
	release := make(chan struct{})
	upstream, pool := testenv.StartTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		_, _ = w.Write([]byte(`{"partial":`))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool, idle: 300 * time.Millisecond})
	req, _ := http.NewRequestWithContext(t.Context(), "GET", env.URL+"/api/1/vehicles", nil)
	req.Header.Set("Authorization", "Bearer "+testenv.Token(t, map[string]any{"sub": "s"}))
	resp, err := env.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("a stalled body ended cleanly; the client cannot tell it was cut short")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a stalled upstream body was not cut off")
	}
}

func TestClientGoneIs499AndStopsUpstream(t *testing.T) {
	upstreamDone := make(chan error, 1)
	upstream, pool := testenv.StartTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			upstreamDone <- r.Context().Err()
			panic(http.ErrAbortHandler)
		case <-time.After(5 * time.Second):
			upstreamDone <- errors.New("upstream request was not canceled")
		}
	}))
	fixed, _ := url.Parse(upstream.URL)
	sl := newStatusLog()
	env := startProxy(t, envOptions{fixed: fixed, pool: pool, observe: sl.observe})
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", env.URL+"/api/1/vehicles", nil)
	req.Header.Set("Authorization", "Bearer "+testenv.Token(t, map[string]any{"sub": "s"}))
	if resp, err := env.Client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("request succeeded")
	}
	if err := <-upstreamDone; !errors.Is(err, context.Canceled) {
		t.Errorf("upstream: %v", err)
	}
	select {
	case st := <-sl.ch:
		if st != 499 {
			t.Errorf("recorded status %d, want 499", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no status recorded")
	}
}

func TestFixedUpstream421PassesBack(t *testing.T) {
	up := &recordingUpstream{}
	up.set(cannedReply{Status: 421, Header: http.Header{"Alt-Svc": {"h2=https://" + "fleet-api.prd.eu.vn.cloud.tesla.com"}}, Body: []byte(`{"error":"use base URL: https://fleet-api.prd.eu.vn.cloud.tesla.com"}`)})
	upstream, pool := testenv.StartTLS(t, up)
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool})
	resp, _ := doGet(t, env, t.Context(), "/api/1/vehicles", testenv.Token(t, map[string]any{"sub": "s"}))
	if _, calls := up.got(); resp.StatusCode != 421 || calls != 1 {
		t.Fatalf("status %d after %d calls, want the 421 after 1", resp.StatusCode, calls)
	}
}
