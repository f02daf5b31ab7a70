package main

import (
	"errors"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/99designs/keyring"
	"github.com/teslamotors/vehicle-command/pkg/cli"
	"github.com/teslamotors/vehicle-command/pkg/protocol"
	"go.uber.org/zap"

	"github.com/teslaproxy/proxy/config"
)

// loadCommandKey loads the command-signing key from -key-file or, with -key-name, from a system
// keyring, as tesla-http-proxy finds it.
func loadCommandKey(cfg config.Config, log *zap.Logger) (protocol.ECDHPrivateKey, error) {
	if cfg.KeyName == "" {
		return loadSigningKey(cfg.KeyFile, log)
	}
	return loadKeyringKey(keyringSettings{
		Name: cfg.KeyName, Type: cfg.KeyringType, FileDir: cfg.KeyringFileDir,
		Debug: cfg.KeyringDebug, Password: cfg.KeyringPassword,
	})
}

// keyringSettings name a key in a keyring: tesla-http-proxy's -key-name, -keyring-type,
// -keyring-file-dir, -keyring-debug and TESLA_KEYRING_PASSWORD.
type keyringSettings struct {
	Name     string
	Type     string // "" = the first backend available
	FileDir  string
	Debug    bool
	Password config.Secret // "" = ask on a terminal, if there is one
}

// cliConfig is vehicle-command's own keyring configuration for s, the one tesla-http-proxy and
// tesla-keygen use: the same service name, item names and backends.
func (s keyringSettings) cliConfig() (*cli.Config, error) {
	c, err := cli.NewConfig(cli.FlagPrivateKey)
	if err != nil {
		return nil, err
	}
	if s.Type != "" {
		if err := c.BackendType.Set(s.Type); err != nil {
			return nil, fmt.Errorf("-keyring-type %q is not available on this system; choose one of %s", s.Type, availableBackends())
		}
	}
	c.KeyringKeyName = s.Name
	c.Backend.FileDir = s.FileDir
	c.Debug = s.Debug
	if s.Debug {
		// pkg/cli records -keyring-debug but never passes it on; the library's switch is a
		// package variable, so it is only ever turned on, once, by a command-line setting.
		keyring.Debug = true
	}
	if s.Password != "" {
		// pkg/cli reads the password from the process environment itself; handing it over
		// here keeps config.Load the one reader of the environment.
		pw := string(s.Password)
		prompt := func(string) (string, error) { return pw, nil }
		c.Backend.FilePasswordFunc = prompt
		c.Backend.KeychainPasswordFunc = prompt
	}
	return c, nil
}

// describe names the keyring for messages: its backend and, for a file keyring, its directory.
func (s keyringSettings) describe() string {
	switch s.Type {
	case "":
		return "the system keyring"
	case string(keyring.FileBackend):
		return fmt.Sprintf("the file keyring in %s", s.FileDir)
	}
	return fmt.Sprintf("the %s keyring", s.Type)
}

// loadKeyringKey reads the key named s.Name through vehicle-command's pkg/cli. Its errors read
// as one sentence and never contain the password.
func loadKeyringKey(s keyringSettings) (protocol.ECDHPrivateKey, error) {
	c, err := s.cliConfig()
	if err != nil {
		return nil, fmt.Errorf("command-signing key %q: %w", s.Name, err)
	}
	key, err := c.PrivateKey()
	if err == nil && key == nil {
		err = errors.New("no key was returned")
	}
	if err != nil {
		return nil, &keyringError{msg: fmt.Sprintf("command-signing key %q: %s", s.Name, keyringProblem(s, err)), notFound: isKeyNotFound(err)}
	}
	return key, nil
}

// keyringError is a keyring problem worded for a person; notFound reports whether the keyring
// opened but holds no key of the name.
type keyringError struct {
	msg      string
	notFound bool
}

func (e *keyringError) Error() string { return e.msg }

// isMissingKey reports whether err is a *keyringError saying the keyring holds no such key.
func isMissingKey(err error) bool {
	ke, ok := errors.AsType[*keyringError](err)
	return ok && ke.notFound
}

