package sqlite

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"github.com/keyholehq/keyhole/recorder"
	"github.com/keyholehq/keyhole/store/sqlite/logframe"
)

// Indexing: the indexer waits up to indexDelay after an append for more to gather
// (a read that needs the entries does not wait), and inserts at most indexBatch
// entries per transaction. Appends fail while maxPending entries wait, or
// maxPendingBytes of their data: the disk SQLite writes cannot keep up or is failing.
const (
	indexDelay      = 5 * time.Millisecond
	indexBatch      = 1024
	indexRetry      = 100 * time.Millisecond
	maxPending      = 100_000
	maxPendingBytes = 256 << 20
	// Once all of it is indexed, the log is emptied when it holds logLimit bytes or
	// more, or emptyEvery after it was last emptied: what it holds is in SQLite, and
	// data that retention removes there must not stay in the log for long.
	logLimit   = 4 << 20
	emptyEvery = time.Second
)

// indexParams are the driver parameters of the indexer's connection: its commits need
// not wait for the disk, since the chain log holds what they insert.
const indexParams = "_txlock=immediate&_busy_timeout=5000&_foreign_keys=1&_journal_mode=WAL&_synchronous=NORMAL"

// errBacklog is the error of an append while too many entries wait to be indexed.
var errBacklog = errors.New("too many records wait to be indexed: the database cannot be written fast enough, or at all")

// chain is the append side of one database file's hash chain, shared by every Store of
// the process on that file: the chain log, the head, the entries logged but not yet in
// SQLite, and the goroutine that inserts them.
type chain struct {
	file  string // the database file
	log   *chainLog
	idx   *sql.DB // one connection, synchronous=NORMAL
	stmts *writer // prepared on idx
	refs  int     // Stores using it; guarded by chainsMu

	// indexMu is held by whoever inserts logged entries into SQLite or appends to the
	// chain in SQLite directly (Prune, Expire), with mu taken after it.
	indexMu sync.Mutex

	mu           sync.Mutex
	seq          int64  // the head: last entry logged
	hash         string // its hash
	indexed      int64  // last entry in SQLite
	pending      []logged
	pendingBytes int
	dirty        bool      // the log was written without a sync since the last one
	emptied      time.Time // when the log was last emptied
	failed       error     // the last insert's error; nil once one succeeds
	// logErr is a failed write or sync of the log. After a failed fdatasync the kernel
	// may have dropped the pages it could not write, so a later sync that succeeds
	// proves nothing about them: the log is not written again until the store is
	// opened again, which reads what it holds.
	logErr   error
	advanced chan struct{} // closed, and replaced, when indexed or failed changes

	kick, hurry chan struct{}
	stop, done  chan struct{}
}

var (
	chainsMu sync.Mutex
	chains   = map[string]*chain{}
)

// acquireChain returns the chain of the database file, opening it (and indexing what
// its log holds) for the first Store of the process on it.
func acquireChain(ctx context.Context, file string) (*chain, error) {
	chainsMu.Lock()
	defer chainsMu.Unlock()
	if c, ok := chains[file]; ok {
		c.refs++
		return c, nil
	}
	c, err := openChain(ctx, file)
	if err != nil {
		return nil, err
	}
	c.refs = 1
	chains[file] = c
	return c, nil
}

// release drops a Store's use of c, closing it after the last.
func (c *chain) release() error {
	chainsMu.Lock()
	defer chainsMu.Unlock()
	if c.refs--; c.refs > 0 {
		return nil
	}
	delete(chains, c.file)
	return c.close()
}

