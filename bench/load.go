package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// load is one closed-loop load: workers connections, each sending the next target as soon as the
// previous answer has been read, round robin over targets.
type load struct {
	targets []vegeta.Target
	workers int
	// check says what is wrong with a 200 answer, or returns "" when it is right. Nil accepts
	// every 200.
	check func(body []byte) string
	// stagger spreads the workers' first requests evenly over this long, then each goes on as
	// fast as its answers come. Set it to the upstream latency in the slow rows: started all at
	// once, thousands of connections stay in step with a fixed latency and hit the machine as
	// one burst per period, which no production load does. Zero starts them together.
	stagger time.Duration
}

// sample is what one attack measured.
type sample struct {
	ops      int
	errs     int
	firstErr string
	elapsed  time.Duration
	lat      []time.Duration
	bytesOut uint64
}

// merge adds o's figures to s; the latencies need sorting again afterwards.
func (s *sample) merge(o sample) {
	s.ops += o.ops
	s.errs += o.errs
	if s.firstErr == "" {
		s.firstErr = o.firstErr
	}
	s.elapsed += o.elapsed
	s.lat = append(s.lat, o.lat...)
	s.bytesOut += o.bytesOut
}

func (s sample) rate() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ops) / s.elapsed.Seconds()
}

// quantile returns the q-quantile of the latencies (nearest rank).
func (s sample) quantile(q float64) time.Duration {
	n := len(s.lat)
	if n == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(n))) - 1
	return s.lat[max(0, min(i, n-1))]
}

// newClient returns an HTTP/1.1 client that opens at most conns connections and keeps them all
// alive between requests, trusting only the run's CA. It never uses an outbound proxy.
func newClient(pool *x509.CertPool, conns int) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
		// An empty map turns HTTP/2 off: "N connections" means N HTTP/1.1 connections.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// countPacer sends n hits as fast as the workers allow, then stops.
type countPacer struct{ n uint64 }

func (p countPacer) Pace(_ time.Duration, hits uint64) (time.Duration, bool) { return 0, hits >= p.n }
func (p countPacer) Rate(time.Duration) float64                              { return 0 }

// staggerPacer lets the first n hits go evenly over the first `over` of the attack, then paces
// nothing: each worker sends its next request as soon as it has read its answer.
type staggerPacer struct {
	n    uint64
	over time.Duration
}

func (p staggerPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	if hits >= p.n {
		return 0, false
	}
	return max(0, time.Duration(hits)*p.over/time.Duration(p.n)-elapsed), false //nolint:gosec // G115: hits < n, a worker count
}

func (p staggerPacer) Rate(time.Duration) float64 { return 0 }

// attack runs l with vegeta for dur (or, when hits > 0, for exactly that many requests) and
// collects every result.
//
// With a duration, the rate is the requests started within it divided by it. Every worker is busy
// all the time, so that is the rate the contender sustains; the time after dur, when the last
// answers drain and no new request starts, is not part of the load (counting it measured a row
// whose answers take 500 ms at 0.8 of its true rate over 2 s rounds). With hits, it is the time
// the hits took.
func attack(ctx context.Context, client *http.Client, l load, dur time.Duration, hits int) sample {
	var pacer vegeta.Pacer = vegeta.ConstantPacer{} // zero rate: as fast as the workers go
	if l.stagger > 0 && l.workers > 0 {
		pacer = staggerPacer{n: uint64(l.workers), over: l.stagger}
	}
	if hits > 0 {
		pacer = countPacer{n: uint64(hits)}
		dur = 0
	}
	a := vegeta.NewAttacker(
		vegeta.Client(client),
		vegeta.Workers(uint64(max(l.workers, 1))),    //nolint:gosec // G115: at least 1, so it fits
		vegeta.MaxWorkers(uint64(max(l.workers, 1))), //nolint:gosec // G115: at least 1, so it fits
		vegeta.Redirects(vegeta.NoFollow),
	)
	stop := context.AfterFunc(ctx, func() { a.Stop() })
	defer stop()
	var s sample
	start := time.Now()
	for res := range a.Attack(vegeta.NewStaticTargeter(l.targets...), pacer, dur, "") {
		s.ops++
		s.lat = append(s.lat, res.Latency)
		s.bytesOut += res.BytesOut
		msg := ""
		switch {
		case res.Error != "":
			msg = res.Error
		case res.Code != http.StatusOK:
			msg = fmt.Sprintf("status %d", res.Code)
		case l.check != nil:
			msg = l.check(res.Body)
		}
		if msg != "" {
			s.errs++
			if s.firstErr == "" {
				s.firstErr = fmt.Sprintf("%s: %s", msg, shorten(res.Body, 300))
			}
		}
	}
	s.elapsed = time.Since(start)
	if dur > 0 && s.elapsed > dur && ctx.Err() == nil {
		s.elapsed = dur
	}
	slices.Sort(s.lat)
	return s
}

func shorten(b []byte, n int) string {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// contains returns a check that wants sub in the body.
func contains(sub string) func([]byte) string {
	return func(body []byte) string {
		if bytes.Contains(body, []byte(sub)) {
			return ""
		}
		return "answer lacks " + sub
	}
}
