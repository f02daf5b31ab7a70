package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/teslamotors/vehicle-command/pkg/protocol"

	"github.com/teslaproxy/proxy/internal/forward"
)

// pki is a throw-away CA for the run: it signs the simulator's and the proxies' certificates, and
// every client (the load generator, the proxies' upstream transports) trusts only it.
type pki struct {
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
	pool   *x509.CertPool
	serial int64
}

func newPKI() (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "teslaproxy bench CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &pki{
		caCert: cert, caKey: key, pool: pool, serial: 1,
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

// leaf issues a server certificate for 127.0.0.1, localhost and names.
func (p *pki) leaf(names ...string) (cert tls.Certificate, certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return cert, nil, nil, err
	}
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     append([]string{"localhost"}, names...),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return cert, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return cert, nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err = tls.X509KeyPair(certPEM, keyPEM)
	return cert, certPEM, keyPEM, err
}

// commandKey is the command-signing key every proxy holds and every simulated vehicle trusts.
type commandKey struct {
	private protocol.ECDHPrivateKey
	pemSEC1 []byte
}

func newCommandKey() (*commandKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	priv := protocol.UnmarshalECDHPrivateKey(k.D.FillBytes(make([]byte, 32)))
	if priv == nil {
		return nil, fmt.Errorf("could not load a generated command key")
	}
	return &commandKey{private: priv, pemSEC1: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})}, nil
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
