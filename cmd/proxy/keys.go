package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/internal/app"
	"github.com/teslaproxy/proxy/internal/certgen"
)

// runKeygen implements "proxy keygen": a new P-256 command-signing key, written to a file with
// -out FILE (mode 0600, never over an existing file) or stored in a system keyring with
// -key-name NAME (never over an existing key: that key's public key is printed instead, as
// tesla-keygen create does); with -key-file FILE and -key-name NAME it moves a PEM key into the
// keyring, like tesla-keygen migrate. The public key is printed for hosting.
func runKeygen(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "file to write the new private key to (PEM, mode 0600; never overwritten)")
	from := fs.String("key-file", "", "with -key-name: an existing PEM key to store in the keyring (migrate)")
	keyringSettings := keyringFlags(fs, func(k string) string {
		if k == "TESLA_KEY_NAME" {
			return "" // the keyring is used when asked on the command line only
		}
		return getenv(k)
	})
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	ks := keyringSettings()
	if fs.NArg() > 0 || (*out == "") == (ks.Name == "") || (*from != "" && ks.Name == "") {
		fmt.Fprintln(stderr, "proxy keygen: usage: proxy keygen -out FILE | -key-name NAME [-key-file FILE] [-keyring-type TYPE] [-keyring-file-dir DIR]")
		return 2
	}
	if *out != "" {
		pemPub, err := writeNewKey(*out)
		if err != nil {
			fmt.Fprintf(stderr, "proxy keygen: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "wrote %s; host this public key at https://<your-domain>/.well-known/appspecific/com.tesla.3p.public-key.pem:\n", *out)
		_, _ = stdout.Write(pemPub)
		return 0
	}
	key, what, err := keygenKeyring(ks, *from)
	if err != nil {
		fmt.Fprintf(stderr, "proxy keygen: %v\n", err)
		return 1
	}
	pemPub, err := app.PublicKeyPEM(key)
	if err != nil {
		fmt.Fprintf(stderr, "proxy keygen: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "%s; host this public key at https://<your-domain>/.well-known/appspecific/com.tesla.3p.public-key.pem:\n", what)
	_, _ = stdout.Write(pemPub)
	return 0
}

// keygenKeyring stores a new key, or the key in the PEM file from, under ks.Name, and returns the
// key with a sentence saying what was done. A new key is not made when the name exists: that key
// is returned. A migrated key never replaces one.
func keygenKeyring(ks keyringSettings, from string) (protocol.ECDHPrivateKey, string, error) {
	if from != "" {
		key, err := protocol.LoadPrivateKey(from)
		if err != nil {
			return nil, "", fmt.Errorf("key %s: %w (want a P-256 private key in PEM)", from, err)
		}
		if err := storeKeyringKey(ks, key); err != nil {
			return nil, "", err
		}
		return key, fmt.Sprintf("stored the key of %s as %q in %s (the file is unchanged; delete it once the proxy runs with -key-name)", from, ks.Name, ks.describe()), nil
	}
	if key, err := loadKeyringKey(ks); err == nil {
		return key, fmt.Sprintf("%s already holds a key named %q; kept it", ks.describe(), ks.Name), nil
	} else if !isMissingKey(err) {
		return nil, "", err
	}
	priv, err := certgen.NewKey()
	if err != nil {
		return nil, "", err
	}
	scalar, err := priv.Bytes()
	if err != nil {
		return nil, "", fmt.Errorf("encoding the new key: %w", err)
	}
	key := protocol.UnmarshalECDHPrivateKey(scalar)
	if key == nil {
		return nil, "", errors.New("the new key could not be converted") // unreachable for a P-256 key
	}
	if err := storeKeyringKey(ks, key); err != nil {
		return nil, "", err
	}
	return key, fmt.Sprintf("stored a new key as %q in %s", ks.Name, ks.describe()), nil
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

// runPubkey implements "proxy pubkey -key-file FILE" and "proxy pubkey -key-name NAME" (a key
// in a keyring, with tesla-keygen's keyring flags).
func runPubkey(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pubkey", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key-file", getenv("TESLA_KEY_FILE"), "command-signing private key (PEM); env TESLA_KEY_FILE")
	keyringSettings := keyringFlags(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return usageExit(err)
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	ks := keyringSettings()
	// A flag wins over the other source's environment variable, as in tesla-http-proxy.
	if given["key-file"] && !given["key-name"] {
		ks.Name = ""
	}
	if given["key-name"] && !given["key-file"] {
		*keyFile = ""
	}
	if fs.NArg() > 0 || (*keyFile == "") == (ks.Name == "") {
		fmt.Fprintln(stderr, "proxy pubkey: usage: proxy pubkey -key-file FILE | -key-name NAME [-keyring-type TYPE] [-keyring-file-dir DIR]")
		return 2
	}
	var key protocol.ECDHPrivateKey
	var err error
	if ks.Name != "" {
		key, err = loadKeyringKey(ks)
	} else {
		key, err = loadSigningKey(*keyFile, zap.NewNop())
	}
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
