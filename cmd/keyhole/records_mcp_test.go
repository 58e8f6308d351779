package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

func TestRecordsListByTool(t *testing.T) {
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "keyhole.db")
	st, err := sqlite.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	rec := recorder.New(st, recorder.Policy{Mode: recorder.Strict, BodyLimit: 512, Redactor: recorder.NewRedactor(nil, nil)}, recorder.Options{})
	now := time.Now()
	for i, m := range []*recorder.MCP{
		{Method: "tools/call", Name: "lookup_customer", ID: "1", Session: "s1"},
		{Method: "tools/call", Name: "delete_customer", ID: "2", Session: "s1"},
		{Method: "prompts/get", Name: "lookup_customer", ID: "3", Session: "s1"}, // a prompt, not the tool
		nil,
	} {
		x := &recorder.Exchange{ID: "01JDX0000000000000000000" + string(rune('A'+i)) + "0", ReceivedAt: now, Route: "crm-mcp",
			Decision: "allowed", MCP: m, Request: recorder.Request{Method: "POST", Path: "/crm/mcp"}}
		rec.Refused(x)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st.Close()
	out, errOut, err := runCmd(t, func(string) string { return "" }, "records", "list", "--store", dsn, "--tool", "lookup_customer")
	if err != nil {
		t.Fatalf("records list --tool: %v %s", err, errOut)
	}
	if got := strings.Count(out, "01JDX"); got != 1 || !strings.Contains(out, "01JDX0000000000000000000A0") {
		t.Errorf("records list --tool lookup_customer: got\n%s\nwant only the tools/call of lookup_customer", out)
	}
}
