package export_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/export"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// The required attributes of the OCSF 1.3.0 classes and objects the export fills, from
// the schema (schema.ocsf.io/1.3.0): the base event's, HTTP Activity's and API
// Activity's own, and those of each object they hold. atLeastOne lists the schema's
// "at least one of" constraints.
const schemaVersion = "1.3.0"

var (
	requiredBase = []string{"activity_id", "category_uid", "class_uid", "metadata", "severity_id", "time", "type_uid"}
	requiredAttr = map[int][]string{
		export.ClassHTTPActivity: requiredBase,
		export.ClassAPIActivity:  append([]string{"actor", "api", "src_endpoint"}, requiredBase...),
	}
	atLeastOne = map[int][][]string{
		export.ClassHTTPActivity: {{"http_request", "http_response"}, {"dst_endpoint", "src_endpoint"}},
		export.ClassAPIActivity:  {{"user", "app_name", "app_uid", "process", "session", "invoked_by"}},
	}
	requiredObject = map[string][]string{
		"metadata":         {"product", "version"},
		"metadata.product": {"vendor_name"},
		"http_response":    {"code"},
		"api":              {"operation"},
		"api.request":      {"uid"},
		"enrichments[]":    {"data", "name", "value"},
		"actor.user":       {},
		"policy":           {},
	}
	objectAtLeastOne = map[string][]string{
		"metadata.product": {"name", "uid"},
		"actor.user":       {"account", "name", "uid"},
		"actor.idp":        {"name", "uid"},
		"dst_endpoint":     {"ip", "hostname", "name", "uid", "svc_name", "domain", "instance_uid", "interface_uid"},
		"src_endpoint":     {"ip", "hostname", "name", "uid", "svc_name", "domain", "instance_uid", "interface_uid"},
		"proxy":            {"ip", "hostname", "name", "uid", "svc_name", "domain", "instance_uid", "interface_uid"},
		"policy":           {"name", "uid"},
	}
)

