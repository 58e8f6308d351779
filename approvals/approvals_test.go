package approvals_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/internal/testkit"
	"github.com/keyholehq/keyhole/store/sqlite"
)

func openStore(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), "sqlite://"+path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

var requester = approvals.Identity{Issuer: "https://idp.example", Subject: "agent-1", ClientID: "agent-1-client"}

func request(hold time.Duration) approvals.Request {
	return approvals.Request{Requester: requester, Route: "purge", Method: "POST", Path: "/customers/1/purge",
		Header: http.Header{"X-Tenant": {"acme"}}, Body: []byte(`{"x":1}`), ExchangeID: "01JD00000000000000000000XX",
		MinApprovals: 1, Hold: hold, TTL: 15 * time.Minute}
}

// TestHoldsAreBounded sends many identical requests at once: only a few are held open,
// the others are answered at once, and all wait on one approval.
func TestHoldsAreBounded(t *testing.T) {
	s := approvals.New(openStore(t, filepath.Join(t.TempDir(), "k.db")), approvals.Options{})
	defer s.Close()
	results := make(chan approvals.Admission, 20)
	for range 20 {
		go func() {
			adm, err := s.Admit(context.Background(), request(time.Minute))
			if err != nil {
				t.Error(err)
			}
			results <- adm
		}()
	}
	ids := map[string]bool{}
	for range 16 { // all but the held ones answer at once
		select {
		case adm := <-results:
			if adm.Outcome != approvals.AdmitPending {
				t.Errorf("outcome %v, want AdmitPending", adm.Outcome)
			}
			ids[adm.Approval.ID] = true
		case <-time.After(5 * time.Second):
			t.Fatal("more than 4 identical requests are held open")
		}
	}
	if len(ids) != 1 {
		t.Errorf("identical requests wait on %d approvals, want 1", len(ids))
	}
	big := request(time.Minute)
	big.Body = make([]byte, approvals.MaxBody+1)
	if adm, _ := s.Admit(context.Background(), big); adm.Outcome != approvals.AdmitTooLarge {
		t.Errorf("body of MaxBody+1 bytes = %v, want AdmitTooLarge", adm.Outcome)
	}
}

func TestBind(t *testing.T) {
	h := func(kv ...string) string {
		hdr := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			hdr.Add(kv[i], kv[i+1])
		}
		return approvals.HeadersHash(approvals.BoundHeaders(hdr))
	}
	body := approvals.BodyHash([]byte("b"))
	base := approvals.Bind(requester, "purge", "POST", "/a", "q=1", h("X-Tenant", "acme"), body)
	with := func(f func(*approvals.Identity)) approvals.Identity {
		id := requester
		f(&id)
		return id
	}
	for name, b := range map[string]string{
		"issuer":             approvals.Bind(with(func(i *approvals.Identity) { i.Issuer = "https://other.example" }), "purge", "POST", "/a", "q=1", h("X-Tenant", "acme"), body),
		"subject":            approvals.Bind(with(func(i *approvals.Identity) { i.Subject = "agent-2" }), "purge", "POST", "/a", "q=1", h("X-Tenant", "acme"), body),
		"client id":          approvals.Bind(with(func(i *approvals.Identity) { i.ClientID = "other" }), "purge", "POST", "/a", "q=1", h("X-Tenant", "acme"), body),
		"route":              approvals.Bind(requester, "purge2", "POST", "/a", "q=1", h("X-Tenant", "acme"), body),
		"method":             approvals.Bind(requester, "purge", "PUT", "/a", "q=1", h("X-Tenant", "acme"), body),
		"path":               approvals.Bind(requester, "purge", "POST", "/b", "q=1", h("X-Tenant", "acme"), body),
		"query":              approvals.Bind(requester, "purge", "POST", "/a", "q=2", h("X-Tenant", "acme"), body),
		"header":             approvals.Bind(requester, "purge", "POST", "/a", "q=1", h("X-Tenant", "megacorp"), body),
		"header added":       approvals.Bind(requester, "purge", "POST", "/a", "q=1", h("X-Tenant", "acme", "If-Match", "*"), body),
		"header value added": approvals.Bind(requester, "purge", "POST", "/a", "q=1", h("X-Tenant", "acme", "X-Tenant", "b"), body),
		"body":               approvals.Bind(requester, "purge", "POST", "/a", "q=1", h("X-Tenant", "acme"), approvals.BodyHash([]byte("c"))),
		// Field boundaries count: "/a" + "q=1" is not "/aq" + "=1".
		"boundary": approvals.Bind(requester, "purge", "POST", "/aq", "=1", h("X-Tenant", "acme"), body),
	} {
		if b == base {
			t.Errorf("a different %s binds alike", name)
		}
	}
	same := approvals.Bind(requester, "purge", "POST", "/a", "q=1",
		h("x-tenant", "acme", "User-Agent", "curl/8", "Traceparent", "00-abc-def-01", "Accept", "*/*"), body)
	if same != base {
		t.Error("the same request binds differently (header case, or headers that describe only the client)")
	}
}

