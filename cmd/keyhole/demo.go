package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/configs"
	"github.com/keyholehq/keyhole/identity"
	"github.com/keyholehq/keyhole/internal/demoapi"
	"github.com/keyholehq/keyhole/internal/demomcp"
)

// defaultDemoStore is where the demo records by default: in the user's own cache
// directory, never in a shared one such as /tmp, where another user could create the
// directory first and read the records.
func defaultDemoStore() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "keyhole", "demo", "keyhole.db")
}

// demoKeyFile is where the demo keeps its dev issuer's signing key, so that the tokens
// it prints stay valid across restarts: beside the store, or in the default store's
// directory when the store is not a SQLite file.
func demoKeyFile(store string) string {
	dir := filepath.Dir(defaultDemoStore())
	if path, ok := strings.CutPrefix(store, "sqlite://"); ok && path != "" {
		dir = filepath.Dir(path)
	}
	return filepath.Join(dir, "dev-issuer.key")
}

// demoListen is configs/demo.yaml's listen address, the default of --listen.
const demoListen = "127.0.0.1:8080"

func cmdDemo(ctx context.Context, prog string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	listen := fs.String("listen", "", "data-plane address (loopback; default from configs/demo.yaml, 127.0.0.1:8080)")
	adminAddr := fs.String("admin", "", "admin-plane address (loopback; default 127.0.0.1:9090)")
	store := fs.String("store", "sqlite://"+defaultDemoStore(), "where the demo records exchanges")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	for _, a := range []string{*listen, *adminAddr} {
		if a != "" && !loopbackAddr(a) {
			return fmt.Errorf("demo listens on loopback only, not %q", a)
		}
	}

	// The sample internal API, reachable only through the gateway's injected key.
	keyBytes := make([]byte, 16)
	if _, err := rand.Read(keyBytes); err != nil {
		return err
	}
	apiKey := hex.EncodeToString(keyBytes)
	// The hash key and the console's session key come from the dev issuer's kept key,
	// so hashed values stay joinable and console sessions last across restarts.
	keyFile := demoKeyFile(*store)
	maskBytes, err := identity.DevSecret(keyFile, "demo masking hash key", 16)
	if err != nil {
		return err
	}
	maskKey := hex.EncodeToString(maskBytes)
	sessionKey, err := identity.DevSecret(keyFile, "demo console session key", 32)
	if err != nil {
		return err
	}
	adminURL := "http://" + cmp.Or(*adminAddr, "127.0.0.1:9090")
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	apiSrv := &http.Server{Handler: demoapi.New(apiKey).Handler(), ReadHeaderTimeout: 5 * time.Second}
	go apiSrv.Serve(apiLn)
	defer apiSrv.Close()
	// The sample MCP server, behind route crm-mcp, with the same injected key.
	mcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mcpSrv := &http.Server{Handler: demomcp.New(apiKey, demomcp.Options{}).Handler(), ReadHeaderTimeout: 5 * time.Second}
	go mcpSrv.Serve(mcpLn)
	defer mcpSrv.Close()
	// The MCP route's public URL (its OAuth resource) is where the gateway listens.
	dataAddr := *listen
	if dataAddr == "" {
		dataAddr = demoListen
	}

	env := func(k string) string {
		switch k {
		case "KEYHOLE_DEMO_API_URL":
			return "http://" + apiLn.Addr().String()
		case "KEYHOLE_DEMO_API_KEY":
			return apiKey
		case "KEYHOLE_DEMO_MCP_URL":
			return "http://" + mcpLn.Addr().String()
		case "KEYHOLE_DEMO_MCP_RESOURCE":
			return "http://" + dataAddr + "/crm/mcp"
		case "KEYHOLE_DEMO_MASK_KEY":
			return maskKey
		case "KEYHOLE_DEMO_STORE":
			return *store
		case "KEYHOLE_DEMO_ADMIN_URL":
			return adminURL
		case "KEYHOLE_DEMO_SESSION_KEY":
			return hex.EncodeToString(sessionKey)
		}
		return getenv(k)
	}
	src := source{dir: ".", load: func() ([]byte, error) { return configs.Demo, nil }, getenv: env}
	log, logs := newLogger(stderr)
	defer logs.Close()
	g, err := start(ctx, src, log, startOptions{data: *listen, admin: *adminAddr, devKeyFile: keyFile})
	if err != nil {
		return reportLoad(stderr, "configs/demo.yaml", err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- g.serve(sctx, 0) }()

	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	err = g.verifier.Load().WaitReady(wctx)
	cancel()
	if err == nil {
		err = printDemo(stdout, g, prog)
	}
	if err != nil {
		stop()
		<-served
		return fmt.Errorf("demo gateway did not become ready: %w", err)
	}
	return <-served
}

// printDemo prints the tokens and curl lines a newcomer pastes to see each decision, and
// the CLI's commands in the form prog the user ran the demo with.
func printDemo(w io.Writer, g *gateway, prog string) error {
	mint := func(r identity.TokenRequest) (string, error) {
		r.TTL = 8 * time.Hour
		return g.dev.Mint(r)
	}
	reader, err := mint(identity.TokenRequest{Subject: "demo-reader-agent", ClientID: "demo-reader-agent", Scopes: []string{"crm.read"}})
	if err != nil {
		return err
	}
	writer, err := mint(identity.TokenRequest{Subject: "demo-writer-agent", ClientID: "demo-writer-agent", Scopes: []string{"crm.read", "crm.write"}})
	if err != nil {
		return err
	}
	approver, err := mint(identity.TokenRequest{Subject: "alice@example.com", ClientID: "keyhole-demo-console", Groups: []string{"crm-admins"}})
	if err != nil {
		return err
	}
	auditor, err := mint(identity.TokenRequest{Subject: "bob@example.com", ClientID: "keyhole-demo-console", Groups: []string{"keyhole-auditors"}})
	if err != nil {
		return err
	}
	base := "http://" + g.dataLn.Addr().String()
	adminBase := "http://" + g.adminLn.Addr().String()
	fmt.Fprintf(w, `Keyhole demo is running (Ctrl-C stops it).
  gateway (agents point here):  %[1]s
  admin (metrics, health):      %[2]s/metrics  %[2]s/readyz
  console:                      %[2]s/ui/  (log in as a demo persona with one click)
  dev issuer:                   %[2]s/dev/.well-known/openid-configuration
  sample internal API:          reachable only through the gateway, which injects its X-Api-Key

Tokens (8h, from the dev issuer; mint more with: %[9]s token --issuer %[2]s/dev --sub S --scopes crm.read):
  export READER=%[3]s
  export WRITER=%[4]s
  export APPROVER=%[5]s
  export KEYHOLE_TOKEN=%[6]s
(READER and WRITER are client-credentials agent tokens with scopes; APPROVER is a person in
group crm-admins, who approves deletes; KEYHOLE_TOKEN is an auditor's, which the records and
replay commands read.)

Try:
  # allowed: the reader agent reads a customer; SSN, card number, email and phone are masked
  curl -s -H "Authorization: Bearer $READER" %[1]s/crm/customers/1
  # allowed: the list, with SSNs redacted, cards cut to their last 4 and emails hashed
  curl -s -H "Authorization: Bearer $READER" %[1]s/crm/customers
  # forbidden (403): the reader may not delete (route crm-delete-customer requires scope crm.write)
  curl -s -X DELETE -H "Authorization: Bearer $READER" %[1]s/crm/customers/1
  # denied (403): bulk deletion is never forwarded, whoever asks (route never-bulk-delete)
  curl -s -X POST -H "Authorization: Bearer $WRITER" %[1]s/crm/customers/bulk/delete
  # denied (403) by a guard: destructive SQL in any body
  curl -s -X POST -H "Authorization: Bearer $WRITER" -H 'Content-Type: application/json' -d '{"name":"x","note":"DROP TABLE customers"}' %[1]s/crm/customers
  # no route (404): nothing is reachable unless a route says so
  curl -s -H "Authorization: Bearer $READER" %[1]s/crm/admin
  # unauthenticated (401): no token
  curl -si %[1]s/crm/customers/1

Deleting a customer needs a person's approval (route crm-delete-customer):
  # approval pending (403 after a 3 s hold): the writer agent asks; note X-Keyhole-Approval
  curl -si -X DELETE -H "Authorization: Bearer $WRITER" -H "X-Keyhole-Reason: customer asked to be forgotten" %[1]s/crm/customers/3
  # as the approver (alice, in crm-admins); ID is the X-Keyhole-Approval value
  KEYHOLE_TOKEN=$APPROVER %[9]s approvals list --server %[2]s
  KEYHOLE_TOKEN=$APPROVER %[9]s approvals approve ID --comment "ticket 4411" --server %[2]s
  # allowed once approved (204): the same request again is forwarded, exactly once
  curl -si -X DELETE -H "Authorization: Bearer $WRITER" -H "X-Keyhole-Reason: customer asked to be forgotten" %[1]s/crm/customers/3

MCP: the sample MCP server (tools lookup_customer, list_customers, delete_customer, drop_table)
sits behind route crm-mcp, reachable only through the gateway, which injects its X-Api-Key.
  URL (Streamable HTTP):  %[1]s/crm/mcp
  header:                 Authorization: Bearer $READER   ($WRITER may call delete_customer too)
  # the MCP Inspector (Node.js) as the reader agent: drop_table and delete_customer are not listed
  npx @modelcontextprotocol/inspector --cli %[1]s/crm/mcp --transport http --header "Authorization: Bearer $READER" --method tools/list
  npx @modelcontextprotocol/inspector --cli %[1]s/crm/mcp --transport http --header "Authorization: Bearer $READER" --method tools/call --tool-name lookup_customer --tool-arg id=1
  (or its web UI, npx @modelcontextprotocol/inspector: transport Streamable HTTP, the URL above,
  and under Authentication the header Authorization with the value "Bearer " and the token)
With curl:
  # allowed: initialize; SESSION keeps the Mcp-Session-Id the server answers
  SESSION=$(curl -s -D - -o /dev/null -X POST -H "Authorization: Bearer $READER" %[8]s -d '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}' %[1]s/crm/mcp | tr -d '\r' | awk 'tolower($1)=="mcp-session-id:" {print $2}')
  # allowed: tools/list, narrowed to what the reader may call: lookup_customer, list_customers
  curl -s -X POST -H "Authorization: Bearer $READER" -H "Mcp-Session-Id: $SESSION" %[8]s -d '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' %[1]s/crm/mcp
  # allowed: lookup_customer, with ssn redacted, card number cut to its last 4, email hashed (structuredContent and text alike)
  curl -s -X POST -H "Authorization: Bearer $READER" -H "Mcp-Session-Id: $SESSION" %[8]s -d '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"lookup_customer","arguments":{"id":1}}}' %[1]s/crm/mcp
  # denied (200): drop_table is answered with an isError result the model can read; the server never sees it
  curl -s -X POST -H "Authorization: Bearer $READER" -H "Mcp-Session-Id: $SESSION" %[8]s -d '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"drop_table","arguments":{"table":"customers"}}}' %[1]s/crm/mcp
  # forbidden (200): the reader may not call delete_customer (scope crm.write), also an isError result
  curl -s -X POST -H "Authorization: Bearer $READER" -H "Mcp-Session-Id: $SESSION" %[8]s -d '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"delete_customer","arguments":{"id":2}}}' %[1]s/crm/mcp
Deleting over MCP needs a person's approval too: call delete_customer as the writer (the
Inspector with $WRITER, or the last curl line with $WRITER). After a 3 s hold the answer is an
isError result naming the approval id; approve it with the approvals commands above, then make
the same call again (any JSON-RPC id, any session): it runs exactly once.

Every request above is recorded (%[7]s), refusals included. As the auditor:
  %[9]s records list --server %[2]s
  %[9]s records show ID --server %[2]s        # ID: any X-Request-Id, or from the list
  %[9]s replay ID --server %[2]s              # send it again, see what changed
  %[9]s records export --har --server %[2]s -o demo.har
  %[9]s records verify --server %[2]s         # check the hash chain
  %[9]s records list --store %[7]s   # also after the demo stopped
`, base, adminBase, reader, writer, approver, auditor, g.cfg.Recorder.Store,
		`-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream'`, prog)
	return nil
}

// loopbackAddr reports whether host:port names a loopback host.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
