// Package coalesce lets identical concurrent reads share one Fleet API call (-coalesce-reads),
// and optionally reuse an answer for a short while (-read-cache-ttl). Apps often poll
// vehicle_data from several places at once; each poll is billed as a data request.
//
// Two GETs are identical when their escaped path, query, bearer token, Accept and
// Accept-Encoding are. Nothing is ever shared across tokens: the token's hash is part of the key.
// The first request of a group (the leader) is passed through as usual and streams to its client
// while its answer is recorded, up to a bound; the others get a copy of it. Requests whose answer
// could not be recorded whole (too large, cut off, the leader's client gone) and answers that
// carry headers meant for one client (Set-Cookie) or vary on other request headers are not
// shared: the waiting requests then make their own calls.
package coalesce

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/teslaproxy/proxy/internal/bounded"
	"github.com/teslaproxy/proxy/internal/forward"
)

// HeaderCoalesced marks an answer the proxy did not fetch for this request: "shared" (copied
// from an identical request in flight) or "cached" (-read-cache-ttl).
const HeaderCoalesced = "X-Proxy-Coalesced"

// Defaults of Options.
const (
	DefaultMaxBodyBytes = 1 << 20
	defaultCacheEntries = 10_000
	defaultCacheBytes   = 64 << 20
)

// Options configures Reads.
type Options struct {
	// Next serves a request that is not shared (the forwarder).
	Next http.Handler
	// TTL is how long a 200 answer is reused for an identical request. Zero reuses nothing:
	// only requests in flight at the same time share a call.
	TTL time.Duration
	// MaxBodyBytes is the largest answer body recorded for sharing; larger answers still
	// stream to the leader's client, and the others make their own calls. Zero means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// CacheBytes bounds the memory of the answers kept for TTL. Zero means 64 MiB.
	CacheBytes int64
	// OnSaved, when not nil, is told about each request answered without an upstream call, with
	// its path and whether the answer came from the cache.
	OnSaved func(path string, cached bool)
}

// Reads is the -coalesce-reads handler. It is safe for concurrent use.
type Reads struct {
	o     Options
	group singleflight.Group
	cache *bounded.Cache[string, *answer]
}

// New returns a Reads.
func New(o Options) *Reads {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = defaultCacheBytes
	}
	c := &Reads{o: o}
	if o.TTL > 0 {
		c.cache = bounded.New[string, *answer](defaultCacheEntries, o.CacheBytes, o.TTL,
			func(k string, a *answer) int64 { return int64(len(k)) + a.size() })
	}
	return c
}

// answer is a recorded upstream answer.
type answer struct {
	status int
	header http.Header
	body   []byte
	at     time.Time
	// shareable reports whether the whole answer was recorded and may go to other requests.
	shareable bool
	// panicked holds what the leader's handler panicked with (http.ErrAbortHandler for a
	// transfer cut off), to raise again in the leader's own goroutine.
	panicked any
}

func (a *answer) size() int64 {
	n := int64(len(a.body)) + 64
	for k, vs := range a.header {
		n += int64(len(k))
		for _, v := range vs {
			n += int64(len(v))
		}
	}
	return n
}

// ServeHTTP implements http.Handler.
func (c *Reads) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tok := forward.TokenFrom(r.Context())
	if r.Method != http.MethodGet || tok == nil || r.Header.Get("Range") != "" || r.ContentLength != 0 {
		c.o.Next.ServeHTTP(w, r)
		return
	}
	k := keyOf(r, tok)
	if c.cache != nil {
		if a, ok := c.cache.Get(k); ok {
			c.saved(r, true)
			a.write(w, "cached")
			return
		}
	}
	// Do runs the first request's function in its own goroutine (it leads and writes to its
	// own client) and makes the others wait for its answer. Their wait is bounded by the
	// leader's upstream deadlines (the transport's header timeout, the forwarder's idle
	// timeout).
	mine := false
	v, _, _ := c.group.Do(k, func() (any, error) {
		mine = true
		return c.lead(w, r), nil
	})
	a := v.(*answer)
	switch {
	case mine && a.panicked != nil:
		// Raised again here, in the leader's handler, where the server expects it.
		panic(a.panicked)
	case mine:
	case !a.shareable:
		c.o.Next.ServeHTTP(w, r)
	default:
		c.saved(r, false)
		a.write(w, "shared")
	}
}

