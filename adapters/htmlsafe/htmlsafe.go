// Package htmlsafe turns the HTML of a received mail into HTML a browser can
// show inside ledgerdesk without running or fetching anything the sender
// chose: bluemonday's UGC policy, tightened for mail. Scripts, event
// handlers, forms, frames and stylesheets are dropped; images keep only
// cid: (served by the API from the stored mail, RFC 2392) and data:image
// sources, so that no remote image can report that the mail was read;
// links stay, with rel="nofollow noreferrer noopener" and target="_blank";
// inline styles keep a fixed set of layout properties whose values hold no
// url(), expression() or escapes.
//
// The work is bounded: the input is cut at Options.MaxBytes (with a notice
// in the output) and sanitising runs under a time budget on a fixed number
// of workers, so a hostile or huge mail cannot stall a request or pile up
// CPU work. A panic of the sanitiser on one mail is that call's
// *PanicError, not the end of the process.
package htmlsafe

import (
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net/url"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/microcosm-cc/bluemonday"
)

// ErrTimeout is returned when sanitising did not finish within the budget;
// the caller shows the plain text instead.
var ErrTimeout = errors.New("htmlsafe: sanitising took longer than its budget")

// PanicError is returned when the sanitiser panicked on its input (a bug
// in bluemonday met by a hostile mail). Sanitize runs it on a goroutine of
// its own, where a panic would end the process; the stack is logged
// (Options.Logger) and kept in Stack, and the caller shows the plain text
// instead.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("htmlsafe: sanitiser panic: %v", e.Value) }

// Defaults of Options.
const (
	DefaultMaxBytes = 1 << 20
	DefaultTimeout  = 2 * time.Second
)

// Options bound the work of one Sanitize call. Zero fields take the
// defaults: DefaultMaxBytes, DefaultTimeout and GOMAXPROCS workers.
type Options struct {
	// MaxBytes caps the HTML sanitised; the rest is cut off with a notice.
	MaxBytes int
	// Timeout is the time budget of one call.
	Timeout time.Duration
	// Workers caps how many sanitisings run at once, including those whose
	// caller gave up after the timeout (they still finish in the
	// background, holding their slot).
	Workers int
	// Logger receives a sanitiser panic with its stack. Nil means
	// slog.Default(): a panic is never silent.
	Logger *slog.Logger
}

// Sanitizer is safe for concurrent use.
type Sanitizer struct {
	opts   Options
	policy *bluemonday.Policy
	slots  chan struct{}
	// sanitize is policy.Sanitize; tests put a panicking one here.
	sanitize func(string) string
}

// Result is sanitised HTML. Truncated says that the input was longer than
// MaxBytes and the output carries a notice saying so.
type Result struct {
	HTML      string
	Truncated bool
}

// New returns a Sanitizer with the mail policy.
func New(o Options) *Sanitizer {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	policy := mailPolicy()
	return &Sanitizer{opts: o, policy: policy, slots: make(chan struct{}, o.Workers), sanitize: policy.Sanitize}
}

// Options returns the bounds in effect (defaults filled in).
func (s *Sanitizer) Options() Options { return s.opts }

// markers the policy's src rewriter leaves for rewriteSrc to resolve per
// call: the policy is built once, the inline image URL differs per article.
const blockedSrc = "ledgerdesk-blocked:remote"

// mailPolicy is bluemonday's UGC policy tightened for mail.
func mailPolicy() *bluemonday.Policy {
	p := bluemonday.UGCPolicy()
	// Only absolute links: a relative one would point into ledgerdesk itself.
	p.AllowRelativeURLs(false)
	p.AllowURLSchemes("cid")
	p.AllowDataURIImages()
	p.RequireNoFollowOnLinks(true)
	p.RequireNoReferrerOnLinks(true)
	p.AddTargetBlankToFullyQualifiedLinks(true) // adds rel="noopener" too
	// Images: cid: and data:image only. UGC's img src accepts any allowed
	// scheme, so the src rewriter (applied to img, the only element with a
	// src that UGC allows) blocks everything else.
	p.RewriteSrc(blockRemoteSrc)
	p.AllowStyles(safeStyleProps...).MatchingHandler(safeStyleValue).Globally()
	return p
}

// blockRemoteSrc keeps cid: and data: image sources and marks every other
// one blocked. bluemonday passes what url.Parse returned without looking at
// the error, so u can be nil; there is nothing to rewrite then.
func blockRemoteSrc(u *url.URL) {
	if u == nil {
		return
	}
	switch strings.ToLower(u.Scheme) {
	case "cid", "data":
	default:
		*u = url.URL{Scheme: "ledgerdesk-blocked", Opaque: "remote"}
	}
}

// safeStyleProps are the inline style properties kept: what mail layouts
// need, nothing that loads a resource (background-image, list-style-image,
// content, cursor, ...) or escapes its box (position).
var safeStyleProps = []string{
	"color", "background-color", "font-family", "font-size", "font-style", "font-weight", "line-height",
	"text-align", "text-decoration", "text-indent", "text-transform", "vertical-align", "white-space",
	"margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
	"padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
	"border", "border-top", "border-right", "border-bottom", "border-left", "border-color", "border-style",
	"border-width", "border-collapse", "border-spacing", "border-radius",
	"width", "max-width", "min-width", "height", "max-height", "min-height", "display",
}

