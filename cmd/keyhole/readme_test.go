package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
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
				err = run(context.Background(), args, getenv, &out, &errOut)
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
