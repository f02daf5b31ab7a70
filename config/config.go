package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the proxy's settings as a plain value. Each field names its flag, environment
// variable and YAML key. Config holds only what the user wrote: parsed forms are in [Runtime],
// and loaded material (keys, certificates) belongs to the caller.
type Config struct {
	// KeyFile is the command-signing private key, PEM (SEC1 or PKCS8), P-256.
	// Flag -key-file, env TESLA_KEY_FILE, YAML key_file. Empty means none was given, which
	// Validate accepts only in Dev mode.
	KeyFile string
	// KeyName is the name of the command-signing key in a system keyring, as tesla-keygen
	// -key-name NAME create stores it; the key is then read through vehicle-command's pkg/cli.
	// Flag -key-name, env TESLA_KEY_NAME, YAML key_name. Empty means the key comes from KeyFile.
	// Giving both is invalid.
	KeyName string
	// KeyringType is the keyring backend holding KeyName, one of the names 99designs/keyring
	// offers on this system (file, secret-service, keyctl, pass, kwallet, keychain, wincred).
	// Flag -keyring-type, env TESLA_KEYRING_TYPE, YAML keyring_type. Empty means the first
	// backend available, as tesla-http-proxy does.
	KeyringType string
	// KeyringFileDir is the directory of the file keyring ("~" is the home directory). Flag
	// -keyring-file-dir, env TESLA_KEYRING_PATH, YAML keyring_file_dir; default "~/.tesla_keys".
	// Unlike tesla-http-proxy, whose flag default shadows it, TESLA_KEYRING_PATH is honored.
	KeyringFileDir string
	// KeyringDebug reports whether the keyring library logs what it does. Flag -keyring-debug,
	// env TESLA_KEYRING_DEBUG, YAML keyring_debug. False means it is quiet.
	KeyringDebug bool
	// KeyringPassword unlocks a file keyring. Env TESLA_KEYRING_PASSWORD only (no flag, no YAML
	// key, so it appears in no process list or file), as tesla-http-proxy reads it. It is a
	// secret: never log or print it. Empty means the keyring asks on a terminal, if there is one.
	KeyringPassword Secret
	// CertFile is the TLS certificate chain, PEM.
	// Flag -cert, env TESLA_HTTP_PROXY_TLS_CERT, YAML cert. Empty means none was given, which
	// Validate accepts only in Dev or Plaintext mode.
	CertFile string
	// TLSKeyFile is the TLS private key, PEM. It must not be the command-signing key.
	// Flag -tls-key, env TESLA_HTTP_PROXY_TLS_KEY, YAML tls_key. Empty means none was given,
	// which Validate accepts only in Dev or Plaintext mode.
	TLSKeyFile string
	// Host is the listen address: a host name, an IP address, or "unix:" followed by the path
	// of a unix socket. Flag -host, env TESLA_HTTP_PROXY_HOST, YAML host; default "localhost".
	// Empty means every interface.
	Host string
	// Port is the TCP listen port, 0..65535. Flag -port, env TESLA_HTTP_PROXY_PORT, YAML port;
	// default 4443. Zero picks a free port. It is ignored for a unix socket.
	Port int
	// Timeout is the per-request upstream deadline. Flag -timeout, env
	// TESLA_HTTP_PROXY_TIMEOUT, YAML timeout; default 10s. Zero is invalid.
	Timeout time.Duration
	// Verbose reports whether debug logging is on. Flag -verbose, env TESLA_VERBOSE, YAML
	// verbose. False means info level.
	Verbose bool
	// ConfigFile is the YAML file the other settings were read from. Flag -config, env
	// TESLA_HTTP_PROXY_CONFIG; not settable in the file itself. Empty means no file.
	ConfigFile string
	// Upstream is a fixed Fleet API base URL used instead of the token's region, such as
	// "https://fleet-api.prd.eu.vn.cloud.tesla.com". It must be absolute, https (http only for
	// a loopback host), with no path other than "/", no query, fragment or user info.
	// Flag -upstream, env TESLA_HTTP_PROXY_UPSTREAM, YAML upstream. Empty means the region
	// is chosen from each request's token.
	Upstream string
	// UpstreamCA is an extra CA bundle (PEM) trusted for the upstream, in addition to the
	// system roots. Flag -upstream-ca, env TESLA_HTTP_PROXY_UPSTREAM_CA, YAML upstream_ca.
	// Empty means the system roots only.
	UpstreamCA string
	// UpstreamMaxConns bounds the connections the proxy opens to one Fleet API host, a
	// protection for its file descriptors: a request beyond it waits for a connection (counted
	// by the metric tesla_proxy_upstream_conn_waiting). Over HTTP/2 one connection carries many
	// requests at once, so the bound is rarely reached. Flag -upstream-max-conns, env
	// TESLA_HTTP_PROXY_UPSTREAM_MAX_CONNS, YAML upstream_max_conns. Zero means no bound.
	UpstreamMaxConns int
	// UpstreamMaxDials bounds the dials in progress to one Fleet API host over HTTP/2, so that a
	// burst before a connection is up does not shake hands once per waiting request (a dial
	// held back is dropped once its request has a connection; the held ones are counted by the
	// metric tesla_proxy_upstream_dials_held). Flag -upstream-max-dials, env
	// TESLA_HTTP_PROXY_UPSTREAM_MAX_DIALS, YAML upstream_max_dials. Zero means no bound.
	UpstreamMaxDials int
	// UpstreamHTTP2 reports whether to speak HTTP/2 for every request to a Fleet API host that
	// offers it in ALPN, as the reference does. Flag -upstream-http2, env
	// TESLA_HTTP_PROXY_UPSTREAM_HTTP2, YAML upstream_http2. False (the default) speaks HTTP/1.1 up
	// to UpstreamHTTP1Requests requests in flight and HTTP/2 beyond.
	UpstreamHTTP2 bool
	// UpstreamHTTP1Requests is how many requests in flight to one Fleet API host go over
	// HTTP/1.1 keep-alive connections (one each, the cheapest per request); the ones beyond go as
	// HTTP/2 streams where the host offers h2 (the cheapest per request in flight). Flag
	// -upstream-http1-requests, env TESLA_HTTP_PROXY_UPSTREAM_HTTP1_REQUESTS, YAML
	// upstream_http1_requests. Zero means HTTP/1.1 for all; -upstream-http2 means HTTP/2 for all.
	UpstreamHTTP1Requests int
	// IdleTimeout cuts a pass-through transfer off when its body stands still this long, while
	// the client uploads or while the answer streams back, so a stalled client cannot hold an
	// upstream connection. Flag -idle-timeout, env TESLA_HTTP_PROXY_IDLE_TIMEOUT, YAML
	// idle_timeout. Default 15 s.
	IdleTimeout time.Duration
	// ClientMaxInFlight bounds the pass-through requests one token has waiting on the Fleet API
	// at once; beyond it the proxy answers 429 with Retry-After. Flag -client-max-inflight, env
	// TESLA_HTTP_PROXY_CLIENT_MAX_INFLIGHT, YAML client_max_inflight. Zero means half of
	// -upstream-max-conns when that is set (one client may take at most half of the bounded
	// pool), and no bound otherwise (the pool then grows, so no client waits for another).
	ClientMaxInFlight int

	// CheckConfig reports whether to validate the settings and exit. Flag -check-config only.
	// False means run the proxy.
	CheckConfig bool
	// Dev reports whether to run locally against the built-in Fleet API simulator, in which
	// case the key and certificate files are optional. Flag -dev, env TESLA_HTTP_PROXY_DEV,
	// YAML dev. False means production.
	Dev bool
	// DevDir is the directory that holds the state of Dev mode (generated keys, certificates,
	// sessions). Flag -dev-dir, env TESLA_HTTP_PROXY_DEV_DIR, YAML dev_dir; default ".dev".
	// Empty is invalid in Dev mode and unused otherwise.
	DevDir string
	// MaxBodyBytes bounds the request bodies the proxy reads itself (commands, telemetry
	// configs); pass-through bodies are streamed and not bounded by it. Flag -max-body, env
	// TESLA_HTTP_PROXY_MAX_BODY, YAML max_body; default 1 MiB. Zero is invalid.
	MaxBodyBytes int64
	// MaxResponseBytes bounds the upstream answers the proxy reads itself (signed_command
	// replies); pass-through answers are streamed. Flag -max-response, env
	// TESLA_HTTP_PROXY_MAX_RESPONSE, YAML max_response; default 1 MiB. Zero is invalid.
	MaxResponseBytes int64
	// SessionCache is a file that keeps vehicle sessions across restarts. Flag
	// -session-cache, env TESLA_HTTP_PROXY_SESSION_CACHE, YAML session_cache. Empty means
	// sessions are kept in memory only.
	SessionCache string
	// DisableSessionCache reports whether sessions are kept in memory only, whatever
	// SessionCache says. Flag -disable-session-cache, env
	// TESLA_HTTP_PROXY_DISABLE_SESSION_CACHE, YAML disable_session_cache. False means
	// SessionCache is used.
	DisableSessionCache bool
	// Domains are the vehicle domains (VCSEC, INFOTAINMENT) tesla-http-proxy's -domain flag
	// names. That flag is registered by the reference but never used; the proxy chooses the
	// domain per command, so Domains is checked and otherwise ignored. Flag -domain (may be
	// repeated) only. Nil means none was given.
	Domains []string
	// SessionStore is a Redis (or Valkey) that replicas share their vehicle sessions and
	// per-vehicle leases through: redis://[user:password@]host:port/db, or rediss:// for TLS.
	// Flag -session-store, env TESLA_HTTP_PROXY_SESSION_STORE, YAML session_store. Empty means
	// this proxy alone signs for its vehicles (the embedded store).
	SessionStore string
	// CacheSize is the largest number of vehicles whose sessions are kept, at least 1. Flag
	// -cache-size, env TESLA_HTTP_PROXY_CACHE_SIZE, YAML cache_size; default 1,000,000. Zero is
	// invalid.
	CacheSize int
	// ClientCA is a CA bundle (PEM); when set, every client must present a certificate signed
	// by it (mutual TLS). Flag -client-ca, env TESLA_HTTP_PROXY_CLIENT_CA, YAML client_ca.
	// Empty means clients are not asked for certificates.
	ClientCA string
	// AllowNets lists the client addresses allowed to connect, each a CIDR ("10.0.0.0/8") or
	// a single IP. Flag -allow (comma-separated, may be repeated), env TESLA_HTTP_PROXY_ALLOW
	// (comma-separated), YAML allow (a list). Nil or empty means every client is allowed.
	AllowNets []string
	// Plaintext reports whether to serve plain HTTP instead of TLS, which Validate allows
	// only on a loopback host or a unix socket. Flag -plaintext, env
	// TESLA_HTTP_PROXY_PLAINTEXT, YAML plaintext. False means TLS.
	Plaintext bool
	// MetricsAddr is a separate host:port for the /metrics endpoint. Flag -metrics-addr, env
	// TESLA_HTTP_PROXY_METRICS_ADDR, YAML metrics_addr. Empty means /metrics is served on the
	// main listener. The listener is plain HTTP and obeys -allow; Validate refuses an address
	// off loopback unless -allow is set and -client-ca is not.
	MetricsAddr string
	// ShutdownTimeout is how long in-flight requests may take to finish once shutdown starts.
	// Flag -shutdown-timeout, env TESLA_HTTP_PROXY_SHUTDOWN_TIMEOUT, YAML shutdown_timeout;
	// default 15s. Zero is invalid.
	ShutdownTimeout time.Duration

	// AutoWake reports whether a command that finds its car asleep wakes it (one wake_up, then
	// polls of the free vehicle list) and is sent again once it is online. Flag -auto-wake, env
	// TESLA_HTTP_PROXY_AUTO_WAKE, YAML auto_wake. False relays the Fleet API's 408.
	AutoWake bool
	// WakeTimeout is how long -auto-wake waits for a car to come online. Flag -wake-timeout, env
	// TESLA_HTTP_PROXY_WAKE_TIMEOUT, YAML wake_timeout; default 30s. Zero means the default;
	// negative is invalid.
	WakeTimeout time.Duration
	// CoalesceReads reports whether identical concurrent GETs (same path, query and
	// Authorization) share one upstream call. Flag -coalesce-reads, env
	// TESLA_HTTP_PROXY_COALESCE_READS, YAML coalesce_reads. False sends each one.
	CoalesceReads bool
	// ReadCacheTTL is how long, with CoalesceReads, a read's answer is reused for the same
	// request and token. Flag -read-cache-ttl, env TESLA_HTTP_PROXY_READ_CACHE_TTL, YAML
	// read_cache_ttl. Zero caches nothing; negative is invalid.
	ReadCacheTTL time.Duration
	// MonthlyBudget is the estimated Fleet API spend allowed per calendar month (UTC), in US
	// dollars: a warning at 80 %, billed calls refused at 100 % (see BudgetMode). Flag
	// -monthly-budget, env TESLA_HTTP_PROXY_MONTHLY_BUDGET, YAML monthly_budget. Zero means no
	// budget; negative is invalid.
	MonthlyBudget float64
	// BudgetMode is "enforce" (refuse billed calls once MonthlyBudget is spent) or "warn" (only
	// log and count). Flag -budget-mode, env TESLA_HTTP_PROXY_BUDGET_MODE, YAML budget_mode;
	// default "enforce". Empty means "enforce".
	BudgetMode string
}

