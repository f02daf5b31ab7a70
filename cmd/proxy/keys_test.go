package main

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeygenPubkeyAndWellKnown: keygen writes a 0600 key and prints its public key, never
// overwrites; pubkey and the running proxy's well-known URL give the same PEM.
func TestKeygenPubkeyAndWellKnown(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "fleet.key")

	code, pubPEM, stderr := runProxy(t, []string{"keygen", "-out", keyFile})
	if code != 0 {
		t.Fatalf("keygen: exit %d, stderr %q", code, stderr)
	}
	st, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if mode := st.Mode().Perm(); mode != 0o600 {
		t.Errorf("key file mode %v, want 0600", mode)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	priv := parsePrivateKey(t, keyPEM)
	pub := parsePublicKey(t, []byte(pubPEM))
	if !pub.Equal(&priv.PublicKey) {
		t.Error("the printed public key is not the written key's")
	}
	if rest := strings.TrimPrefix(pubPEM, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustPKIX(t, pub)}))); rest != "" {
		t.Errorf("stdout has more than the public key PEM: %q", rest)
	}
	if strings.Contains(stderr, "PRIVATE KEY") {
		t.Error("keygen printed private key material on stderr")
	}

	t.Run("refuses to overwrite", func(t *testing.T) {
		code, stdout, stderr := runProxy(t, []string{"keygen", "-out", keyFile})
		if code == 0 || stdout != "" || !strings.Contains(stderr, "already exists") {
			t.Errorf("second keygen: exit %d stdout %q stderr %q, want failure saying the file exists", code, stdout, stderr)
		}
		after, err := os.ReadFile(keyFile)
		if err != nil || string(after) != string(keyPEM) {
			t.Error("the existing key was changed")
		}
	})

	t.Run("usage", func(t *testing.T) {
		if code, _, stderr := runProxy(t, []string{"keygen"}); code != 2 || !strings.Contains(stderr, "-out") {
			t.Errorf("keygen without -out: exit %d stderr %q, want 2 and usage", code, stderr)
		}
	})

	t.Run("pubkey", func(t *testing.T) {
		code, stdout, stderr := runProxy(t, []string{"pubkey", "-key-file", keyFile})
		if code != 0 || stdout != pubPEM {
			t.Errorf("pubkey: exit %d stdout %q stderr %q, want the keygen PEM", code, stdout, stderr)
		}
		code, stdout, _ = runProxy(t, []string{"pubkey"}, "TESLA_KEY_FILE="+keyFile)
		if code != 0 || stdout != pubPEM {
			t.Errorf("pubkey with TESLA_KEY_FILE: exit %d stdout %q, want the keygen PEM", code, stdout)
		}
	})

	t.Run("well-known URL", func(t *testing.T) {
		f := newFixture(t, fixtureOptions{})
		p := startProc(t, f.args("-key-file", keyFile))
		u := p.waitListening(t)
		c := f.client(t)
		// No token: Tesla fetches this without one.
		resp, err := c.Get(u + "/.well-known/appspecific/com.tesla.3p.public-key.pem")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != pubPEM {
			t.Errorf("well-known key = %d %q, want 200 and the keygen PEM", resp.StatusCode, body)
		}
		c.CloseIdleConnections()
		if code := p.stop(t); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
	})
}

func parsePrivateKey(t *testing.T, data []byte) *ecdsa.PrivateKey {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "EC PRIVATE KEY" {
		t.Fatalf("key file is not an EC PRIVATE KEY PEM block")
	}
	k, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if k.Curve.Params().Name != "P-256" {
		t.Fatalf("curve %s, want P-256", k.Curve.Params().Name)
	}
	return k
}

func parsePublicKey(t *testing.T, data []byte) *ecdsa.PublicKey {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("output %q is not a PUBLIC KEY PEM block", data)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := k.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("public key is %T, want ECDSA", k)
	}
	return pub
}

func mustPKIX(t *testing.T, pub *ecdsa.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
