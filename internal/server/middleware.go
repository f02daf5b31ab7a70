package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/teslaproxy/proxy/internal/apierr"
	"github.com/teslaproxy/proxy/internal/forward"
	"github.com/teslaproxy/proxy/internal/httpstatus"
)

// reqInfo collects what the access log reports about a request as it passes through handlers.
type reqInfo struct {
	id       string
	route    string
	vin      string
	upstream string
}

type infoKey struct{}

func info(r *http.Request) *reqInfo {
	ri, _ := r.Context().Value(infoKey{}).(*reqInfo)
	return ri
}

func setRoute(r *http.Request, route string) {
	if ri := info(r); ri != nil {
		ri.route = route
	}
}

// routeClass records the route class of the handler it wraps.
func routeClass(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ri := info(r); ri != nil {
			ri.route = route
			if vars := mux.Vars(r); vars != nil {
				ri.vin = vars["vin"]
			}
		}
		next.ServeHTTP(w, r)
	})
}

// requireToken parses the bearer token once, answers 401 when it is missing or malformed, and
// stores it in the request context for the handlers behind it (see forward.TokenFrom).
func requireToken(fwd *forward.Forwarder, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := forward.ParseToken(r.Header.Get("Authorization"))
		if err != nil {
			apierr.Write(w, err)
			return
		}
		if ri := info(r); ri != nil {
			ri.upstream = fwd.Target(tok).Host
		}
		// accessLog put an empty token slot in the context; without one (a handler used on
		// its own), carry the token in a new context.
		if !forward.SetToken(r.Context(), tok) {
			r = r.WithContext(forward.WithToken(r.Context(), tok))
		}
		next.ServeHTTP(w, r)
	})
}

// RequestID returns the id the access log gives the request, or "".
func RequestID(ctx context.Context) string {
	if ri, ok := ctx.Value(infoKey{}).(*reqInfo); ok {
		return ri.id
	}
	return ""
}

// accessLog writes one line per request with stable keys. It never logs headers or bodies, so
// tokens and payloads cannot leak through it. A request whose client left before an answer was
// written is logged with status 499.
func accessLog(log *zap.Logger, observe func(string, int, float64), inFlight func(float64), next http.Handler) http.Handler {
	log = log.Named("access")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ri := &reqInfo{id: newID(), route: RouteRejected}
		// One copy of the request for everything the handlers below record: the access log's
		// notes and the token slot (with the client's User-Agent, for the requests the proxy
		// builds on its behalf).
		r = r.WithContext(forward.WithClientSlot(context.WithValue(r.Context(), infoKey{}, ri), r.Header.Get("User-Agent")))
		sw := &httpstatus.Writer{ResponseWriter: w}
		if inFlight != nil {
			inFlight(1)
			defer inFlight(-1)
		}
		next.ServeHTTP(sw, r)
		logRequest(log, observe, r, ri, sw, start)
	})
}

// logRequest writes the access log line of a request that has been answered, and observes it. It
// is a function of its own so that the frame accessLog keeps while the request is served, and the
// Fleet API thinks, stays small: the stack of a waiting request then fits in 8 KiB. Inlined, its
// locals would be back in that frame.
//
//go:noinline
func logRequest(log *zap.Logger, observe func(string, int, float64), r *http.Request, ri *reqInfo, sw *httpstatus.Writer, start time.Time) {
	status := sw.Status
	if status == 0 {
		status = http.StatusOK
		if r.Context().Err() != nil {
			status = apierr.StatusClientClosed
		}
	}
	elapsed := time.Since(start)
	if observe != nil {
		observe(ri.route, status, elapsed.Seconds())
	}
	level := zapcore.InfoLevel
	if status >= 500 {
		level = zapcore.WarnLevel
	}
	ce := log.Check(level, "request")
	if ce == nil {
		return
	}
	fp := accessFields.Get().(*[]zap.Field)
	fields := (*fp)[:0]
	fields = append(fields,
		zap.String("request_id", ri.id),
		zap.String("method", r.Method),
		zap.String("route", ri.route),
		zap.Int("status", status),
		zap.Int64("bytes", sw.Bytes),
		zap.Duration("duration", elapsed),
		zap.String("remote", r.RemoteAddr),
	)
	if ri.vin != "" {
		fields = append(fields, zap.String("vin", ri.vin))
	}
	if ri.upstream != "" {
		fields = append(fields, zap.String("upstream", ri.upstream))
	}
	ce.Write(fields...)
	clear(fields) // let the strings go
	*fp = fields[:0]
	accessFields.Put(fp)
}

// accessFields lends the access log its field slices: 576 bytes a request, 4 % of what a
// pass-through request allocates. The proxy's cores encode the fields during Write and keep
// nothing of them; a core that kept the slice (zaptest/observer) would see it reused.
var accessFields = sync.Pool{New: func() any {
	// Sized for every field, so the optional ones do not regrow it (a field is 64 bytes).
	s := make([]zap.Field, 0, 9)
	return &s
}}

// recoverPanics turns a handler panic into a 500 (when nothing was written yet) and a log line,
// so one bad request cannot take the proxy down. http.ErrAbortHandler is re-raised: it is how a
// handler asks the server to drop the connection.
func recoverPanics(log *zap.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler { //nolint:errorlint // recover() yields the panic value itself, and net/http compares it with == as well
				panic(v)
			}
			log.Error("handler panic", zap.Any("panic", v), zap.String("route", info(r).route), zap.Stack("stack"))
			if sw, ok := w.(*httpstatus.Writer); ok && sw.Status != 0 {
				panic(http.ErrAbortHandler)
			}
			apierr.Write(w, apierr.New(http.StatusInternalServerError, "internal_error", "The proxy hit an internal error; see its log."))
		}()
		next.ServeHTTP(w, r)
	})
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
