package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/imapsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
	"github.com/ledgerdesk/ledgerdesk/adapters/pop3source"
	"github.com/ledgerdesk/ledgerdesk/adapters/secretbox"
	"github.com/ledgerdesk/ledgerdesk/domain"
)

// ErrProtocolUnsupported is returned for an account whose protocol has no
// fetcher in this build.
var ErrProtocolUnsupported = errors.New("ingest: protocol not supported")

// fetchTimeout bounds each network step of a poll.
const fetchTimeout = 60 * time.Second

// FetcherFor builds the fetcher of a stored account, opening its sealed
// secrets with box. The plaintext password lives only in the fetcher.
func FetcherFor(a domain.InboundAccount, settings domain.Settings, box *secretbox.Box, logger *slog.Logger) (mailsource.Fetcher, error) {
	password, err := box.Open(a.Password)
	if err != nil {
		return nil, fmt.Errorf("ingest: account %s: open stored password: %w", a.ID, err)
	}
	logger = logger.With("account", a.ID)
	switch a.Protocol {
	case domain.ProtocolIMAP:
		folders := append([]string{a.Folder}, a.Subfolders...)
		f, err := imapsource.New(imapsource.Config{
			Host: a.Host, Port: a.Port, Security: mailsource.Security(a.Security), TLSSkipVerify: a.TLSSkipVerify,
			TLSServerName: a.TLSServerName, CACertPEM: []byte(a.CACertPEM), Username: a.Username, Password: password,
			PreventPlainLogin: a.PreventPlainLogin, Folders: folders, AfterImport: mailsource.AfterImport(a.AfterImport),
			MoveFolder: a.MoveFolder, ErrorFolder: settings.ErrorFolder, MaxMailSize: a.MaxMailSize, Timeout: fetchTimeout,
		}, logger)
		if err != nil {
			return nil, fmt.Errorf("ingest: account %s: %w", a.ID, err)
		}
		return f, nil
	case domain.ProtocolPOP3:
		f, err := pop3source.New(pop3source.Config{
			Host: a.Host, Port: a.Port, Security: mailsource.Security(a.Security), TLSSkipVerify: a.TLSSkipVerify,
			TLSServerName: a.TLSServerName, CACertPEM: []byte(a.CACertPEM), Username: a.Username, Password: password,
			PreventPlainLogin: a.PreventPlainLogin, MaxMailSize: a.MaxMailSize,
			AfterImport: mailsource.AfterImport(a.AfterImport), Timeout: fetchTimeout,
		}, logger)
		if err != nil {
			return nil, fmt.Errorf("ingest: account %s: %w", a.ID, err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("%w: %s (account %s)", ErrProtocolUnsupported, a.Protocol, a.ID)
}
