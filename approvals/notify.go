package approvals

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// NotifyConfig is where and how approval requests are announced.
type NotifyConfig struct {
	// Webhook receives a Slack-compatible POST {"text": ...} per new approval; "" sends
	// nothing. It is a secret (a Slack webhook URL is a credential) and never logged.
	Webhook string
	// PublicURL is the admin plane's address as approvers reach it, for the link.
	PublicURL string
	// Console links to the web console's page of the approval (/ui/approvals/{id})
	// instead of the API's (/api/v1/approvals/{id}), which stays served.
	Console bool
}

// NotifierOptions tune a Notifier. Zero values take the defaults.
type NotifierOptions struct {
	Timeout  time.Duration // per attempt; default 5s
	Attempts int           // default 3
	Backoff  time.Duration // before the second attempt, doubling; default 1s
	Queue    int           // notifications waiting to be sent; default 256
	Client   *http.Client  // default: a client with no redirects
	Log      *slog.Logger
}

// Notifier announces new approvals to a webhook, in the background: Notify never
// blocks, and a webhook that is slow, failing or unreachable never delays or fails a
// held request. A notification the full queue cannot take is dropped and logged.
type Notifier struct {
	cfg   atomic.Pointer[NotifyConfig]
	opts  NotifierOptions
	queue chan *Approval
}

// NewNotifier returns a Notifier for c. Run sends; Set changes c (on reload).
func NewNotifier(c NotifyConfig, o NotifierOptions) *Notifier {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Queue <= 0 {
		o.Queue = 256
	}
	if o.Client == nil {
		// A webhook that redirects elsewhere is not followed: the message goes where
		// the configuration says, or nowhere.
		o.Client = &http.Client{Timeout: o.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{opts: o, queue: make(chan *Approval, o.Queue)}
	n.Set(c)
	return n
}

// Set makes c the configuration for notifications sent from now on.
func (n *Notifier) Set(c NotifyConfig) { n.cfg.Store(&c) }

// Notify queues the announcement of a and returns at once.
func (n *Notifier) Notify(a *Approval) {
	if n.cfg.Load().Webhook == "" {
		return
	}
	select {
	case n.queue <- a:
	default:
		n.opts.Log.Warn("approval notification dropped: queue full", "approval", a.ID)
	}
}

// notifyWorkers send notifications side by side, so that one slow delivery (a webhook
// that hangs costs Attempts × Timeout) does not hold up the ones behind it.
const notifyWorkers = 4

// Run sends queued notifications until ctx ends.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range notifyWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case a := <-n.queue:
					n.send(ctx, a)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
}

// send posts a's message, retrying a failed attempt with backoff.
func (n *Notifier) send(ctx context.Context, a *Approval) {
	c := n.cfg.Load()
	if c.Webhook == "" {
		return
	}
	body, _ := json.Marshal(map[string]string{"text": Message(a, c.ReviewURL(a.ID))})
	wait := n.opts.Backoff
	var err error
	for attempt := 1; attempt <= n.opts.Attempts; attempt++ {
		if err = n.post(ctx, c.Webhook, body); err == nil {
			return
		}
		if attempt == n.opts.Attempts {
			break
		}
		select {
		case <-time.After(wait):
			wait *= 2
		case <-ctx.Done():
			return
		}
	}
	n.opts.Log.Warn("approval notification not delivered", "approval", a.ID, "attempts", n.opts.Attempts, "error", err.Error())
}

func (n *Notifier) post(ctx context.Context, url string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, n.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return errors.New("webhook URL cannot be used")
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		// The error holds the URL, which is a secret: say only what kind of failure.
		if ctx.Err() != nil {
			return fmt.Errorf("webhook: timed out after %s", n.opts.Timeout)
		}
		return errors.New("webhook could not be reached")
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return nil
}

// ReviewURL is the link to approval id under PublicURL: the console's page when the
// console is on, else the API's; "" without PublicURL.
func (c NotifyConfig) ReviewURL(id string) string {
	if c.PublicURL == "" {
		return ""
	}
	path := "/api/v1/approvals/"
	if c.Console {
		path = "/ui/approvals/"
	}
	return strings.TrimSuffix(c.PublicURL, "/") + path + id
}

// Message is the text announcing a: who asks for what, why, and where to decide. Every
// part a requester controls is set in a code span and escaped for Slack's markup, so a
// crafted path or reason can neither forge a link nor be auto-linked; nothing in it is a
// secret (path, reason and a tool call's arguments were redacted when the approval was
// made; the query, headers and an HTTP body are not sent). A tool call's arguments are
// what approvers decide on, so they are shown, indented, in a code block.
func Message(a *Approval, reviewURL string) string {
	var b strings.Builder
	if a.Tool != "" {
		fmt.Fprintf(&b, "Keyhole approval needed: MCP tool %s (route %s)\n", code(a.Tool), code(a.Route))
	} else {
		fmt.Fprintf(&b, "Keyhole approval needed: %s %s (route %s)\n", a.Method, code(a.Path), code(a.Route))
	}
	who := code(a.Requester.Subject)
	if a.Requester.ClientID != "" && a.Requester.ClientID != a.Requester.Subject {
		who += " (client " + code(a.Requester.ClientID) + ")"
	}
	fmt.Fprintf(&b, "Requested by %s\n", who)
	if a.Reason != "" {
		fmt.Fprintf(&b, "Reason: %s\n", code(a.Reason))
	}
	if a.Tool != "" {
		fmt.Fprintf(&b, "Arguments:\n%s\n", codeBlock(a.Body, maxShownArguments))
	}
	if reviewURL != "" {
		fmt.Fprintf(&b, "Review: %s\n", reviewURL)
	}
	fmt.Fprintf(&b, "Decide: keyhole approvals approve %s (or deny %s --comment ...), before %s", a.ID, a.ID,
		a.ExpiresAt.UTC().Format(time.RFC3339))
	return b.String()
}

// code sets s in a Slack code span: the three characters mrkdwn gives meaning to in
// links and mentions escaped (https://api.slack.com/reference/surfaces/formatting#escaping),
// and backticks, which would end the span, replaced.
func code(s string) string {
	return "`" + strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "`", "'").Replace(s) + "`"
}

// maxShownArguments is the most bytes of a tool call's arguments a notification shows;
// the review link shows all of them.
const maxShownArguments = 2000

// codeBlock sets s in a Slack code block, escaped as code escapes a span, at most max
// bytes (cut at a rune, marked).
func codeBlock(s string, max int) string {
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "\n…"
	}
	return "```\n" + strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "`", "'").Replace(s) + "\n```"
}
