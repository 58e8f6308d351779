package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/export"
	"github.com/keyholehq/keyhole/internal/pgtest"
	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/postgres"
	"github.com/keyholehq/keyhole/store/sqlite"
)

// exportConfig is serveConfig with an auditor role on the admin plane and a store.
const exportConfig = `
listen: "%s"
admin: { listen: "%s", roles: { auditors: { groups: [auditors] } } }
identity:
  issuers:
    - { issuer: "%s", audiences: [api://keyhole] }
upstreams:
  crm:
    url: "%s"
    credential: { header: X-Api-Key, value: "${CRM_KEY}" }
routes:
  - name: read
    match: { methods: [GET], path: "/customers/{id}" }
    upstream: crm
    allow: { groups: [readers] }
recorder: { store: "sqlite://records.db", mode: best_effort }
`

// completedIDs returns the ids of every completed exchange in the store file.
func completedIDs(t *testing.T, file string) map[string]bool {
	t.Helper()
	st, err := sqlite.OpenReadOnly(context.Background(), "sqlite://"+file)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return tailIDs(t, st)
}

// tailIDs returns the ids of every completed exchange in st.
func tailIDs(t *testing.T, st recorder.Store) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	var items []export.Item
	err := export.Tail{}.Run(context.Background(), st, 0, false, func(b []export.Item) error { items = append(items, b...); return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		ids[it.Exchange.ID] = true
	}
	return ids
}

// readStream reads up to n lines of one stream connection after cursor after, skipping
// heartbeats, and returns them; the connection is then closed (a shipper restarting).
func readStream(t *testing.T, admin, tok string, after string, n int, wait time.Duration) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+admin+"/api/v1/exchanges/stream?format=jsonl&after="+after, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("stream = %d %s, want 200 application/x-ndjson", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var lines []map[string]any
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 8<<20)
	for len(lines) < n && sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