// The defaults, as the architecture's command-line contract fixes them for the settings the
// reference tesla-http-proxy has. Defaults, the usage text and the messages of Validate use
// them; a test keeps example.yaml in step.
const (
	defaultHost            = "localhost"
	defaultPort            = 4443
	defaultTimeout         = 10 * time.Second
	defaultDevDir          = ".dev"
	defaultMaxBodyBytes    = 1 << 20 // 1 MiB: a command or telemetry config is a few KiB
	defaultMaxResponse     = 1 << 20 // 1 MiB: a signed_command reply is well under 1 KiB
	defaultCacheSize       = 1_000_000
	defaultShutdownTimeout = 15 * time.Second
	defaultIdleTimeout     = 15 * time.Second
	// defaultUpstreamHTTP1Requests is forward.DefaultHTTP1Requests (not imported: config stays
	// free of the proxy's packages).
	defaultUpstreamHTTP1Requests = 256
	// defaultUpstreamMaxDials is forward.DefaultMaxDialsPerHost.
	defaultUpstreamMaxDials = 4
	defaultKeyringFileDir   = "~/.tesla_keys" // vehicle-command pkg/cli's keyringDirectory
	defaultWakeTimeout      = 30 * time.Second
	defaultBudgetMode       = "enforce"
)

// EnvKeyringPassword is the environment variable that holds the file keyring's password, read
// by [Load] into KeyringPassword. It is not in the settings table: a password has no flag.
const EnvKeyringPassword = "TESLA_KEYRING_PASSWORD" //nolint:gosec // G101: the name of a variable, not a password

