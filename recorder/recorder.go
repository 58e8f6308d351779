// Package recorder writes a durable, tamper-evident record of every exchange at the
// gateway, and reads it back for auditors: list, HAR export, replay and chain verification.
//
// Each exchange is two entries of one hash chain: the request entry, written when the
// gateway has decided (in strict mode, durably, before the request is forwarded), and
// the response entry, written when the client has its answer. Entries are written by one
// goroutine in batches, many per transaction (group commit), into a Store.
package recorder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Modes of recording.
const (
	// Strict records a request durably before it is forwarded and refuses it when the
	// store cannot write.
	Strict = "strict"
	// BestEffort forwards whatever happens to the record; lost records are counted.
	BestEffort = "best_effort"
)

// maxUnsynced bounds how long entries no request waits for may stay committed but not
// yet synced to disk (see UnsyncedAppender): what a lost machine can take with it. The
// writer syncs by then even when no traffic comes, and before it stops.
const maxUnsynced = time.Second

// DefaultBodyLimit is the longest body a record holds when the configuration sets none.
const DefaultBodyLimit = 1 << 20

// ErrUnavailable is returned by Begin in strict mode when the request could not be
// recorded durably: the store failed, the queue stayed full, or the recorder is closed.
var ErrUnavailable = errors.New("recorder unavailable")

// Policy is what the configuration says about recording. It may change on reload.
type Policy struct {
	Mode      string // Strict (the default for "") or BestEffort
	BodyLimit int64  // bytes of each body kept; DefaultBodyLimit when 0
	Redactor  *Redactor
}

// Metrics are the recorder's instruments. Nil fields are not updated.
type Metrics struct {
	QueueDepth   prometheus.Gauge
	WriteSeconds prometheus.Observer
	Errors       prometheus.Counter
	Dropped      prometheus.Counter
}

// Options configure a Recorder. Zero values take the defaults.
type Options struct {
	QueueSize   int           // entries waiting to be written; default 4096
	BatchSize   int           // entries per transaction at most; default 256
	WaitTimeout time.Duration // strict mode: longest wait for a place in the queue; default 5s
	Retention   Retention     // what to keep, see Retention; SetRetention changes it
	Metrics     Metrics
	Log         *slog.Logger
}

// Recorder queues entries and writes them to its Store. It is safe for concurrent use.
type Recorder struct {
	store  Store
	opts   Options
	policy atomic.Pointer[Policy]
	// retention is what the retention loop applies.
	retention atomic.Pointer[Retention]
	queue     chan item
	mu        sync.RWMutex // held for reading while sending to queue; Close takes it to close queue
	closed    bool
	done      chan struct{} // closed when the writer has drained the queue
	stop      chan struct{} // closed by Close: stops retention and the health watch
	pruned    chan struct{} // closed when retention has stopped
	// health is the outcome of the last write to the store (a commit, a sync or a
	// probe); nil until the first one.
	health  atomic.Pointer[health]
	watched chan struct{} // closed when the health watch has stopped
}

// health is the outcome of one write to the store.
type health struct {
	err error
	at  time.Time
}

// healthInterval is how often the recorder checks that its store can write while it
// has written nothing: readiness must follow a disk that filled up or a file that was
// deleted while no traffic came.
const healthInterval = time.Second

// Prober is a Store that can tell, without writing a record, whether it can write now.
// The recorder probes at start and whenever it has written nothing for a second.
type Prober interface {
	Probe(ctx context.Context) error
}

// item is one entry to write; done, when not nil, receives the outcome.
type item struct {
	e    *Entry
	done chan error
}

// New returns a Recorder writing to s under policy p, and starts its writer and its
// retention loop. Close stops them.
func New(s Store, p Policy, o Options) *Recorder {
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 256
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	r := &Recorder{store: s, opts: o, queue: make(chan item, o.QueueSize), done: make(chan struct{}),
		stop: make(chan struct{}), pruned: make(chan struct{}), watched: make(chan struct{})}
	r.SetPolicy(p)
	go r.write()
	if pr, ok := s.(Prober); ok {
		go r.watch(pr)
	} else {
		r.health.Store(&health{at: time.Now()})
		close(r.watched)
	}
	r.SetRetention(o.Retention)
	go r.retain()
	return r
}

