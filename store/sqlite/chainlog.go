package sqlite

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite/logframe"
)

// The chain log is the file beside the database (its path plus logSuffix) that makes an
// append durable. Append writes each sealed entry to it as one frame and syncs it with
// one fdatasync per batch; the store's indexer then inserts the entries into SQLite in
// large transactions that do not wait for the disk, off the request path. Once every
// entry in the log is in SQLite and SQLite's WAL is synced, the log is emptied. Opening
// the store inserts what a killed gateway left in the log.
//
// Package logframe holds the format of its frames; a frame that does not read ends the
// log: it is what a write cut off by a crash leaves, never an entry Append reported synced.
const logSuffix = "-chain"

// maxFrame bounds a frame's payload: an entry's data is at most maxUnpacked (larger
// data is not compressed and would not fit: see pack), plus its fields.
const maxFrame = maxUnpacked + 1<<20

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
	out, err := frames(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (written by a newer keyhole? it is left as it is)", l.path, err)
	}
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

// frames returns the entries of the whole frames at the start of raw. A whole frame
// this build cannot read — one it does not decode, or whose data has a codec it does
// not know (a newer gateway's) — is an error: what follows it may be entries no
// database holds, so the log must not be cut there.
func frames(raw []byte) ([]logged, error) {
	fs, err := logframe.Read(raw, maxFrame)
	out := make([]logged, 0, len(fs))
	for _, f := range fs {
		if f.Codec != "" && f.Codec != codecS2 {
			return out, fmt.Errorf("offset %d: data codec %q: %w", f.Start, f.Codec, logframe.ErrForeign)
		}
		out = append(out, logged{e: f.Entry, codec: f.Codec, start: f.Start, end: f.End})
	}
	return out, err
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
		// entries: cut it off, and sync the cut, or frames whose appends failed (their
		// requests refused) could come back after a power loss and be indexed at the
		// next start. Both at best: the disk is failing, and the log takes no more
		// writes until the gateway restarts.
		if l.f.Truncate(l.size) == nil {
			_ = fdatasync(l.f)
		}
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
