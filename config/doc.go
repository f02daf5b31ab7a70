// Package config holds the proxy's settings as a plain value, and nothing else.
//
// A [Config] is built by [Load] from, in increasing precedence: [Defaults], the YAML file named
// by -config or TESLA_HTTP_PROXY_CONFIG, environment variables, and command-line flags. Flags,
// environment variables and defaults follow the reference tesla-http-proxy (see the
// command-line contract in the architecture notes), so the proxy is a drop-in replacement; the
// extensions (-dev, -plaintext, -client-ca, -allow, …) follow the same pattern. The file uses
// the same settings under snake_case keys; example.yaml lists them all with their defaults.
//
// Load only gathers values. [Config.Validate] then checks them, reporting every problem at
// once, each naming its flag and saying how to fix it; [Config.Runtime] returns the parsed
// forms (the upstream *url.URL, the allowed networks) of a valid Config.
//
// Boundaries: the package reads the one config file and nothing else. It does not open the
// key, certificate or CA files it names, check that they exist, or compare key contents (the
// caller, cmd/proxy, does that when it loads them); it keeps no package state and never reads
// the process environment itself (Load is handed a getenv function), so tests can run in
// parallel and repeatedly.
//
// Why no configuration library (koanf, ff; issue 16): their YAML providers decode into a plain
// map, which drops the line numbers that every file error here carries ("line 3: port is
// given twice (first on line 1)", "line 2: unknown setting \"prot\" (did you mean \"port\"?)"),
// and their type conversions have their own messages, where ours name the variable or flag
// and say how to fix the value. Keeping those would mean keeping the yaml.Node walk and the
// value parser beside the library; what it would replace (the loop that applies the
// environment, the one that copies the flags given) is a few lines. The one table, settings,
// ties each flag to its environment variable and YAML key: a new setting is one entry there.
package config