// SetPolicy makes p the policy for every record started from now on.
func (r *Recorder) SetPolicy(p Policy) {
	if p.Mode == "" {
		p.Mode = Strict
	}
	if p.BodyLimit <= 0 {
		p.BodyLimit = DefaultBodyLimit
	}
	if p.Redactor == nil {
		p.Redactor = NewRedactor(nil, nil)
	}
	r.policy.Store(&p)
}

// Strict reports whether the policy is strict mode: a request the recorder cannot write
// is refused.
func (r *Recorder) Strict() bool { return r.policy.Load().Mode == Strict }

// Health returns nil when the last write to the store (a commit of records, or the
// probe the recorder makes when it has written nothing for a second) succeeded, and that
// write's error (or a failed sync's) otherwise: in strict mode, requests are being refused. Before the
// first write or probe it returns an error too: a gateway restarted on a full disk must
// not look ready until its store has shown it can write.
func (r *Recorder) Health() error {
	h := r.health.Load()
	if h == nil {
		return errors.New("recorder: store not checked yet")
	}
	return h.err
}

// setHealth records the outcome of a write to the store. It logs when the store stops
// being writable, once, not for every refused request, and when it recovers.
func (r *Recorder) setHealth(err error) {
	old := r.health.Swap(&health{err: err, at: time.Now()})
	switch {
	case err != nil && (old == nil || old.err == nil):
		r.opts.Log.Error("record store cannot be written: strict mode refuses requests, best-effort mode loses their records, until a write succeeds",
			"error", err.Error())
	case err == nil && old != nil && old.err != nil:
		r.opts.Log.Info("record store writable again", "was", old.err.Error())
	}
}

// watch probes the store at start and then whenever nothing was written to it for
// healthInterval, until Close.
func (r *Recorder) watch(pr Prober) {
	defer close(r.watched)
	probe := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.setHealth(pr.Probe(ctx))
	}
	probe()
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if h := r.health.Load(); h == nil || time.Since(h.at) >= healthInterval/2 {
				// Nothing written since the last tick.
				probe()
			}
		case <-r.stop:
			return
		}
	}
}

// BodyLimit returns how many bytes of each body a record keeps.
func (r *Recorder) BodyLimit() int64 { return r.policy.Load().BodyLimit }

// Store returns the store the recorder writes to.
func (r *Recorder) Store() Store { return r.store }

// Begin records the request part of x: identity, route, decision and request. In strict
// mode it returns only when the entry is durable, or ErrUnavailable (the caller must
// then refuse the request); ctx bounds only the wait for a place in the queue. In
// best-effort mode it queues the entry and returns nil.
// extra are per-request secrets, such as the client's own token, to redact.
func (r *Recorder) Begin(ctx context.Context, x *Exchange, extra ...string) error {
	p := r.policy.Load()
	e, err := requestEntry(x, p.Redactor, extra)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if p.Mode != Strict {
		r.send(ctx, item{e: e}, false)
		return nil
	}
	done := make(chan error, 1)
	if !r.send(ctx, item{e: e, done: done}, true) {
		return fmt.Errorf("%w: queue full", ErrUnavailable)
	}
	// Once queued, the entry is written or fails as part of its batch; waiting for that
	// even if the client has gone keeps "refused, so recorded again as refused" from
	// writing one request twice. The writer bounds each transaction, so this ends.
	if err := <-done; err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// End records the response part of x, after Begin. It encodes the entry (x may change
// once End returns), queues it and returns.
func (r *Recorder) End(x *Exchange, extra ...string) {
	p := r.policy.Load()
	e, err := responseEntry(x, p.Redactor, extra)
	if err != nil {
		r.lose(1, err)
		return
	}
	r.send(context.Background(), item{e: e}, p.Mode == Strict)
}

// Refused records an exchange that was answered without reaching an upstream (401,
// 403, 404, 400 ...): both entries are queued and Refused returns. It never waits for a
// place in the queue, in strict mode either, and takes only the first half of it: strict
// mode's promise is about requests that are forwarded, and a flood of refused requests
// (unauthenticated ones included) must neither hold handlers nor crowd out the records
// that forwarding waits for. A refusal the queue cannot take is counted as dropped.
func (r *Recorder) Refused(x *Exchange, extra ...string) {
	if len(r.queue) >= cap(r.queue)/2 {
		r.lose(2, errors.New("queue half full: refusals yield to forwarded requests"))
		return
	}
	p := r.policy.Load()
	req, err := requestEntry(x, p.Redactor, extra)
	if err != nil {
		r.lose(2, err)
		return
	}
	resp, err := responseEntry(x, p.Redactor, extra)
	if err != nil {
		r.lose(1, err)
		resp = nil
	}
	if r.send(context.Background(), item{e: req}, false) && resp != nil {
		r.send(context.Background(), item{e: resp}, false)
	} else if resp != nil {
		r.lose(1, errors.New("queue full"))
	}
}

// send queues it. With wait it waits up to WaitTimeout (or ctx) for a place; without, a
// full queue drops it. It reports whether it was queued; a dropped entry is counted.
func (r *Recorder) send(ctx context.Context, it item, wait bool) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		r.lose(1, errors.New("recorder closed"))
		return false
	}
	select {
	case r.queue <- it:
		r.depth()
		return true
	default:
	}
	if wait {
		t := time.NewTimer(r.opts.WaitTimeout)
		defer t.Stop()
		select {
		case r.queue <- it:
			r.depth()
			return true
		case <-t.C:
		case <-ctx.Done():
		}
	}
	r.lose(1, errors.New("queue full"))
	return false
}

