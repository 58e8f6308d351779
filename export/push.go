package export

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PushConfig is where and how a Pusher delivers. URL and the Headers' values are
// secrets: a Pusher never puts them in an error, a log line or a metric.
type PushConfig struct {
	URL      string
	Format   string // JSONL or OCSF
	Batch    int    // most exchanges per POST
	Interval time.Duration
	Timeout  time.Duration // one POST
	Headers  map[string]string
}

// PushStore is what a Pusher needs of the record store: its entries and the cursors.
type PushStore interface {
	Source
	CursorStore
}

// PushMetrics are the collectors a Pusher reports to; nil fields are not reported.
type PushMetrics struct {
	// Lag is the age in seconds of the oldest completed exchange not yet delivered, 0
	// when every exchange read from the store has been delivered (or another process
	// holds the lease).
	Lag prometheus.Gauge
	// Active is 1 while this process holds the lease and pushes, 0 otherwise.
	Active prometheus.Gauge
	// Delivered counts exchanges the endpoint acknowledged.
	Delivered prometheus.Counter
	// Errors counts failed attempts by kind: http (an answer other than 2xx), network
	// (no answer: refused, reset, timed out), store (reading entries or the cursor).
	Errors *prometheus.CounterVec
}

// Defaults of PushOptions.
const (
	DefaultCursorName    = "webhook"
	DefaultLease         = 30 * time.Second
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = time.Minute
	DefaultMaxBatchBytes = 8 << 20
)

// PushOptions tune a Pusher. Zero fields take the defaults.
type PushOptions struct {
	// Name is the cursor's name in the store (DefaultCursorName).
	Name string
	// Holder names this process in the lease; default: host name, process id and a
	// random suffix, so that a restarted process is a new holder.
	Holder string
	// Lease is how long a lease lasts unless renewed (DefaultLease): how long a
	// replica that died without releasing it keeps the others waiting.
	Lease time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts, which doubles
	// from the one to the other (with jitter).
	MinBackoff, MaxBackoff time.Duration
	// MaxBatchBytes ends a batch early once its body reaches this size (at least one
	// exchange is always sent).
	MaxBatchBytes int
	// Page is how many chain entries one read takes (DefaultPage).
	Page    int
	Product Product
	// Client sends the POSTs; default: one that follows no redirect (a redirect would
	// take the headers' secrets elsewhere). Each POST is bounded by PushConfig.Timeout.
	Client  *http.Client
	Metrics PushMetrics
	Log     *slog.Logger
}

// Pusher delivers every completed exchange of a store, in chain order and in batches,
// to an HTTP endpoint as newline-delimited JSON, at least once. The store's cursor moves
// only after the endpoint acknowledged a batch with a 2xx, so an endpoint that is down
// delays exchanges (retried with bounded backoff, never dropped) and a restart resumes
// after the last acknowledged batch: only a batch in flight when the process stopped, or
// when it lost its lease, is delivered twice. Each line carries its exchange's cursor and
// id, for a receiver that removes duplicates.
//
// Of the processes sharing a store, one pushes at a time: it holds the cursor's lease and
// renews it while it works; the others wait for it to lapse or be released. A Pusher is
// used by one goroutine: Run.
type Pusher struct {
	store PushStore
	cfg   func() *PushConfig
	opts  PushOptions

	held   bool
	until  time.Time // the end of the lease as last written
	after  int64     // the chain position delivered so far
	oldest time.Time // completion of the oldest exchange read and not delivered; zero: none
}

