package forward

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/bounded"
)

// Options configures a Forwarder.
type Options struct {
	// Upstream, when not nil, is the fixed Fleet API base URL (scheme and host) every request goes
	// to, whatever the token says. A 421 from a fixed upstream is passed back as it came.
	Upstream *url.URL
	// Transport carries every upstream call. Nil means a NewTransport with default options.
	Transport http.RoundTripper
	// Timeout bounds each call made with Call, from start to the last byte of the answer. Zero
	// means no bound beyond the caller's context. Pass-through requests are bounded by the
	// transport's ResponseHeaderTimeout and by IdleTimeout instead, so large bodies can stream.
	Timeout time.Duration
	// IdleTimeout cuts a pass-through transfer off when no body byte moved for this long while
	// the client sends its body or while the answer streams back. The wait for the answer's
	// headers is not counted (the transport's ResponseHeaderTimeout bounds it). Zero means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxClientInFlight bounds the pass-through requests one client (one token, by its hash)
	// has waiting on the Fleet API at once; the next one gets 429 with Retry-After. Zero means
	// no bound.
	MaxClientInFlight int
	// OnClientLimited, when not nil, is told about every request refused by MaxClientInFlight.
	OnClientLimited func()
	// MaxResponseBytes bounds answers read with Call. Zero means 1 MiB.
	MaxResponseBytes int64
	// MaxReplayBytes is the largest pass-through request body kept in memory so that it can be
	// sent again after a 421. Larger bodies are streamed and a 421 for them is passed back to the
	// client. Zero means 1 MiB.
	MaxReplayBytes int64
	// Logger receives warnings; nil means no logging.
	Logger *zap.Logger
	// OnUpstream, when not nil, is told about every call to the Fleet API (each attempt, so a 421
	// followed by a resend counts twice, as Tesla bills it). status is 0 when no answer came.
	OnUpstream func(method, path string, status int)
}

// Forwarder sends requests to the Fleet API. It is safe for concurrent use.
type Forwarder struct {
	upstream    *url.URL
	transport   http.RoundTripper
	timeout     time.Duration
	idle        time.Duration
	maxResponse int64
	maxReplay   int64
	log         *zap.Logger
	onUpstream  func(method, path string, status int)
	share       *clientShare
	onLimited   func()
	rp          *httputil.ReverseProxy
	watch       *idleWatch
	// learned maps a token's hash to the host a 421 named for it. Keyed by hash, not by the
	// token's unverified "sub": a forged token must not move another token's requests (issue 18).
	learned *bounded.Cache[TokenHash, string]
}

// Bounds of the 421 host memory. Forgetting costs one extra 421 round trip; growing with client
// input costs memory.
const (
	maxLearned      = 100_000
	maxLearnedBytes = 32 << 20
	learnedTTL      = 24 * time.Hour
)

// DefaultIdleTimeout is how long a pass-through body may stand still before the transfer is cut
// off. A Fleet API answer or an app's upload that moves no byte for 15 s has stalled; holding its
// upstream connection or stream longer only takes it from other clients (issue 18).
const DefaultIdleTimeout = 15 * time.Second

