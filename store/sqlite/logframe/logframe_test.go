package logframe

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"reflect"
	"testing"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

func entry(seq int64) *recorder.Entry {
	return &recorder.Entry{Seq: seq, Kind: recorder.KindResponse, ExchangeID: "01J", At: time.Unix(0, 1234).UTC(),
		PrevHash: "p", Hash: "h", Subject: "alice", Route: "items", Decision: "allowed", Method: "GET",
		Path: "/v1/items", Status: 200, Version: 2, Tool: "search"}
}

// TestReadEndsAtTheFirstBadFrame: a log is read up to its first frame cut off, corrupted
// or not written by Append, and not past it — what a crash mid-write leaves is not an entry.
func TestReadEndsAtTheFirstBadFrame(t *testing.T) {
	one := Append(nil, entry(1), []byte(`{"a":1}`), "")
	two := Append(nil, entry(2), []byte(`{"b":2}`), "s2")
	whole := append(append([]byte{}, one...), two...)
	flip := func(b []byte, i int) []byte { c := append([]byte{}, b...); c[i] ^= 1; return c }
	badPayload := func() []byte { // a valid checksum over a payload Append did not write
		p := []byte{0x02}
		f := binary.LittleEndian.AppendUint32(nil, uint32(len(p)))
		f = binary.LittleEndian.AppendUint32(f, crc32.Checksum(p, castagnoli))
		return append(append([]byte{}, one...), append(f, p...)...)
	}
	tests := []struct {
		name    string
		raw     []byte
		max     uint32
		want    []int64 // the seqs read
		foreign bool    // Read reports ErrForeign
	}{
		{"empty", nil, 1 << 20, nil, false},
		{"two whole frames", whole, 1 << 20, []int64{1, 2}, false},
		{"second cut off in its payload", whole[:len(whole)-1], 1 << 20, []int64{1}, false},
		{"second cut off in its header", whole[:len(one)+3], 1 << 20, []int64{1}, false},
		{"bit flipped in the second's payload", flip(whole, len(whole)-2), 1 << 20, []int64{1}, false},
		{"bit flipped in the first's checksum", flip(whole, 5), 1 << 20, nil, false},
		{"length beyond the limit", whole, uint32(len(one) - Header - 1), nil, false},
		{"zeroes after the frames (preallocated blocks)", append(append([]byte{}, whole...), make([]byte, 64)...), 1 << 20, []int64{1, 2}, false},
		{"checksummed payload that is not an entry", badPayload(), 1 << 20, []int64{1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs, err := Read(tt.raw, tt.max)
			var got []int64
			for _, f := range fs {
				got = append(got, f.Entry.Seq)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("read seqs %v, want %v", got, tt.want)
			}
			if errors.Is(err, ErrForeign) != tt.foreign || (err != nil && !tt.foreign) {
				t.Fatalf("error %v, want foreign %v", err, tt.foreign)
			}
		})
	}
}

// FuzzRead: reading any bytes as a chain log never panics and yields only entries that
// a frame held whole; a frame Append wrote reads back as written, whatever follows it.
func FuzzRead(f *testing.F) {
	e := entry(7)
	f.Add(Append(nil, e, []byte(`{"a":1}`), ""), []byte("tail"))
	f.Add([]byte{}, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, log, tail []byte) {
		xs, _ := Read(log, 1<<20)
		for _, x := range xs {
			if x.End <= x.Start || x.End > int64(len(log)) {
				t.Fatalf("frame [%d,%d) outside a log of %d bytes", x.Start, x.End, len(log))
			}
		}
		data := append([]byte{}, log...)
		framed := Append(nil, e, data, "s2")
		got, _ := Read(append(framed, tail...), 1<<20)
		if len(got) == 0 {
			t.Fatal("a whole frame was not read")
		}
		want := *e
		want.Data = data
		if g := got[0]; !reflect.DeepEqual(g.Entry, want) || g.Codec != "s2" || g.Start != 0 || g.End != int64(len(framed)) {
			t.Fatalf("read back %+v (%q, [%d,%d)), want %+v", g.Entry, g.Codec, g.Start, g.End, want)
		}
	})
}
