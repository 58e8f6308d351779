package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/keyholehq/keyhole/config"
)

// defaultHealthURL is what keyhole health asks without --url or --config: the default
// admin listener's readiness.
const defaultHealthURL = "http://" + config.DefaultAdminListen + "/readyz"

// cmdHealth asks a gateway's /readyz (or any probe URL) and returns nil on 200, for
// container HEALTHCHECKs and exec probes, where there is no curl. Anything else is
// errReported, after a line on stderr that says why.
func cmdHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("health", stderr)
	urlFlag := fs.String("url", "", "the URL to GET (default: /readyz of --config's ops.listen, else admin.listen; without --config "+defaultHealthURL+")")
	path := fs.String("config", "", "the gateway's config file, to find its listener")
	timeout := fs.Duration("timeout", 2*time.Second, "bound on the whole request")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	target := *urlFlag
	if target == "" {
		target = defaultHealthURL
		if *path != "" {
			var err error
			if target, err = healthURL(*path); err != nil {
				fmt.Fprintf(stderr, "keyhole health: %v (or pass --url)\n", err)
				return errReported
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	status, err := probe(ctx, target)
	if err != nil {
		fmt.Fprintf(stderr, "keyhole health: %s: %v\n", target, err)
		return errReported
	}
	fmt.Fprintf(stdout, "%s: %s\n", target, status)
	return nil
}

// probe GETs target and returns the answer's "status" (such as "ready"), or an error that
// carries the answer's "reason" when it is not 200.
func probe(ctx context.Context, target string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return "", err
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the cause, without the method and URL printed again
		}
		return "", err
	}
	defer resp.Body.Close()
	var body struct{ Status, Reason string }
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(b, &body)
	}
	if resp.StatusCode != http.StatusOK {
		msg := resp.Status
		if body.Status != "" {
			msg += " " + body.Status
		}
		if body.Reason != "" {
			msg += ": " + body.Reason
		}
		return "", errors.New(msg)
	}
	if err != nil || body.Status == "" {
		return resp.Status, nil
	}
	return body.Status, nil
}

// healthURL returns the /readyz URL of the gateway that serves the config file at path:
// on ops.listen when it is set, else on admin.listen (or its default), with a wildcard
// host replaced by loopback. It reads only those two keys, so a file the running
// gateway refused to reload (and keeps serving its last good configuration through)
// still names where it listens.
func healthURL(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var c struct {
		Admin struct {
			Listen string `yaml:"listen"`
		} `yaml:"admin"`
		Ops struct {
			Listen string `yaml:"listen"`
		} `yaml:"ops"`
	}
	if err := yaml.Unmarshal(data, &c); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	key, addr := "ops.listen", c.Ops.Listen
	if addr == "" {
		key, addr = "admin.listen", c.Admin.Listen
	}
	if addr == "" {
		addr = config.DefaultAdminListen
	}
	if strings.Contains(addr, "${") {
		return "", fmt.Errorf("%s: %s is written with a ${VAR}", path, key)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%s: %s %q is not host:port", path, key, addr)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}
