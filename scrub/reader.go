package scrub

import (
	"errors"
	"io"
	"sync"
)

// readSize is the most a Reader reads from its source at once.
const readSize = 32 << 10

// readBuffers holds source buffers between Readers: a buffer for every response
// allocated and cleared 32 KiB, most of a small proxied request's garbage (issue 17).
var readBuffers = sync.Pool{New: func() any { return new([readSize]byte) }}

// ErrClosed is returned by a Read after Close.
var ErrClosed = errors.New("scrub: read after close")

// Reader scrubs a stream as it is read. A form split across two reads of the source is
// still found: bytes at the end of a read that may begin a form are held back until the
// next read tells (at most the longest form's length), and nothing else is, so a stream
// (server-sent events) is passed on as soon as it arrives. Memory is bounded by one read
// of the source plus the longest form. A Reader is not safe for concurrent use.
//
// The buffer a Reader reads into is shared with later Readers once the source has ended
// and been read to the end, or at Close.
type Reader struct {
	src     io.Reader
	s       *Scrubber
	buf     *[readSize]byte // one read of src; nil before the first read and once given back
	pending []byte          // held back: may begin a form
	out     []byte          // scrubbed, not yet read
	err     error
	found   bool
}

// NewReader returns a Reader of src scrubbed by s.
func NewReader(src io.Reader, s *Scrubber) *Reader {
	return &Reader{src: src, s: s}
}

// Found reports whether a form was replaced in what was read so far.
func (r *Reader) Found() bool { return r.found }

// Read reads scrubbed bytes.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.out) == 0 {
		if r.err != nil {
			if len(r.pending) == 0 {
				r.release()
				return 0, r.err
			}
			r.emit(r.pending) // the source ended: nothing can complete it now
			r.pending = nil
			continue
		}
		if r.buf == nil {
			r.buf = readBuffers.Get().(*[readSize]byte)
		}
		n, err := r.src.Read(r.buf[:])
		r.err = err
		if n == 0 {
			continue
		}
		data := r.buf[:n]
		if len(r.pending) > 0 {
			data = append(r.pending, data...)
		}
		hold := 0
		if err == nil {
			hold = len(data) - r.s.cut(data)
		}
		// A fresh slice: r.out may share data's backing array, and with it the old one's.
		r.pending = nil
		if hold > 0 {
			r.pending = append([]byte(nil), data[len(data)-hold:]...)
		}
		r.emit(data[:len(data)-hold])
	}
	n := copy(p, r.out)
	r.out = r.out[n:]
	return n, nil
}

// Close ends the Reader and gives its buffer back for reuse; a Read after it returns
// ErrClosed. It does not close the source. It returns nil.
func (r *Reader) Close() error {
	r.err, r.pending = ErrClosed, nil
	r.release()
	return nil
}

// release gives the buffer back. The bytes still to be read may lie in it, so they go.
func (r *Reader) release() {
	if r.buf != nil {
		readBuffers.Put(r.buf)
		r.buf = nil
	}
	r.out = nil
}

// emit makes p, scrubbed, the bytes to read next. p stays unchanged until they are read.
func (r *Reader) emit(p []byte) {
	out := r.s.Bytes(p)
	if len(p) > 0 && &out[0] != &p[0] {
		r.found = true
	}
	r.out = out
}
