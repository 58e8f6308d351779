// Command keyhole is the least-privilege gateway between AI agents and internal HTTP APIs.
// See README.md and configs/keyhole.yaml.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		if !errors.Is(err, errReported) {
			fmt.Fprintln(os.Stderr, "keyhole:", err)
		}
		os.Exit(1)
	}
}

// errUsage is returned for a bad command line, after the usage has been printed.
var errUsage = errors.New("usage")

// errReported is returned when the command has already printed what went wrong.
var errReported = errors.New("reported")

const usage = `keyhole — least-privilege gateway for AI agents and their internal APIs

Usage:
  keyhole serve    [--config FILE]                  run the gateway
  keyhole validate [--config FILE]                  check a config, print every error
  keyhole check    --config FILE --method M --path P [--groups g1,g2 --scopes s --sub S --body FILE]
                   [--mcp-tool NAME [--mcp-args FILE] | --mcp-method M --mcp-name N]
                                                    explain which route (and mcp entry) matches and what it decides
  keyhole test     FILE...                          run policy test cases
  keyhole demo                                      dev issuer + sample API + gateway on loopback
  keyhole token    --sub S --groups g1,g2 [--scopes s] [--ttl 1h]   mint a token from the dev issuer
  keyhole records  list|show ID|export --format har|ocsf|jsonl|tail [--after C] [--format ocsf|jsonl]|verify|report [--since 30d]
                   [--server URL | --store DSN]
                                                    read the exchange records (token in KEYHOLE_TOKEN)
  keyhole replay   ID --server URL [--target URL] [--allow-unsafe] [--dry-run]
                                                    send a recorded request again and diff the answers
  keyhole approvals list|show ID|approve ID|deny ID [--comment C] --server URL
                                                    see and decide held requests (token in KEYHOLE_TOKEN)
  keyhole demo-api --api-key-file FILE [--listen ADDR]   only the demo's customer API (deploy/compose)
  keyhole migrate  --store postgres://... [--password-file FILE]
                                                    apply the PostgreSQL store's schema migrations
  keyhole health   [--url URL | --config FILE] [--timeout 2s]
                                                    exit 0 when the gateway's /readyz answers 200 (container health checks)
  keyhole version
`

// run is the whole program: main only adds the process's arguments (os.Args, the
// program first), environment, streams and signal handling. It returns when the command
// is done or ctx is cancelled.
func run(ctx context.Context, argv []string, getenv func(string) string, stdout, stderr io.Writer) error {
	prog, args := "keyhole", argv
	if len(argv) > 0 {
		prog, args = commandForm(argv[0]), argv[1:]
	}
	if len(args) == 0 {
		printUsage(stderr, prog)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, getenv, stderr)
	case "validate":
		return cmdValidate(rest, getenv, stdout, stderr)
	case "check":
		return cmdCheck(rest, getenv, os.Stdin, stdout, stderr)
	case "test":
		return cmdTest(rest, getenv, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, prog, rest, getenv, stdout, stderr)
	case "token":
		return cmdToken(ctx, prog, rest, stdout, stderr)
	case "records":
		return cmdRecords(ctx, prog, rest, getenv, stdout, stderr)
	case "replay":
		return cmdReplay(ctx, rest, getenv, stdout, stderr)
	case "approvals":
		return cmdApprovals(ctx, prog, rest, getenv, stdout, stderr)
	case "demo-api":
		return cmdDemoAPI(ctx, rest, stderr)
	case "migrate":
		return cmdMigrate(ctx, rest, stdout, stderr)
	case "health":
		return cmdHealth(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionLine())
		return nil
	case "help", "-h", "--help":
		printUsage(stdout, prog)
		return nil
	}
	fmt.Fprintf(stderr, "keyhole: unknown command %q\n\n", cmd)
	printUsage(stderr, prog)
	return errUsage
}

// printUsage prints the usage, with its hint in the command form the user ran.
func printUsage(w io.Writer, prog string) {
	fmt.Fprintf(w, "%s\nRun \"%s COMMAND --help\" for the flags of a command.\n", usage, prog)
}

// commandForm returns how the user ran the program, given os.Args[0], for the commands
// printed hints show: "keyhole" when found on PATH, the path as typed otherwise
// ("./keyhole", "/usr/local/bin/keyhole"), and "go run ./cmd/keyhole" for a binary that
// go run built (in a go-build temporary directory, or in the build cache since Go 1.24).
func commandForm(arg0 string) string {
	if arg0 == "" {
		return "keyhole"
	}
	dir := filepath.Dir(arg0)
	if filepath.Base(dir) == "exe" && strings.HasPrefix(filepath.Base(filepath.Dir(filepath.Dir(dir))), "go-build") ||
		goCacheEntry.MatchString(filepath.Base(dir)) {
		return "go run ./cmd/keyhole"
	}
	return shellQuote(arg0)
}

// goCacheEntry is the name of the build cache's directory of an executable go run keeps.
var goCacheEntry = regexp.MustCompile(`^[0-9a-f]{64}-d$`)

// shellQuote returns s as a POSIX shell word that stands for s.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-+:@%=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// newFlags returns a flag set for a subcommand that prints its errors and usage to stderr.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("keyhole "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// takesID makes the usage of fs, a command that takes an ID before its flags, say so.
func takesID(fs *flag.FlagSet) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: %s ID [flags]\n", fs.Name())
		fs.PrintDefaults()
	}
}

// parseFlags parses args and refuses stray positional arguments. A stray "help" asks for
// the usage, as -h and --help do.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 && isHelp(fs.Arg(0)) {
		fs.Usage()
		return flag.ErrHelp
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}
