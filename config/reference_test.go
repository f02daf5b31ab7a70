package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The reference this proxy is a drop-in for: its module is a dependency, so its source is in the
// module cache at the version go.mod names.
const (
	referenceModule = "github.com/teslamotors/vehicle-command"
	referenceCmd    = referenceModule + "/cmd/tesla-http-proxy"
)

// referenceNotEnabled are environment variables pkg/cli reads only for flag groups that
// tesla-http-proxy does not enable (it asks for cli.FlagPrivateKey alone), each with the flag of
// its group. They are exempt only while that flag is absent from the reference's -help.
var referenceNotEnabled = map[string]string{
	"TESLA_VIN":        "vin",
	"TESLA_TOKEN_NAME": "token-name",
	"TESLA_TOKEN_FILE": "token-file",
}

// referenceFlags builds tesla-http-proxy from the module cache and returns the flag names its
// -help lists.
func referenceFlags(t *testing.T) []string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tesla-http-proxy")
	if out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, referenceCmd).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", referenceCmd, err, out)
	}
	cmd := exec.CommandContext(t.Context(), bin, "-help")
	cmd.Env = []string{"HOME=" + t.TempDir()}
	out, _ := cmd.CombinedOutput() // -help exits 0 or 2 depending on the flag package's mood
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9][a-z0-9-]*)`).FindAllStringSubmatch(string(out), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) == 0 {
		t.Fatalf("no flags found in the reference's -help:\n%s", out)
	}
	return flags
}

// referenceEnv returns the TESLA_* environment variables named in the reference's main package
// and in pkg/cli, whose Config.ReadFromEnvironment it calls.
func referenceEnv(t *testing.T) []string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-m", "-f", "{{.Dir}}", referenceModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", referenceModule, err)
	}
	dir := strings.TrimSpace(string(out))
	seen := map[string]bool{}
	for _, f := range []string{"cmd/tesla-http-proxy/main.go", "pkg/cli/config.go"} {
		src, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`"(TESLA_[A-Z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
			seen[m[1]] = true
		}
	}
	var env []string
	for k := range seen {
		env = append(env, k)
	}
	slices.Sort(env)
	return env
}

// TestReferenceCompatibility fails when tesla-http-proxy (at the version go.mod names) has a flag
// or an environment variable this proxy does not know: drop-in means every setup that starts the
// reference starts this proxy.
func TestReferenceCompatibility(t *testing.T) {
	flags := referenceFlags(t)
	env := referenceEnv(t)
	t.Logf("reference flags: %v", flags)
	t.Logf("reference environment: %v", env)

	// The parsers found what is certainly there, so an empty or truncated parse cannot pass.
	for _, f := range []string{"cert", "tls-key", "port", "key-file", "key-name", "keyring-type", "domain"} {
		if !slices.Contains(flags, f) {
			t.Errorf("parsing the reference's -help missed -%s", f)
		}
	}
	for _, e := range []string{"TESLA_HTTP_PROXY_TLS_CERT", "TESLA_KEY_NAME", "TESLA_KEYRING_PATH", "TESLA_KEYRING_PASSWORD"} {
		if !slices.Contains(env, e) {
			t.Errorf("parsing the reference's source missed %s", e)
		}
	}

	ourFlags := map[string]bool{}
	ourEnv := map[string]bool{EnvKeyringPassword: true}
	for _, s := range settings {
		ourFlags[s.flag] = true
		if s.env != "" {
			ourEnv[s.env] = true
		}
	}
	for _, f := range flags {
		if f == "help" || f == "h" {
			continue
		}
		if !ourFlags[f] {
			t.Errorf("the reference accepts -%s, which this proxy does not know", f)
		}
	}
	for _, e := range env {
		if flag, ok := referenceNotEnabled[e]; ok && !slices.Contains(flags, flag) {
			continue // read only for a flag group the reference does not enable
		}
		if _, ignored := IgnoredReferenceEnv[e]; ignored {
			continue
		}
		if !ourEnv[e] {
			t.Errorf("the reference reads %s, which this proxy does not know", e)
		}
	}
	for e := range IgnoredReferenceEnv {
		if !slices.Contains(env, e) {
			t.Errorf("IgnoredReferenceEnv lists %s, which the reference no longer reads", e)
		}
	}
}
