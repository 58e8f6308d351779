package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/keyholehq/keyhole/config"

	"gopkg.in/yaml.v3"
)

// policyFile is a file of policy test cases for `keyhole test`. See README "Policy tests".
type policyFile struct {
	// Config is the gateway config under test, relative to the policy file.
	Config string       `yaml:"config"`
	Cases  []policyCase `yaml:"cases"`
}

type policyCase struct {
	Name     string         `yaml:"name"`
	Request  policyRequest  `yaml:"request"`
	Identity policyIdentity `yaml:"identity"`
	// MCP, when set, is the JSON-RPC message POSTed to the mcp route the request selects.
	MCP    *policyMCP   `yaml:"mcp"`
	Expect policyExpect `yaml:"expect"`
}

type policyRequest struct {
	Method  string            `yaml:"method"`
	Path    string            `yaml:"path"`
	Query   string            `yaml:"query"`
	Headers map[string]string `yaml:"headers"`
	Body    string            `yaml:"body"`
}

type policyIdentity struct {
	Issuer   string         `yaml:"issuer"`
	Sub      string         `yaml:"sub"`
	ClientID string         `yaml:"client_id"`
	Groups   []string       `yaml:"groups"`
	Scopes   []string       `yaml:"scopes"`
	Claims   map[string]any `yaml:"claims"`
}

type policyExpect struct {
	// Decision is allow, approval (allowed once approved), forbidden, denied, no_route or bad_request.
	Decision string `yaml:"decision"`
	// Route, when set, is the name of the route or guard that must decide.
	Route string `yaml:"route"`
	// Reason, when set, must appear in the decision's reason.
	Reason string `yaml:"reason"`
	// Entry, when set, is the name (or uri pattern) of the mcp tools, resources or prompts
	// entry that must decide, as the config spells it; only for cases with mcp.
	Entry string `yaml:"entry"`
}

var decisions = map[string]bool{"allow": true, "approval": true, "forbidden": true, "denied": true, "no_route": true, "bad_request": true}

func cmdTest(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("test", stderr)
	override := fs.String("config", "", "config file to test, instead of each file's own config:")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "keyhole test: name at least one policy test file")
		return errUsage
	}
	passed, failed := 0, 0
	for _, file := range fs.Args() {
		p, f, err := runPolicyFile(file, *override, getenv, stdout, stderr)
		if err != nil {
			return err
		}
		passed, failed = passed+p, failed+f
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "FAIL: %d of %d policy cases failed\n", failed, passed+failed)
		return errReported
	}
	fmt.Fprintf(stdout, "ok: all %d policy cases hold\n", passed)
	return nil
}

func runPolicyFile(file, override string, getenv func(string) string, stdout, stderr io.Writer) (passed, failed int, err error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, 0, err
	}
	var root yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&root); err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, fmt.Errorf("%s: %w", file, err)
	}
	if errs := unknownKeys(&root, reflect.TypeFor[policyFile](), ""); len(errs) > 0 {
		fmt.Fprintf(stderr, "%s: %d error(s):\n  %s\n", file, len(errs), strings.Join(errs, "\n  "))
		return 0, 0, errReported
	}
	var pf policyFile
	if root.Kind != 0 {
		if err := root.Decode(&pf); err != nil {
			return 0, 0, fmt.Errorf("%s: %w", file, err)
		}
	}
	cfgPath := override
	if cfgPath == "" {
		if pf.Config == "" {
			return 0, 0, fmt.Errorf("%s: no config: set config: in the file or pass --config", file)
		}
		cfgPath = filepath.Join(filepath.Dir(file), pf.Config)
	}
	if len(pf.Cases) == 0 {
		return 0, 0, fmt.Errorf("%s: no cases", file)
	}
	for i, c := range pf.Cases {
		if !decisions[c.Expect.Decision] {
			return 0, 0, fmt.Errorf("%s: cases[%d].expect.decision: %q is not one of allow, approval, forbidden, denied, no_route, bad_request", file, i, c.Expect.Decision)
		}
		if c.Expect.Entry != "" && c.MCP == nil {
			return 0, 0, fmt.Errorf("%s: cases[%d].expect.entry: only a case with mcp is decided by an mcp entry", file, i)
		}
	}
	cfgData, err := os.ReadFile(cfgPath)
	if err != nil {
		return 0, 0, err
	}
	cfg, table, err := source{path: cfgPath, getenv: getenv, judgeOnly: true}.compile(cfgData)
	if err != nil {
		return 0, 0, reportLoad(stderr, cfgPath, err)
	}
	pol, err := newPolicy(cfg, table)
	if err != nil {
		return 0, 0, err
	}
	for i, c := range pf.Cases {
		name := c.Name
		if name == "" {
			name = fmt.Sprintf("cases[%d]", i)
		}
		if why := checkCase(pol, c); why != "" {
			failed++
			fmt.Fprintf(stdout, "FAIL %s: %s: %s\n", file, name, why)
			continue
		}
		passed++
		fmt.Fprintf(stdout, "pass %s: %s\n", file, name)
	}
	return passed, failed, nil
}

// checkCase returns "" when c's expectation holds, else what differs.
func checkCase(pol *policy, c policyCase) string {
	v, err := pol.evaluate(c)
	if err != nil {
		return err.Error()
	}
	route := ""
	if v.decision.Route != nil {
		route = v.decision.Route.Name
	}
	var diffs []string
	if v.effect != c.Expect.Decision {
		diffs = append(diffs, fmt.Sprintf("decision %s, want %s", v.effect, c.Expect.Decision))
	}
	if c.Expect.Route != "" && route != c.Expect.Route {
		diffs = append(diffs, fmt.Sprintf("route %q, want %q", route, c.Expect.Route))
	}
	if c.Expect.Entry != "" && (v.mcp == nil || v.mcp.d.Entry != c.Expect.Entry) {
		got := "none"
		if v.mcp != nil {
			got = v.mcp.entry
		}
		diffs = append(diffs, fmt.Sprintf("mcp entry %s, want %q", got, c.Expect.Entry))
	}
	if c.Expect.Reason != "" && !strings.Contains(v.reason, c.Expect.Reason) {
		diffs = append(diffs, fmt.Sprintf("reason %q does not contain %q", v.reason, c.Expect.Reason))
	}
	if len(diffs) == 0 {
		return ""
	}
	return strings.Join(diffs, "; ") + fmt.Sprintf(" (reason: %s)", v.reason)
}

// unknownKeys returns an error, with its line and field path (cases[2].expect.decison) and
// the key it is likely a typo of, for each key of n that type t has no field for.
func unknownKeys(n *yaml.Node, t reflect.Type, path string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	var errs []string
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		var names []string
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fields[name] = f.Type
			names = append(names, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			ft, ok := fields[k]
			if !ok {
				msg := fmt.Sprintf("line %d: %sunknown key %q", n.Content[i].Line, pathPrefix(path), k)
				if s := config.Suggest(k, names); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				errs = append(errs, msg)
				continue
			}
			errs = append(errs, unknownKeys(n.Content[i+1], ft, config.KeyPath(path, k))...)
		}
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, item := range n.Content {
			errs = append(errs, unknownKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
		}
	}
	return errs
}

// pathPrefix is "path: ", or "" at the top level, as config errors print it.
func pathPrefix(path string) string {
	if path == "" {
		return ""
	}
	return path + ": "
}
