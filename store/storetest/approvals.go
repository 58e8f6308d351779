package storetest

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/approvals"
)

// aid returns the id of approval i: ids sort like i, as ULIDs sort by time.
func aid(i int) string { return fmt.Sprintf("a%06d", i) }

// newApproval returns approval i, requested by subject on route: created i seconds
// after base, expiring an hour later, needing one approval.
func newApproval(i int, subject, route string) *approvals.Approval {
	req := approvals.Identity{Issuer: "https://issuer.test", Subject: subject, ClientID: "cli"}
	body := fmt.Sprintf(`{"n":%d}`, i)
	hash := approvals.BodyHash([]byte(body))
	path := fmt.Sprintf("/v1/items/%d", i)
	created := base.Add(time.Duration(i) * time.Second)
	return &approvals.Approval{
		ID: aid(i), Binding: approvals.Bind(req, route, "POST", path, "", approvals.HeadersHash(nil), hash),
		Route: route, Method: "POST", Path: path,
		Body: body, BodySize: int64(len(body)), BodyHash: hash,
		Requester: req, ExchangeID: xid(i),
		CreatedAt: created, ExpiresAt: created.Add(time.Hour), MinApprovals: 1,
	}
}

// create stores approvals, failing the test on an error.
func create(t *testing.T, s Store, as ...*approvals.Approval) {
	t.Helper()
	for _, a := range as {
		if err := s.CreateApproval(t.Context(), a, 0); err != nil {
			t.Fatalf("CreateApproval(%s): %v", a.ID, err)
		}
	}
}

// approver returns an approver named name at the test issuer.
func approver(name string) approvals.Identity {
	return approvals.Identity{Issuer: "https://issuer.test", Subject: name, ClientID: "admin-ui"}
}

func verdict(name string, v approvals.Verdict, at time.Time) approvals.Decision {
	return approvals.Decision{Approver: approver(name), Verdict: v, At: at}
}

// decide decides approval id, failing the test on an error.
func decide(t *testing.T, s Store, id string, d approvals.Decision, now time.Time) *approvals.Approval {
	t.Helper()
	a, err := s.DecideApproval(t.Context(), id, d, now)
	if err != nil {
		t.Fatalf("DecideApproval(%s, %s %s): %v", id, d.Approver.Subject, d.Verdict, err)
	}
	return a
}

func get(t *testing.T, s Store, id string) *approvals.Approval {
	t.Helper()
	a, err := s.Approval(t.Context(), id)
	if err != nil {
		t.Fatalf("Approval(%s): %v", id, err)
	}
	return a
}

func testApprovalRoundTrip(t *testing.T, b Backend) {
	s, _ := b.open(t)
	cet := time.FixedZone("CET", 3600)
	created := time.Date(2025, 3, 1, 13, 0, 0, 123456789, cet)
	full := &approvals.Approval{
		ID:       "01JNK3ZQ7Y8X6W5V4T3S2R1Q0P",
		Binding:  approvals.Bind(approvals.Identity{Subject: "alice"}, "payments", "POST", "/v1/pay", "a=1&b=%20", approvals.HeadersHash(nil), approvals.BodyHash([]byte("x"))),
		Route:    "payments",
		Tool:     "refund_payment",
		Method:   "POST",
		Path:     "/v1/pay",
		Query:    "a=1&b=%20",
		Body:     "{\"amount\":100,\"card\":\"<redacted>\"}\xff\x00", // not UTF-8, with a NUL
		BodySize: 70000,
		Headers:  http.Header{"X-Tenant": {"acme"}, "Idempotency-Key": {"k-1", "k-2"}},
		BodyHash: approvals.BodyHash([]byte("x")),
		Requester: approvals.Identity{Issuer: "https://issuer.test", Subject: "alice", ClientID: "cli",
			Groups: []string{"payments", "ops"}, Scopes: []string{"pay:write"}},
		Reason:       "refund ticket 42",
		ExchangeID:   "01JNK3ZQ7Y8X6W5V4T3S2R1Q0Q",
		CreatedAt:    created,
		ExpiresAt:    created.Add(15*time.Minute + time.Nanosecond),
		MinApprovals: 2,
		// Not stored: a new approval is Pending and open.
		State:     approvals.Approved,
		Closed:    true,
		DecidedAt: new(created),
		UsedBy:    "x",
		Decisions: []approvals.Decision{{Verdict: approvals.Approve}},
	}
	create(t, s, full)
	if full.State != approvals.Pending || full.Closed || full.DecidedAt != nil || full.UsedBy != "" || full.Decisions != nil {
		t.Errorf("CreateApproval left %+v, want it Pending, open, undecided", full)
	}
	want := *full
	want.CreatedAt = created.UTC()
	want.ExpiresAt = full.ExpiresAt.UTC()

	bare := newApproval(1, "bob", "items")
	bare.Requester.Groups = []string{} // empty reads back as nil
	create(t, s, bare)
	wantBare := *bare
	wantBare.Requester.Groups = nil

	check := func(name string, got, want *approvals.Approval) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s =\n%+v\nwant\n%+v", name, got, want)
		}
		if got.CreatedAt.Location() != time.UTC {
			t.Errorf("%s CreatedAt in %v, want UTC", name, got.CreatedAt.Location())
		}
	}
	check("Approval", get(t, s, full.ID), &want)
	check("Approval(bare)", get(t, s, bare.ID), &wantBare)
	byBinding, err := s.OpenApproval(t.Context(), full.Binding)
	if err != nil {
		t.Fatal(err)
	}
	check("OpenApproval", byBinding, &want)

	// Decisions read back whole and in the order they were made.
	at1 := time.Date(2025, 3, 1, 13, 5, 0, 1, cet)
	at2 := at1.Add(time.Second)
	d1 := approvals.Decision{Approver: approvals.Identity{Issuer: "https://issuer.test", Subject: "carol", ClientID: "ui",
		Groups: []string{"approvers"}, Scopes: []string{"approve"}}, Verdict: approvals.Approve, Comment: "ok", At: at1, Via: approvals.ViaConsole}
	d2 := approvals.Decision{Approver: approvals.Identity{Issuer: "https://other.test", Subject: "dave"}, Verdict: approvals.Approve, At: at2, Via: approvals.ViaAPI}
	now := at2.Add(time.Millisecond)
	decide(t, s, full.ID, d1, at1)
	got := decide(t, s, full.ID, d2, now)
	d1.At, d2.At = at1.UTC(), at2.UTC()
	want.State = approvals.Approved
	want.DecidedAt = new(now.UTC())
	want.Decisions = []approvals.Decision{d1, d2}
	check("DecideApproval", got, &want)
	check("Approval after decisions", get(t, s, full.ID), &want)
	list, err := s.Approvals(t.Context(), approvals.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("Approvals = %d approvals, want 2", len(list))
	}
	// Newest (greatest id) first: "a…" sorts after a ULID's leading digit.
	check("Approvals[0]", list[0], &wantBare)
	check("Approvals[1]", list[1], &want)

	used := now.Add(time.Second)
	if ok, err := s.ConsumeApproval(t.Context(), full.ID, "01JNK40000000000000000000X", used); err != nil || !ok {
		t.Fatalf("ConsumeApproval = %v, %v; want true", ok, err)
	}
	want.State, want.Closed, want.UsedAt, want.UsedBy = approvals.Used, true, new(used.UTC()), "01JNK40000000000000000000X"
	check("Approval after use", get(t, s, full.ID), &want)

	if _, err := s.Approval(t.Context(), "missing"); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("Approval(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.OpenApproval(t.Context(), full.Binding); !errors.Is(err, approvals.ErrNotFound) {
		t.Errorf("OpenApproval of a used binding = %v, want ErrNotFound", err)
	}
}

