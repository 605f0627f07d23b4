package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/ledgerdesk/ledgerdesk/adapters/ingest"
	"github.com/ledgerdesk/ledgerdesk/adapters/mimeparse"
	"github.com/ledgerdesk/ledgerdesk/adapters/oauth"
	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/api"
	"github.com/ledgerdesk/ledgerdesk/domain"
	"github.com/ledgerdesk/ledgerdesk/eventstore/broadcast"
	"github.com/ledgerdesk/ledgerdesk/projections"
	"github.com/ledgerdesk/ledgerdesk/ticketing"
)

// shutdownGrace is how long in-flight requests get after SIGINT/SIGTERM.
const shutdownGrace = 15 * time.Second

// schedulerReadyWait bounds how long serve waits for the fetch scheduler's
// first look at the accounts before it answers requests (a store that is
// down makes the look fail at once; this is for a slow one).
const schedulerReadyWait = 10 * time.Second

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "Start the HTTP API (and, as they are wired in, the mailbox fetchers, projections and outbound saga).\n"+
		"Without a database URL the embedded store under the data directory is used.", stderr)
	cfg := bindConfig(fs, getenv, true)
	bcfg := bindBlobConfig(fs, getenv)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := cfg.validate(true); err != nil {
		return err
	}
	if err := bcfg.validate(cfg, bcfg.Kind); err != nil {
		return err
	}
	logger := newLogger(cfg.LogFormat, stderr)

	st, err := openStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }()
	key, err := loadSecretKey(cfg, logger)
	if err != nil {
		return err
	}
	box, err := secretbox.New(key)
	if err != nil {
		return fmt.Errorf("%s: %w", envSecretKey, err)
	}
	// Our Message-IDs carry a check keyed from the secret, so that a reply
	// or bounce cannot be attached to a ticket by someone who knows its id.
	messageIDKey := domain.DeriveMessageIDKey(key)
	blobs, err := openBlobStore(ctx, bcfg.Kind, bcfg, cfg, st)
	if err != nil {
		return err
	}
	now := time.Now
	if n, err := migrateInlineOAuth(ctx, st, now); err != nil {
		return err
	} else if n > 0 {
		logger.Info("moved the inline OAuth fields of accounts onto OAuth connections", "accounts", n)
	}
	if n, err := migrateLegacyResources(ctx, st, now); err != nil {
		return err
	} else if n > 0 {
		logger.Info("made the resource names that accounts held into resources", "resources", n)
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s (%s): %w", cfg.HTTPAddr, envHTTPAddr, err)
	}
	defer func() { _ = ln.Close() }()
	// Without LEDGERDESK_PUBLIC_URL, consents return to the address this
	// process listens on: right on one machine, wrong behind a proxy.
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = "http://" + ln.Addr().String()
	}
	tokens, err := oauth.New(oauth.Options{Store: st, Secrets: box, Now: now, Logger: logger,
		RedirectURL: strings.TrimRight(publicURL, "/") + api.OAuthCallbackPath})
	if err != nil {
		return err
	}

	inst, err := newInstances(ctx, st, logger)
	if err != nil {
		return err
	}
	defer inst.close()
	metricsOut, err := newMetrics(st, tokens, logger)
	if err != nil {
		return err
	}
	sched, err := ingest.NewScheduler(ingest.SchedulerConfig{
		Store: st, Blobs: blobs, Limits: mimeparse.DefaultLimits(), Now: now, Logger: logger,
		Refresh: accountRefresh, Accounts: enabledAccounts(st, box, tokens.AccessToken, tokens, logger),
		Observer:    metricsOut,
		IdleRenewal: cfg.IdleRenewal,
		Leases:      inst.leases(),
	})
	if err != nil {
		return err
	}
	mailboxStatus := projections.NewMailboxStatus(st, st.Reader, logger)
	tickets := projections.NewTickets(st, st.Reader, logger)
	users := projections.NewUsers(st, st.Reader, logger)
	locations := projections.NewLocations(st, st.Reader, logger)
	intake := ticketing.NewProcessManager(st, now, messageIDKey, logger)
	takeOn := ticketing.TakeOnBatchEmbedded
	if st.Kind == "postgres" {
		takeOn = ticketing.TakeOnBatchPostgres
	}
	outbound := ticketing.NewOutbound(ticketing.OutboundOptions{Store: st, Secrets: box, Now: now, Logger: logger, TakeOnBatch: takeOn,
		AccessToken: tokens.AccessToken, RenewAccessToken: tokens.RenewAccessToken, GraphBaseURL: tokens.GraphBaseURL,
		Instance: inst.id, OwnersGone: inst.ownersGone()})

	// One reader of the log per process feeds every GET /api/v1/stream.
	followed, ok := st.Store.(broadcast.Store)
	if !ok {
		return fmt.Errorf("the %s store cannot be followed live", st.Kind)
	}
	liveLog := broadcast.New(followed, broadcast.Options{Logger: logger})
	closingStreams := make(chan struct{})

	srv := &http.Server{
		Handler: api.New(api.Options{
			Logger: logger, Ready: st.Ready, Store: st, Secrets: box, AdminToken: cfg.AdminToken, Now: now,
			PollNow: sched.PollNow, MailboxesChanged: sched.Reload, MailboxLiveness: mailboxLiveness(sched),
			Check: checkAccount(st, box, tokens.AccessToken, tokens, logger), OAuth: oauthPort(tokens),
			CheckOutbound: checkOutbound(st, outbound),
			Projections:   api.Projections{MailboxStatus: mailboxStatus, Tickets: tickets, Users: users, Locations: locations},
			Commands:      ticketing.NewCommands(st, messageIDKey),
			Directory:     ticketing.NewDirectory(st),
			Bodies:        api.MailBodies{Blobs: blobs},
			Metrics:       metricsOut.Handler(),
			Live: api.Live{Log: liveLog, Heartbeat: cfg.StreamHeartbeat, Closing: closingStreams,
				Observer: metricsOut},
		}),
		ReadHeaderTimeout: 10 * time.Second,
		// A request body is at most the body limit (1 MiB).
		ReadTimeout: 1 * time.Minute,
		// Longer than a connection check (up to a minute) and its answer;
		// downloads move their own deadline on as they write (api/bodies.go).
		WriteTimeout: 2 * time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(func() { close(closingStreams) })

	// The background parts stop with ctx; Shutdown below waits for them.
	bgCtx, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	var background sync.WaitGroup
	for name, run := range inst.parts(map[string]func(context.Context) error{
		"mail intake":               intake.Run,
		"outbound saga":             outbound.Run,
		"mailbox-status projection": mailboxStatus.Run,
		"tickets projection":        tickets.Run,
		"users projection":          users.Run,
		"locations projection":      locations.Run,
	}, map[string]func(context.Context) error{
		"fetch scheduler":   sched.Run,
		"live event stream": liveLog.Run,
	}) {
		background.Add(1)
		go func() {
			defer background.Done()
			supervise(bgCtx, name, run, logger)
		}()
	}

	// An account written before the scheduler's first look would count as
	// found at start and wait up to its interval for its first poll.
	select {
	case <-sched.Ready():
	case <-ctx.Done():
	case <-time.After(schedulerReadyWait):
		logger.Warn("serving before the fetch scheduler has loaded the accounts", "waited", schedulerReadyWait.String())
	}
	logger.Info("listening", "addr", ln.Addr().String(), "store", st.Kind, "blob_store", bcfg.Kind, "version", buildVersion(),
		"instance", inst.id)

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		stopBackground()
		background.Wait()
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "grace", shutdownGrace.String())
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("graceful shutdown: %w", err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	stopBackground()
	background.Wait()
	logger.Info("stopped")
	return nil
}

// newLogger logs JSON unless a person is watching a terminal.
func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// supervise runs a background part until ctx is done, restarting it with a
// growing pause when it fails or panics, so one broken part does not stop
// the rest. A panic is logged with its stack. The recover covers the
// goroutine run is called on; goroutines a part starts must recover for
// themselves (the fetch scheduler's account workers do).
func supervise(ctx context.Context, name string, run func(context.Context) error, logger *slog.Logger) {
	pause := time.Second
	for {
		err := runRecovered(ctx, name, run, logger)
		if ctx.Err() != nil {
			return
		}
		logger.Error("background part stopped; restarting", "part", name, "err", err, "in", pause)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Minute)
	}
}

// runRecovered is one run of a supervised part; a panic becomes its error.
func runRecovered(ctx context.Context, name string, run func(context.Context) error, logger *slog.Logger) (err error) {
	defer func() {
		if v := recover(); v != nil {
			logger.Error("background part panicked", "part", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	return run(ctx)
}
