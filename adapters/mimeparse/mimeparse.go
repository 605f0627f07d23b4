package mimeparse

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // sets message.CharsetReader: ISO-8859-x, Windows-125x, CJK, ...
	"github.com/emersion/go-message/textproto"
)

// Address is a mailbox address as found in a header (RFC 5322 section 3.4).
// It has the fields of domain.Address, so domain.Address(a) converts it;
// the package does not import domain, which keeps it a leaf adapter.
type Address struct {
	Name  string
	Email string
}

// Attachment describes one MIME part kept as an attachment, with the fields
// of domain.Attachment (domain.Attachment(a) converts it). Its bytes stay in
// the stored raw mail; PartPath (IMAP style, "2.1", RFC 3501 section 6.4.5)
// finds them again.
type Attachment struct {
	PartPath    string
	Filename    string
	ContentType string
	ContentID   string
	Size        int64
	// Inline is true for parts shown inside the HTML (Content-Disposition
	// inline, or a cid: reference to the part's Content-ID).
	Inline bool
}

// GeneratedIDDomain is the domain of Message-IDs made up for mails that carry
// none: "gen-<sha256 of the raw bytes>@ledgerdesk.invalid". The .invalid
// top-level domain (RFC 2606) can never collide with a real one.
const GeneratedIDDomain = "ledgerdesk.invalid"

// Summary is what the parser found in one mail. Its fields map 1:1 onto the
// fields of domain.MailReceived that come from the mail itself (the same
// names and types, with Address and Attachment converting to the domain's);
// the ingestion sets the fetch fields (MailID, AccountID, SourceKey, BlobRef,
// ReceivedAt).
type Summary struct {
	// MessageID is the Message-ID without angle brackets, or a deterministic
	// one derived from the raw bytes when the header is missing or empty.
	MessageID  string
	InReplyTo  string
	References []string
	Subject    string

	From        Address
	ReplyTo     []Address
	To          []Address
	Cc          []Address
	DeliveredTo []string
	ReturnPath  string
	// ReturnPathEmpty is true for "Return-Path: <>" (RFC 5321 section 4.5.5).
	ReturnPathEmpty bool
	// Date is the Date header in its own zone; zero when absent or unreadable.
	Date time.Time

	AutoSubmitted string // RFC 3834 section 5, lower-case
	Precedence    string // lower-case
	// LoopHeaders maps lower-case names of headers that mark automatic mail
	// (X-Autoreply, X-Auto-Response-Suppress, List-*, X-Loop, ...) to their
	// first value. See loopHeaderNames.
	LoopHeaders map[string]string

	// ContentType is the top-level media type, lower-case.
	ContentType string
	// ReportType is the report-type parameter of a multipart/report.
	ReportType string
	// BouncedMessageID is the Message-ID of the message a report returns,
	// from its message/rfc822 or text/rfc822-headers part.
	BouncedMessageID string

	// TextBody is the text of the mail; from the HTML when it has no text.
	TextBody string
	// HTMLBody is the HTML of the mail, unsanitised, "" for text-only mail.
	HTMLBody    string
	Attachments []Attachment
	// Warnings lists what had to be repaired, for the admin.
	Warnings []string

	// Size is the number of raw bytes read.
	Size int64
	// SHA256 is the digest of the raw bytes, the blob store's address.
	SHA256 [sha256.Size]byte
}

// Limits bound the work and memory one mail can cost. A mail that exceeds
// MaxDepth, MaxParts, MaxHeaderBytes, MaxPartHeaderBytes or MaxDecodedBytes
// fails with a *ParseError; MaxBodyBytes only truncates (with a warning).
// Zero fields take the defaults of DefaultLimits.
type Limits struct {
	// MaxDepth is how deep multiparts and message/rfc822 parts may nest.
	MaxDepth int
	// MaxParts is how many MIME entities (all levels) a mail may have.
	MaxParts int
	// MaxHeaderBytes caps the top-level header.
	MaxHeaderBytes int64
	// MaxPartHeaderBytes caps each part's header, including the header of a
	// forwarded message.
	MaxPartHeaderBytes int64
	// MaxDecodedBytes caps the sum of all parts' decoded sizes.
	MaxDecodedBytes int64
	// MaxBodyBytes caps each of TextBody and HTMLBody.
	MaxBodyBytes int
}

