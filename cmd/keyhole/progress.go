package main

import (
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"
)

// progress draws a one-line progress report on a terminal, at most ten times a second.
// On anything else (a pipe, a file, a test buffer) it draws nothing.
type progress struct {
	w     io.Writer
	label string
	tty   bool
	last  time.Time
	bytes atomic.Int64
}

func newProgress(w io.Writer, label string) *progress {
	p := &progress{w: w, label: label}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// count reports done of total items (total 0 when unknown).
func (p *progress) count(done, total int64) {
	if !p.tty || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	if total > 0 {
		const width = 30
		fill := int(width * done / max(total, 1))
		fill = min(fill, width)
		fmt.Fprintf(p.w, "\r%s [%-*s] %d/%d", p.label, width, string(repeat('#', fill)), done, total)
		return
	}
	fmt.Fprintf(p.w, "\r%s: %d", p.label, done)
}

func repeat(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

// bytesWriter returns a writer that reports the bytes written through it.
func (p *progress) bytesWriter() io.Writer { return byteCounter{p} }

type byteCounter struct{ p *progress }

func (b byteCounter) Write(q []byte) (int, error) {
	n := b.p.bytes.Add(int64(len(q)))
	if b.p.tty && time.Since(b.p.last) >= 100*time.Millisecond {
		b.p.last = time.Now()
		fmt.Fprintf(b.p.w, "\r%s: %.1f MB", b.p.label, float64(n)/1e6)
	}
	return len(q), nil
}

// done ends the progress line.
func (p *progress) done() {
	if p.tty && !p.last.IsZero() {
		fmt.Fprintln(p.w)
	}
}