// Secret is a setting that must never be printed: formatted with %v, %s, %q or %#v it shows
// "[redacted]" (or "" when empty). Convert it to string to use it.
type Secret string

// String returns "[redacted]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString is String, for %#v.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// IgnoredReferenceEnv lists the environment variables tesla-http-proxy v0.4.1 reads that this
// proxy deliberately ignores, with the reason; README's reference table repeats it.
var IgnoredReferenceEnv = map[string]string{
	"TESLA_CACHE_FILE": "the reference only loads this vehicle-command session cache and never uses it; sessions persist with -session-cache (TESLA_HTTP_PROXY_SESSION_CACHE)",
}

// keyringBackends are the backends of github.com/99designs/keyring v1.2.2, the names
// tesla-http-proxy's -keyring-type takes. Which of them work depends on the system; the proxy
// checks that when it opens the keyring.
var keyringBackends = []string{"file", "secret-service", "keyctl", "pass", "kwallet", "keychain", "wincred"}

// referenceDomains are the names tesla-http-proxy's -domain accepts (case-insensitive).
var referenceDomains = []string{"VCSEC", "INFOTAINMENT"}

// unixPrefix marks a Host that is a unix socket path rather than a TCP host.
const unixPrefix = "unix:"

// Defaults returns a Config holding every default and nothing else.
func Defaults() Config {
	return Config{
		Host:             defaultHost,
		Port:             defaultPort,
		Timeout:          defaultTimeout,
		DevDir:           defaultDevDir,
		MaxBodyBytes:     defaultMaxBodyBytes,
		MaxResponseBytes: defaultMaxResponse,
		CacheSize:        defaultCacheSize,
		ShutdownTimeout:  defaultShutdownTimeout,
		IdleTimeout:      defaultIdleTimeout,

		UpstreamHTTP1Requests: defaultUpstreamHTTP1Requests,
		UpstreamMaxDials:      defaultUpstreamMaxDials,
		KeyringFileDir:        defaultKeyringFileDir,
		WakeTimeout:           defaultWakeTimeout,
		BudgetMode:            defaultBudgetMode,
	}
}

// setting describes one setting: where it comes from and which Config field it fills. The
// table below is the only place that ties a flag, an environment variable and a YAML key to a
// field, so the three sources cannot drift apart.
type setting struct {
	flag  string // flag name without the dash
	env   string // environment variable; "" = none
	yaml  string // YAML key; "" = not settable in the file
	arg   string // argument name in the usage text; "" for booleans
	usage string
	// field returns a pointer to the setting's field in c: *string, *bool, *int, *int64,
	// *time.Duration or *[]string.
	field func(c *Config) any
}

// settings lists every setting in the order the usage text shows them: the reference
// tesla-http-proxy's first, then our extensions. It is never modified.
var settings = []setting{
	{"key-file", "TESLA_KEY_FILE", "key_file", "path",
		"command-signing private key, PEM (SEC1 or PKCS8), P-256; required unless -key-name or -dev",
		func(c *Config) any { return &c.KeyFile }},
	{"key-name", "TESLA_KEY_NAME", "key_name", "name",
		"name of the command-signing key in a system keyring (as tesla-keygen -key-name makes it); instead of -key-file",
		func(c *Config) any { return &c.KeyName }},
	{"keyring-type", "TESLA_KEYRING_TYPE", "keyring_type", "type",
		"keyring backend for -key-name: file, secret-service, keyctl, pass, kwallet, keychain or wincred; empty picks the first available (file needs TESLA_KEYRING_PASSWORD)",
		func(c *Config) any { return &c.KeyringType }},
	{"keyring-file-dir", "TESLA_KEYRING_PATH", "keyring_file_dir", "path",
		"directory of the file keyring",
		func(c *Config) any { return &c.KeyringFileDir }},
	{"keyring-debug", "TESLA_KEYRING_DEBUG", "keyring_debug", "",
		"keyring library debug logging",
		func(c *Config) any { return &c.KeyringDebug }},
	{"cert", "TESLA_HTTP_PROXY_TLS_CERT", "cert", "path",
		"TLS certificate chain, PEM; required unless -dev or -plaintext",
		func(c *Config) any { return &c.CertFile }},
	{"tls-key", "TESLA_HTTP_PROXY_TLS_KEY", "tls_key", "path",
		"TLS private key, PEM; must not be the command-signing key; required unless -dev or -plaintext",
		func(c *Config) any { return &c.TLSKeyFile }},
	{"host", "TESLA_HTTP_PROXY_HOST", "host", "host",
		"listen address: a host name or IP, or unix:PATH for a unix socket; empty listens on every interface",
		func(c *Config) any { return &c.Host }},
	{"port", "TESLA_HTTP_PROXY_PORT", "port", "int",
		"listen port; 0 picks a free one",
		func(c *Config) any { return &c.Port }},
	{"timeout", "TESLA_HTTP_PROXY_TIMEOUT", "timeout", "duration",
		"per-request upstream deadline, such as 10s",
		func(c *Config) any { return &c.Timeout }},
	{"verbose", "TESLA_VERBOSE", "verbose", "",
		"debug logging",
		func(c *Config) any { return &c.Verbose }},
	{"config", "TESLA_HTTP_PROXY_CONFIG", "", "path",
		"YAML file with the same settings (keys as shown by yaml below)",
		func(c *Config) any { return &c.ConfigFile }},
	{"upstream", "TESLA_HTTP_PROXY_UPSTREAM", "upstream", "url",
		"fixed Fleet API base URL instead of the token's region (http:// only for loopback)",
		func(c *Config) any { return &c.Upstream }},
	{"upstream-ca", "TESLA_HTTP_PROXY_UPSTREAM_CA", "upstream_ca", "path",
		"extra CA bundle (PEM) trusted for the upstream",
		func(c *Config) any { return &c.UpstreamCA }},
	{"upstream-max-conns", "TESLA_HTTP_PROXY_UPSTREAM_MAX_CONNS", "upstream_max_conns", "int",
		"most connections to one Fleet API host (requests beyond it wait); 0 means no bound",
		func(c *Config) any { return &c.UpstreamMaxConns }},
	{"upstream-max-dials", "TESLA_HTTP_PROXY_UPSTREAM_MAX_DIALS", "upstream_max_dials", "int",
		"most dials in progress to one Fleet API host over HTTP/2 (the others wait, and are dropped once their request has a connection); 0 means no bound",
		func(c *Config) any { return &c.UpstreamMaxDials }},
	{"upstream-http2", "TESLA_HTTP_PROXY_UPSTREAM_HTTP2", "upstream_http2", "",
		"speak HTTP/2 for every request to a Fleet API host that offers it (default: HTTP/1.1 up to -upstream-http1-requests)",
		func(c *Config) any { return &c.UpstreamHTTP2 }},
	{"upstream-http1-requests", "TESLA_HTTP_PROXY_UPSTREAM_HTTP1_REQUESTS", "upstream_http1_requests", "int",
		"requests in flight to one Fleet API host sent over HTTP/1.1; beyond it, HTTP/2 streams where offered; 0 means HTTP/1.1 for all",
		func(c *Config) any { return &c.UpstreamHTTP1Requests }},
	{"idle-timeout", "TESLA_HTTP_PROXY_IDLE_TIMEOUT", "idle_timeout", "duration",
		"cut a pass-through transfer off when its body stands still this long (upload or answer)",
		func(c *Config) any { return &c.IdleTimeout }},
	{"client-max-inflight", "TESLA_HTTP_PROXY_CLIENT_MAX_INFLIGHT", "client_max_inflight", "int",
		"most pass-through requests one token may have in flight (429 beyond); 0 means half of -upstream-max-conns when set, else no bound",
		func(c *Config) any { return &c.ClientMaxInFlight }},
	{"check-config", "", "", "",
		"validate the settings and exit",
		func(c *Config) any { return &c.CheckConfig }},
	{"dev", "TESLA_HTTP_PROXY_DEV", "dev", "",
		"run locally against the built-in Fleet API simulator; key and certificate files become optional",
		func(c *Config) any { return &c.Dev }},
	{"dev-dir", "TESLA_HTTP_PROXY_DEV_DIR", "dev_dir", "path",
		"directory for -dev state (generated keys, certificates, sessions)",
		func(c *Config) any { return &c.DevDir }},
	{"max-body", "TESLA_HTTP_PROXY_MAX_BODY", "max_body", "bytes",
		"largest request body the proxy reads itself (commands, telemetry configs)",
		func(c *Config) any { return &c.MaxBodyBytes }},
	{"max-response", "TESLA_HTTP_PROXY_MAX_RESPONSE", "max_response", "bytes",
		"largest upstream answer the proxy reads itself (signed_command replies)",
		func(c *Config) any { return &c.MaxResponseBytes }},
	{"session-cache", "TESLA_HTTP_PROXY_SESSION_CACHE", "session_cache", "path",
		"file that keeps vehicle sessions across restarts; empty keeps them in memory only",
		func(c *Config) any { return &c.SessionCache }},
	{"disable-session-cache", "TESLA_HTTP_PROXY_DISABLE_SESSION_CACHE", "disable_session_cache", "",
		"keep vehicle sessions in memory only, ignoring -session-cache",
		func(c *Config) any { return &c.DisableSessionCache }},
	{"domain", "", "", "name",
		"accepted for tesla-http-proxy compatibility (VCSEC or INFOTAINMENT, may be repeated) and ignored: the proxy chooses domains per command",
		func(c *Config) any { return &c.Domains }},
	{"session-store", "TESLA_HTTP_PROXY_SESSION_STORE", "session_store", "url",
		"redis://[user:password@]host:port/db (or rediss://) shared by replicas; empty keeps sessions in this process",
		func(c *Config) any { return &c.SessionStore }},
	{"cache-size", "TESLA_HTTP_PROXY_CACHE_SIZE", "cache_size", "int",
		"most vehicles whose sessions are kept",
		func(c *Config) any { return &c.CacheSize }},
	{"client-ca", "TESLA_HTTP_PROXY_CLIENT_CA", "client_ca", "path",
		"CA bundle (PEM); when set, clients must present a certificate it signed (mTLS)",
		func(c *Config) any { return &c.ClientCA }},
	{"allow", "TESLA_HTTP_PROXY_ALLOW", "allow", "list",
		"comma-separated client CIDRs or IPs allowed to connect (flag may be repeated); empty allows all",
		func(c *Config) any { return &c.AllowNets }},
	{"plaintext", "TESLA_HTTP_PROXY_PLAINTEXT", "plaintext", "",
		"serve plain HTTP; only on a loopback host or a unix: socket",
		func(c *Config) any { return &c.Plaintext }},
	{"metrics-addr", "TESLA_HTTP_PROXY_METRICS_ADDR", "metrics_addr", "host:port",
		"separate plain-HTTP listen address for /metrics, subject to -allow; off loopback it needs -allow and no -client-ca; empty serves it on the main listener",
		func(c *Config) any { return &c.MetricsAddr }},
	{"shutdown-timeout", "TESLA_HTTP_PROXY_SHUTDOWN_TIMEOUT", "shutdown_timeout", "duration",
		"how long in-flight requests may take to finish on shutdown",
		func(c *Config) any { return &c.ShutdownTimeout }},
	{"auto-wake", "TESLA_HTTP_PROXY_AUTO_WAKE", "auto_wake", "",
		"a command to a sleeping car wakes it once, polls the free vehicle list until it is online, then sends the command",
		func(c *Config) any { return &c.AutoWake }},
	{"wake-timeout", "TESLA_HTTP_PROXY_WAKE_TIMEOUT", "wake_timeout", "duration",
		"how long -auto-wake waits for a car to come online",
		func(c *Config) any { return &c.WakeTimeout }},
	{"coalesce-reads", "TESLA_HTTP_PROXY_COALESCE_READS", "coalesce_reads", "",
		"identical concurrent GETs (same path, query and Authorization) share one upstream call",
		func(c *Config) any { return &c.CoalesceReads }},
	{"read-cache-ttl", "TESLA_HTTP_PROXY_READ_CACHE_TTL", "read_cache_ttl", "duration",
		"with -coalesce-reads, how long an answer is reused for the same request and token; 0 caches nothing",
		func(c *Config) any { return &c.ReadCacheTTL }},
	{"monthly-budget", "TESLA_HTTP_PROXY_MONTHLY_BUDGET", "monthly_budget", "usd",
		"estimated Fleet API spend allowed per month in US dollars: warn at 80 %, refuse billed calls at 100 %; 0 means none",
		func(c *Config) any { return &c.MonthlyBudget }},
	{"budget-mode", "TESLA_HTTP_PROXY_BUDGET_MODE", "budget_mode", "mode",
		"enforce (refuse billed calls once -monthly-budget is spent) or warn (only log and count)",
		func(c *Config) any { return &c.BudgetMode }},
}