// DefaultLimits are generous for real mail and small enough that a hostile
// one costs little: 50 nesting levels, 2,000 parts, a 1 MiB top-level header,
// 256 KiB part headers, 1 GiB decoded, 2 MiB of text and of HTML kept.
func DefaultLimits() Limits {
	return Limits{
		MaxDepth:           50,
		MaxParts:           2000,
		MaxHeaderBytes:     1 << 20,
		MaxPartHeaderBytes: 256 << 10,
		MaxDecodedBytes:    1 << 30,
		MaxBodyBytes:       2 << 20,
	}
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxDepth <= 0 {
		l.MaxDepth = d.MaxDepth
	}
	if l.MaxParts <= 0 {
		l.MaxParts = d.MaxParts
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxPartHeaderBytes <= 0 {
		l.MaxPartHeaderBytes = d.MaxPartHeaderBytes
	}
	if l.MaxDecodedBytes <= 0 {
		l.MaxDecodedBytes = d.MaxDecodedBytes
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	return l
}

// ParseError says why a mail cannot be imported: it is not a mail, or it
// exceeds a limit. It becomes the Reason of a domain.MailFailed.
type ParseError struct {
	Reason string
	// Limit is true when a Limits bound was exceeded (a MIME bomb or an
	// absurdly large mail) rather than the input not being a mail.
	Limit bool
}

func (e *ParseError) Error() string { return "mimeparse: " + e.Reason }

// limitError is raised deep inside readers and becomes a ParseError.
type limitError struct{ reason string }

func (e *limitError) Error() string { return e.reason }

// sourceError wraps a read error of the caller's reader: the mail was not
// read, which is not the mail's fault.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return "read mail: " + e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// ParseBytes parses a mail held in memory.
func ParseBytes(b []byte, lim Limits) (Summary, error) {
	return Parse(bytes.NewReader(b), lim)
}

// Parse reads one RFC 5322 mail from r and summarises it.
//
// Memory is bounded by the limits, not by the mail's size: attachment bodies
// are decoded and counted, never kept, and text and HTML are kept up to
// MaxBodyBytes. On success r has been read to EOF, so Size and SHA256 cover
// the whole input (a caller can tee r into the blob store).
//
// A mail that is not a mail or breaks a limit gives a *ParseError; a read
// error of r is returned wrapped, as it is. Anything else that is wrong is
// repaired where a mail client would show the mail anyway, and listed in
// Warnings. Parse never panics on any input.
func Parse(r io.Reader, lim Limits) (Summary, error) {
	lim = lim.withDefaults()
	src := &hashingReader{r: r, h: sha256.New()}
	p := &parser{lim: lim}
	s, err := p.parse(src)
	if err != nil {
		return Summary{}, failure(err)
	}
	return s, nil
}

// failure turns an error of the walk into what the exported functions
// return: a *ParseError for the mail's faults, the caller's read (or
// write) error wrapped.
func failure(err error) error {
	var le *limitError
	var se *sourceError
	var we *sinkError
	var pe *ParseError
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.As(err, &le):
		return &ParseError{Reason: le.reason, Limit: true}
	case errors.As(err, &we):
		return fmt.Errorf("mimeparse: %w", we)
	case errors.As(err, &se):
		return fmt.Errorf("mimeparse: %w", se)
	default:
		// Not the reader's fault, so the mail's: a failure with a reason,
		// never an error that would make the fetcher retry it for ever.
		return &ParseError{Reason: "unreadable mail: " + err.Error()}
	}
}

// hashingReader hashes and counts what the parser reads and marks the
// caller's read errors as sourceErrors.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if n > 0 {
		h.h.Write(p[:n])
		h.n += int64(n)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return n, &sourceError{err: err}
	}
	return n, err
}

// parser holds the state of one Parse call.
type parser struct {
	lim      Limits
	parts    int
	decoded  int64
	warnings []string
	seen     map[string]bool
	atts     []Attachment
	// bodyLeft is how many raw body bytes (text and HTML together) may
	// still be kept in memory.
	bodyLeft int64
	// htmlParts is the kept HTML, searched for cid: references.
	htmlParts []string
	topType   string
	report    string
	bounceID  string
	// fallback is the charset for raw 8-bit header bytes: the one declared
	// for the mail's first text part, once fallbackFound.
	fallback      string
	fallbackFound bool
	// unsure are the part headers repaired before fallbackFound.
	unsure []unsureHeader
	// ext, when set, makes the walk copy one part to a writer and stop
	// there (ExtractPart, FindContentID) instead of summarising the mail.
	ext *extraction
}

