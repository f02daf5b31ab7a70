package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// genCerts runs scripts/gen-certs.sh -d dir names... and returns its output.
func genCerts(t *testing.T, dir string, names ...string) string {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "gen-certs.sh"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{script, "-d", dir}, names...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gen-certs.sh: %v\n%s", err, out)
	}
	return string(out)
}

// readCerts returns every certificate in a PEM file.
func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			t.Fatalf("%s holds a %q block", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatalf("%s holds no certificate", path)
	}
	return certs
}

// checkGenerated verifies the leaf against the CA for every name and checks the file modes. It
// returns the CA pool and the leaf.
func checkGenerated(t *testing.T, dir string) (*x509.CertPool, *x509.Certificate) {
	t.Helper()
	ca := readCerts(t, filepath.Join(dir, "ca.pem"))
	chain := readCerts(t, filepath.Join(dir, "tls-cert.pem"))
	roots := x509.NewCertPool()
	roots.AddCert(ca[0])
	leaf := chain[0]
	if leaf.IsCA {
		t.Error("the server certificate is a CA")
	}
	for _, name := range []string{"localhost", "example.test", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.test", Roots: roots}); err == nil {
		t.Error("the certificate verifies for a name it was not made for")
	}
	for name, want := range map[string]os.FileMode{"ca-key.pem": 0o600, "tls-key.pem": 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s mode %v, want %v", name, got, want)
		}
	}
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls-cert.pem"), filepath.Join(dir, "tls-key.pem")); err != nil {
		t.Errorf("tls-cert.pem and tls-key.pem do not pair: %v", err)
	}
	return roots, leaf
}

// TestGenCertsScript: scripts/gen-certs.sh makes a CA and a server certificate that verify for
// every name, with private files, reuses the CA on a second run, and the proxy serves them.
func TestGenCertsScript(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	dir := filepath.Join(t.TempDir(), "my certs") // a space, to catch unquoted paths
	genCerts(t, dir, "example.test")
	_, first := checkGenerated(t, dir)
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}

	out := genCerts(t, dir, "example.test")
	if !strings.Contains(out, "reusing") {
		t.Errorf("second run did not say it reuses the CA:\n%s", out)
	}
	again, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil || string(again) != string(caPEM) {
		t.Error("second run replaced the CA")
	}
	roots, second := checkGenerated(t, dir)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Error("second run did not issue a new server certificate")
	}

	// The proxy starts with the generated files, and a client trusting ca.pem connects under
	// each name.
	f := newFixture(t, fixtureOptions{})
	p := startProc(t, f.args("-cert", filepath.Join(dir, "tls-cert.pem"), "-tls-key", filepath.Join(dir, "tls-key.pem")))
	addr := hostPort(t, p.waitListening(t))
	for _, name := range []string{"localhost", "example.test", "127.0.0.1"} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: name})
		if err != nil {
			t.Errorf("TLS to the proxy as %s: %v", name, err)
			continue
		}
		_, _ = io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: "+name+"\r\nConnection: close\r\n\r\n")
		reply, _ := io.ReadAll(conn)
		conn.Close()
		if !strings.HasPrefix(string(reply), "HTTP/1.1 200") {
			t.Errorf("GET /health as %s: %q", name, reply)
		}
	}
	if code := p.stop(t); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}
