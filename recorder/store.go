package recorder

import (
	"context"
	"errors"
	"time"
)

// Entry kinds.
const (
	// KindRequest holds an Exchange as it was when the gateway decided: identity,
	// route, decision, request. In strict mode it is durable before the request is forwarded.
	KindRequest = "request"
	// KindResponse completes the exchange of the KindRequest entry with the same
	// ExchangeID: response, timings, final decision and error.
	KindResponse = "response"
	// KindCheckpoint is written by retention: it carries the sequence number and hash of
	// the last deleted entry, so the chain of what remains still verifies.
	KindCheckpoint = "checkpoint"
	// KindExpiry is written by per-route retention: it lists the entries whose Data it
	// removed, so their stubs (Entry.DataHash) still verify.
	KindExpiry = "expiry"
)

// Entry is one link of the hash chain: a row of the store that never changes but for
// one thing, per-route retention replacing its Data by the Data's SHA-256 (Expire).
// Data is the JSON the hash covers, byte for byte, through its SHA-256. Subject, Route, Decision, Method, Path and Status copy
// fields of Data so a store can index them without decoding it; they are not trusted
// by verification.
type Entry struct {
	Seq        int64     // assigned by the store, 1-based, without gaps
	Kind       string    // KindRequest, KindResponse, KindCheckpoint or KindExpiry
	ExchangeID string    // the request id; "" for checkpoints
	At         time.Time // when the entry was made (received_at for requests)
	Data       []byte
	PrevHash   string // Hash of the entry before, or GenesisHash
	Hash       string // assigned by Seal
	// Version is the chain format the entry was sealed with: ChainVersion (Seal sets
	// it), or 1 for entries written before per-route retention, whose hash covers Data
	// itself, so their Data can only go with the chain's prefix.
	Version int
	// DataHash is the hex SHA-256 of the Data that per-route retention removed from this
	// entry (its stub): "" while the entry holds its Data.
	DataHash string

	Subject  string
	Route    string
	Decision string
	Method   string
	Path     string
	Status   int    // response entries only
	Tool     string // request entries of tools/call on mcp routes: the tool's name

	// buf, when not nil, holds Data: the recorder made the entry, and gives the buffer
	// back to encodeBuffers once the entry is written (see Store.Append).
	buf *[]byte
}

// Record is one exchange as stored: its request entry and, once the response is done,
// its response entry.
type Record struct {
	Request  Entry
	Response *Entry
}

// Filter selects exchanges to list. Zero fields do not filter.
type Filter struct {
	Since, Until time.Time // received at or after Since, before Until
	Subject      string
	Route        string
	Decision     string
	Status       int
	Tool         string // tools/call of this tool on mcp routes
	// Cursor is the ID of the last exchange of the previous page: the page holds older ones.
	Cursor string
	Limit  int // at most this many; a store caps it
}

// UnsyncedAppender is a Store that can also commit entries without waiting for the
// disk. They must survive a crash of the process at once and a crash of the machine
// once a later Append or Sync has returned (a synced commit makes every earlier one
// durable too), so the chain never has a gap. The recorder uses it for batches no
// request waits for, and syncs within a second of the first unsynced commit, traffic
// or not, and before Close returns.
type UnsyncedAppender interface {
	AppendUnsynced(ctx context.Context, entries []*Entry) error
	// Sync makes every entry committed so far durable.
	Sync(ctx context.Context) error
}

// ErrNotFound is returned by Store.Get for an exchange the store does not hold.
var ErrNotFound = errors.New("exchange not found")

// Store is durable storage for exchange records. Implementations (store/sqlite, and
// PostgreSQL for several replicas on one database) must be safe for concurrent use and
// must serialise Append across every process writing to the same database, so that the
// chain stays one line.
type Store interface {
	// Append assigns each entry the next sequence number, links it to the chain with
	// Seal, and commits all of them in one transaction: on a nil return every entry is
	// durable; on an error none is. Request entries create the exchange's index row,
	// response entries complete it. Append and AppendUnsynced must not keep an entry's
	// Data once they return: the recorder reuses the buffer for the next entry.
	Append(ctx context.Context, entries []*Entry) error
	// List returns exchanges matching f, newest first, and the cursor of the next page
	// ("" when there is none).
	List(ctx context.Context, f Filter) ([]Record, string, error)
	// Get returns one exchange, or ErrNotFound.
	Get(ctx context.Context, id string) (Record, error)
	// Entries returns up to limit entries with Seq > after, in sequence order. It must
	// not return fewer than limit while more exist: Verify stops at a short page.
	Entries(ctx context.Context, after int64, limit int) ([]Entry, error)
	// Count returns the number of entries, for progress reports.
	Count(ctx context.Context) (int64, error)
	// Prune deletes the oldest run of entries made before cutoff (a chain can lose only
	// its first entries: an old entry behind a newer one waits for a later prune) and
	// appends a checkpoint entry (Checkpoint) for the last one deleted. It returns how
	// many entries it deleted.
	Prune(ctx context.Context, cutoff time.Time) (int64, error)
	// Expire makes stubs (Stub) of the request and response entries of the exchanges
	// rule selects, deletes their index rows (List and Get no longer find them), and
	// appends an expiry entry (Expiry) listing the stubs, in transactions of bounded size.
	// It returns how many entries it made stubs of.
	Expire(ctx context.Context, rule ExpiryRule) (int64, error)
	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error
	// Close releases the store.
	Close() error
}
