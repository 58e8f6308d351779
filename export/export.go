// Package export turns recorded exchanges into the lines a SIEM or a log shipper reads:
// JSON lines (the exchange as the admin API shows it) or OCSF events, each carrying the
// cursor of its place in the hash chain, and reads them from a store in chain order, the
// backlog first and then live (Tail).
//
// It maps what the record holds and nothing more: bodies are as masked as the record
// keeps them, credentials as redacted.
package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

// Formats of exported lines.
const (
	// JSONL is one JSON object per exchange: the exchange as the admin API shows it, with
	// its cursor and chain hash.
	JSONL = "jsonl"
	// OCSF is one OCSF event per exchange (HTTP Activity), two for an MCP call (HTTP
	// Activity and API Activity).
	OCSF = "ocsf"
)

// ParseFormat reads a format name; "" is JSONL.
func ParseFormat(s string) (string, error) {
	switch s {
	case "", JSONL:
		return JSONL, nil
	case OCSF:
		return OCSF, nil
	}
	return "", fmt.Errorf("format %q: want ocsf or jsonl", s)
}

// Item is one completed exchange at its place in the chain.
type Item struct {
	// Cursor is the sequence number of the exchange's response entry: exchanges are
	// exported in the order they completed, and a reader resumes after a cursor.
	Cursor int64
	// Hash is the chain hash of the response entry; RequestHash that of the request entry.
	Hash, RequestHash string
	// Completed is when the response entry was made: when the exchange completed.
	Completed time.Time
	Exchange  recorder.Exchange
}

// ItemOf returns the Item of a stored record. A record without its response entry has
// not completed and has no Item: ItemOf returns an error for it.
func ItemOf(rec recorder.Record) (Item, error) {
	if rec.Response == nil {
		return Item{}, fmt.Errorf("exchange %s has not completed", rec.Request.ExchangeID)
	}
	x, err := recorder.Decode(rec)
	if err != nil {
		return Item{}, err
	}
	return Item{Cursor: rec.Response.Seq, Hash: rec.Response.Hash, RequestHash: rec.Request.Hash, Completed: rec.Response.At, Exchange: x}, nil
}

// FormatCursor returns the text of cursor c, as lines carry it and ?after= takes it.
func FormatCursor(c int64) string { return strconv.FormatInt(c, 10) }

// ParseCursor reads a cursor a line carried; "" is the start of the chain.
func ParseCursor(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	c, err := strconv.ParseInt(s, 10, 64)
	if err != nil || c < 0 {
		return 0, errors.New("cursor: not a cursor this API returned")
	}
	return c, nil
}

// Product names the exporting gateway in OCSF metadata and as the proxy.
type Product struct {
	// Version is Keyhole's version.
	Version string
	// Hostname is the name of the machine the gateway runs on, "" when unknown.
	Hostname string
}

// Encoder appends the lines of items in one format. Its zero value is not usable: make
// one with NewEncoder. It is safe for concurrent use.
type Encoder struct {
	format  string
	product Product
}

// NewEncoder returns an Encoder for format (JSONL or OCSF, as ParseFormat returns).
func NewEncoder(format string, p Product) *Encoder { return &Encoder{format: format, product: p} }

// Append appends the lines of it to b, each ending in a newline: one for JSONL, one or
// two (an MCP call) for OCSF.
func (e *Encoder) Append(b []byte, it Item) ([]byte, error) {
	if e.format == OCSF {
		for _, ev := range Events(it, e.product) {
			line, err := json.Marshal(ev)
			if err != nil {
				return nil, fmt.Errorf("encode exchange %s: %w", it.Exchange.ID, err)
			}
			b = append(append(b, line...), '\n')
		}
		return b, nil
	}
	line, err := json.Marshal(jsonLine{Cursor: FormatCursor(it.Cursor), Hash: it.Hash, Exchange: it.Exchange})
	if err != nil {
		return nil, fmt.Errorf("encode exchange %s: %w", it.Exchange.ID, err)
	}
	return append(append(b, line...), '\n'), nil
}

// jsonLine is a JSONL line: the exchange's fields after cursor and hash.
type jsonLine struct {
	Cursor string `json:"cursor"`
	Hash   string `json:"hash"`
	recorder.Exchange
}