// New returns a Forwarder.
func New(o Options) (*Forwarder, error) {
	f := &Forwarder{
		upstream:    o.Upstream,
		transport:   o.Transport,
		timeout:     o.Timeout,
		idle:        o.IdleTimeout,
		maxResponse: o.MaxResponseBytes,
		maxReplay:   o.MaxReplayBytes,
		log:         o.Logger,
		onUpstream:  o.OnUpstream,
		share:       newClientShare(o.MaxClientInFlight),
		onLimited:   o.OnClientLimited,
		learned: bounded.New[TokenHash, string](maxLearned, maxLearnedBytes, learnedTTL,
			func(_ TokenHash, host string) int64 { return sha256.Size + int64(len(host)) }),
	}
	if f.log == nil {
		f.log = zap.NewNop()
	}
	f.log = f.log.Named("forward")
	if f.transport == nil {
		t, err := NewTransport(TransportOptions{ResponseHeaderTimeout: o.Timeout})
		if err != nil {
			return nil, err
		}
		f.transport = t
	}
	if f.idle <= 0 {
		f.idle = DefaultIdleTimeout
	}
	f.watch = newIdleWatch(f.idle)
	if f.maxResponse <= 0 {
		f.maxResponse = 1 << 20
	}
	if f.maxReplay <= 0 {
		f.maxReplay = 1 << 20
	}
	f.rp = &httputil.ReverseProxy{
		Rewrite:        f.rewrite,
		Transport:      roundTripperFunc(f.roundTrip),
		ModifyResponse: f.watchAnswer,
		// An answer of unknown length (a stream) or an event stream is flushed as the upstream
		// writes it; ReverseProxy does that whatever this is set to. An answer of known length
		// (every Fleet API JSON answer) goes out in one write when it is whole, and a part of a
		// longer one as soon as it has come (see watchedWriter.Write), so no timer is needed.
		// A positive interval here started a timer for every answer; -1 would flush the headers
		// on their own before the body, a second TLS record and write per answer (measured at
		// 0.88× the reference's CPU per request with -1, 0.79× without, bench/ pass row).
		FlushInterval: 0,
		ErrorHandler:  f.errorHandler,
		BufferPool:    bufferPool{},
		ErrorLog:      zap.NewStdLog(f.log.WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
	return f, nil
}

// Fixed reports whether the upstream is fixed by configuration.
func (f *Forwarder) Fixed() bool { return f.upstream != nil }

// Target returns the base URL a request with this token goes to: the fixed upstream, a host
// learned from an earlier 421 for this very token, or the host the token names.
func (f *Forwarder) Target(tok *Token) *url.URL {
	if f.upstream != nil {
		return f.upstream
	}
	host := tok.Host
	if h, ok := f.learned.Get(tok.Hash); ok {
		host = h
	}
	return &url.URL{Scheme: "https", Host: host}
}

// ctxKey is the type of context keys of this package.
type ctxKey int

const tokenKey ctxKey = 0

// tokenSlot holds what the proxy learns about one client request and needs again when it sends
// requests upstream on its behalf. It goes into the request's context once, when the request
// arrives (WithClientSlot), and its token is filled when parsed (SetToken), so the hot path does
// not copy the request a second time just to carry the token.
type tokenSlot struct {
	tok *Token
	// userAgent is the client's User-Agent header ("" when it sent none).
	userAgent string
	// built reports whether a request passed through with this context is one the proxy makes
	// on the client's behalf (a REST command fallback, a wake-up), not a pass-through.
	built bool
	// wd watches the pass-through in progress with this context (see ServeHTTP), so the
	// transport's answer can be handed to it; nil when none is.
	wd *watchdog
}

// WithTokenSlot returns a context with an empty token slot, for SetToken to fill later.
func WithTokenSlot(ctx context.Context) context.Context {
	return context.WithValue(ctx, tokenKey, &tokenSlot{})
}

// WithClientSlot is WithTokenSlot that also records the client's User-Agent, which requests the
// proxy builds itself carry ahead of the proxy's own product token (see UserAgent).
func WithClientSlot(ctx context.Context, userAgent string) context.Context {
	return context.WithValue(ctx, tokenKey, &tokenSlot{userAgent: userAgent})
}

// SetToken puts tok in the slot of ctx and reports whether there was one.
func SetToken(ctx context.Context, tok *Token) bool {
	s, ok := ctx.Value(tokenKey).(*tokenSlot)
	if ok {
		s.tok = tok
	}
	return ok
}

// WithToken returns a context that carries the caller's parsed token, for ServeHTTP and Call.
func WithToken(ctx context.Context, tok *Token) context.Context {
	return context.WithValue(ctx, tokenKey, &tokenSlot{tok: tok})
}

// MarkBuilt records in ctx that requests ServeHTTP sends with it are built by the proxy on the
// client's behalf (the signer's REST fallbacks and wake-ups), so their User-Agent becomes the
// client's followed by the proxy's product token, as Call does. It returns ctx, or a new context
// when ctx had no slot.
func MarkBuilt(ctx context.Context) context.Context {
	if s, ok := ctx.Value(tokenKey).(*tokenSlot); ok {
		s.built = true
		return ctx
	}
	return context.WithValue(ctx, tokenKey, &tokenSlot{built: true})
}

// TokenFrom returns the token stored by WithToken or SetToken, or nil.
func TokenFrom(ctx context.Context) *Token {
	if s := slotFrom(ctx); s != nil {
		return s.tok
	}
	return nil
}

// slotFrom returns the token slot of ctx, or nil.
func slotFrom(ctx context.Context) *tokenSlot {
	s, _ := ctx.Value(tokenKey).(*tokenSlot)
	return s
}

// product is the proxy's own User-Agent product token, "tesla-proxy/VERSION".
var product = sync.OnceValue(func() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "tesla-proxy/" + v
})

// UserAgent returns the User-Agent of a request the proxy builds for a client that sent
// clientUA: the client's product list followed by the proxy's product token (RFC 9110 §10.1.5),
// or the proxy's token alone when the client sent none. Tesla's logs and the app's support can
// then tell both whose request it was and that it went through this proxy.
func UserAgent(clientUA string) string {
	if clientUA == "" {
		return product()
	}
	return clientUA + " " + product()
}

// ServeHTTP passes a request through to the Fleet API unchanged and streams the answer back.
// A token in the request's context (see SetToken) is used as it is; without one, the
// Authorization header is parsed here.
func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok := TokenFrom(r.Context())
	if tok == nil {
		var err error
		if tok, err = ParseToken(r.Header.Get("Authorization")); err != nil {
			apierr.Write(w, err)
			return
		}
		r = r.WithContext(WithToken(r.Context(), tok))
	}
	if f.share != nil {
		if !f.share.acquire(tok.Hash) {
			if f.onLimited != nil {
				f.onLimited()
			}
			refuseOverShare(w, f.share.max)
			return
		}
		defer f.share.release(tok.Hash)
	}
	// Keep small bodies so a 421 can be answered by sending the same bytes to the right host.
	// A request that already has GetBody (a REST command the signer forwards) can be sent again
	// as it is.
	if r.GetBody == nil && r.Body != nil && r.Body != http.NoBody && r.ContentLength > 0 && r.ContentLength <= f.maxReplay && !f.Fixed() {
		if err := keepForReplay(r); err != nil {
			apierr.Write(w, apierr.BodyError(err))
			return
		}
	}
	// Bodies stream for as long as they move; a transfer that stalls in either direction for
	// IdleTimeout is cut off (the server's own read and write timeouts are pushed back while
	// bytes flow, so a 1 GiB upload is not killed by a fixed deadline). The watch runs while the
	// client's body comes in and while the answer goes out, not while the Fleet API thinks.
	// A request without a body can still carry a non-nil one that is at its end (HTTP/2);
	// ReverseProxy sends no body when the length is zero, so neither is watched.
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	ww := &watchedWriter{ResponseWriter: w}
	var cancel context.CancelFunc
	if hasBody {
		// Only an upload needs its upstream call canceled: the transport may be stuck writing to
		// an upstream that does not read. A stalled answer is ended by closing its body. Either
		// way the watchdog records that it fired, which is how the error is told apart.
		var ctx context.Context
		ctx, cancel = context.WithCancel(r.Context())
		defer cancel()
		r = r.WithContext(ctx)
		r.Body = &watchedReader{rc: r.Body, wd: &ww.wd}
	}
	ww.wd.init(f.watch, http.NewResponseController(w), cancel, hasBody)
	defer ww.wd.stop()
	// The answer's body comes to the watchdog through the request's slot (see watchAnswer). The
	// slot keeps pointing at it afterwards, stopped: a later pass-through with the same context
	// (the signer's REST fallback) sets its own.
	slotFrom(r.Context()).wd = &ww.wd
	f.rp.ServeHTTP(ww, r)
	if ww.wrote && !ww.ownError && ww.wd.fired.Load() {
		// The Fleet API's answer had started and was cut short. Make sure the client sees a
		// broken transfer, not a clean end of a truncated body. (An error the proxy wrote itself,
		// the 504 for a stalled upload, is complete and goes out as it is.)
		panic(http.ErrAbortHandler)
	}
}

