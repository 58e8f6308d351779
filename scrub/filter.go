package scrub

import (
	"encoding/binary"
	"slices"
	"strings"
	"sync"
)

// Filter tells whether a text holds one of a set of strings, in one pass that looks at
// only every stride-th position of the text (issue 17: a 64 KiB record was searched once
// per secret and per request token with bytes.Index, then once more byte by byte for the
// configured forms).
//
// Every string is at least L bytes long (L, the shortest), so an occurrence starting at s
// covers the q-byte window at every position from s to s+L-q; with stride = L-q+1, exactly
// one sampled position falls among them. The filter keeps, in a bit set, a hash of each
// string's q-byte windows at offsets 0 to L-q, and at each sampled position looks up the
// window found there; a hit is confirmed by comparing the strings whose window it is, at
// the offset it is at. Its answer is exact: never false for a text that holds a string,
// never true for one that does not. Windows are 8 bytes when every string has 16 or more
// (fewer false hits), else 4 (or L, below 4).
//
// A Filter is immutable and safe for concurrent use.
type Filter struct {
	q, stride int
	mask      uint64
	bits      *filterBits
	at        map[uint64][]window // window key → where it is, for the strings of NewFilter
	strs      []string
	extra     []keyedWindow // the windows of the strings added by With

	mu   sync.Mutex
	with map[string]*Filter // With's results, by their strings; nil in a Filter made by With
}

// withCached is how many of With's results a Filter keeps: the tokens of that many
// clients at once, each 8 KiB.
const withCached = 64

// filterBits is the hashed-window bit set, 8 KiB: with some 1,000 windows (40 forms of
// 25-byte secrets) under 2% of lookups of a window no string has are false hits.
type filterBits [1 << 16 / 64]uint64

// window is one string's q-byte window: the string's index and the window's offset in it.
type window struct{ str, off int }

type keyedWindow struct {
	key uint64
	window
}

// NewFilter returns the Filter for strs. Empty strings are left out; a Filter of none
// holds nothing.
func NewFilter(strs []string) *Filter {
	f := &Filter{at: map[uint64][]window{}, bits: new(filterBits), with: map[string]*Filter{}}
	for _, s := range strs {
		if s != "" {
			f.strs = append(f.strs, s)
		}
	}
	if len(f.strs) == 0 {
		return f
	}
	short := len(f.strs[0])
	for _, s := range f.strs {
		short = min(short, len(s))
	}
	f.q = min(4, short)
	if short >= 16 {
		f.q = 8
	}
	f.stride = short - f.q + 1
	f.mask = ^uint64(0) >> (64 - 8*f.q)
	for i, s := range f.strs {
		for off := range f.stride {
			k := load(s[off:]) & f.mask
			f.at[k] = append(f.at[k], window{i, off})
			f.set(k)
		}
	}
	return f
}

// With returns a Filter for f's strings and extra: f's bit set copied, with extra's
// windows added, or, when one of extra is shorter than f's shortest string, a new Filter
// for them all. f itself is unchanged. f keeps the last results (a request's extra is
// most often a client's token, the same for many requests), so that With copies nothing
// for a client seen lately.
func (f *Filter) With(extra []string) *Filter {
	var add []string
	for _, s := range extra {
		if s != "" {
			add = append(add, s)
		}
	}
	if len(add) == 0 {
		return f
	}
	if f.with == nil {
		return NewFilter(append(slices.Clip(f.strs), add...))
	}
	key := strings.Join(add, "\x00")
	f.mu.Lock()
	g := f.with[key]
	f.mu.Unlock()
	if g != nil {
		return g
	}
	g = f.extend(add)
	f.mu.Lock()
	if len(f.with) >= withCached {
		clear(f.with)
	}
	f.with[key] = g
	f.mu.Unlock()
	return g
}

// extend returns the Filter of f's strings and add.
func (f *Filter) extend(add []string) *Filter {
	for _, s := range add {
		if len(f.strs) == 0 || len(s) < f.q+f.stride-1 {
			g := NewFilter(append(slices.Clip(f.strs), add...))
			g.with = nil
			return g
		}
	}
	bits := *f.bits
	g := &Filter{q: f.q, stride: f.stride, mask: f.mask, bits: &bits, at: f.at,
		strs: append(slices.Clip(f.strs), add...), extra: make([]keyedWindow, 0, len(add)*f.stride)}
	for i, s := range add {
		for off := range g.stride {
			k := load(s[off:]) & g.mask
			g.extra = append(g.extra, keyedWindow{k, window{len(f.strs) + i, off}})
			g.set(k)
		}
	}
	return g
}

// Holds reports whether p holds one of the filter's strings.
func (f *Filter) Holds(p []byte) bool {
	if len(f.strs) == 0 {
		return false
	}
	j := 0
	// Whole 8-byte loads while they stay inside p; the tail goes through load.
	for ; j+8 <= len(p); j += f.stride {
		if k := binary.LittleEndian.Uint64(p[j:]) & f.mask; f.hit(k) && f.confirm(p, j, k) {
			return true
		}
	}
	for ; j+f.q <= len(p); j += f.stride {
		if k := load(p[j:]) & f.mask; f.hit(k) && f.confirm(p, j, k) {
			return true
		}
	}
	return false
}

// confirm reports whether one of the strings whose window is k occurs in p with that
// window at j.
func (f *Filter) confirm(p []byte, j int, k uint64) bool {
	for _, w := range f.at[k] {
		if f.occurs(p, j, w) {
			return true
		}
	}
	for _, w := range f.extra {
		if w.key == k && f.occurs(p, j, w.window) {
			return true
		}
	}
	return false
}

func (f *Filter) occurs(p []byte, j int, w window) bool {
	s, str := j-w.off, f.strs[w.str]
	return s >= 0 && len(p)-s >= len(str) && string(p[s:s+len(str)]) == str
}

func hashWindow(k uint64) uint64 { return (k * 0x9E3779B97F4A7C15) >> 48 }

func (f *Filter) set(k uint64) {
	h := hashWindow(k)
	f.bits[h/64] |= 1 << (h % 64)
}

func (f *Filter) hit(k uint64) bool {
	h := hashWindow(k)
	return f.bits[h/64]&(1<<(h%64)) != 0
}

// load returns the first 8 bytes of p (fewer if p is shorter, the rest zero),
// little-endian in a word.
func load[T string | []byte](p T) uint64 {
	var k uint64
	for i := 0; i < len(p) && i < 8; i++ {
		k |= uint64(p[i]) << (8 * i)
	}
	return k
}
