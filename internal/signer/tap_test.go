package signer_test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	universal "github.com/teslamotors/vehicle-command/pkg/protocol/protobuf/universalmessage"
	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/proto"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/testenv"
)

// exchange is one signed_command call as the simulator saw it.
type exchange struct {
	request, reply *universal.RoutableMessage
}

// wiretap records the RoutableMessages of every successful signed_command call that passes
// through it. It keeps them in memory only; tests never print them.
type wiretap struct {
	h  http.Handler
	mu sync.Mutex
	ex []exchange
	// hold, when not nil, catches the next signed_command call (see holdNext).
	hold *hold
}

type hold struct {
	arrived, open chan struct{}
}

// holdNext makes the next signed_command call wait at the Fleet API: arrived is closed when it
// gets there, and it goes on to the simulator when open is called (or its client leaves).
func (w *wiretap) holdNext() (arrived <-chan struct{}, open func()) {
	h := &hold{arrived: make(chan struct{}), open: make(chan struct{})}
	w.mu.Lock()
	w.hold = h
	w.mu.Unlock()
	var once sync.Once
	return h.arrived, func() { once.Do(func() { close(h.open) }) }
}

func (w *wiretap) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, "/signed_command") {
		w.h.ServeHTTP(rw, r)
		return
	}
	w.mu.Lock()
	h := w.hold
	w.hold = nil
	w.mu.Unlock()
	if h != nil {
		close(h.arrived)
		select {
		case <-h.open:
		case <-r.Context().Done():
			panic(http.ErrAbortHandler) // no answer to a caller that hung up
		}
	}
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	tee := &teeWriter{ResponseWriter: rw}
	w.h.ServeHTTP(tee, r)
	var req struct {
		RoutableMessage string `json:"routable_message"`
	}
	var resp struct {
		Response string `json:"response"`
	}
	if tee.status != 0 && tee.status != http.StatusOK || json.Unmarshal(body, &req) != nil || json.Unmarshal(tee.buf.Bytes(), &resp) != nil {
		return
	}
	var e exchange
	if e.request = decodeMessage(req.RoutableMessage); e.request == nil {
		return
	}
	if e.reply = decodeMessage(resp.Response); e.reply == nil {
		return
	}
	w.mu.Lock()
	w.ex = append(w.ex, e)
	w.mu.Unlock()
}

func (w *wiretap) exchanges() []exchange {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]exchange(nil), w.ex...)
}

func decodeMessage(b64 string) *universal.RoutableMessage {
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil
	}
	var m universal.RoutableMessage
	if proto.Unmarshal(raw, &m) != nil {
		return nil
	}
	return &m
}

type teeWriter struct {
	http.ResponseWriter
	status int
	buf    bytes.Buffer
}

func (t *teeWriter) WriteHeader(code int) {
	if t.status == 0 {
		t.status = code
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *teeWriter) Write(p []byte) (int, error) {
	t.buf.Write(p)
	return t.ResponseWriter.Write(p)
}

// startTapped is testenv.Start with a wiretap between the proxy and the simulator, and a bound
// on the vehicles the signer keeps (0 means the default).
func startTapped(t *testing.T, vehicles, cacheSize int) (*testenv.Env, *wiretap) {
	t.Helper()
	key := testenv.NewKey(t)
	sim := fleetsim.New(fleetsim.Options{})
	for i := range vehicles {
		sim.AddVehicle(fleetsim.NewTestVIN(i), testenv.PublicKey(t, key))
	}
	tap := &wiretap{h: sim}
	return startBehind(t, key, sim, tap, func(o *app.Options) { o.CacheSize = cacheSize }), tap
}

// startBehind starts a proxy whose Fleet API is front (which passes what it does not change to
// sim); each of edits may change the proxy's options.
func startBehind(t *testing.T, key protocol.ECDHPrivateKey, sim *fleetsim.Server, front http.Handler, edits ...func(*app.Options)) *testenv.Env {
	t.Helper()
	var vins []string
	for i := 0; sim.Vehicle(fleetsim.NewTestVIN(i)) != nil; i++ {
		vins = append(vins, fleetsim.NewTestVIN(i))
	}
	simTS, simPool := testenv.StartTLS(t, front)
	up, err := url.Parse(simTS.URL)
	if err != nil {
		t.Fatal(err)
	}
	tr := testenv.UpstreamTransport(t, 5*time.Second, simPool)
	o := app.Options{Key: key, Upstream: up, Transport: tr, Timeout: 5 * time.Second, Logger: zaptest.NewLogger(t)}
	for _, edit := range edits {
		edit(&o)
	}
	a, err := app.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	proxyTS, proxyPool := testenv.StartTLS(t, a.Handler)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: proxyPool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}}
	t.Cleanup(client.CloseIdleConnections)
	return &testenv.Env{
		Sim: sim, SimURL: simTS.URL, App: a, URL: proxyTS.URL, Client: client, Key: key, VINs: vins,
		Token: testenv.Token(t, map[string]any{"sub": "test-user", "aud": []any{"https://" + forward.HostNA}, "ou_code": "NA"}),
	}
}