// safeStyleValue refuses values that could fetch or run anything.
func safeStyleValue(v string) bool {
	l := strings.ToLower(v)
	for _, bad := range []string{"url(", "expression(", "image-set(", "image(", "var(", "attr(", "\\", "@import", "javascript:", "/*"} {
		if strings.Contains(l, bad) {
			return false
		}
	}
	return true
}

// srcAttr finds the img sources the policy left: cid: ones and blocked ones.
// Bluemonday writes every attribute as name="escaped value", so the pattern
// cannot match inside text or another attribute's value.
var srcAttr = regexp.MustCompile(` src="(cid:[^"]*|` + blockedSrc + `)"`)

// Sanitize returns the safe form of the mail HTML src. A "cid:ID" image
// source becomes inlineBase + the %-encoded ID (the API's inline image
// URL); with inlineBase "" it is dropped like remote sources. It fails with
// ErrTimeout when the budget runs out, and with ctx's error when ctx ends
// first.
func (s *Sanitizer) Sanitize(ctx context.Context, src, inlineBase string) (Result, error) {
	return s.sanitizeThen(ctx, src, func(h string) string { return rewriteSrc(h, inlineBase) })
}

// SanitizeWithoutInlineImages is Sanitize for a mail whose inline images
// are shown as attachments (images_as_attachments): every <img> with a
// cid: source is taken out whole, not left as an empty frame.
func (s *Sanitizer) SanitizeWithoutInlineImages(ctx context.Context, src string) (Result, error) {
	return s.sanitizeThen(ctx, src, func(h string) string { return rewriteSrc(cidImg.ReplaceAllString(h, ""), "") })
}

// cidImg finds an img element with a cid: source in bluemonday's output,
// where every attribute value is escaped (no ">" or quote inside one).
var cidImg = regexp.MustCompile(`<img\b[^>]*\ssrc="(?i:cid:)[^"]*"[^>]*>`)

// sanitizeThen sanitises src within the budget and hands the result to
// rewrite (which settles the image sources).
func (s *Sanitizer) sanitizeThen(ctx context.Context, src string, rewrite func(string) string) (Result, error) {
	var res Result
	if len(src) > s.opts.MaxBytes {
		src = truncateUTF8(src, s.opts.MaxBytes)
		res.Truncated = true
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return Result{}, s.ctxErr(ctx)
	}
	if ctx.Err() != nil { // both were ready and select chose the slot
		<-s.slots
		return Result{}, s.ctxErr(ctx)
	}
	done := make(chan sanitized, 1)
	go func() {
		defer func() { <-s.slots }()
		done <- s.run(src)
	}()
	var out string
	select {
	case r := <-done:
		if r.err != nil {
			return Result{}, r.err
		}
		out = r.html
	case <-ctx.Done():
		return Result{}, s.ctxErr(ctx)
	}
	res.HTML = rewrite(out)
	if res.Truncated {
		res.HTML += fmt.Sprintf(`<p data-ledgerdesk-notice="truncated">[ledgerdesk: this HTML was cut off after %d bytes; `+
			`the complete mail is in its .eml download]</p>`, s.opts.MaxBytes)
	}
	return res, nil
}

// sanitized is what a worker hands back.
type sanitized struct {
	html string
	err  error
}

// run sanitises src on a worker goroutine, turning a panic into a
// *PanicError.
func (s *Sanitizer) run(src string) (r sanitized) {
	defer func() {
		if v := recover(); v != nil {
			pe := &PanicError{Value: v, Stack: debug.Stack()}
			s.opts.Logger.Error("HTML sanitiser panicked; the call fails, the process goes on",
				"panic", fmt.Sprint(v), "html_bytes", len(src), "stack", string(pe.Stack))
			r = sanitized{err: pe}
		}
	}()
	return sanitized{html: s.sanitize(src)}
}

func (s *Sanitizer) ctxErr(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), context.DeadlineExceeded) && ctx.Err() != nil {
		return fmt.Errorf("%w (%s)", ErrTimeout, s.opts.Timeout)
	}
	return ctx.Err()
}

// rewriteSrc points cid: sources at inlineBase and drops blocked ones.
func rewriteSrc(h, inlineBase string) string {
	return srcAttr.ReplaceAllStringFunc(h, func(m string) string {
		val := html.UnescapeString(m[len(` src="`) : len(m)-1])
		if inlineBase == "" || !strings.HasPrefix(strings.ToLower(val), "cid:") {
			return ""
		}
		cid := val[len("cid:"):]
		if u, err := url.PathUnescape(cid); err == nil {
			cid = u
		}
		cid = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(cid), "<"), ">")
		if cid == "" {
			return ""
		}
		return ` src="` + html.EscapeString(inlineBase+url.PathEscape(cid)) + `"`
	})
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