// NewPusher returns a Pusher of st's exchanges. cfg is called before each batch and
// returns the configuration in force (it may change on reload), or nil while pushing is
// off: the Pusher then releases its lease and waits.
func NewPusher(st PushStore, cfg func() *PushConfig, o PushOptions) *Pusher {
	if o.Name == "" {
		o.Name = DefaultCursorName
	}
	if o.Holder == "" {
		o.Holder = holderName()
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if o.Page <= 0 {
		o.Page = DefaultPage
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Pusher{store: st, cfg: cfg, opts: o}
}

// holderName is the host name, the process id and 8 random characters.
func holderName() string {
	host, _ := os.Hostname()
	return host + "/" + strconv.Itoa(os.Getpid()) + "/" + crand.Text()[:8]
}

// idleCheck is how often a Pusher with pushing off looks whether it was turned on.
const idleCheck = 5 * time.Second

// Run pushes until ctx ends, then releases the lease and returns nil. Failures are
// logged, counted and retried; Run never gives up on an exchange.
func (p *Pusher) Run(ctx context.Context) error {
	defer p.release()
	failures := 0
	for ctx.Err() == nil {
		c := p.cfg()
		if c == nil {
			p.release()
			p.wait(ctx, idleCheck)
			continue
		}
		if !p.lease(ctx) {
			// Standing by: a released lease is taken within an interval.
			p.wait(ctx, min(c.Interval, p.opts.Lease/3))
			continue
		}
		more, err := p.batch(ctx, c)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			failures++
			p.opts.Log.Warn("export: push failed; retrying", "attempt", failures, "error", err.Error(),
				"lag_seconds", int64(p.lag().Seconds()))
			p.wait(ctx, p.backoff(failures, err))
		case more:
			failures = 0
		default:
			failures = 0
			p.wait(ctx, c.Interval)
		}
	}
	return nil
}

// lease takes or renews the lease when less than two thirds of it remain, and reports
// whether this process holds it.
func (p *Pusher) lease(ctx context.Context) bool {
	now := time.Now()
	if p.held && p.until.Sub(now) > 2*p.opts.Lease/3 {
		return true
	}
	after, held, err := p.store.LeaseCursor(ctx, p.opts.Name, p.opts.Holder, now, now.Add(p.opts.Lease))
	switch {
	case err != nil:
		if ctx.Err() == nil {
			p.count("store")
			p.opts.Log.Warn("export: cannot take or renew the lease", "error", err.Error())
		}
		// A lease not renewed in time may be another's: stop pushing when it ends.
		if p.held && time.Now().After(p.until) {
			p.lost()
		}
		return p.held
	case !held:
		if p.held {
			p.opts.Log.Warn("export: another process took the lease; this one stops pushing", "cursor", p.after)
			p.lost()
		}
		return false
	}
	if !p.held {
		p.after = after
		p.opts.Log.Info("export: this process pushes now", "cursor", after, "holder", p.opts.Holder)
		p.setGauge(p.opts.Metrics.Active, 1)
	}
	p.held, p.until = true, now.Add(p.opts.Lease)
	return true
}

// lost forgets a lease another process may now hold.
func (p *Pusher) lost() {
	p.held, p.oldest = false, time.Time{}
	p.setGauge(p.opts.Metrics.Active, 0)
	p.setGauge(p.opts.Metrics.Lag, 0)
}

// release gives the lease up, so that another process takes over at once.
func (p *Pusher) release() {
	if !p.held {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.store.ReleaseCursor(ctx, p.opts.Name, p.opts.Holder); err != nil {
		p.opts.Log.Warn("export: cannot release the lease; another process takes over when it ends", "error", err.Error())
	}
	p.lost()
}

// batch reads the next batch and delivers it. It reports whether a full batch was
// sent (more may be waiting).
func (p *Pusher) batch(ctx context.Context, c *PushConfig) (more bool, err error) {
	body, n, next, full, err := p.read(ctx, c)
	if err != nil {
		p.count("store")
		return false, err
	}
	if n == 0 {
		if next > p.after {
			// Only entries without a completed exchange: remember the way past them.
			if err := p.advance(ctx, next); err != nil {
				return false, err
			}
		}
		return false, nil
	}
	p.setLag()
	if err := p.post(ctx, c, body); err != nil {
		return false, err
	}
	p.add(p.opts.Metrics.Delivered, n)
	if err := p.advance(ctx, next); err != nil {
		return false, err
	}
	p.oldest = time.Time{}
	p.setLag()
	return full, nil
}

// advance moves the store's cursor to next, renewing the lease.
func (p *Pusher) advance(ctx context.Context, next int64) error {
	p.after = next
	now := time.Now()
	held, err := p.store.AdvanceCursor(ctx, p.opts.Name, p.opts.Holder, next, now, now.Add(p.opts.Lease))
	if err != nil {
		// Delivered all the same: the cursor is written with the next batch, and a
		// restart before that sends this batch again.
		p.count("store")
		return fmt.Errorf("save cursor %d: %w", next, err)
	}
	if !held {
		p.opts.Log.Warn("export: another process took the lease; this one stops pushing", "cursor", next)
		p.lost()
		return nil
	}
	p.until = now.Add(p.opts.Lease)
	return nil
}

// read encodes the completed exchanges after p.after, up to c.Batch of them and
// MaxBatchBytes of body. It returns the body, how many exchanges it holds, the chain
// position the batch reaches, and whether the batch was cut short of what is waiting.
func (p *Pusher) read(ctx context.Context, c *PushConfig) (body []byte, n int, next int64, full bool, err error) {
	enc := NewEncoder(c.Format, p.opts.Product)
	next = p.after
	for {
		es, err := p.store.Entries(ctx, next, p.opts.Page)
		if err != nil {
			return nil, 0, 0, false, fmt.Errorf("read entries after %d: %w", next, err)
		}
		items, err := complete(ctx, p.store, es)
		if err != nil {
			return nil, 0, 0, false, err
		}
		for _, it := range items {
			if body, err = enc.Append(body, it); err != nil {
				return nil, 0, 0, false, err
			}
			if n == 0 {
				p.oldest = it.Completed
			}
			n++
			if n == c.Batch || len(body) >= p.opts.MaxBatchBytes {
				return body, n, it.Cursor, true, nil
			}
		}
		if len(es) > 0 {
			next = es[len(es)-1].Seq
		}
		if len(es) < p.opts.Page {
			return body, n, next, false, nil
		}
	}
}

// statusError is an answer other than 2xx.
type statusError struct {
	code       int
	retryAfter time.Duration
}

func (e *statusError) Error() string { return "the endpoint answered " + strconv.Itoa(e.code) }

// post sends one batch. Its errors name neither the URL nor a header value.
func (p *Pusher) post(ctx context.Context, c *PushConfig, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return errors.New("the webhook URL cannot be used") // its text would quote the URL
	}
	for k, v := range c.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("User-Agent", "keyhole/"+p.opts.Product.Version)
	resp, err := p.opts.Client.Do(req)
	if err != nil {
		p.count("network")
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // *url.Error quotes the URL, which may carry a token
		}
		return fmt.Errorf("post %d bytes: %w", len(body), err)
	}
	// Read a little of the answer so the connection is reused; never log it (an
	// endpoint may echo what it was sent).
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	p.count("http")
	e := &statusError{code: resp.StatusCode}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		e.retryAfter = time.Duration(s) * time.Second
	}
	return e
}

