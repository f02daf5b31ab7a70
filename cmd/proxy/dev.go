package main

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/config"
	"github.com/teslaproxy/proxy/internal/fleetsim"
	"github.com/teslaproxy/proxy/internal/server"
)

// devVehicles is how many simulated vehicles the dev mode enrolls its key on.
const devVehicles = 3

// Files the dev mode keeps in its folder (git ignores it). They are made once and reused, so a
// CA trusted once stays trusted.
const (
	devCAFile      = "ca.pem"
	devCAKeyFile   = "ca-key.pem"
	devCertFile    = "tls-cert.pem"
	devTLSKeyFile  = "tls-key.pem"
	devCommandKey  = "command-key.pem"
	devSessionFile = "sessions.json"
	devSimFile     = "simulator.json"
)

// prepareDev makes cfg runnable with nothing else: it creates (once) a local CA, a TLS certificate
// for localhost and a command key in cfg.DevDir, starts the Fleet API simulator on loopback with
// that key enrolled on a few vehicles, and points cfg at all of it. The simulator stops when ctx
// ends. printReady prints what a person needs once the proxy listens.
func prepareDev(ctx context.Context, cfg config.Config, log *zap.Logger) (config.Config, func(url string, w io.Writer), error) {
	dir := cfg.DevDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return cfg, nil, fmt.Errorf("dev mode: %w", err)
	}
	path := func(name string) string { return filepath.Join(dir, name) }
	caCert, caKey, err := devCA(path(devCAFile), path(devCAKeyFile))
	if err != nil {
		return cfg, nil, fmt.Errorf("dev mode: local CA: %w", err)
	}
	if err := devLeaf(path(devCertFile), path(devTLSKeyFile), caCert, caKey); err != nil {
		return cfg, nil, fmt.Errorf("dev mode: TLS certificate: %w", err)
	}
	if _, err := os.Stat(path(devCommandKey)); errors.Is(err, fs.ErrNotExist) {
		if _, err := writeNewKey(path(devCommandKey)); err != nil {
			return cfg, nil, fmt.Errorf("dev mode: command key: %w", err)
		}
	}
	key, err := protocol.LoadPrivateKey(path(devCommandKey))
	if err != nil {
		return cfg, nil, fmt.Errorf("dev mode: command key %s: %w", path(devCommandKey), err)
	}
	pub, err := ecdh.P256().NewPublicKey(key.PublicBytes())
	if err != nil {
		return cfg, nil, err
	}

	// The simulator plays the Fleet API and the vehicles, on loopback, over TLS with the dev CA.
	// Its vehicles keep their keys, epochs and clocks across restarts (like real cars, which do
	// not reboot when the proxy does), so saved sessions stay valid.
	ident, err := devSimIdentity(path(devSimFile))
	if err != nil {
		return cfg, nil, fmt.Errorf("dev mode: simulator identity: %w", err)
	}
	sim := fleetsim.New(fleetsim.Options{Logger: log.Named("sim"), TrustedKeys: []*ecdh.PublicKey{pub}, Seed: ident.Seed, BootTime: ident.Boot})
	var vins []string
	for i := 0; i < devVehicles; i++ {
		vin := fleetsim.NewTestVIN(i)
		sim.AddVehicle(vin, pub)
		vins = append(vins, vin)
	}
	simCert, err := server.LoadKeyPair(path(devCertFile), path(devTLSKeyFile))
	if err != nil {
		return cfg, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return cfg, nil, fmt.Errorf("dev mode: simulator: %w", err)
	}
	simSrv := &http.Server{
		Handler:           sim,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*simCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          zap.NewStdLog(log.Named("sim").WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
	}
	go func() { _ = simSrv.ServeTLS(ln, "", "") }()
	go func() {
		<-ctx.Done()
		_ = simSrv.Close()
	}()
	simURL := "https://" + ln.Addr().String()

	cfg.KeyFile = path(devCommandKey)
	cfg.CertFile = path(devCertFile)
	cfg.TLSKeyFile = path(devTLSKeyFile)
	cfg.Upstream = simURL
	cfg.UpstreamCA = path(devCAFile)
	if cfg.SessionCache == "" {
		cfg.SessionCache = path(devSessionFile)
	}
	token := devToken()
	caPath, _ := filepath.Abs(path(devCAFile))
	printReady := func(url string, w io.Writer) {
		url = strings.Replace(url, "://127.0.0.1:", "://localhost:", 1)
		vin := vins[0]
		curl := "curl --cacert " + shellQuote(caPath) + ` -H "Authorization: Bearer $TOKEN"`
		fmt.Fprintf(w, `
Dev mode: the proxy signs with %s and talks to a simulated Fleet API at %s
(vehicles %s; simulator counters at %s/sim/stats).

Trust this CA in your app: %s

export TOKEN=%s

A vehicle command:
  %s -X POST %s/api/1/vehicles/%s/command/door_lock

A fleet telemetry config (signed by the proxy):
  %s -X POST %s/api/1/vehicles/fleet_telemetry_config -H 'Content-Type: application/json' -d '{"vins":["%s"],"config":{"hostname":"telemetry.example.com","port":4443,"fields":{"BatteryLevel":{"interval_seconds":60}}}}'

A pass-through call:
  %s %s/api/1/vehicles

`, cfg.KeyFile, simURL, strings.Join(vins, ", "), simURL, caPath, token, curl, url, vin, curl, url, vin, curl, url)
	}
	return cfg, printReady, nil
}