// parseValue parses s into the field p points to. Environment variables, flags and YAML
// scalars all go through it, so each accepts exactly the same spellings.
func parseValue(p any, s string) error {
	switch p := p.(type) {
	case *string:
		*p = s
	case *bool:
		v, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return errors.New("not a boolean; use true or false")
		}
		*p = v
	case *int:
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 0)
		if err != nil {
			return errors.New("not a whole number")
		}
		*p = int(v)
	case *int64:
		v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return errors.New("not a whole number of bytes")
		}
		*p = v
	case *float64:
		v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return errors.New("not a number; use an amount such as 25 or 12.50")
		}
		*p = v
	case *time.Duration:
		t := strings.TrimSpace(s)
		if _, err := strconv.ParseFloat(t, 64); err == nil {
			// The reference proxy parses TESLA_HTTP_PROXY_TIMEOUT with time.ParseDuration, which
			// refuses bare numbers too (except "0"); we say why instead of "missing unit", and
			// never guess between seconds and nanoseconds.
			return errors.New("a bare number has no unit; use a duration such as 10s")
		}
		v, err := time.ParseDuration(t)
		if err != nil {
			return errors.New("not a duration; use a duration such as 10s, 1m30s or 500ms")
		}
		*p = v
	case *[]string:
		*p = splitList(s)
	default:
		panic(fmt.Sprintf("config: setting of unsupported type %T", p))
	}
	return nil
}

// splitList splits a comma-separated list, trimming spaces and dropping empty items. It returns
// nil for a list with no items, so that "" and an absent setting compare equal.
func splitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// formatValue is the inverse of parseValue, for the usage text.
func formatValue(p any) string {
	switch p := p.(type) {
	case *string:
		return *p
	case *bool:
		return strconv.FormatBool(*p)
	case *int:
		return strconv.Itoa(*p)
	case *int64:
		return strconv.FormatInt(*p, 10)
	case *float64:
		return strconv.FormatFloat(*p, 'f', -1, 64)
	case *time.Duration:
		return p.String()
	case *[]string:
		return strings.Join(*p, ",")
	}
	return ""
}

// copyValue sets the field dst points to from the one src points to (both of one type).
func copyValue(dst, src any) {
	switch d := dst.(type) {
	case *string:
		*d = *src.(*string)
	case *bool:
		*d = *src.(*bool)
	case *int:
		*d = *src.(*int)
	case *int64:
		*d = *src.(*int64)
	case *float64:
		*d = *src.(*float64)
	case *time.Duration:
		*d = *src.(*time.Duration)
	case *[]string:
		*d = slices.Clone(*src.(*[]string))
	}
}

// flagValue is a flag.Value bound to one Config field.
type flagValue struct {
	p    any  // pointer to the field; nil only in the zero value flag.PrintDefaults makes
	seen bool // for lists: whether an earlier occurrence of the flag already set the list
}

// Set parses s into the field. A repeated list flag appends rather than replaces.
func (v *flagValue) Set(s string) error {
	if l, ok := v.p.(*[]string); ok && v.seen {
		*l = append(*l, splitList(s)...)
		return nil
	}
	v.seen = true
	return parseValue(v.p, s)
}

// String formats the field.
func (v *flagValue) String() string {
	if v == nil || v.p == nil {
		return ""
	}
	return formatValue(v.p)
}

// IsBoolFlag reports whether the flag is a boolean, so that "-verbose" needs no value.
func (v *flagValue) IsBoolFlag() bool {
	_, ok := v.p.(*bool)
	return ok
}

// FlagSet returns a new flag set (named "proxy", ContinueOnError) with every flag bound to its
// field in dst, and a usage text that lists each flag with its environment variable, YAML key
// and default. Registering does not change dst; Parse changes only the fields of the flags
// given. A list flag (-allow) given more than once appends. Load uses it; callers that only
// want the usage text can pass a throwaway Config.
func FlagSet(dst *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	for _, s := range settings {
		fs.Var(&flagValue{p: s.field(dst)}, s.flag, s.usage)
	}
	fs.Usage = func() { writeUsage(fs.Output()) }
	return fs
}

// writeUsage writes the usage text: every flag with its environment variable, YAML key and
// default.
func writeUsage(w io.Writer) {
	def := Defaults()
	var b strings.Builder
	b.WriteString("Usage: proxy [flags]\n\n" +
		"Tesla Fleet API command-signing proxy. Settings come from, in increasing precedence:\n" +
		"defaults, the YAML file named by -config, environment variables, flags.\n\nFlags:\n")
	for _, s := range settings {
		fmt.Fprintf(&b, "  -%s", s.flag)
		if s.arg != "" {
			fmt.Fprintf(&b, " %s", s.arg)
		}
		fmt.Fprintf(&b, "\n    \t%s\n    \t", s.usage)
		var where []string
		if s.env != "" {
			where = append(where, "env "+s.env)
		}
		if s.yaml != "" {
			where = append(where, "yaml "+s.yaml)
		}
		if len(where) == 0 {
			where = append(where, "flag only")
		}
		if d := formatValue(s.field(&def)); d != "" && d != "false" {
			if _, ok := s.field(&def).(*string); ok {
				d = strconv.Quote(d)
			}
			where = append(where, "default "+d)
		}
		b.WriteString(strings.Join(where, "; "))
		b.WriteString("\n")
	}
	_, _ = io.WriteString(w, b.String()) // usage output is best effort
}

// Load builds a Config from, in increasing precedence: [Defaults], the YAML file named by
// -config or TESLA_HTTP_PROXY_CONFIG, environment variables, command-line flags. Whether a flag
// was given is decided with flag.Visit, so a flag set to its default value still wins. Empty
// environment variables count as unset. Load does not validate: call [Config.Validate].
//
// getenv is os.Getenv in production; nil means an empty environment. args excludes the program
// name and must hold only flags: a positional argument is an error. A nil output discards the
// usage text. On -h or -help, Load writes the usage text to output and returns flag.ErrHelp. Other
// errors name the flag, environment variable, or file and line at fault; all problems in the
// file and the environment are reported together.
func Load(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if output == nil {
		output = io.Discard
	}
	var fromFlags Config
	fs := FlagSet(&fromFlags)
	// The flag package prints errors itself; main reports them once (style point 1), so
	// parse silently and print only the usage that -help asked for.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			writeUsage(output)
			return Config{}, err
		}
		return Config{}, &UsageError{Err: fmt.Errorf("%w (run with -help for the list of flags)", err)}
	}
	if fs.NArg() > 0 {
		return Config{}, &UsageError{Err: fmt.Errorf("unexpected argument %q: settings are given as flags such as -port 4443 (run with -help for the list)", fs.Arg(0))}
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	cfg := Defaults()
	path := getenv("TESLA_HTTP_PROXY_CONFIG")
	if given["config"] {
		path = fromFlags.ConfigFile
	}
	var errs []error
	if path != "" {
		if err := loadFile(&cfg, path); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, applyEnv(&cfg, getenv)...)
	cfg.KeyringPassword = Secret(getenv(EnvKeyringPassword))
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	for _, s := range settings {
		if given[s.flag] {
			copyValue(s.field(&cfg), s.field(&fromFlags))
		}
	}
	return cfg, nil
}

// UsageError is a Load error in the command line itself (an unknown flag, a flag value that does
// not parse, a stray argument), as opposed to a problem in the file or the environment.
type UsageError struct{ Err error }

// Error returns the underlying message.
func (e *UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *UsageError) Unwrap() error { return e.Err }

// applyEnv sets every field whose environment variable is non-empty and returns one error per
// variable it could not parse.
func applyEnv(cfg *Config, getenv func(string) string) []error {
	var errs []error
	for _, s := range settings {
		if s.env == "" {
			continue
		}
		v := getenv(s.env)
		if v == "" {
			continue
		}
		if err := parseValue(s.field(cfg), v); err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s=%q (for -%s): %w", s.env, v, s.flag, err))
		}
	}
	return errs
}

