package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The replicas row: three replicas of each proxy behind HAProxy (round-robin per request, no
// affinity), signed commands over replicaVINs vehicles with one connection each, every Fleet API
// call answered after replicaLatency. Ours share sessions and per-vehicle leases through Redis
// (-session-store); the reference has no shared state, so each of its replicas keeps its own
// session with each car, and the car refuses what an out-of-date counter signed.
const (
	replicaCount   = 3
	replicaVINs    = 200
	replicaLatency = 100 * time.Millisecond
)

const rowReplicas = "signed commands, 3 replicas behind HAProxy"

// external is a server program the row starts (redis-server, haproxy).
type external struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startExternal(dir, name, bin string, args ...string) (*external, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	e := &external{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(e.done) }()
	return e, nil
}

func (e *external) stop() { stopProcess(e.cmd, e.done) }

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls ready until it is true or 20 s have passed.
func waitFor(what string, ready func() bool) error {
	deadline := time.Now().Add(20 * time.Second)
	for !ready() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not come up within 20 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// redisUp reports whether a Redis server answers PING on addr.
func redisUp(addr string) bool {
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Ping(ctx).Err() == nil
}

// startBalancer runs HAProxy in front of backends (https URLs of replicas), terminating TLS with
// the bench's proxy certificate and verifying the replicas' certificates with the bench's CA.
func (b *bench) startBalancer(bin, name string, backends []string) (*external, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	var servers strings.Builder
	for i, u := range backends {
		fmt.Fprintf(&servers, "  server r%d %s\n", i+1, strings.TrimPrefix(u, "https://"))
	}
	cfg := fmt.Sprintf(`global
  maxconn 8192
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:%d ssl crt %s alpn http/1.1
  default_backend replicas
backend replicas
  balance roundrobin
  default-server ssl verify required ca-file %s verifyhost localhost sni str(localhost)
%s`, port, filepath.Join(b.tmp, "haproxy.pem"), filepath.Join(b.tmp, "ca.pem"), servers.String())
	cfgFile := filepath.Join(b.tmp, name+".cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return nil, "", err
	}
	e, err := startExternal(b.tmp, name, bin, "-f", cfgFile, "-db")
	if err != nil {
		return nil, "", err
	}
	url := "https://127.0.0.1:" + strconv.Itoa(port)
	client := newClient(b.pki.pool, 1)
	defer client.CloseIdleConnections()
	err = waitFor(name, func() bool {
		for range len(backends) {
			resp, err := client.Get(url + "/.well-known/appspecific/com.tesla.3p.public-key.pem")
			if err != nil {
				return false
			}
			resp.Body.Close()
		}
		return true
	})
	if err != nil {
		e.stop()
		return nil, "", err
	}
	return e, url, nil
}

// startReplicaSets starts redis-server, replicaCount replicas of each proxy (ours sharing sessions
// through that Redis) and one HAProxy in front of each set, and returns the two sets as
// contenders. stop ends everything started, also when it fails.
func (b *bench) startReplicaSets(redisBin, haproxyBin string) (contenders []*contender, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	_, certPEM, keyPEM, err := b.pki.leaf()
	if err != nil {
		return nil, stop, err
	}
	if _, err := writeFiles(b.tmp, map[string][]byte{"haproxy.pem": append(append([]byte{}, certPEM...), keyPEM...)}); err != nil {
		return nil, stop, err
	}
	port, err := freePort()
	if err != nil {
		return nil, stop, err
	}
	redisAddr := "127.0.0.1:" + strconv.Itoa(port)
	redis, err := startExternal(b.tmp, "redis", redisBin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no")
	if err != nil {
		return nil, stop, err
	}
	stops = append(stops, redis.stop)
	if err := waitFor("redis-server", func() bool { return redisUp(redisAddr) }); err != nil {
		return nil, stop, err
	}

	keys := []string{"-key-file", filepath.Join(b.tmp, "command.pem"), "-cert", filepath.Join(b.tmp, "tls.pem"), "-tls-key", filepath.Join(b.tmp, "tls-key.pem")}
	simAddr := strings.TrimPrefix(b.simURL, "https://")
	var ours, refs []*child
	stops = append(stops, func() {
		for _, c := range append(ours, refs...) {
			c.stop()
		}
	})
	for i := range replicaCount {
		o, err := startChild(fmt.Sprintf("ours-replica%d", i+1), b.ours.proc.bin, b.tmp, append(append([]string{}, keys...),
			"-host", "127.0.0.1", "-port", "0", "-upstream", b.simURL, "-upstream-ca", filepath.Join(b.tmp, "ca.pem"),
			"-session-store", "redis://"+redisAddr+"/0")...)
		if err != nil {
			return nil, stop, err
		}
		ours = append(ours, o)
		r, err := startChild(fmt.Sprintf("reference-replica%d", i+1), b.ref.proc.bin, b.tmp, append(append([]string{}, keys...),
			"-sim", simAddr, "-sim-ca", filepath.Join(b.tmp, "ca.pem"))...)
		if err != nil {
			return nil, stop, err
		}
		refs = append(refs, r)
	}
	urls := func(cs []*child) []string {
		var u []string
		for _, c := range cs {
			u = append(u, c.url)
		}
		return u
	}
	lbOurs, oursURL, err := b.startBalancer(haproxyBin, "haproxy-ours", urls(ours))
	if err != nil {
		return nil, stop, err
	}
	stops = append(stops, lbOurs.stop)
	lbRef, refURL, err := b.startBalancer(haproxyBin, "haproxy-reference", urls(refs))
	if err != nil {
		return nil, stop, err
	}
	stops = append(stops, lbRef.stop)

	return []*contender{
		{name: "ours", url: oursURL, group: ours},
		{name: "reference", url: refURL, group: refs},
	}, stop, nil
}

// rowReplicas needs redis-server and haproxy (Debian's packages, as scripts/test.sh installs);
// without them it says so and is left out.
func (b *bench) rowReplicas() error {
	redisBin, err1 := exec.LookPath("redis-server")
	haproxyBin, err2 := exec.LookPath("haproxy")
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "replicas row left out: it needs redis-server and haproxy on PATH (apt-get install redis-server haproxy)")
		return nil
	}
	contenders, stop, err := b.startReplicaSets(redisBin, haproxyBin)
	defer stop()
	if err != nil {
		return err
	}
	ld := fmt.Sprintf("%d VINs × %s, %d replicas each", replicaVINs, fmtDur(replicaLatency), replicaCount)
	return b.slowCommands(rowReplicas, ld, contenders, replicaVINs, replicaLatency)
}