func (r *Recorder) depth() {
	if g := r.opts.Metrics.QueueDepth; g != nil {
		g.Set(float64(len(r.queue)))
	}
}

// lose counts and logs n entries that will never be written.
func (r *Recorder) lose(n int, err error) {
	if c := r.opts.Metrics.Dropped; c != nil {
		c.Add(float64(n))
	}
	r.opts.Log.Warn("exchange record lost", "entries", n, "error", err.Error())
}

// write is the writer goroutine: it takes what is queued, up to BatchSize entries, and
// appends them in one transaction, until the queue is closed and drained.
func (r *Recorder) write() {
	defer close(r.done)
	batch := make([]item, 0, r.opts.BatchSize)
	entries := make([]*Entry, 0, r.opts.BatchSize)
	unsynced, _ := r.store.(UnsyncedAppender)
	synced := time.Now()
	dirty := false // an unsynced commit since synced
	deadline := time.NewTimer(maxUnsynced)
	deadline.Stop()
	syncNow := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := unsynced.Sync(ctx)
		if err != nil {
			r.setHealth(err)
			if c := r.opts.Metrics.Errors; c != nil {
				c.Inc()
			}
			return err
		}
		// A sync shows that what was committed is on disk, not that the store takes
		// writes: on a full disk the WAL still syncs. It refreshes a healthy store's
		// last write, and leaves an error an append or a probe found for them to clear.
		if h := r.health.Load(); h != nil && h.err == nil {
			r.health.CompareAndSwap(h, &health{at: time.Now()})
		}
		synced, dirty = time.Now(), false
		return nil
	}
	for {
		var first item
		var ok bool
		if dirty {
			// Nothing may stay unsynced past the deadline, however quiet the traffic.
			select {
			case first, ok = <-r.queue:
			case <-deadline.C:
				if err := syncNow(); err != nil {
					r.opts.Log.Error("exchange records committed but not synced to disk; retrying in a second", "error", err.Error())
					deadline.Reset(maxUnsynced)
				}
				continue
			}
		} else {
			first, ok = <-r.queue
		}
		if !ok {
			break
		}
		batch = append(batch[:0], first)
	fill:
		for len(batch) < r.opts.BatchSize {
			select {
			case it, ok := <-r.queue:
				if !ok {
					break fill
				}
				batch = append(batch, it)
			default:
				break fill
			}
		}
		r.depth()
		entries = entries[:0]
		waiting := 0
		for _, it := range batch {
			entries = append(entries, it.e)
			if it.done != nil {
				waiting++
			}
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		// A batch no request waits for (responses, refusals, best-effort requests) need
		// not wait for the disk: the next synced commit makes it durable with its own,
		// which spares a lone request the wait for its predecessor's response sync.
		if unsynced != nil && waiting == 0 && start.Sub(synced) < maxUnsynced {
			if err = unsynced.AppendUnsynced(ctx, entries); err == nil && !dirty {
				dirty = true
				deadline.Reset(time.Until(synced.Add(maxUnsynced)))
			}
		} else if err = r.store.Append(ctx, entries); err == nil {
			synced, dirty = start, false
			deadline.Stop()
		}
		cancel()
		if o := r.opts.Metrics.WriteSeconds; o != nil {
			o.Observe(time.Since(start).Seconds())
		}
		r.setHealth(err)
		if err != nil {
			if c := r.opts.Metrics.Errors; c != nil {
				c.Inc()
			}
			// Counted, not logged: setHealth said once that the store cannot be
			// written, and a line for every failed batch would be one per request.
			if c := r.opts.Metrics.Dropped; c != nil && len(batch) > waiting {
				c.Add(float64(len(batch) - waiting))
			}
		}
		for _, it := range batch {
			if it.done != nil {
				it.done <- err
			}
		}
		release(batch)
	}
	if dirty {
		if err := syncNow(); err != nil {
			r.opts.Log.Error("exchange records committed but not synced to disk at shutdown; closing the store checkpoints them if it is the file's last user", "error", err.Error())
		}
	}
}

