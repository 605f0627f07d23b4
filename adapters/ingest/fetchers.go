package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graphsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/imapsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/pop3source"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// Errors of FetcherFor: accounts whose login cannot work. The scheduler
// polls them all the same, through UnusableAccount, so that the reason is
// in the mailbox status and not only in a log line.
var (
	ErrProtocolUnsupported = errors.New("ingest: protocol not supported")
	ErrCannotLogIn         = errors.New("ingest: the account cannot log in")
)

// fetchTimeout bounds each network step of a poll.
const fetchTimeout = 60 * time.Second

// Opener opens sealed secrets (adapters/secretbox.Box).
type Opener interface {
	Open(sealed string) (string, error)
}

// AccessTokens gets an OAuth2 access token of a connection for a protocol
// (adapters/oauth.Manager.AccessToken).
type AccessTokens func(ctx context.Context, connectionID, protocol string) (string, error)

// GraphConnections is what a Graph fetcher needs of its account's OAuth
// connection besides tokens (adapters/oauth.Manager).
type GraphConnections interface {
	// GraphBaseURL is the connection's Graph root (graph_base_url); it is
	// asked at every poll, so a changed one applies without a restart.
	GraphBaseURL(ctx context.Context, connectionID string) (string, error)
	// ForgetAccessToken drops a cached token that Graph answered 401 to.
	ForgetAccessToken(connectionID, protocol, token string)
}

// graphHTTP is the HTTP client of every Graph fetcher: fetchers are built
// anew for every account change and every check, and one client keeps
// their idle connections in one pool.
var graphHTTP = graphsource.NewHTTPClient(fetchTimeout)

