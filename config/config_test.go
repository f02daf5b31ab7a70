package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

// env returns a getenv backed by m, so no test touches the process environment.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// writeYAML writes content to a new file in a per-test directory and returns its path.
func writeYAML(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// valid returns a Config that passes Validate, for tests that break one thing.
func valid() Config {
	c := Defaults()
	c.KeyFile = "certs/fleet-key.pem"
	c.CertFile = "certs/tls-cert.pem"
	c.TLSKeyFile = "certs/tls-key.pem"
	return c
}

// settingErrors returns the *SettingError leaves of an error built with errors.Join, failing
// the test for any leaf of another type.
func settingErrors(t *testing.T, err error) []*SettingError {
	t.Helper()
	if err == nil {
		return nil
	}
	var leaves []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		leaves = j.Unwrap()
	} else {
		leaves = []error{err}
	}
	var out []*SettingError
	for _, l := range leaves {
		var se *SettingError
		if !errors.As(l, &se) {
			t.Fatalf("problem %q is a %T, want *SettingError", l, l)
		}
		if !strings.HasPrefix(se.Error(), "-"+se.Flag+": ") {
			t.Errorf("problem %q does not start by naming its flag -%s", se, se.Flag)
		}
		out = append(out, se)
	}
	return out
}

func flagsOf(ses []*SettingError) []string {
	var out []string
	for _, se := range ses {
		out = append(out, se.Flag)
	}
	slices.Sort(out)
	return out
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	want := Config{
		Host:             "localhost",
		Port:             4443,
		Timeout:          10 * time.Second,
		DevDir:           ".dev",
		MaxBodyBytes:     1048576,
		MaxResponseBytes: 1048576,
		CacheSize:        1_000_000,
		ShutdownTimeout:  15 * time.Second,
		IdleTimeout:      15 * time.Second,

		UpstreamHTTP1Requests: 256,
		UpstreamMaxDials:      4,
		KeyringFileDir:        "~/.tesla_keys",
		WakeTimeout:           30 * time.Second,
		BudgetMode:            "enforce",
	}
	if diff := cmp.Diff(want, Defaults()); diff != "" {
		t.Errorf("Defaults() mismatch (-want +got):\n%s", diff)
	}
	got, err := Load(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatalf("Load with no sources: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load with no sources mismatch (-want +got):\n%s", diff)
	}
	if got, err := Load(nil, nil, io.Discard); err != nil || !cmp.Equal(want, got) {
		t.Errorf("Load with nil getenv = %+v, %v; want defaults", got, err)
	}
}

