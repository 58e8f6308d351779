package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/keyholehq/keyhole/internal/demoapi"
)

// cmdDemoAPI serves only the demo's customer API, the upstream of deploy/compose: it
// answers requests that carry the API key Keyhole injects, and 401 otherwise.
func cmdDemoAPI(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlags("demo-api", stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to serve the demo API on")
	keyFile := fs.String("api-key-file", "", "file holding the API key callers must send as X-Api-Key (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *keyFile == "" {
		fmt.Fprintln(stderr, "keyhole demo-api: --api-key-file is required")
		return errUsage
	}
	b, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("demo-api: %w", err)
	}
	key := strings.TrimSpace(string(b))
	if key == "" {
		return errors.New("demo-api: the API key file is empty")
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("demo-api: %w", err)
	}
	srv := &http.Server{Handler: demoapi.New(key).Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Fprintf(stderr, "keyhole demo-api serving on %s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
