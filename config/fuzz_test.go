package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzLoadYAML checks that no config file makes the loader (or Validate, or ListenAddr on what
// it loaded) panic, and that every rejection says something.
func FuzzLoadYAML(f *testing.F) {
	example, err := os.ReadFile("example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	for _, s := range []string{
		"",
		"port: 1\n",
		"allow: [10.0.0.0/8, '::1']\n",
		"allow:\n  - *a\n",
		"a: &x 1\nport: *x\n",
		"<<: {port: 1}\n",
		"timeout: 10\n",
		"port: 1\nport: 2\n",
		"- 1\n",
		"port: 1\n---\nport: 2\n",
		"host: [a, b]\nallow: x\n",
		"? [a]\n: 1\n",
		"upstream: 'https://[::1'\n",
		"verbose: !!binary aGVsbG8=\n",
		"~\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Defaults()
		if errs := decodeYAML(&c, data); len(errs) > 0 {
			for _, err := range errs {
				if err == nil || strings.TrimSpace(err.Error()) == "" {
					t.Errorf("decodeYAML(%q) returned an empty error", data)
				}
			}
			return
		}
		_ = c.Validate()
		_ = c.ListenAddr()
		_, _ = c.Runtime()
	})
}
