package validate

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// manifest is the file under test: MANIFEST, or the sidecar example.
func manifest(t *testing.T) (string, []byte) {
	t.Helper()
	path := os.Getenv("MANIFEST")
	if path == "" {
		path = "../kubernetes/sidecar.yaml"
	}
	data, err := os.ReadFile(path) //nolint:gosec // G703: the manifest the person running the test names
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

// TestManifest decodes the manifest strictly into the Kubernetes API types and checks it.
func TestManifest(t *testing.T) {
	path, data := manifest(t)
	m, err := Decode(data)
	if err != nil {
		t.Fatalf("%s does not decode into the Kubernetes API types:\n%v", path, err)
	}
	if err := m.Check(); err != nil {
		t.Fatalf("%s:\n%v", path, strings.ReplaceAll(err.Error(), ", ", "\n"))
	}
	if len(m.Deployments) == 0 {
		t.Fatalf("%s holds no Deployment", path)
	}
	t.Logf("%s: %d Secret(s), %d Deployment(s), %d NetworkPolicy(ies): valid", path, len(m.Secrets), len(m.Deployments), len(m.NetworkPolicies))
}

// TestProxyContainer checks what the sidecar example promises about the proxy container, and
// runs "proxy ARGS -check-config" with the container's args and env when PROXY_BIN names a
// built proxy (scripts/check-deploy.sh sets it), so that the flags stay those the proxy knows.
func TestProxyContainer(t *testing.T) {
	path, data := manifest(t)
	m, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	c := m.Container("tesla-proxy")
	if c == nil {
		t.Fatalf("%s has no container named tesla-proxy", path)
	}
	for _, probe := range []struct {
		name string
		ok   bool
	}{
		{"readinessProbe", c.ReadinessProbe != nil},
		{"livenessProbe", c.LivenessProbe != nil},
	} {
		if !probe.ok {
			t.Errorf("tesla-proxy has no %s", probe.name)
		}
	}
	if p := c.ReadinessProbe; p != nil && p.HTTPGet != nil && (p.HTTPGet.Path != "/health" || p.HTTPGet.Scheme != "HTTPS") {
		t.Errorf("tesla-proxy readinessProbe: want GET /health over HTTPS, have %s %s", p.HTTPGet.Scheme, p.HTTPGet.Path)
	}
	if p := c.LivenessProbe; p != nil && p.HTTPGet != nil && (p.HTTPGet.Path != "/health" || p.HTTPGet.Scheme != "HTTPS") {
		t.Errorf("tesla-proxy livenessProbe: want GET /health over HTTPS, have %s %s", p.HTTPGet.Scheme, p.HTTPGet.Path)
	}

	bin := os.Getenv("PROXY_BIN")
	if bin == "" {
		t.Skip("PROXY_BIN not set: not running proxy -check-config on the container's flags")
	}
	if len(c.Command) > 0 {
		t.Fatalf("tesla-proxy sets command %q: the image's ENTRYPOINT is the proxy; give flags as args", c.Command)
	}
	// bin is the proxy built by scripts/check-deploy.sh; the args are the manifest's, under test.
	cmd := exec.Command(bin, append(append([]string{}, c.Args...), "-check-config")...) //nolint:gosec // G702: see above
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			continue
		}
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("proxy %s -check-config (env %v): %v\n%s", strings.Join(c.Args, " "), cmd.Env[1:], err, out)
	}
	t.Logf("proxy -check-config on the container's args and env: %s", strings.TrimSpace(string(out)))
}

