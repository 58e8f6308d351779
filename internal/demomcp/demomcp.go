// Package demomcp is the sample MCP server that `keyhole demo` and the load harness put
// behind the gateway: a Streamable HTTP server on the official Go SDK with a few customer
// tools whose results carry what an agent must not see in full (an SSN, a card number),
// one that needs a person's approval (delete_customer) and one no gateway should pass
// (drop_table). Every request must carry the API key it was built with, as the gateway
// injects it. It answers application/json, never an event stream, so that its answers read
// well with curl; its data is deterministic.
package demomcp

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Customer is what lookup_customer answers, in structuredContent and as JSON text.
type Customer struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	SSN   string `json:"ssn"`
	Card  Card   `json:"card"`
}

// Card is a customer's card on file.
type Card struct {
	Number string `json:"number"`
	Expiry string `json:"expiry"`
}

// Summary is one element of list_customers: nothing sensitive.
type Summary struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

// Options choose how the server keeps sessions.
type Options struct {
	// Stateless serves every request in a temporary session: no Mcp-Session-Id, no
	// initialize needed, GET and DELETE answered 405. The load harness uses it; the demo
	// keeps sessions, as most MCP servers do.
	Stateless bool
}

// Server is the sample MCP server. Its zero value is not usable; call New. It is safe
// for concurrent use.
type Server struct {
	apiKey string
	opts   Options
	mu     sync.Mutex
	byID   map[int]Customer
}

// New returns the server with three seeded customers. Requests must carry apiKey in
// X-Api-Key.
func New(apiKey string, opts Options) *Server {
	s := &Server{apiKey: apiKey, opts: opts, byID: map[int]Customer{}}
	for i, c := range []Customer{
		{Name: "Ada Lovelace", Email: "ada@example.com", SSN: "078-05-1120", Card: Card{Number: "4242424242424242", Expiry: "12/29"}},
		{Name: "Grace Hopper", Email: "grace@example.com", SSN: "219-09-9999", Card: Card{Number: "5555555555554444", Expiry: "01/28"}},
		{Name: "Alan Turing", Email: "alan@example.com", SSN: "123-45-6789", Card: Card{Number: "378282246310005", Expiry: "07/27"}},
	} {
		c.ID = i + 1
		s.byID[c.ID] = c
	}
	return s
}

// Handler returns the Streamable HTTP endpoint, on whatever path it is mounted.
func (s *Server) Handler() http.Handler {
	srv := s.mcpServer()
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: s.opts.Stateless, JSONResponse: true})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Api-Key")), []byte(s.apiKey)) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"missing or wrong X-Api-Key"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// idArgs are the arguments of lookup_customer.
type idArgs struct {
	ID int `json:"id" jsonschema:"the customer's id (1 to 3 in the demo)"`
}

// deleteArgs are the arguments of delete_customer.
type deleteArgs struct {
	ID   int  `json:"id" jsonschema:"the customer's id"`
	Hard bool `json:"hard,omitempty" jsonschema:"erase instead of marking deleted"`
}

// tableArgs are the arguments of drop_table.
type tableArgs struct {
	Table string `json:"table" jsonschema:"the table to drop"`
}

// customerList is what list_customers answers.
type customerList struct {
	Customers []Summary `json:"customers"`
}

func (s *Server) mcpServer() *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "crm-demo", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "lookup_customer", Description: "One customer's record: name, email, SSN and card on file."},
		func(_ context.Context, _ *mcp.CallToolRequest, in idArgs) (*mcp.CallToolResult, Customer, error) {
			s.mu.Lock()
			c, ok := s.byID[in.ID]
			s.mu.Unlock()
			if !ok {
				return nil, Customer{}, fmt.Errorf("no customer with id %d", in.ID)
			}
			return nil, c, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "list_customers", Description: "Every customer's id and name."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, customerList, error) {
			return nil, customerList{Customers: s.summaries()}, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "delete_customer", Description: "Delete a customer."},
		func(_ context.Context, _ *mcp.CallToolRequest, in deleteArgs) (*mcp.CallToolResult, any, error) {
			s.mu.Lock()
			_, ok := s.byID[in.ID]
			delete(s.byID, in.ID)
			s.mu.Unlock()
			if !ok {
				return nil, nil, fmt.Errorf("no customer with id %d", in.ID)
			}
			return text(fmt.Sprintf("customer %d deleted", in.ID)), nil, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "drop_table", Description: "Drop a table of the CRM database."},
		func(_ context.Context, _ *mcp.CallToolRequest, in tableArgs) (*mcp.CallToolResult, any, error) {
			return text(fmt.Sprintf("table %s dropped", in.Table)), nil, nil
		})
	srv.AddResource(&mcp.Resource{URI: "crm://customers/index", Name: "customers", MIMEType: "application/json",
		Description: "Every customer's id and name."},
		func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			b, err := json.Marshal(customerList{Customers: s.summaries()})
			if err != nil {
				return nil, err
			}
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{
				{URI: "crm://customers/index", MIMEType: "application/json", Text: string(b)}}}, nil
		})
	srv.AddPrompt(&mcp.Prompt{Name: "summarize_customer", Description: "Ask for a short summary of one customer.",
		Arguments: []*mcp.PromptArgument{{Name: "id", Description: "the customer's id", Required: true}}},
		func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{
				Text: "Call lookup_customer with id " + req.Params.Arguments["id"] + " and summarise the customer in two sentences."}}}}, nil
		})
	return srv
}

func (s *Server) summaries() []Summary {
	s.mu.Lock()
	out := make([]Summary, 0, len(s.byID))
	for _, c := range s.byID {
		out = append(out, Summary{ID: c.ID, Name: c.Name})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}
