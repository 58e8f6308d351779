package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestREADMECommands runs every validate, check and test command the README shows that
// needs no network and names no placeholder, from the repository root, as a reader would
// paste it: each must succeed, so the README's examples cannot rot.
func TestREADMECommands(t *testing.T) {
	root, _ := filepath.Abs("../..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(root)
	cmds := readmeCommands(string(readme))
	if len(cmds) < 3 {
		t.Fatalf("found %d runnable commands in the README, want the validate, check and test examples: %q", len(cmds), cmds)
	}
	for _, c := range cmds {
		t.Run(c, func(t *testing.T) {
			stdin, line := "", c
			if m := echoPipe.FindStringSubmatch(line); m != nil {
				stdin, line = m[1], line[len(m[0]):]
			}
			env := map[string]string{}
			fields := strings.Fields(line)
			for len(fields) > 0 && strings.Contains(fields[0], "=") {
				k, v, _ := strings.Cut(fields[0], "=")
				env[k], fields = v, fields[1:]
			}
			if len(fields) < 2 || fields[0] != "keyhole" {
				t.Fatalf("not a keyhole command: %q", c)
			}
			var args []string
			for _, f := range fields[1:] {
				if strings.ContainsAny(f, "*?") {
					matches, _ := filepath.Glob(f)
					args = append(args, matches...)
					continue
				}
				args = append(args, f)
			}
			getenv := func(k string) string { return env[k] }
			var out, errOut bytes.Buffer
			if args[0] == "check" {
				err = cmdCheck(args[1:], getenv, strings.NewReader(stdin), &out, &errOut)
			} else {
				err = run(context.Background(), append([]string{"keyhole"}, args...), getenv, &out, &errOut)
			}
			if err != nil {
				t.Errorf("%s: %v\nstdout:\n%s\nstderr:\n%s", c, err, out.String(), errOut.String())
			}
		})
	}
}

var (
	codeSpan = regexp.MustCompile("(?s)`([^`]+)`")
	echoPipe = regexp.MustCompile(`^echo '([^']*)' \| `)
	runnable = regexp.MustCompile(`^(?:(?:echo '[^']*' \| )?(?:[A-Z_]+=\S+ )*)keyhole (?:validate|check|test)\b`)
)

// readmeCommands returns the validate, check and test commands of the README's code spans
// and shell blocks, without synopsis lines (placeholders in capitals, options in brackets).
func readmeCommands(readme string) []string {
	var out []string
	add := func(c string) {
		c = strings.Join(strings.Fields(c), " ")
		if !runnable.MatchString(c) || strings.ContainsAny(c, "[<") || strings.Contains(c, "FILE") || strings.Contains(c, "...") {
			return
		}
		out = append(out, c)
	}
	var prose []string
	fence := "" // the info string of the open fenced block
	open := false
	for _, l := range strings.Split(readme, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "```") {
			if open = !open; open {
				fence = strings.TrimPrefix(t, "```")
			}
			prose = append(prose, "")
			continue
		}
		switch {
		case !open:
			prose = append(prose, l)
		case fence == "sh":
			c, _, _ := strings.Cut(l, " #")
			add(c)
		}
	}
	for _, m := range codeSpan.FindAllStringSubmatch(strings.Join(prose, "\n"), -1) {
		add(m[1])
	}
	return out
}

// TestREADMESetUp checks the README's set-up: how to get the binary (go install of this
// module's command), then exactly two commands, the demo and the test command CI runs, and
// beside it what -race needs and what to run without it.
func TestREADMESetUp(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## Set-up")
	section, _, _ = strings.Cut(section, "\n## ")
	if section == "" {
		t.Fatal("README has no Set-up section")
	}
	module := regexp.MustCompile(`(?m)^module (\S+)$`).FindSubmatch(gomod)
	if module == nil {
		t.Fatal("go.mod names no module")
	}
	install := "go install " + string(module[1]) + "/cmd/keyhole@latest"
	if !strings.Contains(section, "`"+install+"`") {
		t.Errorf("the Set-up section does not show %q", install)
	}
	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindStringSubmatch(section)
	if block == nil {
		t.Fatal("the Set-up section has no sh block")
	}
	var cmds []string
	for _, l := range strings.Split(block[1], "\n") {
		if c, _, _ := strings.Cut(l, "#"); strings.TrimSpace(c) != "" {
			cmds = append(cmds, strings.Join(strings.Fields(c), " "))
		}
	}
	if want := []string{"keyhole demo", "go test -race ./..."}; !slices.Equal(cmds, want) {
		t.Errorf("the Set-up block runs %q, want exactly %q", cmds, want)
	}
	if !regexp.MustCompile(`(?m)^go test -race \./\.\.\.$`).Match(ci) {
		t.Errorf(".ci/run does not run the README's test command go test -race ./...")
	}
	for _, want := range []string{"C compiler", "`gcc`", "`go test ./...`"} {
		if !strings.Contains(section, want) {
			t.Errorf("the Set-up section does not say %q (what -race needs, and what to run without it)", want)
		}
	}
}
