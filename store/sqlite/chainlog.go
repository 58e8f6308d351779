package sqlite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

// The chain log is the file beside the database (its path plus logSuffix) that makes an
// append durable. Append writes each sealed entry to it as one frame and syncs it with
// one fdatasync per batch; the store's indexer then inserts the entries into SQLite in
// large transactions that do not wait for the disk, off the request path. Once every
// entry in the log is in SQLite and SQLite's WAL is synced, the log is emptied. Opening
// the store inserts what a killed gateway left in the log.
//
// A frame is the payload's length (uint32, little-endian), its CRC-32C (Castagnoli)
// and the payload. A frame that is short, too long or fails its checksum ends the log:
// it is what a write cut off by a crash leaves, never an entry Append reported synced.
const logSuffix = "-chain"

// frameHeader is the length and checksum before each payload.
const frameHeader = 8

// maxFrame bounds a frame's payload: an entry's data is at most maxUnpacked (larger
// data is not compressed and would not fit: see pack), plus its fields.
const maxFrame = maxUnpacked + 1<<20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errLogInUse is the error of opening a store for writing whose chain log another
// process holds: one gateway process writes a SQLite store.
var errLogInUse = errors.New("another process is writing this store (one gateway process per SQLite file; use postgres:// for several replicas)")

// chainLog is the open chain log, locked (flock) against other processes for as long
// as it is open.
type chainLog struct {
	f        *os.File
	path     string
	size     int64 // the end of the last whole frame: where the next one goes
	reserved int64 // the file's blocks are allocated up to here (see reserve)
}

// logReserve is the step in which the log's blocks are allocated ahead of its frames,
// without changing its size: appends within it need no block of the file system, so
// a disk that fills up fails the indexer's SQLite writes, which the store reports,
// before the log's, and a sync owes the file system no allocation.
const logReserve = 1 << 20

// openLog opens or creates the chain log at path and locks it. It returns errLogInUse
// when another process holds the lock.
func openLog(path string) (*chainLog, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, errLogInUse)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The log's directory entry must survive a lost machine before an append that
	// relies on the log returns.
	if err := syncFile(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync %s: %w", filepath.Dir(path), err)
	}
	return &chainLog{f: f, path: path}, nil
}

// logged is an entry as the chain log holds it: sealed, its data as SQLite stores it.
type logged struct {
	e     recorder.Entry // Data is the stored (possibly compressed) data
	codec string         // data_codec, "" for data stored as it is
	start int64          // where its frame begins in the log, and ends (frames sets them)
	end   int64
}