func (p *parser) warn(format string, args ...any) {
	w, _ := stripNUL(strings.ToValidUTF8(fmt.Sprintf(format, args...), "\uFFFD"))
	if p.seen == nil {
		p.seen = map[string]bool{}
	}
	if p.seen[w] || len(p.warnings) >= 100 {
		return
	}
	p.seen[w] = true
	p.warnings = append(p.warnings, w)
}

func (p *parser) parse(src *hashingReader) (Summary, error) {
	br := bufio.NewReaderSize(src, 32<<10)
	p.bodyLeft = 2 * int64(p.lim.MaxBodyBytes)
	h, segs, err := p.walkMail(br)
	if err != nil {
		return Summary{}, err
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		return Summary{}, err
	}

	s := p.summarise(h)
	s.Size = src.n
	src.h.Sum(s.SHA256[:0])
	p.bodies(&s, segs)
	p.markInline(&s)
	if s.MessageID == "" {
		s.MessageID = "gen-" + hex.EncodeToString(s.SHA256[:]) + "@" + GeneratedIDDomain
		p.warn("header: Message-ID missing; generated %s", s.MessageID)
	}
	s.Attachments = p.atts
	s.Warnings = p.warnings
	return s, nil
}

// walkMail reads the top-level header from br and walks the body: the
// single walk that Parse and the extraction functions share, so that part
// paths mean the same thing in both.
func (p *parser) walkMail(br *bufio.Reader) (*header, []segment, error) {
	hr := &headerReader{br: br, max: p.lim.MaxHeaderBytes, what: "header"}
	blk, err := hr.readHeader(true)
	if err != nil {
		return nil, nil, err
	}
	if len(blk.h.fields) == 0 {
		return nil, nil, &ParseError{Reason: "not a mail: no header fields"}
	}
	if !blk.h.looksLikeMail() {
		return nil, nil, &ParseError{Reason: "not a mail: none of From, To, Subject, Date, Message-ID, Received or Content-Type in the header"}
	}
	if blk.skipped > 0 {
		p.warn("header: dropped %d malformed line(s)", blk.skipped)
	}
	h := &blk.h
	// Raw 8-bit header bytes are read in the charset the message declares
	// for its first text part. A single-part mail declares it up front; in
	// a multipart that part comes later, so the header is repaired again
	// from its raw copy once the walk has found it.
	var raw header
	repaired := h.needsRepair()
	if repaired {
		raw = h.clone()
	}
	mt, params := parseMediaType(h.get("Content-Type"), "")
	if !strings.HasPrefix(mt, "multipart/") {
		p.fallback, p.fallbackFound = params["charset"], true
	}
	h.repair(p.fallback)
	if h.has("Content-Type") && !h.has("Mime-Version") {
		p.warn("header: MIME-Version missing; Content-Type honoured anyway")
	}

	var body io.Reader = br
	if blk.leftover != nil {
		body = io.MultiReader(bytes.NewReader(append(blk.leftover, blk.leftoverNL...)), br)
	}
	segs, err := p.walk(h, body, "", true, 0, "", false)
	if err != nil {
		return nil, nil, err
	}
	if repaired {
		h.fields = raw.fields
		h.repair(p.fallback)
		p.warn("header: raw 8-bit bytes decoded as %s", charsetName(p.fallback))
	}
	if p.fallbackFound {
		p.renameUnsure()
	}
	return h, segs, nil
}

// unsureHeader is the raw header of a part read before the mail's first
// text part, whose raw 8-bit bytes were decoded without knowing that
// part's charset.
type unsureHeader struct {
	path string
	raw  header
}

// renameUnsure reads the file names of the unsure part headers again with
// the charset of the first text part.
func (p *parser) renameUnsure() {
	for _, u := range p.unsure {
		for i := range p.atts {
			if p.atts[i].PartPath != u.path {
				continue
			}
			u.raw.repair(p.fallback)
			_, params := parseMediaType(u.raw.get("Content-Type"), p.fallback)
			if _, name := p.disposition(&u.raw, params); name != "" {
				p.atts[i].Filename = name
			}
		}
	}
}