// TestSources checks that each setting's flag, environment variable and YAML key, spelled
// here as the command-line contract writes them, fill the right field.
func TestSources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		flag, env, key string
		text           string // value for the flag and the environment variable
		yamlText       string // value in the file; "" = same as text
		want           func(c *Config)
	}{
		{"key-file", "TESLA_KEY_FILE", "key_file", "k.pem", "", func(c *Config) { c.KeyFile = "k.pem" }},
		{"key-name", "TESLA_KEY_NAME", "key_name", "fleet", "", func(c *Config) { c.KeyName = "fleet" }},
		{"keyring-type", "TESLA_KEYRING_TYPE", "keyring_type", "file", "", func(c *Config) { c.KeyringType = "file" }},
		{"keyring-file-dir", "TESLA_KEYRING_PATH", "keyring_file_dir", "/var/keys", "", func(c *Config) { c.KeyringFileDir = "/var/keys" }},
		{"keyring-debug", "TESLA_KEYRING_DEBUG", "keyring_debug", "1", "true", func(c *Config) { c.KeyringDebug = true }},
		{"disable-session-cache", "TESLA_HTTP_PROXY_DISABLE_SESSION_CACHE", "disable_session_cache", "true", "", func(c *Config) { c.DisableSessionCache = true }},
		{"domain", "", "", "vcsec", "", func(c *Config) { c.Domains = []string{"vcsec"} }},
		{"cert", "TESLA_HTTP_PROXY_TLS_CERT", "cert", "c.pem", "", func(c *Config) { c.CertFile = "c.pem" }},
		{"tls-key", "TESLA_HTTP_PROXY_TLS_KEY", "tls_key", "t.pem", "", func(c *Config) { c.TLSKeyFile = "t.pem" }},
		{"host", "TESLA_HTTP_PROXY_HOST", "host", "0.0.0.0", "", func(c *Config) { c.Host = "0.0.0.0" }},
		{"port", "TESLA_HTTP_PROXY_PORT", "port", "8443", "", func(c *Config) { c.Port = 8443 }},
		{"timeout", "TESLA_HTTP_PROXY_TIMEOUT", "timeout", "1m30s", "", func(c *Config) { c.Timeout = 90 * time.Second }},
		{"verbose", "TESLA_VERBOSE", "verbose", "true", "", func(c *Config) { c.Verbose = true }},
		{"upstream", "TESLA_HTTP_PROXY_UPSTREAM", "upstream", "https://fleet.example", "", func(c *Config) { c.Upstream = "https://fleet.example" }},
		{"upstream-ca", "TESLA_HTTP_PROXY_UPSTREAM_CA", "upstream_ca", "ca.pem", "", func(c *Config) { c.UpstreamCA = "ca.pem" }},
		{"upstream-max-conns", "TESLA_HTTP_PROXY_UPSTREAM_MAX_CONNS", "upstream_max_conns", "300", "", func(c *Config) { c.UpstreamMaxConns = 300 }},
		{"upstream-max-dials", "TESLA_HTTP_PROXY_UPSTREAM_MAX_DIALS", "upstream_max_dials", "16", "", func(c *Config) { c.UpstreamMaxDials = 16 }},
		{"upstream-http2", "TESLA_HTTP_PROXY_UPSTREAM_HTTP2", "upstream_http2", "true", "true", func(c *Config) { c.UpstreamHTTP2 = true }},
		{"check-config", "", "", "true", "", func(c *Config) { c.CheckConfig = true }},
		{"dev", "TESLA_HTTP_PROXY_DEV", "dev", "1", "true", func(c *Config) { c.Dev = true }},
		{"dev-dir", "TESLA_HTTP_PROXY_DEV_DIR", "dev_dir", "/var/lib/dev", "", func(c *Config) { c.DevDir = "/var/lib/dev" }},
		{"max-body", "TESLA_HTTP_PROXY_MAX_BODY", "max_body", "2048", "", func(c *Config) { c.MaxBodyBytes = 2048 }},
		{"max-response", "TESLA_HTTP_PROXY_MAX_RESPONSE", "max_response", "4096", "", func(c *Config) { c.MaxResponseBytes = 4096 }},
		{"session-cache", "TESLA_HTTP_PROXY_SESSION_CACHE", "session_cache", "s.json", "", func(c *Config) { c.SessionCache = "s.json" }},
		{"session-store", "TESLA_HTTP_PROXY_SESSION_STORE", "session_store", "redis://r:6379/0", "", func(c *Config) { c.SessionStore = "redis://r:6379/0" }},
		{"cache-size", "TESLA_HTTP_PROXY_CACHE_SIZE", "cache_size", "7", "", func(c *Config) { c.CacheSize = 7 }},
		{"client-ca", "TESLA_HTTP_PROXY_CLIENT_CA", "client_ca", "clients.pem", "", func(c *Config) { c.ClientCA = "clients.pem" }},
		{"allow", "TESLA_HTTP_PROXY_ALLOW", "allow", "10.0.0.0/8, ::1", "[10.0.0.0/8, '::1']", func(c *Config) { c.AllowNets = []string{"10.0.0.0/8", "::1"} }},
		{"plaintext", "TESLA_HTTP_PROXY_PLAINTEXT", "plaintext", "TRUE", "true", func(c *Config) { c.Plaintext = true }},
		{"metrics-addr", "TESLA_HTTP_PROXY_METRICS_ADDR", "metrics_addr", "127.0.0.1:9090", "", func(c *Config) { c.MetricsAddr = "127.0.0.1:9090" }},
		{"shutdown-timeout", "TESLA_HTTP_PROXY_SHUTDOWN_TIMEOUT", "shutdown_timeout", "2s", "", func(c *Config) { c.ShutdownTimeout = 2 * time.Second }},
		{"upstream-http1-requests", "TESLA_HTTP_PROXY_UPSTREAM_HTTP1_REQUESTS", "upstream_http1_requests", "32", "", func(c *Config) { c.UpstreamHTTP1Requests = 32 }},
		{"idle-timeout", "TESLA_HTTP_PROXY_IDLE_TIMEOUT", "idle_timeout", "5s", "", func(c *Config) { c.IdleTimeout = 5 * time.Second }},
		{"client-max-inflight", "TESLA_HTTP_PROXY_CLIENT_MAX_INFLIGHT", "client_max_inflight", "64", "", func(c *Config) { c.ClientMaxInFlight = 64 }},
		{"auto-wake", "TESLA_HTTP_PROXY_AUTO_WAKE", "auto_wake", "true", "", func(c *Config) { c.AutoWake = true }},
		{"wake-timeout", "TESLA_HTTP_PROXY_WAKE_TIMEOUT", "wake_timeout", "45s", "", func(c *Config) { c.WakeTimeout = 45 * time.Second }},
		{"coalesce-reads", "TESLA_HTTP_PROXY_COALESCE_READS", "coalesce_reads", "true", "", func(c *Config) { c.CoalesceReads = true }},
		{"read-cache-ttl", "TESLA_HTTP_PROXY_READ_CACHE_TTL", "read_cache_ttl", "2s", "", func(c *Config) { c.ReadCacheTTL = 2 * time.Second }},
		{"monthly-budget", "TESLA_HTTP_PROXY_MONTHLY_BUDGET", "monthly_budget", "12.5", "", func(c *Config) { c.MonthlyBudget = 12.5 }},
		{"budget-mode", "TESLA_HTTP_PROXY_BUDGET_MODE", "budget_mode", "warn", "", func(c *Config) { c.BudgetMode = "warn" }},
	}

	// The table must cover every setting except -config, which TestPrecedence covers, and
	// agree with the package's own table.
	covered := map[string]bool{"config": true}
	for _, tt := range tests {
		covered[tt.flag] = true
	}
	for _, s := range settings {
		if !covered[s.flag] {
			t.Errorf("setting -%s is not covered by TestSources", s.flag)
		}
	}

	for _, tt := range tests {
		want := Defaults()
		tt.want(&want)
		t.Run("flag/"+tt.flag, func(t *testing.T) {
			got, err := Load([]string{"-" + tt.flag + "=" + tt.text}, env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
		if tt.env != "" {
			t.Run("env/"+tt.env, func(t *testing.T) {
				got, err := Load(nil, env(map[string]string{tt.env: tt.text}), io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("mismatch (-want +got):\n%s", diff)
				}
			})
		}
		if tt.key != "" {
			t.Run("yaml/"+tt.key, func(t *testing.T) {
				v := tt.yamlText
				if v == "" {
					v = tt.text
				}
				path := writeYAML(t, tt.key+": "+v+"\n")
				got, err := Load([]string{"-config", path}, env(nil), io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				want := want
				want.ConfigFile = path
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("mismatch (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string // YAML content; "" = no file
		env  map[string]string
		args []string
		want func(c *Config)
	}{
		{
			name: "file over default",
			file: "port: 5001\n",
			want: func(c *Config) { c.Port = 5001 },
		},
		{
			name: "env over file",
			file: "port: 5001\n",
			env:  map[string]string{"TESLA_HTTP_PROXY_PORT": "5002"},
			want: func(c *Config) { c.Port = 5002 },
		},
		{
			name: "flag over env and file",
			file: "port: 5001\n",
			env:  map[string]string{"TESLA_HTTP_PROXY_PORT": "5002"},
			args: []string{"-port", "5003"},
			want: func(c *Config) { c.Port = 5003 },
		},
		{
			name: "flag set to its default wins over env",
			env:  map[string]string{"TESLA_HTTP_PROXY_PORT": "5000"},
			args: []string{"-port", "4443"},
			want: func(c *Config) {},
		},
		{
			name: "env set to its default wins over file",
			file: "port: 5001\ntimeout: 1m\n",
			env:  map[string]string{"TESLA_HTTP_PROXY_PORT": "4443", "TESLA_HTTP_PROXY_TIMEOUT": "10s"},
			want: func(c *Config) {},
		},
		{
			name: "bool flag false wins over env true",
			env:  map[string]string{"TESLA_VERBOSE": "true", "TESLA_HTTP_PROXY_DEV": "true"},
			args: []string{"-verbose=false", "-dev=false"},
			want: func(c *Config) {},
		},
		{
			name: "empty flag value wins over env",
			env:  map[string]string{"TESLA_HTTP_PROXY_HOST": "0.0.0.0"},
			args: []string{"-host="},
			want: func(c *Config) { c.Host = "" },
		},
		{
			name: "empty env counts as unset",
			file: "port: 5001\nhost: 127.0.0.1\n",
			env:  map[string]string{"TESLA_HTTP_PROXY_PORT": "", "TESLA_HTTP_PROXY_HOST": ""},
			want: func(c *Config) { c.Port = 5001; c.Host = "127.0.0.1" },
		},
		{
			name: "null in file counts as absent",
			file: "port:\nhost: ~\n",
			want: func(c *Config) {},
		},
		{
			name: "list flag replaces env list; repeated flag appends",
			env:  map[string]string{"TESLA_HTTP_PROXY_ALLOW": "192.168.0.0/16"},
			args: []string{"-allow", "10.0.0.1,10.0.0.2", "-allow", "::1"},
			want: func(c *Config) { c.AllowNets = []string{"10.0.0.1", "10.0.0.2", "::1"} },
		},
		{
			name: "env list replaces file list",
			file: "allow: [192.168.0.0/16]\n",
			env:  map[string]string{"TESLA_HTTP_PROXY_ALLOW": "127.0.0.1"},
			want: func(c *Config) { c.AllowNets = []string{"127.0.0.1"} },
		},
		{
			name: "mixed sources each contribute",
			file: "key_file: file.pem\nport: 5001\nverbose: true\n",
			env:  map[string]string{"TESLA_HTTP_PROXY_TLS_CERT": "env-cert.pem", "TESLA_HTTP_PROXY_PORT": "5002"},
			args: []string{"-tls-key", "flag-key.pem"},
			want: func(c *Config) {
				c.KeyFile, c.CertFile, c.TLSKeyFile = "file.pem", "env-cert.pem", "flag-key.pem"
				c.Port, c.Verbose = 5002, true
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := Defaults()
			tt.want(&want)
			e := map[string]string{}
			for k, v := range tt.env {
				e[k] = v
			}
			if tt.file != "" {
				e["TESLA_HTTP_PROXY_CONFIG"] = writeYAML(t, tt.file)
				want.ConfigFile = e["TESLA_HTTP_PROXY_CONFIG"]
			}
			got, err := Load(tt.args, env(e), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("mismatch (-want +got):\n%s", diff)
			}
		})
	}

	t.Run("config flag wins over config env", func(t *testing.T) {
		t.Parallel()
		fromEnv := writeYAML(t, "port: 1111\n")
		fromFlag := writeYAML(t, "port: 2222\n")
		got, err := Load([]string{"-config", fromFlag}, env(map[string]string{"TESLA_HTTP_PROXY_CONFIG": fromEnv}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		want := Defaults()
		want.Port, want.ConfigFile = 2222, fromFlag
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("empty config flag disables config env", func(t *testing.T) {
		t.Parallel()
		got, err := Load([]string{"-config="}, env(map[string]string{"TESLA_HTTP_PROXY_CONFIG": "/nonexistent/proxy.yaml"}), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(Defaults(), got); diff != "" {
			t.Errorf("mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string // YAML content, passed with -config; "" = no file
		env  map[string]string
		args []string
		want []string // substrings of the error; "$FILE" stands for the file's path
		is   error    // if set, errors.Is(err, is) must hold
	}{
		{name: "unknown flag", args: []string{"-prot", "1"}, want: []string{"-prot", "-help"}},
		{name: "bad int flag", args: []string{"-port", "https"}, want: []string{"-port", `"https"`, "whole number"}},
		{name: "bare number duration flag", args: []string{"-timeout", "10"}, want: []string{"-timeout", "use a duration such as 10s"}},
		{name: "bad bool flag", args: []string{"-verbose=maybe"}, want: []string{"-verbose", "true or false"}},
		{name: "positional argument", args: []string{"-port", "1", "extra"}, want: []string{`"extra"`}},
		{name: "bad env int", env: map[string]string{"TESLA_HTTP_PROXY_PORT": "abc"}, want: []string{"TESLA_HTTP_PROXY_PORT", `"abc"`}},
		{name: "bare number duration env", env: map[string]string{"TESLA_HTTP_PROXY_TIMEOUT": "10"}, want: []string{"TESLA_HTTP_PROXY_TIMEOUT", "use a duration such as 10s"}},
		{name: "bad duration env", env: map[string]string{"TESLA_HTTP_PROXY_SHUTDOWN_TIMEOUT": "soon"}, want: []string{"TESLA_HTTP_PROXY_SHUTDOWN_TIMEOUT", "such as 10s"}},
		{name: "bad bool env", env: map[string]string{"TESLA_VERBOSE": "yes please"}, want: []string{"TESLA_VERBOSE", "true or false"}},
		{
			name: "every bad env reported",
			env:  map[string]string{"TESLA_HTTP_PROXY_PORT": "x", "TESLA_HTTP_PROXY_CACHE_SIZE": "y"},
			want: []string{"TESLA_HTTP_PROXY_PORT", "TESLA_HTTP_PROXY_CACHE_SIZE"},
		},
		{
			name: "missing config file",
			env:  map[string]string{"TESLA_HTTP_PROXY_CONFIG": "/nonexistent/dir/proxy.yaml"},
			want: []string{"/nonexistent/dir/proxy.yaml", "config file"},
			is:   fs.ErrNotExist,
		},
		{name: "unknown yaml key", file: "host: localhost\nprot: 4443\n", want: []string{"$FILE", "line 2", `"prot"`, `did you mean "port"`}},
		{name: "flag spelling as yaml key", file: "key-file: k.pem\n", want: []string{"$FILE", `did you mean "key_file"`}},
		{name: "far-off yaml key", file: "frobnicate: 1\n", want: []string{"$FILE", `"frobnicate"`, "example.yaml"}},
		{name: "flag-only key in yaml", file: "check_config: true\n", want: []string{"-check-config cannot be set in the config file"}},
		{name: "config key in yaml", file: "config: other.yaml\n", want: []string{"-config cannot be set in the config file"}},
		{name: "malformed yaml", file: "host: localhost\nport: [4443\n", want: []string{"$FILE", "malformed YAML", "line "}},
		{name: "bad indentation", file: "host: localhost\n  port: 1\n", want: []string{"$FILE", "line 2"}},
		{name: "yaml not a mapping", file: "- port\n- 4443\n", want: []string{"$FILE", "line 1", "mapping of settings"}},
		{name: "two yaml documents", file: "port: 1\n---\nport: 2\n", want: []string{"$FILE", "second YAML document"}},
		{name: "duplicate yaml key", file: "port: 1\nhost: x\nport: 2\n", want: []string{"line 3", "port is given twice (first on line 1)"}},
		{name: "yaml wrong type", file: "port: many\n", want: []string{"line 1", "port", "whole number"}},
		{name: "yaml bare number duration", file: "timeout: 10\n", want: []string{"line 1", "timeout", "use a duration such as 10s"}},
		{name: "yaml list for scalar", file: "host: [a, b]\n", want: []string{"host", "single value"}},
		{name: "yaml scalar for list", file: "allow: 10.0.0.0/8\n", want: []string{"allow", "must be a list"}},
		{name: "yaml map in list", file: "allow:\n  - {a: 1}\n", want: []string{"allow", "item 1"}},
		{
			name: "every yaml problem reported",
			file: "prot: 1\nport: x\ntimeout: 10\n",
			want: []string{"$FILE: line 1", "$FILE: line 2", "$FILE: line 3"},
		},
		{
			name: "file and env problems reported together",
			file: "prot: 1\n",
			env:  map[string]string{"TESLA_HTTP_PROXY_PORT": "x"},
			want: []string{"prot", "TESLA_HTTP_PROXY_PORT"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			path := ""
			if tt.file != "" {
				path = writeYAML(t, tt.file)
				args = append([]string{"-config", path}, args...)
			}
			got, err := Load(args, env(tt.env), io.Discard)
			if err == nil {
				t.Fatalf("Load succeeded with %+v; want an error", got)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "$FILE", path)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if diff := cmp.Diff(Config{}, got); diff != "" {
				t.Errorf("Load returned a partial Config with its error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			_, err := Load([]string{"-port", "1", arg}, env(nil), &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("Load(%s) error = %v, want flag.ErrHelp", arg, err)
			}
			usage := out.String()
			for _, s := range settings {
				if !strings.Contains(usage, "  -"+s.flag+" ") && !strings.Contains(usage, "  -"+s.flag+"\n") {
					t.Errorf("usage does not list -%s", s.flag)
				}
				if s.env != "" && !strings.Contains(usage, "env "+s.env) {
					t.Errorf("usage does not name %s", s.env)
				}
			}
			for _, want := range []string{"default 4443", `default "localhost"`, "default 10s", "default 15s", "default 1048576", "default 1000000", `default ".dev"`} {
				if !strings.Contains(usage, want) {
					t.Errorf("usage does not contain %q:\n%s", want, usage)
				}
			}
		})
	}
	t.Run("errors print nothing", func(t *testing.T) {
		t.Parallel()
		var out strings.Builder
		if _, err := Load([]string{"-nope"}, env(nil), &out); err == nil {
			t.Fatal("Load(-nope) succeeded")
		}
		if out.Len() != 0 {
			t.Errorf("Load wrote %q on a flag error; main reports errors once", out.String())
		}
	})
}

func TestFlagSet(t *testing.T) {
	t.Parallel()
	c := Config{Host: "keep", Port: 7}
	fs := FlagSet(&c)
	if diff := cmp.Diff(Config{Host: "keep", Port: 7}, c); diff != "" {
		t.Errorf("FlagSet changed dst (-want +got):\n%s", diff)
	}
	if err := fs.Parse([]string{"-verbose", "-timeout", "3s"}); err != nil {
		t.Fatal(err)
	}
	want := Config{Host: "keep", Port: 7, Verbose: true, Timeout: 3 * time.Second}
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("after Parse (-want +got):\n%s", diff)
	}
	if f := fs.Lookup("port"); f == nil || f.Value.String() != "7" {
		t.Errorf("Lookup(port) = %v, want a flag showing 7", f)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(c *Config)
		flags []string // flags named by the problems, sorted; nil = valid
		text  string   // if set, a substring of the error
	}{
		{name: "valid", edit: func(c *Config) {}},
		{name: "dev needs no files", edit: func(c *Config) { *c = Defaults(); c.Dev = true }},
		{name: "plaintext on localhost needs no TLS files", edit: func(c *Config) { c.Plaintext = true; c.CertFile, c.TLSKeyFile = "", "" }},
		{name: "plaintext on 127.0.0.2", edit: func(c *Config) { c.Plaintext, c.Host = true, "127.0.0.2"; c.CertFile, c.TLSKeyFile = "", "" }},
		{name: "plaintext on ::1", edit: func(c *Config) { c.Plaintext, c.Host = true, "::1"; c.CertFile, c.TLSKeyFile = "", "" }},
		{name: "plaintext on unix socket", edit: func(c *Config) { c.Plaintext, c.Host = true, "unix:/run/proxy.sock"; c.CertFile, c.TLSKeyFile = "", "" }},
		{name: "port 0", edit: func(c *Config) { c.Port = 0 }},
		{name: "port 65535", edit: func(c *Config) { c.Port = 65535 }},
		{name: "every interface", edit: func(c *Config) { c.Host = "" }},
		{name: "https upstream with slash", edit: func(c *Config) { c.Upstream = "https://fleet-api.prd.eu.vn.cloud.tesla.com/" }},
		{name: "http upstream on localhost", edit: func(c *Config) { c.Upstream = "http://localhost:8080" }},
		{name: "http upstream on 127.0.0.1", edit: func(c *Config) { c.Upstream = "http://127.0.0.1:9/" }},
		{name: "http upstream on ::1", edit: func(c *Config) { c.Upstream = "http://[::1]:9" }},
		{name: "allow list", edit: func(c *Config) { c.AllowNets = []string{"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"} }},
		{name: "metrics addr on loopback", edit: func(c *Config) { c.MetricsAddr = "127.0.0.1:9090" }},
		{name: "metrics addr on localhost with mtls", edit: func(c *Config) { c.MetricsAddr, c.ClientCA = "localhost:9090", "clients.pem" }},
		{name: "metrics addr on every interface with allow", edit: func(c *Config) { c.MetricsAddr, c.AllowNets = ":9090", []string{"10.0.0.0/8"} }},
		{name: "mtls", edit: func(c *Config) { c.ClientCA = "clients.pem" }},

		{name: "keyring key instead of key file", edit: func(c *Config) { c.KeyFile, c.KeyName = "", "fleet" }},
		{name: "keyring key in a file keyring", edit: func(c *Config) { c.KeyFile, c.KeyName, c.KeyringType = "", "fleet", "file" }},
		{name: "keyring key in the kernel keyring", edit: func(c *Config) { c.KeyFile, c.KeyName, c.KeyringType = "", "fleet", "keyctl" }},
		{name: "reference domains", edit: func(c *Config) { c.Domains = []string{"VCSEC", "infotainment"} }},
		{name: "no key file", edit: func(c *Config) { c.KeyFile = "" }, flags: []string{"key-file"}, text: "-dev"},
		{name: "no key file names -key-name", edit: func(c *Config) { c.KeyFile = "" }, flags: []string{"key-file"}, text: "-key-name"},
		{name: "key file and key name", edit: func(c *Config) { c.KeyName = "fleet" }, flags: []string{"key-name"}, text: "one place"},
		{name: "file keyring without directory", edit: func(c *Config) { c.KeyFile, c.KeyName, c.KeyringType, c.KeyringFileDir = "", "fleet", "file", "" }, flags: []string{"keyring-file-dir"}},
		{name: "unknown keyring type", edit: func(c *Config) { c.KeyFile, c.KeyName, c.KeyringType = "", "fleet", "vault" }, flags: []string{"keyring-type"}, text: `"vault"`},
		{name: "unknown domain", edit: func(c *Config) { c.Domains = []string{"VCSEC", "BODY"} }, flags: []string{"domain"}, text: `"BODY"`},
		{name: "no cert", edit: func(c *Config) { c.CertFile = "" }, flags: []string{"cert"}},
		{name: "no tls key", edit: func(c *Config) { c.TLSKeyFile = "" }, flags: []string{"tls-key"}},
		{name: "cert without tls key in dev", edit: func(c *Config) { c.Dev = true; c.TLSKeyFile = "" }, flags: []string{"tls-key"}},
		{
			name:  "tls key is the signing key",
			edit:  func(c *Config) { c.KeyFile, c.TLSKeyFile = "certs/key.pem", "./certs//key.pem" },
			flags: []string{"tls-key"}, text: "the TLS key must not be the command-signing key",
		},
		{name: "negative port", edit: func(c *Config) { c.Port = -1 }, flags: []string{"port"}, text: "negative"},
		{name: "port too high", edit: func(c *Config) { c.Port = 65536 }, flags: []string{"port"}},
		{name: "port in host", edit: func(c *Config) { c.Host = "localhost:4443" }, flags: []string{"host"}, text: "-port"},
		{name: "bracketed ipv6 host", edit: func(c *Config) { c.Host = "[::1]" }, flags: []string{"host"}},
		{name: "unix without path", edit: func(c *Config) { c.Host = "unix:" }, flags: []string{"host"}},
		{name: "zero timeout", edit: func(c *Config) { c.Timeout = 0 }, flags: []string{"timeout"}},
		{name: "negative shutdown timeout", edit: func(c *Config) { c.ShutdownTimeout = -time.Second }, flags: []string{"shutdown-timeout"}},
		{name: "negative wake timeout", edit: func(c *Config) { c.WakeTimeout = -time.Second }, flags: []string{"wake-timeout"}},
		{name: "negative read cache ttl", edit: func(c *Config) { c.CoalesceReads, c.ReadCacheTTL = true, -time.Second }, flags: []string{"read-cache-ttl"}},
		{name: "read cache without coalescing", edit: func(c *Config) { c.ReadCacheTTL = time.Second }, flags: []string{"read-cache-ttl"}},
		{name: "negative budget", edit: func(c *Config) { c.MonthlyBudget = -1 }, flags: []string{"monthly-budget"}},
		{name: "unknown budget mode", edit: func(c *Config) { c.BudgetMode = "strict" }, flags: []string{"budget-mode"}},
		{name: "zero max body", edit: func(c *Config) { c.MaxBodyBytes = 0 }, flags: []string{"max-body"}},
		{name: "negative max response", edit: func(c *Config) { c.MaxResponseBytes = -1 }, flags: []string{"max-response"}},
		{name: "zero cache size", edit: func(c *Config) { c.CacheSize = 0 }, flags: []string{"cache-size"}},
		{name: "negative http1 requests", edit: func(c *Config) { c.UpstreamHTTP1Requests = -1 }, flags: []string{"upstream-http1-requests"}},
		{name: "negative idle timeout", edit: func(c *Config) { c.IdleTimeout = -time.Second }, flags: []string{"idle-timeout"}},
		{name: "negative client max inflight", edit: func(c *Config) { c.ClientMaxInFlight = -1 }, flags: []string{"client-max-inflight"}},
		{name: "negative upstream max conns", edit: func(c *Config) { c.UpstreamMaxConns = -1 }, flags: []string{"upstream-max-conns"}},
		{name: "upstream not a URL", edit: func(c *Config) { c.Upstream = "https://[::1" }, flags: []string{"upstream"}, text: "not a URL"},
		{name: "upstream relative", edit: func(c *Config) { c.Upstream = "fleet-api.example.com" }, flags: []string{"upstream"}, text: "https://"},
		{name: "upstream ftp", edit: func(c *Config) { c.Upstream = "ftp://fleet.example" }, flags: []string{"upstream"}},
		{name: "upstream no host", edit: func(c *Config) { c.Upstream = "https:///api" }, flags: []string{"upstream"}, text: "no host"},
		{name: "upstream http remote", edit: func(c *Config) { c.Upstream = "http://fleet.example" }, flags: []string{"upstream"}, text: "bearer tokens"},
		{name: "upstream http localhost lookalike", edit: func(c *Config) { c.Upstream = "http://localhost.evil.example" }, flags: []string{"upstream"}},
		{name: "upstream path", edit: func(c *Config) { c.Upstream = "https://fleet.example/api/1" }, flags: []string{"upstream"}, text: "path"},
		{name: "upstream query", edit: func(c *Config) { c.Upstream = "https://fleet.example/?a=b" }, flags: []string{"upstream"}, text: "query"},
		{name: "upstream empty query", edit: func(c *Config) { c.Upstream = "https://fleet.example?" }, flags: []string{"upstream"}, text: "query"},
		{name: "upstream userinfo", edit: func(c *Config) { c.Upstream = "https://user:pw@fleet.example" }, flags: []string{"upstream"}, text: "user info"},
		{name: "upstream fragment", edit: func(c *Config) { c.Upstream = "https://fleet.example#x" }, flags: []string{"upstream"}},
		{name: "upstream bad port", edit: func(c *Config) { c.Upstream = "https://fleet.example:0" }, flags: []string{"upstream"}},
		{
			name:  "plaintext on every interface",
			edit:  func(c *Config) { c.Plaintext, c.Host = true, "0.0.0.0"; c.CertFile, c.TLSKeyFile = "", "" },
			flags: []string{"plaintext"}, text: "plain HTTP would expose bearer tokens on the network",
		},
		{name: "plaintext on empty host", edit: func(c *Config) { c.Plaintext, c.Host = true, ""; c.CertFile, c.TLSKeyFile = "", "" }, flags: []string{"plaintext"}},
		{name: "plaintext with cert", edit: func(c *Config) { c.Plaintext = true }, flags: []string{"plaintext"}},
		{name: "client ca with plaintext", edit: func(c *Config) { c.Plaintext, c.ClientCA = true, "ca.pem"; c.CertFile, c.TLSKeyFile = "", "" }, flags: []string{"client-ca"}, text: "requires TLS"},
		{name: "bad allow entries", edit: func(c *Config) { c.AllowNets = []string{"10.0.0.0/33", "ok", "::1"} }, flags: []string{"allow", "allow"}},
		{name: "metrics addr without port", edit: func(c *Config) { c.MetricsAddr = "9090" }, flags: []string{"metrics-addr"}},
		{name: "metrics addr bad port", edit: func(c *Config) { c.MetricsAddr = "localhost:http" }, flags: []string{"metrics-addr"}},
		{name: "metrics addr is main listener", edit: func(c *Config) { c.MetricsAddr = "localhost:4443" }, flags: []string{"metrics-addr"}},
		{name: "metrics addr on every interface", edit: func(c *Config) { c.MetricsAddr = ":9090" }, flags: []string{"metrics-addr"}, text: "every client"},
		{name: "metrics addr on 0.0.0.0", edit: func(c *Config) { c.MetricsAddr = "0.0.0.0:9090" }, flags: []string{"metrics-addr"}, text: "-allow"},
		{
			name: "metrics addr off loopback with mtls",
			edit: func(c *Config) {
				c.MetricsAddr, c.ClientCA, c.AllowNets = "10.1.2.3:9090", "clients.pem", []string{"10.0.0.0/8"}
			},
			flags: []string{"metrics-addr"}, text: "-client-ca cannot be enforced",
		},
		{name: "dev without dir", edit: func(c *Config) { c.Dev, c.DevDir = true, "" }, flags: []string{"dev-dir"}},
		{name: "session store not redis", edit: func(c *Config) { c.SessionStore = "http://u:pw@r:6379/0" }, flags: []string{"session-store"}},
		{name: "session store bad db", edit: func(c *Config) { c.SessionStore = "redis://r:6379/zero" }, flags: []string{"session-store"}},
		{name: "session cache overwrites key", edit: func(c *Config) { c.SessionCache = c.KeyFile }, flags: []string{"session-cache"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := valid()
			tt.edit(&c)
			err := c.Validate()
			if diff := cmp.Diff(tt.flags, flagsOf(settingErrors(t, err))); diff != "" {
				t.Errorf("flags named by Validate() = %v (-want +got):\n%s", err, diff)
			}
			if tt.text != "" && (err == nil || !strings.Contains(err.Error(), tt.text)) {
				t.Errorf("Validate() = %v, want it to contain %q", err, tt.text)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := Config{Port: -1, Upstream: "http://fleet.example/x", AllowNets: []string{"nope"}}
	err := c.Validate()
	ses := settingErrors(t, err)
	want := []string{
		"allow", "cache-size", "cert", "key-file", "max-body", "max-response", "port",
		"shutdown-timeout", "timeout", "tls-key", "upstream",
	}
	if len(ses) != len(want) {
		t.Errorf("Validate() reported %d problems, want %d:\n%v", len(ses), len(want), err)
	}
	if diff := cmp.Diff(want, flagsOf(ses)); diff != "" {
		t.Errorf("flags named (-want +got):\n%s", diff)
	}
	// One line per problem, so main can print them as they are.
	if lines := strings.Count(err.Error(), "\n") + 1; lines != len(want) {
		t.Errorf("error has %d lines, want %d:\n%v", lines, len(want), err)
	}
}

func TestExampleYAML(t *testing.T) {
	t.Parallel()
	got, err := Load([]string{"-config", "example.yaml"}, env(nil), io.Discard)
	if err != nil {
		t.Fatalf("loading example.yaml: %v", err)
	}
	want := Defaults()
	want.ConfigFile = "example.yaml"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("example.yaml does not give the defaults (-want +got):\n%s", diff)
	}
	got.KeyFile, got.CertFile, got.TLSKeyFile = "fleet-key.pem", "tls-cert.pem", "tls-key.pem"
	if err := got.Validate(); err != nil {
		t.Errorf("example.yaml with file paths filled does not validate: %v", err)
	}

	// Every setting the file can hold is shown in the example.
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if _, ok := doc[s.yaml]; s.yaml != "" && !ok {
			t.Errorf("example.yaml does not show %s", s.yaml)
		}
	}
}

func TestListenAddr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, host  string
		port        int
		addr, netwk string
	}{
		{"name", "localhost", 4443, "localhost:4443", "tcp"},
		{"ipv4", "127.0.0.1", 0, "127.0.0.1:0", "tcp"},
		{"ipv6", "::1", 8443, "[::1]:8443", "tcp"},
		{"every interface", "", 443, ":443", "tcp"},
		{"unix socket", "unix:/run/proxy.sock", 4443, "/run/proxy.sock", "unix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Host: tt.host, Port: tt.port}
			if got := c.ListenAddr(); got != tt.addr {
				t.Errorf("ListenAddr() = %q, want %q", got, tt.addr)
			}
			if got := c.ListenNetwork(); got != tt.netwk {
				t.Errorf("ListenNetwork() = %q, want %q", got, tt.netwk)
			}
		})
	}
}

func TestRuntime(t *testing.T) {
	t.Parallel()
	c := valid()
	c.Upstream = "https://fleet.example:8443/"
	c.AllowNets = []string{"10.1.2.3/8", "192.168.1.7", "::1"}
	got, err := c.Runtime()
	if err != nil {
		t.Fatal(err)
	}
	want := Runtime{
		Upstream: &url.URL{Scheme: "https", Host: "fleet.example:8443"},
		Allow: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"),
			netip.MustParsePrefix("192.168.1.7/32"),
			netip.MustParsePrefix("::1/128"),
		},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("Runtime() mismatch (-want +got):\n%s", diff)
	}

	if rt, err := valid().Runtime(); err != nil || rt.Upstream != nil || rt.Allow != nil {
		t.Errorf("Runtime() of a plain Config = %+v, %v; want zero, nil", rt, err)
	}
	c.Port = -1
	if _, err := c.Runtime(); err == nil {
		t.Error("Runtime() of an invalid Config succeeded")
	}
}

// TestSessionStoreErrorHidesPassword: the URL may carry the Redis password; a refusal names the
// flag and what is wrong, never the password.
func TestSessionStoreErrorHidesPassword(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"rediss://app:hunter2@redis:6379/x", "tcp://app:hunter2@redis:6379/0", "redis://app:hunter2@redis:99999/0"} {
		c := valid()
		c.SessionStore = u
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "session-store") || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("Validate() with %s = %v, want a problem naming -session-store without the password", u, err)
		}
	}
	c := valid()
	c.SessionStore = "rediss://app:hunter2@redis.internal:6380/2"
	if err := c.Validate(); err != nil {
		t.Errorf("a good rediss:// URL was refused: %v", err)
	}
}

// TestKeyringPassword: the keyring password comes from TESLA_KEYRING_PASSWORD only, and a
// Config holding it never prints it.
func TestKeyringPassword(t *testing.T) {
	t.Parallel()
	const pw = "correct horse battery staple"
	got, err := Load(nil, env(map[string]string{"TESLA_KEYRING_PASSWORD": pw}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.KeyringPassword) != pw {
		t.Errorf("KeyringPassword was not read from TESLA_KEYRING_PASSWORD")
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		if s := fmt.Sprintf(verb, got); strings.Contains(s, "horse") {
			t.Errorf("Sprintf(%s, cfg) shows the keyring password", verb)
		}
		if s := fmt.Sprintf(verb, got.KeyringPassword); strings.Contains(s, "horse") || !strings.Contains(s, "redacted") {
			t.Errorf("Sprintf(%s, password) = %q, want it redacted", verb, s)
		}
	}
	// No flag and no YAML key can set it.
	if _, err := Load([]string{"-keyring-password", "x"}, env(nil), io.Discard); err == nil {
		t.Errorf("-keyring-password was accepted; the password must come from the environment only")
	}
	var usage strings.Builder
	writeUsage(&usage)
	if strings.Contains(usage.String(), "keyring-password") {
		t.Errorf("usage lists a password flag")
	}
}