// TestHoldSeesDecisionFromAnotherGateway runs two Services on one store file, as two
// gateway processes: a request held on one is released by a decision taken on the other.
func TestHoldSeesDecisionFromAnotherGateway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.db")
	a := approvals.New(openStore(t, path), approvals.Options{Poll: 20 * time.Millisecond})
	b := approvals.New(openStore(t, path), approvals.Options{Poll: 20 * time.Millisecond})
	done := make(chan approvals.Admission, 1)
	go func() {
		adm, err := a.Admit(context.Background(), request(10*time.Second))
		if err != nil {
			t.Error(err)
		}
		done <- adm
	}()
	var id string
	for deadline := time.Now().Add(5 * time.Second); id == "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if list, _ := b.Approvals(context.Background(), approvals.Filter{State: approvals.Pending}); len(list) == 1 {
			id = list[0].ID
		}
	}
	if id == "" {
		t.Fatal("no pending approval")
	}
	if _, err := b.Decide(context.Background(), id, approvals.Identity{Subject: "alice"}, approvals.Approve, "", approvals.ViaAPI); err != nil {
		t.Fatal(err)
	}
	select {
	case adm := <-done:
		if adm.Outcome != approvals.AdmitForward || adm.Approval.ID != id {
			t.Errorf("held request = %+v, want forwarded on %s", adm, id)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the decision on the other gateway did not release the held request")
	}
}

