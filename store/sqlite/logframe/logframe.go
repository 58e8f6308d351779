// Package logframe encodes sealed record entries as the frames of a SQLite store's chain
// log and reads them back. It is pure: the store owns the file, this package the bytes.
//
// A frame is the payload's length (uint32, little-endian), its CRC-32C (Castagnoli)
// and the payload: the entry's integer fields as varints, then its strings, the data's
// codec and the data, each behind its length as a uvarint. A frame that is short, too
// long or fails its checksum ends the log: it is what a write cut off by a crash leaves
// (zeroes included), never an entry the store reported synced. A frame that passes its
// checksum and does not decode is not a torn write: Read reports it (ErrForeign).
package logframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

// Header is the length and checksum before each payload.
const Header = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame is an entry as the chain log holds it: sealed, its data as the store keeps it.
type Frame struct {
	Entry recorder.Entry // Data is the stored (possibly compressed) data
	Codec string         // the data's codec, "" for data stored as it is
	Start int64          // where the frame begins in the log
	End   int64          // where it ends: the next frame's Start
}

// Append appends e (sealed) with its stored data and codec to b as one frame.
func Append(b []byte, e *recorder.Entry, data []byte, codec string) []byte {
	start := len(b)
	b = append(b, make([]byte, Header)...)
	b = binary.AppendVarint(b, e.Seq)
	b = binary.AppendVarint(b, e.At.UnixNano())
	b = binary.AppendVarint(b, int64(e.Status))
	b = binary.AppendVarint(b, int64(e.Version))
	for _, s := range [...]string{e.Kind, e.ExchangeID, e.PrevHash, e.Hash, e.Subject, e.Route, e.Decision, e.Method, e.Path, e.Tool, codec} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(data)))
	b = append(b, data...)
	payload := b[start+Header:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// ErrForeign is the error of a frame that passes its checksum but holds no entry this
// package decodes: written by another version, or damaged in a way a torn write is not.
var ErrForeign = errors.New("a chain log frame that is whole but not readable by this build")

// Read returns the entries of the whole, valid frames at the start of raw, none with a
// payload longer than maxPayload, up to the first frame that is not. When that frame
// passes its checksum but does not decode, it returns the entries before it and an
// error wrapping ErrForeign that gives its offset.
func Read(raw []byte, maxPayload uint32) ([]Frame, error) {
	var out []Frame
	for off := 0; ; {
		payload, n := next(raw[off:], maxPayload)
		if n == 0 || len(payload) == 0 {
			return out, nil // torn, or zeroes: the end
		}
		x, err := decode(payload)
		if err != nil {
			return out, fmt.Errorf("offset %d: %w", off, ErrForeign)
		}
		x.Start, x.End = int64(off), int64(off+n)
		out = append(out, x)
		off += n
	}
}

// next returns the payload of the frame at the start of b and the frame's length, or 0
// when b does not start with a whole, valid frame.
func next(b []byte, maxPayload uint32) ([]byte, int) {
	if len(b) < Header {
		return nil, 0
	}
	n := binary.LittleEndian.Uint32(b)
	if n > maxPayload || uint64(len(b)-Header) < uint64(n) {
		return nil, 0
	}
	payload := b[Header : Header+int(n)]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0
	}
	return payload, Header + int(n)
}

// errFrame is the error of a payload that is not an entry Append wrote.
var errFrame = errors.New("malformed chain log frame")

// decode returns the entry a frame's payload holds.
func decode(p []byte) (Frame, error) {
	var ints [4]int64
	for i := range ints {
		v, n := binary.Varint(p)
		if n <= 0 {
			return Frame{}, errFrame
		}
		ints[i], p = v, p[n:]
	}
	var strs [11]string
	for i := range strs {
		s, rest, ok := lengthPrefixed(p)
		if !ok {
			return Frame{}, errFrame
		}
		strs[i], p = string(s), rest
	}
	data, rest, ok := lengthPrefixed(p)
	if !ok || len(rest) != 0 {
		return Frame{}, errFrame
	}
	x := Frame{Codec: strs[10], Entry: recorder.Entry{Seq: ints[0], At: time.Unix(0, ints[1]).UTC(),
		Status: int(ints[2]), Version: int(ints[3]),
		Kind: strs[0], ExchangeID: strs[1], PrevHash: strs[2], Hash: strs[3], Subject: strs[4], Route: strs[5],
		Decision: strs[6], Method: strs[7], Path: strs[8], Tool: strs[9], Data: append([]byte{}, data...)}}
	if x.Entry.Seq <= 0 || x.Entry.Status < 0 || int64(x.Entry.Status) != ints[2] || int64(x.Entry.Version) != ints[3] {
		return Frame{}, errFrame
	}
	switch x.Entry.Kind {
	case recorder.KindRequest, recorder.KindResponse, recorder.KindCheckpoint:
		return x, nil
	}
	return Frame{}, errFrame
}

// lengthPrefixed splits a uvarint length and that many bytes off the front of p.
func lengthPrefixed(p []byte) ([]byte, []byte, bool) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return nil, nil, false
	}
	return p[k : k+int(n)], p[k+int(n):], true
}