// isKeyNotFound reports whether err says the keyring holds no item of the name.
func isKeyNotFound(err error) bool {
	return errors.Is(err, keyring.ErrKeyNotFound) || strings.Contains(err.Error(), keyring.ErrKeyNotFound.Error())
}

// storeKeyringKey stores key under s.Name, never over an existing key of that name (an
// unreadable keyring, such as one with another password, is an error too).
func storeKeyringKey(s keyringSettings, key protocol.ECDHPrivateKey) error {
	if _, err := loadKeyringKey(s); err == nil {
		return fmt.Errorf("%s already holds a key named %q; refusing to replace it", s.describe(), s.Name)
	} else if !isMissingKey(err) {
		return err
	}
	c, err := s.cliConfig()
	if err != nil {
		return err
	}
	if err := c.SavePrivateKey(key); err != nil {
		return fmt.Errorf("storing key %q in %s: %s", s.Name, s.describe(), keyringProblem(s, err))
	}
	return nil
}

// keyringFlags registers tesla-keygen's keyring flags on fs, each defaulting to its environment
// variable as in the proxy, and returns the settings they fill once fs is parsed.
func keyringFlags(fs *flag.FlagSet, getenv func(string) string) func() keyringSettings {
	dir := getenv("TESLA_KEYRING_PATH")
	if dir == "" {
		dir = config.Defaults().KeyringFileDir
	}
	debugEnv, _ := strconv.ParseBool(getenv("TESLA_KEYRING_DEBUG"))
	name := fs.String("key-name", "", "name of the key in a system keyring; env TESLA_KEY_NAME")
	typ := fs.String("keyring-type", getenv("TESLA_KEYRING_TYPE"), "keyring backend ("+availableBackends()+"); env TESLA_KEYRING_TYPE; the file backend takes its password from TESLA_KEYRING_PASSWORD")
	fileDir := fs.String("keyring-file-dir", dir, "directory of the file keyring; env TESLA_KEYRING_PATH")
	debug := fs.Bool("keyring-debug", debugEnv, "keyring library debug logging; env TESLA_KEYRING_DEBUG")
	return func() keyringSettings {
		if *name == "" {
			*name = getenv("TESLA_KEY_NAME")
		}
		return keyringSettings{Name: *name, Type: *typ, FileDir: *fileDir, Debug: *debug, Password: config.Secret(getenv(config.EnvKeyringPassword))}
	}
}

// keyringProblem words an error from pkg/cli or the keyring library. pkg/cli flattens the
// library's errors into text ("could not load key: %s"), so they are recognized by their text.
func keyringProblem(s keyringSettings, err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "integrity check failed") || strings.Contains(msg, "aes.KeyUnwrap"):
		return fmt.Sprintf("the keyring password (TESLA_KEYRING_PASSWORD) does not open %s; give the password the key was stored with", s.describe())
	case errors.Is(err, keyring.ErrKeyNotFound) || strings.Contains(msg, keyring.ErrKeyNotFound.Error()):
		return fmt.Sprintf("there is no key of that name in %s; check -key-name and -keyring-type/-keyring-file-dir, or store one with proxy keygen -key-name NAME (or tesla-keygen -key-name NAME create)", s.describe())
	case strings.Contains(msg, "no terminal output available for password prompt"):
		return fmt.Sprintf("%s needs a password and there is no terminal to ask on; set TESLA_KEYRING_PASSWORD", s.describe())
	case errors.Is(err, keyring.ErrNoAvailImpl) || strings.Contains(msg, keyring.ErrNoAvailImpl.Error()):
		return fmt.Sprintf("no keyring backend could be opened (%s); choose one with -keyring-type, such as file with TESLA_KEYRING_PASSWORD", availableBackends())
	case strings.Contains(msg, "invalid private key"):
		return fmt.Sprintf("the item in %s is not a P-256 private key", s.describe())
	}
	return fmt.Sprintf("reading it from %s: %s", s.describe(), strings.ReplaceAll(msg, "\n", " "))
}

// availableBackends lists the keyring backends of this system, as -keyring-type accepts them.
func availableBackends() string {
	var names []string
	for _, b := range keyring.AvailableBackends() {
		names = append(names, string(b))
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
