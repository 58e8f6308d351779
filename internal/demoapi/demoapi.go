// Package demoapi is the sample internal API that `keyhole demo` puts behind the gateway:
// a small customer service holding the kind of data an agent must not see in full
// (emails, SSNs, card numbers). Every call must carry the API key it was built with.
package demoapi

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"sync"

	"github.com/go-chi/chi/v5"
)

// Customer is one record of the sample API.
type Customer struct {
	ID      int      `json:"id"`
	Name    string   `json:"name"`
	Email   string   `json:"email"`
	Phone   string   `json:"phone"`
	SSN     string   `json:"ssn"`
	Payment Payment  `json:"payment"`
	Tags    []string `json:"tags"`
}

// Payment is a customer's card on file.
type Payment struct {
	CardNumber string `json:"card_number"`
	Expiry     string `json:"expiry"`
}

// API is the sample service. Its zero value is not usable; call New.
type API struct {
	apiKey string
	mu     sync.Mutex
	nextID int
	byID   map[int]Customer
}

// New returns the API with a few seeded customers. Requests must carry apiKey in X-Api-Key.
func New(apiKey string) *API {
	a := &API{apiKey: apiKey, byID: map[int]Customer{}}
	for _, c := range []Customer{
		{Name: "Ada Lovelace", Email: "ada@example.com", Phone: "+44 20 7946 0958", SSN: "078-05-1120",
			Payment: Payment{CardNumber: "4242424242424242", Expiry: "12/29"}, Tags: []string{"vip"}},
		{Name: "Grace Hopper", Email: "grace@example.com", Phone: "+1 212 555 0100", SSN: "219-09-9999",
			Payment: Payment{CardNumber: "5555555555554444", Expiry: "01/28"}, Tags: []string{}},
		{Name: "Alan Turing", Email: "alan@example.com", Phone: "+44 161 496 0000", SSN: "123-45-6789",
			Payment: Payment{CardNumber: "378282246310005", Expiry: "07/27"}, Tags: []string{"research"}},
	} {
		a.nextID++
		c.ID = a.nextID
		a.byID[c.ID] = c
	}
	return a
}

// Handler returns the API's routes: GET/POST /customers, GET/DELETE /customers/{id},
// POST /customers/bulk/delete.
func (a *API) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(a.requireKey)
	r.Get("/customers", a.list)
	r.Post("/customers", a.create)
	r.Get("/customers/{id}", a.get)
	r.Delete("/customers/{id}", a.remove)
	r.Post("/customers/bulk/delete", a.bulkDelete)
	return r
}

func (a *API) requireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Api-Key")), []byte(a.apiKey)) != 1 {
			reply(w, http.StatusUnauthorized, map[string]string{"error": "missing or wrong X-Api-Key"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *API) list(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	out := make([]Customer, 0, len(a.byID))
	for _, c := range a.byID {
		out = append(out, c)
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	reply(w, http.StatusOK, map[string]any{"customers": out})
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.Atoi(chi.URLParam(r, "id"))
	a.mu.Lock()
	c, ok := a.byID[id]
	a.mu.Unlock()
	if !ok {
		reply(w, http.StatusNotFound, map[string]string{"error": "no such customer"})
		return
	}
	reply(w, http.StatusOK, c)
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	var c Customer
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&c); err != nil || c.Name == "" {
		reply(w, http.StatusBadRequest, map[string]string{"error": "want a JSON customer with a name"})
		return
	}
	a.mu.Lock()
	a.nextID++
	c.ID = a.nextID
	a.byID[c.ID] = c
	a.mu.Unlock()
	reply(w, http.StatusCreated, c)
}

func (a *API) remove(w http.ResponseWriter, r *http.Request) {
	id, _ := strconv.Atoi(chi.URLParam(r, "id"))
	a.mu.Lock()
	_, ok := a.byID[id]
	delete(a.byID, id)
	a.mu.Unlock()
	if !ok {
		reply(w, http.StatusNotFound, map[string]string{"error": "no such customer"})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) bulkDelete(w http.ResponseWriter, _ *http.Request) {
	a.mu.Lock()
	n := len(a.byID)
	a.byID = map[int]Customer{}
	a.mu.Unlock()
	reply(w, http.StatusOK, map[string]int{"deleted": n})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