// keepForReplay reads r's body, of known length, into memory and gives r a GetBody that replays it.
func keepForReplay(r *http.Request) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
	if err != nil {
		return err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return nil
}

func (f *Forwarder) rewrite(pr *httputil.ProxyRequest) {
	slot, _ := pr.In.Context().Value(tokenKey).(*tokenSlot)
	var tok *Token
	if slot != nil {
		tok = slot.tok
	}
	// SetURL joins the target's empty path with the escaped incoming path, so the path arrives
	// exactly as the client wrote it, and clears Out.Host, so Host is the Fleet API host whatever
	// the client's Host header said.
	pr.SetURL(f.Target(tok))
	// ReverseProxy drops query parameters that contain ';' (a guard for servers that split on it)
	// before Rewrite runs. The Fleet API needs them verbatim: vehicle_data's
	// endpoints=location_data;charge_state is the common case. Restore the raw query.
	pr.Out.URL.RawQuery = pr.In.URL.RawQuery
	// Append the client's address to X-Forwarded-For, as the reference does. The stdlib has
	// already removed hop-by-hop and spoofable Forwarded/X-Forwarded-Host/-Proto headers.
	if ip, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
		prior := pr.In.Header.Values("X-Forwarded-For")
		if len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		pr.Out.Header.Set("X-Forwarded-For", ip)
	}
	switch _, ok := pr.In.Header["User-Agent"]; {
	case slot != nil && slot.built:
		// A request the proxy makes on the client's behalf says so, after the client's own name.
		pr.Out.Header["User-Agent"] = []string{UserAgent(pr.In.Header.Get("User-Agent"))}
	case !ok:
		// Go's client adds a User-Agent when none is set; an app that sent none keeps sending none.
		pr.Out.Header["User-Agent"] = nil
	}
}

