package imapsource

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// Append stores raw in folder with flags and date as its internal date
// (APPEND, RFC 9051 section 6.3.12; a zero date leaves it to the server),
// over a connection of its own that dials and logs in as the fetcher does
// (TLS settings, TokenSource, PreventPlainLogin), and logs out.
//
// Only the connection fields of cfg are read and checked; the folder
// settings play no part. As in the fetcher, cfg.Timeout bounds dialing and
// every stretch without progress, so a big mail on a slow line still goes
// through, and ctx bounds the whole. A refusal (a wrong password, a folder
// that does not exist) is a *mailsource.ServerError with the server's
// exact reply. The folder is not created.
func Append(ctx context.Context, cfg Config, folder string, raw []byte, flags []imap.Flag, date time.Time) error {
	errs := cfg.connectionProblems()
	if strings.TrimSpace(folder) == "" {
		errs = append(errs, errors.New("imapsource: append: folder is empty"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s, err := newFetcher(cfg, nil).dial(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	cmd := s.c.Append(folder, int64(len(raw)), &imap.AppendOptions{Flags: flags, Time: date})
	_, werr := cmd.Write(raw)
	cerr := cmd.Close()
	// A refusal before the literal (NO [TRYCREATE] instead of "+") fails
	// Write and Close with the same error that Wait returns.
	if _, err := cmd.Wait(); err != nil {
		return s.wrap(serverError("append "+folder, err))
	}
	return s.wrap(serverError("append "+folder, errors.Join(werr, cerr)))
}
