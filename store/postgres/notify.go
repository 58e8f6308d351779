package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/keyholehq/keyhole/approvals"
)

var _ approvals.Watcher = (*Store)(nil)

// approvalChannel is the LISTEN/NOTIFY channel on which a store announces, with its id,
// every approval it decided, closed or expired.
const approvalChannel = "keyhole_approvals"

// Reconnection and liveness of the listening connection.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
	// listenCheck is how long the listener waits for a notification before it checks,
	// with a statement, that its connection still works: a server gone without a TCP
	// reset (a partition) would otherwise keep it waiting for ever.
	listenCheck = 30 * time.Second
)

// announce tells every replica listening that the approvals ids changed. It is best
// effort: a lost notification delays a release on another replica until its next poll.
func (s *Store) announce(ctx context.Context, ids ...string) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := s.bounded(context.WithoutCancel(ctx))
	defer cancel()
	_, _ = s.pool.Exec(ctx, "SELECT pg_notify($1, id) FROM unnest($2::text[]) AS id", approvalChannel, ids)
}

// WatchApprovals listens, on a connection of its own outside the pool, for the
// approvals any store on this database announces, and calls changed with each id, until
// ctx ends. The connection is re-established after a drop, with a backoff of 100 ms up
// to 5 s; missed is called each time listening (re)starts, since announcements made in
// between are lost. A store's own announcements reach it too.
func (s *Store) WatchApprovals(ctx context.Context, changed func(id string), missed func()) {
	backoff := listenBackoffMin
	for ctx.Err() == nil {
		started := time.Now()
		_ = s.listen(ctx, changed, missed)
		if time.Since(started) > listenCheck {
			backoff = listenBackoffMin
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenBackoffMax)
	}
}

// listen runs one listening connection until it fails or ctx ends.
func (s *Store) listen(ctx context.Context, changed func(id string), missed func()) error {
	cc := s.pool.Config().ConnConfig
	// A wait that times out leaves the connection usable (no cancel request to send).
	cc.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: c.Conn()}
	}
	cctx, cancel := s.bounded(ctx)
	conn, err := pgx.ConnectConfig(cctx, cc)
	if err == nil {
		_, err = conn.Exec(cctx, "LISTEN "+approvalChannel)
	}
	cancel()
	if conn != nil {
		defer func() {
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			conn.Close(c)
		}()
	}
	if err != nil {
		return err
	}
	missed()
	for {
		wctx, cancel := context.WithTimeout(ctx, listenCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			changed(n.Payload)
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !pgconn.Timeout(err):
			return err
		}
		pctx, cancel := s.bounded(ctx)
		_, err = conn.Exec(pctx, "SELECT 1")
		cancel()
		if err != nil {
			return err
		}
	}
}