// errorHandler turns a failed pass-through into the proxy's JSON error. It runs only when nothing
// has been written to the client yet.
func (f *Forwarder) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	ae := classify(r.Context(), err)
	if ww, ok := w.(*watchedWriter); ok {
		ww.ownError = true
		if ww.wd.fired.Load() {
			ae = apierr.Wrap(err, http.StatusGatewayTimeout, "upstream_stalled",
				"The transfer stopped moving for too long and was cut off.")
		}
	}
	e := apierr.Write(w, ae)
	f.log.Warn("pass-through failed", zap.String("path", r.URL.EscapedPath()), zap.Int("status", e.Code), zap.Error(err))
}

// classify maps an upstream failure to the status the client gets: the client gone → 499, a
// timeout → 504, anything else → 502.
func classify(ctx context.Context, err error) *apierr.Error {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(ctx.Err(), context.Canceled) && errors.Is(err, context.Canceled) {
		return apierr.Wrap(err, apierr.StatusClientClosed, "client_closed_request", "The client closed the connection before the answer was ready.")
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return apierr.Wrap(err, http.StatusGatewayTimeout, "upstream_timeout",
			"The Fleet API did not answer in time; the request may or may not have been carried out.")
	}
	return apierr.Wrap(err, http.StatusBadGateway, "upstream_unreachable",
		"The proxy could not get an answer from the Fleet API; check the proxy's network and upstream settings.")
}

// roundTrip sends one request upstream and, when the upstream is not fixed and the answer is a
// 421 naming another Fleet API host, remembers that host for the token (by its hash) and sends the
// request there once more. It never loops: a second 421 is returned as it came.
func (f *Forwarder) roundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.send(req)
	if err != nil || resp.StatusCode != http.StatusMisdirectedRequest || f.Fixed() {
		return resp, err
	}
	return f.misdirected(req, resp)
}

// watchAnswer hands the answer's body to the watchdog of the pass-through, which closes it if the
// answer stalls. It is ReverseProxy's ModifyResponse: it runs once the answer has come, so it adds
// nothing to the stack a request keeps while it waits for the Fleet API.
func (f *Forwarder) watchAnswer(resp *http.Response) error {
	if resp.Request == nil {
		return nil
	}
	if s := slotFrom(resp.Request.Context()); s != nil && s.wd != nil {
		s.wd.setAnswer(resp.Body, resp.ContentLength)
	}
	return nil
}

