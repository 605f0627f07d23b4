// Package pop3source fetches mail from a POP3 maildrop (RFC 1939) into a
// mailsource.Sink, exactly once.
//
// The client is our own, on net/textproto: CAPA (RFC 2449), STLS (RFC
// 2595), AUTH PLAIN and XOAUTH2 (RFC 5034), PIPELINING of RETR and DELE,
// dot-unstuffing and lines of any length through textproto's DotReader. The
// POP3 libraries the module proxy serves get dot-unstuffing and long lines
// wrong (see LIBRARIES.md section 5).
//
// Exactly once: UIDL is the source key ("pop3/"+uidl). A poll lists the
// maildrop, asks the sink which keys are committed, streams the new mails
// into the sink, commits in batches, and only then DELEs the committed
// ones. DELE takes effect at QUIT; a poll that dies before QUIT deletes
// nothing and the next poll finds the mails committed and deletes them
// without a second event. Failed mails are never deleted and never fetched
// again.
//
// A UIDL is not proof: RFC 1939 only asks servers not to reuse one, and a
// server whose counter restarts gives a new mail the UIDL of one imported
// and deleted long ago. So a mail is DELEd only when this session imported
// it, or when its bytes hash to those the sink committed under its key
// (mailsource.ContentDigests). A mail whose bytes differ is a new mail: it
// is imported under "pop3/"+uidl+"/"+its SHA-256, which the next poll
// recognises the same way.
package pop3source

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/ledgerdesk/ledgerdesk/adapters/mailsource"
)

// KeyPrefix starts every source key this package hands to a sink.
const KeyPrefix = "pop3/"

// knownChunk bounds the keys of one Sink.Known call.
const knownChunk = 1000

// Fetcher polls one POP3 maildrop. It holds no connection between polls and
// is safe for concurrent use, though one account should be polled by one
// goroutine at a time (POP3 servers lock the maildrop).
type Fetcher struct {
	cfg    Config
	tls    *tls.Config
	logger *slog.Logger
	window int // RETR/DELE in flight with PIPELINING
}

var _ mailsource.Fetcher = (*Fetcher)(nil)

// New validates cfg and returns a fetcher. A nil logger discards.
func New(cfg Config, logger *slog.Logger) (*Fetcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Fetcher{cfg: cfg, tls: tlsCfg, logger: logger, window: pipelineWindow}, nil
}

// connect dials, upgrades as configured and logs in.
func (f *Fetcher) connect(ctx context.Context) (*client, error) {
	c, err := dial(ctx, f.cfg, f.tls.Clone())
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := c.login(ctx, f.cfg); err != nil {
		c.close()
		return nil, ctxErr(ctx, err)
	}
	return c, nil
}