func testCreateApprovalInvalid(t *testing.T, b Backend) {
	s, _ := b.open(t)
	tests := []struct {
		name   string
		change func(a *approvals.Approval)
	}{
		{"no id", func(a *approvals.Approval) { a.ID = "" }},
		{"no binding", func(a *approvals.Approval) { a.Binding = "" }},
		{"no creation time", func(a *approvals.Approval) { a.CreatedAt = time.Time{} }},
		{"no expiry", func(a *approvals.Approval) { a.ExpiresAt = time.Time{} }},
		{"no approvals needed", func(a *approvals.Approval) { a.MinApprovals = 0 }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newApproval(i, "alice", "items")
			tt.change(a)
			if err := s.CreateApproval(t.Context(), a, 0); err == nil {
				t.Error("CreateApproval = nil error, want one")
			}
		})
	}
	if err := s.CreateApproval(t.Context(), nil, 0); err == nil {
		t.Error("CreateApproval(nil) = nil error, want one")
	}
	create(t, s, newApproval(0, "alice", "items"))
	dup := newApproval(1, "alice", "items")
	dup.ID = aid(0)
	if err := s.CreateApproval(t.Context(), dup, 0); err == nil || errors.Is(err, approvals.ErrOpen) {
		t.Errorf("CreateApproval of a taken id = %v, want an error other than ErrOpen", err)
	}
	if list, err := s.Approvals(t.Context(), approvals.Filter{}); err != nil || len(list) != 1 {
		t.Errorf("Approvals = %d, %v; want the one valid approval", len(list), err)
	}
}