// backoff is the wait after the failures-th failure in a row: MinBackoff doubled
// each time up to MaxBackoff, from half to all of it, or what a 429 or 503 asked for
// (within MaxBackoff).
func (p *Pusher) backoff(failures int, err error) time.Duration {
	var se *statusError
	if errors.As(err, &se) && se.retryAfter > 0 {
		return min(se.retryAfter, p.opts.MaxBackoff)
	}
	d := p.opts.MaxBackoff
	if failures < 32 {
		d = min(p.opts.MinBackoff<<(failures-1), p.opts.MaxBackoff)
	}
	return d/2 + rand.N(d/2+1)
}

// wait waits d or until ctx ends, keeping the lag gauge current and the lease renewed
// meanwhile (a backoff or an interval may outlast the lease).
func (p *Pusher) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-tick.C:
			p.setLag()
			if p.held {
				p.lease(ctx)
			}
		}
	}
}

// lag is the age of the oldest exchange read and not yet delivered.
func (p *Pusher) lag() time.Duration {
	if p.oldest.IsZero() {
		return 0
	}
	return max(time.Since(p.oldest), 0)
}

func (p *Pusher) setLag() { p.setGauge(p.opts.Metrics.Lag, p.lag().Seconds()) }

func (p *Pusher) setGauge(g prometheus.Gauge, v float64) {
	if g != nil {
		g.Set(v)
	}
}

func (p *Pusher) add(c prometheus.Counter, n int) {
	if c != nil {
		c.Add(float64(n))
	}
}

func (p *Pusher) count(kind string) {
	if p.opts.Metrics.Errors != nil {
		p.opts.Metrics.Errors.WithLabelValues(kind).Inc()
	}
}
