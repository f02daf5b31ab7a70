package signer_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // G505: see the use below
	"encoding/base64"
	"encoding/hex"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/sessions"
	"github.com/teslaproxy/proxy/internal/testenv"
	"github.com/teslaproxy/proxy/internal/testenv/redistest"
)

// replicas starts n proxies signing with one key in front of one simulator, sharing sessions
// through the Redis at url. It returns the proxies and their shared stores.
func replicas(t *testing.T, n, vehicles int, raw []byte, url string) ([]*testenv.Env, []*sessions.Redis) {
	t.Helper()
	key := protocol.UnmarshalECDHPrivateKey(raw)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	sim := fleetsim.New(fleetsim.Options{Logger: log.Named("sim"), TrustedKeys: []*ecdh.PublicKey{testenv.PublicKey(t, key)}})
	var envs []*testenv.Env
	var stores []*sessions.Redis
	for range n {
		local, err := sessions.Open(sessions.Options{Size: 1000})
		if err != nil {
			t.Fatal(err)
		}
		st, err := sessions.OpenRedis(sessions.RedisOptions{URL: url, Prefix: sessions.KeyPrefix(key.PublicBytes()), Local: local, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close(); _ = local.Close() })
		envs = append(envs, testenv.Start(t, testenv.Options{Vehicles: vehicles, Key: key, Sim: sim, Shared: st, Logger: log}))
		stores = append(stores, st)
	}
	return envs, stores
}

func newRawKey(t *testing.T) []byte {
	k, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k.Bytes()
}

// TestReplicasShareSessions: three replicas behind no affinity at all (every command goes to the
// next replica) share each car's session: one handshake per car over all of them, no vehicle
// rejection, every command executed exactly once, and nothing in Redis that could sign.
func TestReplicasShareSessions(t *testing.T) {
	srv := redistest.Start(t)
	raw := newRawKey(t)
	envs, stores := replicas(t, 3, 6, raw, srv.URL())
	vins := envs[0].VINs
	const clients, perClient = 3, 8

	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for vi, vin := range vins {
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range perClient {
					env := envs[(vi+c+i)%len(envs)]
					a, err := send(context.Background(), env, vin, "flash_lights", nil)
					if err != nil || !a.ok() {
						mu.Lock()
						failed++
						mu.Unlock()
						t.Errorf("%s through replica %d: %v %d %s", vin, (vi+c+i)%len(envs), err, a.status, a.body)
					}
				}
			}()
		}
	}
	wg.Wait()
	if failed > 0 {
		t.Fatalf("%d commands failed", failed)
	}
	sim := envs[0].Sim
	st := sim.Stats()
	for _, vin := range vins {
		vs := st.Vehicles[vin]
		if h := vs.Handshakes.Infotainment + vs.Handshakes.VCSEC; h != 1 {
			t.Errorf("%s: %d handshakes over 3 replicas, want 1", vin, h)
		}
		if got := len(sim.Executions(vin)); got != clients*perClient {
			t.Errorf("%s: %d executions of %d commands", vin, got, clients*perClient)
		}
	}
	if len(st.Rejections) != 0 {
		t.Errorf("vehicle rejections: %v, want none", st.Rejections)
	}

	// A warm command costs the lease and one round trip: acquire+read, then write+release.
	before := stores[1].RoundTrips()
	const warm = 10
	for range warm {
		if a, err := send(context.Background(), envs[1], vins[0], "flash_lights", nil); err != nil || !a.ok() {
			t.Fatalf("warm command: %v %d %s", err, a.status, a.body)
		}
	}
	if got := stores[1].RoundTrips() - before; got != 2*warm {
		t.Errorf("%d warm commands took %d store round trips, want %d", warm, got, 2*warm)
	}

	scanForSecrets(t, srv, raw, sim, vins)
}

// scanForSecrets reads every key and value in Redis and fails if any holds the app's private key,
// an ECDH secret shared with a car, or the session key derived from it, raw, hex or base64.
func scanForSecrets(t *testing.T, srv *redistest.Server, raw []byte, sim *fleetsim.Server, vins []string) {
	t.Helper()
	priv, err := ecdh.P256().NewPrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{"private key": raw}
	for _, vin := range vins {
		shared, err := priv.ECDH(sim.Vehicle(vin).PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		k := sha1.Sum(shared) //nolint:gosec // G401: vehicle-command derives the session key as SHA-1(shared)[:16]; the test looks for that key
		secrets["ECDH secret of "+vin] = shared
		secrets["session key of "+vin] = k[:16]
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := context.Background()
	var blobs [][]byte
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatal("Redis holds no key: the replicas shared nothing")
	}
	for _, k := range keys {
		blobs = append(blobs, []byte(k))
		switch typ, _ := c.Type(ctx, k).Result(); typ {
		case "string":
			v, _ := c.Get(ctx, k).Bytes()
			blobs = append(blobs, v)
		case "hash":
			for f, v := range c.HGetAll(ctx, k).Val() {
				blobs = append(blobs, []byte(f), []byte(v))
			}
		default:
			t.Errorf("key %q has type %q, which this scan does not read", k, typ)
		}
	}
	for name, s := range secrets {
		forms := [][]byte{s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s)), []byte(base64.RawURLEncoding.EncodeToString(s))}
		for _, b := range blobs {
			for _, f := range forms {
				if bytes.Contains(b, f) {
					t.Errorf("Redis holds the %s", name)
				}
			}
		}
	}
}

// TestReplicasShareLegacyMarks: once one replica learns that a vehicle predates the command
// protocol, the others send its commands to the REST API straight away, without trying a
// signed_command first.
func TestReplicasShareLegacyMarks(t *testing.T) {
	srv := redistest.Start(t)
	envs, _ := replicas(t, 3, 1, newRawKey(t), srv.URL())
	vin := envs[0].VINs[0]
	sim := envs[0].Sim
	sim.SetFault(vin, fleetsim.Fault{Legacy: true})
	if a, err := send(context.Background(), envs[0], vin, "flash_lights", nil); err != nil || !a.ok() {
		t.Fatalf("first command to a legacy vehicle: %v %d %s", err, a.status, a.body)
	}
	signed := sim.Stats().Routes["signed_command"]
	for _, env := range envs[1:] {
		if a, err := send(context.Background(), env, vin, "flash_lights", nil); err != nil || !a.ok() {
			t.Fatalf("legacy vehicle through another replica: %v %d %s", err, a.status, a.body)
		}
	}
	st := sim.Stats()
	if got := st.Routes["signed_command"]; got != signed {
		t.Errorf("the other replicas sent %d signed_command calls to a vehicle marked legacy, want 0", got-signed)
	}
	if got := st.Vehicles[vin].REST; got != 3 {
		t.Errorf("REST commands the vehicle ran: %d, want 3", got)
	}
}
