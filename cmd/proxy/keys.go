package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/certgen"
)

// runKeygen implements "proxy keygen -out FILE": a new P-256 command-signing key written with
// mode 0600 (never over an existing file), and its public key printed for hosting.
func runKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "file to write the new private key to (PEM, mode 0600; never overwritten)")
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "proxy keygen: usage: proxy keygen -out FILE")
		return 2
	}
	pemPub, err := writeNewKey(*out)
	if err != nil {
		fmt.Fprintf(stderr, "proxy keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "wrote %s; host this public key at https://<your-domain>/.well-known/appspecific/com.tesla.3p.public-key.pem:\n", *out)
	_, _ = stdout.Write(pemPub)
	return 0
}

// writeNewKey creates a P-256 key in a new file and returns the PEM of its public key.
func writeNewKey(path string) ([]byte, error) {
	priv, err := certgen.NewKey()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%s already exists; refusing to overwrite a key", path)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(certgen.KeyPEM(priv)); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), nil
}

// runPubkey implements "proxy pubkey -key-file FILE".
func runPubkey(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pubkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key-file", os.Getenv("TESLA_KEY_FILE"), "command-signing private key (PEM); env TESLA_KEY_FILE")
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	if *keyFile == "" {
		fmt.Fprintln(stderr, "proxy pubkey: usage: proxy pubkey -key-file FILE")
		return 2
	}
	key, err := loadSigningKey(*keyFile, zap.NewNop())
	if err != nil {
		fmt.Fprintf(stderr, "proxy pubkey: %v\n", err)
		return 1
	}
	pemPub, err := app.PublicKeyPEM(key)
	if err != nil {
		fmt.Fprintf(stderr, "proxy pubkey: %v\n", err)
		return 1
	}
	_, _ = stdout.Write(pemPub)
	return 0
}

func usageExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}