func testCreateApprovalOpen(t *testing.T, b Backend) {
	// Each case opens approval 1, does something to it, then asks for another
	// approval of the same request.
	now := base.Add(time.Minute)
	tests := []struct {
		name    string
		then    func(t *testing.T, s Store)
		wantErr error
	}{
		{"pending", func(t *testing.T, s Store) {}, approvals.ErrOpen},
		{"approved", func(t *testing.T, s Store) {
			decide(t, s, aid(1), verdict("carol", approvals.Approve, now), now)
		}, approvals.ErrOpen},
		{"denied, not reported", func(t *testing.T, s Store) {
			decide(t, s, aid(1), verdict("carol", approvals.Deny, now), now)
		}, approvals.ErrOpen},
		{"expired, not reported", func(t *testing.T, s Store) {
			if as, err := s.ExpireApprovals(t.Context(), base.Add(2*time.Hour)); err != nil || len(as) != 2 {
				t.Fatalf("ExpireApprovals = %d, %v; want 2", len(as), err)
			}
		}, approvals.ErrOpen},
		{"closed", func(t *testing.T, s Store) {
			if ok, err := s.CloseApproval(t.Context(), aid(1)); err != nil || !ok {
				t.Fatalf("CloseApproval = %v, %v; want true", ok, err)
			}
		}, nil},
		{"used", func(t *testing.T, s Store) {
			decide(t, s, aid(1), verdict("carol", approvals.Approve, now), now)
			if ok, err := s.ConsumeApproval(t.Context(), aid(1), xid(9), now); err != nil || !ok {
				t.Fatalf("ConsumeApproval = %v, %v; want true", ok, err)
			}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := b.open(t)
			first := newApproval(1, "alice", "items")
			create(t, s, first)
			other := newApproval(3, "alice", "items") // another request is not held up
			create(t, s, other)
			tt.then(t, s)

			again := newApproval(2, "alice", "items")
			again.Binding = first.Binding
			err := s.CreateApproval(t.Context(), again, 0)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("second CreateApproval = %v, want %v", err, tt.wantErr)
			}
			held, err := s.OpenApproval(t.Context(), first.Binding)
			if err != nil {
				t.Fatal(err)
			}
			wantOpen := aid(1)
			if tt.wantErr == nil {
				wantOpen = aid(2)
			}
			if held.ID != wantOpen {
				t.Errorf("OpenApproval = %s, want %s", held.ID, wantOpen)
			}
			if _, err := s.Approval(t.Context(), aid(2)); (tt.wantErr == nil) != (err == nil) {
				t.Errorf("Approval(%s) after CreateApproval = %v, want %v", aid(2), err, tt.wantErr)
			}
		})
	}
}

