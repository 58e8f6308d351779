package recorder_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/keyholehq/keyhole/recorder"
)

// TestRecorderRecordsStayWhole records exchanges with bodies of many sizes from
// concurrent clients, strict and best-effort, refused or not, while Redacted encodes the
// same exchanges: the recorder reuses the buffers records are encoded into once they
// are written, and no record may end up holding another's bytes.
func TestRecorderRecordsStayWhole(t *testing.T) {
	st := openStore(t)
	rec := recorder.New(st, recorder.Policy{Redactor: recorder.NewRedactor(nil, []string{"a-credential-value-0123456789"})}, recorder.Options{})
	body := func(i int) []byte {
		// Different lengths (up to ~200 KB) and contents; every tenth holds the credential.
		b := bytes.Repeat(fmt.Appendf(nil, `{"exchange":%d,"note":"%s"},`, i, bytes.Repeat([]byte{'a' + byte(i%26)}, i%50)), 1+(i*37)%2000)
		if i%10 == 0 {
			b = append(b, "a-credential-value-0123456789"...)
		}
		return b
	}
	want := func(i int) []byte {
		return bytes.ReplaceAll(body(i), []byte("a-credential-value-0123456789"), []byte(recorder.Redacted))
	}
	const clients, each = 8, 40
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				i := c*each + j
				x := exchange(i)
				x.Request.Body = recorder.NewBody(body(i+1), int64(len(body(i+1))))
				x.Response.Body = recorder.NewBody(body(i), int64(len(body(i))))
				if i%7 == 0 {
					rec.Refused(x)
					continue
				}
				if err := rec.Begin(context.Background(), x); err != nil {
					t.Errorf("Begin: %v", err)
					return
				}
				if r, err := rec.Redacted(x); err != nil || r.Response == nil || r.Response.Body.Text != string(want(i)) {
					t.Errorf("Redacted(%d): %v, or not the exchange's body", i, err)
				}
				rec.End(x)
			}
		}()
	}
	wg.Wait()
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range clients * each {
		r, err := st.Get(context.Background(), exchange(i).ID)
		if err != nil {
			t.Fatalf("Get(%d): %v", i, err)
		}
		x, err := recorder.Decode(r)
		if err != nil {
			t.Fatalf("Decode(%d): %v", i, err)
		}
		if x.Request.Body.Text != string(want(i+1)) || x.Response == nil || x.Response.Body.Text != string(want(i)) {
			t.Fatalf("exchange %d: the record holds other bodies than its own", i)
		}
	}
	if rep, err := recorder.Verify(context.Background(), st, nil); err != nil || !rep.OK {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}