// Check connects, logs in and asks STAT, importing nothing. On failure the
// error carries the server's exact reply (mailsource.ServerReply).
func (f *Fetcher) Check(ctx context.Context) error {
	c, err := f.connect(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	if _, err := c.cmd("STAT", "STAT"); err != nil {
		return ctxErr(ctx, err)
	}
	return ctxErr(ctx, c.quit())
}

// ctxErr makes a cancelled poll report the cancellation, not the closed
// socket it caused.
func ctxErr(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil || errors.Is(err, ctx.Err()) {
		return err
	}
	return fmt.Errorf("%w (%w)", ctx.Err(), err)
}

// Poll implements mailsource.Fetcher. It returns the counts of what it did
// even with an error: mails committed before the error stay committed.
func (f *Fetcher) Poll(ctx context.Context, sink mailsource.Sink) (mailsource.PollResult, error) {
	start := time.Now()
	c, err := f.connect(ctx)
	if err != nil {
		return mailsource.PollResult{}, err
	}
	defer c.close()
	p := &poll{f: f, c: c, sink: sink, phases: []any{"login", time.Since(start)}}
	err = p.run(ctx)
	if c.broken == nil && !c.quitted {
		// An early error (say UIDL refused) left a healthy session with no
		// DELE sent: end it politely so the server unlocks the maildrop.
		_ = c.quit()
	}
	f.logger.LogAttrs(ctx, slog.LevelDebug, "pop3 poll",
		slog.Int("fetched", p.res.Fetched), slog.Int("failed", p.res.Failed), slog.Int("oversize", p.res.Oversize),
		slog.Int("deleted", p.res.Deleted), slog.Group("took", p.phases...), slog.Any("error", err))
	return p.res, ctxErr(ctx, err)
}

// poll is the state of one Poll.
type poll struct {
	f    *Fetcher
	c    *client
	sink mailsource.Sink
	res  mailsource.PollResult

	staged    []staged // since the last commit
	pending   *pendingCommit
	deletable []toDelete
	// poisoned means a sink staged a mail although its download broke, so
	// the open batch must not be committed.
	poisoned     bool
	commitFailed bool
	errs         []error // -ERR on single RETRs/DELEs; the poll goes on
	phases       []any   // name, duration pairs for the debug log
}

// phase records how long the step that ends now took since the last one.
func (p *poll) phase(name string, since *time.Time) {
	now := time.Now()
	p.phases = append(p.phases, name, now.Sub(*since))
	*since = now
}

type staged struct {
	e      entry
	status mailsource.Status
	over   bool
}

type toDelete struct {
	num   int
	known bool // committed by an earlier poll
}

func (p *poll) run(ctx context.Context) error {
	since := time.Now()
	entries, err := p.c.scan()
	if err != nil {
		return err
	}
	known, err := p.known(ctx, entries)
	if err != nil {
		return err
	}
	p.phase("list", &since)
	var oversize, fetch, verify []entry
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if seen[e.uidl] {
			p.f.logger.Warn("pop3: duplicate UIDL in listing, fetching it once", "uidl", e.uidl, "msg", e.num)
			continue
		}
		seen[e.uidl] = true
		switch known[e.key] {
		case mailsource.StatusReceived:
			if p.f.cfg.AfterImport == mailsource.AfterImportDelete {
				verify = append(verify, e) // deleted once proven the committed mail
			}
		case mailsource.StatusFailed:
			// Stays on the server, never fetched again (RULES.md 2.4).
		default:
			if p.f.cfg.MaxMailSize > 0 && e.size > p.f.cfg.MaxMailSize {
				oversize = append(oversize, e)
			} else {
				fetch = append(fetch, e)
			}
		}
	}
	stopErr := p.stageOversize(ctx, oversize)
	if stopErr == nil {
		stopErr = p.fetch(ctx, fetch)
	}
	if stopErr == nil && len(verify) > 0 {
		stopErr = p.verify(ctx, verify)
	}
	if !p.poisoned && !p.commitFailed {
		if err := p.commit(ctx); err != nil {
			stopErr = errors.Join(stopErr, err)
		}
	}
	// A commit still in flight is settled even after a failure: its mails
	// count (and are deleted) only once it is known to be durable.
	if err := p.settle(); err != nil {
		stopErr = errors.Join(stopErr, err)
	}
	p.phase("fetch", &since)
	if p.c.broken != nil {
		// The session is gone: nothing is deleted; the next poll finds the
		// committed mails by key and deletes them then.
		return errors.Join(append([]error{stopErr}, p.errs...)...)
	}
	if f, ok := p.sink.(mailsource.Fenced); ok && len(p.deletable) > 0 {
		// Another instance may poll the mailbox now: DELE nothing.
		if err := f.StillHeld(ctx); err != nil {
			return errors.Join(append([]error{stopErr, fmt.Errorf("pop3source: before DELE: %w", err)}, p.errs...)...)
		}
	}
	if err := p.deleteAndQuit(); err != nil {
		stopErr = errors.Join(stopErr, err)
	}
	p.phase("delete", &since)
	return errors.Join(append([]error{stopErr}, p.errs...)...)
}

// known asks the sink for the committed keys, in chunks. Entries without a
// key get the key of their UIDL.
func (p *poll) known(ctx context.Context, entries []entry) (map[string]mailsource.Status, error) {
	all := make(map[string]mailsource.Status, len(entries))
	for i := range entries {
		if entries[i].key == "" {
			entries[i].key = KeyPrefix + entries[i].uidl
		}
	}
	for start := 0; start < len(entries); start += knownChunk {
		chunk := entries[start:min(start+knownChunk, len(entries))]
		keys := make([]string, len(chunk))
		for i, e := range chunk {
			keys[i] = e.key
		}
		m, err := p.sink.Known(ctx, keys)
		if err != nil {
			return nil, fmt.Errorf("pop3source: ask sink for known keys: %w", err)
		}
		for k, s := range m {
			all[k] = s
		}
	}
	return all, nil
}

