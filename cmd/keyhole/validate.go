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
	fmt.Fprintf(stdout, "%s: ok (%d routes, %d guards, %d upstreams, %d issuers, dev issuer %t)\n",
		*path, len(cfg.Routes), len(cfg.Guards), len(cfg.Upstreams), len(cfg.Identity.Issuers), cfg.Identity.Dev)
	return nil
}
