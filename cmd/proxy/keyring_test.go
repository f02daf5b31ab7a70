package main

import (
	"crypto/ecdh"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/teslaproxy/proxy/internal/fleetsim"
)

// buildTool builds a command of the module's dependencies (such as vehicle-command's
// tesla-keygen, from the module cache, as the bench builds the reference) and returns its path.
func buildTool(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.CommandContext(t.Context(), "go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// keyringSetup is a file keyring in a temporary directory holding a key that tesla-keygen made,
// enrolled on its own simulated vehicle (which does not know the fixture's -key-file key).
type keyringSetup struct {
	*fixture
	dir      string // the file keyring's directory
	home     string // HOME for the processes, so that nothing reads the real one
	password string
	name     string
	vin      string // the vehicle that knows only the keyring key
}

const keygenPkg = "github.com/teslamotors/vehicle-command/cmd/tesla-keygen"

func newKeyringSetup(t *testing.T) *keyringSetup {
	t.Helper()
	const password = "kr-pass-Zq81" //nolint:gosec // G101: a throwaway password for a keyring in a temp dir
	k := &keyringSetup{fixture: newFixture(t, fixtureOptions{}), dir: filepath.Join(t.TempDir(), "keys"),
		home: t.TempDir(), password: password, name: "fleet"}
	keygen := buildTool(t, keygenPkg)
	cmd := exec.CommandContext(t.Context(), keygen, "-key-name", k.name, "-keyring-type", "file", "-keyring-file-dir", k.dir, "create")
	cmd.Env = []string{"HOME=" + k.home, "TESLA_KEYRING_PASSWORD=" + k.password}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	pubPEM, err := cmd.Output()
	if err != nil {
		t.Fatalf("tesla-keygen create: %v; stderr: %s", err, stderr.String())
	}
	pub := parseECDHPublicPEM(t, pubPEM)
	k.vin = fleetsim.NewTestVIN(2)
	k.sim.AddVehicle(k.vin, pub)
	return k
}

func parseECDHPublicPEM(t *testing.T, data []byte) *ecdh.PublicKey {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("not a PEM public key: %q", data)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	type ecdher interface {
		ECDH() (*ecdh.PublicKey, error)
	}
	e, ok := pub.(ecdher)
	if !ok {
		t.Fatalf("public key is a %T, not EC", pub)
	}
	k, err := e.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// args are the fixture's flags without -key-file, followed by extra.
func (k *keyringSetup) args(extra ...string) []string {
	return append([]string{
		"-cert", k.certFile, "-tls-key", k.tlsKeyFile, "-host", "127.0.0.1", "-port", "0",
		"-upstream", k.simURL, "-upstream-ca", k.simCAFile,
	}, extra...)
}

// flags are the reference's keyring flags for the setup's key.
func (k *keyringSetup) flags() []string {
	return []string{"-key-name", k.name, "-keyring-type", "file", "-keyring-file-dir", k.dir}
}

// lock sends door_lock to vin and reports whether the vehicle executed it.
func (k *keyringSetup) lock(t *testing.T, u, vin string) bool {
	t.Helper()
	c := k.client(t)
	defer c.CloseIdleConnections()
	before := len(k.sim.Executions(vin))
	resp, body := k.do(t, c, http.MethodPost, u+"/api/1/vehicles/"+vin+"/command/door_lock", []byte("{}"))
	ok := len(k.sim.Executions(vin)) == before+1
	t.Logf("door_lock %s: %d %s", vin, resp.StatusCode, body)
	return ok && resp.StatusCode == http.StatusOK
}

// TestKeyringKeyFromTeslaKeygen: a key tesla-keygen stored in a file keyring signs commands the
// vehicle accepts, found through the reference's flags and through its environment (with
// TESLA_KEYRING_PATH honored); the password never reaches the log.
func TestKeyringKeyFromTeslaKeygen(t *testing.T) {
	k := newKeyringSetup(t)
	for _, tc := range []struct {
		name string
		args []string
		env  []string
	}{
		{"flags", k.args(k.flags()...), []string{"TESLA_KEYRING_PASSWORD=" + k.password}},
		{"environment", k.args("-verbose", "-keyring-debug"), []string{
			"TESLA_KEY_NAME=" + k.name, "TESLA_KEYRING_TYPE=file", "TESLA_KEYRING_PATH=" + k.dir,
			"TESLA_KEYRING_PASSWORD=" + k.password, "TESLA_KEYRING_DEBUG=1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, tc.args, append(tc.env, "HOME="+k.home)...)
			u := p.waitListening(t)
			if !k.lock(t, u, k.vin) {
				t.Errorf("the vehicle enrolled with the keyring key did not execute door_lock")
			}
			// The vehicle that knows only the -key-file key refuses: the keyring key signed.
			if k.lock(t, u, k.fixture.vin) {
				t.Errorf("a vehicle that does not know the keyring key executed door_lock")
			}
			if code := p.stop(t); code != 0 {
				t.Errorf("exit code %d, want 0; stderr:\n%s", code, p.stderr())
			}
			if strings.Contains(p.stderr(), k.password) {
				t.Errorf("the keyring password appears on stderr")
			}
		})
	}
}

// expectKeyringFatal runs the proxy with env and checks it exits 1 with exactly one line for a
// person, containing every string in want and none in unwanted, and never the password.
func expectKeyringFatal(t *testing.T, k *keyringSetup, args, env, want, unwanted []string) {
	t.Helper()
	code, stdout, stderr := runProxy(t, args, append(env, "HOME="+k.home)...)
	lines := problemLines(stderr)
	t.Logf("exit %d: %s", code, strings.Join(lines, " | "))
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if len(lines) != 1 {
		t.Errorf("stderr has %d lines for a person, want exactly 1:\n%s", len(lines), stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr does not mention %q", w)
		}
	}
	for _, w := range append(unwanted, k.password, "listening on") {
		if strings.Contains(stderr, w) || strings.Contains(stdout, w) {
			t.Errorf("output contains %q", w)
		}
	}
}

// TestKeyringStartErrors: a wrong password, a missing key, no password without a terminal, an
// unknown backend, and -key-file with -key-name each stop the proxy with one clear line.
func TestKeyringStartErrors(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the cases assume wincred is unavailable")
	}
	k := newKeyringSetup(t)
	pw := "TESLA_KEYRING_PASSWORD=" + k.password
	for _, tc := range []struct {
		name           string
		args, env      []string
		want, unwanted []string
	}{
		{"wrong password", k.args(k.flags()...), []string{"TESLA_KEYRING_PASSWORD=not-the-" + k.password[3:]},
			[]string{"password", "TESLA_KEYRING_PASSWORD", k.dir, `"fleet"`}, []string{"aes.KeyUnwrap", "not-the-"}},
		{"missing key", k.args("-key-name", "other", "-keyring-type", "file", "-keyring-file-dir", k.dir), []string{pw},
			[]string{`"other"`, "no key of that name", k.dir}, nil},
		{"no password and no terminal", k.args(k.flags()...), nil,
			[]string{"TESLA_KEYRING_PASSWORD", "no terminal"}, nil},
		{"unknown keyring type", k.args("-key-name", k.name, "-keyring-type", "vault"), []string{pw},
			[]string{`"vault"`, "-keyring-type", "file"}, nil},
		// wincred exists only on Windows: a backend the library knows but this system lacks.
		{"keyring type not on this system", k.args("-key-name", k.name, "-keyring-type", "wincred"), []string{pw},
			[]string{`"wincred"`, "not available on this system", "file"}, nil},
		{"key file and key name", k.args(append(k.flags(), "-key-file", k.keyFile)...), []string{pw},
			[]string{"-key-name", "-key-file"}, nil},
		{"key file and key name from the environment", k.args(), []string{pw, "TESLA_KEY_NAME=fleet", "TESLA_KEY_FILE=" + k.keyFile},
			[]string{"-key-name", "-key-file"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectKeyringFatal(t, k, tc.args, tc.env, tc.want, tc.unwanted)
		})
	}
}

// TestReferenceOnlyFlags: -domain (repeated) is accepted, logged once and ignored; an unknown
// domain is refused as the reference refuses it; -disable-session-cache keeps sessions out of
// -session-cache, which without it holds them after a command.
func TestReferenceOnlyFlags(t *testing.T) {
	k := newKeyringSetup(t)
	t.Run("domain", func(t *testing.T) {
		p := startProc(t, k.fixture.args("-domain", "VCSEC", "-domain", "infotainment"))
		u := p.waitListening(t)
		if !k.lock(t, u, k.fixture.vin) {
			t.Errorf("door_lock with -domain was not executed")
		}
		if code := p.stop(t); code != 0 {
			t.Errorf("exit code %d; stderr:\n%s", code, p.stderr())
		}
		n := 0
		for _, l := range p.logs() {
			if strings.Contains(l.Msg, "chooses domains per command") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("logged the -domain notice %d times, want once; stderr:\n%s", n, p.stderr())
		}
	})
	t.Run("unknown domain", func(t *testing.T) {
		expectKeyringFatal(t, k, k.fixture.args("-domain", "BODY"), nil, []string{"-domain", `"BODY"`}, nil)
	})
	for _, disable := range []bool{false, true} {
		name := "session cache kept"
		if disable {
			name = "session cache disabled"
		}
		t.Run(name, func(t *testing.T) {
			cache := filepath.Join(t.TempDir(), "sessions.db")
			args := k.fixture.args("-session-cache", cache)
			if disable {
				args = append(args, "-disable-session-cache")
			}
			p := startProc(t, args)
			u := p.waitListening(t)
			if !k.lock(t, u, k.fixture.vin) {
				t.Errorf("door_lock was not executed")
			}
			if code := p.stop(t); code != 0 {
				t.Errorf("exit code %d; stderr:\n%s", code, p.stderr())
			}
			_, err := os.Stat(cache)
			if disable && err == nil {
				t.Errorf("-disable-session-cache: %s was written", cache)
			}
			if !disable && err != nil {
				t.Errorf("without -disable-session-cache, %s was not written: %v", cache, err)
			}
		})
	}
}

// TestKeygenKeyring: proxy keygen creates a key in a file keyring that tesla-keygen finds, keeps
// an existing key, moves a PEM key into a keyring; proxy pubkey prints the public key of a key
// tesla-keygen made; a wrong password is one clear line.
func TestKeygenKeyring(t *testing.T) {
	keygen := buildTool(t, keygenPkg)
	home := t.TempDir()
	dir := filepath.Join(t.TempDir(), "keys")
	const password = "kg-pass-Wm42" //nolint:gosec // G101: a throwaway password for a keyring in a temp dir
	env := []string{"HOME=" + home, "TESLA_KEYRING_PASSWORD=" + password}
	kr := []string{"-keyring-type", "file", "-keyring-file-dir", dir}
	// teslaKeygen runs the reference's "create" for name, which prints the existing key's public
	// key, or makes one.
	teslaKeygen := func(t *testing.T, name string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), keygen, append(append([]string{"-key-name", name}, kr...), "create")...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tesla-keygen create %s: %v", name, err)
		}
		return string(out)
	}
	run := func(t *testing.T, args ...string) (int, string, string) {
		t.Helper()
		code, stdout, stderr := runProxy(t, args, env...)
		if strings.Contains(stdout+stderr, password) {
			t.Errorf("proxy %v printed the keyring password", args)
		}
		return code, stdout, stderr
	}

	t.Run("create", func(t *testing.T) {
		code, pub, stderr := run(t, append([]string{"keygen", "-key-name", "ours"}, kr...)...)
		if code != 0 || !strings.Contains(pub, "PUBLIC KEY") {
			t.Fatalf("keygen -key-name: exit %d stdout %q stderr %q", code, pub, stderr)
		}
		if ref := teslaKeygen(t, "ours"); ref != pub {
			t.Errorf("tesla-keygen sees another key:\n%s\nwant\n%s", ref, pub)
		}
		code, again, stderr := run(t, append([]string{"keygen", "-key-name", "ours"}, kr...)...)
		if code != 0 || again != pub || !strings.Contains(stderr, "kept") {
			t.Errorf("second keygen: exit %d, same key %v, stderr %q; want the kept key", code, again == pub, stderr)
		}
		if code, got, stderr := run(t, append([]string{"pubkey", "-key-name", "ours"}, kr...)...); code != 0 || got != pub {
			t.Errorf("pubkey -key-name ours: exit %d stderr %q, same key %v", code, stderr, got == pub)
		}
	})
	t.Run("pubkey of a tesla-keygen key", func(t *testing.T) {
		ref := teslaKeygen(t, "theirs")
		code, got, stderr := run(t, append([]string{"pubkey", "-key-name", "theirs"}, kr...)...)
		if code != 0 || got != ref {
			t.Errorf("pubkey: exit %d stdout %q stderr %q, want tesla-keygen's %q", code, got, stderr, ref)
		}
	})
	t.Run("migrate", func(t *testing.T) {
		pemFile := filepath.Join(t.TempDir(), "fleet.key")
		code, pub, stderr := run(t, "keygen", "-out", pemFile)
		if code != 0 {
			t.Fatalf("keygen -out: exit %d stderr %q", code, stderr)
		}
		code, moved, stderr := run(t, append([]string{"keygen", "-key-file", pemFile, "-key-name", "moved"}, kr...)...)
		if code != 0 || moved != pub {
			t.Fatalf("migrate: exit %d stderr %q, same key %v", code, stderr, moved == pub)
		}
		if ref := teslaKeygen(t, "moved"); ref != pub {
			t.Errorf("tesla-keygen sees another key after migrate")
		}
		// A second migrate never replaces the key.
		other := filepath.Join(t.TempDir(), "other.key")
		if code, _, stderr := run(t, "keygen", "-out", other); code != 0 {
			t.Fatalf("keygen -out: exit %d stderr %q", code, stderr)
		}
		code, _, stderr = run(t, append([]string{"keygen", "-key-file", other, "-key-name", "moved"}, kr...)...)
		if code != 1 || !strings.Contains(stderr, "refusing to replace") {
			t.Errorf("migrate over an existing key: exit %d stderr %q, want 1 and a refusal", code, stderr)
		}
		if ref := teslaKeygen(t, "moved"); ref != pub {
			t.Errorf("the existing key was replaced")
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		code, stdout, stderr := runProxy(t, append([]string{"pubkey", "-key-name", "ours"}, kr...), "HOME="+home, "TESLA_KEYRING_PASSWORD=wrong-one")
		lines := problemLines(stderr)
		if code != 1 || stdout != "" || len(lines) != 1 || !strings.Contains(stderr, "TESLA_KEYRING_PASSWORD") || strings.Contains(stderr, "wrong-one") || strings.Contains(stderr, "aes.") {
			t.Errorf("pubkey with a wrong password: exit %d stdout %q stderr %q; want 1 and one line naming the password", code, stdout, stderr)
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"keygen", "-out", filepath.Join(t.TempDir(), "k"), "-key-name", "x"},
			{"keygen", "-key-file", "k.pem"},
			{"pubkey", "-key-file", "k.pem", "-key-name", "x"},
		} {
			if code, _, stderr := run(t, args...); code != 2 {
				t.Errorf("%v: exit %d stderr %q, want 2", args, code, stderr)
			}
		}
	})
}
