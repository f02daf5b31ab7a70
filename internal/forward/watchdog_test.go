package forward

import (
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// idleEnv is a Forwarder with a short idle limit in front of a loopback TLS upstream, served over
// TLS to a client that speaks HTTP/2 (http2 set) or HTTP/1.1.
func idleEnv(t *testing.T, idle time.Duration, upstream http.Handler, http2 bool) (*Forwarder, string, *http.Client) {
	t.Helper()
	up := httptest.NewUnstartedServer(upstream)
	up.EnableHTTP2 = true
	up.StartTLS()
	t.Cleanup(up.Close)
	fixed, _ := url.Parse(up.URL)
	f, err := New(Options{Upstream: fixed, Transport: up.Client().Transport, IdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	px := httptest.NewUnstartedServer(f)
	px.EnableHTTP2 = true
	px.StartTLS()
	t.Cleanup(px.Close)
	client := px.Client()
	client.Transport.(*http.Transport).ForceAttemptHTTP2 = http2
	if !http2 {
		client.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"http/1.1"}
	}
	t.Cleanup(client.CloseIdleConnections)
	return f, px.URL, client
}

func idleToken() string {
	return "Bearer " + base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"s"}`)) + ".c2ln"
}

func get(t *testing.T, client *http.Client, u string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u+"/api/1/vehicles", nil)
	req.Header.Set("Authorization", idleToken())
	return client.Do(req)
}

// watchIdle waits until f's look-over timer is no longer set and no clock runs.
func watchIdle(t *testing.T, f *Forwarder) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.watch.mu.Lock()
		armed, empty := f.watch.armed, f.watch.head.next == &f.watch.head
		f.watch.mu.Unlock()
		if !armed && empty {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the transfers ended: look-over timer set %v, list empty %v", armed, empty)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An answer that keeps moving streams through whole, however long it takes in all; once no
// transfer runs, the look-over timer is no longer set.
func TestIdleLimitSparesAMovingAnswer(t *testing.T) {
	const idle = 200 * time.Millisecond
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "http2"}[h2], func(t *testing.T) {
			f, u, client := idleEnv(t, idle, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for i := range 8 {
					_, _ = io.WriteString(w, strings.Repeat(string(rune('a'+i)), 100))
					w.(http.Flusher).Flush()
					time.Sleep(idle / 3)
				}
			}), h2)
			resp, err := get(t, client, u)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || len(b) != 800 {
				t.Fatalf("a moving answer of %v was cut off: %d bytes, %v", 8*idle/3, len(b), err)
			}
			watchIdle(t, f)
		})
	}
}

// Many answers that stall at once are all cut off at about the idle limit, and a transfer that
// ended in between is left alone.
func TestIdleLimitCutsOffEveryStalledAnswer(t *testing.T) {
	const idle = 200 * time.Millisecond
	release := make(chan struct{})
	f, u, client := idleEnv(t, idle, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"partial":`)
		w.(http.Flusher).Flush()
		if r.URL.Query().Get("quick") != "" {
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}), true)
	defer close(release)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	took := make(chan time.Duration, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := ""
			if i%5 == 0 {
				q = "?quick=1"
			}
			start := time.Now()
			resp, err := get(t, client, u+q)
			if err != nil {
				errs <- err
				return
			}
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if q != "" {
				if err != nil {
					errs <- err
				}
				return
			}
			if err == nil {
				errs <- io.ErrUnexpectedEOF // a stalled answer ended cleanly
				return
			}
			took <- time.Since(start)
		}()
	}
	wg.Wait()
	close(errs)
	close(took)
	for err := range errs {
		t.Errorf("request: %v", err)
	}
	cut := 0
	for d := range took {
		cut++
		if d > idle+2*time.Second {
			t.Errorf("a stalled answer was cut off after %v, want about %v", d, idle)
		}
	}
	if cut != n-n/5 {
		t.Errorf("%d stalled answers cut off, want %d", cut, n-n/5)
	}
	watchIdle(t, f)
}

// A part of an answer of known length reaches the client while the rest is still on its way: the
// proxy does not hold it back until the answer is whole.
func TestAnswerOfKnownLengthStreams(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "http2"}[h2], func(t *testing.T) {
			release := make(chan struct{})
			_, u, client := idleEnv(t, time.Minute, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "2000")
				_, _ = io.WriteString(w, strings.Repeat("a", 1000))
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				_, _ = io.WriteString(w, strings.Repeat("b", 1000))
			}), h2)
			var resp *http.Response
			first := make(chan error, 1)
			go func() {
				var err error
				if resp, err = get(t, client, u); err == nil {
					_, err = io.ReadFull(resp.Body, make([]byte, 1000))
				}
				first <- err
			}()
			select {
			case err := <-first:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(5 * time.Second):
				close(release)
				t.Fatal("the first half of the answer did not reach the client before the second was sent")
			}
			close(release)
			defer resp.Body.Close()
			rest, err := io.ReadAll(resp.Body)
			if err != nil || string(rest) != strings.Repeat("b", 1000) {
				t.Fatalf("rest of the answer: %d bytes, %v", len(rest), err)
			}
		})
	}
}