// loadFile reads the YAML file at path into cfg. Its errors name the file.
func loadFile(cfg *Config, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		// The *PathError already names the file; %w keeps errors.Is(err, fs.ErrNotExist).
		return fmt.Errorf("reading config file (-config): %w", err)
	}
	var errs []error
	for _, err := range decodeYAML(cfg, data) {
		errs = append(errs, fmt.Errorf("config file %s: %w", path, err))
	}
	return errors.Join(errs...)
}

// decodeYAML applies the settings in the YAML document data to cfg. It is strict: an unknown
// or repeated key, a value of the wrong shape, or a second document is an error. A key whose
// value is null (written "key:" with nothing after it) is treated as absent. An empty document
// changes nothing. It returns every problem, each with its line.
func decodeYAML(cfg *Config, data []byte) []error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty, or comments only
		}
		return []error{malformed(err)}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return []error{malformed(err)}
		}
		return []error{fmt.Errorf("line %d: a second YAML document; the file must hold one mapping of settings", next.Line)}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if isNull(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return []error{fmt.Errorf("line %d: the file must be a mapping of settings such as \"port: 4443\", not a %s", root.Line, kindName(root))}
	}

	byKey := map[string]*setting{}
	for i := range settings {
		if settings[i].yaml != "" {
			byKey[settings[i].yaml] = &settings[i]
		}
	}
	seen := map[string]int{} // key -> line
	var errs []error
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Errorf("line %d: a setting name must be a plain word, not a %s", k.Line, kindName(k)))
			continue
		}
		s, ok := byKey[k.Value]
		if !ok {
			errs = append(errs, fmt.Errorf("line %d: %s", k.Line, unknownKey(k.Value)))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			errs = append(errs, fmt.Errorf("line %d: %s is given twice (first on line %d)", k.Line, k.Value, first))
			continue
		}
		seen[k.Value] = k.Line
		if err := decodeValue(s.field(cfg), v); err != nil {
			errs = append(errs, fmt.Errorf("line %d: %s: %w", v.Line, k.Value, err))
		}
	}
	return errs
}

// malformed rewords a syntax error from the YAML parser. Its text ("yaml: line N: …") is all
// it carries: yaml.v3 exports no type or sentinel for syntax errors, so there is nothing to wrap.
func malformed(err error) error {
	return errors.New("malformed YAML: " + strings.TrimPrefix(err.Error(), "yaml: "))
}

// decodeValue sets the field p points to from the YAML node v.
func decodeValue(p any, v *yaml.Node) error {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if isNull(v) {
		return nil
	}
	if l, ok := p.(*[]string); ok {
		if v.Kind != yaml.SequenceNode {
			return fmt.Errorf("must be a list, such as [10.0.0.0/8, 192.168.1.7], not a %s", kindName(v))
		}
		var items []string
		for _, item := range v.Content {
			for item.Kind == yaml.AliasNode && item.Alias != nil {
				item = item.Alias
			}
			if item.Kind != yaml.ScalarNode || isNull(item) {
				return fmt.Errorf("item %d must be a CIDR or IP, not a %s", len(items)+1, kindName(item))
			}
			items = append(items, item.Value)
		}
		*l = items
		return nil
	}
	if v.Kind != yaml.ScalarNode {
		return fmt.Errorf("must be a single value, not a %s", kindName(v))
	}
	return parseValue(p, v.Value)
}

// isNull reports whether n is YAML null ("~", "null" or nothing).
func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// kindName names a node's kind for error messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "null"
		}
		return "single value"
	case yaml.AliasNode:
		return "alias"
	}
	return "document"
}

