package validate

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
)

// buildCommand is the build step the image promises: the same "go build ./cmd/proxy" CI runs,
// plus the flags for a static binary.
const buildCommand = `CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/proxy ./cmd/proxy`

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df, warnings, err := ParseDockerfile(data)
	if err != nil {
		t.Fatalf("deploy/Dockerfile does not parse: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("deploy/Dockerfile: %s", w)
	}
	if len(df.Stages) != 2 {
		t.Fatalf("deploy/Dockerfile has %d stages, want 2 (build, runtime)", len(df.Stages))
	}
	if v, _ := df.MetaArg("GO_IMAGE"); !strings.HasPrefix(v, "golang:1.26") {
		t.Errorf("ARG GO_IMAGE defaults to %q, want golang:1.26 (go.mod's Go version)", v)
	}
	if v, _ := df.MetaArg("BASE_IMAGE"); v != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("ARG BASE_IMAGE defaults to %q, want the distroless static nonroot image", v)
	}

	// FROM ${X} needs X declared (with a default) before the first FROM.
	for _, st := range df.Stages {
		if name, ok := strings.CutPrefix(st.BaseName, "${"); ok {
			name = strings.TrimSuffix(name, "}")
			if _, ok := df.MetaArg(name); !ok {
				t.Errorf("FROM %s: ARG %s is not declared with a default before the first FROM", st.BaseName, name)
			}
		}
	}

	build, final := df.Stages[0], df.Stages[1]
	if build.BaseName != "${GO_IMAGE}" || build.Name != "build" {
		t.Errorf("first stage is FROM %s AS %s, want FROM ${GO_IMAGE} AS build", build.BaseName, build.Name)
	}
	var runs []string
	for _, c := range build.Commands {
		if r, ok := c.(*instructions.RunCommand); ok {
			runs = append(runs, strings.Join(r.CmdLine, " "))
		}
	}
	if !slices.Contains(runs, buildCommand) {
		t.Errorf("the build stage does not run %s; its RUN steps are %q", buildCommand, runs)
	}

	if final.BaseName != "${BASE_IMAGE}" {
		t.Errorf("final stage is FROM %s, want FROM ${BASE_IMAGE}", final.BaseName)
	}
	var user, entrypoint string
	var exposed []string
	var health *instructions.HealthCheckCommand
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.RunCommand:
			t.Errorf("final stage runs %q: the runtime image has no shell", c.CmdLine)
		case *instructions.UserCommand:
			user = c.User
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		case *instructions.HealthCheckCommand:
			health = c
		case *instructions.EntrypointCommand:
			if !c.PrependShell {
				entrypoint = strings.Join(c.CmdLine, " ")
			}
		case *instructions.CopyCommand:
			if c.From != "build" {
				t.Errorf("final stage copies from %q, want only from the build stage", c.From)
			}
		}
	}
	if user != "65532:65532" && user != "65532" {
		t.Errorf("final stage USER is %q, want 65532 (non-root)", user)
	}
	if !slices.Contains(exposed, "4443") {
		t.Errorf("final stage exposes %q, want 4443", exposed)
	}
	if entrypoint != "/usr/local/bin/proxy" {
		t.Errorf("ENTRYPOINT is %q, want exec form [\"/usr/local/bin/proxy\"]", entrypoint)
	}
	switch {
	case health == nil:
		t.Error("final stage has no HEALTHCHECK")
	case len(health.Health.Test) == 0 || health.Health.Test[0] != "CMD":
		t.Errorf("HEALTHCHECK is %q, want exec form (CMD [...]): the image has no shell", health.Health.Test)
	case !slices.Equal(health.Health.Test[1:], []string{"/usr/local/bin/proxy", "health"}):
		t.Errorf("HEALTHCHECK runs %q, want proxy health", health.Health.Test[1:])
	}
}

// TestDockerignore checks that the ignore file BuildKit reads for deploy/Dockerfile keeps key
// material and local state out of the build context.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile("../Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	for _, want := range []string{".git", "certs", ".dev", "**/*.pem", "**/*.key"} {
		if !slices.Contains(patterns, want) {
			t.Errorf("deploy/Dockerfile.dockerignore does not exclude %s", want)
		}
	}
}

// TestDockerfileLintCatches proves that the linter is live: a miscased AS and a miscased stage
// name are reported, and an unknown instruction is a parse error. (BuildKit runs its other
// rules, such as JSONArgsRecommended, while converting to LLB, a far larger dependency; the
// exec-form checks in TestDockerfile stand in for them.)
func TestDockerfileLintCatches(t *testing.T) {
	_, warnings, err := ParseDockerfile([]byte("FROM golang:1.26 as Build\nRUN true\nFROM scratch\nENTRYPOINT [\"/proxy\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(warnings, "\n")
	for _, rule := range []string{"FromAsCasing", "StageNameCasing"} {
		if !strings.Contains(all, rule) {
			t.Errorf("lint did not report %s; warnings:\n%s", rule, all)
		}
	}
	if _, _, err := ParseDockerfile([]byte("FROM scratch\nFROBNICATE x\n")); err == nil {
		t.Error("an unknown instruction parsed without error")
	}
}
