package storetest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

// largeData returns the Data of a response entry holding a body of about size bytes:
// JSON like an API's list answer, which compresses well, or random base64, which does
// not.
func largeData(size int, compressible bool) []byte {
	var body []byte
	if compressible {
		for i := 0; len(body) < size; i++ {
			body = fmt.Appendf(body, `{\"id\":%d,\"name\":\"Customer %d\",\"notes\":\"renewal due in Q3\"},`, i, i)
		}
	} else {
		raw := make([]byte, size)
		rand.Read(raw)
		body = []byte(base64.StdEncoding.EncodeToString(raw))
	}
	return fmt.Appendf(nil, `{"decision":"allowed","response":{"status":200,"body":{"text":"%s","size":%d}}}`, body[:size], size)
}

// testLargeData checks that entries of every size, compressible or not, are read back
// byte for byte (a store may keep them compressed, but what it returns is what was
// appended), that their chain verifies, that retention makes verifiable stubs of them,
// and that an edit of one is found.
func testLargeData(t *testing.T, b Backend) {
	s, db := b.open(t)
	sizes := []int{100, 1 << 10, 2<<10 - 1, 2 << 10, 3 << 10, 20 << 10, 64 << 10, 300 << 10}
	want := map[int64][]byte{}
	var es []*recorder.Entry
	for i, size := range sizes {
		for j, compressible := range []bool{true, false} {
			x := 2*i + j
			req, resp := pair(x, "alice", "items", "allowed", 200)
			resp.Data = largeData(size, compressible)
			es = append(es, req, resp)
		}
	}
	// Unsynced and synced appends, one entry or many per transaction.
	if err := s.AppendUnsynced(t.Context(), es[:2]); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(t.Context(), es[2:3]); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(t.Context(), es[3:]); err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		want[e.Seq] = e.Data
	}
	got, err := s.Entries(t.Context(), 0, len(es)+1)
	if err != nil || len(got) != len(es) {
		t.Fatalf("Entries = %d entries, %v; want %d", len(got), err, len(es))
	}
	for i, e := range got {
		if !equalEntry(e, *es[i]) {
			t.Errorf("entry %d read back (%d bytes) is not the one appended (%d bytes)", e.Seq, len(e.Data), len(es[i].Data))
		}
	}
	for x := range 2 * len(sizes) {
		rec, err := s.Get(t.Context(), xid(x))
		if err != nil || rec.Response == nil || !bytes.Equal(rec.Response.Data, want[rec.Response.Seq]) || !bytes.Equal(rec.Request.Data, want[rec.Request.Seq]) {
			t.Errorf("Get(%s) = %v: the record is not the one appended", xid(x), err)
		}
	}
	recs, _, err := s.List(t.Context(), recorder.Filter{Limit: 1000})
	if err != nil || len(recs) != 2*len(sizes) {
		t.Fatalf("List = %d records, %v; want %d", len(recs), err, 2*len(sizes))
	}
	for _, rec := range recs {
		if rec.Response == nil || !bytes.Equal(rec.Response.Data, want[rec.Response.Seq]) {
			t.Errorf("List: the response of %s is not the one appended", rec.Request.ExchangeID)
		}
	}
	if rep := verify(t, s); !rep.OK || rep.Entries != int64(len(es)) {
		t.Fatalf("Verify = %+v, want OK with %d entries", rep, len(es))
	}

	// Retention's stubs keep the SHA-256 of the Data as appended.
	if n, err := s.Expire(t.Context(), recorder.ExpiryRule{Before: base.Add(4 * time.Second), Routes: []string{"items"}}); err != nil || n != 8 {
		t.Fatalf("Expire(the first 4 exchanges) = %d, %v; want 8", n, err)
	}
	for seq := int64(1); seq <= 8; seq++ {
		sum := sha256.Sum256(want[seq])
		if e := entryAt(t, s, seq); len(e.Data) != 0 || e.DataHash != hex.EncodeToString(sum[:]) {
			t.Errorf("stub %d: %d bytes of Data, DataHash %s; want none and %x", seq, len(e.Data), e.DataHash, sum)
		}
	}
	if rep := verify(t, s); !rep.OK || rep.Expired != 8 {
		t.Fatalf("Verify after Expire = %+v, want OK with 8 stubs", rep)
	}

	// An edit of a large entry's stored data breaks the chain there.
	last := es[len(es)-3] // the 300 KiB compressible body's response
	db.exec(t, `UPDATE entries SET data = ? WHERE seq = ?`, []byte(`{"decision":"allowed"}`), last.Seq)
	if rep := verify(t, s); rep.OK || rep.Break == nil || rep.Break.Seq != last.Seq {
		t.Errorf("Verify after editing entry %d = %+v, want a break there", last.Seq, rep)
	}
}