// recordSet writes a set of exchanges through a real recorder into a real SQLite store
// and returns the store.
func recordSet(t *testing.T, xs []*recorder.Exchange) *sqlite.Store {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "k.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := recorder.New(st, recorder.Policy{Redactor: recorder.NewRedactor(nil, []string{"upstream-key-1234"})}, recorder.Options{})
	for _, x := range xs {
		if x.ForwardedAt != nil {
			if err := rec.Begin(ctx, x); err != nil {
				t.Fatal(err)
			}
			rec.End(x)
		} else {
			rec.Refused(x)
		}
	}
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

var t0 = time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time { tm := t0.Add(d); return &tm }

// sampleSet is one exchange of each kind an auditor sees.
func sampleSet() []*recorder.Exchange {
	user := &recorder.Identity{Issuer: "https://idp.example/oauth2/default", Subject: "alice@example.com", ClientID: "crm-agent",
		Groups: []string{"crm-readers"}, Scopes: []string{"crm.read"}}
	service := &recorder.Identity{Issuer: "https://idp.example/oauth2/default", Subject: "0oa-svc", ClientID: "0oa-svc"}
	return []*recorder.Exchange{
		{ID: "01JD0000000000000000000001", ReceivedAt: t0, ForwardedAt: at(time.Millisecond), RespondedAt: at(5 * time.Millisecond),
			Identity: user, Route: "crm-read", Decision: "allowed", Upstream: "crm", Masked: true,
			Request: recorder.Request{Method: "GET", Path: "/crm/customers/7", Query: "fields=name", ForwardPath: "/customers/7",
				Header: map[string][]string{"Authorization": {"Bearer eyJ.secret"}, "User-Agent": {"agent/1.0"}, "X-Api-Key": {"upstream-key-1234"}}},
			Response: &recorder.Response{Status: 200, Header: map[string][]string{"Content-Type": {"application/json"}},
				Body: recorder.NewBody([]byte(`{"name":"Ada","ssn":"***"}`), 26)},
			Durations: recorder.Durations{TotalMS: 5, UpstreamMS: 3}},
		{ID: "01JD0000000000000000000002", ReceivedAt: t0.Add(time.Second), RespondedAt: at(time.Second), Identity: user, Route: "crm-write",
			Decision: "denied", Reason: "guard sql-injection matched body", Error: "denied",
			Request:  recorder.Request{Method: "POST", Path: "/crm/customers", Body: recorder.NewBody([]byte(`{"q":"DROP TABLE"}`), 18)},
			Response: &recorder.Response{Status: 403, Body: recorder.NewBody([]byte(`{"error":"denied"}`), 18)}},
		{ID: "01JD0000000000000000000003", ReceivedAt: t0.Add(2 * time.Second), Decision: "unauthenticated", Error: "unauthenticated",
			Request:  recorder.Request{Method: "PATCH", Path: "/crm/customers/7"},
			Response: &recorder.Response{Status: 401}},
		{ID: "01JD0000000000000000000004", ReceivedAt: t0.Add(3 * time.Second), ForwardedAt: at(3*time.Second + time.Millisecond),
			RespondedAt: at(3*time.Second + 9*time.Millisecond), Identity: service, Route: "crm-mcp", Decision: "approved",
			ApprovalID: "01JDAPPROVAL00000000000001", Upstream: "crm-mcp",
			MCP: &recorder.MCP{Method: "tools/call", Name: "delete_customer", ID: "7", Session: "s-1"},
			Request: recorder.Request{Method: "POST", Path: "/crm/mcp",
				Body: recorder.NewBody([]byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_customer"}}`), 79)},
			Response: &recorder.Response{Status: 200}, Durations: recorder.Durations{TotalMS: 9}},
		{ID: "01JD0000000000000000000005", ReceivedAt: t0.Add(4 * time.Second), ForwardedAt: at(4 * time.Second), RespondedAt: at(4 * time.Second),
			Identity: user, Route: "crm-read", Decision: "replay", ReplayOf: "01JD0000000000000000000001", Upstream: "crm",
			Target: "http://staging.crm:8080", Request: recorder.Request{Method: "GET", Path: "/crm/customers/7"},
			Response: &recorder.Response{Status: 200}},
	}
}

// backlog reads every completed exchange of st.
func backlog(t *testing.T, st export.Source) []export.Item {
	t.Helper()
	var items []export.Item
	err := export.Tail{}.Run(context.Background(), st, 0, false, func(b []export.Item) error {
		items = append(items, b...)
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

// ocsfEvents encodes items as OCSF lines and decodes each line as a generic object.
func ocsfEvents(t *testing.T, items []export.Item) []map[string]any {
	t.Helper()
	enc := export.NewEncoder(export.OCSF, export.Product{Version: "v1.2.3", Hostname: "gw-1"})
	var b []byte
	for _, it := range items {
		var err error
		if b, err = enc.Append(b, it); err != nil {
			t.Fatal(err)
		}
	}
	var evs []map[string]any
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// lookup returns the value at a dotted path of ev ("metadata.product.name").
func lookup(ev map[string]any, path string) (any, bool) {
	var cur any = ev
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func present(v any, ok bool) bool {
	if !ok || v == nil {
		return false
	}
	switch v := v.(type) {
	case string:
		return v != ""
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

func TestOCSFRequiredAttributes(t *testing.T) {
	evs := ocsfEvents(t, backlog(t, recordSet(t, sampleSet())))
	if len(evs) != 6 {
		t.Fatalf("%d events, want 6 (five HTTP Activity, one API Activity for the MCP call)", len(evs))
	}
	for i, ev := range evs {
		class := int(ev["class_uid"].(float64))
		name := ev["metadata"].(map[string]any)["uid"].(string) + "/" + ev["class_name"].(string)
		if v, _ := lookup(ev, "metadata.version"); v != schemaVersion {
			t.Errorf("event %d %s: metadata.version = %v, want %s", i, name, v, schemaVersion)
		}
		req, known := requiredAttr[class]
		if !known {
			t.Fatalf("event %d: class_uid %d, want 4002 or 6003", i, class)
		}
		for _, a := range req {
			if !present(lookup(ev, a)) {
				t.Errorf("event %d %s: required attribute %s missing", i, name, a)
			}
		}
		for _, group := range atLeastOne[class] {
			ok := false
			for _, a := range group {
				if present(lookup(ev, a)) || present(lookup(ev, "actor."+a)) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("event %d %s: none of %v", i, name, group)
			}
		}
		for obj, attrs := range requiredObject {
			var objs []any
			if base, ok := strings.CutSuffix(obj, "[]"); ok {
				list, _ := lookup(ev, base)
				objs, _ = list.([]any)
			} else if v, ok := lookup(ev, obj); ok {
				objs = []any{v}
			}
			for _, o := range objs {
				for _, a := range attrs {
					if !present(lookup(o.(map[string]any), a)) {
						t.Errorf("event %d %s: %s.%s required, missing", i, name, obj, a)
					}
				}
			}
		}
		for obj, group := range objectAtLeastOne {
			o, ok := lookup(ev, obj)
			if !ok {
				continue
			}
			found := false
			for _, a := range group {
				found = found || present(lookup(o.(map[string]any), a))
			}
			if !found {
				t.Errorf("event %d %s: %s has none of %v", i, name, obj, group)
			}
		}
		if got, want := int(ev["type_uid"].(float64)), class*100+int(ev["activity_id"].(float64)); got != want {
			t.Errorf("event %d %s: type_uid = %d, want %d", i, name, got, want)
		}
	}
}

func TestOCSFMapping(t *testing.T) {
	items := backlog(t, recordSet(t, sampleSet()))
	evs := ocsfEvents(t, items)
	byKey := map[string]map[string]any{}
	for _, ev := range evs {
		uid, _ := lookup(ev, "metadata.uid")
		byKey[uid.(string)+"/"+jsonText(ev["class_uid"])] = ev
	}
	tests := []struct {
		event, path string
		want        any
	}{
		{"01JD0000000000000000000001/4002", "activity_id", 3},
		{"01JD0000000000000000000001/4002", "action", "Allowed"},
		{"01JD0000000000000000000001/4002", "disposition_id", 1},
		{"01JD0000000000000000000001/4002", "status", "Success"},
		{"01JD0000000000000000000001/4002", "severity_id", 1},
		{"01JD0000000000000000000001/4002", "time", t0.UnixMilli()},
		{"01JD0000000000000000000001/4002", "http_request.http_method", "GET"},
		{"01JD0000000000000000000001/4002", "http_request.url.path", "/crm/customers/7"},
		{"01JD0000000000000000000001/4002", "http_request.url.query_string", "fields=name"},
		{"01JD0000000000000000000001/4002", "http_request.user_agent", "agent/1.0"},
		{"01JD0000000000000000000001/4002", "http_request.http_headers", []any{
			map[string]any{"name": "Authorization", "value": recorder.Redacted},
			map[string]any{"name": "User-Agent", "value": "agent/1.0"},
			map[string]any{"name": "X-Api-Key", "value": recorder.Redacted}}},
		{"01JD0000000000000000000001/4002", "http_response.code", 200},
		{"01JD0000000000000000000001/4002", "http_response.content_type", "application/json"},
		{"01JD0000000000000000000001/4002", "dst_endpoint.name", "crm"},
		{"01JD0000000000000000000001/4002", "proxy.hostname", "gw-1"},
		{"01JD0000000000000000000001/4002", "actor.user.uid", "alice@example.com"},
		{"01JD0000000000000000000001/4002", "actor.user.type", "User"},
		{"01JD0000000000000000000001/4002", "actor.user.groups", []any{map[string]any{"name": "crm-readers"}}},
		{"01JD0000000000000000000001/4002", "actor.app_name", "crm-agent"},
		{"01JD0000000000000000000001/4002", "actor.idp.name", "https://idp.example/oauth2/default"},
		{"01JD0000000000000000000001/4002", "policy.name", "crm-read"},
		{"01JD0000000000000000000001/4002", "metadata.product.name", "Keyhole"},
		{"01JD0000000000000000000001/4002", "metadata.product.version", "v1.2.3"},
		{"01JD0000000000000000000001/4002", "metadata.sequence", items[0].Cursor},
		{"01JD0000000000000000000001/4002", "unmapped.keyhole.cursor", export.FormatCursor(items[0].Cursor)},
		{"01JD0000000000000000000001/4002", "unmapped.keyhole.chain_hash", items[0].Hash},
		{"01JD0000000000000000000001/4002", "unmapped.keyhole.masked", true},
		{"01JD0000000000000000000002/4002", "activity_id", 6},
		{"01JD0000000000000000000002/4002", "action_id", 2},
		{"01JD0000000000000000000002/4002", "disposition", "Blocked"},
		{"01JD0000000000000000000002/4002", "severity_id", 3},
		{"01JD0000000000000000000002/4002", "status", "Failure"},
		{"01JD0000000000000000000002/4002", "policy.desc", "guard sql-injection matched body"},
		{"01JD0000000000000000000002/4002", "http_request.length", 18},
		{"01JD0000000000000000000003/4002", "activity_id", 99},
		{"01JD0000000000000000000003/4002", "activity_name", "PATCH"},
		{"01JD0000000000000000000003/4002", "disposition", "Unauthorized"},
		{"01JD0000000000000000000003/4002", "dst_endpoint.name", "keyhole"},
		{"01JD0000000000000000000004/4002", "enrichments", []any{map[string]any{"name": "approval_id", "value": "01JDAPPROVAL00000000000001",
			"type": "approval", "provider": "keyhole", "data": map[string]any{"approval_id": "01JDAPPROVAL00000000000001", "decision": "approved"}}}},
		{"01JD0000000000000000000004/4002", "actor.user.type", "Service"},
		{"01JD0000000000000000000004/6003", "api.operation", "delete_customer"},
		{"01JD0000000000000000000004/6003", "api.service.name", "crm-mcp"},
		{"01JD0000000000000000000004/6003", "api.request.uid", "7"},
		{"01JD0000000000000000000004/6003", "resources", []any{map[string]any{"name": "delete_customer", "type": "mcp.tool"}}},
		{"01JD0000000000000000000004/6003", "src_endpoint.name", "0oa-svc"},
		{"01JD0000000000000000000004/6003", "category_uid", 6},
		{"01JD0000000000000000000004/6003", "type_uid", 600399},
		{"01JD0000000000000000000004/6003", "unmapped.keyhole.mcp_session_id", "s-1"},
		{"01JD0000000000000000000005/4002", "enrichments", []any{map[string]any{"name": "replay_of", "value": "01JD0000000000000000000001",
			"type": "replay", "provider": "keyhole", "data": map[string]any{"replay_of": "01JD0000000000000000000001", "target": "http://staging.crm:8080"}}}},
		{"01JD0000000000000000000005/4002", "dst_endpoint.hostname", "staging.crm"},
	}
	for _, tt := range tests {
		ev, ok := byKey[tt.event]
		if !ok {
			t.Fatalf("no event %s", tt.event)
		}
		got, _ := lookup(ev, tt.path)
		if g, w := jsonText(got), jsonText(tt.want); g != w {
			t.Errorf("%s %s = %s, want %s", tt.event, tt.path, g, w)
		}
	}
	// Nothing of a credential or a masked value leaves in any event.
	for _, ev := range evs {
		if s := jsonText(ev); strings.Contains(s, "upstream-key-1234") || strings.Contains(s, "eyJ.secret") || strings.Contains(s, "Ada") {
			t.Errorf("event %v holds a credential or a body", ev["metadata"])
		}
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestJSONLLine(t *testing.T) {
	items := backlog(t, recordSet(t, sampleSet()))
	if len(items) != 5 {
		t.Fatalf("%d items, want 5", len(items))
	}
	b, err := export.NewEncoder(export.JSONL, export.Product{}).Append(nil, items[0])
	if err != nil {
		t.Fatal(err)
	}
	var line struct {
		Cursor string `json:"cursor"`
		Hash   string `json:"hash"`
		recorder.Exchange
	}
	if err := json.Unmarshal(b, &line); err != nil {
		t.Fatal(err)
	}
	if line.Cursor != export.FormatCursor(items[0].Cursor) || line.Hash != items[0].Hash || line.ID != "01JD0000000000000000000001" {
		t.Errorf("line = cursor %q hash %q id %q, want %d %s and the first exchange", line.Cursor, line.Hash, line.ID, items[0].Cursor, items[0].Hash)
	}
	if line.Response == nil || line.Response.Body.Text != `{"name":"Ada","ssn":"***"}` {
		t.Errorf("line holds response %+v, want the recorded (masked) body", line.Response)
	}
	if got := line.Request.Header.Get("X-Api-Key"); got != recorder.Redacted {
		t.Errorf("X-Api-Key = %q, want it redacted", got)
	}
	for i := 1; i < len(items); i++ {
		if items[i].Cursor <= items[i-1].Cursor {
			t.Errorf("cursor %d after %d: not in chain order", items[i].Cursor, items[i-1].Cursor)
		}
	}
}
