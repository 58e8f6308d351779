package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads and parses the configuration file at path, as Parse does, resolving the
// relative file paths it names (value_file, ca_file, cert_file, key_file) against the
// file's directory. If the file cannot be read, the error is the one from os.ReadFile.
func Load(path string, getenv func(string) string, checks ...Check) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg, err := Parse(data, filepath.Dir(path), getenv, checks...)
	if err != nil {
		return nil, err
	}
	cfg.Path = path
	return cfg, nil
}

// Parse parses, expands, defaults and validates the configuration in data.
//
// Each ${NAME} in a scalar value is replaced by getenv(NAME); an empty result is an
// error, and $${ is a literal ${. A nil getenv sets no variable. Relative file paths
// (value_file, ca_file, cert_file, key_file) are resolved against dir and stored
// resolved; the files are read, and credential.value_file's content is stored in
// Credential.Value.
//
// On error, Parse returns a nil *Config and an errors.Join of *FieldError, one for each
// problem in the file, ordered by line and then field path. Error messages never hold a
// value that came from the environment or a file: they quote values as written.
//
// A returned Config is fully defaulted and validated, and Line knows the YAML line of
// every field path it holds, for errors found later (a bad route pattern, say).
//
// Each check runs on the decoded Config even when Parse found errors, so that one run
// reports the errors of every stage; their errors are merged into Parse's, in line order.
func Parse(data []byte, dir string, getenv func(string) string, checks ...Check) (*Config, error) {
	return ParseWith(data, dir, getenv, Options{}, checks...)
}

// Options changes how ParseWith reads a configuration.
type Options struct {
	// SecretsOptional lets an unset ${VAR} in a secret (a credential's value,
	// masking.hash_key) stand for a placeholder, for commands that judge requests
	// without forwarding any (keyhole check, keyhole test): they need no secret.
	SecretsOptional bool
}

// placeholderSecret is what an unset ${NAME} in a secret becomes with
// Options.SecretsOptional: long enough for every length check.
func placeholderSecret(name string) string { return "unset-secret-placeholder-for-" + name }

// ParseWith is Parse with opts.
func ParseWith(data []byte, dir string, getenv func(string) string, opts Options, checks ...Check) (*Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	root, err := parseYAML(data)
	if err != nil {
		return nil, errors.Join(err)
	}
	w := newWalker(getenv, countNodes(root))
	w.secretsOptional = opts.SecretsOptional
	cfg := &Config{}
	if root != nil {
		w.walk(root, reflect.ValueOf(cfg).Elem(), "", root.Line)
	}
	cfg.lines, cfg.written = w.lines, w.written
	if !w.stopped {
		v := &validator{cfg: cfg, w: w, dir: dir}
		v.defaults()
		v.validate()
		failed := len(w.errs) > 0
		seen := map[string]bool{}
		for _, e := range w.errs {
			seen[e.Path] = true
			if r, ok := maskRule(e.Path); ok {
				seen[r] = true
			}
		}
		for _, c := range checks {
			for _, e := range runCheck(cfg, c, failed) {
				// A field already reported by validation is not reported twice, nor is a
				// mask rule validation refused (a bad action is not again a bad field).
				r, inRule := maskRule(e.Path)
				if e.Path == "" || !seen[e.Path] && !(inRule && seen[r]) && !w.underBad(e.Path) {
					w.errs = append(w.errs, e)
				}
			}
		}
	}
	if len(w.errs) > 0 {
		sortErrors(w.errs)
		errs := make([]error, len(w.errs))
		for i, e := range w.errs {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// maskRule returns the mask rule that path p is a field of: routes[0].mask[1] for
// routes[0].mask[1].action.
func maskRule(p string) (string, bool) {
	parent, ok := parentPath(p)
	if !ok || !strings.HasSuffix(parent, "]") {
		return "", false
	}
	list, ok := parentPath(parent)
	return parent, ok && (list == "mask" || strings.HasSuffix(list, ".mask"))
}

// Check validates what package config does not know how to, such as the route patterns,
// gjson paths and regexes that package rules compiles. It returns nil or an errors.Join
// of *FieldError built with cfg.Errorf; any other error is reported without a line.
// A Check may be given a Config that failed validation, to report its own errors too.
type Check func(cfg *Config) error

// runCheck runs c and returns its errors. A check that panics on a Config that has
// already failed validation is ignored (its input was not valid); on a valid Config the
// panic is a bug and goes on.
func runCheck(cfg *Config, c Check, failed bool) (errs []*FieldError) {
	defer func() {
		if r := recover(); r != nil {
			if !failed {
				panic(r)
			}
			errs = nil
		}
	}()
	var walk func(error)
	walk = func(err error) {
		var fe *FieldError
		switch {
		case err == nil:
		case errors.As(err, &fe) && fe == err:
			errs = append(errs, fe)
		default:
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					walk(e)
				}
				return
			}
			errs = append(errs, &FieldError{Msg: err.Error()})
		}
	}
	walk(c(cfg))
	return errs
}

// parseYAML returns the content of the single YAML document in data: nil for an
// empty document.
func parseYAML(data []byte) (root *yaml.Node, err error) {
	defer func() {
		// yaml.v3 panics on some malformed input; the file is refused all the same.
		if r := recover(); r != nil {
			root, err = nil, &FieldError{Msg: fmt.Sprintf("YAML parser failed: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, syntaxError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, &FieldError{Line: next.Line, Msg: "a second YAML document: the file must hold exactly one"}
	case !errors.Is(err, io.EOF):
		return nil, syntaxError(err)
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// syntaxError turns a yaml.v3 error such as "yaml: line 3: mapping values are not
// allowed in this context" into a FieldError for that line.
func syntaxError(err error) *FieldError {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, m, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(num); err == nil {
				return &FieldError{Line: line, Msg: "YAML syntax: " + m}
			}
		}
	}
	return &FieldError{Msg: "YAML syntax: " + msg}
}