// createRacing makes n approvals at once, spread over three stores on s's database
// (as three gateway replicas would), and counts those created and those refused with
// want; any other error fails the test.
func createRacing(t *testing.T, s Store, db db, n, maxPending int, approval func(i int) *approvals.Approval, want error) (created, refused int32) {
	t.Helper()
	stores := db.replicas(t, s, 3)
	var c, r atomic.Int32
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			switch err := stores[i%len(stores)].CreateApproval(t.Context(), approval(i), maxPending); {
			case err == nil:
				c.Add(1)
			case errors.Is(err, want):
				r.Add(1)
			default:
				t.Errorf("CreateApproval: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	return c.Load(), r.Load()
}

// Of many processes asking for an approval of the same request at once, one creates it.
func testCreateApprovalRace(t *testing.T, b Backend) {
	s, db := b.open(t)
	binding := newApproval(0, "alice", "items").Binding
	created, refused := createRacing(t, s, db, 20, 0, func(i int) *approvals.Approval {
		a := newApproval(i, "alice", "items")
		a.Binding = binding
		return a
	}, approvals.ErrOpen)
	if created != 1 || refused != 19 {
		t.Errorf("CreateApproval created %d, refused %d; want 1, 19", created, refused)
	}
}

func testDecideApproval(t *testing.T, b Backend) {
	created := base // approval i is created at base + i s; all steps happen soon after
	soon := created.Add(time.Minute)
	type step struct {
		d         approvals.Decision
		now       time.Time // soon when zero
		wantErr   error     // errAny for an error that is no sentinel
		wantState approvals.State
	}
	errAny := errors.New("any error")
	approve := func(name string) approvals.Decision { return verdict(name, approvals.Approve, soon) }
	deny := func(name string) approvals.Decision { return verdict(name, approvals.Deny, soon) }
	tests := []struct {
		name   string
		min    int
		before func(t *testing.T, s Store, id string)
		steps  []step
	}{
		{name: "one approval", min: 1, steps: []step{
			{d: approve("carol"), wantState: approvals.Approved},
		}},
		{name: "two distinct approvers", min: 2, steps: []step{
			{d: approve("carol"), wantState: approvals.Pending},
			{d: approve("dave"), wantState: approvals.Approved},
		}},
		{name: "same approver twice", min: 2, steps: []step{
			{d: approve("carol"), wantState: approvals.Pending},
			{d: approve("carol"), wantErr: approvals.ErrAlreadyDecided},
			{d: deny("carol"), wantErr: approvals.ErrAlreadyDecided},
			// Another client of the same person is the same approver.
			{d: approvals.Decision{Approver: approvals.Identity{Issuer: "https://issuer.test", Subject: "carol", ClientID: "cli"}, Verdict: approvals.Approve},
				wantErr: approvals.ErrAlreadyDecided},
			// The same subject at another issuer is the same person, too.
			{d: approvals.Decision{Approver: approvals.Identity{Issuer: "https://other.test", Subject: "carol"}, Verdict: approvals.Approve},
				wantErr: approvals.ErrAlreadyDecided},
			{d: approve("dave"), wantState: approvals.Approved},
		}},
		{name: "deny", min: 1, steps: []step{
			{d: deny("carol"), wantState: approvals.Denied},
		}},
		{name: "deny after an approval", min: 2, steps: []step{
			{d: approve("carol"), wantState: approvals.Pending},
			{d: deny("dave"), wantState: approvals.Denied},
		}},
		{name: "after approval", min: 1, steps: []step{
			{d: approve("carol"), wantState: approvals.Approved},
			{d: approve("dave"), wantErr: approvals.ErrNotPending},
			{d: deny("dave"), wantErr: approvals.ErrNotPending},
		}},
		{name: "after denial", min: 2, steps: []step{
			{d: deny("carol"), wantState: approvals.Denied},
			{d: approve("dave"), wantErr: approvals.ErrNotPending},
		}},
		{name: "at expiry", min: 1, steps: []step{
			{d: approve("carol"), now: created.Add(time.Hour), wantErr: approvals.ErrNotPending},
			{d: approve("carol"), now: created.Add(2 * time.Hour), wantErr: approvals.ErrNotPending},
			{d: approve("carol"), now: created.Add(time.Hour - time.Nanosecond), wantState: approvals.Approved},
		}},
		{name: "expired", min: 1, before: func(t *testing.T, s Store, id string) {
			if _, err := s.ExpireApprovals(t.Context(), created.Add(2*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, steps: []step{
			{d: approve("carol"), wantErr: approvals.ErrNotPending},
		}},
		{name: "closed", min: 1, before: func(t *testing.T, s Store, id string) {
			if _, err := s.CloseApproval(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		}, steps: []step{
			{d: approve("carol"), wantErr: approvals.ErrNotPending},
		}},
		{name: "invalid decisions", min: 1, steps: []step{
			{d: verdict("carol", "maybe", soon), wantErr: errAny},
			{d: approvals.Decision{Verdict: approvals.Approve}, wantErr: errAny},
			{d: approve("carol"), wantState: approvals.Approved},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := b.open(t)
			a := newApproval(0, "alice", "items")
			a.MinApprovals = tt.min
			create(t, s, a)
			if tt.before != nil {
				tt.before(t, s, a.ID)
			}
			var made []approvals.Decision
			for i, st := range tt.steps {
				now := st.now
				if now.IsZero() {
					now = soon
				}
				got, err := s.DecideApproval(t.Context(), a.ID, st.d, now)
				if st.wantErr != nil {
					if err == nil || (st.wantErr != errAny && !errors.Is(err, st.wantErr)) {
						t.Fatalf("step %d: DecideApproval = %v, want %v", i, err, st.wantErr)
					}
					// Nothing was written.
					if n := len(get(t, s, a.ID).Decisions); n != len(made) {
						t.Fatalf("step %d: %d decisions after a refused one, want %d", i, n, len(made))
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: DecideApproval: %v", i, err)
				}
				made = append(made, st.d)
				if got.State != st.wantState {
					t.Errorf("step %d: state = %s, want %s", i, got.State, st.wantState)
				}
				switch {
				case got.State == approvals.Pending && got.DecidedAt != nil:
					t.Errorf("step %d: pending approval has DecidedAt %v", i, *got.DecidedAt)
				case got.State != approvals.Pending && (got.DecidedAt == nil || !got.DecidedAt.Equal(now)):
					t.Errorf("step %d: DecidedAt = %v, want %v", i, got.DecidedAt, now)
				}
				var subjects, want []string
				for _, d := range got.Decisions {
					subjects = append(subjects, d.Approver.Issuer+" "+d.Approver.Subject+" "+string(d.Verdict))
				}
				for _, d := range made {
					want = append(want, d.Approver.Issuer+" "+d.Approver.Subject+" "+string(d.Verdict))
				}
				if !slices.Equal(subjects, want) {
					t.Errorf("step %d: decisions = %q, want %q", i, subjects, want)
				}
			}
		})
	}

	t.Run("unknown id", func(t *testing.T) {
		s, _ := b.open(t)
		if _, err := s.DecideApproval(t.Context(), "missing", approve("carol"), soon); !errors.Is(err, approvals.ErrNotFound) {
			t.Errorf("DecideApproval(missing) = %v, want ErrNotFound", err)
		}
	})
	t.Run("zero time is now", func(t *testing.T) {
		s, _ := b.open(t)
		create(t, s, newApproval(0, "alice", "items"))
		got := decide(t, s, aid(0), approvals.Decision{Approver: approver("carol"), Verdict: approvals.Approve}, soon)
		if len(got.Decisions) != 1 || !got.Decisions[0].At.Equal(soon) {
			t.Errorf("decisions = %+v, want one at %v", got.Decisions, soon)
		}
	})
}

func testConsumeApproval(t *testing.T, b Backend) {
	soon := base.Add(time.Minute)
	tests := []struct {
		name string
		// prepare brings approval 0 (expiring at base + 1h) into the state under test.
		prepare func(t *testing.T, s Store)
		now     time.Time
		want    bool
		// wantState is the state after the consume.
		wantState approvals.State
	}{
		{"approved", approve0, soon, true, approvals.Used},
		{"approved, just before expiry", approve0, base.Add(time.Hour - time.Nanosecond), true, approvals.Used},
		{"approved, at expiry", approve0, base.Add(time.Hour), false, approvals.Approved},
		{"pending", func(t *testing.T, s Store) {}, soon, false, approvals.Pending},
		{"denied", func(t *testing.T, s Store) {
			decide(t, s, aid(0), verdict("carol", approvals.Deny, soon), soon)
		}, soon, false, approvals.Denied},
		{"expired", func(t *testing.T, s Store) {
			approve0(t, s)
			if _, err := s.ExpireApprovals(t.Context(), base.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, soon, false, approvals.Expired},
		{"closed", func(t *testing.T, s Store) {
			approve0(t, s)
			if _, err := s.CloseApproval(t.Context(), aid(0)); err != nil {
				t.Fatal(err)
			}
		}, soon, false, approvals.Expired},
		{"used", func(t *testing.T, s Store) {
			approve0(t, s)
			if ok, err := s.ConsumeApproval(t.Context(), aid(0), "first", soon); err != nil || !ok {
				t.Fatalf("first ConsumeApproval = %v, %v; want true", ok, err)
			}
		}, soon, false, approvals.Used},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := b.open(t)
			create(t, s, newApproval(0, "alice", "items"))
			tt.prepare(t, s)
			got, err := s.ConsumeApproval(t.Context(), aid(0), "x1", tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ConsumeApproval = %v, want %v", got, tt.want)
			}
			a := get(t, s, aid(0))
			if a.State != tt.wantState {
				t.Errorf("state after ConsumeApproval = %s, want %s", a.State, tt.wantState)
			}
			if tt.want && (!a.Closed || a.UsedBy != "x1" || a.UsedAt == nil || !a.UsedAt.Equal(tt.now)) {
				t.Errorf("consumed approval = closed %v, used by %q at %v; want closed, x1, %v", a.Closed, a.UsedBy, a.UsedAt, tt.now)
			}
		})
	}
	t.Run("unknown id", func(t *testing.T) {
		s, _ := b.open(t)
		if ok, err := s.ConsumeApproval(t.Context(), "missing", "x1", soon); ok || err != nil {
			t.Errorf("ConsumeApproval(missing) = %v, %v; want false, nil", ok, err)
		}
	})
}

// approve0 approves approval 0 a minute after base.
func approve0(t *testing.T, s Store) {
	t.Helper()
	soon := base.Add(time.Minute)
	decide(t, s, aid(0), verdict("carol", approvals.Approve, soon), soon)
}

// Of many requests racing to use one approval, in one process or in several, exactly
// one is forwarded.
func testConsumeApprovalRace(t *testing.T, b Backend) {
	const racers = 50
	soon := base.Add(time.Minute)
	tests := []struct {
		name   string
		stores int
	}{
		{"one store", 1},
		{"three stores on one database", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, db := b.open(t)
			stores := db.replicas(t, s, tt.stores)
			create(t, s, newApproval(0, "alice", "items"))
			approve0(t, s)
			var wins atomic.Int32
			var winner atomic.Value
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range racers {
				wg.Go(func() {
					<-start
					ok, err := stores[i%len(stores)].ConsumeApproval(t.Context(), aid(0), xid(i), soon)
					if err != nil {
						t.Errorf("ConsumeApproval: %v", err)
						return
					}
					if ok {
						wins.Add(1)
						winner.Store(xid(i))
					}
				})
			}
			close(start)
			wg.Wait()
			if n := wins.Load(); n != 1 {
				t.Fatalf("ConsumeApproval returned true %d times, want once", n)
			}
			if a := get(t, s, aid(0)); a.State != approvals.Used || a.UsedBy != winner.Load() {
				t.Errorf("approval = %s, used by %q; want used by the winner %v", a.State, a.UsedBy, winner.Load())
			}
		})
	}
}

// testDecideApprovalRace has approvers on three stores decide one approval needing two
// of them at once: each decision counts once, the approval is approved exactly when the
// second approval lands, and decisions are numbered without a gap.
func testDecideApprovalRace(t *testing.T, b Backend) {
	s, db := b.open(t)
	stores := db.replicas(t, s, 3)
	a := newApproval(0, "alice", "items")
	a.MinApprovals = 2
	create(t, s, a)
	soon := base.Add(time.Minute)
	const approvers = 12
	var accepted, approvedBy, notPending atomic.Int32
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range approvers {
		wg.Go(func() {
			<-start
			got, err := stores[i%len(stores)].DecideApproval(t.Context(), aid(0), verdict(fmt.Sprintf("approver%d", i), approvals.Approve, soon), soon)
			switch {
			case errors.Is(err, approvals.ErrNotPending):
				notPending.Add(1)
			case err != nil:
				t.Errorf("DecideApproval: %v", err)
			default:
				accepted.Add(1)
				if got.State == approvals.Approved {
					approvedBy.Add(1)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	if accepted.Load() != 2 || approvedBy.Load() != 1 || notPending.Load() != approvers-2 {
		t.Errorf("accepted %d (approving %d), refused as not pending %d; want 2 (1), %d",
			accepted.Load(), approvedBy.Load(), notPending.Load(), approvers-2)
	}
	if got := get(t, s, aid(0)); got.State != approvals.Approved || len(got.Decisions) != 2 {
		t.Errorf("approval = %s with %d decisions, want approved with 2", got.State, len(got.Decisions))
	}
}

func testCloseApproval(t *testing.T, b Backend) {
	soon := base.Add(time.Minute)
	tests := []struct {
		name      string
		prepare   func(t *testing.T, s Store)
		want      bool
		wantState approvals.State
	}{
		{"pending", func(t *testing.T, s Store) {}, true, approvals.Expired},
		{"approved", approve0, true, approvals.Expired},
		{"denied", func(t *testing.T, s Store) {
			decide(t, s, aid(0), verdict("carol", approvals.Deny, soon), soon)
		}, true, approvals.Denied},
		{"expired", func(t *testing.T, s Store) {
			if _, err := s.ExpireApprovals(t.Context(), base.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, true, approvals.Expired},
		{"used", func(t *testing.T, s Store) {
			approve0(t, s)
			if ok, err := s.ConsumeApproval(t.Context(), aid(0), "x1", soon); err != nil || !ok {
				t.Fatalf("ConsumeApproval = %v, %v; want true", ok, err)
			}
		}, false, approvals.Used},
		{"closed", func(t *testing.T, s Store) {
			if ok, err := s.CloseApproval(t.Context(), aid(0)); err != nil || !ok {
				t.Fatalf("first CloseApproval = %v, %v; want true", ok, err)
			}
		}, false, approvals.Expired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := b.open(t)
			create(t, s, newApproval(0, "alice", "items"))
			tt.prepare(t, s)
			before := get(t, s, aid(0))
			got, err := s.CloseApproval(t.Context(), aid(0))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("CloseApproval = %v, want %v", got, tt.want)
			}
			a := get(t, s, aid(0))
			if a.State != tt.wantState || !a.Closed {
				t.Errorf("after CloseApproval: state %s, closed %v; want %s, closed", a.State, a.Closed, tt.wantState)
			}
			// Closing changes nothing else.
			a.State, a.Closed, before.State, before.Closed = "", false, "", false
			if !reflect.DeepEqual(a, before) {
				t.Errorf("CloseApproval changed %+v to %+v", before, a)
			}
		})
	}
	t.Run("unknown id", func(t *testing.T) {
		s, _ := b.open(t)
		if ok, err := s.CloseApproval(t.Context(), "missing"); ok || err != nil {
			t.Errorf("CloseApproval(missing) = %v, %v; want false, nil", ok, err)
		}
	})
}

func testExpireApprovals(t *testing.T, b Backend) {
	s, _ := b.open(t)
	// Approval i is created at base + i s and expires an hour later; now is when
	// approval 3 expires.
	now := base.Add(time.Hour + 3*time.Second)
	soon := base.Add(time.Minute)
	for i := range 8 {
		create(t, s, newApproval(i, "alice", "items"))
	}
	decide(t, s, aid(1), verdict("carol", approvals.Approve, soon), soon) // approved, due
	decide(t, s, aid(2), verdict("carol", approvals.Deny, soon), soon)    // denied, due: stays denied
	decide(t, s, aid(4), verdict("carol", approvals.Approve, soon), soon) // approved, not due
	if _, err := s.CloseApproval(t.Context(), aid(0)); err != nil {       // closed, due
		t.Fatal(err)
	}
	decide(t, s, aid(5), verdict("carol", approvals.Approve, soon), soon) // used
	if ok, err := s.ConsumeApproval(t.Context(), aid(5), "x1", soon); err != nil || !ok {
		t.Fatalf("ConsumeApproval = %v, %v", ok, err)
	}
	// 3 expires exactly now; 6 and 7 are pending and not due.

	got, err := s.ExpireApprovals(t.Context(), now)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range got {
		ids = append(ids, a.ID)
		if a.State != approvals.Expired || a.Closed {
			t.Errorf("ExpireApprovals returned %s %s, closed %v; want expired, open", a.ID, a.State, a.Closed)
		}
		if stored := get(t, s, a.ID); !reflect.DeepEqual(stored, a) {
			t.Errorf("ExpireApprovals returned %+v, store holds %+v", a, stored)
		}
	}
	if want := []string{aid(1), aid(3)}; !slices.Equal(ids, want) {
		t.Errorf("ExpireApprovals = %v, want %v", ids, want)
	}
	if a := get(t, s, aid(1)); a.DecidedAt == nil || !a.DecidedAt.Equal(soon) || len(a.Decisions) != 1 {
		t.Errorf("expired approval %s lost its decision: %+v", aid(1), a)
	}
	wantStates := []approvals.State{approvals.Expired, approvals.Expired, approvals.Denied, approvals.Expired,
		approvals.Approved, approvals.Used, approvals.Pending, approvals.Pending}
	for i, want := range wantStates {
		if a := get(t, s, aid(i)); a.State != want {
			t.Errorf("approval %s = %s, want %s", aid(i), a.State, want)
		}
	}
	if again, err := s.ExpireApprovals(t.Context(), now); err != nil || len(again) != 0 {
		t.Errorf("second ExpireApprovals = %d, %v; want none", len(again), err)
	}
	// The requester's retry finds the expired approval until it is closed.
	if a, err := s.OpenApproval(t.Context(), newApproval(3, "alice", "items").Binding); err != nil || a.State != approvals.Expired {
		t.Errorf("OpenApproval of an expired approval = %+v, %v; want it, expired", a, err)
	}
}

func testPendingApprovals(t *testing.T, b Backend) {
	s, _ := b.open(t)
	now := base.Add(30 * time.Minute)
	soon := base.Add(time.Minute)
	// alice: 0, 1 pending; 2 pending but expiring before now; 3 approved; 4 closed.
	// bob: 5 pending.
	for i := range 6 {
		a := newApproval(i, "alice", "items")
		if i == 5 {
			a = newApproval(i, "bob", "items")
		}
		if i == 2 {
			a.ExpiresAt = now
		}
		create(t, s, a)
	}
	decide(t, s, aid(3), verdict("carol", approvals.Approve, soon), soon)
	if _, err := s.CloseApproval(t.Context(), aid(4)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		subject string
		want    int
	}{
		{"alice", 2},
		{"bob", 1},
		{"", 3},
		{"nobody", 0},
	}
	for _, tt := range tests {
		got, err := s.PendingApprovals(t.Context(), tt.subject, now)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("PendingApprovals(%q) = %d, want %d", tt.subject, got, tt.want)
		}
	}
	if got, _ := s.PendingApprovals(t.Context(), "", base.Add(2*time.Hour)); got != 0 {
		t.Errorf("PendingApprovals after every expiry = %d, want 0", got)
	}
}

func testApprovals(t *testing.T, b Backend) {
	s, _ := b.open(t)
	soon := base.Add(time.Minute)
	// 30 approvals: subject alternates alice/bob, route by thirds, every fifth denied,
	// every seventh approved.
	for i := range 30 {
		create(t, s, newApproval(i, []string{"alice", "bob"}[i%2], []string{"items", "orders", "admin"}[i%3]))
	}
	for i := range 30 {
		switch {
		case i%5 == 0:
			decide(t, s, aid(i), verdict("carol", approvals.Deny, soon), soon)
		case i%7 == 0:
			decide(t, s, aid(i), verdict("carol", approvals.Approve, soon), soon)
		}
	}
	ids := func(keep func(i int) bool) []string {
		var out []string
		for i := 29; i >= 0; i-- {
			if keep(i) {
				out = append(out, aid(i))
			}
		}
		return out
	}
	all := func(int) bool { return true }
	tests := []struct {
		name string
		f    approvals.Filter
		want []string
	}{
		{"all, newest first", approvals.Filter{}, ids(all)},
		{"limit", approvals.Filter{Limit: 3}, ids(func(i int) bool { return i >= 27 })},
		{"state", approvals.Filter{State: approvals.Denied}, ids(func(i int) bool { return i%5 == 0 })},
		{"pending", approvals.Filter{State: approvals.Pending}, ids(func(i int) bool { return i%5 != 0 && i%7 != 0 })},
		{"route", approvals.Filter{Route: "admin"}, ids(func(i int) bool { return i%3 == 2 })},
		{"subject", approvals.Filter{Subject: "bob"}, ids(func(i int) bool { return i%2 == 1 })},
		{"before", approvals.Filter{Before: aid(5)}, ids(func(i int) bool { return i < 5 })},
		{"combined", approvals.Filter{Subject: "alice", Route: "items", State: approvals.Pending},
			ids(func(i int) bool { return i%2 == 0 && i%3 == 0 && i%5 != 0 && i%7 != 0 })},
		{"nothing", approvals.Filter{Subject: "nobody"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			list, err := s.Approvals(t.Context(), tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range list {
				got = append(got, a.ID)
				want := 0
				if a.State != approvals.Pending {
					want = 1
				}
				if len(a.Decisions) != want {
					t.Errorf("%s (%s) has %d decisions, want %d", a.ID, a.State, len(a.Decisions), want)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Approvals(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}

	t.Run("pages", func(t *testing.T) {
		var got []string
		f := approvals.Filter{Subject: "alice", Limit: 4}
		pages := 0
		for {
			list, err := s.Approvals(t.Context(), f)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) == 0 {
				break
			}
			pages++
			for _, a := range list {
				got = append(got, a.ID)
			}
			f.Before = list[len(list)-1].ID
		}
		if want := ids(func(i int) bool { return i%2 == 0 }); !slices.Equal(got, want) {
			t.Errorf("paged Approvals = %v, want %v", got, want)
		}
		if pages != 4 { // 15 approvals, 4 a page
			t.Errorf("pages = %d, want 4", pages)
		}
	})
}

func testApprovalsLimit(t *testing.T, b Backend) {
	s, db := b.open(t)
	// Written behind the store's back, in one statement: 501 approvals one by one
	// would take a synced commit each.
	const cols = 25
	var q strings.Builder
	q.WriteString(`INSERT INTO approvals (id, binding, route, method, path, query, headers, body, body_size, body_hash,
		requester_issuer, requester_subject, requester_client_id, requester_groups, requester_scopes,
		reason, exchange_id, created_ns, expires_ns, min_approvals, state, closed, decided_ns, used_ns, used_by) VALUES `)
	var args []any
	for i := range maxApprovalLimit + 1 {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?" + strings.Repeat(", ?", cols-1) + ")")
		args = append(args, aid(i), fmt.Sprintf("b%d", i), "items", "GET", "/", "", "{}", []byte{}, 0, "", "", "alice", "", "[]", "[]",
			"", "", 0, 1, 1, "pending", false, nil, nil, "")
	}
	db.exec(t, q.String(), args...)
	tests := []struct {
		limit, want int
	}{
		{0, defaultApprovalLimit},
		{-1, defaultApprovalLimit},
		{1, 1},
		{maxApprovalLimit, maxApprovalLimit},
		{5000, maxApprovalLimit},
	}
	for _, tt := range tests {
		list, err := s.Approvals(t.Context(), approvals.Filter{Limit: tt.limit})
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != tt.want {
			t.Errorf("Approvals(Limit %d) = %d approvals, want %d", tt.limit, len(list), tt.want)
		}
	}
	// Decisions of more approvals than one query names are all found.
	db.exec(t, `INSERT INTO approval_decisions (approval_id, seq, approver_issuer, approver_subject, approver_client_id,
		approver_groups, approver_scopes, verdict, comment, at_ns)
		SELECT id, 1, '', 'carol', '', '[]', '[]', 'approve', '', 0 FROM approvals`)
	as, err := s.ExpireApprovals(t.Context(), base)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != maxApprovalLimit+1 {
		t.Fatalf("ExpireApprovals = %d approvals, want %d", len(as), maxApprovalLimit+1)
	}
	for _, a := range as {
		if len(a.Decisions) != 1 {
			t.Fatalf("approval %s has %d decisions, want 1", a.ID, len(a.Decisions))
		}
	}
}

// testApprovalsReadOnly checks that an auditor's read-only store reads approvals and
// refuses every change to them.
func testApprovalsReadOnly(t *testing.T, b Backend) {
	s, db := b.open(t)
	soon := base.Add(time.Minute)
	for i := range 3 {
		create(t, s, newApproval(i, "alice", "items"))
	}
	decide(t, s, aid(1), verdict("carol", approvals.Approve, soon), soon)

	ro := b.OpenReadOnly(t, db.dsn)
	if a, err := ro.Approval(t.Context(), aid(1)); err != nil || a.State != approvals.Approved || len(a.Decisions) != 1 {
		t.Errorf("read-only Approval = %+v, %v; want it approved with its decision", a, err)
	}
	if a, err := ro.OpenApproval(t.Context(), newApproval(2, "alice", "items").Binding); err != nil || a.ID != aid(2) {
		t.Errorf("read-only OpenApproval = %+v, %v; want %s", a, err, aid(2))
	}
	if list, err := ro.Approvals(t.Context(), approvals.Filter{}); err != nil || len(list) != 3 {
		t.Errorf("read-only Approvals = %d, %v; want 3", len(list), err)
	}
	if n, err := ro.PendingApprovals(t.Context(), "", soon); err != nil || n != 2 {
		t.Errorf("read-only PendingApprovals = %d, %v; want 2", n, err)
	}

	writes := []struct {
		name string
		call func() error
	}{
		{"CreateApproval", func() error { return ro.CreateApproval(t.Context(), newApproval(9, "alice", "items"), 0) }},
		{"DecideApproval", func() error {
			_, err := ro.DecideApproval(t.Context(), aid(0), verdict("carol", approvals.Approve, soon), soon)
			return err
		}},
		{"ConsumeApproval", func() error { _, err := ro.ConsumeApproval(t.Context(), aid(1), "x1", soon); return err }},
		{"CloseApproval", func() error { _, err := ro.CloseApproval(t.Context(), aid(0)); return err }},
		{"ExpireApprovals", func() error { _, err := ro.ExpireApprovals(t.Context(), base.Add(2*time.Hour)); return err }},
	}
	for _, w := range writes {
		if err := w.call(); err == nil {
			t.Errorf("%s on a read-only store = nil error, want one", w.name)
		}
	}
	list, err := s.Approvals(t.Context(), approvals.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		want := approvals.Pending
		if a.ID == aid(1) {
			want = approvals.Approved
		}
		if a.State != want || a.Closed || len(list) != 3 {
			t.Errorf("after refused writes: %d approvals, %s %s closed %v; want 3, %s open", len(list), a.ID, a.State, a.Closed, want)
		}
	}
}

// The partial unique index holds one open approval per binding even against a writer
// that skips CreateApproval's check, and lets closed ones share it.
func testOpenBindingIndex(t *testing.T, b Backend) {
	s, db := b.open(t)
	first := newApproval(0, "alice", "items")
	create(t, s, first)
	insert := `INSERT INTO approvals (id, binding, route, method, path, query, headers, body, body_size, body_hash,
		requester_issuer, requester_subject, requester_client_id, requester_groups, requester_scopes,
		reason, exchange_id, created_ns, expires_ns, min_approvals, state, closed, decided_ns, used_ns, used_by)
		VALUES (?, ?, '', '', '', '', '{}', ?, 0, '', '', '', '', '[]', '[]', '', '', 0, 1, 1, ?, ?, NULL, NULL, '')`
	if err := b.Exec(t, db.dsn, insert, aid(1), first.Binding, []byte{}, approvals.Pending, false); err == nil {
		t.Error("second open row with one binding inserted, want a constraint error")
	}
	db.exec(t, insert, aid(2), first.Binding, []byte{}, approvals.Used, true)
	db.exec(t, insert, aid(3), first.Binding, []byte{}, approvals.Expired, true)
	if a, err := s.OpenApproval(t.Context(), first.Binding); err != nil || a.ID != first.ID {
		t.Errorf("OpenApproval = %+v, %v; want %s", a, err, first.ID)
	}
}

// testCreateApprovalCapRace sends many different approval requests of one requester at
// once, from three stores on one database: the per-requester cap holds exactly.
func testCreateApprovalCapRace(t *testing.T, b Backend) {
	s, db := b.open(t)
	created, limited := createRacing(t, s, db, 40, 3, func(i int) *approvals.Approval {
		a := newApproval(i, "flooder", "items")
		a.CreatedAt = base // all pending at once
		return a
	}, approvals.ErrTooMany)
	if created != 3 || limited != 37 {
		t.Errorf("created %d, limited %d; want 3 and 37", created, limited)
	}
	// Another requester is not limited by the first one's approvals.
	if err := s.CreateApproval(t.Context(), newApproval(100, "someone-else", "items"), 3); err != nil {
		t.Errorf("another requester: %v", err)
	}
}