// read returns the entries of the log's whole frames and truncates what follows them
// (a frame cut off by a crash).
func (l *chainLog) read() ([]logged, error) {
	if _, err := l.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(l.f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", l.path, err)
	}
	// A frame with a valid checksum that does not decode was not written by Append:
	// the log ends there too.
	out := frames(raw)
	var off int64
	if len(out) > 0 {
		off = out[len(out)-1].end
	}
	l.size = int64(len(raw))
	if off < l.size {
		if err := l.truncate(off); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// truncate cuts the log off at off, synced.
func (l *chainLog) truncate(off int64) error {
	if err := l.f.Truncate(off); err != nil {
		return fmt.Errorf("truncate %s: %w", l.path, err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", l.path, err)
	}
	l.size, l.reserved = off, 0
	return nil
}

// frames returns the entries of the whole frames at the start of raw.
func frames(raw []byte) []logged {
	var out []logged
	for off := 0; ; {
		payload, n := nextFrame(raw[off:])
		if n == 0 {
			return out
		}
		x, err := decodeFrame(payload)
		if err != nil {
			return out
		}
		x.start, x.end = int64(off), int64(off+n)
		out = append(out, x)
		off += n
	}
}

// nextFrame returns the payload of the frame at the start of b and the frame's length,
// or 0 when b does not start with a whole, valid frame.
func nextFrame(b []byte) ([]byte, int) {
	if len(b) < frameHeader {
		return nil, 0
	}
	n := binary.LittleEndian.Uint32(b)
	if n > maxFrame || uint64(len(b)-frameHeader) < uint64(n) {
		return nil, 0
	}
	payload := b[frameHeader : frameHeader+int(n)]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(b[4:]) {
		return nil, 0
	}
	return payload, frameHeader + int(n)
}

// write appends frames (whole frames, from appendFrame) at the end of the log and, if
// sync, waits until they are on disk. On an error the log's end stays where it was, so
// the next write overwrites what this one may have left.
func (l *chainLog) write(frames []byte, sync bool) error {
	l.reserve(l.size + int64(len(frames)))
	_, err := l.f.WriteAt(frames, l.size)
	if err != nil {
		err = fmt.Errorf("write %s: %w", l.path, err)
	} else if sync {
		err = l.sync()
	}
	if err != nil {
		// After a failed write or sync, what the write left must not be read as
		// entries: cut it off (at best; the next write overwrites it in any case).
		l.f.Truncate(l.size)
		return err
	}
	l.size += int64(len(frames))
	return nil
}

// reserve allocates the log's blocks up to end, rounded up to logReserve, if it can;
// a write past them allocates its own.
func (l *chainLog) reserve(end int64) {
	if end <= l.reserved {
		return
	}
	to := (end + logReserve - 1) / logReserve * logReserve
	if preallocate(l.f, l.reserved, to-l.reserved) == nil {
		l.reserved = to
	}
}

// sync waits until what was written to the log is on disk.
func (l *chainLog) sync() error {
	if err := fdatasync(l.f); err != nil {
		return fmt.Errorf("sync %s: %w", l.path, err)
	}
	return nil
}

// reset empties the log: every entry in it is in SQLite, synced. It allocates the
// log's first blocks again.
func (l *chainLog) reset() error {
	if err := l.f.Truncate(0); err != nil {
		return fmt.Errorf("truncate %s: %w", l.path, err)
	}
	l.size, l.reserved = 0, 0
	l.reserve(1)
	return nil
}

// close unlocks and closes the log.
func (l *chainLog) close() error { return l.f.Close() }

// appendFrame appends e (sealed) with its stored data and codec to b as one frame.
func appendFrame(b []byte, e *recorder.Entry, data []byte, codec string) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeader)...)
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
	payload := b[start+frameHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// errFrame is the error of a payload that is not an entry appendFrame wrote.
var errFrame = errors.New("malformed chain log frame")

// decodeFrame returns the entry a frame's payload holds.
func decodeFrame(p []byte) (logged, error) {
	var x logged
	var ints [4]int64
	for i := range ints {
		v, n := binary.Varint(p)
		if n <= 0 {
			return logged{}, errFrame
		}
		ints[i], p = v, p[n:]
	}
	var strs [11]string
	for i := range strs {
		s, rest, ok := lengthPrefixed(p)
		if !ok {
			return logged{}, errFrame
		}
		strs[i], p = string(s), rest
	}
	data, rest, ok := lengthPrefixed(p)
	if !ok || len(rest) != 0 {
		return logged{}, errFrame
	}
	x.e = recorder.Entry{Seq: ints[0], At: time.Unix(0, ints[1]).UTC(), Status: int(ints[2]), Version: int(ints[3]),
		Kind: strs[0], ExchangeID: strs[1], PrevHash: strs[2], Hash: strs[3], Subject: strs[4], Route: strs[5],
		Decision: strs[6], Method: strs[7], Path: strs[8], Tool: strs[9], Data: append([]byte{}, data...)}
	x.codec = strs[10]
	if x.e.Seq <= 0 || x.e.Status < 0 || int64(x.e.Status) != ints[2] || int64(x.e.Version) != ints[3] {
		return logged{}, errFrame
	}
	switch x.e.Kind {
	case recorder.KindRequest, recorder.KindResponse, recorder.KindCheckpoint:
	default:
		return logged{}, errFrame
	}
	if x.codec != "" && x.codec != codecS2 {
		return logged{}, errFrame
	}
	return x, nil
}

// lengthPrefixed splits a uvarint length and that many bytes off the front of p.
func lengthPrefixed(p []byte) ([]byte, []byte, bool) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return nil, nil, false
	}
	return p[k : k+int(n)], p[k+int(n):], true
}
