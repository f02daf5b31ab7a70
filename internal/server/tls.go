package server

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// CertReloader serves a TLS certificate from files and picks up a renewed certificate without a
// restart: on Reload (the proxy calls it on SIGHUP) and on its own when the files' modification
// times change (checked at most once a second, on a handshake).
type CertReloader struct {
	certFile, keyFile string

	mu        sync.Mutex
	cert      *tls.Certificate
	certMod   time.Time
	keyMod    time.Time
	lastCheck time.Time
	lastErr   error
}

// NewCertReloader loads the certificate chain and key. It fails with an error that names the
// file when either cannot be read or they do not match.
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	c := &CertReloader{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again. On failure the certificate in use stays in use.
func (c *CertReloader) Reload() error {
	cm, km, err := c.modTimes()
	if err != nil {
		return err
	}
	cert, err := LoadKeyPair(c.certFile, c.keyFile)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert, c.certMod, c.keyMod, c.lastErr = cert, cm, km, nil
	return nil
}

// LoadKeyPair loads a TLS certificate chain and its key, with errors a person can act on. Leaf
// is set: tls.X509KeyPair parses it.
func LoadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	return &cert, nil
}

func (c *CertReloader) modTimes() (time.Time, time.Time, error) {
	cs, err := os.Stat(c.certFile)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("TLS certificate: %w", err)
	}
	ks, err := os.Stat(c.keyFile)
	if err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("TLS key: %w", err)
	}
	return cs.ModTime(), ks.ModTime(), nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (c *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	check := time.Since(c.lastCheck) >= time.Second
	if check {
		c.lastCheck = time.Now()
	}
	cert, certMod, keyMod := c.cert, c.certMod, c.keyMod
	c.mu.Unlock()
	if check {
		if cm, km, err := c.modTimes(); err == nil && (!cm.Equal(certMod) || !km.Equal(keyMod)) {
			if err := c.Reload(); err == nil {
				c.mu.Lock()
				cert = c.cert
				c.mu.Unlock()
			} else {
				c.mu.Lock()
				c.lastErr = err
				c.mu.Unlock()
			}
		}
	}
	if cert == nil {
		return nil, errors.New("no TLS certificate loaded")
	}
	return cert, nil
}

// LastError returns the error of the last failed automatic reload, or nil.
func (c *CertReloader) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// SameKey reports whether the PEM private key in tlsKeyFile is the same key as the P-256 command
// key whose uncompressed public point is signingPublic. Reusing the command-signing key for TLS
// would expose it to every TLS client's handshake transcript and mixes two roles; the proxy
// refuses to start.
func SameKey(tlsKeyFile string, signingPublic []byte) (bool, error) {
	keyPEM, err := os.ReadFile(tlsKeyFile)
	if err != nil {
		return false, fmt.Errorf("TLS key: %w", err)
	}
	// A key that is not an EC private key cannot be the command key.
	pub, err := publicOfPEMKey(keyPEM)
	if err != nil {
		return false, nil //nolint:nilerr // not an EC key, so not the command key: a "no", not a failure
	}
	return bytes.Equal(pub, signingPublic), nil
}
