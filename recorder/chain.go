package recorder

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"
)

// GenesisHash is the PrevHash of the first entry of a chain.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// ChainVersion is the chain format Seal seals entries with. Version 2 hashes Data
// through its SHA-256, so per-route retention can replace an entry's Data by that digest
// and the entry still verifies; version 1 (entries sealed before it) hashed Data itself.
const ChainVersion = 2

// Seal links e to the entry before it, whose hash is prev, and sets e.PrevHash, e.Version
// and e.Hash. The hash is SHA-256 over a versioned, length-delimited encoding of prev,
// the sequence number, kind, exchange id, time (Unix nanoseconds) and the SHA-256 of
// Data, so changing, removing or reordering any entry changes the hash of every entry
// after it.
func Seal(e *Entry, prev string) {
	e.PrevHash = prev
	e.Version = ChainVersion
	e.DataHash = ""
	e.Hash = hashOf(e)
}

// hashOf is the hash of e in its Version's format, "" for a version this build does
// not know.
func hashOf(e *Entry) string {
	h := sha256.New()
	var buf [64]byte
	field := func(p []byte) {
		h.Write(strconv.AppendInt(buf[:0], int64(len(p)), 10))
		h.Write([]byte{':'})
		h.Write(p)
	}
	switch e.Version {
	case 0, 1:
		field([]byte("keyhole-chain-v1"))
	case 2:
		field([]byte("keyhole-chain-v2"))
	default:
		return ""
	}
	field([]byte(e.PrevHash))
	field(strconv.AppendInt(buf[:0], e.Seq, 10))
	field([]byte(e.Kind))
	field([]byte(e.ExchangeID))
	field(strconv.AppendInt(buf[:0], e.At.UnixNano(), 10))
	if e.Version < 2 {
		field(e.Data)
	} else {
		field([]byte(dataHash(e)))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// dataHash is the hex SHA-256 of e's Data, or the one its stub keeps.
func dataHash(e *Entry) string {
	if e.DataHash != "" {
		return e.DataHash
	}
	sum := sha256.Sum256(e.Data)
	return hex.EncodeToString(sum[:])
}

// Stub returns e as per-route retention keeps it: its Data replaced by the Data's
// SHA-256 (DataHash), which its hash covers, so the stub verifies as the entry did. ok
// is false for an entry that cannot become a stub: one sealed in chain version 1, whose
// hash covers its Data itself (it goes only with the chain's prefix, by Prune), or one
// that already is a stub.
func Stub(e Entry) (stub Entry, ok bool) {
	if e.Version < 2 || e.DataHash != "" {
		return e, false
	}
	e.DataHash = dataHash(&e)
	e.Data = nil
	return e, true
}

// expiry is the Data of a KindExpiry entry.
type expiry struct {
	// Expired are the sequence numbers of the entries made stubs, as inclusive ranges.
	Expired [][2]int64 `json:"expired"`
	Entries int        `json:"entries"`
	// Routes and Before say which exchanges the retention rule selected: received before
	// Before on one of Routes or, when OtherRoutes, on any route not in Routes.
	Routes      []string `json:"routes,omitempty"`
	OtherRoutes bool     `json:"other_routes,omitempty"`
	Before      string   `json:"before"`
}

// Expiry returns the unsealed KindExpiry entry a store appends after making stubs of the
// entries numbered seqs (ascending) for rule.
func Expiry(seqs []int64, rule ExpiryRule, now time.Time) *Entry {
	x := expiry{Expired: ranges(seqs), Entries: len(seqs), Routes: rule.Routes, OtherRoutes: rule.OtherRoutes,
		Before: rule.Before.UTC().Format(time.RFC3339)}
	data, _ := json.Marshal(x)
	return &Entry{Kind: KindExpiry, At: now, Data: data}
}

// ranges writes ascending seqs as inclusive ranges.
func ranges(seqs []int64) [][2]int64 {
	var rs [][2]int64
	for _, s := range seqs {
		if n := len(rs); n > 0 && rs[n-1][1]+1 == s {
			rs[n-1][1] = s
			continue
		}
		rs = append(rs, [2]int64{s, s})
	}
	return rs
}

// covers reports whether seq is in one of the ascending ranges rs.
func covers(rs [][2]int64, seq int64) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i][1] >= seq })
	return i < len(rs) && rs[i][0] <= seq
}

// ExpiryRule selects the exchanges per-route retention makes stubs of: those received
// before Before on one of Routes or, when OtherRoutes is set, on any route not in Routes
// (the global recorder.retention where a longer route retention holds the prefix back).
type ExpiryRule struct {
	Before      time.Time
	Routes      []string
	OtherRoutes bool
}

// checkpoint is the Data of a KindCheckpoint entry.
type checkpoint struct {
	DeletedThrough int64  `json:"deleted_through"` // sequence number of the last deleted entry
	LastHash       string `json:"last_hash"`       // its hash: the PrevHash of the next entry
	Deleted        int64  `json:"deleted"`         // entries deleted by this prune
	Cutoff         string `json:"cutoff"`
}

// Checkpoint returns the unsealed checkpoint entry a store appends after deleting every
// entry up to and including last (deleted entries in all, older than cutoff).
func Checkpoint(last Entry, deleted int64, cutoff, now time.Time) *Entry {
	data, _ := json.Marshal(checkpoint{DeletedThrough: last.Seq, LastHash: last.Hash, Deleted: deleted, Cutoff: cutoff.UTC().Format(time.RFC3339)})
	return &Entry{Kind: KindCheckpoint, At: now, Data: data}
}

