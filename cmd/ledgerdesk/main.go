// Command ledgerdesk is the help-desk service: it turns mail arriving in
// company mailboxes into tickets and keeps every decision as an event.
//
// This file and its siblings are the only place that reads the environment,
// opens connections, chooses the store and reads the clock for the rest of
// the program: everything is wired here in plain sight.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2 // bad command line or configuration
)

// run is main without the process: tests start it in-process on :0.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, rest, getenv, stdout, stderr)
	case "migrate":
		err = runMigrate(ctx, rest, getenv, stdout, stderr)
	case "bench":
		err = runBench(ctx, rest, getenv, stdout, stderr)
	case "projections":
		err = runProjections(ctx, rest, getenv, stdout, stderr)
	case "secrets":
		err = runSecrets(ctx, rest, getenv, stdout, stderr)
	case "events":
		err = runEvents(ctx, rest, getenv, stdout, stderr)
	case "blobs":
		err = runBlobs(ctx, rest, getenv, stdout, stderr)
	case "version":
		err = runVersion(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "ledgerdesk: unknown command %q\n\n", cmd)
		usage(stderr)
		return exitUsage
	}
	return exitCode(err, stderr)
}

func exitCode(err error, stderr io.Writer) int {
	var ce *configError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp), errors.Is(err, errHelpShown):
		return exitOK
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "ledgerdesk: %v\n", err)
		return exitUsage
	case errors.Is(err, errUsage):
		return exitUsage
	}
	fmt.Fprintf(stderr, "ledgerdesk: %v\n", err)
	return exitFailed
}

// errUsage marks a command-line mistake whose message the flag package has
// already printed.
var errUsage = errors.New("usage")

func usage(w io.Writer) {
	fmt.Fprint(w, `ledgerdesk: an event-sourced help desk that turns mail into tickets.

Usage:
  ledgerdesk serve     start the HTTP API, the mailbox fetchers and the projections
  ledgerdesk migrate   apply the database migrations and exit
  ledgerdesk bench     measure the event store against raw database baselines
  ledgerdesk projections rebuild [NAME]
                       rebuild the ticket, user and location views from the first event
  ledgerdesk secrets rotate   re-seal stored secrets under a new key
  ledgerdesk events retry --subscriber NAME (--position P | --all)
                       have a subscriber handle again the events it set aside
  ledgerdesk blobs migrate --to file|postgres|s3
                       copy the stored mails to another blob store, verified
  ledgerdesk version   print the version

Run 'ledgerdesk <command> --help' for a command's flags. Every flag can also
be set through the LEDGERDESK_* environment variable named in its help.
`)
}

// newFlagSet returns a flag set whose errors and --help go to stderr and
// come back as errors instead of exiting.
func newFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: ledgerdesk %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := refuseSecretFlags(args); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %v\n", fs.Args())
		return errUsage
	}
	return refuseDatabasePassword(fs)
}

func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "Print the version of this binary.", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ledgerdesk %s\n", buildVersion())
	return nil
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			return "dev-" + rev + dirty
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
	}
	return "dev"
}
