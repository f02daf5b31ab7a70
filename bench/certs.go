package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"

	"github.com/teslaproxy/proxy/internal/certgen"
	"github.com/teslaproxy/proxy/internal/forward"
)

// pki is a throw-away CA for the run: it signs the simulator's and the proxies' certificates, and
// every client (the load generator, the proxies' upstream transports) trusts only it.
type pki struct {
	ca    *certgen.CA
	caPEM []byte
	pool  *x509.CertPool
}

func newPKI() (*pki, error) {
	ca, err := certgen.NewCA("teslaproxy bench CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	return &pki{ca: ca, caPEM: ca.CertPEM(), pool: ca.Pool()}, nil
}

// leaf issues a server certificate for 127.0.0.1, localhost and names.
func (p *pki) leaf(names ...string) (cert tls.Certificate, certPEM, keyPEM []byte, err error) {
	l, err := p.ca.Issue(24*time.Hour, names...)
	if err != nil {
		return cert, nil, nil, err
	}
	return l.TLS, l.CertPEM, l.KeyPEM, nil
}

// commandKey is the command-signing key every proxy holds and every simulated vehicle trusts.
type commandKey struct {
	private protocol.ECDHPrivateKey
	pemSEC1 []byte
}

func newCommandKey() (*commandKey, error) {
	k, err := certgen.NewKey()
	if err != nil {
		return nil, err
	}
	scalar, err := k.Bytes()
	if err != nil {
		return nil, fmt.Errorf("encoding the generated command key: %w", err)
	}
	priv := protocol.UnmarshalECDHPrivateKey(scalar)
	if priv == nil {
		return nil, fmt.Errorf("could not load a generated command key")
	}
	return &commandKey{private: priv, pemSEC1: certgen.KeyPEM(k)}, nil
}

// writeFiles writes name → contents into dir with mode 0600 and returns name → path.
func writeFiles(dir string, files map[string][]byte) (map[string]string, error) {
	out := map[string]string{}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return nil, err
		}
		out[name] = p
	}
	return out, nil
}

// benchToken returns an unsigned, JWT-shaped bearer token whose audience is the NA Fleet API.
// The reference proxy decodes the payload with unpadded standard base64 and ours with base64url,
// so the payload is padded until its encoding uses neither '+' '/' nor '-' '_' and both read it.
func benchToken() (string, error) {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	for i := 0; i < 200; i++ {
		claims := map[string]any{
			"sub":     "bench-user",
			"aud":     []string{"https://" + forward.HostNA, "https://auth.tesla.com/oauth2/v3/clientinfo"},
			"ou_code": "NA",
			"scp":     []string{"openid", "vehicle_device_data", "vehicle_cmds"},
			"pad":     strings.Repeat("x", i),
		}
		b, err := json.Marshal(claims)
		if err != nil {
			return "", err
		}
		payload := base64.RawStdEncoding.EncodeToString(b)
		if !strings.ContainsAny(payload, "+/-_") {
			return header + "." + payload + ".YmVuY2htYXJr", nil
		}
	}
	return "", fmt.Errorf("no token payload without base64 punctuation found")
}