// verify finds out whether mails committed by an earlier poll are still
// those mails, so that a DELE never takes a mail nobody imported: it
// downloads each one, compares its SHA-256 with what the sink committed
// under the key, and marks it for DELE when they match. A mail that
// differs got a reused UIDL: it is imported under a key naming its digest
// (or, when an earlier poll did that already, deleted). A mail the sink
// cannot vouch for stays on the server.
func (p *poll) verify(ctx context.Context, committed []entry) error {
	keys := make([]string, len(committed))
	for i, e := range committed {
		keys[i] = e.key
	}
	recorded := map[string]string{}
	if cd, ok := p.sink.(mailsource.ContentDigests); ok {
		for start := 0; start < len(keys); start += knownChunk {
			m, err := cd.Digests(ctx, keys[start:min(start+knownChunk, len(keys))])
			if err != nil {
				return fmt.Errorf("pop3source: ask sink for committed digests: %w", err)
			}
			maps.Copy(recorded, m)
		}
	}
	var check []entry
	for _, e := range committed {
		if recorded[e.key] == "" {
			p.f.logger.Warn("pop3: mail committed before cannot be proven the same; left on the server", "uidl", e.uidl)
			continue
		}
		check = append(check, e)
	}
	digests := make([]string, len(check))
	window := 1
	if p.c.has("PIPELINING") {
		window = p.f.window
	}
	err := p.c.pipeline(len(check), window, true,
		func(i int) string { return "RETR " + strconv.Itoa(check[i].num) },
		func(i int) (err error) { digests[i], err = p.digest(check[i]); return err })
	if err != nil {
		return err
	}
	var reused []entry
	for i, e := range check {
		switch digests[i] {
		case "": // RETR refused; tried again next poll
		case recorded[e.key]:
			p.deletable = append(p.deletable, toDelete{num: e.num, known: true})
		default:
			p.f.logger.Warn("pop3: the server gave a UIDL of an imported mail to another mail; importing that one under a key of its own",
				"uidl", e.uidl, "msg", e.num)
			e.key = KeyPrefix + e.uidl + "/" + digests[i]
			reused = append(reused, e)
		}
	}
	if len(reused) == 0 {
		return nil
	}
	known, err := p.known(ctx, reused)
	if err != nil {
		return err
	}
	var oversize, fetch []entry
	for _, e := range reused {
		switch known[e.key] {
		case mailsource.StatusReceived: // the key names the bytes just hashed
			p.deletable = append(p.deletable, toDelete{num: e.num, known: true})
		case mailsource.StatusFailed:
		default:
			if p.f.cfg.MaxMailSize > 0 && e.size > p.f.cfg.MaxMailSize {
				oversize = append(oversize, e)
			} else {
				fetch = append(fetch, e)
			}
		}
	}
	if err := p.stageOversize(ctx, oversize); err != nil {
		return err
	}
	return p.fetch(ctx, fetch)
}

