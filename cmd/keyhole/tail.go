package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/keyholehq/keyhole/export"
	"github.com/keyholehq/keyhole/recorder"
)

// reconnectDelay is how long `records tail --server` waits before it reconnects.
const reconnectDelay = time.Second

// recordsTail writes every completed exchange after cursor after to w, one line each (two
// for an MCP call in OCSF), first the backlog and then live, until ctx ends. From a
// server it reconnects after the last cursor it wrote when the stream breaks, so nothing
// is lost or written twice; heartbeat lines are not passed on.
func recordsTail(ctx context.Context, src *recordsSource, after int64, format string, w io.Writer) error {
	if src.server == "" {
		st, err := src.openRecords(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		enc := export.NewEncoder(format, export.Product{Version: version()})
		var buf []byte
		return export.Tail{}.Run(ctx, st, after, true, func(items []export.Item) error {
			buf = buf[:0]
			for _, it := range items {
				var err error
				if buf, err = enc.Append(buf, it); err != nil {
					return err
				}
			}
			_, err := w.Write(buf)
			return err
		}, nil)
	}
	for connected := false; ; {
		var err error
		after, err = tailOnce(ctx, src, after, format, w)
		if ctx.Err() != nil {
			return nil
		}
		var werr *writeError
		if errors.As(err, &werr) {
			return werr.err
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			connected = true
		} else if !connected {
			// The first connection failed: a wrong URL or token is the user's to fix.
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(reconnectDelay):
		}
	}
}

// writeError is a failed write to the output: tail stops rather than reconnect.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

// tailOnce reads one stream connection and returns the cursor of the last line it wrote.
func tailOnce(ctx context.Context, src *recordsSource, after int64, format string, w io.Writer) (int64, error) {
	q := url.Values{"format": {format}}
	if after > 0 {
		q.Set("after", export.FormatCursor(after))
	}
	resp, err := src.do(ctx, http.MethodGet, "/api/v1/exchanges/stream?"+q.Encode(), nil)
	if err != nil {
		return after, err
	}
	defer resp.Body.Close()
	rd := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := rd.ReadBytes('\n')
		if err != nil {
			// A line without its newline was cut: it is read again after reconnecting.
			return after, io.ErrUnexpectedEOF
		}
		if len(line) == 1 {
			continue // heartbeat
		}
		c, cerr := lineCursor(line)
		if cerr != nil {
			return after, cerr
		}
		if _, err := w.Write(line); err != nil {
			return after, &writeError{err}
		}
		after = c
	}
}

// lineCursor reads the cursor a stream line carries: "cursor" in JSONL, under
// unmapped.keyhole in OCSF.
func lineCursor(line []byte) (int64, error) {
	var l struct {
		Cursor   string `json:"cursor"`
		Unmapped struct {
			Keyhole struct {
				Cursor string `json:"cursor"`
			} `json:"keyhole"`
		} `json:"unmapped"`
	}
	if err := json.Unmarshal(line, &l); err != nil {
		return 0, fmt.Errorf("stream line: %w", err)
	}
	c := l.Cursor
	if c == "" {
		c = l.Unmapped.Keyhole.Cursor
	}
	return export.ParseCursor(c)
}

// recordsExportLines writes the matching completed exchanges, newest first, as JSON
// lines or OCSF events.
func recordsExportLines(ctx context.Context, src *recordsSource, format string, w, stderr io.Writer) error {
	bar := newProgress(stderr, "export")
	defer bar.done()
	if src.server != "" {
		q := src.query()
		q.Set("format", format)
		resp, err := src.do(ctx, http.MethodGet, "/api/v1/exchanges.ndjson?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.Copy(w, io.TeeReader(resp.Body, bar.bytesWriter()))
		return err
	}
	st, err := src.openRecords(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	f, err := storeFilter(src.query())
	if err != nil {
		return err
	}
	limit := f.Limit
	enc := export.NewEncoder(format, export.Product{Version: version()})
	n := 0
	var buf []byte
	for {
		if limit > 0 {
			f.Limit = min(1000, limit-n)
		} else {
			f.Limit = 1000
		}
		recs, next, err := st.List(ctx, f)
		if err != nil {
			return err
		}
		buf = buf[:0]
		for _, rec := range recs {
			if buf, err = appendItem(enc, buf, rec); err != nil {
				return err
			}
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
		n += len(recs)
		bar.count(int64(n), 0)
		if next == "" || limit > 0 && n >= limit {
			return nil
		}
		f.Cursor = next
	}
}

// appendItem appends the lines of rec, nothing for an exchange that has not completed.
func appendItem(enc *export.Encoder, b []byte, rec recorder.Record) ([]byte, error) {
	if rec.Response == nil {
		return b, nil
	}
	it, err := export.ItemOf(rec)
	if err != nil {
		return nil, err
	}
	return enc.Append(b, it)
}