// lead serves the leader's request through Next, recording the answer, and keeps it for TTL
// when it may be reused.
func (c *Reads) lead(w http.ResponseWriter, r *http.Request) (a *answer) {
	rec := &recorder{ResponseWriter: w, max: c.o.MaxBodyBytes}
	defer func() {
		a = rec.answer(r)
		if p := recover(); p != nil {
			a.panicked, a.shareable = p, false
		}
		if c.cache != nil && a.shareable && a.status == http.StatusOK && !noStore(a.header) {
			c.cache.Add(keyOf(r, forward.TokenFrom(r.Context())), a)
		}
	}()
	c.o.Next.ServeHTTP(rec, r)
	return nil
}

func (c *Reads) saved(r *http.Request, cached bool) {
	if c.o.OnSaved != nil {
		c.o.OnSaved(r.URL.Path, cached)
	}
}

// keyOf identifies identical reads: method, escaped path, query, token, and the request headers
// an answer's encoding depends on. It is a hash, so long paths cost no more memory.
func keyOf(r *http.Request, tok *forward.Token) string {
	h := sha256.New()
	for _, s := range []string{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Accept"), r.Header.Get("Accept-Encoding")} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	h.Write(tok.Hash[:])
	return hex.EncodeToString(h.Sum(nil))
}

// write sends a recorded answer to another request's client.
func (a *answer) write(w http.ResponseWriter, how string) {
	h := w.Header()
	for k, vs := range a.header {
		h[k] = append([]string(nil), vs...)
	}
	h.Set(HeaderCoalesced, how)
	if how == "cached" {
		h.Set("Age", strconv.Itoa(int(time.Since(a.at)/time.Second)))
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

// noStore reports whether the answer asks not to be stored.
func noStore(h http.Header) bool {
	for _, v := range h.Values("Cache-Control") {
		if strings.Contains(strings.ToLower(v), "no-store") {
			return true
		}
	}
	return false
}

// personal reports whether an answer carries headers meant for one client only, or varies on
// request headers that are not part of the key: such answers are not shared.
func personal(h http.Header) bool {
	if len(h.Values("Set-Cookie")) > 0 || len(h.Values("Set-Cookie2")) > 0 || len(h.Values("WWW-Authenticate")) > 0 {
		return true
	}
	for _, v := range h.Values("Vary") {
		for f := range strings.SplitSeq(v, ",") {
			switch http.CanonicalHeaderKey(strings.TrimSpace(f)) {
			case "Accept", "Accept-Encoding", "Authorization", "":
			default:
				return true
			}
		}
	}
	return false
}

// recorder passes the leader's answer to its client and keeps a copy, up to max body bytes.
type recorder struct {
	http.ResponseWriter
	max    int64
	status int
	header http.Header
	body   []byte
	over   bool
}

// WriteHeader records the first final status and the headers sent with it, and passes them on.
func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 && code >= 200 {
		rec.status = code
		rec.header = rec.ResponseWriter.Header().Clone()
	}
	rec.ResponseWriter.WriteHeader(code)
}

// Write passes p on and keeps a copy while the copy stays within its bound.
func (rec *recorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.WriteHeader(http.StatusOK)
	}
	if !rec.over {
		if int64(len(rec.body)+len(p)) > rec.max {
			rec.over, rec.body = true, nil
		} else {
			rec.body = append(rec.body, p...)
		}
	}
	n, err := rec.ResponseWriter.Write(p)
	if err != nil {
		rec.over, rec.body = true, nil // the client's write failed: the copy may be short
	}
	return n, err
}

// Unwrap lets http.ResponseController reach the client's writer (to flush, to set deadlines).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// answer returns what was recorded.
func (rec *recorder) answer(r *http.Request) *answer {
	a := &answer{status: rec.status, header: rec.header, body: rec.body, at: time.Now()}
	a.shareable = rec.status != 0 && !rec.over && r.Context().Err() == nil && !personal(rec.header)
	if a.header != nil {
		// The framing of the copy is the server's to set again.
		a.header.Del("Content-Length")
		a.header.Del(HeaderCoalesced)
	}
	return a
}

var _ http.Handler = (*Reads)(nil)