// segment is a piece of the mail's body: the text and/or HTML of one body
// part, or of one multipart/alternative.
type segment struct {
	text, html       string
	hasText, hasHTML bool
}

// joinPath builds IMAP part paths (RFC 3501 section 6.4.5).
func joinPath(path string, i int) string {
	if path == "" {
		return strconv.Itoa(i)
	}
	return path + "." + strconv.Itoa(i)
}

// walk processes one entity and returns its body segments. path is the
// entity's IMAP part path; for the root of a message (msgRoot) it is the
// path of the enclosing message/rfc822 part ("" at the top), and a
// single-part body then lives at path.1. parent is the enclosing multipart's
// media type; forwarded is true inside a message/rfc822 part, whose text is
// not the mail's body. walk reads body to its end.
func (p *parser) walk(h *header, body io.Reader, path string, msgRoot bool, depth int, parent string, forwarded bool) ([]segment, error) {
	p.parts++
	if p.parts > p.lim.MaxParts {
		return nil, &limitError{reason: fmt.Sprintf("more than %d MIME parts", p.lim.MaxParts)}
	}
	if depth > p.lim.MaxDepth {
		return nil, &limitError{reason: fmt.Sprintf("MIME parts nested deeper than %d levels", p.lim.MaxDepth)}
	}
	mt, params := p.contentType(h, parent, path)
	if strings.HasPrefix(mt, "multipart/") && params["boundary"] == "" {
		p.warn("part %s: %s without boundary; read as text", pathName(path), mt)
		mt, params = "text/plain", map[string]string{"charset": params["charset"]}
	}
	if msgRoot && !strings.HasPrefix(mt, "multipart/") {
		path = joinPath(path, 1)
	}
	if depth == 0 {
		p.topType = mt
		if mt == "multipart/report" {
			p.report, _ = oneLine(strings.ToLower(params["report-type"]), maxMediaType)
		}
	}

	var segs []segment
	var err error
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		segs, err = p.multipart(body, mt, params, path, depth, forwarded)
	case mt == "message/rfc822" || mt == "message/global":
		err = p.message(h, body, mt, params, path, depth, parent)
	case mt == "text/rfc822-headers" && parent == "multipart/report":
		err = p.returnedHeaders(h, body, mt, params, path)
	default:
		segs, err = p.leaf(h, body, mt, params, path, forwarded)
	}
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, body); err != nil && isFatal(err) {
		return nil, err
	}
	return segs, nil
}

// isFatal tells read errors that stop the parse (the caller's reader failed,
// a limit was hit) from decoding errors of one part, which are repaired.
func isFatal(err error) bool {
	var le *limitError
	var se *sourceError
	var we *sinkError
	return errors.As(err, &le) || errors.As(err, &se) || errors.As(err, &we) || errors.Is(err, errExtracted)
}

func pathName(path string) string {
	if path == "" {
		return "root"
	}
	return path
}

// multipart walks the parts of a multipart entity.
func (p *parser) multipart(body io.Reader, mt string, params map[string]string, path string, depth int, forwarded bool) ([]segment, error) {
	// Text before the first boundary is kept in case the boundary never
	// comes (then it is the body): in full at the top, a little below it,
	// so that nesting cannot multiply the memory kept.
	keep := 4 << 10
	if depth == 0 {
		keep = p.lim.MaxBodyBytes
	}
	sp := newSplitter(body, params["boundary"], keep)
	hr := &headerReader{max: p.lim.MaxPartHeaderBytes}
	var children [][]segment
	n := 0
	for {
		child := joinPath(path, n+1)
		hr.what = "part " + child + " header"
		blk, partBody, err := sp.next(hr)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if isFatal(err) {
				return nil, err
			}
			// The encoding around this multipart broke (a base64-encoded
			// message/rfc822 with garbage): keep the parts read so far.
			p.warn("part %s: %v; later parts dropped", pathName(path), err)
			break
		}
		n++
		for _, w := range blk.warnings {
			p.warn("%s", w)
		}
		if blk.skipped > 0 {
			p.warn("part %s header: dropped %d malformed line(s)", child, blk.skipped)
		}
		if !p.fallbackFound && blk.h.needsRepair() {
			// Raw 8-bit bytes (a file name) before the first text part:
			// read again once that part's charset is known.
			p.unsure = append(p.unsure, unsureHeader{path: child, raw: blk.h.clone()})
		}
		blk.h.repair(p.fallback)
		segs, err := p.walk(&blk.h, partBody, child, false, depth+1, mt, forwarded)
		if err != nil {
			return nil, err
		}
		children = append(children, segs)
	}
	if sp.truncated {
		p.warn("part %s: %s ends without its closing boundary", pathName(path), mt)
	}
	if n == 0 {
		p.warn("part %s: %s has no parts; its text is read as the body", pathName(path), mt)
		if !forwarded && len(bytes.TrimSpace(sp.preamble)) > 0 {
			text := strings.ReplaceAll(p.decodeText(sp.preamble, p.fallback, path), "\r\n", "\n")
			return []segment{{text: text, hasText: true}}, nil
		}
		return nil, nil
	}
	if mt != "multipart/alternative" {
		var all []segment
		for _, c := range children {
			all = append(all, c...)
		}
		return all, nil
	}
	// RFC 2046 section 5.1.4: the last alternative is the preferred one;
	// keep the first plain-text rendering and the last HTML one.
	var merged segment
	textDone := false
	for _, c := range children {
		t, hasT, hm, hasH := flatten(c)
		if hasT && !textDone {
			merged.text, merged.hasText, textDone = t, true, true
		}
		if hasH {
			merged.html, merged.hasHTML = hm, true
		}
	}
	if !merged.hasText && !merged.hasHTML {
		return nil, nil
	}
	return []segment{merged}, nil
}

