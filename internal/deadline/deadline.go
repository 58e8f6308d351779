// Package deadline bounds how long a request body may take to arrive and how long a
// response write may wait on a client, for both of Keyhole's HTTP planes.
//
// net/http gives a handler no deadline on the body unless the server has a ReadTimeout,
// which would also cut long legitimate uploads; and before it writes a response to a
// request whose body was not read, the server drains up to 256 KiB of that body. A client
// that announces a body and then stalls therefore holds a goroutine and a descriptor for
// as long as it likes. Body puts a deadline on every read of the body that stays set until
// the body has ended, and Abandon answers without reading the rest.
package deadline

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ErrAbandoned is what a Body returns once it was abandoned: the request was answered
// without its body, and the connection closes.
var ErrAbandoned = errors.New("request body abandoned: the request was answered without it")

// Body is a request body whose every read has a deadline: idle after the previous read
// (reset on progress), and never later than total after the body was wrapped. The deadline
// is set as soon as the body is wrapped, so the server's own drain of an unread body is
// bounded too, and it is cleared only once the body has ended. Body is safe for a reader
// goroutine (the upstream transport) and a responder goroutine to use at once.
type Body struct {
	rc   io.ReadCloser
	ctl  *http.ResponseController
	idle time.Duration
	end  time.Time // zero: no overall deadline
	want int64     // Content-Length, -1 unknown
	// http1: Abandon asks for the connection to close. On HTTP/2 the server resets the
	// stream of an unread body instead, and Connection: close would end every stream.
	http1 bool

	mu        sync.Mutex // orders deadline changes between Read and Abandon
	abandoned bool
	n         atomic.Int64
	done      atomic.Bool // EOF seen, or every announced byte read
	err       atomic.Pointer[error]
}

// NewBody wraps r.Body, which must not be nil or http.NoBody, with deadlines set through
// w's connection: idle between reads, total for the whole body (0 for either: none).
// The caller replaces r.Body with the result.
func NewBody(w http.ResponseWriter, r *http.Request, idle, total time.Duration) *Body {
	b := &Body{rc: r.Body, ctl: http.NewResponseController(w), idle: idle, want: r.ContentLength, http1: r.ProtoMajor < 2}
	if total > 0 {
		b.end = time.Now().Add(total)
	}
	b.mu.Lock()
	b.arm()
	b.mu.Unlock()
	return b
}

// arm sets the read deadline for the next read. b.mu is held.
func (b *Body) arm() {
	d := b.end
	if b.idle > 0 {
		if next := time.Now().Add(b.idle); d.IsZero() || next.Before(d) {
			d = next
		}
	}
	if !d.IsZero() {
		_ = b.ctl.SetReadDeadline(d)
	}
}

// Read reads the body under the deadline.
func (b *Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.abandoned {
		b.mu.Unlock()
		return 0, ErrAbandoned
	}
	b.arm()
	b.mu.Unlock()
	n, err := b.rc.Read(p)
	total := b.n.Add(int64(n))
	switch {
	case err == io.EOF || (err == nil && b.want >= 0 && total >= b.want):
		if !b.done.Swap(true) {
			b.mu.Lock()
			if !b.abandoned {
				// The body has ended: nothing more is coming, and a deadline left set would
				// cancel the request when the server's background read of the connection
				// meets it, mid-response.
				_ = b.ctl.SetReadDeadline(time.Time{})
			}
			b.mu.Unlock()
		}
	case err != nil:
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

// Close closes the wrapped body.
func (b *Body) Close() error { return b.rc.Close() }

// Done reports whether the whole body has been read. A nil Body (no body) is done.
func (b *Body) Done() bool { return b == nil || b.done.Load() }

// Err returns the first error reading the body met, other than its end, or nil. A nil
// Body has none.
func (b *Body) Err() error {
	if b == nil {
		return nil
	}
	if e := b.err.Load(); e != nil {
		return *e
	}
	return nil
}

// BytesRead reports how many bytes of the body have been read so far. A nil Body has none.
func (b *Body) BytesRead() int64 {
	if b == nil {
		return 0
	}
	return b.n.Load()
}

// Shorten brings the whole-body deadline forward to at most d from now, for a reader that
// wants only what arrives soon (the start of a refused request's body, for its record).
func (b *Body) Shorten(d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if end := time.Now().Add(d); b.end.IsZero() || end.Before(b.end) {
		b.end = end
	}
	if !b.abandoned && !b.done.Load() {
		b.arm()
	}
}

// Abandon, called before the response header is written, gives up on the rest of the
// body unless it has all been read: the response says Connection: close, and the read
// deadline moves to now, so neither the server's drain of the unread body nor any read
// still waiting for it holds the connection. It is safe to call more than once, and on a
// nil Body (no body), where it does nothing.
func (b *Body) Abandon(h http.Header) {
	if b == nil || b.done.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done.Load() {
		return
	}
	b.abandoned = true
	if b.http1 {
		h.Set("Connection", "close")
	}
	_ = b.ctl.SetReadDeadline(time.Now())
}

// ChunkSize is the most Write hands the connection under one write deadline.
const ChunkSize = 32 << 10

// Write writes p to w in chunks of at most ChunkSize, moving the write deadline of ctl's
// connection to idle from now before each: a client that stops reading is cut off after
// idle, one that reads slowly but steadily is not. idle 0 writes p as it is.
func Write(ctl *http.ResponseController, idle time.Duration, w io.Writer, p []byte) (int, error) {
	if idle <= 0 {
		return w.Write(p)
	}
	written := 0
	for len(p) > 0 {
		c := p[:min(len(p), ChunkSize)]
		_ = ctl.SetWriteDeadline(time.Now().Add(idle))
		n, err := w.Write(c)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Handler bounds next's request bodies with NewBody(idle, total), answers without
// reading the rest of a body whenever next writes its response header before the body
// has ended (Abandon), and writes the response under a write deadline of writeIdle
// reset on progress (Write).
func Handler(next http.Handler, idle, total, writeIdle time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &writer{ResponseWriter: w, ctl: http.NewResponseController(w), idle: writeIdle}
		if r.Body != nil && r.Body != http.NoBody {
			dw.body = NewBody(w, r, idle, total)
			r.Body = dw.body
		}
		next.ServeHTTP(dw, r)
		if writeIdle > 0 {
			// The server flushes what next left buffered after it returns: under a
			// deadline of its own, not what remains of the last Write's.
			_ = dw.ctl.SetWriteDeadline(time.Now().Add(writeIdle))
		}
	})
}

// writer is the ResponseWriter of Handler.
type writer struct {
	http.ResponseWriter
	ctl   *http.ResponseController
	idle  time.Duration
	body  *Body
	wrote bool
}

func (w *writer) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		w.body.Abandon(w.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return Write(w.ctl, w.idle, w.ResponseWriter, p)
}

// Flush flushes under the write deadline.
func (w *writer) Flush() {
	if w.idle > 0 {
		_ = w.ctl.SetWriteDeadline(time.Now().Add(w.idle))
	}
	_ = w.ctl.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }
