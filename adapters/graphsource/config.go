package graphsource

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/graph"
	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// Defaults applied by New to zero fields.
const (
	DefaultFolder      = "Inbox"
	DefaultErrorFolder = "HD Error Messages"
	DefaultTimeout     = 60 * time.Second
	DefaultBatchSize   = 500
	// DefaultPageSize is the $top of a listing; Graph answers at most 1000
	// messages a page.
	DefaultPageSize = 500
	// MaxConcurrency is Exchange Online's MailboxConcurrency limit
	// (graph.MailboxConcurrency).
	MaxConcurrency = graph.MailboxConcurrency
	// DefaultMaxRetries is how often a request answered 429 or 503 is
	// tried again.
	DefaultMaxRetries = 4
	// DefaultMaxRetryAfter bounds how long one Retry-After is waited for;
	// a longer one ends the poll with Graph's words, and the scheduler's
	// back-off takes over.
	DefaultMaxRetryAfter = 2 * time.Minute
)

// Config describes one Graph account: a mailbox, its folders and what
// happens to imported mail. The zero values of Folders, AfterImport,
// ErrorFolder, Timeout, BatchSize, PageSize, Concurrency, MaxRetries and
// MaxRetryAfter mean the defaults.
type Config struct {
	// BaseURL is Graph's root in the account's cloud, without /v1.0
	// (https://graph.microsoft.com, https://graph.microsoft.us, ...).
	BaseURL string
	// ResolveBaseURL, when set, is asked for the base URL at the start of
	// every Poll and Check instead of BaseURL: an OAuth connection's
	// graph_base_url may change while the fetcher lives.
	ResolveBaseURL func(ctx context.Context) (string, error)
	// Mailbox is the user whose mail is read: an address or a user id,
	// shared mailboxes included (/users/{Mailbox}).
	Mailbox string
	// TokenSource returns an access token for Graph. It is asked once per
	// poll, again after a while, and again after Graph answered 401.
	TokenSource func(ctx context.Context) (string, error)
	// RejectToken, when set, is told a token Graph answered 401 to before
	// TokenSource is asked again, so that it hands out a fresh one rather
	// than the one it cached.
	RejectToken func(token string)
	// Folders are polled in order: a well-known name (Inbox, the default)
	// or a path from the top of the mailbox whose first segment may be a
	// well-known name ("Inbox/Support", "Support/Tier 2").
	Folders []string
	// IncludeSubfolders polls every folder below each of Folders too, at
	// any depth, found anew at every poll (childFolders). The error folder,
	// the move folder and Deleted Items (where delete puts mails) are never
	// walked, nor anything below them.
	IncludeSubfolders bool
	// AfterImport is delete (default), move or keep.
	AfterImport mailsource.AfterImport
	// PermanentDelete makes delete purge the mail (permanentDelete) instead
	// of moving it to Deleted Items.
	PermanentDelete bool
	// MoveFolder receives imported mails when AfterImport is move; it is a
	// path like Folders and is created when missing.
	MoveFolder string
	// ErrorFolder receives failed and oversize mails; it is a path like
	// Folders and is created when missing [DefaultErrorFolder].
	ErrorFolder string
	// MaxMailSize in octets, compared with the size Graph lists
	// (PidTagMessageSize) before any download; 0 means unlimited.
	MaxMailSize int64
	// Timeout bounds each request until Graph answers and every stretch
	// without progress while a mail downloads.
	Timeout time.Duration
	// BatchSize is how many mails one Sink.Commit covers.
	BatchSize int
	// PageSize is the $top of a listing.
	PageSize int
	// Concurrency is how many requests run at once for the mailbox, at most
	// MaxConcurrency (the default).
	Concurrency int
	// Limiter bounds the requests in flight per mailbox across every
	// fetcher and sender holding it, so that accounts reading one mailbox
	// (two folders, say) and the replies sent from it stay within
	// Exchange's limit together [graph.DefaultMailboxLimiter].
	Limiter *graph.MailboxLimiter
	// MaxRetries and MaxRetryAfter bound the retries of 429 and 503.
	MaxRetries    int
	MaxRetryAfter time.Duration
	// HTTPClient sends the requests; nil means a client of the package's
	// own with Timeout as its response header timeout.
	HTTPClient *http.Client
}

