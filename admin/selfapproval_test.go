package admin_test

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/approvals"
	"github.com/keyholehq/keyhole/config"
)

// TestSelfApprovalByProvider decides, through the admin API, approvals asked for with
// the token shapes of Okta, Entra ID, Auth0 and Keycloak: an app's own
// (client-credentials) token may not approve what was asked through that app, although
// on Entra ID, Auth0 and Keycloak its subject is not its client id; another person who
// logged in through the same app may.
func TestSelfApprovalByProvider(t *testing.T) {
	const spOID = "7d1e0b4a-5c2f-4e8b-9a1d-3f6c2b8e0a11"
	var (
		entraAda = map[string]any{"sub": "HKZpfaHyWadeOouYlit", "oid": "690222be-ada", "azp": "c0ffee", "scp": "access_as_user", "ver": "2.0"}
		entraBob = map[string]any{"sub": "Qm9iUGFpcndpc2VTdWI", "oid": "8c1d5e2f-bob", "azp": "c0ffee", "scp": "access_as_user", "ver": "2.0"}
		entraApp = map[string]any{"sub": spOID, "oid": spOID, "azp": "c0ffee", "roles": []string{"Crm.Write"}, "idtyp": "app", "ver": "2.0"}
		entraV1  = map[string]any{"sub": "bDNfcm9JU1FVMjIy", "oid": "02223b6b-ada", "appid": "75dbe77f", "scp": "user_impersonation", "ver": "1.0"}
		// An Entra v1 app token without the idtyp optional claim.
		entraV1App = map[string]any{"sub": spOID, "oid": spOID, "appid": "75dbe77f", "roles": []string{"Crm.Write"}, "ver": "1.0"}
		auth0Ada   = map[string]any{"sub": "auth0|64ada", "azp": "Xa9agent", "scope": "crm.write"}
		auth0App   = map[string]any{"sub": "Xa9agent@clients", "azp": "Xa9agent", "gty": "client-credentials", "scope": "crm.write"}
		auth0Other = map[string]any{"sub": "Zz1ops@clients", "azp": "Zz1ops", "gty": "client-credentials", "scope": "crm.write"}
		kcAda      = map[string]any{"sub": "9f3c2d1e-ada", "azp": "agent", "preferred_username": "ada"}
		kcBob      = map[string]any{"sub": "1a2b3c4d-bob", "azp": "agent", "preferred_username": "bob"}
		kcApp      = map[string]any{"sub": "5b0e2c1a-sa", "azp": "agent", "client_id": "agent", "preferred_username": "service-account-agent"}
		oktaAda    = map[string]any{"sub": "ada@example.com", "uid": "00u1", "cid": "0oaConsole"}
		oktaBob    = map[string]any{"sub": "bob@example.com", "uid": "00u2", "cid": "0oaConsole"}
		oktaApp    = map[string]any{"sub": "0oaConsole", "cid": "0oaConsole"}
	)
	var approvers []string
	for _, c := range []map[string]any{entraBob, entraApp, entraV1App, auth0App, auth0Other, kcBob, kcApp, oktaBob, oktaApp} {
		approvers = append(approvers, c["sub"].(string))
	}
	h := newAPIHarnessConfig(t, 0, &config.Config{Routes: []config.Route{{
		Name:     "purge",
		Match:    config.Match{Methods: []string{"POST"}, Path: "/crm/customers/{id}/purge"},
		Upstream: "crm",
		Approval: &config.Approval{Approvers: config.Allow{Subjects: approvers}, TTL: config.Duration(15 * time.Minute)},
	}}})

	for i, c := range []struct {
		name          string
		requester, by map[string]any
		want          int
		wantError     string
	}{
		{"Entra: the agent app approving what a person asked through it", entraAda, entraApp, 403, "self_approval"},
		{"Entra v1: the agent app, no idtyp, approving what a person asked through it", entraV1, entraV1App, 403, "self_approval"},
		{"Entra: the agent app approving its own request", entraApp, entraApp, 403, "self_approval"},
		{"Entra: another person through the same app", entraAda, entraBob, 200, ""},
		{"Auth0: the agent app approving what a person asked through it", auth0Ada, auth0App, 403, "self_approval"},
		{"Auth0: another app approving the agent app's request", auth0App, auth0Other, 200, ""},
		{"Keycloak: the agent app approving what a person asked through it", kcAda, kcApp, 403, "self_approval"},
		{"Keycloak: another person through the same app", kcAda, kcBob, 200, ""},
		{"Okta: the app approving what a person asked through it", oktaAda, oktaApp, 403, "self_approval"},
		{"Okta: another person through the same app", oktaAda, oktaBob, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := h.ask(t, c.requester, fmt.Sprintf("/crm/customers/%d/purge", i))
			status, out := h.decide(t, id, c.by)
			if code, _ := out["error"].(string); status != c.want || code != c.wantError {
				t.Errorf("approve = %d %v, want %d %s", status, out, c.want, c.wantError)
			}
			ap, err := h.approvals.Approval(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if wantState := map[int]approvals.State{200: approvals.Approved, 403: approvals.Pending}[c.want]; ap.State != wantState {
				t.Errorf("approval is %s, want %s", ap.State, wantState)
			}
		})
	}
}

// ask holds a request for approval on route purge as the gateway does, its requester
// read from a token with claims, and returns the approval's id.
func (h *apiHarness) ask(t *testing.T, claims map[string]any, path string) string {
	t.Helper()
	claims = maps.Clone(claims)
	claims["aud"] = "api://keyhole"
	p, err := h.verifier.Verify(t.Context(), h.iss.Token(t, claims))
	if err != nil {
		t.Fatal(err)
	}
	adm, err := h.approvals.Admit(t.Context(), approvals.Request{
		// As the data plane (proxy) records a requester: no App.
		Requester: approvals.Identity{Issuer: p.Issuer, Subject: p.Subject, ClientID: p.ClientID, Groups: p.Groups, Scopes: p.Scopes},
		Route:     "purge", Method: "POST", Path: path, TTL: 15 * time.Minute,
	})
	if err != nil || adm.Outcome != approvals.AdmitPending {
		t.Fatalf("Admit = %v, %v, want pending", adm.Outcome, err)
	}
	return adm.Approval.ID
}

// decide approves approval id through the admin API with a token with claims.
func (h *apiHarness) decide(t *testing.T, id string, claims map[string]any) (int, map[string]any) {
	t.Helper()
	claims = maps.Clone(claims)
	claims["aud"] = "api://keyhole"
	req, _ := http.NewRequest("POST", h.srv.URL+"/api/v1/approvals/"+id+"/approve", strings.NewReader(`{"comment":"ok"}`))
	req.Header.Set("Authorization", "Bearer "+h.iss.Token(t, claims))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("POST approve = %d %s: %v", resp.StatusCode, b, err)
	}
	return resp.StatusCode, out
}
