package export

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyholehq/keyhole/recorder"
)

// Source is the part of a recorder.Store a Tail reads.
type Source interface {
	Entries(ctx context.Context, after int64, limit int) ([]recorder.Entry, error)
	Get(ctx context.Context, id string) (recorder.Record, error)
}

// Defaults of a Tail.
const (
	DefaultPoll = 500 * time.Millisecond
	// DefaultPage is how many chain entries one read takes: with bodies of up to the
	// recorder's body limit each, what bounds a stream's memory.
	DefaultPage = 64
)

// Tail reads the completed exchanges of a store in chain order: the order of their
// response entries. The store's entries are the ground truth, so a Tail sees what every
// process writing the store commits. Its zero value polls every DefaultPoll and reads
// DefaultPage entries at a time.
type Tail struct {
	Poll time.Duration
	Page int
	// Wake, when not nil, ends a wait between polls early (a signal that a batch committed).
	Wake <-chan struct{}
}

// Run calls emit with each batch of items completed after cursor after, in chain order,
// until ctx ends (it then returns nil) or, unless follow, the backlog has been read. When
// a poll finds nothing new, it calls idle (if not nil) before waiting. It returns the
// first error of src, emit or idle. An exchange whose request entry retention has
// deleted or expired is skipped; an exchange that never completes (its process died) never appears.
func (t Tail) Run(ctx context.Context, src Source, after int64, follow bool, emit func([]Item) error, idle func() error) error {
	poll, page := t.Poll, t.Page
	if poll <= 0 {
		poll = DefaultPoll
	}
	if page <= 0 {
		page = DefaultPage
	}
	var timer *time.Timer
	for {
		es, err := src.Entries(ctx, after, page)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read entries after %d: %w", after, err)
		}
		items, err := complete(ctx, src, es)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if len(es) > 0 {
			after = es[len(es)-1].Seq
		}
		if len(items) > 0 {
			if err := emit(items); err != nil {
				return err
			}
		}
		if len(es) == page {
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		if !follow {
			return nil
		}
		if len(items) == 0 && idle != nil {
			if err := idle(); err != nil {
				return err
			}
		}
		if timer == nil {
			timer = time.NewTimer(poll)
			defer timer.Stop()
		} else {
			timer.Reset(poll)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-t.Wake:
		}
	}
}

// complete returns the items of the response entries among es, in order. A request
// entry read in the same page saves a lookup.
func complete(ctx context.Context, src Source, es []recorder.Entry) ([]Item, error) {
	var items []Item
	requests := map[string]*recorder.Entry{}
	for i := range es {
		e := &es[i]
		if e.DataHash != "" {
			continue // a stub: retention has expired the exchange
		}
		switch e.Kind {
		case recorder.KindRequest:
			requests[e.ExchangeID] = e
		case recorder.KindResponse:
			rec := recorder.Record{Response: e}
			if q, ok := requests[e.ExchangeID]; ok {
				rec.Request = *q
			} else {
				got, err := src.Get(ctx, e.ExchangeID)
				if errors.Is(err, recorder.ErrNotFound) {
					continue
				}
				if err != nil {
					return nil, fmt.Errorf("read exchange %s: %w", e.ExchangeID, err)
				}
				rec.Request = got.Request
			}
			it, err := ItemOf(rec)
			if err != nil {
				return nil, err
			}
			items = append(items, it)
		}
	}
	return items, nil
}