// Validate reports every problem of c at once, naming the field.
func (c Config) Validate() error {
	var errs []error
	if c.ResolveBaseURL == nil {
		if err := checkBaseURL(c.BaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	if strings.TrimSpace(c.Mailbox) == "" {
		errs = append(errs, errors.New("graphsource: Mailbox is required"))
	} else if strings.ContainsAny(c.Mailbox, "/\\?# \r\n") {
		errs = append(errs, fmt.Errorf("graphsource: Mailbox %q is not an address or a user id", c.Mailbox))
	}
	if c.TokenSource == nil {
		errs = append(errs, errors.New("graphsource: TokenSource is required"))
	}
	for i, f := range c.Folders {
		if folderSegments(f) == nil {
			errs = append(errs, fmt.Errorf("graphsource: Folders[%d] %q names no folder", i, f))
		}
	}
	switch c.AfterImport {
	case "", mailsource.AfterImportDelete, mailsource.AfterImportKeep:
	case mailsource.AfterImportMove:
		if folderSegments(c.MoveFolder) == nil {
			errs = append(errs, errors.New("graphsource: MoveFolder is required when AfterImport is move"))
		}
		for _, f := range c.folders() {
			if samePath(f, c.MoveFolder) {
				errs = append(errs, fmt.Errorf("graphsource: MoveFolder %q is also one of Folders: mails would be imported again", c.MoveFolder))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("graphsource: AfterImport %q must be delete, move or keep", c.AfterImport))
	}
	errorFolder := c.ErrorFolder
	if errorFolder == "" {
		errorFolder = DefaultErrorFolder
	}
	if folderSegments(errorFolder) == nil {
		errs = append(errs, fmt.Errorf("graphsource: ErrorFolder %q names no folder", c.ErrorFolder))
	}
	for _, f := range c.folders() {
		if samePath(f, errorFolder) {
			errs = append(errs, fmt.Errorf("graphsource: ErrorFolder %q is also one of Folders: failed mails would be fetched again", errorFolder))
		}
	}
	if c.MaxMailSize < 0 {
		errs = append(errs, fmt.Errorf("graphsource: MaxMailSize %d must not be negative", c.MaxMailSize))
	}
	for name, v := range map[string]int{"BatchSize": c.BatchSize, "PageSize": c.PageSize, "MaxRetries": c.MaxRetries} {
		if v < 0 {
			errs = append(errs, fmt.Errorf("graphsource: %s %d must not be negative", name, v))
		}
	}
	if c.PageSize > 1000 {
		errs = append(errs, fmt.Errorf("graphsource: PageSize %d is above Graph's 1000", c.PageSize))
	}
	if c.Concurrency < 0 || c.Concurrency > MaxConcurrency {
		errs = append(errs, fmt.Errorf("graphsource: Concurrency %d is not from 0 to %d (Exchange's MailboxConcurrency)", c.Concurrency, MaxConcurrency))
	}
	if c.Timeout < 0 || c.MaxRetryAfter < 0 {
		errs = append(errs, errors.New("graphsource: Timeout and MaxRetryAfter must not be negative"))
	}
	return errors.Join(errs...)
}

// checkBaseURL accepts an absolute http(s) URL without query or fragment.
func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("graphsource: BaseURL %q is not an http(s) URL like https://graph.microsoft.com", s)
	}
	return nil
}

func (c Config) folders() []string {
	if len(c.Folders) == 0 {
		return []string{DefaultFolder}
	}
	return c.Folders
}

// withDefaults fills the zero fields that have defaults.
func (c Config) withDefaults() Config {
	c.Folders = append([]string(nil), c.folders()...)
	if c.AfterImport == "" {
		c.AfterImport = mailsource.AfterImportDelete
	}
	if c.ErrorFolder == "" {
		c.ErrorFolder = DefaultErrorFolder
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.PageSize == 0 {
		c.PageSize = DefaultPageSize
	}
	if c.Concurrency == 0 {
		c.Concurrency = MaxConcurrency
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.MaxRetryAfter == 0 {
		c.MaxRetryAfter = DefaultMaxRetryAfter
	}
	if c.Limiter == nil {
		c.Limiter = graph.DefaultMailboxLimiter
	}
	if c.HTTPClient == nil {
		c.HTTPClient = NewHTTPClient(c.Timeout)
	}
	return c
}

// NewHTTPClient returns the client a fetcher uses when Config.HTTPClient is
// nil: Go's default transport, waiting at most timeout for an answer's
// headers, keeping an idle connection per concurrent request. Fetchers
// built often (one per account change or check) should share one, so that
// their idle connections do not pile up.
func NewHTTPClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = timeout
	// The default of 2 idle connections per host would dial anew for every
	// third of 4 concurrent requests.
	t.MaxIdleConnsPerHost = MaxConcurrency * 2
	return &http.Client{Transport: t}
}

// folderSegments splits a folder path at "/", trimming blanks; nil when it
// names no folder.
func folderSegments(path string) []string {
	var out []string
	for _, s := range strings.Split(path, "/") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// samePath compares folder paths as Exchange compares display names:
// without regard to case.
func samePath(a, b string) bool {
	return strings.EqualFold(strings.Join(folderSegments(a), "/"), strings.Join(folderSegments(b), "/"))
}