// FetcherFor builds the fetcher of a stored account. An account with an
// OAuth connection logs in with XOAUTH2 and a token from tokens; any other
// with its password, opened with box (the plaintext lives only in the
// fetcher). A host outside settings.AllowedMailHosts is refused here, and
// an address outside it when the fetcher dials. A Graph account reads the
// mailbox through its connection's Graph (see graphFetcher).
func FetcherFor(a domain.InboundAccount, settings domain.Settings, box Opener, tokens AccessTokens, graph GraphConnections,
	logger *slog.Logger) (mailsource.Fetcher, error) {
	var (
		password    string
		tokenSource func(ctx context.Context) (string, error)
	)
	if a.Protocol == domain.ProtocolGraph {
		return graphFetcher(a, settings, tokens, graph, logger)
	}
	if err := settings.CheckMailHost(a.Host); err != nil {
		return nil, fmt.Errorf("%w: account %s: %w", ErrCannotLogIn, a.ID, err)
	}
	allowAddr := settings.MailHostPolicy().AddrCheck(a.Host)
	switch {
	case a.Protocol != domain.ProtocolIMAP && a.Protocol != domain.ProtocolPOP3:
		return nil, fmt.Errorf("%w: %s (account %s)", ErrProtocolUnsupported, a.Protocol, a.ID)
	case a.OAuthConnectionID != "":
		if tokens == nil {
			return nil, fmt.Errorf("%w: account %s: OAuth logins are not wired in this process", ErrCannotLogIn, a.ID)
		}
		connection, protocol := a.OAuthConnectionID, a.Protocol
		tokenSource = func(ctx context.Context) (string, error) { return tokens(ctx, connection, protocol) }
	case a.Password == "":
		return nil, fmt.Errorf("%w: account %s has neither a password nor an OAuth connection", ErrCannotLogIn, a.ID)
	default:
		if box == nil {
			return nil, fmt.Errorf("%w: account %s: no secret key to open its password", ErrCannotLogIn, a.ID)
		}
		var err error
		if password, err = box.Open(a.Password); err != nil {
			return nil, fmt.Errorf("%w: account %s: open stored password: %w", ErrCannotLogIn, a.ID, err)
		}
	}
	logger = logger.With("account", a.ID)
	if a.Protocol == domain.ProtocolIMAP {
		folders := append([]string{a.Folder}, a.Subfolders...)
		f, err := imapsource.New(imapsource.Config{
			Host: a.Host, Port: a.Port, Security: mailsource.Security(a.Security), TLSSkipVerify: a.TLSSkipVerify,
			TLSServerName: a.TLSServerName, CACertPEM: []byte(a.CACertPEM), Username: a.Username, Password: password,
			TokenSource: tokenSource, PreventPlainLogin: a.PreventPlainLogin, AllowPlaintextAuth: a.AllowPlaintextAuth, AllowAddr: allowAddr,
			Folders: folders, IncludeSubfolders: a.IncludeSubfolders, OnlySubscribed: a.OnlySubscribed,
			AfterImport: mailsource.AfterImport(a.AfterImport), MoveFolder: a.MoveFolder, TrashFolder: a.TrashFolder,
			ErrorFolder: settings.ErrorFolder,
			MaxMailSize: a.MaxMailSize, Timeout: fetchTimeout,
		}, logger)
		if err != nil {
			return nil, fmt.Errorf("ingest: account %s: %w", a.ID, err)
		}
		return f, nil
	}
	f, err := pop3source.New(pop3source.Config{
		Host: a.Host, Port: a.Port, Security: mailsource.Security(a.Security), TLSSkipVerify: a.TLSSkipVerify,
		TLSServerName: a.TLSServerName, CACertPEM: []byte(a.CACertPEM), Username: a.Username, Password: password,
		TokenSource: tokenSource, PreventPlainLogin: a.PreventPlainLogin, AllowPlaintextAuth: a.AllowPlaintextAuth,
		AllowAddr: allowAddr, MaxMailSize: a.MaxMailSize,
		AfterImport: mailsource.AfterImport(a.AfterImport), Timeout: fetchTimeout,
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("ingest: account %s: %w", a.ID, err)
	}
	return f, nil
}

// ServerOf names the mail server a's polls go to, for the scheduler's
// per-server poll limit (Account.Server): host and port for IMAP and POP3,
// the OAuth connection for Graph, whose mailboxes of one tenant share its
// throttling.
func ServerOf(a domain.InboundAccount) string {
	if a.Protocol == domain.ProtocolGraph {
		return "graph:" + a.OAuthConnectionID
	}
	return a.Protocol + ":" + net.JoinHostPort(strings.ToLower(strings.TrimSuffix(a.Host, ".")), strconv.Itoa(a.Port))
}

// UnusableAccount is the fetcher of an account FetcherFor refused: every
// poll and check fails with the reason, so the scheduler records it in the
// mailbox status (with its back-off) instead of skipping the account.
type UnusableAccount struct{ Reason error }

// Poll implements mailsource.Fetcher.
func (u UnusableAccount) Poll(context.Context, mailsource.Sink) (mailsource.PollResult, error) {
	return mailsource.PollResult{}, u.Reason
}

// Check implements mailsource.Fetcher.
func (u UnusableAccount) Check(context.Context) error { return u.Reason }

// graphFetcher builds the fetcher of a Graph account: the mailbox and
// folders of the account, the token and the Graph root of its OAuth
// connection. allowed_mail_hosts does not apply: the account names no
// host, and the connection's graph_base_url, where its tokens go, cannot
// be changed without its client secret.
func graphFetcher(a domain.InboundAccount, settings domain.Settings, tokens AccessTokens, graph GraphConnections,
	logger *slog.Logger) (mailsource.Fetcher, error) {
	switch {
	case a.OAuthConnectionID == "":
		return nil, fmt.Errorf("%w: graph account %s has no OAuth connection", ErrCannotLogIn, a.ID)
	case tokens == nil || graph == nil:
		return nil, fmt.Errorf("%w: account %s: Graph logins are not wired in this process", ErrCannotLogIn, a.ID)
	}
	connection := a.OAuthConnectionID
	var folders []string
	if a.Folder != "" {
		folders = append(folders, a.Folder)
	}
	folders = append(folders, a.Subfolders...)
	afterImport := mailsource.AfterImport(a.AfterImport)
	if afterImport == mailsource.AfterImportTrash {
		afterImport = mailsource.AfterImportDelete // Graph's delete moves to Deleted Items (permanent_delete is refused with trash)
	}
	f, err := graphsource.New(graphsource.Config{
		ResolveBaseURL: func(ctx context.Context) (string, error) { return graph.GraphBaseURL(ctx, connection) },
		Mailbox:        a.Mailbox,
		TokenSource:    func(ctx context.Context) (string, error) { return tokens(ctx, connection, domain.ProtocolGraph) },
		RejectToken:    func(token string) { graph.ForgetAccessToken(connection, domain.ProtocolGraph, token) },
		Folders:        folders, IncludeSubfolders: a.IncludeSubfolders, AfterImport: afterImport, PermanentDelete: a.PermanentDelete,
		MoveFolder: a.MoveFolder, ErrorFolder: settings.ErrorFolder, MaxMailSize: a.MaxMailSize,
		Timeout: fetchTimeout, HTTPClient: graphHTTP, // Limiter: graph.DefaultMailboxLimiter, shared with graphsend
	}, logger.With("account", a.ID))
	if err != nil {
		return nil, fmt.Errorf("ingest: account %s: %w", a.ID, err)
	}
	return f, nil
}