// flatten joins segments into one text and one HTML rendering; hasText and
// hasHTML say whether any segment had a real part of that kind.
func flatten(segs []segment) (text string, hasText bool, htm string, hasHTML bool) {
	var tb, hb strings.Builder
	for _, s := range segs {
		hasText = hasText || s.hasText
		hasHTML = hasHTML || s.hasHTML
	}
	for _, s := range segs {
		t, h := s.text, s.html
		if !s.hasText {
			t = htmlToText(s.html)
		}
		if !s.hasHTML {
			h = textToHTML(s.text)
		}
		if tb.Len() > 0 && t != "" {
			tb.WriteString("\n")
		}
		tb.WriteString(t)
		hb.WriteString(h)
	}
	return tb.String(), hasText, hb.String(), hasHTML
}

// bodies sets TextBody and HTMLBody from the segments, capped and without
// NUL characters (which no text column can hold).
func (p *parser) bodies(s *Summary, segs []segment) {
	text, _, htm, hasHTML := flatten(segs)
	if hasHTML {
		var nul bool
		if s.HTMLBody, nul = stripNUL(htm); nul {
			p.warn("HTML body: NUL characters replaced with U+FFFD")
		}
	}
	var nul bool
	if s.TextBody, nul = stripNUL(text); nul {
		p.warn("text body: NUL characters replaced with U+FFFD")
	}
	limit := p.lim.MaxBodyBytes
	if len(s.TextBody) > limit {
		s.TextBody = truncateUTF8(s.TextBody, limit)
		p.warn("text body truncated to %d bytes", limit)
	}
	if len(s.HTMLBody) > limit {
		s.HTMLBody = truncateUTF8(s.HTMLBody, limit)
		p.warn("HTML body truncated to %d bytes", limit)
	}
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// markInline flags attachments that the HTML shows in place (cid: URLs,
// RFC 2392). Content-Disposition: inline was flagged when the part was read.
func (p *parser) markInline(s *Summary) {
	if len(p.htmlParts) == 0 {
		return
	}
	refs := map[string]bool{}
	for _, h := range p.htmlParts {
		for rest := h; ; {
			k := indexFold(rest, "cid:")
			if k < 0 {
				break
			}
			rest = rest[k+4:]
			end := strings.IndexAny(rest, "\"' <>)\t\r\n")
			if end < 0 {
				end = len(rest)
			}
			id := rest[:end]
			if u, err := url.PathUnescape(id); err == nil {
				id = u // RFC 2392: cid URLs are %-encoded
			}
			refs[strings.ToLower(id)] = true
			rest = rest[end:]
		}
	}
	for i, a := range p.atts {
		if a.ContentID != "" && refs[strings.ToLower(a.ContentID)] {
			p.atts[i].Inline = true
		}
	}
}

// indexFold is strings.Index for an ASCII-lower-case needle, ignoring case.
func indexFold(s, lowerNeedle string) int {
	n := len(lowerNeedle)
	for i := 0; i+n <= len(s); i++ {
		if s[i]|0x20 == lowerNeedle[0] && strings.EqualFold(s[i:i+n], lowerNeedle) {
			return i
		}
	}
	return -1
}

// decodeTransfer undoes the Content-Transfer-Encoding (RFC 2045 section 6)
// with go-message. Misspellings seen in the wild are read as what they
// mean ("quoted printable", "7-bit", "8bits", a trailing ";"), x-uuencode is
// decoded, and an unknown encoding leaves the bytes as they are, with a
// warning.
func (p *parser) decodeTransfer(h *header, body io.Reader, path string) io.Reader {
	raw := h.get("Content-Transfer-Encoding")
	cte, ok := normCTE(raw)
	if !ok {
		p.warn("part %s: unknown Content-Transfer-Encoding %q; bytes kept as they are", pathName(path), truncateUTF8(raw, 40))
	}
	switch cte {
	case "identity":
		return body
	case "x-uuencode":
		return newUUDecoder(body)
	}
	var th textproto.Header
	th.Set("Content-Transfer-Encoding", cte)
	e, err := message.New(message.Header{Header: th}, body)
	if err != nil || e == nil {
		return body
	}
	return e.Body
}

// normCTE maps a Content-Transfer-Encoding value to "identity",
// "quoted-printable", "base64" or "x-uuencode"; ok is false for a value it
// does not recognise (then "identity").
func normCTE(v string) (string, bool) {
	v, _, _ = strings.Cut(v, ";")
	v = strings.ToLower(strings.Trim(strings.TrimSpace(v), `"'`))
	switch {
	case v == "", v == "7bit", v == "8bit", v == "binary":
		return "identity", true
	case strings.Contains(v, "quoted"):
		return "quoted-printable", true
	case strings.Contains(v, "base64"), v == "base-64":
		return "base64", true
	case v == "x-uuencode", v == "uuencode", v == "x-uue", v == "uue":
		return "x-uuencode", true
	case v == "7-bit", v == "8-bit", v == "7bits", v == "8bits", v == "plain", v == "text", v == "none",
		strings.HasPrefix(v, "text/"):
		return "identity", true
	default:
		return "identity", false
	}
}

// counted wraps a decoded body: every byte counts against MaxDecodedBytes.
func (p *parser) counted(r io.Reader) io.Reader { return &decodedCounter{r: r, p: p} }

type decodedCounter struct {
	r io.Reader
	p *parser
	n int64
}

func (c *decodedCounter) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	c.p.decoded += int64(n)
	if c.p.decoded > c.p.lim.MaxDecodedBytes {
		return n, &limitError{reason: fmt.Sprintf("decoded parts exceed %d bytes", c.p.lim.MaxDecodedBytes)}
	}
	return n, err
}