// unknownKey explains an unknown YAML key, suggesting the closest known one.
func unknownKey(key string) string {
	for _, s := range settings {
		if s.yaml == "" && (key == s.flag || key == strings.ReplaceAll(s.flag, "-", "_")) {
			return fmt.Sprintf("unknown setting %q: -%s cannot be set in the config file", key, s.flag)
		}
	}
	best, bestDist := "", 3 // suggest only names at most 2 edits away
	for _, s := range settings {
		if s.yaml == "" {
			continue
		}
		if d := editDistance(key, s.yaml); d < bestDist {
			best, bestDist = s.yaml, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown setting %q (did you mean %q?)", key, best)
	}
	return fmt.Sprintf("unknown setting %q (the settings are listed in config/example.yaml and by -help)", key)
}

// editDistance is the Levenshtein distance between a and b, counted in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64 // not worth comparing; also bounds the work on hostile input
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// SettingError is one problem with one setting, as reported by [Config.Validate].
type SettingError struct {
	// Flag is the setting's flag name without the dash, such as "port".
	Flag string
	// Msg says what is wrong and how to fix it.
	Msg string
	// Err is the underlying cause, if any (such as a *url.Error); nil means none.
	Err error
}

// Error returns "-flag: message".
func (e *SettingError) Error() string { return "-" + e.Flag + ": " + e.Msg }

// Unwrap returns the underlying cause, if any.
func (e *SettingError) Unwrap() error { return e.Err }

// Validate reports every problem with c at once, joined with errors.Join; each is a
// *[SettingError] naming the setting by its flag. It is pure: it reads no files (whether the
// files exist and hold the right keys is checked when they are loaded) and touches no globals.
// It returns nil for a valid Config.
func (c Config) Validate() error {
	var p problems
	c.checkKeys(&p)
	c.checkFiles(&p)
	c.checkListener(&p)
	if c.MetricsAddr != "" {
		c.checkMetricsAddr(&p)
	}
	if c.Upstream != "" {
		if _, err := parseUpstream(c.Upstream); err != nil {
			p = append(p, err)
		}
	}
	c.checkLimits(&p)
	c.checkSavings(&p)
	return errors.Join(p...)
}

// problems collects Validate's findings in the order they are found.
type problems []error

// bad records a *SettingError for flag.
func (p *problems) bad(flag, format string, args ...any) {
	*p = append(*p, &SettingError{Flag: flag, Msg: fmt.Sprintf(format, args...)})
}

// checkKeys checks where the command-signing key comes from: a file or a keyring, not both and
// not neither (except with -dev), and a keyring backend that exists. -domain is checked here
// too, as the reference proxy's key-related flag.
func (c Config) checkKeys(p *problems) {
	if c.KeyFile == "" && c.KeyName == "" && !c.Dev {
		p.bad("key-file", "is required: give the command-signing private key (PEM, P-256) with -key-file or TESLA_KEY_FILE, or its keyring name with -key-name or TESLA_KEY_NAME, or use -dev to run against the simulator")
	}
	if c.KeyFile != "" && c.KeyName != "" {
		p.bad("key-name", "is given together with -key-file (flags, TESLA_KEY_NAME, TESLA_KEY_FILE or the config file): the command-signing key comes from one place; remove one of them")
	}
	if c.KeyName != "" && c.KeyringType == "file" && c.KeyringFileDir == "" {
		p.bad("keyring-file-dir", "is empty: the file keyring needs a directory, such as %q (or set TESLA_KEYRING_PATH)", defaultKeyringFileDir)
	}
	if c.KeyringType != "" && !slices.Contains(keyringBackends, c.KeyringType) {
		p.bad("keyring-type", "%q is not a keyring backend; choose %s, or leave it empty for the first available", c.KeyringType, strings.Join(keyringBackends, ", "))
	}
	for _, d := range c.Domains {
		if !slices.ContainsFunc(referenceDomains, func(n string) bool { return strings.EqualFold(n, d) }) {
			p.bad("domain", "%q is not a domain; tesla-http-proxy accepts %s (and this proxy ignores it)", d, strings.Join(referenceDomains, " or "))
		}
	}
}

// checkFiles checks the TLS files (both or neither, never the command key, not with -plaintext),
// that the session file overwrites no other file, and the session store's URL.
func (c Config) checkFiles(p *problems) {
	needTLS := !c.Dev && !c.Plaintext
	if c.CertFile == "" && (needTLS || c.TLSKeyFile != "") {
		p.bad("cert", "is required: give the TLS certificate chain with -cert or TESLA_HTTP_PROXY_TLS_CERT (scripts/gen-certs.sh makes one), or use -plaintext on a loopback host")
	}
	if c.TLSKeyFile == "" && (needTLS || c.CertFile != "") {
		p.bad("tls-key", "is required: give the TLS private key with -tls-key or TESLA_HTTP_PROXY_TLS_KEY (scripts/gen-certs.sh makes one), or use -plaintext on a loopback host")
	}
	if c.KeyFile != "" && c.TLSKeyFile != "" && filepath.Clean(c.KeyFile) == filepath.Clean(c.TLSKeyFile) {
		p.bad("tls-key", "names the same file as -key-file: the TLS key must not be the command-signing key; generate a separate TLS key (scripts/gen-certs.sh)")
	}
	if c.Plaintext && (c.CertFile != "" || c.TLSKeyFile != "") {
		p.bad("plaintext", "is given together with -cert/-tls-key, which it would ignore; remove -plaintext to serve TLS, or remove -cert and -tls-key")
	}
	if c.SessionCache != "" {
		for _, f := range []struct{ flag, path string }{{"key-file", c.KeyFile}, {"cert", c.CertFile}, {"tls-key", c.TLSKeyFile}, {"client-ca", c.ClientCA}, {"upstream-ca", c.UpstreamCA}} {
			if f.path != "" && filepath.Clean(f.path) == filepath.Clean(c.SessionCache) {
				p.bad("session-cache", "names the same file as -%s, which saving sessions would overwrite; choose another file", f.flag)
			}
		}
	}

	if c.SessionStore != "" {
		if msg := checkSessionStore(c.SessionStore); msg != "" {
			p.bad("session-store", "%s", msg)
		}
	}
}

// checkListener checks the main listener: host, port, plain HTTP only on loopback, mTLS only
// over TLS, and the -allow list.
func (c Config) checkListener(p *problems) {
	if msg := checkHost(c.Host); msg != "" {
		p.bad("host", "%s", msg)
	}
	if c.Port < 0 {
		p.bad("port", "is %d, which is negative; give a port from 0 to 65535 (0 picks a free one)", c.Port)
	} else if c.Port > 65535 {
		p.bad("port", "is %d, above 65535; give a port from 0 to 65535 (0 picks a free one)", c.Port)
	}
	if c.Plaintext && !isLoopbackHost(c.Host) && !strings.HasPrefix(c.Host, unixPrefix) {
		host := strconv.Quote(c.Host)
		if c.Host == "" {
			host = "\"\" (every interface)"
		}
		p.bad("plaintext", "is not allowed on host %s: plain HTTP would expose bearer tokens on the network; use TLS (-cert and -tls-key), or bind to 127.0.0.1 or a unix: socket path with -host", host)
	}
	if c.ClientCA != "" && c.Plaintext {
		p.bad("client-ca", "requires TLS: client certificates can only be checked over TLS; remove -plaintext or -client-ca")
	}
	for _, n := range c.AllowNets {
		if _, err := parseNet(n); err != nil {
			p.bad("allow", "%q is neither a CIDR (such as 10.0.0.0/8) nor an IP address", n)
		}
	}
}

// checkMetricsAddr checks a non-empty -metrics-addr: a host:port that is not the main
// listener's, and off loopback only where -allow restricts it and no -client-ca is expected.
func (c Config) checkMetricsAddr(p *problems) {
	h, port, err := net.SplitHostPort(c.MetricsAddr)
	n, perr := strconv.Atoi(port)
	switch {
	case err != nil:
		p.bad("metrics-addr", "%q is not host:port (such as 127.0.0.1:9090, or :9090 for every interface)", c.MetricsAddr)
	case perr != nil || n < 0 || n > 65535:
		p.bad("metrics-addr", "%q has no valid port; give a number from 0 to 65535, such as 127.0.0.1:9090", c.MetricsAddr)
	case n != 0 && n == c.Port && h == c.Host:
		p.bad("metrics-addr", "%q is the main listener's address; leave -metrics-addr empty to serve /metrics there, or pick another port", c.MetricsAddr)
	case isLoopbackHost(h):
		// Only this machine reaches it; -allow applies to it all the same.
	case c.ClientCA != "":
		// The metrics listener is plain HTTP: it cannot ask for client certificates, so
		// off loopback it would serve clients the main listener refuses (issue 18).
		p.bad("metrics-addr", "%q is reachable from the network, but /metrics is served over plain HTTP, where -client-ca cannot be enforced; bind it to loopback (such as 127.0.0.1:9090), or leave -metrics-addr empty to serve /metrics on the main listener with mutual TLS", c.MetricsAddr)
	case len(c.AllowNets) == 0:
		p.bad("metrics-addr", "%q would serve /metrics to every client on the network; bind it to loopback (such as 127.0.0.1:9090), or restrict clients with -allow, which applies to this listener too", c.MetricsAddr)
	}
}

// checkLimits checks the durations, sizes and counts, each of which must be positive (or zero
// where zero means no bound), and -dev-dir when -dev is on.
func (c Config) checkLimits(p *problems) {
	if c.Timeout <= 0 {
		p.bad("timeout", "is %v; give a duration above zero, such as 10s", c.Timeout)
	}
	if c.ShutdownTimeout <= 0 {
		p.bad("shutdown-timeout", "is %v; give a duration above zero, such as 15s", c.ShutdownTimeout)
	}
	if c.MaxBodyBytes <= 0 {
		p.bad("max-body", "is %d; give a size in bytes above zero, such as %d (1 MiB)", c.MaxBodyBytes, defaultMaxBodyBytes)
	}
	if c.MaxResponseBytes <= 0 {
		p.bad("max-response", "is %d; give a size in bytes above zero, such as %d (1 MiB)", c.MaxResponseBytes, defaultMaxResponse)
	}
	if c.IdleTimeout < 0 {
		p.bad("idle-timeout", "is %v; give a duration above zero, such as 15s", c.IdleTimeout)
	}
	if c.UpstreamHTTP1Requests < 0 {
		p.bad("upstream-http1-requests", "is %d; give a number of requests, or 0 for HTTP/1.1 only", c.UpstreamHTTP1Requests)
	}
	if c.ClientMaxInFlight < 0 {
		p.bad("client-max-inflight", "is %d; give a number of requests, or 0 for the default", c.ClientMaxInFlight)
	}
	if c.UpstreamMaxDials < 0 {
		p.bad("upstream-max-dials", "is %d; give a number of dials, or 0 for no bound", c.UpstreamMaxDials)
	}
	if c.UpstreamMaxConns < 0 {
		p.bad("upstream-max-conns", "is %d; give a number of connections, or 0 for no bound", c.UpstreamMaxConns)
	}
	if c.CacheSize < 1 {
		p.bad("cache-size", "is %d; give a number of vehicles of at least 1, such as %d", c.CacheSize, defaultCacheSize)
	}
	if c.Dev && c.DevDir == "" {
		p.bad("dev-dir", "is empty; -dev needs a directory for its generated keys and certificates, such as %q", defaultDevDir)
	}
}

// checkSavings checks the settings of the options that spend fewer billed calls (issue 15).
func (c Config) checkSavings(p *problems) {
	if c.WakeTimeout < 0 {
		p.bad("wake-timeout", "is %v; give a duration above zero, such as %v", c.WakeTimeout, defaultWakeTimeout)
	}
	if c.ReadCacheTTL < 0 {
		p.bad("read-cache-ttl", "is %v; give a duration of zero (cache nothing) or more, such as 2s", c.ReadCacheTTL)
	}
	if c.ReadCacheTTL > 0 && !c.CoalesceReads {
		p.bad("read-cache-ttl", "is set without -coalesce-reads, which it belongs to; add -coalesce-reads or remove -read-cache-ttl")
	}
	if c.MonthlyBudget < 0 {
		p.bad("monthly-budget", "is %v; give an amount in US dollars above zero, such as 25, or 0 for no budget", c.MonthlyBudget)
	}
	if c.BudgetMode != "" && c.BudgetMode != "enforce" && c.BudgetMode != "warn" {
		p.bad("budget-mode", "is %q; give enforce (refuse billed calls once the budget is spent) or warn (only log)", c.BudgetMode)
	}
}

// checkSessionStore returns what is wrong with a -session-store URL, or "". The URL may hold a
// password, so the message never repeats it.
func checkSessionStore(s string) string {
	const want = "give redis://[user:password@]host:port/db, or rediss:// for TLS, such as redis://redis:6379/0"
	u, err := url.Parse(s)
	if err != nil {
		return "is not a URL; " + want
	}
	switch {
	case u.Scheme != "redis" && u.Scheme != "rediss":
		return fmt.Sprintf("has scheme %q; %s", u.Scheme, want)
	case u.Opaque != "" || u.Hostname() == "":
		return "has no host; " + want
	case u.RawQuery != "" || u.Fragment != "":
		return "must not have a query or fragment; " + want
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "has an invalid port; give a number from 1 to 65535"
		}
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if n, err := strconv.Atoi(db); err != nil || n < 0 {
			return fmt.Sprintf("has database %q, which is not a number; %s", db, want)
		}
	}
	return ""
}