// Close stops accepting records, writes everything queued, and stops retention and the
// health watch, waiting for them. It does not close the store. It returns ctx's error if they did not stop in time.
func (r *Recorder) Close(ctx context.Context) error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.queue)
		close(r.stop)
	}
	r.mu.Unlock()
	for _, c := range []chan struct{}{r.done, r.pruned, r.watched} {
		select {
		case <-c:
		case <-ctx.Done():
			return fmt.Errorf("recorder: drain queue: %w", ctx.Err())
		}
	}
	return nil
}

// requestEntry encodes the request part of x, redacted.
func requestEntry(x *Exchange, red *Redactor, extra []string) (*Entry, error) {
	rd := red.with(extra)
	part := *x
	part.ForwardedAt, part.RespondedAt, part.Response, part.Error, part.Durations = nil, nil, nil, "", Durations{}
	body := part.Request.Body
	var tail []byte
	part.Request.Body, tail = detach(body, rd)
	enc := func(b []byte) ([]byte, error) { return appendExchange(b, &part, red) }
	data, buf, err := encodeEntry(sizeHint(part.Request.Header, tail), tail, KindRequest, rd, enc)
	if errors.Is(err, errMarkLost) {
		part.Request.Body = inline(body, rd)
		data, buf, err = encodeEntry(sizeHint(part.Request.Header, nil)+len(body.Text), nil, KindRequest, rd, enc)
	}
	if err != nil {
		return nil, err
	}
	// The index columns are searchable copies of the record: they are redacted as it is.
	clean := rd.string
	e := &Entry{Kind: KindRequest, ExchangeID: x.ID, At: x.ReceivedAt, Data: data, buf: buf,
		Route: x.Route, Decision: x.Decision, Method: clean(x.Request.Method), Path: clean(x.Request.Path)}
	if x.Identity != nil {
		e.Subject = clean(x.Identity.Subject)
	}
	e.Tool = clean(x.MCP.Tool())
	return e, nil
}

// responseEntry encodes the completion of x, redacted.
func responseEntry(x *Exchange, red *Redactor, extra []string) (*Entry, error) {
	c := completion{ForwardedAt: x.ForwardedAt, RespondedAt: x.RespondedAt, Decision: x.Decision, Reason: x.Reason,
		ApprovalID: x.ApprovalID, Error: x.Error, Durations: x.Durations}
	rd := red.with(extra)
	status := 0
	var tail []byte
	var body Body
	hint := 512
	if x.Response != nil {
		resp := *x.Response
		body = resp.Body
		resp.Body, tail = detach(body, rd)
		c.Response = &resp
		status = resp.Status
		hint = sizeHint(resp.Header, tail)
	}
	enc := func(b []byte) ([]byte, error) { return appendCompletion(b, &c, red) }
	data, buf, err := encodeEntry(hint, tail, KindResponse, rd, enc)
	if errors.Is(err, errMarkLost) {
		c.Response.Body = inline(body, rd)
		data, buf, err = encodeEntry(hint+len(body.Text), nil, KindResponse, rd, enc)
	}
	if err != nil {
		return nil, err
	}
	at := time.Now()
	if x.RespondedAt != nil {
		at = *x.RespondedAt
	}
	return &Entry{Kind: KindResponse, ExchangeID: x.ID, At: at, Data: data, buf: buf, Route: x.Route, Decision: x.Decision, Status: status}, nil
}

