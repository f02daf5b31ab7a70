package server_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/testenv"
)

// A client that starts an upload and then stops sending must not keep the upstream connection:
// with one connection allowed to the Fleet API host, another client's GET has to get through once
// the idle limit cuts the stalled upload off, and the stalled client gets a whole JSON 504.
func TestStalledUploadReleasesTheUpstreamConnection(t *testing.T) {
	t.Run("HTTP/1.1 upstream", func(t *testing.T) { stalledUpload(t, false) })
	// Over HTTP/2 the upload holds a stream of the one connection, not the connection: the GET
	// goes through beside it, and the stall is still cut off.
	t.Run("HTTP/2 upstream", func(t *testing.T) { stalledUpload(t, true) })
}

func stalledUpload(t *testing.T, http2 bool) {
	uploadStarted := make(chan struct{})
	uploadEnded := make(chan error, 1)
	var uploadProto int
	upstream, pool := testenv.StartTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			uploadProto = r.ProtoMajor
			buf := make([]byte, 64)
			if _, err := io.ReadAtLeast(r.Body, buf, 5); err != nil {
				uploadEnded <- err
				return
			}
			close(uploadStarted)
			_, err := io.ReadAll(r.Body)
			uploadEnded <- err
			return
		}
		_, _ = w.Write([]byte(`{"response":[]}`))
	}))
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool, idle: 300 * time.Millisecond, maxConns: 1, http2: http2})
	tok := "Bearer " + testenv.Token(t, map[string]any{"sub": "uploader"})

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte("hello")) }() // then nothing more, ever
	req, _ := http.NewRequestWithContext(t.Context(), "POST", env.URL+"/api/1/vehicles/5YJ3E1EA7KF000001/some_upload", pr)
	req.Header.Set("Authorization", tok)
	type result struct {
		status int
		body   []byte
		err    error
	}
	uploaded := make(chan result, 1)
	go func() {
		resp, err := env.Client.Do(req)
		if err != nil {
			uploaded <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		uploaded <- result{resp.StatusCode, b, err}
	}()
	select {
	case <-uploadStarted:
	case err := <-uploadEnded:
		t.Fatalf("the upload's first bytes did not reach the upstream: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the upload's first bytes did not reach the upstream")
	}

	if want := map[bool]int{false: 1, true: 2}[http2]; uploadProto != want {
		t.Fatalf("the upload reached the upstream over HTTP/%d, want HTTP/%d", uploadProto, want)
	}
	// The only upstream connection is held by the stalled upload now (over HTTP/1.1; over HTTP/2
	// one of its streams). This GET needs it.
	get, _ := http.NewRequestWithContext(t.Context(), "GET", env.URL+"/api/1/vehicles", nil)
	get.Header.Set("Authorization", "Bearer "+testenv.Token(t, map[string]any{"sub": "someone-else"}))
	resp, body := env.do(t, get)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"response"`) {
		t.Fatalf("another client's GET behind a stalled upload: %d %s", resp.StatusCode, body)
	}

	select {
	case err := <-uploadEnded:
		if err == nil {
			t.Error("the upstream read the stalled upload to a clean end; it should have been aborted")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream never saw the stalled upload end")
	}
	r := <-uploaded
	if r.err != nil {
		t.Fatalf("the stalled client got no answer, only %v", r.err)
	}
	var e struct{ Error, ErrorDescription string }
	_ = json.Unmarshal(r.body, &e)
	if r.status != http.StatusGatewayTimeout || e.Error != "upstream_stalled" {
		t.Errorf("stalled upload answered %d %s; want 504 upstream_stalled", r.status, r.body)
	}
}

// The idle limit watches bodies, not the Fleet API's thinking: an answer whose headers come after
// several idle periods (within -timeout) still goes through, with or without a request body.
func TestIdleLimitDoesNotCountTheWaitForTheAnswer(t *testing.T) {
	const idle = 200 * time.Millisecond
	upstream, pool := testenv.StartTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		time.Sleep(4 * idle)
		_, _ = w.Write([]byte(`{"response":{"ok":true}}`))
	}))
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool, idle: idle})
	for _, method := range []string{"GET", "POST"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader(`{"a":1}`)
		}
		req, _ := http.NewRequestWithContext(t.Context(), method, env.URL+"/api/1/vehicles/5YJ3E1EA7KF000001/vehicle_data", body)
		req.Header.Set("Authorization", "Bearer "+testenv.Token(t, map[string]any{"sub": "s"}))
		resp, b := env.do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s with a slow answer: %d %s", method, resp.StatusCode, b)
		}
	}
}

// One token may have only its share of requests waiting on the Fleet API; the next one is refused
// at once with 429, and another token is not affected.
func TestOneTokenCannotTakeMoreThanItsShare(t *testing.T) {
	var mu sync.Mutex
	inFlight := map[string]int{}
	arrived := make(chan string, 16)
	release := make(chan struct{})
	upstream, pool := testenv.StartTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := r.Header.Get("X-Who")
		mu.Lock()
		inFlight[who]++
		mu.Unlock()
		arrived <- who
		<-release
		mu.Lock()
		inFlight[who]--
		mu.Unlock()
		_, _ = w.Write([]byte(`{"response":[]}`))
	}))
	fixed, _ := url.Parse(upstream.URL)
	env := startProxy(t, envOptions{fixed: fixed, pool: pool, clientMax: 2})
	tokA := "Bearer " + testenv.Token(t, map[string]any{"sub": "a"})
	tokB := "Bearer " + testenv.Token(t, map[string]any{"sub": "b"})
	send := func(tok, who string) (int, http.Header, []byte, error) {
		req, _ := http.NewRequestWithContext(t.Context(), "GET", env.URL+"/api/1/vehicles", nil)
		req.Header.Set("Authorization", tok)
		req.Header.Set("X-Who", who)
		resp, err := env.Client.Do(req)
		if err != nil {
			return 0, nil, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b, err
	}
	type res struct {
		status int
		err    error
	}
	held := make(chan res, 3)
	for range 2 {
		go func() {
			st, _, _, err := send(tokA, "a")
			held <- res{st, err}
		}()
	}
	waitArrivals := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("a request did not reach the upstream")
			}
		}
	}
	waitArrivals(2)

	// Token A's third request is over its share.
	st, h, b, err := send(tokA, "a")
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Error string }
	_ = json.Unmarshal(b, &e)
	if st != http.StatusTooManyRequests || e.Error != "too_many_requests_in_flight" || h.Get("Retry-After") == "" {
		t.Errorf("token A's third request: %d Retry-After=%q %s; want 429 with Retry-After", st, h.Get("Retry-After"), b)
	}
	// Token B still gets through while A's two are held.
	go func() {
		st, _, _, err := send(tokB, "b")
		held <- res{st, err}
	}()
	waitArrivals(1)
	mu.Lock()
	a, bb := inFlight["a"], inFlight["b"]
	mu.Unlock()
	if a != 2 || bb != 1 {
		t.Errorf("in flight at the upstream: a=%d b=%d; want 2 and 1", a, bb)
	}
	close(release)
	for range 3 {
		r := <-held
		if r.err != nil || r.status != http.StatusOK {
			t.Errorf("held request: %d %v", r.status, r.err)
		}
	}
	// Once A's requests are done, A has its share back.
	if st, _, b, err := send(tokA, "a"); err != nil || st != http.StatusOK {
		t.Errorf("token A after its requests finished: %d %s %v", st, b, errors.Unwrap(err))
	}
}