// checkHost returns what is wrong with a listen host, or "".
func checkHost(h string) string {
	if path, ok := strings.CutPrefix(h, unixPrefix); ok {
		if path == "" {
			return `"unix:" needs a socket path, such as unix:/run/tesla-proxy.sock`
		}
		return ""
	}
	if strings.HasPrefix(h, "[") {
		return fmt.Sprintf("%q: write an IPv6 address without brackets, such as ::1", h)
	}
	if strings.Contains(h, ":") {
		if _, err := netip.ParseAddr(h); err != nil {
			return fmt.Sprintf("%q is not a host name or IP address; give the port with -port, not in -host", h)
		}
	}
	if strings.ContainsAny(h, "/ \t") {
		return fmt.Sprintf("%q is not a host name or IP address (for a unix socket, write unix:PATH)", h)
	}
	return ""
}

// isLoopbackHost reports whether h is "localhost" or a loopback IP (127.0.0.0/8, ::1).
func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

// parseNet parses a CIDR or a single IP (as a /32 or /128 prefix).
func parseNet(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// parseUpstream parses and checks an -upstream URL, returning it with an empty path.
func parseUpstream(s string) (*url.URL, error) {
	bad := func(format string, args ...any) error {
		return &SettingError{Flag: "upstream", Msg: fmt.Sprintf("%q ", s) + fmt.Sprintf(format, args...)}
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, &SettingError{Flag: "upstream", Msg: fmt.Sprintf("%q is not a URL; give a base URL such as https://fleet-api.prd.na.vn.cloud.tesla.com", s), Err: err}
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, bad("must start with https:// (or http:// for a loopback host), such as https://fleet-api.prd.na.vn.cloud.tesla.com")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, bad("has no host; give a base URL such as https://fleet-api.prd.na.vn.cloud.tesla.com")
	case u.User != nil:
		return nil, bad("must not contain user info; the proxy forwards each request's own bearer token")
	case u.Path != "" && u.Path != "/":
		return nil, bad("must not have a path; give only scheme and host (the proxy appends /api/1/…)")
	case u.RawQuery != "" || u.ForceQuery:
		return nil, bad("must not have a query")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return nil, bad("must not have a fragment")
	case u.Scheme == "http" && !isLoopbackHost(u.Hostname()):
		return nil, bad("uses http:// for a host that is not loopback, which would send bearer tokens in the clear; use https://, or http:// only for localhost, 127.0.0.0/8 or ::1")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, bad("has an invalid port; give a number from 1 to 65535")
		}
	}
	u.Path, u.RawPath = "", ""
	return u, nil
}

// ListenNetwork returns "unix" for a "unix:" Host and "tcp" otherwise, for net.Listen.
func (c Config) ListenNetwork() string {
	if strings.HasPrefix(c.Host, unixPrefix) {
		return "unix"
	}
	return "tcp"
}

// ListenAddr returns the address for net.Listen: net.JoinHostPort(Host, Port), or the socket
// path for a "unix:" Host.
func (c Config) ListenAddr() string {
	if path, ok := strings.CutPrefix(c.Host, unixPrefix); ok {
		return path
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
}

// Runtime holds the parsed forms of a valid Config's settings, so that no other package parses
// them again. Loaded material (keys, certificates) belongs to the caller, which reads the files.
type Runtime struct {
	// Upstream is the parsed -upstream with an empty path; nil means the region is chosen from
	// each request's token.
	Upstream *url.URL
	// Allow holds the parsed -allow entries, masked, single IPs as /32 or /128; nil means every
	// client is allowed.
	Allow []netip.Prefix
}

// Runtime validates c and returns the parsed forms of its settings. The error is Validate's.
func (c Config) Runtime() (Runtime, error) {
	if err := c.Validate(); err != nil {
		return Runtime{}, err
	}
	var rt Runtime
	if c.Upstream != "" {
		u, err := parseUpstream(c.Upstream)
		if err != nil {
			return Runtime{}, err // unreachable after Validate; kept for safety
		}
		rt.Upstream = u
	}
	for _, n := range c.AllowNets {
		p, err := parseNet(n)
		if err != nil {
			return Runtime{}, err // unreachable after Validate
		}
		rt.Allow = append(rt.Allow, p)
	}
	return rt, nil
}