// leaf handles a part that is neither multipart nor a message.
func (p *parser) leaf(h *header, body io.Reader, mt string, params map[string]string, path string, forwarded bool) ([]segment, error) {
	disp, filename := p.disposition(h, params)
	dec := p.counted(p.decodeTransfer(h, body, path))
	if p.ext.wants(path, h) {
		return nil, p.ext.copyLeaf(dec, PartInfo{PartPath: path, ContentType: mt, Charset: params["charset"],
			Filename: filename, ContentID: contentID(h.get("Content-Id"))})
	}
	isBody := (mt == "text/plain" || mt == "text/html") && disp != "attachment" && filename == ""
	if isBody {
		keep := int64(0)
		if !forwarded {
			keep = max(p.bodyLeft, 0)
		}
		data, err := io.ReadAll(io.LimitReader(dec, keep))
		p.bodyLeft -= int64(len(data))
		if err != nil {
			if isFatal(err) {
				return nil, err
			}
			p.warn("part %s: %v; kept what could be decoded", path, err)
		}
		if n, err := io.Copy(io.Discard, dec); err != nil {
			if isFatal(err) {
				return nil, err
			}
			p.warn("part %s: %v; kept what could be decoded", path, err)
		} else if n > 0 && !forwarded {
			p.warn("part %s: body larger than the limit; truncated", path)
		}
		if forwarded {
			return nil, nil
		}
		label := params["charset"]
		if !p.fallbackFound {
			p.fallback, p.fallbackFound = label, true
		}
		if label == "" && mt == "text/html" {
			label = metaCharset(data)
		}
		text := strings.ReplaceAll(p.decodeText(data, label, path), "\r\n", "\n")
		if mt == "text/plain" && strings.EqualFold(params["format"], "flowed") {
			text = unflow(text, strings.EqualFold(params["delsp"], "yes"))
		}
		if mt == "text/html" {
			p.htmlParts = append(p.htmlParts, text)
			return []segment{{html: text, hasHTML: true}}, nil
		}
		return []segment{{text: text, hasText: true}}, nil
	}
	size, err := io.Copy(io.Discard, dec)
	if err != nil {
		if isFatal(err) {
			return nil, err
		}
		p.warn("part %s: %v; size counts what could be decoded", path, err)
	}
	p.atts = append(p.atts, Attachment{
		PartPath:    path,
		Filename:    filename,
		ContentType: mt,
		ContentID:   contentID(h.get("Content-Id")),
		Size:        size,
		Inline:      disp == "inline",
	})
	return nil, nil
}