// simIdentity is what makes the dev simulator's vehicles the same from one run to the next.
type simIdentity struct {
	Seed []byte    `json:"seed"`
	Boot time.Time `json:"boot"`
}

// devSimIdentity loads the simulator identity, creating it on first use.
func devSimIdentity(file string) (simIdentity, error) {
	var id simIdentity
	if b, err := os.ReadFile(file); err == nil && json.Unmarshal(b, &id) == nil && len(id.Seed) == 32 && !id.Boot.IsZero() {
		return id, nil
	}
	id.Seed = make([]byte, 32)
	if _, err := rand.Read(id.Seed); err != nil {
		return id, err
	}
	id.Boot = time.Now().Truncate(time.Second)
	b, err := json.Marshal(id)
	if err != nil {
		return id, err
	}
	return id, os.WriteFile(file, b, 0o600)
}

// devToken is a JWT-shaped sample bearer token for the simulator. It is not signed: the proxy
// never verifies tokens (the Fleet API does), and the simulator does not either.
func devToken() string {
	claims, _ := json.Marshal(map[string]any{
		"iss": "https://auth.tesla.com/oauth2/v3/nts", "sub": "dev-user", "ou_code": "NA",
		"aud": []string{"https://fleet-api.prd.na.vn.cloud.tesla.com", "https://auth.tesla.com/oauth2/v3/userinfo"},
		"scp": []string{"openid", "offline_access", "vehicle_device_data", "vehicle_cmds", "vehicle_charging_cmds"},
		"exp": time.Now().Add(365 * 24 * time.Hour).Unix(),
	})
	return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." +
		base64.RawURLEncoding.EncodeToString(claims) + ".dev"
}

func shellQuote(s string) string {
	if !strings.ContainsAny(s, " '\"$`\\") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// devCA loads the dev CA, creating it on first use.
func devCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if cert, key, err := loadCA(certFile, keyFile); err == nil {
		return cert, key, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "tesla-proxy dev CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", mustMarshalEC(key), 0o600); err != nil {
		return nil, nil, err
	}
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key, nil
}

func loadCA(certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		return nil, nil, errors.New("not PEM")
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kblock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// devLeaf makes the TLS certificate for localhost, 127.0.0.1 and ::1, signed by the dev CA,
// unless a valid one for at least another week is already there.
func devLeaf(certFile, keyFile string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	if c, err := server.LoadKeyPair(certFile, keyFile); err == nil && c.Leaf != nil &&
		time.Until(c.Leaf.NotAfter) > 7*24*time.Hour && c.Leaf.CheckSignatureFrom(ca) == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(0, 0, 397),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", mustMarshalEC(key), 0o600); err != nil {
		return err
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})...)
	return os.WriteFile(certFile, chain, 0o644)
}

func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm)
}

func mustMarshalEC(key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err) // a P-256 key we just generated always marshals
	}
	return der
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}
