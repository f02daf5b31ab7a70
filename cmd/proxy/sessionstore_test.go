package main

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/teslaproxy/proxy/internal/testenv/redistest"
)

// TestSessionStoreUnreachable: with -session-store pointing at a Redis that is not there, the
// proxy still starts and serves, says once that it serves from local state, reports DEGRADED on
// /health with 200, and never shows the password from the URL.
func TestSessionStoreUnreachable(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	const password = "s3cret-redis-pw"
	url := "redis://app:" + password + "@127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)) + "/0"
	p := startProc(t, append(f.args(), "-session-store", url))
	u := p.waitListening(t)
	c := f.client(t)
	defer c.CloseIdleConnections()
	resp, err := c.Get(u + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "DEGRADED") {
		t.Errorf("GET /health = %d %q, want 200 DEGRADED…", resp.StatusCode, body)
	}
	if code := p.stop(t); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	warned := 0
	for _, l := range p.logs() {
		if strings.Contains(l.Msg, "session store is unreachable") {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("logged %d warnings about the unreachable store, want 1; stderr:\n%s", warned, p.stderr())
	}
	if strings.Contains(p.stderr(), password) {
		t.Error("the log shows the Redis password")
	}
}

// TestSessionStoreRefusesBadURL: a -session-store that is not a redis:// URL stops the proxy at
// start with a problem naming the flag, and without the password.
func TestSessionStoreRefusesBadURL(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	p := startProc(t, append(f.args(), "-session-store", "http://app:pw-in-url@127.0.0.1:6379/0"))
	if code := p.wait(t, 30*time.Second); code == 0 {
		t.Fatal("a -session-store that is not redis:// was accepted")
	}
	if s := p.stderr(); !strings.Contains(s, "session-store") || strings.Contains(s, "pw-in-url") {
		t.Errorf("stderr %q: want a problem naming -session-store, without the password", s)
	}
}