// misdirected handles a 421 answer to req: see roundTrip. It is a function of its own so that
// roundTrip's frame, which a request keeps while it waits for the Fleet API, stays small; inlined,
// its locals would be back in that frame.
//
//go:noinline
func (f *Forwarder) misdirected(req *http.Request, resp *http.Response) (*http.Response, error) {
	var err error
	host, body := misdirectedHost(resp)
	resp.Body = body
	if host == "" {
		f.log.Warn("421 without a usable Fleet API host; passing it back", zap.String("upstream", req.URL.Host))
		return resp, nil
	}
	tok := TokenFrom(req.Context())
	if tok != nil {
		f.learned.Add(tok.Hash, host)
	}
	if host == req.URL.Host {
		return resp, nil
	}
	retry := req.Clone(req.Context())
	if req.Body != nil && req.Body != http.NoBody {
		if req.GetBody == nil {
			// The body was streamed and is gone; the next request with this token goes to the
			// right host, this one gets the 421.
			return resp, nil
		}
		if retry.Body, err = req.GetBody(); err != nil {
			// The body cannot be replayed, so there is no retry: the client gets the 421 as it
			// came, which is a valid answer, not a transport failure.
			return resp, nil //nolint:nilerr // the 421 is the answer; see above
		}
	}
	retry.URL.Host = host
	retry.Host = ""
	_ = resp.Body.Close()
	f.log.Info("421: resending to the host the Fleet API named", zap.String("from", req.URL.Host), zap.String("to", host))
	return f.send(retry)
}

// send is one call to the Fleet API.
func (f *Forwarder) send(req *http.Request) (*http.Response, error) {
	resp, err := f.transport.RoundTrip(req)
	if f.onUpstream != nil {
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		f.onUpstream(req.Method, req.URL.Path, status)
	}
	return resp, err
}

// baseURLHint finds the host in a 421 body such as
// {"error":"user out of region, use base URL: https://fleet-api.prd.eu.vn.cloud.tesla.com, see …"}.
var baseURLHint = regexp.MustCompile(`use base URL: https://([-A-Za-z0-9.]+)`)

// maxHintBody bounds how much of a 421 body is read looking for the hint.
const maxHintBody = 64 << 10

// misdirectedHost returns the Fleet API host a 421 answer points to ("" if none is usable) and a
// body that still yields every byte of the original.
func misdirectedHost(resp *http.Response) (string, io.ReadCloser) {
	for _, v := range resp.Header.Values("Alt-Svc") {
		for _, entry := range strings.Split(v, ",") {
			entry = strings.TrimSpace(entry)
			val, ok := strings.CutPrefix(entry, "h2=")
			if !ok {
				continue
			}
			val, _, _ = strings.Cut(val, ";")
			val = strings.Trim(strings.TrimSpace(val), `"`)
			if h, ok := FleetHost(val); ok {
				return h, resp.Body
			}
		}
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxHintBody))
	body := &readCloser{Reader: io.MultiReader(bytes.NewReader(head), resp.Body), Closer: resp.Body}
	if err != nil {
		return "", body
	}
	if m := baseURLHint.FindSubmatch(head); m != nil {
		if h, ok := FleetHost(string(m[1])); ok {
			return h, body
		}
	}
	return "", body
}

type readCloser struct {
	io.Reader
	io.Closer
}

// roundTripperFunc adapts a function to http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

// RoundTrip calls fn.
func (fn roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return fn(r) }

// bufferPool lends ReverseProxy copy buffers, so streaming many bodies does not allocate one per
// request. 16 KiB is one full TLS record: larger buffers do not stream faster, and with a thousand
// answers in flight every KiB here is a MiB of memory.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// Get returns a 16 KiB buffer, reused when one was returned.
func (bufferPool) Get() []byte { return *(buffers.Get().(*[]byte)) }

// Put returns b for reuse; the caller must not touch it afterwards.
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

var _ http.Handler = (*Forwarder)(nil)