// message handles message/rfc822: a forwarded or returned mail. It is listed
// as one attachment (the .eml), and the attachments inside it are listed
// too, with their paths below it; its text stays in the .eml and is not
// merged into the body.
func (p *parser) message(h *header, body io.Reader, mt string, params map[string]string, path string, depth int, parent string) error {
	_, filename := p.disposition(h, params)
	counter := &byteCounter{r: p.ext.tee(path, p.decodeTransfer(h, body, path))}
	idx := len(p.atts)
	p.atts = append(p.atts, Attachment{
		PartPath:    path,
		Filename:    filename,
		ContentType: mt,
		ContentID:   contentID(h.get("Content-Id")),
	})
	br := bufio.NewReaderSize(counter, splitBufferSize)
	hr := &headerReader{br: br, max: p.lim.MaxPartHeaderBytes, what: "part " + path + " message header"}
	blk, err := hr.readHeader(true)
	if err != nil {
		if isFatal(err) {
			return err
		}
		p.warn("part %s: %v", path, err)
	}
	if len(blk.h.fields) > 0 {
		blk.h.repair(p.fallback)
		if filename == "" {
			subj, _ := oneLine(p.text(blk.h.get("Subject")), maxLine)
			if subj == "" {
				subj = "message"
			}
			p.atts[idx].Filename = boundedFilename(subj + ".eml")
		}
		if parent == "multipart/report" && p.bounceID == "" {
			p.bounceID = msgID(blk.h.get("Message-Id"))
		}
		var inner io.Reader = br
		if blk.leftover != nil {
			inner = io.MultiReader(bytes.NewReader(append(blk.leftover, blk.leftoverNL...)), br)
		}
		if _, err := p.walk(&blk.h, inner, path, true, depth+1, mt, true); err != nil {
			return err
		}
	} else if filename == "" {
		p.atts[idx].Filename = "message.eml"
	}
	if _, err := io.Copy(io.Discard, br); err != nil && isFatal(err) {
		return err
	}
	p.atts[idx].Size = counter.n
	return p.ext.finish(path, p.atts[idx])
}

// returnedHeaders handles the text/rfc822-headers part of a delivery report
// (RFC 6522 section 3): the header of the returned message, kept as an
// attachment, whose Message-ID names the bounced mail.
func (p *parser) returnedHeaders(h *header, body io.Reader, mt string, params map[string]string, path string) error {
	_, filename := p.disposition(h, params)
	counter := &byteCounter{r: p.ext.tee(path, p.counted(p.decodeTransfer(h, body, path)))}
	br := bufio.NewReaderSize(counter, splitBufferSize)
	hr := &headerReader{br: br, max: p.lim.MaxPartHeaderBytes, what: "part " + path + " returned header"}
	blk, err := hr.readHeader(true)
	if err != nil {
		if isFatal(err) {
			return err
		}
		p.warn("part %s: %v", path, err)
	}
	if p.bounceID == "" {
		p.bounceID = msgID(blk.h.get("Message-Id"))
	}
	if _, err := io.Copy(io.Discard, br); err != nil && isFatal(err) {
		return err
	}
	p.atts = append(p.atts, Attachment{PartPath: path, Filename: filename, ContentType: mt, Size: counter.n})
	return p.ext.finish(path, p.atts[len(p.atts)-1])
}

type byteCounter struct {
	r io.Reader
	n int64
}

func (c *byteCounter) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}