// Report is the result of verifying a chain.
type Report struct {
	OK      bool   `json:"ok"`
	Entries int64  `json:"entries"`          // entries checked
	First   int64  `json:"first_seq"`        // sequence number of the first entry held
	Last    int64  `json:"last_seq"`         // and of the last
	Head    string `json:"head"`             // hash of the last entry: anchor it elsewhere to detect truncation
	Break   *Break `json:"break,omitempty"`  // the first break found
	Pruned  int64  `json:"pruned,omitempty"` // entries before First, deleted by retention
	// Expired counts the stubs held: entries whose Data per-route retention removed, each
	// vouched for by an expiry entry.
	Expired int64 `json:"expired,omitempty"`
}

// Break locates the first place where the chain does not hold.
type Break struct {
	Seq    int64  `json:"seq"`
	Reason string `json:"reason"`
}

// Verify walks every entry of s in sequence order and checks that each one's hash is the
// hash of its content, that it links to the entry before it, and that no sequence
// number is missing. A chain whose first entries were deleted by retention verifies when
// a checkpoint entry, itself in the chain, vouches for the hash of the last deleted one.
// progress, when not nil, is called now and then with entries done and the total.
//
// Retention may delete the oldest entries while Verify reads: a gap whose entries were
// pruned meanwhile (the chain now starts after it) is not a break, and the walk starts
// again from the new first entry.
func Verify(ctx context.Context, s Store, progress func(done, total int64)) (Report, error) {
	for attempt := 1; ; attempt++ {
		r, err := verify(ctx, s, progress)
		if !errors.Is(err, errPrunedMeanwhile) || attempt == 3 {
			return r, err
		}
	}
}

// errPrunedMeanwhile is verify's answer when entries it was about to read were pruned.
var errPrunedMeanwhile = errors.New("entries were pruned while the chain was read")

func verify(ctx context.Context, s Store, progress func(done, total int64)) (Report, error) {
	total, err := s.Count(ctx)
	if err != nil {
		return Report{}, fmt.Errorf("count entries: %w", err)
	}
	var r Report
	var prev *Entry
	// startClaim is the checkpoint vouching for the PrevHash of the first entry held; it
	// is checked once the whole chain has been read.
	var startClaim *checkpoint
	var first Entry
	// stubs are the stubs read whose expiry entry has not been read yet.
	var stubs []int64
	const page = 1000
	for after := int64(0); ; {
		es, err := s.Entries(ctx, after, page)
		if err != nil {
			return Report{}, fmt.Errorf("read entries after %d: %w", after, err)
		}
		for i := range es {
			e := &es[i]
			r.Entries++
			if prev == nil {
				first = *e
				r.First = e.Seq
			} else if r.Break == nil {
				switch {
				case e.Seq != prev.Seq+1:
					if head, err := s.Entries(ctx, 0, 1); err == nil && len(head) == 1 && head[0].Seq > prev.Seq {
						return Report{}, errPrunedMeanwhile
					}
					r.Break = &Break{Seq: e.Seq, Reason: fmt.Sprintf("entries %d to %d are missing", prev.Seq+1, e.Seq-1)}
				case e.PrevHash != prev.Hash:
					r.Break = &Break{Seq: e.Seq, Reason: fmt.Sprintf("entry does not link to entry %d (edited, reordered or replaced)", prev.Seq)}
				}
			}
			if r.Break == nil {
				switch h := hashOf(e); {
				case h == "":
					r.Break = &Break{Seq: e.Seq, Reason: fmt.Sprintf("entry is sealed in chain version %d, which this build does not know", e.Version)}
				case h != e.Hash:
					r.Break = &Break{Seq: e.Seq, Reason: "entry content does not match its hash (edited)"}
				}
			}
			if e.DataHash != "" {
				r.Expired++
				stubs = append(stubs, e.Seq)
			}
			switch e.Kind {
			case KindCheckpoint:
				var c checkpoint
				if json.Unmarshal(e.Data, &c) == nil && c.DeletedThrough == first.Seq-1 {
					startClaim = &c
				}
			case KindExpiry:
				var x expiry
				if json.Unmarshal(e.Data, &x) == nil {
					stubs = slices.DeleteFunc(stubs, func(seq int64) bool { return covers(x.Expired, seq) })
				}
			}
			prev = e
			after = e.Seq
		}
		if progress != nil {
			progress(r.Entries, total)
		}
		if len(es) < page {
			break
		}
		if err := ctx.Err(); err != nil {
			return Report{}, err
		}
	}
	if prev == nil {
		r.OK = true
		return r, nil
	}
	r.Last, r.Head = prev.Seq, prev.Hash
	if r.Break == nil {
		switch {
		case first.Seq == 1 && first.PrevHash != GenesisHash:
			r.Break = &Break{Seq: first.Seq, Reason: "first entry does not start the chain"}
		case first.Seq > 1 && (startClaim == nil || startClaim.LastHash != first.PrevHash):
			r.Break = &Break{Seq: first.Seq, Reason: fmt.Sprintf("entries 1 to %d are missing and no checkpoint vouches for their deletion", first.Seq-1)}
		case first.Seq > 1:
			r.Pruned = first.Seq - 1
		}
	}
	if r.Break == nil && len(stubs) > 0 {
		r.Break = &Break{Seq: stubs[0], Reason: "entry's content was removed and no expiry entry vouches for it"}
	}
	r.OK = r.Break == nil
	return r, nil
}
