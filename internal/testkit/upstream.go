package testkit

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Received is what an Upstream saw of one request, exactly as it arrived.
type Received struct {
	Method     string      `json:"method"`
	RequestURI string      `json:"request_uri"` // the raw request target, as sent on the wire
	Host       string      `json:"host"`
	Header     http.Header `json:"header"`
	Body       string      `json:"body"`
	// Trailer holds the request trailers that arrived after the body, if any.
	Trailer http.Header `json:"trailer,omitempty"`
}

// Upstream is a real HTTP server standing in for a backend API. It records every request
// it receives and, unless Respond is set, answers 200 with the Received as JSON.
// It is safe for concurrent use; the server closes when the test ends.
type Upstream struct {
	*httptest.Server
	// Respond, when set before requests arrive, answers instead of the echo.
	Respond http.HandlerFunc

	mu   sync.Mutex
	reqs []Received
}

// NewUpstream starts an Upstream on a loopback port.
func NewUpstream(t testing.TB) *Upstream {
	t.Helper()
	u := &Upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rec := Received{Method: r.Method, RequestURI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: string(body), Trailer: r.Trailer.Clone()}
	u.mu.Lock()
	u.reqs = append(u.reqs, rec)
	u.mu.Unlock()
	if u.Respond != nil {
		u.Respond(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rec)
}

// Requests returns a copy of every request received so far, in arrival order.
func (u *Upstream) Requests() []Received {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Received(nil), u.reqs...)
}

// Reset forgets the requests received so far.
func (u *Upstream) Reset() {
	u.mu.Lock()
	u.reqs = nil
	u.mu.Unlock()
}