// TestRejects proves that the checks catch the mistakes they are there for: each case breaks
// the sidecar example in one way and expects an error that mentions want.
func TestRejects(t *testing.T) {
	base, err := os.ReadFile("../kubernetes/sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(base); err != nil {
		t.Fatalf("the sidecar example itself does not decode: %v", err)
	}
	cases := []struct {
		name, old, new, want string
	}{
		{"unknown field", "          readinessProbe:\n", "          readinessProbes:\n", `unknown field "spec.template.spec.containers[1].readinessProbes"`},
		{"wrong case", "  replicas: 1\n", "  Replicas: 1\n", `unknown field "spec.Replicas"`},
		{"number for a string", `              value: "4443"`, "              value: 4443", "cannot unmarshal number"},
		{"bad quantity", "              memory: 32Mi", "              memory: 32 megs", "quantities must match"},
		{"bad base64", "  command-key.pem: UkVQTEFDRQ==", "  command-key.pem: not*base64", "illegal base64"},
		{"duplicate key", "      automountServiceAccountToken: false\n", "      automountServiceAccountToken: false\n      automountServiceAccountToken: true\n", `"automountServiceAccountToken" already set`},
		{"unknown kind", "kind: NetworkPolicy", "kind: NetworkPolicies", "unknown apiVersion"},
		{"missing volume", "            - name: sessions\n              mountPath", "            - name: session\n              mountPath", "volumeMounts[2].name: Not found"},
		{"selector mismatch", "    matchLabels:\n      app.kubernetes.io/name: fleet-app\n  template", "    matchLabels:\n      app.kubernetes.io/name: other\n  template", "does not match spec.selector"},
		{"missing secret key", "              - key: tls.key\n", "              - key: tls.pem\n", "items[1].key: Not found"},
		{"probe port name", "              port: https\n              scheme: HTTPS\n            periodSeconds: 10", "              port: htps\n              scheme: HTTPS\n            periodSeconds: 10", "readinessProbe.httpGet.port: Not found"},
		{"privilege escalation", "            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n            runAsNonRoot: true\n            capabilities:\n              drop: [\"ALL\"]\n            seccompProfile:\n              type: RuntimeDefault\n          resources:\n            requests:\n              cpu: 50m\n              memory: 32Mi", "            allowPrivilegeEscalation: true\n            readOnlyRootFilesystem: true\n            runAsNonRoot: true\n            capabilities:\n              drop: [\"ALL\"]\n            seccompProfile:\n              type: RuntimeDefault\n          resources:\n            requests:\n              cpu: 50m\n              memory: 32Mi", "allowPrivilegeEscalation: Invalid value: true"},
		{"key world-readable", "            secretName: tesla-proxy-command-key\n            defaultMode: 0400", "            secretName: tesla-proxy-command-key\n            defaultMode: 0444", "defaultMode 0400"},
		{"real key in example", "  command-key.pem: UkVQTEFDRQ==", "  command-key.pem: LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCg==", "holds a real private key"},
		{"root user", "        runAsUser: 65532\n", "        runAsUser: 0\n", "must not be 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Count(string(base), tc.old) != 1 {
				t.Fatalf("the case's text occurs %d times in sidecar.yaml, want once", strings.Count(string(base), tc.old))
			}
			data := []byte(strings.Replace(string(base), tc.old, tc.new, 1))
			m, err := Decode(data)
			if err == nil {
				err = m.Check()
			}
			if err == nil {
				t.Fatalf("accepted; want an error mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestOctalMode pins that defaultMode: 0400 is read as YAML 1.1 octal (256), as kubectl reads it.
func TestOctalMode(t *testing.T) {
	m, err := Decode([]byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers: []\n      volumes:\n      - name: k\n        secret: {secretName: s, defaultMode: 0400}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := *m.Deployments[0].Spec.Template.Spec.Volumes[0].Secret.DefaultMode; got != 0o400 {
		t.Fatalf("defaultMode 0400 decoded as %d, want %d", got, 0o400)
	}
}

// TestServiceChecks: a Service that selects no Deployment of the manifest, or targets a port its
// pods do not name, is refused.
func TestServiceChecks(t *testing.T) {
	base, err := os.ReadFile("../kubernetes/replicas.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"selector", "  selector:\n    app.kubernetes.io/name: tesla-proxy\n", "  selector:\n    app.kubernetes.io/name: tesla-prox\n", "spec.selector: Not found"},
		{"target port", "      port: 443\n      targetPort: https\n", "      port: 443\n      targetPort: http\n", "targetPort: Not found"},
		{"affinity", "  sessionAffinity: None\n", "  sessionAffinity: Sticky\n", "sessionAffinity: Unsupported value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Count(string(base), tc.old) != 1 {
				t.Fatalf("the case's text occurs %d times in replicas.yaml, want once", strings.Count(string(base), tc.old))
			}
			m, err := Decode([]byte(strings.Replace(string(base), tc.old, tc.new, 1)))
			if err == nil {
				err = m.Check()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
