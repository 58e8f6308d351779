package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"
)

// approvalsUsage lists the approvals subcommands; each one's --help lists its flags. It is
// a format: its one verb is the command form the user ran.
const approvalsUsage = `usage: keyhole approvals SUBCOMMAND [flags] --server URL   (token in KEYHOLE_TOKEN)

  list [--state pending|approved|denied|expired|used|all --route R --subject S --json]
  show ID [--json]
  approve ID [--comment C]
  deny ID [--comment C]

Run "%s approvals SUBCOMMAND --help" for its flags.
`

// cmdApprovals lists and decides approvals through a running gateway's admin API, with
// the approver's token from KEYHOLE_TOKEN.
func cmdApprovals(ctx context.Context, prog string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprintf(stderr, approvalsUsage, prog)
		if len(args) > 0 {
			return flag.ErrHelp
		}
		return errUsage
	}
	sub, args := args[0], args[1:]
	want := 1
	switch sub {
	case "list":
		want = 0
	case "show", "approve", "deny":
	default:
		fmt.Fprintf(stderr, "keyhole approvals: unknown subcommand %q\n", sub)
		fmt.Fprintf(stderr, approvalsUsage, prog)
		return errUsage
	}
	fs := newFlags("approvals "+sub, stderr)
	if want > 0 {
		takesID(fs)
	}
	src := recordsSource{token: getenv("KEYHOLE_TOKEN")}
	fs.StringVar(&src.server, "server", "", "admin URL of the running gateway, e.g. http://127.0.0.1:9090 (token from KEYHOLE_TOKEN); required")
	var comment, state, route, subject *string
	var asJSON *bool
	switch sub {
	case "list":
		state = fs.String("state", "pending", "pending, approved, denied, expired, used or all")
		route = fs.String("route", "", "only this route")
		subject = fs.String("subject", "", "only this requester")
		asJSON = fs.Bool("json", false, "print the API's JSON")
	case "show":
		fs.Bool("json", false, "print the API's JSON (what show always prints)")
	default:
		comment = fs.String("comment", "", "why (the requester sees a denial's comment)")
	}
	pos, rest := positional(args, want)
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if len(pos) != want || src.server == "" {
		fmt.Fprintf(stderr, approvalsUsage, prog)
		return errUsage
	}
	switch sub {
	case "list":
		q := url.Values{"state": {*state}}
		if *route != "" {
			q.Set("route", *route)
		}
		if *subject != "" {
			q.Set("subject", *subject)
		}
		var page json.RawMessage
		if err := src.api(ctx, http.MethodGet, "/api/v1/approvals?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		if *asJSON {
			return writeIndented(stdout, page)
		}
		return approvalTable(stdout, page, prog, src.server)
	case "show":
		var a json.RawMessage
		if err := src.api(ctx, http.MethodGet, "/api/v1/approvals/"+url.PathEscape(pos[0]), nil, &a); err != nil {
			return err
		}
		return writeIndented(stdout, a)
	default: // approve, deny
		var a approvalRow
		if err := src.api(ctx, http.MethodPost, "/api/v1/approvals/"+url.PathEscape(pos[0])+"/"+sub,
			map[string]string{"comment": *comment}, &a); err != nil {
			return err
		}
		verb := map[string]string{"approve": "approved", "deny": "denied"}[sub]
		fmt.Fprintf(stdout, "%s %s: %s %s (route %s, %d-byte body) is now %s", verb, a.ID, a.Method, target(a), a.Route, a.BodySize, a.State)
		if a.State == "pending" {
			fmt.Fprintf(stdout, " (%d of %d approvals)", approvesIn(a), a.MinApprovals)
		}
		fmt.Fprintln(stdout)
		return nil
	}
}

// approvalRow is the part of an API approval the CLI prints.
type approvalRow struct {
	ID           string  `json:"id"`
	Route        string  `json:"route"`
	Method       string  `json:"method"`
	Path         string  `json:"path"`
	Query        string  `json:"query"`
	State        string  `json:"state"`
	Reason       string  `json:"reason"`
	MinApprovals int     `json:"min_approvals"`
	BodySize     int64   `json:"body_size"`
	Age          float64 `json:"age_seconds"`
	ExpiresIn    float64 `json:"expires_in_seconds"`
	Requester    struct {
		Subject  string `json:"subject"`
		ClientID string `json:"client_id"`
	} `json:"requester"`
	Decisions []struct {
		Verdict string `json:"verdict"`
	} `json:"decisions"`
}

func approvesIn(a approvalRow) int {
	n := 0
	for _, d := range a.Decisions {
		if d.Verdict == "approve" {
			n++
		}
	}
	return n
}

// approvalTable prints a page of approvals as a table, with how to read one in full
// from server.
func approvalTable(w io.Writer, page json.RawMessage, prog, server string) error {
	var list struct {
		Approvals []approvalRow `json:"approvals"`
	}
	if err := json.Unmarshal(page, &list); err != nil {
		return fmt.Errorf("admin API answer: %w", err)
	}
	if len(list.Approvals) == 0 {
		fmt.Fprintln(w, "no approvals")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tAGE\tEXPIRES IN\tROUTE\tREQUESTER\tREASON\tREQUEST")
	for _, a := range list.Approvals {
		// The request comes last and whole: what is approved must not be cut from view.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s %s (%d-byte body)\n", a.ID, a.State, seconds(a.Age), seconds(a.ExpiresIn),
			a.Route, oneLine(a.Requester.Subject, 40), oneLine(a.Reason, 60), a.Method, oneLine(target(a), 1<<20), a.BodySize)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "Read headers and body with: %s approvals show ID --server %s\n", prog, server)
	return err
}

// target is an approval's path and query.
func target(a approvalRow) string {
	if a.Query != "" {
		return a.Path + "?" + a.Query
	}
	return a.Path
}

func seconds(s float64) string { return (time.Duration(s) * time.Second).String() }

// oneLine bounds s for a table cell and keeps a tab or newline from breaking the table.
func oneLine(s string, n int) string {
	s = strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}

func writeIndented(w io.Writer, raw json.RawMessage) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("admin API answer: %w", err)
	}
	b.WriteByte('\n')
	_, err := b.WriteTo(w)
	return err
}