func openChain(ctx context.Context, file string) (*chain, error) {
	log, err := openLog(file + logSuffix)
	if err != nil {
		return nil, err
	}
	idx, err := sql.Open("sqlite", file+"?"+indexParams)
	if err != nil {
		log.close()
		return nil, err
	}
	idx.SetMaxOpenConns(1)
	idx.SetMaxIdleConns(1)
	c := &chain{file: file, log: log, idx: idx, advanced: make(chan struct{}),
		kick: make(chan struct{}, 1), hurry: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if c.stmts, err = prepareWriter(ctx, idx); err != nil {
		idx.Close()
		log.close()
		return nil, err
	}
	if err := c.recover(ctx); err != nil {
		c.stmts.close()
		idx.Close()
		log.close()
		return nil, err
	}
	go c.run()
	return c, nil
}

// recover reads the head from SQLite and inserts the entries of the log that follow
// it: those a killed process logged and did not index.
func (c *chain) recover(ctx context.Context) error {
	seq, hash, err := c.stmts.headOf(ctx)
	if err != nil {
		return err
	}
	xs, err := c.log.read()
	if err != nil {
		return err
	}
	var todo []logged
	for _, x := range xs {
		e := &x.e
		if len(todo) > 0 {
			last := &todo[len(todo)-1].e
			if e.Seq != last.Seq+1 || e.PrevHash != last.Hash {
				// What follows the chain's last entry in the log is what a failed write left.
				if err := c.log.truncate(x.start); err != nil {
					return err
				}
				break
			}
			todo = append(todo, x)
			continue
		}
		switch {
		case e.Seq < seq:
		case e.Seq == seq:
			if e.Hash != hash {
				return fmt.Errorf("%s: entry %d is not the database's entry %d: the log and the database are not of one chain (was the database restored from a backup?)", c.log.path, e.Seq, seq)
			}
		case e.Seq != seq+1 || e.PrevHash != hash:
			return fmt.Errorf("%s: entry %d does not continue the database's chain, whose head is entry %d (was the database restored from a backup?)", c.log.path, e.Seq, seq)
		default:
			todo = append(todo, x)
		}
	}
	c.seq, c.hash, c.indexed = seq, hash, seq
	for len(todo) > 0 {
		n := min(len(todo), indexBatch)
		if err := c.insert(ctx, todo[:n]); err != nil {
			return fmt.Errorf("index the chain log: %w", err)
		}
		c.seq, c.hash, c.indexed = todo[n-1].e.Seq, todo[n-1].e.Hash, todo[n-1].e.Seq
		todo = todo[n:]
	}
	return c.empty()
}

// empty empties the log once SQLite's WAL, which holds what was inserted from it, is
// synced. mu must be held, or c not yet shared.
func (c *chain) empty() error {
	if err := syncWAL(c.file); err != nil {
		return err
	}
	c.dirty = false
	return c.log.reset()
}

// syncWAL syncs the WAL of the database file, which holds its commits that are not
// checkpointed, and its directory (SQLite syncs a new WAL's directory entry only at a
// synced commit).
func syncWAL(file string) error {
	err := syncFile(file + "-wal")
	if errors.Is(err, fs.ErrNotExist) {
		return nil // checkpointed and removed by the last connection: it is all in the database file, synced
	}
	if err == nil {
		err = syncFile(filepath.Dir(file))
	}
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// append seals entries onto the chain and writes them to the log, synced if sync. On
// an error nothing is appended and the entries are unchanged.
func (c *chain) append(entries []*recorder.Entry, sync bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.logErr != nil {
		return c.logErr
	}
	if c.failed != nil {
		return fmt.Errorf("index: %w", c.failed)
	}
	if len(c.pending) >= maxPending || c.pendingBytes >= maxPendingBytes {
		return errBacklog
	}
	batch := make([]logged, len(entries))
	// Each entry is sealed and packed first, so that the frames' buffer is as large as
	// the packed data: a 64 KiB record compresses to some 5 KiB.
	packs := make([]packed, len(entries))
	defer func() {
		for _, p := range packs {
			p.release()
		}
	}()
	size := 0
	seq, hash := c.seq, c.hash
	for i, e := range entries {
		x := &batch[i]
		x.e = *e
		x.e.Seq = seq + 1
		recorder.Seal(&x.e, hash)
		data := x.e.Data
		if data == nil {
			data = []byte{} // the column is NOT NULL; the hash does not tell nil from empty
		}
		packs[i] = pack(data)
		n := frameSize(&x.e, len(packs[i].data))
		if n > maxFrame {
			return fmt.Errorf("entry %d: %d bytes: larger than the chain log holds (%d)", i, n, maxFrame)
		}
		size += n + logframe.Header
		x.codec = packs[i].codec.String
		seq, hash = x.e.Seq, x.e.Hash
	}
	frames := make([]byte, 0, size)
	for i := range batch {
		x := &batch[i]
		frames = logframe.Append(frames, &x.e, packs[i].data, x.codec)
		// The data as stored is the end of the frame: the frames' buffer is never
		// written again, so the entry can keep it until it is indexed.
		x.e.Data = frames[len(frames)-len(packs[i].data) : len(frames) : len(frames)]
	}
	if err := c.log.write(frames, sync); err != nil {
		c.logErr = fmt.Errorf("chain log: %w (restart the gateway)", err)
		return err
	}
	c.dirty = c.dirty || !sync
	if sync {
		c.dirty = false
	}
	for i, e := range entries {
		e.Seq, e.PrevHash, e.Hash, e.Version, e.DataHash = batch[i].e.Seq, batch[i].e.PrevHash, batch[i].e.Hash, batch[i].e.Version, ""
		c.pendingBytes += len(batch[i].e.Data)
	}
	c.pending = append(c.pending, batch...)
	c.seq, c.hash = seq, hash
	signal(c.kick)
	return nil
}

// frameSize bounds the payload of e's frame with n bytes of stored data: its strings
// and data, and room for the lengths and integers around them.
func frameSize(e *recorder.Entry, n int) int {
	for _, s := range [...]string{e.Kind, e.ExchangeID, e.PrevHash, e.Hash, e.Subject, e.Route, e.Decision, e.Method, e.Path, e.Tool, codecS2} {
		n += len(s) + binary.MaxVarintLen64
	}
	return n + 5*binary.MaxVarintLen64
}

// sync makes what the log holds durable.
func (c *chain) sync() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dirty {
		return nil
	}
	if c.logErr != nil {
		return c.logErr
	}
	if err := c.log.sync(); err != nil {
		c.logErr = fmt.Errorf("chain log: %w (restart the gateway)", err)
		return err
	}
	c.dirty = false
	return nil
}

// signal wakes whoever waits on ch, a channel of capacity 1, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run is the indexer: woken by appends, it lets a batch gather and inserts it.
func (c *chain) run() {
	defer close(c.done)
	for {
		hurried := false
		select {
		case <-c.kick:
		case <-c.hurry:
			hurried = true
		case <-c.stop:
			return
		}
		t := time.NewTimer(indexDelay)
	gather:
		for !hurried {
			select {
			case <-t.C:
				break gather
			case <-c.hurry:
				break gather
			case <-c.stop:
				break gather
			case <-c.kick:
				c.mu.Lock()
				n := len(c.pending)
				c.mu.Unlock()
				if n >= indexBatch {
					break gather
				}
			}
		}
		t.Stop()
		if err := c.index(); err != nil {
			select {
			case <-time.After(indexRetry):
				signal(c.kick)
			case <-c.stop:
				return
			}
		}
	}
}

// index inserts what is pending, in transactions of at most indexBatch entries.
func (c *chain) index() error {
	c.indexMu.Lock()
	defer c.indexMu.Unlock()
	for {
		c.mu.Lock()
		batch := c.pending[:min(len(c.pending), indexBatch)]
		if len(batch) == 0 {
			err := c.retryEmptyLocked()
			c.mu.Unlock()
			return err
		}
		c.mu.Unlock()
		err := c.insert(context.Background(), batch)
		c.mu.Lock()
		c.indexedLocked(len(batch), err)
		err = c.failed
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// indexAllLocked inserts everything pending; indexMu and mu must be held.
// A caller's context that ends is the caller's error, not the store's: it fails the
// call and leaves the entries pending.
func (c *chain) indexAllLocked(ctx context.Context) error {
	for len(c.pending) > 0 {
		batch := c.pending[:min(len(c.pending), indexBatch)]
		err := c.insert(ctx, batch)
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		c.indexedLocked(len(batch), err)
		if c.failed != nil {
			return c.failed
		}
	}
	return nil
}

// retryEmptyLocked clears a failure that left nothing pending — emptying the log,
// whose WAL sync failed — by emptying it again; mu must be held.
func (c *chain) retryEmptyLocked() error {
	if c.failed == nil {
		return nil
	}
	if err := c.empty(); err != nil {
		c.failed = err
		return err
	}
	c.failed, c.emptied = nil, time.Now()
	close(c.advanced)
	c.advanced = make(chan struct{})
	return nil
}

// indexedLocked records the outcome of inserting the first n pending entries; mu must
// be held. Once all is indexed and the log is large, it empties the log.
func (c *chain) indexedLocked(n int, err error) {
	defer func() {
		close(c.advanced)
		c.advanced = make(chan struct{})
	}()
	if err != nil {
		c.failed = err
		return
	}
	c.failed = nil
	c.indexed = c.pending[n-1].e.Seq
	for _, x := range c.pending[:n] {
		c.pendingBytes -= len(x.e.Data)
	}
	c.pending = append(c.pending[:0:0], c.pending[n:]...)
	if len(c.pending) == 0 && c.log.size > 0 && (c.log.size >= logLimit || time.Since(c.emptied) >= emptyEvery) {
		if err := c.empty(); err != nil {
			c.failed = err
			return
		}
		c.emptied = time.Now()
	}
}

// insert writes logged entries, which follow the chain's last entry in SQLite, in one
// transaction on the indexer's connection.
func (c *chain) insert(ctx context.Context, batch []logged) error {
	tx, err := c.idx.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	sctx := context.WithoutCancel(ctx) // see writer.writeStored
	w := c.stmts.in(sctx, tx)
	defer w.close()
	for i := range batch {
		x := &batch[i]
		if err := w.writeStored(sctx, &x.e, x.e.Data, sql.NullString{String: x.codec, Valid: x.codec != ""}); err != nil {
			return fmt.Errorf("entry %d: %w", x.e.Seq, err)
		}
	}
	return tx.Commit()
}

// drain returns once every entry appended before it was called is in SQLite, so that
// a read sees it; at once while indexing fails (a read then sees what SQLite holds).
func (c *chain) drain(ctx context.Context) error {
	c.mu.Lock()
	target := c.seq
	for c.indexed < target && c.failed == nil {
		ch := c.advanced
		c.mu.Unlock()
		signal(c.hurry)
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		c.mu.Lock()
	}
	c.mu.Unlock()
	return nil
}

// direct runs fn, which appends to the chain in SQLite itself, synced (Prune, Expire),
// after everything pending is indexed and with appends held. fn returns the last entry
// it appended, nil for none; the log is emptied after it, so that what retention
// removed from the database does not stay in the log.
func (c *chain) direct(ctx context.Context, fn func() (*recorder.Entry, error)) error {
	c.indexMu.Lock()
	defer c.indexMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.indexAllLocked(ctx); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	last, err := fn()
	if last != nil {
		c.seq, c.hash, c.indexed = last.Seq, last.Hash, last.Seq
	}
	if err != nil {
		return err
	}
	if err := c.empty(); err != nil {
		return err
	}
	c.emptied = time.Now()
	return nil
}

// close stops the indexer, inserts what is pending and empties the log; what cannot be
// inserted stays in the log for the next open.
func (c *chain) close() error {
	close(c.stop)
	<-c.done
	c.indexMu.Lock()
	c.mu.Lock()
	err := c.indexAllLocked(context.Background())
	if err == nil {
		err = c.empty()
	}
	c.mu.Unlock()
	c.indexMu.Unlock()
	c.stmts.close()
	return errors.Join(err, c.idx.Close(), c.log.close())
}