// TestStreamResumesWithoutLossOrDuplicates reads the live export of a real gateway in
// pieces, reconnecting after the last cursor each time, while load is being recorded,
// and checks that it got every completed exchange of the store exactly once, in chain order.
func TestStreamResumesWithoutLossOrDuplicates(t *testing.T) {
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	p := startFault(t, func(data, adm string) string {
		return fmt.Sprintf(exportConfig, data, adm, iss.Config().Issuer, up.URL)
	}, "CRM_KEY=export-test-key-0001")
	reader := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	auditor := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "audrey", "groups": []string{"auditors"}})

	if s, _ := get("http://"+p.Admin+"/api/v1/exchanges/stream", reader); s != http.StatusForbidden {
		t.Errorf("stream with a reader's token = %d, want 403", s)
	}
	load := startLoad(p.Data, reader, 4, customers)
	seen := map[string]bool{}
	cursor, last := "", int64(0)
	check := func(lines []map[string]any) {
		for _, l := range lines {
			id, c := l["id"].(string), l["cursor"].(string)
			n, err := export.ParseCursor(c)
			if err != nil || n <= last {
				t.Fatalf("cursor %q after %d: not increasing", c, last)
			}
			if seen[id] {
				t.Fatalf("exchange %s streamed twice (cursor %s)", id, c)
			}
			if strings.Contains(fmt.Sprint(l), "export-test-key-0001") {
				t.Fatalf("a line holds the upstream credential")
			}
			seen[id], cursor, last = true, c, n
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for piece := 0; time.Now().Before(deadline); piece++ {
		check(readStream(t, p.Admin, auditor, cursor, 5+piece%17, 2*time.Second))
	}
	load.Stop()
	if len(seen) == 0 {
		t.Fatal("nothing streamed while the load ran")
	}
	// Once the load is over, the stream catches up with the store, then idles.
	want := map[string]bool{}
	for range 20 {
		check(readStream(t, p.Admin, auditor, cursor, 1000, time.Second))
		if want = completedIDs(t, filepath.Join(p.Dir, "records.db")); len(want) == len(seen) {
			break
		}
	}
	checkStreamed(t, seen, want)
	t.Logf("%d exchanges streamed exactly once while recorded, last cursor %s", len(seen), cursor)
}

// checkStreamed fails t unless the exchanges seen streamed are those the store holds.
func checkStreamed(t *testing.T, seen, stored map[string]bool) {
	t.Helper()
	for id := range stored {
		if !seen[id] {
			t.Errorf("exchange %s is in the store but was never streamed", id)
		}
	}
	if len(seen) != len(stored) {
		t.Errorf("streamed %d exchanges, the store holds %d", len(seen), len(stored))
	}
}

// TestStreamAcrossReplicas reads the live export of two replicas on one PostgreSQL in
// pieces, each piece from the other replica after the last cursor the previous one gave,
// while load spread over both is recorded: a shipper behind a load balancer gets every
// completed exchange of the shared store exactly once, in chain order, whichever replica
// answers.
func TestStreamAcrossReplicas(t *testing.T) {
	dsn := pgtest.DSN(t)
	iss := testkit.NewIssuer(t)
	up := testkit.NewUpstream(t)
	cfg := strings.Replace(exportConfig, `recorder: { store: "sqlite://records.db", mode: best_effort }`+"\n", strictStore(dsn), 1)
	var gws []*faultProc
	for range 2 {
		gws = append(gws, startFault(t, func(data, adm string) string {
			return fmt.Sprintf(cfg, data, adm, iss.Config().Issuer, up.URL)
		}, "CRM_KEY=export-test-key-0002"))
	}
	reader := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "ada", "groups": []string{"readers"}})
	auditor := iss.Token(t, map[string]any{"aud": "api://keyhole", "sub": "audrey", "groups": []string{"auditors"}})

	load := startLoadOn([]string{gws[0].Data, gws[1].Data}, reader, 4, customers)
	seen := map[string]bool{}
	cursor, last := "", int64(0)
	from := map[int]int{}
	check := func(replica int, lines []map[string]any) {
		for _, l := range lines {
			id, c := l["id"].(string), l["cursor"].(string)
			n, err := export.ParseCursor(c)
			if err != nil || n <= last {
				t.Fatalf("replica %d: cursor %q after %d: not increasing", replica, c, last)
			}
			if seen[id] {
				t.Fatalf("exchange %s streamed twice (replica %d, cursor %s)", id, replica, c)
			}
			seen[id], cursor, last = true, c, n
			from[replica]++
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for piece := 0; time.Now().Before(deadline); piece++ {
		check(piece%2, readStream(t, gws[piece%2].Admin, auditor, cursor, 5+piece%13, 2*time.Second))
	}
	load.Stop()
	if from[0] == 0 || from[1] == 0 {
		t.Fatalf("lines streamed by replica = %v, want some from each while the load ran", from)
	}
	st, err := postgres.OpenReadOnly(context.Background(), dsn, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var want map[string]bool
	for piece := 0; piece < 20; piece++ {
		check(piece%2, readStream(t, gws[piece%2].Admin, auditor, cursor, 1000, time.Second))
		if want = tailIDs(t, st); len(want) == len(seen) {
			break
		}
	}
	checkStreamed(t, seen, want)
	t.Logf("%d exchanges streamed exactly once from two replicas (%v lines by replica), last cursor %s", len(seen), from, cursor)
}

// TestRecordsTailAndExport runs `keyhole records tail` and `records export` on a store
// written by a recorder, in both formats, and resumes a tail after a cursor.
func TestRecordsTailAndExport(t *testing.T) {
	file := filepath.Join(t.TempDir(), "k.db")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, "sqlite://"+file)
	if err != nil {
		t.Fatal(err)
	}
	rec := recorder.New(st, recorder.Policy{}, recorder.Options{})
	base := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	for i := range 6 {
		rec.Refused(&recorder.Exchange{ID: fmt.Sprintf("01JD000000000000000000%04d", i), ReceivedAt: base.Add(time.Duration(i) * time.Minute),
			Identity: &recorder.Identity{Subject: "agent"}, Route: "read", Decision: []string{"allowed", "forbidden"}[i%2],
			Request:  recorder.Request{Method: "GET", Path: fmt.Sprintf("/customers/%d", i), Header: map[string][]string{"Authorization": {"Bearer tok-secret"}}},
			Response: &recorder.Response{Status: []int{200, 403}[i%2]}})
	}
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st.Close()
	dsn := "sqlite://" + file

	tail := func(args ...string) []string {
		t.Helper()
		tctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer cancel()
		var out, errOut testkit.Buffer
		if err := run(tctx, append([]string{"keyhole", "records", "tail", "--store", dsn}, args...), testEnv, &out, &errOut); err != nil {
			t.Fatalf("records tail %v: %v\n%s", args, err, errOut.String())
		}
		return strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	}
	all := tail()
	if len(all) != 6 {
		t.Fatalf("records tail wrote %d lines, want 6:\n%s", len(all), strings.Join(all, "\n"))
	}
	c3, err := lineCursor([]byte(all[2]))
	if err != nil {
		t.Fatal(err)
	}
	rest := tail("--after", export.FormatCursor(c3))
	if strings.Join(rest, "\n") != strings.Join(all[3:], "\n") {
		t.Errorf("tail --after the third line's cursor =\n%s\nwant the last three lines:\n%s", strings.Join(rest, "\n"), strings.Join(all[3:], "\n"))
	}
	ocsf := tail("--format", "ocsf")
	if len(ocsf) != 6 || !strings.Contains(ocsf[0], `"class_uid":4002`) || !strings.Contains(ocsf[1], `"disposition":"Blocked"`) {
		t.Errorf("records tail --format ocsf =\n%s\nwant six HTTP Activity events, the second Blocked", strings.Join(ocsf, "\n"))
	}
	for _, l := range append(all, ocsf...) {
		if strings.Contains(l, "tok-secret") {
			t.Errorf("line %s holds the token", l)
		}
	}

	out, errOut, err := runCmd(t, testEnv, "records", "export", "--format", "jsonl", "--decision", "forbidden", "--store", dsn)
	if err != nil {
		t.Fatalf("records export: %v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("export --decision forbidden wrote %d lines, want 3:\n%s", len(lines), out)
	}
	for _, l := range lines {
		if !strings.Contains(l, `"decision":"forbidden"`) || !strings.Contains(l, `"cursor":"`) {
			t.Errorf("export line %s: want a forbidden exchange with its cursor", l)
		}
	}
	if _, errOut, err := runCmd(t, testEnv, "records", "export", "--format", "xml", "--store", dsn); err == nil || !strings.Contains(errOut, "want ocsf or jsonl") {
		t.Errorf("export --format xml = %v %q, want a usage error", err, errOut)
	}
	if out, _, err := runCmd(t, testEnv, "records", "export", "--format", "har", "--store", dsn); err != nil || !strings.Contains(out, `"log"`) {
		t.Errorf("export --format har = %v, want a HAR file", err)
	}
}