// encodeEntry returns an entry's Data: the record JSON that enc appends, redacted by rd,
// then tail, the redacted bytes of its body (see detach). buf, when not nil, is the
// buffer of encodeBuffers that holds it. It returns errMarkLost when redaction changed the
// record's JSON so that it no longer ends where it did or no longer marks its body raw.
func encodeEntry(hint int, tail []byte, kind string, rd *redaction, enc func([]byte) ([]byte, error)) ([]byte, *[]byte, error) {
	buf := encodeBuffer(hint)
	data, err := enc((*buf)[:0])
	if err != nil {
		encodeBuffers.Put(buf)
		return nil, nil, fmt.Errorf("encode record: %w", err)
	}
	data, buf = redactData(data, buf, rd)
	if len(tail) > 0 && buf == nil && !marksRaw(data, kind) {
		// A replaced secret changed the JSON (buf is nil only then). A value the client
		// chose (its token, an access_token) can cut the JSON open, so that a reader
		// would go on reading the body — bytes the client also chose — as the record.
		return nil, nil, errMarkLost
	}
	data = append(data, tail...)
	if buf != nil {
		*buf = data
	}
	return data, buf, nil
}

// inline returns b as its entry's record holds it when its bytes cannot follow the
// record (errMarkLost): a text body stays in the JSON, redacted with it; a binary body is
// redacted in its raw bytes before it is base64-encoded, where a secret could no longer
// be found, and then with the JSON.
func inline(b Body, rd *redaction) Body {
	if b.Encoding != "base64" {
		return b
	}
	raw := b.Bytes()
	clean := rd.bytes(raw)
	if bytes.Equal(raw, clean) {
		return b
	}
	nb := NewBody(clean, b.Size)
	nb.Truncated, nb.Coding = b.Truncated, b.Coding
	return nb
}

// encodeBuffers holds the buffers entries are encoded into, given back by the writer
// once their entries are written: a large exchange's records are some 150 KB, and
// allocating them for every request kept the garbage collector busy.
var encodeBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooled is the largest buffer encodeBuffers keeps: a rare huge record does not stay
// in memory for the small ones.
const maxPooled = 4 << 20

// encodeBuffer returns a buffer of encodeBuffers with room for about n bytes.
func encodeBuffer(n int) *[]byte {
	buf := encodeBuffers.Get().(*[]byte)
	if cap(*buf) < n {
		*buf = make([]byte, 0, n)
	}
	return buf
}

// redactData redacts data, which is in buf, and returns the redacted data and the
// buffer that holds it: buf, with data as it grew in it, or nil when redaction made a
// copy (buf is then given back).
func redactData(data []byte, buf *[]byte, rd *redaction) ([]byte, *[]byte) {
	*buf = data
	clean := rd.bytes(data)
	if len(clean) == 0 || len(data) == 0 || &clean[0] != &data[0] {
		releaseBuffer(buf)
		return clean, nil
	}
	return clean, buf
}

// releaseBuffer gives buf back to encodeBuffers.
func releaseBuffer(buf *[]byte) {
	if buf != nil && cap(*buf) <= maxPooled {
		*buf = (*buf)[:0]
		encodeBuffers.Put(buf)
	}
}

// release gives the buffers of written entries back: nothing refers to their Data any more.
func release(batch []item) {
	for _, it := range batch {
		if it.e.buf != nil {
			releaseBuffer(it.e.buf)
			it.e.buf, it.e.Data = nil, nil
		}
	}
}

// RedactString returns s with every secret value the policy knows, and extra, redacted.
func (r *Recorder) RedactString(s string, extra ...string) string {
	rd := r.policy.Load().Redactor.with(extra)
	return rd.string(s)
}

// Redacted returns x as Begin and End would record it now: with the policy's redaction.
func (r *Recorder) Redacted(x *Exchange, extra ...string) (*Exchange, error) {
	p := r.policy.Load()
	req, err := requestEntry(x, p.Redactor, extra)
	if err != nil {
		return nil, err
	}
	resp, err := responseEntry(x, p.Redactor, extra)
	if err != nil {
		return nil, err
	}
	defer releaseBuffer(req.buf)
	defer releaseBuffer(resp.buf)
	out, err := Decode(Record{Request: *req, Response: resp})
	if err != nil {
		return nil, err
	}
	return &out, nil
}
