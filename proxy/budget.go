package proxy

import (
	"bytes"
	"io"
	"net/http"
	"sync"
)

// The masked-body budget (limits.max_masked_bytes_held). A masked JSON response is held
// whole, as received and as masked, until the client has read it: without a bound, a few
// clients that ask for large masked documents and never read pinned hundreds of megabytes
// (issue 11). Like Envoy's overload manager, the gateway answers what it cannot afford at
// once with 503 and Retry-After rather than queueing it: a queue would hold the client's
// and the upstream's connections while it waits, and the client can retry elsewhere.

// holdMasked reserves n bytes of the budget of at most limit; false when they do not fit.
func (g *Gateway) holdMasked(n, limit int64) bool {
	for {
		cur := g.maskedHeld.Load()
		if cur+n > limit {
			return false
		}
		if g.maskedHeld.CompareAndSwap(cur, cur+n) {
			g.metrics.MaskedBytesHeld.Add(float64(n))
			return true
		}
	}
}

// adjustMasked changes a reservation by n (negative: releases), whatever the budget.
func (g *Gateway) adjustMasked(n int64) {
	g.maskedHeld.Add(n)
	g.metrics.MaskedBytesHeld.Add(float64(n))
}

// overloaded is the answer to a masked response that would pass the budget.
func overloaded() *refusal {
	return &refusal{status: http.StatusServiceUnavailable, code: "overloaded",
		msg: "the gateway holds as many masked responses as it may; try again shortly", decision: labelError,
		header: http.Header{"Retry-After": {"1"}}}
}

// readMasked reads a response body to mask, of at most info.mask.limit bytes, reserving
// its buffer in the budget as it grows. size, when not -1, is the length the upstream
// announced: the buffer starts at it and need not grow. It returns the body and the bytes
// reserved, which the caller releases; on an error nothing stays reserved.
func (g *Gateway) readMasked(info *reqInfo, r io.Reader, size int64) ([]byte, int64, error) {
	limit, budget := info.mask.limit, info.state.maxMaskedHeld
	var buf []byte
	var held int64
	if size >= 0 {
		// One byte more tells a body of exactly size from a longer one.
		first := min(size, limit) + 1
		if !g.holdMasked(first, budget) {
			return nil, 0, overloaded()
		}
		buf, held = make([]byte, 0, first), first
	}
	fail := func(err error) ([]byte, int64, error) {
		g.adjustMasked(-held)
		return nil, 0, err
	}
	for {
		if len(buf) == cap(buf) {
			grow := min(max(int64(cap(buf)), 32<<10), limit+1-int64(cap(buf)))
			if grow <= 0 {
				return fail(&maskError{msg: "response body is larger than the gateway masks"})
			}
			if !g.holdMasked(grow, budget) {
				return fail(overloaded())
			}
			held += grow
			nb := make([]byte, len(buf), int64(cap(buf))+grow)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return fail(&maskError{msg: "response body is larger than the gateway masks"})
		}
		if err == io.EOF {
			return buf, held, nil
		}
		if err != nil {
			return fail(err) // the caller tells the upstream's failure from the client's
		}
	}
}

// maskHeld masks raw, which holds held bytes of the budget, and returns the masked bytes
// and the body that sends them, which releases their share of the budget when closed.
// raw's share is released.
func (g *Gateway) maskHeld(info *reqInfo, raw []byte, held int64) ([]byte, io.ReadCloser, error) {
	want := int64(len(raw)) + 64 // what masking allocates for its output
	if !g.holdMasked(want, info.state.maxMaskedHeld) {
		g.adjustMasked(-held)
		return nil, nil, overloaded()
	}
	out, err := g.maskDocument(info, raw)
	g.adjustMasked(-held)
	if err != nil {
		g.adjustMasked(-want)
		return nil, nil, err
	}
	g.adjustMasked(int64(cap(out)) - want)
	return out, &heldBody{Reader: bytes.NewReader(out), g: g, n: int64(cap(out))}, nil
}

// heldBody is a masked body the gateway holds until the client has it (or the write
// deadline gave up on the client): Close gives its bytes back to the budget.
type heldBody struct {
	*bytes.Reader
	g    *Gateway
	n    int64
	once sync.Once
}

func (b *heldBody) Close() error {
	b.once.Do(func() { b.g.adjustMasked(-b.n) })
	return nil
}