func TestCloseEndsHolds(t *testing.T) {
	s := approvals.New(openStore(t, filepath.Join(t.TempDir(), "k.db")), approvals.Options{})
	done := make(chan approvals.Admission, 1)
	go func() {
		adm, _ := s.Admit(context.Background(), request(time.Minute))
		done <- adm
	}()
	time.Sleep(50 * time.Millisecond)
	s.Close()
	select {
	case adm := <-done:
		if adm.Outcome != approvals.AdmitPending {
			t.Errorf("hold ended by Close = %v, want AdmitPending", adm.Outcome)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the hold")
	}
}

func TestHoldEndsWithClient(t *testing.T) {
	s := approvals.New(openStore(t, filepath.Join(t.TempDir(), "k.db")), approvals.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Admit(ctx, request(time.Minute)); err == nil {
		t.Error("Admit after the client went away = nil error, want the context's")
	}
	if list, _ := s.Approvals(context.Background(), approvals.Filter{State: approvals.Pending}); len(list) != 1 {
		t.Errorf("pending approvals = %d, want the one the gone client asked for", len(list))
	}
}

func TestSweepExpires(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	s := approvals.New(openStore(t, filepath.Join(t.TempDir(), "k.db")), approvals.Options{Now: clock})
	if adm, err := s.Admit(context.Background(), request(0)); err != nil || adm.Outcome != approvals.AdmitPending {
		t.Fatalf("Admit = %+v, %v", adm, err)
	}
	now = now.Add(16 * time.Minute)
	s.Sweep(context.Background())
	list, _ := s.Approvals(context.Background(), approvals.Filter{State: approvals.Expired})
	if len(list) != 1 {
		t.Fatalf("expired approvals after the sweep = %d, want 1", len(list))
	}
	// The requester still learns of the expiry once, then may ask again.
	if adm, _ := s.Admit(context.Background(), request(0)); adm.Outcome != approvals.AdmitTimedOut {
		t.Errorf("retry after the sweep = %v, want AdmitTimedOut", adm.Outcome)
	}
	if adm, _ := s.Admit(context.Background(), request(0)); adm.Outcome != approvals.AdmitPending || adm.Approval.ID == list[0].ID {
		t.Errorf("next retry = %+v, want a new pending approval", adm)
	}
}

func TestMessage(t *testing.T) {
	a := &approvals.Approval{ID: "01JDAPPROVAL", Route: "purge", Method: "DELETE", Path: "/customers/<@U123>",
		Requester: approvals.Identity{Subject: "agent&co", ClientID: "bot"}, Reason: "urgent <https://evil.example|click>",
		ExpiresAt: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)}
	msg := approvals.Message(a, approvals.NotifyConfig{PublicURL: "https://keyhole.example:9090/"}.ReviewURL(a.ID))
	for _, want := range []string{"DELETE `/customers/&lt;@U123&gt;` (route `purge`)", "`agent&amp;co` (client `bot`)",
		"Reason: `urgent &lt;https://evil.example|click&gt;`", "https://keyhole.example:9090/api/v1/approvals/01JDAPPROVAL",
		"keyhole approvals approve 01JDAPPROVAL", "2026-11-25T12:00:00Z"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if strings.ContainsAny(strings.ReplaceAll(msg, "&lt;", ""), "<>") {
		t.Errorf("message holds raw angle brackets, which Slack reads as links:\n%s", msg)
	}
}

// TestReviewURL: the webhook's link opens the console's page of the approval when the
// console is on, the API's otherwise, and there is none without public_url.
func TestReviewURL(t *testing.T) {
	tests := []struct {
		c    approvals.NotifyConfig
		want string
	}{
		{approvals.NotifyConfig{PublicURL: "https://k.example:9090/", Console: true}, "https://k.example:9090/ui/approvals/01J"},
		{approvals.NotifyConfig{PublicURL: "https://k.example:9090"}, "https://k.example:9090/api/v1/approvals/01J"},
		{approvals.NotifyConfig{Console: true}, ""},
	}
	for _, tt := range tests {
		if got := tt.c.ReviewURL("01J"); got != tt.want {
			t.Errorf("%+v.ReviewURL = %q, want %q", tt.c, got, tt.want)
		}
	}
}

func TestCleanText(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 100, "plain"},
		{"two\nlines\r\n", 100, "two lines"},
		{"bidi \u202eevil", 100, "bidi  evil"},
		{"bad \xff utf8", 100, "bad \uFFFD utf8"},
		{strings.Repeat("é", 10), 9, "éééé"}, // never half a character
	}
	for _, tt := range tests {
		if got := approvals.CleanText(tt.in, tt.max); got != tt.want {
			t.Errorf("CleanText(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestNotifier(t *testing.T) {
	hook := testkit.NewUpstream(t)
	var fails atomic.Int32
	fails.Store(1)
	hook.Respond = func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		case fails.Add(-1) >= 0:
			w.WriteHeader(http.StatusInternalServerError)
		}
	}
	logs := &testkit.Buffer{}
	n := approvals.NewNotifier(approvals.NotifyConfig{Webhook: hook.URL + "/hook?token=PLANTED-HOOK-SECRET", PublicURL: "https://k.example"},
		approvals.NotifierOptions{Attempts: 3, Backoff: 5 * time.Millisecond, Log: slogTo(logs)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)
	a := &approvals.Approval{ID: "01JDA", Route: "purge", Method: "POST", Path: "/p", Requester: requester}

	n.Notify(a)
	waitRequests(t, hook, 2) // one failure, then delivered
	var body struct{ Text string }
	if err := json.Unmarshal([]byte(hook.Requests()[1].Body), &body); err != nil || !strings.Contains(body.Text, "/p") {
		t.Errorf("delivered body %q: %v", hook.Requests()[1].Body, err)
	}

	hook.Reset()
	n.Set(approvals.NotifyConfig{Webhook: hook.URL + "/redirect"})
	n.Notify(a)
	waitRequests(t, hook, 3) // a redirect is a failure; it is never followed
	time.Sleep(50 * time.Millisecond)
	for _, r := range hook.Requests() {
		if r.RequestURI != "/redirect" {
			t.Errorf("the notifier followed a redirect to %s", r.RequestURI)
		}
	}
	if !strings.Contains(logs.String(), "not delivered") || strings.Contains(logs.String(), "PLANTED-HOOK-SECRET") {
		t.Errorf("logs: %s", logs.String())
	}

	hook.Reset()
	n.Set(approvals.NotifyConfig{})
	n.Notify(a)
	time.Sleep(50 * time.Millisecond)
	if got := len(hook.Requests()); got != 0 {
		t.Errorf("without a webhook, %d notifications were sent", got)
	}
}

func waitRequests(t *testing.T, u *testkit.Upstream, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if len(u.Requests()) >= n {
			return
		}
	}
	t.Fatalf("webhook received %d requests, want %d", len(u.Requests()), n)
}

func slogTo(w *testkit.Buffer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// TestIsRequester is the self-approval table: who counts as the requester of an
// approval, for the token shapes of Okta (people through one app share its cid; a service
// app's token has sub == cid), Entra ID (azp or v1's appid; an app's sub is its service
// principal's object id), Auth0 (an app's sub is "<client id>@clients"), Keycloak (an
// app's sub is its service-account user's id) and RFC 9068 (client_id). App is what
// identity.Principal.App says of the token; identity's TestAppToken checks it per shape.
func TestIsRequester(t *testing.T) {
	oktaIss, entraIss := "https://acme.okta.com/oauth2/default", "https://login.microsoftonline.com/t/v2.0"
	otherTenant := "https://login.microsoftonline.com/t2/v2.0"
	auth0Iss, kcIss := "https://acme.eu.auth0.com/", "https://sso.acme.test/realms/acme"
	ada := approvals.Identity{Issuer: oktaIss, Subject: "ada@example.com", ClientID: "0oaConsole"}
	agent := approvals.Identity{Issuer: oktaIss, Subject: "0oaAgent", ClientID: "0oaAgent", App: true}
	// Entra ID: the agent app c0ffee's own token, and people's tokens through it.
	entraAgent := approvals.Identity{Issuer: entraIss, Subject: "7d1e-sp-oid", ClientID: "c0ffee", App: true}
	entraAda := approvals.Identity{Issuer: entraIss, Subject: "AAAb-pairwise", ClientID: "c0ffee"}
	entraBob := approvals.Identity{Issuer: entraIss, Subject: "AAAc-pairwise", ClientID: "c0ffee"}
	// Auth0 and Keycloak: the agent app's own tokens, and a person's through it.
	auth0Agent := approvals.Identity{Issuer: auth0Iss, Subject: "Xa9agent@clients", ClientID: "Xa9agent", App: true}
	auth0Ada := approvals.Identity{Issuer: auth0Iss, Subject: "auth0|64ada", ClientID: "Xa9agent"}
	kcAgent := approvals.Identity{Issuer: kcIss, Subject: "5b0e2c1a-sa-user", ClientID: "agent", App: true}
	kcAda := approvals.Identity{Issuer: kcIss, Subject: "9f3c-ada", ClientID: "agent"}
	kcBob := approvals.Identity{Issuer: kcIss, Subject: "1a2b-bob", ClientID: "agent"}
	for _, c := range []struct {
		name    string
		by, req approvals.Identity
		want    bool
	}{
		{"the same person", ada, ada, true},
		{"the same subject from another issuer", approvals.Identity{Issuer: entraIss, Subject: "ada@example.com", ClientID: "c0ffee"}, ada, true},
		{"another person through the same Okta app", approvals.Identity{Issuer: oktaIss, Subject: "bob@example.com", ClientID: "0oaConsole"}, ada, false},
		{"another person through another app", approvals.Identity{Issuer: oktaIss, Subject: "bob@example.com", ClientID: "0oaCli"}, ada, false},
		{"a person approving an agent", ada, agent, false},
		{"the agent's own service token", agent, agent, true},
		{"the agent's app approving for a person it acts for", approvals.Identity{Issuer: oktaIss, Subject: "0oaConsole", ClientID: "0oaConsole", App: true}, ada, true},
		{"a person through the agent's app", approvals.Identity{Issuer: oktaIss, Subject: "carol@example.com", ClientID: "0oaAgent"}, agent, false},
		{"Entra: two people, one app", entraBob, entraAda, false},
		{"Entra: the app approving what a person asked through it", entraAgent, entraAda, true},
		{"Entra: the app approving its own request", entraAgent, entraAgent, true},
		{"Entra: the app, registered in another tenant, approving its own request", approvals.Identity{Issuer: otherTenant, Subject: "e42a-sp-oid-t2", ClientID: "c0ffee", App: true}, entraAgent, true},
		{"Entra: another app approving the app's request", approvals.Identity{Issuer: entraIss, Subject: "0b5e-sp-oid", ClientID: "deadbeef", App: true}, entraAgent, false},
		{"Entra: a person through the app approving the app's request", entraAda, entraAgent, false},
		{"Auth0: the app approving its own request", auth0Agent, auth0Agent, true},
		{"Auth0: the app approving what a person asked through it", auth0Agent, auth0Ada, true},
		{"Auth0: a person approving the app's request", approvals.Identity{Issuer: auth0Iss, Subject: "auth0|64bob", ClientID: "Qz1console"}, auth0Agent, false},
		{"Keycloak: the app approving what a person asked through it", kcAgent, kcAda, true},
		{"Keycloak: two people, one app", kcBob, kcAda, false},
		{"Keycloak: a person through the app approving the app's request", kcBob, kcAgent, false},
		{"RFC 9068 client_id: the client itself", approvals.Identity{Subject: "s6BhdRkqt3", ClientID: "s6BhdRkqt3", App: true}, approvals.Identity{Subject: "ada", ClientID: "s6BhdRkqt3"}, true},
		{"an app token without a client id approving a request without one", approvals.Identity{Subject: "svc", App: true}, approvals.Identity{Subject: "ada"}, false},
		{"no client ids, different subjects", approvals.Identity{Subject: "bob"}, approvals.Identity{Subject: "ada"}, false},
	} {
		if got := approvals.IsRequester(c.by, c.req); got != c.want {
			t.Errorf("%s: IsRequester = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestShownBody: approvers read what a backend decodes. A UTF-16 body shows as text
// with its encoding named, not as bytes a page would cut at the first NUL.
func TestShownBody(t *testing.T) {
	utf16le := []byte{0xff, 0xfe}
	for _, r := range `{"q":"DROP TABLE users"}` {
		utf16le = append(utf16le, byte(r), 0)
	}
	for _, c := range []struct {
		name string
		body []byte
		want string
	}{
		{"UTF-8 JSON, indented", []byte("{\n\t\"a\": 1\n}"), "{\n\t\"a\": 1\n}"},
		{"UTF-16LE with BOM", utf16le, "[utf-16le body, shown as UTF-8]\n" + `{"q":"DROP TABLE users"}`},
		{"a NUL inside", []byte("ok\x00hidden"), "ok\uFFFDhidden"},
		{"invalid UTF-8", []byte("a\xffb"), "a\uFFFDb"},
		{"an escape sequence", []byte("a\x1b[2Jb"), "a\uFFFD[2Jb"},
	} {
		if got := approvals.ShownBody(c.body); got != c.want {
			t.Errorf("%s: ShownBody = %q, want %q", c.name, got, c.want)
		}
	}
}
