package validate

import (
	"bytes"
	"fmt"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// Dockerfile is a parsed Dockerfile: its stages and the ARGs declared before the first FROM.
type Dockerfile struct {
	Stages   []instructions.Stage
	MetaArgs []instructions.ArgCommand
}

// ParseDockerfile parses data with BuildKit's Dockerfile front end and runs its linter, the
// checks "docker build --check" runs on the instructions. A syntax error is an error; every
// lint or parser warning is returned as one line each, with its line number and rule name.
func ParseDockerfile(data []byte) (*Dockerfile, []string, error) {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	var warnings []string
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil {
			line = w.Location.Start.Line
		}
		warnings = append(warnings, fmt.Sprintf("line %d: %s", line, w.Short))
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, url, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		warnings = append(warnings, fmt.Sprintf("line %d: %s: %s (%s)", line, rule, msg, url))
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		return nil, warnings, err
	}
	return &Dockerfile{Stages: stages, MetaArgs: metaArgs}, warnings, nil
}

// MetaArg returns the default value of the ARG named name declared before the first FROM.
func (d *Dockerfile) MetaArg(name string) (string, bool) {
	for _, a := range d.MetaArgs {
		for _, kv := range a.Args {
			if kv.Key == name && kv.Value != nil {
				return *kv.Value, true
			}
		}
	}
	return "", false
}