// digest reads one RETR answer and returns the hex SHA-256 of the mail as
// the sink would store it, or "" when the server refused the RETR.
func (p *poll) digest(e entry) (string, error) {
	rep, err := p.c.readReply("RETR")
	if err != nil {
		return "", err
	}
	if rep.kind != replyOK {
		err := p.c.refused("RETR "+strconv.Itoa(e.num), rep)
		if rep.kind == replyCont {
			p.c.broken = err
			return "", err
		}
		p.errs = append(p.errs, err)
		return "", nil
	}
	h := sha256.New()
	b := p.c.newBody()
	if _, err := io.Copy(h, b); err != nil {
		return "", p.c.fail("RETR "+strconv.Itoa(e.num), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (p *poll) stageOversize(ctx context.Context, oversize []entry) error {
	for _, e := range oversize {
		if err := p.sink.Oversize(ctx, e.key, e.size); err != nil {
			return fmt.Errorf("pop3source: stage oversize mail %s: %w", e.uidl, err)
		}
		p.staged = append(p.staged, staged{e: e, status: mailsource.StatusFailed, over: true})
		if err := p.commitIfFull(ctx); err != nil {
			return err
		}
	}
	return nil
}

// fetch RETRs the mails, RETRs pipelined when the server allows it, and
// streams each one into the sink in order.
func (p *poll) fetch(ctx context.Context, fetch []entry) error {
	window := 1
	if p.c.has("PIPELINING") {
		window = p.f.window
	}
	return p.c.pipeline(len(fetch), window, true,
		func(i int) string { return "RETR " + strconv.Itoa(fetch[i].num) },
		func(i int) error { return p.receive(ctx, fetch[i]) })
}

// receive reads one RETR answer into the sink.
func (p *poll) receive(ctx context.Context, e entry) error {
	key := e.key
	rep, err := p.c.readReply("RETR")
	if err != nil {
		return err
	}
	if rep.kind != replyOK {
		err := p.c.refused("RETR "+strconv.Itoa(e.num), rep)
		if rep.kind == replyCont {
			p.c.broken = err
			return err
		}
		p.f.logger.Warn("pop3: RETR refused, mail left for the next poll", "uidl", e.uidl, "reply", rep.text)
		p.errs = append(p.errs, err)
		return nil
	}
	b := p.c.newBody()
	out, rerr := p.sink.Receive(ctx, key, e.size, b)
	derr := b.drain()
	if b.broken != nil || derr != nil {
		terr := b.broken
		if terr == nil {
			terr = derr
		}
		err := p.c.fail("RETR "+strconv.Itoa(e.num), terr)
		if rerr == nil {
			// The sink staged a mail we could not download completely.
			p.poisoned = true
		}
		return err
	}
	if rerr != nil {
		return fmt.Errorf("pop3source: receive mail %s: %w", e.uidl, rerr)
	}
	p.staged = append(p.staged, staged{e: e, status: out.Status})
	return p.commitIfFull(ctx)
}

func (p *poll) commitIfFull(ctx context.Context) error {
	if len(p.staged) < p.f.cfg.BatchSize {
		return nil
	}
	return p.commit(ctx)
}

// commit makes the staged mails durable and only then marks the received
// ones for DELE. A sink that can commit in the background does so while the
// next batch downloads; its result is settled before the next commit and
// before any DELE.
func (p *poll) commit(ctx context.Context) error {
	if err := p.settle(); err != nil {
		return err
	}
	if len(p.staged) == 0 {
		return nil
	}
	batch := slices.Clone(p.staged)
	p.staged = p.staged[:0]
	if ac, ok := p.sink.(mailsource.AsyncCommitter); ok {
		p.pending = &pendingCommit{wait: ac.StartCommit(ctx), batch: batch}
		return nil
	}
	err := p.sink.Commit(ctx)
	p.pending = &pendingCommit{wait: func() error { return err }, batch: batch}
	return p.settle()
}

// pendingCommit is a batch whose commit may still be running.
type pendingCommit struct {
	wait  func() error
	batch []staged
}

// settle waits for the batch in flight, if any, and counts it.
func (p *poll) settle() error {
	pc := p.pending
	if pc == nil {
		return nil
	}
	p.pending = nil
	if err := pc.wait(); err != nil {
		p.commitFailed = true
		return fmt.Errorf("pop3source: commit %d mails: %w", len(pc.batch), err)
	}
	for _, s := range pc.batch {
		switch {
		case s.over:
			p.res.Oversize++
		case s.status == mailsource.StatusReceived:
			p.res.Fetched++
			if p.f.cfg.AfterImport == mailsource.AfterImportDelete {
				p.deletable = append(p.deletable, toDelete{num: s.e.num})
			}
		default:
			// StatusFailed, or a status the sink should not return: the
			// mail stays on the server either way.
			p.res.Failed++
		}
	}
	return nil
}

// deleteAndQuit DELEs the committed mails (pipelined when allowed) and
// QUITs. Only a +OK to QUIT makes the deletions real, so the counts are
// set after it.
func (p *poll) deleteAndQuit() error {
	window := 1
	if p.c.has("PIPELINING") {
		window = p.f.window
	}
	var deleted, skipped int
	err := p.c.pipeline(len(p.deletable), window, false,
		func(i int) string { return "DELE " + strconv.Itoa(p.deletable[i].num) },
		func(i int) error {
			rep, err := p.c.readReply("DELE")
			if err != nil {
				return err
			}
			if rep.kind != replyOK {
				p.errs = append(p.errs, p.c.refused("DELE "+strconv.Itoa(p.deletable[i].num), rep))
				return nil
			}
			deleted++
			if p.deletable[i].known {
				skipped++
			}
			return nil
		})
	if err != nil {
		return err
	}
	if err := p.c.quit(); err != nil {
		return fmt.Errorf("pop3source: nothing deleted: %w", err)
	}
	p.res.Deleted += deleted
	p.res.Skipped += skipped
	return nil
}

// pipeline sends n commands with at most window answers outstanding and
// calls handle(i) to read answer i, in order. When handle fails on a
// healthy session, the answers already requested are read and discarded
// (multi says whether they carry a multi-line body) so the session can go
// on with DELE and QUIT.
func (c *client) pipeline(n, window int, multi bool, command func(i int) string, handle func(i int) error) error {
	sent := 0
	for i := 0; i < n; i++ {
		if sent < n && sent-i <= window/2 {
			for sent < n && sent-i < window {
				if err := c.send(command(sent)); err != nil {
					return err
				}
				sent++
			}
			if err := c.flush(); err != nil {
				return err
			}
		}
		if err := handle(i); err != nil {
			if c.broken == nil {
				c.skip(sent-i-1, multi)
			}
			return err
		}
	}
	return nil
}

// skip reads and discards k answers; a failure marks the session broken.
func (c *client) skip(k int, multi bool) {
	for ; k > 0 && c.broken == nil; k-- {
		rep, err := c.readReply("skip")
		if err != nil || rep.kind != replyOK || !multi {
			continue
		}
		if err := c.newBody().drain(); err != nil {
			_ = c.fail("skip", err)
		}
	}
}
