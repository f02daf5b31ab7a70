// Package validate checks the deployment files under deploy/ offline, with no cluster and no
// container engine:
//
//   - Kubernetes manifests: every document is decoded strictly into the Kubernetes API's own Go
//     types (k8s.io/api), the way the API server's strict field validation does (unknown or
//     miscased fields, duplicate keys and values of the wrong type are errors), then checked for
//     what decoding alone cannot see (references between objects, names, selectors) and for the
//     hardening the examples promise (non-root, read-only root, no privilege escalation, no
//     capabilities, RuntimeDefault seccomp, resources, probes, key files mode 0400).
//   - The Dockerfile: parsed and linted by BuildKit's own Dockerfile front end (the rules of
//     "docker build --check"), then checked for the build command, user, port and health check
//     the image promises.
//
// It is a module of its own so that the proxy's module does not depend on k8s.io/api or
// BuildKit. scripts/check-deploy.sh runs it ("go test ./..." here); MANIFEST=FILE checks
// another manifest, and PROXY_BIN=BINARY also runs "proxy -check-config" on the sidecar's flags.
package validate
