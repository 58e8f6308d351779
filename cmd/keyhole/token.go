package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

func cmdToken(ctx context.Context, prog string, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("token", stderr)
	issuer := fs.String("issuer", "http://127.0.0.1:9090/dev", "the dev issuer's `URL`: that of a running demo, or of serve with identity.dev")
	sub := fs.String("sub", "", "subject (a user, or an agent's client id)")
	cid := fs.String("client-id", "", "client id (cid); equal to --sub for a client-credentials (agent) token")
	groups := fs.String("groups", "", "comma-separated groups")
	scopes := fs.String("scopes", "", "comma-separated scopes")
	ttl := fs.Duration("ttl", time.Hour, "lifetime, at most 24h")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *sub == "" && *cid == "" {
		fmt.Fprintln(stderr, "keyhole token: --sub or --client-id is required")
		return errUsage
	}
	body, _ := json.Marshal(map[string]any{
		"sub": *sub, "client_id": *cid, "groups": splitList(*groups), "scopes": splitList(*scopes), "ttl": ttl.String(),
	})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(*issuer, "/")+"/token", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("no dev issuer at %s (start `%s demo`, or `%[2]s serve` with identity.dev: true): %w", *issuer, prog, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("dev issuer at %s answered %s: %s", *issuer, resp.Status, bytes.TrimSpace(raw))
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(raw, &tok); err != nil || tok.AccessToken == "" {
		return fmt.Errorf("dev issuer at %s: unexpected answer", *issuer)
	}
	fmt.Fprintln(stdout, tok.AccessToken)
	return nil
}
