package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyholehq/keyhole/internal/testkit"
)

// TestServeFlushesTraces runs serve with telemetry.otlp set, sends one request and stops
// the gateway at once: the request's spans reach the collector on shutdown (the batch
// would otherwise wait seconds), with the configured export header, and the upstream got
// a traceparent of the same trace.
func TestServeFlushesTraces(t *testing.T) {
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	rcv := testkit.NewOTLPReceiver(t)
	data, adm := freeAddr(t), freeAddr(t)
	path := filepath.Join(t.TempDir(), "keyhole.yaml")
	cfg := fmt.Sprintf(serveConfig, data, adm, iss.Config().Issuer, up.URL, "readers") +
		fmt.Sprintf("telemetry: { otlp: { endpoint: %q, headers: { X-Collector-Key: \"${OTLP_KEY}\" } } }\n", rcv.URL)
	os.WriteFile(path, []byte(cfg), 0o600)
	env := map[string]string{"CRM_KEY": "k", "OTLP_KEY": "otlp-PLANTED-key"}
	srv := runBackground(t, func(k string) string { return env[k] }, io.Discard, io.Discard, "serve", "--config", path)
	waitFor(t, "readyz", func() bool { s, _ := get("http://"+adm+"/readyz", ""); return s == 200 })

	tok := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	req, _ := http.NewRequest("GET", "http://"+data+"/customers/1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /customers/1 = %d, want 200", resp.StatusCode)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("serve returned %v", err)
	}

	var server []string
	for _, s := range rcv.Spans() {
		for _, kv := range s.Attributes {
			if kv.Key == "keyhole.exchange_id" && kv.Value.GetStringValue() == resp.Header.Get("X-Request-Id") {
				server = append(server, hex.EncodeToString(s.TraceId))
			}
		}
	}
	if len(server) != 1 {
		t.Fatalf("%d server spans of the request reached the collector after shutdown, want 1", len(server))
	}
	if tp := up.Requests()[0].Header.Get("Traceparent"); len(tp) != 55 || tp[3:35] != server[0] {
		t.Errorf("upstream traceparent = %q, want trace %s", tp, server[0])
	}
	if hs := rcv.Headers(); hs[0].Get("X-Collector-Key") != env["OTLP_KEY"] {
		t.Errorf("export header X-Collector-Key = %q, want the configured value", hs[0].Get("X-Collector-Key"))
	}
}
