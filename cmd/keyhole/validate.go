package main

import (
	"fmt"
	"io"
	"os"
)

func cmdValidate(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("validate", stderr)
	path := fs.String("config", defaultConfig, "config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	data, err := os.ReadFile(*path)
	if err != nil {
		return err
	}
	cfg, _, err := source{path: *path, getenv: getenv}.compile(data)
	if err != nil {
		return reportLoad(stderr, *path, err)
	}
	dev := ""
	if cfg.Identity.Dev {
		dev = ", and the dev issuer"
	}
	fmt.Fprintf(stdout, "%s: ok (%s, %s, %s, %s%s)\n", *path, count(len(cfg.Routes), "route"), count(len(cfg.Guards), "guard"),
		count(len(cfg.Upstreams), "upstream"), count(len(cfg.Identity.Issuers), "issuer"), dev)
	return nil
}

// count is n things, in the singular for one.
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
